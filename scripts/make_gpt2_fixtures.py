#!/usr/bin/env python3
"""Make (text, ids) fixtures for Quartet's GPT-2 tokenizer with tiktoken, from the same vocabulary
files Quartet ships (data/tokenizers/gpt2). Run where tiktoken is installed (the GPU machine):

    python3 scripts/make_gpt2_fixtures.py data/tokenizers/gpt2 data/corpus/austen tests/data/gpt2_fixtures.json

The ids come from tiktoken's encode_ordinary with GPT-2's pattern and the ranks built from
encoder.json/vocab.bpe exactly as tiktoken builds its own "gpt2" encoding; when tiktoken's
built-in "gpt2" encoding is available offline, the two are also compared.
"""
import gzip
import json
import os
import random
import sys

import tiktoken

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def read(folder, name):
    path = os.path.join(folder, name)
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb").read().decode("utf-8")
    return open(path, encoding="utf-8").read()


def mergeable_ranks(folder):
    # GPT-2's byte <-> printable-character map, then ranks: 256 bytes, then each merge in order.
    rank_to_byte = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    char_to_byte = {chr(b): b for b in rank_to_byte}
    n = 0
    for b in range(256):
        if b not in rank_to_byte:
            rank_to_byte.append(b)
            char_to_byte[chr(256 + n)] = b
            n += 1
    decode = lambda s: bytes(char_to_byte[c] for c in s)
    ranks = {bytes([b]): i for i, b in enumerate(rank_to_byte)}
    merges = [tuple(line.split()) for line in read(folder, "vocab.bpe").split("\n")[1:] if line]
    for first, second in merges:
        ranks[decode(first) + decode(second)] = len(ranks)
    encoder = {decode(k): v for k, v in json.loads(read(folder, "encoder.json")).items() if k != "<|endoftext|>"}
    assert ranks == encoder, "encoder.json and vocab.bpe disagree"
    return ranks


def texts(corpus_folder):
    out = [
        "Hello world",
        "It's a truth universally acknowledged; isn't it? We'll see, they'd say, you're right, I'm sure, they've gone.",
        "  leading spaces, trailing spaces   ",
        "tabs\tand\nnew\n\nlines\r\n and \u00a0 no-break spaces",
        "numbers 1 12 123 1234 12345 3.14159 1e-10 -42 0x1F 1,000,000",
        "UPPER lower MiXeD camelCase snake_case kebab-case",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u00fcber stra\u00dfe",
        "\u6771\u4eac\u90fd \u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea",
        "emoji \U0001F389\U0001F680\U0001F44D\U0001F3FD family \U0001F468\u200D\U0001F469\u200D\U0001F467",
        "code: for (int i = 0; i < n; ++i) { x[i] += y[i] * 2; } // comment",
        "punctuation!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
        "<|endoftext|> is ordinary text here",
        "   \n\n\n   \t\t  ",
        "a",
        "",
        "'s 's's ''s ' s",
        "\u2018curly quotes\u2019 \u201cdouble\u201d \u2014 em dash \u2013 en dash \u2026",
        "ﬁ ligature, combining e\u0301 vs \u00e9, zero\u200bwidth",
        "Mr. Darcy's estate, Pemberley, is in Derbyshire.\n\nElizabeth replied, \"I am not.\"",
    ]
    rng = random.Random(2026)
    alphabet = [chr(c) for c in list(range(32, 127)) + list(range(0xA0, 0x250)) + list(range(0x3040, 0x30FF)) +
                list(range(0x4E00, 0x4E80)) + [0x1F600, 0x1F601, 0x1F680, 0x2764, 0xFE0F, 0x200D]] + [" ", " ", "\n", "\t"]
    for _ in range(60):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))))
    books = sorted(f for f in os.listdir(corpus_folder) if f.endswith(".txt.gz"))
    for i in range(80):
        text = gzip.open(os.path.join(corpus_folder, books[i % len(books)]), "rb").read().decode("utf-8")
        start = rng.randrange(0, len(text) - 3000)
        out.append(text[start:start + rng.randint(20, 2500)])
    return out


def main(vocab_folder, corpus_folder, output):
    enc = tiktoken.Encoding(name="gpt2-quartet", pat_str=PATTERN, mergeable_ranks=mergeable_ranks(vocab_folder),
                            special_tokens={"<|endoftext|>": 50256})
    cases = [{"text": t, "ids": enc.encode_ordinary(t)} for t in texts(corpus_folder)]
    try:
        builtin = tiktoken.get_encoding("gpt2")
        same = all(builtin.encode_ordinary(c["text"]) == c["ids"] for c in cases)
        print(f"tiktoken's built-in gpt2 encoding agrees on all {len(cases)} texts: {same}")
    except Exception as e:  # offline without a cache
        print(f"tiktoken's built-in gpt2 encoding is not available offline ({type(e).__name__}); ranks built from the files")
    meta = {"generator": "scripts/make_gpt2_fixtures.py", "tiktoken": tiktoken.__version__, "pattern": PATTERN}
    with open(output, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"wrote {len(cases)} cases, {sum(len(c['ids']) for c in cases)} tokens, to {output}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
