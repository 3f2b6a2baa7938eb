"""`quartet export` writes a complete Hugging Face folder: model, tokenizer and generation
config. Without transformers here, the tokenizer files are read back by an independent reader:
GPT-2's published byte map and BPE algorithm (encoder.py of openai/gpt-2, written out below) run
on the exported vocabulary and merges must give the ids `quartet prepare` writes for the same text.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import unittest

QUARTET = os.environ["QUARTET"]
SMALL = ["--steps", "2", "--batch", "2", "--seq", "64", "--eval-every", "2", "--eval-batches", "1",
         "--final-eval-batches", "1", "--quiet", "--recipe", "bf16", "--sample-tokens", "0"]
FILES = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
         "tokenizer.json", "tokenizer_config.json"]


def run(*args, timeout=900):
    return subprocess.run([QUARTET, *args], capture_output=True, text=True, timeout=timeout)


def bytes_to_unicode():
    """GPT-2's byte -> printable character table, as published in openai/gpt-2 encoder.py."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# GPT-2's pre-tokenizer pattern with \p{L} and \p{N} narrowed to ASCII: exact for ASCII text.
ASCII_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bpe_encode(text, tokenizer_json):
    """openai/gpt-2's encoder: split, map bytes, merge the lowest-ranked pair until none applies."""
    model = tokenizer_json["model"]
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(model["merges"])}
    byte_map = bytes_to_unicode()
    ids = []
    pieces = ASCII_PATTERN.findall(text) if ranks else [text]
    for piece in pieces:
        word = [byte_map[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            first, second = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, float("inf")))
            if (first, second) not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids += [model["vocab"][w] for w in word]
    return ids


class HfExport(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="quartet-hf-export-")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def load(self, folder, name):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            return json.load(f)

    def our_ids(self, text, tokenizer, eot):
        """Our tokenizer's ids for `text`, as `quartet prepare` writes them (llm.c shards)."""
        source = self.path("text.txt")
        with open(source, "wb") as f:
            f.write(text.encode("utf-8"))
        out = self.path("tokens")
        p = run("prepare", source, "--out", out, "--tokenizer", tokenizer, "--name", "t", "--val-fraction", "0.5",
                "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        ids = []
        for split in ("train", "val"):  # the document's start, then its end
            with open(os.path.join(out, f"t_{split}_000000.bin"), "rb") as f:
                data = f.read()
            magic, version, n = struct.unpack_from("<3i", data)
            self.assertEqual((magic, version), (20240520, 1))
            ids += struct.unpack_from(f"<{n}H", data, 1024)
        return [i for i in ids if i != eot]  # each part starts with <|endoftext|>

    def train(self, tokenizer):
        run_dir = self.path(f"run-{tokenizer}")
        p = run("train", *SMALL, "--tokenizer", tokenizer, "--out", run_dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        return run_dir

    def test_byte_export_encodes_like_quartet_and_names_its_tokens(self):
        hf = self.path("hf")
        p = run("export", self.train("byte"), "--out", hf, "--reference")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(hf)), sorted(FILES + ["quartet_reference.json"]))
        config, generation = self.load(hf, "config.json"), self.load(hf, "generation_config.json")
        tok_config, tok = self.load(hf, "tokenizer_config.json"), self.load(hf, "tokenizer.json")
        self.assertEqual((config["bos_token_id"], config["eos_token_id"]), (256, 256))
        self.assertNotIn("pad_token_id", config)  # it would make the embedding's row 256 untrainable
        self.assertEqual({k: generation[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
                         {"bos_token_id": 256, "eos_token_id": 256, "pad_token_id": 256})
        self.assertEqual(tok_config["model_max_length"], config["max_position_embeddings"])
        self.assertEqual(len(tok["model"]["vocab"]), config["vocab_size"])
        for text in ["Emma Woodhouse, handsome, clever, and rich", "  two  spaces\tand a tab\n\nend\n",
                     "naïve café — 東京 🎉", "<|endoftext|> is text here"]:
            self.assertEqual(bpe_encode(text, tok), self.our_ids(text, "byte", 256), text)
        # The reference's greedy continuation starts as `quartet sample` does: <|endoftext|>, prompt.
        greedy = self.load(hf, "quartet_reference.json")["greedy"]
        self.assertEqual(greedy["prompt_tokens"], [256] + list(greedy["prompt"].encode("utf-8")))
        self.assertTrue(1 <= len(greedy["tokens"]) <= 32)
        self.assertTrue(all(0 <= t < 257 for t in greedy["tokens"]))
        # Replacing the export without --reference drops the old reference (another model's).
        p = run("export", self.path("run-byte"), "--out", hf, "--force")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(hf)), sorted(FILES))

    def test_gpt2_export_encodes_like_quartet(self):
        hf = self.path("hf")
        p = run("export", self.train("gpt2"), "--out", hf)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(hf)), sorted(FILES))
        config, generation = self.load(hf, "config.json"), self.load(hf, "generation_config.json")
        tok_config, tok = self.load(hf, "tokenizer_config.json"), self.load(hf, "tokenizer.json")
        self.assertEqual((config["eos_token_id"], generation["eos_token_id"]), (50256, 50256))
        self.assertEqual(tok_config["model_max_length"], config["max_position_embeddings"])
        self.assertEqual((len(tok["model"]["vocab"]), len(tok["model"]["merges"])), (50257, 50000))
        for text in ["Hello world", "It's 2026; they'll see.\n\nNew  paragraph   here  ", "a\tb\r\nc",
                     "<|endoftext|>"]:
            self.assertEqual(bpe_encode(text, tok), self.our_ids(text, "gpt2", 50256), repr(text))

    def test_a_tokenizer_file_alone_is_an_export_not_overwritten_without_force(self):
        hf = self.path("hf")
        os.makedirs(hf)
        with open(os.path.join(hf, "tokenizer.json"), "w") as f:
            f.write("mine")
        p = run("export", self.train("byte"), "--out", hf)
        self.assertNotEqual(p.returncode, 0)
        for fragment in ("already holds a model", "tokenizer.json", "--force"):
            self.assertIn(fragment, p.stderr)
        self.assertEqual(os.listdir(hf), ["tokenizer.json"])
        with open(os.path.join(hf, "tokenizer.json")) as f:
            self.assertEqual(f.read(), "mine")


if __name__ == "__main__":
    unittest.main()
