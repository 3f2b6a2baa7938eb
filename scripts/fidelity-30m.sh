#!/usr/bin/env bash
# Runs of the 30m fidelity campaign (docs/fidelity.md) on the GPU machine, each started or
# resumed, within one time budget: the runs take 13-20 minutes and a command on that machine at
# most 10, so a run spans several calls on one warm machine, and a call that finishes one run goes
# on with the next. On a machine of several GPUs the runs go in lanes, one per GPU
# (CUDA_VISIBLE_DEVICES), each lane taking every QUARTET_GPUS-th unfinished name in order.
# Run folders live in /tmp/quartet-runs (QUARTET_RUNS): the machine keeps /tmp between calls while
# it stays warm (30 s after a call), but replaces the working tree's untracked folders with each
# call's copy. On SIGTERM at the budget's end the trainer saves a checkpoint and the next call
# resumes it. Each call packs every named run's metrics.jsonl, train.log, and once it has them its
# run.json, eval-bf16.json (a 4-bit run's model evaluated with a BF16 forward pass, `quartet
# eval --recipe bf16`) and diagnose.json, into one file, $OUT/fidelity-30m.tar.gz, as NAME/<file>: a finished
# run's folder (it holds run.json) is committed as docs/results/fidelity-30m/NAME, and
# `quartet compare --from` gathers them.
#   bash scripts/fidelity-30m.sh QUARTET SECONDS NAME [NAME...]
# NAME is <recipe>-s<seed>: bf16, nvidia, tetrajet2, quartet2, or quartet2-no46 (quartet2 with
# 4/6 off), e.g. quartet2-no46-s3. A finished run (its run.json exists) is skipped.
# QUARTET_GPUS=N: use the first N GPUs (default: all of CUDA_VISIBLE_DEVICES's, else all that
# nvidia-smi lists, else 1); QUARTET_RUNS_PER_GPU=M: M lanes per GPU (default 1; several runs
# may share a GPU faster than they follow one another: scripts/gpu-concurrency.sh measures it).
# QUARTET_DIAGNOSTICS=N adds `--diagnostics N` (docs/diagnostics.md) to every start and resume:
# the run's numerics are unchanged, its metrics.jsonl gains the quantization figures.
# QUARTET_DIAGNOSE=NAME[,NAME...] (or "all") runs `quartet diagnose` once on each of those runs
# when it has finished (minutes of GPU time each: the bias of every recipe's estimators on that
# trained model), without its picture: the GPU machine has no gnuplot, and
# `quartet plot --diagnose diagnose.json` draws it afterwards.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 QUARTET SECONDS NAME [NAME...]" >&2
  exit 2
fi
quartet=$1
budget=$2
shift 2
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "fidelity-30m: SECONDS must be a whole number, got $budget" >&2; exit 2; }
# A run name (<recipe>-s<seed>), or exit 2 saying what is wrong with it ($2: where it was given).
check_name() {
  local recipe=${1%-s*} seed=${1##*-s}
  [[ "$1" == *-s* && "$seed" =~ ^[0-9]+$ ]] || { echo "fidelity-30m: $2 must end in -s<seed>, got $1" >&2; exit 2; }
  case "$recipe" in
    bf16|nvidia|tetrajet2|quartet2|quartet2-no46) ;;
    *) echo "fidelity-30m: unknown recipe '$recipe' in $1 ($2)" >&2; exit 2 ;;
  esac
}
# Every name is checked before any work starts. One name twice would put two trainers in one
# run folder at once (in lanes).
declare -A seen=()
for name in "$@"; do
  check_name "$name" NAME
  [ -z "${seen[$name]:-}" ] || { echo "fidelity-30m: $name is named twice" >&2; exit 2; }
  seen[$name]=1
done
if [ -n "${QUARTET_DIAGNOSE:-}" ] && [ "$QUARTET_DIAGNOSE" != all ]; then
  IFS=, read -r -a diagnose_names <<< "$QUARTET_DIAGNOSE"
  for name in "${diagnose_names[@]}"; do check_name "$name" QUARTET_DIAGNOSE; done
fi
for setting in QUARTET_GPUS QUARTET_RUNS_PER_GPU; do
  value=${!setting:-}
  [ -z "$value" ] || [[ "$value" =~ ^[1-9][0-9]*$ ]] ||
    { echo "fidelity-30m: $setting must be a positive whole number, got $value" >&2; exit 2; }
done
# The GPUs the lanes use: CUDA_VISIBLE_DEVICES's entries when it is set, else nvidia-smi's.
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
else
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
fi
if [ -n "${QUARTET_GPUS:-}" ]; then
  if [ "${#gpus[@]}" -gt 0 ] && [ "$QUARTET_GPUS" -gt "${#gpus[@]}" ]; then
    echo "fidelity-30m: QUARTET_GPUS is $QUARTET_GPUS, but this machine shows ${#gpus[@]} GPU(s)" >&2
    exit 2
  fi
  [ "${#gpus[@]}" -gt 0 ] || mapfile -t gpus < <(seq 0 $(( QUARTET_GPUS - 1 )))
  gpus=("${gpus[@]:0:$QUARTET_GPUS}")
fi
here=$(cd "$(dirname "$0")/.." && pwd)
# The shuffled order's runs (docs/fidelity.md) in their own folder: a machine's /tmp may still
# hold a sequential run of the same name, which would otherwise be taken as finished.
runs=${QUARTET_RUNS:-/tmp/quartet-runs}/fidelity-30m-shuffled
corpus=${QUARTET_CORPUS:-/tmp/code-corpus}
out=${OUT:-.}
mkdir -p "$runs" "$out"
start=$(date +%s)
if [ ! -f "$corpus/dataset.json" ]; then
  bash "$here/scripts/build-code-corpus.sh" "$quartet" "$corpus" > "$runs/corpus.log" 2>&1 ||
    { echo "fidelity-30m: building the corpus failed:" >&2; tail -5 "$runs/corpus.log" >&2; exit 1; }
fi

# Whether NAME is one of QUARTET_DIAGNOSE's.
diagnosed_here() {
  [ "${QUARTET_DIAGNOSE:-}" = all ] || [[ ",${QUARTET_DIAGNOSE:-}," == *",$1,"* ]]
}

# Whether NAME is a finished 4-bit run without its evaluation in bf16.
needs_bf16_eval() {
  [ "${1%-s*}" != bf16 ] && [ -f "$runs/$1/run.json" ] && [ ! -s "$runs/$1/eval-bf16.json" ]
}

# Starts or resumes one run in what is left of the budget, then diagnoses it if asked.
run_one() {
  local name=$1 recipe seed run left rc
  recipe=${name%-s*}
  seed=${name##*-s}
  local extra=()
  if [ "$recipe" = quartet2-no46 ]; then recipe=quartet2; extra=(--four-over-six off); fi
  run="$runs/$name"
  if [ -f "$run/run.json" ]; then
    echo "fidelity-30m: $name finished earlier"
  else
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 60 ]; then
      echo "fidelity-30m: $name not started: ${left} s of the budget left"
      return 0
    fi
    # The authors' 30M configuration (Quartet-II's scripts): seq 512, 512 sequences (262,144
    # tokens) per step, lr 1.2e-3, warmup 10%, cosine to lr/10; 2907 steps = 762M tokens, 25 per
    # block parameter (30.48M); the batches' sequences drawn from all over the corpus, as C4's
    # are (--data-order shuffled: docs/fidelity.md says why).
    local observe=(--keep-last 1)  # run controls: given again on every resume
    [ -z "${QUARTET_DIAGNOSTICS:-}" ] || observe+=(--diagnostics "$QUARTET_DIAGNOSTICS")
    local cmd
    if [ -e "$run/checkpoints/latest" ]; then
      cmd=("$quartet" train --resume "$run" --out "$run" "${observe[@]}")
    else
      cmd=("$quartet" train --model 30m --data "$corpus" --seq 512 --batch 128 --grad-accum 4 --lr 0.0012 --steps 2907
           --data-order shuffled --recipe "$recipe" "${extra[@]}" --seed "$seed" --eval-every 250 --eval-batches 8 --final-eval-batches 64
           --device cuda "${observe[@]}" --out "$run" --force)
    fi
    echo "fidelity-30m: ${cmd[*]} (budget ${left} s)"
    set +e
    timeout --signal=TERM --kill-after=30 "$left" "${cmd[@]}" >> "$run.log" 2>&1
    rc=$?
    set -e
    if [ -f "$run/run.json" ]; then
      echo "fidelity-30m: $name finished: $(grep '^final:' "$run.log" | tail -1)"
    else
      echo "fidelity-30m: $name stopped (rc $rc): $(grep -E '^train \[' "$run.log" | tail -1)"
      # Without a checkpoint the next call would start the run over: said, not found later.
      [ -e "$run/checkpoints/latest" ] || echo "fidelity-30m: $name left no checkpoint: $(tail -n 1 "$run.log")"
    fi
  fi
  # A 4-bit run's model evaluated with a BF16 forward pass as well (seconds): what its quantized
  # forward pass costs it, beside its own final loss in run.json.
  if needs_bf16_eval "$name"; then
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 30 ]; then
      echo "fidelity-30m: $name not evaluated in bf16: ${left} s of the budget left"
    else
      timeout "$left" "$quartet" eval "$run" --recipe bf16 --device cuda --json > "$run/eval-bf16.json" 2> "$run.eval.log" ||
        { echo "fidelity-30m: eval of $name in bf16 failed: $(tail -n 1 "$run.eval.log")"; rm -f "$run/eval-bf16.json"; }
    fi
  fi
  # One micro-batch of 16 x 512 tokens, 64 draws, the layers of blocks 1 and 4 of 6: every
  # recipe on this run's trained model and data (docs/diagnostics.md).
  if diagnosed_here "$name" && [ -f "$run/run.json" ] && [ ! -f "$run/diagnose/diagnose.json" ]; then
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 300 ]; then  # it takes about 270 s on an H100 (docs/fidelity.md)
      echo "fidelity-30m: $name not diagnosed: ${left} s of the budget left"
    else
      timeout "$left" "$quartet" diagnose "$run" --device cuda --batch 16 --draws 64 --layers 1,4 --no-plot \
        --out "$run/diagnose" > "$run.diagnose.log" 2>&1 || echo "fidelity-30m: diagnose of $name failed: $(tail -n 1 "$run.diagnose.log")"
    fi
  fi
}

# The names that still need work, spread over the lanes; finished ones are said at once.
pending=()
for name in "$@"; do
  if [ -f "$runs/$name/run.json" ] && ! needs_bf16_eval "$name" &&
     { ! diagnosed_here "$name" || [ -f "$runs/$name/diagnose/diagnose.json" ]; }; then
    echo "fidelity-30m: $name finished earlier"
  else
    pending+=("$name")
  fi
done
per_gpu=${QUARTET_RUNS_PER_GPU:-1}
lanes=$(( ${#gpus[@]} > 0 ? ${#gpus[@]} * per_gpu : per_gpu ))
[ "$lanes" -le "${#pending[@]}" ] || lanes=${#pending[@]}
if [ "$lanes" -le 1 ]; then
  for name in "${pending[@]}"; do run_one "$name"; done
else
  echo "fidelity-30m: ${#pending[@]} runs in $lanes lanes on GPU(s) ${gpus[*]:-0}, $per_gpu per GPU"
  for (( lane = 0; lane < lanes; ++lane )); do
    (
      [ "${#gpus[@]}" -eq 0 ] || export CUDA_VISIBLE_DEVICES=${gpus[$(( lane % ${#gpus[@]} ))]}
      for (( i = lane; i < ${#pending[@]}; i += lanes )); do run_one "${pending[$i]}"; done
    ) &
  done
  wait
fi

# One archive, whatever the number of runs (a call brings back at most 8 files).
pack=$(mktemp -d)
for name in "$@"; do
  run="$runs/$name"
  [ -e "$run.log" ] || [ -d "$run" ] || continue
  mkdir -p "$pack/$name"
  cp "$run/metrics.jsonl" "$pack/$name/metrics.jsonl" 2>/dev/null || true
  cp "$run.log" "$pack/$name/train.log" 2>/dev/null || true
  cp "$run/run.json" "$pack/$name/run.json" 2>/dev/null || true
  cp "$run/diagnose/diagnose.json" "$pack/$name/diagnose.json" 2>/dev/null || true
  cp "$run/eval-bf16.json" "$pack/$name/eval-bf16.json" 2>/dev/null || true
  cp "$run.diagnose.log" "$pack/$name/diagnose.log" 2>/dev/null || true
done
tar -czf "$out/fidelity-30m.tar.gz" -C "$pack" .
rm -rf "$pack"
echo "fidelity-30m: wrote $out/fidelity-30m.tar.gz"
