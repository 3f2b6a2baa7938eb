"""`quartet eval CHECKPOINT` (docs/eval.md), run as a user runs it on tiny models trained here.

The reference for the checkpoint's own recipe is the training run's final evaluation, recorded
in run.json by `quartet train` over the same windows: a checkpoint that restored anything but the
trained model (weights, recipe options, seed) would not give the same loss bit for bit. The
perplexity and the window and token counts are worked out here from the options."""
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

from cli_case import QUARTET, TIMEOUT, CliCase, run

TRAIN = ["--steps", "3", "--batch", "2", "--seq", "64", "--eval-every", "0", "--eval-batches", "1",
         "--final-eval-batches", "3", "--quiet", "--sample-tokens", "0", "--device", "cpu", "--no-plot"]


class Eval(CliCase):
    prefix = "quartet-eval-"

    @classmethod
    def setUpClass(cls):
        cls.runs_dir = tempfile.mkdtemp(prefix="quartet-eval-runs-")
        cls.runs = {}
        # quartet2 with 4/6 off: an option the evaluation must restore from the checkpoint.
        for name, args in [("quartet2", ["--recipe", "quartet2", "--four-over-six", "off"]), ("bf16", ["--recipe", "bf16"])]:
            out = os.path.join(cls.runs_dir, name)
            p = run("train", *TRAIN, *args, "--out", out)
            assert p.returncode == 0, p.stderr
            with open(os.path.join(out, "run.json")) as f:
                cls.runs[name] = (out, json.load(f))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.runs_dir)

    def eval_json(self, *args):
        p = self.ok("eval", *args, "--json", "--device", "cpu")
        lines = p.stdout.strip().split("\n")
        self.assertEqual(len(lines), 1, p.stdout)
        return json.loads(lines[0]), p

    def test_the_checkpoints_own_recipe_gives_the_runs_final_loss_bit_for_bit(self):
        for name, (out, result) in self.runs.items():
            with self.subTest(recipe=name):
                # No options: the run's final evaluation's windows (its --final-eval-batches 3).
                j, _ = self.eval_json(out)
                self.assertEqual(j["loss"], result["val_loss"])
                self.assertEqual(j["bpb"], result["val_bpb"])
                # The run's options come with its recipe: 4/6 off marks quartet2 as modified.
                named = {"quartet2": "quartet2 (modified)", "bf16": "bf16"}[name]
                self.assertEqual(j["recipe"], named)
                self.assertEqual(j["trained_recipe"], named)
                self.assertEqual(j["step"], 3)
                self.assertEqual((j["batch"], j["seq"], j["batches"], j["tokens"]), (2, 64, 3, 3 * 2 * 64))
                self.assertAlmostEqual(j["perplexity"], math.exp(result["val_loss"]), places=9)
                self.assertEqual(j["data"], "embedded:austen")
                self.assertTrue(j["checkpoint"].endswith(os.path.join("checkpoints", "step-000003")), j["checkpoint"])

    def test_another_recipe_is_another_forward_pass_of_the_same_model(self):
        out, result = self.runs["quartet2"]
        j, _ = self.eval_json(out, "--batches", "3", "--recipe", "bf16")
        self.assertEqual(j["recipe"], "bf16")
        self.assertEqual(j["trained_recipe"], "quartet2 (modified)")
        self.assertNotEqual(j["loss"], result["val_loss"], "the 4-bit forward pass is not BF16's")
        # The same weights: the losses of a 3-step tiny model differ by its forward quantization
        # error only, well under 5% (a model that was not the trained one sits at ln(256) = 5.5).
        self.assertLess(abs(j["loss"] - result["val_loss"]) / result["val_loss"], 0.05)
        # With 4/6 on (the recipe's default, not this checkpoint's option) the loss differs too.
        on, p = self.eval_json(out, "--batches", "3", "--recipe", "quartet2")
        self.assertNotEqual(on["loss"], result["val_loss"])
        self.assertEqual((on["recipe"], on["trained_recipe"]), ("quartet2", "quartet2 (modified)"))

    def test_agrees_with_a_run_started_from_the_checkpoint(self):
        # `train --init-from` with a learning rate too small to move a weight evaluates the same
        # weights under its recipe at the end: eval's figure for that recipe, bit for bit.
        out, _ = self.runs["bf16"]
        started = self.path("started")
        self.ok("train", *TRAIN, "--recipe", "quartet2", "--init-from", out, "--lr", "1e-30", "--steps", "1",
                "--out", started)
        with open(os.path.join(started, "run.json")) as f:
            result = json.load(f)
        j, _ = self.eval_json(out, "--batches", "3", "--recipe", "quartet2")
        self.assertEqual(j["loss"], result["val_loss"])

    def test_the_text_report(self):
        out, result = self.runs["bf16"]
        p = self.ok("eval", out, "--batches", "2", "--batch", "1", "--seq", "32", "--device", "cpu")
        lines = p.stdout.strip().split("\n")
        self.assertEqual(len(lines), 3, p.stdout)
        self.assertTrue(lines[0].startswith("quartet eval: "), lines[0])
        self.assertIn("(trained with bf16, step 3) on embedded:austen, validation split", lines[0])
        self.assertEqual(lines[1], "recipe bf16 (the checkpoint's): 2 windows of 1 x 32 tokens (64 tokens)")
        j, _ = self.eval_json(out, "--batches", "2", "--batch", "1", "--seq", "32")
        self.assertEqual(lines[2], "val loss {:.4f} | perplexity {:.2f} | {:.4f} bits per byte".format(
            j["loss"], j["perplexity"], j["bpb"]))

    def test_fewer_windows_than_asked_are_said(self):
        out, _ = self.runs["bf16"]
        j, p = self.eval_json(out, "--batches", "100000", "--batch", "16", "--seq", "128")
        self.assertGreater(j["batches"], 0)
        self.assertLess(j["batches"], 100000)
        self.assertIn(f"holds {j['batches']} windows of 16 x 128 tokens; --batches 100000 asked for more", p.stderr)

    def test_other_data_tokenized_as_the_model_reads(self):
        out, _ = self.runs["bf16"]
        text = self.path("text.txt")
        with open(text, "w") as f:
            f.write("The quick brown fox jumps over the lazy dog. " * 400)
        for tokenizer in ("byte", "gpt2"):
            self.ok("prepare", text, "--out", self.path(tokenizer), "--tokenizer", tokenizer, "--val-fraction", "0.5")
        j, _ = self.eval_json(out, "--data", self.path("byte"), "--batches", "1")
        self.assertEqual(j["data"], self.path("byte"))
        self.expect(1, ["eval", out, "--data", self.path("gpt2"), "--device", "cpu"],
                    "was tokenized with 'gpt2', not 'byte'")

    def test_a_diverged_model_reports_nan(self):
        # Finite weights that overflow the forward pass: the LM head at 3e38 (a checkpoint
        # holding a non-finite value is refused as corrupt; this one is a diverged model).
        out, _ = self.runs["bf16"]
        copy = self.path("diverged")
        shutil.copytree(out, copy)
        latest = os.path.join(copy, "checkpoints", "step-000003", "model.safetensors")
        with open(latest, "r+b") as f:
            data = f.read()
            n = struct.unpack("<Q", data[:8])[0]
            begin, end = json.loads(data[8:8 + n])["lm_head.weight"]["data_offsets"]
            f.seek(8 + n + begin)
            f.write(struct.pack("<f", 3e38) * ((end - begin) // 4))
        j, _ = self.eval_json(copy, "--batches", "1")
        self.assertIsNone(j["loss"])
        self.assertIsNone(j["bpb"])
        p = self.ok("eval", copy, "--batches", "1", "--device", "cpu")
        self.assertIn("val loss nan: the model's forward pass is not finite on this data", p.stdout)

    def test_the_runs_relative_data_path_is_said_when_it_is_not_found(self):
        text = self.path("text.txt")
        with open(text, "w") as f:
            f.write("A sentence of the corpus. " * 2000)
        self.ok("prepare", text, "--out", self.path("corpus"), "--tokenizer", "byte", "--val-fraction", "0.5")
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        p = subprocess.run([QUARTET, "train", *TRAIN, "--recipe", "bf16", "--data", "corpus", "--out", "run"],
                           cwd=self.dir, capture_output=True, text=True, timeout=TIMEOUT, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([QUARTET, "eval", os.path.join(self.dir, "run"), "--device", "cpu"], cwd=self.runs_dir,
                           capture_output=True, text=True, timeout=TIMEOUT, env=env)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("corpus", p.stderr)
        self.assertIn("(the data the checkpoint names, as the run gave it; --data names other data)", p.stderr)
        j, _ = self.eval_json(os.path.join(self.dir, "run"), "--data", self.path("corpus"))
        self.assertEqual(j["data"], self.path("corpus"))

    def test_bad_input_is_named(self):
        out, _ = self.runs["quartet2"]
        self.refused(["eval", out, "--recipe", "fp8"], "--recipe", "fp8")
        self.refused(["eval", out, "--batches", "0"], "--batches")
        self.refused(["eval"], "checkpoint")
        self.expect(1, ["eval", self.path("missing"), "--device", "cpu"], "missing")
        self.expect(1, ["eval", out, "--seq", "4096", "--device", "cpu"], "--seq 4096 is longer than the model's maximum")
        self.expect(1, ["eval", out, "--batch", "100000", "--device", "cpu"],
                    "is shorter than one window of --batch 100000 x --seq 64")
        # quartet2's RHT-128 needs rows of 128: a window of 1 x 32 tokens cannot be quantized.
        self.expect(1, ["eval", out, "--batch", "1", "--seq", "32", "--device", "cpu"], "(a window: --batch 1 x --seq 32)")


if __name__ == "__main__":
    unittest.main()
