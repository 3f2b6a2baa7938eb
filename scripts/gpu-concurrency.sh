#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): whether several runs of the
# fidelity campaign's shape (30m, seq 512, 128 x 4 sequences a step) share one GPU faster than
# they run one after another. A quartet2 step there waits on its many short kernels' launches,
# gaps another process's kernels could fill. Prints, and writes to $OUT/concurrency.txt, the
# tokens/s of one run alone, of N at once, and of N at once under MPS where the machine has it:
# each run's median step rate (steps 11 on, after start-up) and their sum. The runs read the
# campaign's corpus (QUARTET_CORPUS, default /tmp/code-corpus, built first if missing).
#   bash .gpu/gpu-concurrency.sh [RECIPE] [N] [STEPS]
set -uo pipefail
cd "$(dirname "$0")"
for f in lib/libopenblas.so.0 quartet; do [ -f "$f.gz" ] && gunzip -f "$f.gz"; done
chmod +x quartet
export LD_LIBRARY_PATH=$PWD/lib:${LD_LIBRARY_PATH:-}
recipe=${1:-quartet2}
n=${2:-2}
steps=${3:-60}
OUT=${OUT:-.}
work=$(mktemp -d)
corpus=${QUARTET_CORPUS:-/tmp/code-corpus}  # the campaign's, built as fidelity-30m.sh builds it
if [ ! -f "$corpus/dataset.json" ]; then
  bash build-code-corpus.sh "$PWD/quartet" "$corpus" > "$work/corpus.log" 2>&1 ||
    { echo "gpu-concurrency: building the corpus failed: $(tail -n 1 "$work/corpus.log")"; exit 1; }
fi
args=(train --model 30m --data "$corpus" --seq 512 --batch 128 --grad-accum 4 --lr 0.0012 --steps "$steps"
      --recipe "$recipe" --eval-every 0 --final-eval-batches 1 --sample-tokens 0 --device cuda --quiet --no-plot)

# The median tokens/s of a run's steps after the tenth (metrics.jsonl's per-step tokens_per_s).
median_rate() {
  python3 -c '
import json, statistics, sys
rates = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1])) if r.get("step", 0) > 10 and "tokens_per_s" in r]
print(round(statistics.median(rates)) if rates else 0)' "$1"
}

measure() {  # LABEL COUNT
  local label=$1 count=$2 i total=0 rates=""
  for (( i = 1; i <= count; ++i )); do
    timeout 240 ./quartet "${args[@]}" --seed "$i" --out "$work/$label-$i" > "$work/$label-$i.log" 2>&1 &
  done
  wait
  for (( i = 1; i <= count; ++i )); do
    if [ ! -f "$work/$label-$i/run.json" ]; then
      echo "$label: run $i failed: $(tail -n 1 "$work/$label-$i.log")"
      return
    fi
    local r
    r=$(median_rate "$work/$label-$i/metrics.jsonl")
    rates+="${rates:+ + }$r"
    total=$(( total + r ))
  done
  echo "$label: $count run(s) of $recipe at once: $rates = $total tokens/s"
}

{
  nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
  measure alone 1
  measure shared "$n"
  if command -v nvidia-cuda-mps-control > /dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=$work/mps-pipe CUDA_MPS_LOG_DIRECTORY=$work/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if timeout 20 nvidia-cuda-mps-control -d; then
      measure mps "$n"
      echo quit | timeout 20 nvidia-cuda-mps-control
    else
      echo "mps: the control daemon did not start"
    fi
  else
    echo "mps: nvidia-cuda-mps-control is not on this machine"
  fi
} | tee "$OUT/concurrency.txt"
rm -rf "$work"
