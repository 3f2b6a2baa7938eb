#!/usr/bin/env bash
# One run of the 30m fidelity campaign (docs/fidelity.md) on the GPU machine, started or resumed,
# within a time budget: the runs take 13-20 minutes and a command on that machine at most 10,
# so a run spans several calls on one warm machine. The run folder lives in /tmp/quartet-runs:
# the machine keeps /tmp between calls while it stays warm (30 s after a call), but replaces the
# working tree's untracked folders with each call's copy. On SIGTERM at the budget's end the
# trainer saves a checkpoint and the next call resumes it. Each call copies the run's metrics.jsonl and
# log to $OUT (finished runs are committed under docs/results/fidelity-30m/).
#   bash scripts/fidelity-30m.sh QUARTET NAME SECONDS
# NAME is <recipe>-s<seed>: bf16, nvidia, tetrajet2, quartet2, or quartet2-no46 (quartet2 with
# 4/6 off), e.g. quartet2-no46-s3.
set -euo pipefail
quartet=$1
name=$2
budget=$3
recipe=${name%-s*}
seed=${name##*-s}
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "fidelity-30m: NAME must end in -s<seed>, got $name" >&2; exit 2; }
extra=()
case "$recipe" in
  bf16|nvidia|tetrajet2|quartet2) ;;
  quartet2-no46) recipe=quartet2; extra=(--four-over-six off) ;;
  *) echo "fidelity-30m: unknown recipe in $name" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")/.." && pwd)
corpus=/tmp/code-corpus
[ -f "$corpus/dataset.json" ] || bash "$here/scripts/build-code-corpus.sh" "$quartet" "$corpus" > /tmp/code-corpus.log 2>&1
run="/tmp/quartet-runs/fidelity-30m/$name"
# The authors' 30M configuration (Quartet-II's scripts): seq 512, 512 sequences (262,144
# tokens) per step, lr 1.2e-3, warmup 10%, cosine to lr/10; 2861 steps = 750M tokens, 25 per
# parameter of the paper's 30M count.
args=(--model 30m --data "$corpus" --seq 512 --batch 128 --grad-accum 4 --lr 0.0012 --steps 2861
      --recipe "$recipe" "${extra[@]}" --seed "$seed" --eval-every 250 --eval-batches 8
      --final-eval-batches 64 --device cuda --keep-last 1)
mkdir -p "$(dirname "$run")" "${OUT:-.}"
if [ -e "$run/checkpoints/latest" ]; then
  cmd=("$quartet" train --resume "$run" --out "$run" --keep-last 1)
else
  cmd=("$quartet" train "${args[@]}" --out "$run" --force)
fi
echo "fidelity-30m: ${cmd[*]}"
set +e
timeout --signal=TERM --kill-after=120 "$budget" "${cmd[@]}" >> "$run.log" 2>&1
rc=$?
set -e
cp "$run/metrics.jsonl" "${OUT:-.}/$name.metrics.jsonl" 2>/dev/null || true
cp "$run/run.json" "${OUT:-.}/$name.run.json" 2>/dev/null || true  # written when the run finishes
cp "$run.log" "${OUT:-.}/$name.log"
if grep -q "^final:" "$run.log"; then
  echo "fidelity-30m: $name finished: $(grep '^final:' "$run.log" | tail -1)"
else
  echo "fidelity-30m: $name stopped at the budget (rc $rc): $(grep -E '^train \[' "$run.log" | tail -1)"
fi
