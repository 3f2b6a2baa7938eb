#!/usr/bin/env python3
"""Check a `quartet export` folder with Hugging Face transformers (run where transformers is
installed: the GPU machine; everything runs on its CPU in FP32).

    python3 tests/gpu/hf_export_check.py EXPORT --quartet QUARTET --checkpoint RUN
        [--prompt TEXT] [--tokens N]

EXPORT is the folder `quartet export RUN --out EXPORT [--reference]` wrote. Checks, one PASS or
FAIL line each:
  - AutoTokenizer and AutoModelForCausalLM load the folder offline (local_files_only);
  - the tokenizer's ids for a set of texts (ASCII, runs of spaces, newlines and tabs, non-ASCII
    UTF-8, the text "<|endoftext|>") equal ours, which `QUARTET prepare` writes into shards;
    tokenizer(text) starts with <|endoftext|> as `quartet sample` does; decoding gives the text
    back; with tiktoken installed, tiktoken on the exported vocabulary agrees too;
  - special tokens, context length and generation_config.json name the ids quartet uses;
  - greedy generation of N tokens from the prompt gives the text `QUARTET sample RUN --prompt
    TEXT --tokens N --temperature 0` prints;
  - with quartet_reference.json (export --reference): the logits of its token sequence match
    quartet's FP64 reference within 1e-3, and greedy generation from its prompt gives exactly
    the token ids quartet's FP64 reference generated.
Exits 1 if any check fails, 2 if it cannot run.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

TEXTS = [
    "Hello world",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    "  leading, inner   and trailing spaces  ",
    "line one\nline two\n\n\tindented line\r\nlast",
    "naïve café — 東京 🎉 Ωμέγα",
    "don't I'll we've 1234567 3.14159",
    "<|endoftext|>",
    "before <|endoftext|>after",
]

failures = 0


def report(ok, what, detail=""):
    global failures
    failures += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'} {what}{(': ' + detail) if detail else ''}", flush=True)
    return ok


def our_ids(quartet, tokenizer_name, eot, text, scratch):
    """Our tokenizer's ids for `text`: `quartet prepare` on it as one document, read back from
    its llm.c shards (the start of the document in train, the end in val, each after
    <|endoftext|>; our tokenizers never produce that id from text)."""
    source = os.path.join(scratch, "text.txt")
    with open(source, "wb") as f:
        f.write(text.encode("utf-8"))
    out = os.path.join(scratch, "shards")
    p = subprocess.run([quartet, "prepare", source, "--out", out, "--tokenizer", tokenizer_name, "--name", "t",
                        "--val-fraction", "0.5", "--force"], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"quartet prepare failed: {p.stderr.strip()}")
    ids = []
    for split in ("train", "val"):
        with open(os.path.join(out, f"t_{split}_000000.bin"), "rb") as f:
            data = f.read()
        magic, version, n = struct.unpack_from("<3i", data)
        if (magic, version) != (20240520, 1):
            raise RuntimeError(f"{split} shard: unexpected header {magic} {version}")
        ids += struct.unpack_from(f"<{n}H", data, 1024)
    return [i for i in ids if i != eot]


def tiktoken_encoding(folder, eot):
    """tiktoken on the exported vocabulary (GPT-2's pattern, ranks = ids, as tiktoken's own gpt2
    encoding is built): a third, independent BPE implementation. None without tiktoken."""
    try:
        import tiktoken
    except ImportError:
        return None
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    to_byte = {chr(c): b for b, c in zip(bs, cs)}
    ranks = {bytes(to_byte[ch] for ch in token): i for token, i in vocab.items() if i != eot}
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding("quartet-export", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": eot})


def check_tokenizer(tok, folder, config, quartet, scratch):
    eot, name = config["eos_token_id"], config["quartet_tokenizer"]
    report(len(tok) == config["vocab_size"], "tokenizer vocabulary size", f"{len(tok)} (model {config['vocab_size']})")
    report((tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (eot, eot, eot)
           and tok.convert_tokens_to_ids("<|endoftext|>") == eot, "special tokens",
           f"bos {tok.bos_token_id} eos {tok.eos_token_id} pad {tok.pad_token_id}, <|endoftext|> = "
           f"{tok.convert_tokens_to_ids('<|endoftext|>')} (quartet {eot})")
    report(tok.model_max_length == config["max_position_embeddings"], "model_max_length",
           f"{tok.model_max_length} (context {config['max_position_embeddings']})")
    tk = tiktoken_encoding(folder, eot)
    for text in TEXTS:
        ours = our_ids(quartet, name, eot, text, scratch)
        theirs = tok.encode(text, add_special_tokens=False)
        report(theirs == ours, f"encode {text!r}", "" if theirs == ours else f"transformers {theirs} quartet {ours}")
        with_bos = tok(text)["input_ids"]
        report(with_bos == [eot] + ours, f"tokenizer({text!r}) starts with <|endoftext|>",
               "" if with_bos == [eot] + ours else f"{with_bos[:8]}...")
        back = tok.decode(theirs, skip_special_tokens=True)
        report(back == text, f"decode {text!r}", "" if back == text else repr(back))
        if tk is not None:
            t = tk.encode_ordinary(text)
            report(t == ours, f"tiktoken encode {text!r}", "" if t == ours else f"tiktoken {t} quartet {ours}")
    if tk is None:
        print("SKIP tiktoken comparison (tiktoken not installed)")


def greedy(model, prompt_ids, n, eot):
    # Installed as the model's own configuration rather than passed: a passed one has its
    # default-valued fields (do_sample=False among them) filled from the model's, which samples.
    saved = model.generation_config
    model.generation_config = GenerationConfig(do_sample=False, max_new_tokens=n, bos_token_id=eot, eos_token_id=eot,
                                               pad_token_id=eot)
    ids = torch.tensor([prompt_ids])
    try:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), output_scores=True,
                                 return_dict_in_generate=True)
    finally:
        model.generation_config = saved
    new = out.sequences[0, len(prompt_ids):].tolist()
    # How close each step was to a tie: quartet's sample rounds activations to BF16, so a step
    # whose two best logits are closer than that rounding may pick the other token.
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return new, gaps


def check_generation(tok, model, config, args):
    eot = config["eos_token_id"]
    g = model.generation_config
    report((g.bos_token_id, g.eos_token_id, g.pad_token_id) == (eot, eot, eot), "generation_config.json token ids",
           f"bos {g.bos_token_id} eos {g.eos_token_id} pad {g.pad_token_id}")
    report(g.do_sample is True and abs(g.temperature - 0.8) < 1e-12 and g.top_k == 40 and g.max_new_tokens == 200,
           "generation_config.json sampling defaults (quartet sample's: temperature 0.8, top-k 40, 200 tokens)",
           f"do_sample {g.do_sample} temperature {g.temperature} top_k {g.top_k} max_new_tokens {g.max_new_tokens}")
    prompt_ids = tok(args.prompt)["input_ids"]
    if len(prompt_ids) + args.tokens > config["max_position_embeddings"]:
        print(f"error: the prompt ({len(prompt_ids)} tokens) and --tokens {args.tokens} exceed the model's context "
              f"of {config['max_position_embeddings']} (quartet would slide its window, transformers would not)")
        sys.exit(2)
    new, gaps = greedy(model, prompt_ids, args.tokens, eot)
    theirs = args.prompt + tok.decode(new, skip_special_tokens=True)
    p = subprocess.run([args.quartet, "sample", args.checkpoint, "--prompt", args.prompt, "--tokens", str(args.tokens),
                        "--temperature", "0"], capture_output=True, text=True)
    if p.returncode != 0:
        report(False, "quartet sample", p.stderr.strip())
        return
    ours = p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout
    detail = f"{len(new)} tokens, closest step's top-2 logit gap {min(gaps):.4f}"
    if theirs != ours:
        at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        detail += f"; first difference at character {at}:\n  transformers {theirs!r}\n  quartet      {ours!r}"
    report(theirs == ours, f"greedy generation from {args.prompt!r} equals `quartet sample --temperature 0`", detail)


def check_reference(model, folder):
    path = os.path.join(folder, "quartet_reference.json")
    if not os.path.exists(path):
        print("SKIP FP64 reference (export without --reference)")
        return
    with open(path) as f:
        ref = json.load(f)
    tokens = torch.tensor([ref["tokens"]])
    with torch.no_grad():
        logits = model(tokens).logits[0].double()
    ours = torch.tensor(ref["logits"], dtype=torch.float64).reshape(logits.shape)
    diff = (logits - ours).abs().max().item()
    report(diff < 1e-3, "logits against quartet's FP64 reference", f"max |difference| {diff:.3e}")
    if "greedy" in ref:
        want = ref["greedy"]["tokens"]
        new, gaps = greedy(model, ref["greedy"]["prompt_tokens"], len(want), ref["greedy"]["prompt_tokens"][0])
        report(new == want, "greedy token ids against quartet's FP64 reference",
               f"{len(want)} tokens, closest top-2 gap {min(gaps):.4f}" + ("" if new == want else f"; {new} vs {want}"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="folder written by quartet export")
    parser.add_argument("--quartet", required=True, help="the quartet program")
    parser.add_argument("--checkpoint", required=True, help="the run or checkpoint folder that was exported")
    parser.add_argument("--prompt", default="It is a truth universally acknowledged")
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate greedily")
    args = parser.parse_args()
    if args.tokens < 1:
        parser.error(f"--tokens must be at least 1, got {args.tokens}")
    with open(os.path.join(args.export, "config.json")) as f:
        config = json.load(f)
    if "quartet_tokenizer" not in config:
        parser.error(f"{args.export}/config.json names no quartet_tokenizer: export it again with this quartet")
    tok = AutoTokenizer.from_pretrained(args.export, local_files_only=True)
    report(True, "AutoTokenizer loads the folder", type(tok).__name__)
    model = AutoModelForCausalLM.from_pretrained(args.export, local_files_only=True, dtype=torch.float32)
    model.eval()
    report(True, "AutoModelForCausalLM loads the folder", type(model).__name__)
    with tempfile.TemporaryDirectory(prefix="hf-export-check-") as scratch:
        check_tokenizer(tok, args.export, config, args.quartet, scratch)
    check_generation(tok, model, config, args)
    check_reference(model, args.export)
    print("OK" if failures == 0 else f"{failures} check(s) FAILED")
    sys.exit(0 if failures == 0 else 1)


if __name__ == "__main__":
    main()
