"""`quartet prepare` on awkward inputs, run as a user runs it: every refusal names the file and
what is wrong, and nothing already in the output folder is touched when it refuses."""
import gzip
import json
import os
import resource
import signal
import shutil
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]


def run(*args, timeout=600):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=timeout)


class Prepare(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-prepare-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def expect_error(self, args, *fragments):
        p = run(*args)
        self.assertNotEqual(p.returncode, 0, f"{args} should fail")
        self.assertNotIn("internal error", p.stderr)
        for f in fragments:
            self.assertIn(f, p.stderr, p.stderr)
        return p

    def manifest(self, out):
        with open(os.path.join(out, "dataset.json")) as f:
            return json.load(f)

    def prepared(self, *inputs, tokenizer="byte"):
        out = self.path("out")
        p = run("prepare", *inputs, "--out", out, "--tokenizer", tokenizer, "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        return out, p

    def test_a_failed_replacement_keeps_the_old_dataset(self):
        # prepare --force used to delete the old shards before writing the new ones: a write that
        # failed halfway (here: the file-size limit, as a full disk would) lost both.
        old_out, _ = self.prepared(self.write("small.txt", b"A short document. " * 20))
        before = {n: open(os.path.join(old_out, n), "rb").read() for n in os.listdir(old_out)}
        big = self.write("big.txt", b"A much longer document that will not fit. " * 20000)
        limit = 64 * 1024  # larger than the old shards, smaller than the new train shard

        def limit_file_size():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        p = subprocess.run([QUARTET, "prepare", big, "--out", old_out, "--tokenizer", "byte", "--force"],
                           capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
        self.assertNotEqual(p.returncode, 0, "the write was meant to fail")
        after = {n: open(os.path.join(old_out, n), "rb").read() for n in os.listdir(old_out) if not n.startswith(".")}
        self.assertEqual(after, before, "the old dataset is intact")
        # The next prepare removes what the failed one left (its process is gone) and succeeds.
        p = run("prepare", big, "--out", old_out, "--tokenizer", "byte", "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([n for n in os.listdir(old_out) if n.startswith(".")], [])
        self.assertGreater(self.manifest(old_out)["train_tokens"], limit)

    def test_a_folder_as_input_is_a_clear_error(self):
        # Regression: this was "quartet: internal error: ...".
        sub = self.path("texts")
        os.mkdir(sub)
        self.expect_error(["prepare", sub, "--out", self.path("out")], sub, "is a folder")

    def test_binary_input_is_refused_and_writes_nothing(self):
        text = self.write("a.txt", b"Plain text. " * 100)
        binary = self.write("weights.bin", bytes(range(256)) * 40)
        out = self.path("out")
        self.expect_error(["prepare", text, binary, "--out", out], "weights.bin looks binary", "NUL byte")
        self.assertFalse(os.path.exists(out))

    def test_empty_and_duplicate_inputs_are_warned_about(self):
        a = self.write("a.txt", b"Some text to learn from. " * 50)
        empty = self.write("empty.txt", b"")
        out, p = self.prepared(a, empty, a)
        self.assertIn("empty.txt is empty", p.stderr)
        self.assertIn("given more than once", p.stderr)
        self.assertEqual(self.manifest(out)["documents"], 2)

    def test_inputs_without_any_text_are_refused_and_write_nothing(self):
        # Used to make a dataset of 0 tokens and exit 0; training on it failed later.
        empty = self.write("empty.txt", b"")
        other = self.write("other.txt", b"")
        out = self.path("out")
        p = self.expect_error(["prepare", empty, other, "--out", out, "--tokenizer", "byte"],
                              "the 2 input files hold no text", "empty.txt (empty)", "other.txt (empty)",
                              "nothing was written")
        self.assertEqual(p.returncode, 1)
        self.assertFalse(os.path.exists(out))
        # Inputs skipped as binary are named with the reason.
        binary = self.write("weights.bin", bytes(range(256)) * 40)
        self.expect_error(["prepare", binary, "--skip-binary", "--out", out, "--tokenizer", "byte"],
                          "the 1 input file holds no text", "weights.bin (skipped: binary)")
        self.assertFalse(os.path.exists(out))

    def test_every_member_of_a_multi_member_gzip_is_read(self):
        data = gzip.compress(b"first member. " * 100) + gzip.compress(b"second member. " * 100)
        out, _ = self.prepared(self.write("two.txt.gz", data))
        manifest = self.manifest(out)
        self.assertEqual(manifest["source_bytes"], 14 * 100 + 15 * 100)
        # Every byte is a token, plus <|endoftext|> before the document's train and val parts.
        self.assertEqual(manifest["train_tokens"] + manifest["val_tokens"], 14 * 100 + 15 * 100 + 2)

    def test_gzip_with_trailing_garbage_or_over_the_cap_is_refused(self):
        junk = self.write("junk.txt.gz", gzip.compress(b"text " * 100) + b"garbage")
        self.expect_error(["prepare", junk, "--out", self.path("o1")], "junk.txt.gz", "trailing data")
        bomb = self.write("bomb.txt.gz", gzip.compress(b"a" * 5_000_000))
        self.expect_error(["prepare", bomb, "--out", self.path("o2"), "--max-input-bytes", "1000000"],
                          "bomb.txt.gz", "1000000")
        self.expect_error(["prepare", bomb, "--out", self.path("o3"), "--shard-tokens", "3000000000"],
                          "--shard-tokens", "3000000000")

    def test_a_one_byte_document_makes_an_empty_train_shard_that_reads_back(self):
        # Regression: reading that empty shard memcpy'd from a null pointer.
        out, _ = self.prepared(self.write("x.txt", b"x"))
        self.assertEqual(os.path.getsize(os.path.join(out, "out_train_000000.bin")), 1024)
        p = run("train", "--data", out, "--steps", "1", "--batch", "2", "--seq", "64", "--recipe", "bf16", "--quiet")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("split has 0 tokens", p.stderr)
        self.assertNotIn("internal error", p.stderr)

    def test_a_shard_folder_without_dataset_json_holding_byte_tokens_is_refused(self):
        out, _ = self.prepared(self.write("a.txt", b"Some text to learn from. " * 50))
        os.remove(os.path.join(out, "dataset.json"))
        self.expect_error(["train", "--data", out, "--steps", "1", "--quiet"], "has no dataset.json", "token 256")


if __name__ == "__main__":
    unittest.main()
