#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): whether several runs of the
# fidelity campaign's shape (30m, seq 512, 128 x 4 sequences a step) share one GPU faster than
# they run one after another. A quartet2 step there waits on its many short kernels' launches,
# gaps another process's kernels could fill. Prints, and writes to $OUT/concurrency.txt, the
# tokens/s of one run alone, of N at once, and of N at once under MPS where the machine has it:
# each run's median step rate (steps 11 on, after start-up), their sum, and the tokens of all
# runs' steps 11 on over the wall time from the first of them to the last (the rate the runs
# made together, also where one finished early). The runs read the campaign's corpus
# (QUARTET_CORPUS, default /tmp/code-corpus, built first if missing). A run is stopped after
# RUN_SECONDS (default 150); the exit status is 1 when a run failed.
#   bash .gpu/gpu-concurrency.sh [RECIPE] [N] [STEPS]
set -uo pipefail
cd "$(dirname "$0")"
. ./gpu-unpack.sh
recipe=${1:-quartet2}
n=${2:-2}
steps=${3:-60}
OUT=${OUT:-.}
run_seconds=${RUN_SECONDS:-150}
work=$(mktemp -d)
# On any exit (a TERM from the caller's time limit too), no run is left holding the GPU.
trap 'kill $(jobs -p) 2> /dev/null; rm -rf "$work"' EXIT
trap 'exit 143' TERM
failed=0
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

# The tokens of the runs' steps after the tenth over the wall time they span together (from the
# earliest end of a tenth step to the latest end of a last step; metrics.jsonl's time, tokens).
union_rate() {
  python3 -c '
import json, sys
starts, ends, tokens = [], [], 0
for path in sys.argv[1:]:
    rows = [r for r in map(json.loads, open(path)) if "tokens" in r and "time" in r]
    tenth = [r for r in rows if r["step"] == 10]
    if not tenth or rows[-1]["step"] <= 10:
        print(0); sys.exit()
    starts.append(tenth[0]["time"]); ends.append(rows[-1]["time"])
    tokens += rows[-1]["tokens"] - tenth[0]["tokens"]
span = max(ends) - min(starts)
print(round(tokens / span) if span > 0 else 0)' "$@"
}

# A line of the report: printed and appended to $OUT/concurrency.txt.
say() { echo "$*" | tee -a "$OUT/concurrency.txt"; }

measure() {  # LABEL COUNT
  local label=$1 count=$2 i total=0 rates="" metrics=()
  for (( i = 1; i <= count; ++i )); do
    timeout -k 15 "$run_seconds" ./quartet "${args[@]}" --seed "$i" --out "$work/$label-$i" > "$work/$label-$i.log" 2>&1 &
  done
  wait
  for (( i = 1; i <= count; ++i )); do
    if [ ! -f "$work/$label-$i/run.json" ]; then
      say "$label: run $i failed: $(tail -n 1 "$work/$label-$i.log")"
      failed=1
      return
    fi
    local r
    r=$(median_rate "$work/$label-$i/metrics.jsonl")
    rates+="${rates:+ + }$r"
    total=$(( total + r ))
    metrics+=("$work/$label-$i/metrics.jsonl")
  done
  say "$label: $count run(s) of $recipe at once: $rates = $total tokens/s; together $(union_rate "${metrics[@]}") tokens/s"
}

: > "$OUT/concurrency.txt"
say "$(nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader)"
measure alone 1
measure shared "$n"
if command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=$work/mps-pipe CUDA_MPS_LOG_DIRECTORY=$work/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if timeout -k 5 20 nvidia-cuda-mps-control -d; then
    measure mps "$n"
    echo quit | timeout -k 5 20 nvidia-cuda-mps-control
  else
    say "mps: the control daemon did not start"
  fi
else
  say "mps: nvidia-cuda-mps-control is not on this machine"
fi
exit "$failed"
