#!/usr/bin/env python3
"""Reads the TensorBoard events of `quartet train --tensorboard` with TensorBoard's own reader
(tensorboard.backend.event_processing.event_accumulator) and compares every scalar with
metrics.jsonl. Without the tensorboard package it says it skipped and exits 0.

    python3 tests/gpu/tensorboard_read_check.py --quartet build/release/quartet [--device cuda]
        trains a small run of 4 steps (checkpoints at 2 and 4), resumes it from step 2 (so steps
        3 and 4 are written twice, in two events files) and checks the folder;
    python3 tests/gpu/tensorboard_read_check.py --run RUN_FOLDER
        checks an existing run folder.

TensorBoard stores scalars as float32 and drops, at a SessionLog START, the steps an earlier
file holds at and after it, so each tag must show metrics.jsonl's steps once each with the
values rounded to float32. Exits 1 on any difference.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

# metrics.jsonl field -> TensorBoard tag (src/train/run_tracking.cpp)
TAGS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
        "tokens_per_s": "train/tokens_per_s", "skipped": "train/skipped_steps",
        "val_loss": "val/loss", "val_bpb": "val/bpb"}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def train_small_run(quartet, device, folder):
    out = os.path.join(folder, "run")
    common = ["--tensorboard", "--no-plot", "--quiet", "--sample-tokens", "0", "--device", device]
    first = [quartet, "train", "--steps", "4", "--save-every", "2", "--batch", "2", "--seq", "128",
             "--eval-every", "2", "--eval-batches", "1", "--final-eval-batches", "2", "--out", out, *common]
    resumed = [quartet, "train", "--resume", os.path.join(out, "checkpoints", "step-000002"), *common]
    for cmd in (first, resumed):
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return out


def check(run):
    from tensorboard.backend.event_processing import event_accumulator

    folder = os.path.join(run, "tensorboard")
    files = sorted(f for f in os.listdir(folder) if f.startswith("events.out.tfevents."))
    print(f"{folder}: {len(files)} events files: {', '.join(files)}")
    acc = event_accumulator.EventAccumulator(folder, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
    tags = set(acc.Tags()["scalars"])
    problems = []
    for field, tag in TAGS.items():
        expected = [(l["step"], f32(l[field])) for l in lines if field in l and l[field] is not None]
        if not expected:
            continue
        if tag not in tags:
            problems.append(f"{tag}: not in the events (tags: {sorted(tags)})")
            continue
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        if got != expected:
            problems.append(f"{tag}: TensorBoard reads {got}, metrics.jsonl has {expected}")
        else:
            print(f"{tag}: {len(got)} values match (steps {got[0][0]}..{got[-1][0]})")
        walls = [e.wall_time for e in acc.Scalars(tag)]
        times = [l["time"] for l in lines if field in l and l[field] is not None]
        if walls != times:
            problems.append(f"{tag}: wall times {walls} differ from metrics.jsonl's time {times}")
    for p in problems:
        print("MISMATCH", p)
    return not problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quartet", help="the quartet program: train a small run and check it")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--run", help="an existing run folder to check instead")
    args = parser.parse_args()
    if not args.quartet and not args.run:
        parser.error("give --quartet PROGRAM or --run FOLDER")
    try:
        import tensorboard
        from tensorboard.backend.event_processing import event_accumulator  # noqa: F401
    except ImportError as e:
        print(f"skipped: the tensorboard package is not importable ({e})")
        return 0
    print(f"tensorboard {tensorboard.__version__}")
    if args.run:
        return 0 if check(args.run) else 1
    with tempfile.TemporaryDirectory(prefix="quartet-tb-") as folder:
        return 0 if check(train_small_run(args.quartet, args.device, folder)) else 1


if __name__ == "__main__":
    sys.exit(main())
