"""`quartet sample` with a key/value cache, without one (--no-cache), --device and the speed
line (docs/sampling.md), run as a user runs them.

The reference for every text is the same command with --no-cache (the sampler that recomputes
the whole context for every token); the counts in the speed line are worked out by hand from
the prompt.
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]
TRAIN = ["--steps", "2", "--batch", "2", "--seq", "64", "--eval-every", "0", "--eval-batches", "1",
         "--final-eval-batches", "1", "--quiet", "--sample-tokens", "0", "--device", "cpu"]
USAGE, RUNTIME = 2, 1


def run(*args):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=600)


class Sample(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="quartet-sample-")
        cls.runs = {}
        for recipe in ("bf16", "nvidia"):
            out = os.path.join(cls.dir, recipe)
            p = run("train", *TRAIN, "--recipe", recipe, "--out", out)
            assert p.returncode == 0, p.stderr
            cls.runs[recipe] = out

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def sample(self, recipe, *args):
        p = run("sample", self.runs[recipe], "--device", "cpu", *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def test_the_cache_gives_the_recomputing_samplers_text(self):
        # The tiny model's window is 256 positions: 1 + 4 prompt tokens and 300 new ones cross it.
        for mode in (["--temperature", "0"], ["--temperature", "0.8", "--top-k", "40"],
                     ["--temperature", "1.2", "--top-k", "0"]):
            with self.subTest(mode=mode):
                args = ["--tokens", "300", "--prompt", "Emma", "--seed", "7", *mode]
                cached, reference = self.sample("bf16", *args), self.sample("bf16", *args, "--no-cache")
                self.assertEqual(cached.stdout, reference.stdout)
                self.assertTrue(cached.stdout.startswith("Emma"))
                self.assertIn("key/value cache", cached.stderr)
                self.assertIn("recomputing the context", reference.stderr)
                # <|endoftext|> and the four bytes of "Emma" go through the first pass.
                self.assertRegex(cached.stderr, r"prefill: 5 tokens in [0-9.]+ s \([0-9.]+ tokens/s\)")
                self.assertRegex(cached.stderr, r"decode: \d+ tokens in [0-9.]+ s \([0-9.]+ tokens/s\)")

    def test_an_nvfp4_checkpoint_recomputes_and_says_why(self):
        args = ["--tokens", "20", "--prompt", "Emma", "--seed", "3", "--count", "2"]
        cached, reference = self.sample("nvidia", *args), self.sample("nvidia", *args, "--no-cache")
        self.assertEqual(cached.stdout, reference.stdout)
        self.assertIn("--- sample 2 ---", cached.stdout)
        self.assertEqual(cached.stderr.count("sampling without a key/value cache"), 1, cached.stderr)
        self.assertIn("NVFP4", cached.stderr)
        self.assertEqual(len(re.findall("recomputing the context", cached.stderr)), 2)
        self.assertNotIn("sampling without a key/value cache", reference.stderr)

    def test_device_choices(self):
        p = run("sample", self.runs["bf16"], "--device", "tpu")
        self.assertEqual(p.returncode, USAGE, p.stderr)
        self.assertIn("--device", p.stderr)
        self.assertIn("tpu", p.stderr)
        if "CPU only" in run("--version").stdout:
            p = run("sample", self.runs["bf16"], "--device", "cuda", "--tokens", "2")
            self.assertEqual(p.returncode, RUNTIME, p.stderr)
            self.assertIn("no CUDA backend", p.stderr)
            self.assertEqual(p.stdout, "")


    def test_top_k_beyond_the_vocabulary_is_refused(self):
        # The byte tokenizer's vocabulary is 257 tokens: 257 is all of them, 258 is a mistake that
        # must not be cut down to 257 silently.
        self.sample("bf16", "--tokens", "2", "--top-k", "257", "--temperature", "1")
        p = run("sample", self.runs["bf16"], "--device", "cpu", "--tokens", "2", "--top-k", "258")
        self.assertEqual(p.returncode, RUNTIME, p.stderr)
        self.assertIn("--top-k 258", p.stderr)
        self.assertIn("257 tokens", p.stderr)
        self.assertEqual(p.stdout, "")

if __name__ == "__main__":
    unittest.main()
