"""`quartet prepare` on a corpus of many files, as the GPU machine's code corpus is made: a list
of paths, several threads, binary files skipped, repeated files kept once, and sources.tsv
recording every input with its size and SHA-256 so the corpus can be made again."""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]


def run(*args, stdin=None):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=600, input=stdin)


def shard_tokens(path):
    """The token ids of one llm.c-format shard (256 int32 header, then uint16 ids)."""
    with open(path, "rb") as f:
        data = f.read()
    header = struct.unpack("<256i", data[:1024])
    count = header[2]
    return list(struct.unpack(f"<{count}H", data[1024:1024 + 2 * count]))


class PrepareCorpus(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-corpus-")
        # Varied documents: code-like and prose, some long enough to span many BPE pieces.
        self.files = []
        for i in range(40):
            text = (f"def function_{i}(x):\n    return x * {i} + {i * i}  # comment {i}\n" * (1 + i % 7)
                    + f"Paragraph {i}: the quick brown fox jumps over {i} lazy dogs.\n" * (i % 5))
            self.files.append(self.write(f"doc{i:02d}.py", text.encode()))

    def tearDown(self):
        shutil.rmtree(self.dir)

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def listing(self, paths, name="list.txt"):
        return self.write(name, ("\n".join(paths) + "\n").encode())

    def prepare(self, out, *args, tokenizer="gpt2"):
        p = run("prepare", "--out", os.path.join(self.dir, out), "--tokenizer", tokenizer, *args)
        self.assertEqual(p.returncode, 0, p.stderr)
        return os.path.join(self.dir, out)

    def shards(self, out):
        return {split: shard_tokens(os.path.join(out, f"{os.path.basename(out)}_{split}_000000.bin"))
                for split in ("train", "val")}

    def sources(self, out):
        with open(os.path.join(out, "sources.tsv")) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "# path\tbytes\tsha256\ttokens\tstatus")
        return [line.split("\t") for line in lines[1:]]

    def test_threads_and_file_lists_give_the_same_tokens_as_one_thread(self):
        one = self.prepare("one", *self.files, "--threads", "1")
        listed = self.prepare("listed", "--files-from", self.listing(self.files), "--threads", "4")
        self.assertEqual(self.shards(one)["train"], self.shards(listed)["train"])
        self.assertEqual(self.shards(one)["val"], self.shards(listed)["val"])
        self.assertGreater(len(self.shards(one)["train"]), 1000)

    def test_a_list_on_standard_input_and_paths_together(self):
        out = os.path.join(self.dir, "stdin")
        p = run("prepare", self.files[0], "--files-from", "-", "--out", out, stdin="\n".join(self.files[1:]) + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([row[0] for row in self.sources(out)], self.files)

    def test_sources_tsv_records_size_digest_and_tokens_of_every_input(self):
        out = self.prepare("out", "--files-from", self.listing(self.files))
        rows = self.sources(out)
        self.assertEqual(len(rows), len(self.files))
        manifest = json.load(open(os.path.join(out, "dataset.json")))
        total = 0
        for path, row in zip(self.files, rows):
            data = open(path, "rb").read()
            self.assertEqual(row[0], path)
            self.assertEqual(int(row[1]), len(data))
            self.assertEqual(row[2], hashlib.sha256(data).hexdigest())
            self.assertEqual(row[4], "used")
            total += int(row[3])
        # Each document adds its tokens and one <|endoftext|> to one split or both.
        tokens = manifest["train_tokens"] + manifest["val_tokens"]
        self.assertGreaterEqual(tokens, total + len(self.files))
        self.assertLessEqual(tokens, total + 2 * len(self.files))
        self.assertEqual(manifest["input_files"], len(self.files))
        self.assertEqual(manifest["sources_sha256"],
                         hashlib.sha256(open(os.path.join(out, "sources.tsv"), "rb").read()).hexdigest())

    def test_binary_files_are_skipped_only_when_asked(self):
        binary = self.write("model.bin", b"\x00\x01\x02weights" * 100)
        paths = self.files[:3] + [binary]
        p = run("prepare", "--out", os.path.join(self.dir, "refused"), "--files-from", self.listing(paths))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("model.bin looks binary", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "refused")))
        out = self.prepare("out", "--files-from", self.listing(paths), "--skip-binary")
        rows = self.sources(out)
        self.assertEqual(rows[3][4], "skipped: binary")
        self.assertEqual(rows[3][3], "0")
        self.assertEqual(json.load(open(os.path.join(out, "dataset.json")))["documents"], 3)

    def test_dedupe_keeps_the_first_copy(self):
        copy = self.write("copy.py", open(self.files[5], "rb").read())
        paths = self.files[:10] + [copy]
        kept = self.prepare("kept", "--files-from", self.listing(paths), "--dedupe")
        self.assertEqual(self.sources(kept)[10][4], f"skipped: same contents as {self.files[5]}")
        plain = self.prepare("plain", "--files-from", self.listing(self.files[:10]))
        self.assertEqual(self.shards(kept), self.shards(plain))

    def test_shuffle_reorders_the_documents_reproducibly(self):
        plain = self.prepare("plain", *self.files)
        first = self.prepare("first", *self.files, "--shuffle", "5")
        again = self.prepare("again", *self.files, "--shuffle", "5")
        other = self.prepare("other", *self.files, "--shuffle", "6")
        self.assertEqual(self.shards(first), self.shards(again))
        self.assertNotEqual(self.shards(first)["train"], self.shards(plain)["train"])
        self.assertNotEqual(self.shards(first)["train"], self.shards(other)["train"])
        # The same documents: split at <|endoftext|>, the multiset of documents is unchanged.
        def documents(tokens):
            docs, current = [], []
            for t in tokens:
                if t == 50256:
                    docs.append(tuple(current))
                    current = []
                else:
                    current.append(t)
            return sorted(docs[1:] + [tuple(current)])
        for split in ("train", "val"):
            self.assertEqual(documents(self.shards(first)[split]), documents(self.shards(plain)[split]))
        self.assertEqual(json.load(open(os.path.join(first, "dataset.json")))["shuffle_seed"], 5)
        self.assertNotIn("shuffle_seed", json.load(open(os.path.join(plain, "dataset.json"))))

    def test_a_long_list_is_kept_out_of_dataset_json(self):
        paths = [self.write(f"tiny{i:04d}.txt", f"line {i}\n".encode()) for i in range(1001)]
        out = self.prepare("out", "--files-from", self.listing(paths), tokenizer="byte")
        manifest = json.load(open(os.path.join(out, "dataset.json")))
        self.assertNotIn("inputs", manifest)
        self.assertEqual(len(self.sources(out)), 1001)
        few = self.prepare("few", *paths[:3], tokenizer="byte")
        self.assertEqual(json.load(open(os.path.join(few, "dataset.json")))["inputs"], paths[:3])

    def test_bad_lists_and_options_are_refused_by_name(self):
        out = os.path.join(self.dir, "out")
        for args, fragment in [
            (["--files-from", os.path.join(self.dir, "missing.txt")], "missing.txt"),
            (["--files-from", self.write("empty.txt", b"\n\n")], "lists no files"),
            (["--files-from", self.listing(self.files[:1] + [os.path.join(self.dir, "gone.py")])], "gone.py"),
            ([], "no input files"),
            ([self.files[0], "--threads", "-1"], "--threads"),
        ]:
            p = run("prepare", "--out", out, *args)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(fragment, p.stderr, args)
            self.assertNotIn("internal error", p.stderr)
            self.assertFalse(os.path.exists(os.path.join(out, "dataset.json")), args)


if __name__ == "__main__":
    unittest.main()
