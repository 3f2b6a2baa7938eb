#!/usr/bin/env python3
"""PyTorch reference trainer for the end-to-end training benchmark.

Trains the project's Llama (src/nn/llama.cpp) the way a PyTorch user would: FP32 master
weights, BF16 autocast, scaled_dot_product_attention, fused AdamW, optionally torch.compile.
Random GPT-2 token ids stand in for data: only speed and memory are compared, never loss.

Example:
  python3 bench/pytorch_reference.py --model 124m --batch 8 --json -
"""
import argparse
import datetime
import importlib.util
import json
import math
import sys

# name: (layers, d_model, heads, kv_heads, ffn (0: default), seq). The project's presets
# (llama_preset in src/nn/llama.cpp) plus "1b" (about 1.1B parameters with the GPT-2
# vocabulary), which the project has no preset for.
PRESETS = {
    "tiny": (2, 128, 4, 2, 0, 256),
    "30m": (6, 640, 5, 5, 0, 1024),
    "50m": (7, 768, 6, 6, 0, 1024),
    "100m": (8, 1024, 8, 8, 0, 1024),
    "124m": (12, 640, 10, 10, 0, 1024),
    "200m": (10, 1280, 10, 10, 0, 1024),
    "1b": (18, 2048, 16, 16, 5632, 2048),
}
GPT2_VOCAB = 50257
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
INIT_STD = 0.02


def die(message):
    print(f"pytorch_reference: {message}", file=sys.stderr)
    sys.exit(1)


try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    die(f"PyTorch is not importable ({e})")


def default_ffn(d):
    # round_up(8 d / 3, 256) with C++ integer division, as LlamaConfig::ffn().
    return (8 * d // 3 + 255) // 256 * 256


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, RMS_EPS)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kv, self.hd = c["heads"], c["kv_heads"], c["head_dim"]
        self.input_layernorm = RMSNorm(c["d_model"])
        # Fused projections as in the project: rows q heads | k heads | v heads, and gate | up.
        self.qkv_proj = nn.Linear(c["d_model"], (self.h + 2 * self.kv) * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, c["d_model"], bias=False)
        self.post_attention_layernorm = RMSNorm(c["d_model"])
        self.gate_up_proj = nn.Linear(c["d_model"], 2 * c["ffn"], bias=False)
        self.down_proj = nn.Linear(c["ffn"], c["d_model"], bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        qkv = self.qkv_proj(self.input_layernorm(x))
        q, k, v = qkv.split([self.h * self.hd, self.kv * self.hd, self.kv * self.hd], dim=-1)
        q = q.view(B, T, self.h, self.hd).transpose(1, 2)  # [B, heads, T, hd]
        k = k.view(B, T, self.kv, self.hd).transpose(1, 2)
        v = v.view(B, T, self.kv, self.hd).transpose(1, 2)
        # Tables cast to the activations' dtype (as Hugging Face does) so that RoPE does not
        # promote the BF16 q and k to FP32.
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv < self.h)
        x = x + self.o_proj(y.transpose(1, 2).reshape(B, T, self.h * self.hd))
        gate, up = self.gate_up_proj(self.post_attention_layernorm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class Llama(nn.Module):
    def __init__(self, c, seq):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["d_model"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["d_model"])
        self.lm_head = nn.Linear(c["d_model"], c["vocab"], bias=False)  # untied
        # RoPE tables [seq, head_dim] for positions 0..seq-1 (rotate-half layout: the angles
        # repeat once), computed in FP64 as the project does.
        hd = c["head_dim"]
        inv_freq = ROPE_THETA ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angles = torch.outer(torch.arange(seq, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        # Init as LlamaModel: normal(0, 0.02), output projections scaled by 1/sqrt(2 layers).
        out_std = INIT_STD / math.sqrt(2 * c["layers"])
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else INIT_STD)

    def forward(self, idx, targets):
        # Loss inside forward (nanoGPT style) so that torch.compile sees it too.
        T = idx.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def peak_flops(device_name, override_tflops):
    """Dense BF16 tensor-core peak (FLOP/s) of the GPU, as llm.c counts it."""
    if override_tflops is not None:
        if override_tflops <= 0:
            die("--peak-tflops must be positive")
        return override_tflops * 1e12
    name = device_name.upper()
    if "NVL" not in name:  # H100/H200 NVL run at lower clocks: not in this table
        if "H200" in name:
            return 989.4e12  # the H100 SXM's SMs and clocks
        if "H100" in name and "PCIE" in name:
            return 756e12
        if "H100" in name:
            return 989.4e12  # SXM ("NVIDIA H100 80GB HBM3")
    die(f"no known BF16 peak for '{device_name}'; give it with --peak-tflops")


def parse_args():
    p = argparse.ArgumentParser(
        description="Train the project's Llama with plain PyTorch (FP32 master weights, BF16 autocast, SDPA, "
        "fused AdamW, optional torch.compile) on random GPT-2 tokens; report tokens/s, ms/step, MFU and peak "
        "memory. Presets: 124m = 12 layers, d 640, 10 heads, seq 1024; 1b = 18 layers, d 2048, 16 heads, "
        "ffn 5632, seq 2048; tiny/30m/50m/100m/200m as the project's llama_preset. All use the GPT-2 vocabulary "
        f"({GPT2_VOCAB}) unless --vocab is given.")
    p.add_argument("--model", default="124m", choices=list(PRESETS), help="model preset (default: %(default)s)")
    for flag, what in [("--layers", "number of blocks"), ("--d-model", "model width"), ("--heads", "attention heads"),
                       ("--kv-heads", "key/value heads (grouped-query attention; default: --heads if given)"),
                       ("--ffn", "SwiGLU hidden width (default: the preset's, else round_up(8 d / 3, 256))"),
                       ("--vocab", f"vocabulary size (default: {GPT2_VOCAB}, GPT-2)")]:
        p.add_argument(flag, type=int, default=None, metavar="N", help=f"override the preset's {what}")
    p.add_argument("--batch", type=int, default=8, metavar="N", help="sequences per step (default: %(default)s)")
    p.add_argument("--seq", type=int, default=None, metavar="N", help="sequence length (default: the preset's)")
    p.add_argument("--steps", type=int, default=30, metavar="N", help="timed steps (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="untimed steps first (default: 10, or 20 with --compile)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile the model (default; --no-compile: eager)")
    p.add_argument("--seed", type=int, default=1, metavar="N", help="torch.manual_seed (default: %(default)s)")
    p.add_argument("--peak-tflops", type=float, default=None, metavar="TFLOPS",
                   help="dense BF16 peak in TFLOP/s for MFU (default: from the device name; required for a GPU "
                   "other than H100 SXM/PCIe or H200)")
    p.add_argument("--json", metavar="FILE", default=None, help="write the result as JSON to FILE ('-': stdout)")
    return p.parse_args()


def model_config(args):
    """The model's shape: the preset's, with any explicit overrides applied."""
    layers, d, heads, kv, ffn, seq = PRESETS[args.model]
    preset = {"layers": layers, "d_model": d, "heads": heads, "kv_heads": kv, "vocab": GPT2_VOCAB,
              "ffn": ffn or default_ffn(d)}
    pick = lambda given, default: default if given is None else given
    c = {"layers": pick(args.layers, layers), "d_model": pick(args.d_model, d), "heads": pick(args.heads, heads)}
    # New head count without --kv-heads: plain multi-head attention rather than the preset's ratio.
    c["kv_heads"] = pick(args.kv_heads, kv if args.heads is None else c["heads"])
    c["vocab"] = pick(args.vocab, GPT2_VOCAB)
    # The preset's explicit ffn only belongs to the preset's width.
    c["ffn"] = pick(args.ffn, ffn if ffn and c["d_model"] == d else default_ffn(c["d_model"]))
    # Same checks as LlamaConfig::validate.
    if min(c.values()) < 1:
        die(f"model sizes must be positive: {c}")
    if c["vocab"] < 2:
        die(f"--vocab must be at least 2, got {c['vocab']}")
    if c["d_model"] % c["heads"] or (c["d_model"] // c["heads"]) % 2 or c["heads"] % c["kv_heads"]:
        die(f"d_model {c['d_model']} must be a multiple of heads {c['heads']} with an even head dim, and heads a "
            f"multiple of kv heads {c['kv_heads']}")
    name = args.model if all(c[k] == v for k, v in preset.items()) else "custom"
    c = {"name": name, **c, "head_dim": c["d_model"] // c["heads"], "rope_theta": ROPE_THETA, "rms_norm_eps": RMS_EPS}
    return c, pick(args.seq, seq)


def main():
    args = parse_args()
    if not torch.cuda.is_available():
        die("CUDA is unavailable (this benchmark needs an NVIDIA GPU)")
    if args.batch < 1 or args.steps < 1 or (args.seq is not None and args.seq < 1):
        die("--batch, --steps and --seq must be positive")
    warmup = args.warmup if args.warmup is not None else (20 if args.compile else 10)
    if warmup < 0:
        die("--warmup must be non-negative")
    if args.compile and importlib.util.find_spec("triton") is None:
        die("torch.compile needs Triton, which is not installed; rerun with --no-compile")
    cfg, seq = model_config(args)
    device = torch.cuda.get_device_name()
    peak = peak_flops(device, args.peak_tflops)  # fail before the (slow) run on an unknown GPU

    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # harmless: autocast runs the matmuls in BF16
    torch.set_float32_matmul_precision("high")
    with torch.device("cuda"):
        model = Llama(cfg, seq)
    n_params = sum(p.numel() for p in model.parameters())
    # llm.c's count: 6 N for the matmuls (all parameters, embedding included, a slight overcount
    # as in llm.c) plus 6 L d T for attention scores and values under the causal mask.
    flops_per_token = 6 * n_params + 6 * cfg["layers"] * cfg["d_model"] * seq

    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}],
        lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    run = torch.compile(model) if args.compile else model

    # A fresh batch per step, drawn before anything is timed; targets are the inputs shifted.
    # Each batch is its own contiguous tensor, so compiled code sees identical inputs every step.
    inputs, targets = [], []
    for _ in range(warmup + args.steps):
        tokens = torch.randint(0, cfg["vocab"], (args.batch, seq + 1), device="cuda")
        inputs.append(tokens[:, :-1].contiguous())
        targets.append(tokens[:, 1:].contiguous())
    del tokens

    def step(i):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = run(inputs[i], targets[i])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    print(f"pytorch_reference: {cfg['name']} ({n_params / 1e6:.1f}M parameters), batch {args.batch} x seq {seq}, "
          f"{'compiled' if args.compile else 'eager'}, {warmup} warm-up + {args.steps} timed steps on {device}",
          file=sys.stderr)
    if warmup == 0 and args.compile:
        print("pytorch_reference: warning: with --warmup 0 the compilation is timed too", file=sys.stderr)
    done = 0  # steps finished: when compiling, a failure in the first one is the compiler's
    try:
        for i in range(warmup):
            step(i)
            done += 1
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(warmup, warmup + args.steps):
            loss = step(i)  # no .item() here: it would synchronize every step
            done += 1
        end.record()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        die(f"out of GPU memory at batch {args.batch} x seq {seq}; try a smaller --batch")
    except Exception as e:
        if not (args.compile and done == 0):
            raise
        # Dynamo's first line is often just "backend='inductor' raised:": keep the cause too.
        first = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300]
        die(f"torch.compile failed ({type(e).__name__}: {first}); rerun with --no-compile")

    ms_per_step = start.elapsed_time(end) / args.steps
    tokens_per_s = args.batch * seq / (ms_per_step / 1e3)
    mfu = tokens_per_s * flops_per_token / peak
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    final_loss = loss.item()
    if not math.isfinite(final_loss):
        die(f"the loss is not finite ({final_loss}) after {warmup + args.steps} steps")

    result = {
        "case": f"train/{'pytorch' if args.compile else 'pytorch-eager'}/{cfg['name']}",
        "tokens_per_s": tokens_per_s,
        "ms_per_step": ms_per_step,
        "mfu": mfu,
        "peak_gib": peak_gib,
        "flops_per_token": flops_per_token,
        "peak_tflops": peak / 1e12,
        "parameters": n_params,
        "model": cfg,
        "batch": args.batch,
        "seq": seq,
        "steps": args.steps,
        "warmup": warmup,
        "compile": args.compile,
        "device": device,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(f"pytorch_reference: {result['case']}: {tokens_per_s:,.0f} tokens/s, {ms_per_step:.2f} ms/step, "
          f"MFU {100 * mfu:.1f}% ({flops_per_token / 1e9:.3f} GFLOP/token against a {peak / 1e12:.1f} TFLOP/s "
          f"peak), peak memory {peak_gib:.2f} GiB, last loss {final_loss:.3f}", file=sys.stderr)
    if args.json == "-":
        json.dump(result, sys.stdout, indent=2)
        print()
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
