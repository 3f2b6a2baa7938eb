#!/usr/bin/env python3
"""Check a `quartet export --reference` folder against Hugging Face transformers: load it with
LlamaForCausalLM in FP32, run the reference tokens, and compare the logits with the ones
Quartet's FP64 reference backend computed. Prints the maximum differences; exits non-zero if
they exceed the tolerance (FP32 vs FP64 arithmetic on a small model: 1e-3 absolute).

    python3 scripts/check_hf_export.py EXPORT_FOLDER [more folders...]
"""
import json
import sys

import torch
from transformers import LlamaForCausalLM


def check(folder):
    ref = json.load(open(f"{folder}/quartet_reference.json"))
    model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    tokens = torch.tensor([ref["tokens"]])
    with torch.no_grad():
        logits = model(tokens).logits[0].double()
    ours = torch.tensor(ref["logits"], dtype=torch.float64).reshape(logits.shape)
    diff = (logits - ours).abs().max().item()
    scale = ours.abs().max().item()
    agree = (logits.argmax(-1) == ours.argmax(-1)).float().mean().item()
    print(f"{folder}: max |logit difference| {diff:.3e} (logits up to {scale:.3f}); argmax agreement {agree:.3f}")
    return diff < 1e-3


if __name__ == "__main__":
    ok = all([check(f) for f in sys.argv[1:]])
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)
