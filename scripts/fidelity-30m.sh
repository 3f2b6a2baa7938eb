#!/usr/bin/env bash
# Runs of the 30m fidelity campaign (docs/fidelity.md) on the GPU machine, each started or
# resumed, one after the other within one time budget: the runs take 13-20 minutes and a command
# on that machine at most 10, so a run spans several calls on one warm machine, and a call that
# finishes one run goes on with the next. Run folders live in /tmp/quartet-runs (QUARTET_RUNS):
# the machine keeps /tmp between calls while it stays warm (30 s after a call), but replaces the
# working tree's untracked folders with each call's copy. On SIGTERM at the budget's end the
# trainer saves a checkpoint and the next call resumes it. Each call copies every named run's
# metrics.jsonl and log to $OUT, and a finished run's run.json: committed as
# docs/results/fidelity-30m/NAME/{metrics.jsonl,run.json}, `quartet compare --from` gathers them.
#   bash scripts/fidelity-30m.sh QUARTET SECONDS NAME [NAME...]
# NAME is <recipe>-s<seed>: bf16, nvidia, tetrajet2, quartet2, or quartet2-no46 (quartet2 with
# 4/6 off), e.g. quartet2-no46-s3. A finished run (its run.json exists) is skipped.
# QUARTET_DIAGNOSTICS=N adds `--diagnostics N` (docs/diagnostics.md) to every start and resume:
# the run's numerics are unchanged, its metrics.jsonl gains the quantization figures.
# QUARTET_DIAGNOSE=1 runs `quartet diagnose` on each finished run (NAME.diagnose.{json,png}; a
# finished run then brings 5 files, and a call returns at most 8: one such run per call).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 QUARTET SECONDS NAME [NAME...]" >&2
  exit 2
fi
quartet=$1
budget=$2
shift 2
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "fidelity-30m: SECONDS must be a whole number, got $budget" >&2; exit 2; }
# Every name is checked before any work starts.
for name in "$@"; do
  recipe=${name%-s*}
  seed=${name##*-s}
  [[ "$name" == *-s* && "$seed" =~ ^[0-9]+$ ]] || { echo "fidelity-30m: NAME must end in -s<seed>, got $name" >&2; exit 2; }
  case "$recipe" in
    bf16|nvidia|tetrajet2|quartet2|quartet2-no46) ;;
    *) echo "fidelity-30m: unknown recipe '$recipe' in $name" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${QUARTET_RUNS:-/tmp/quartet-runs}/fidelity-30m
corpus=${QUARTET_CORPUS:-/tmp/code-corpus}
out=${OUT:-.}
mkdir -p "$runs" "$out"
start=$(date +%s)
if [ ! -f "$corpus/dataset.json" ]; then
  bash "$here/scripts/build-code-corpus.sh" "$quartet" "$corpus" > "$runs/corpus.log" 2>&1 ||
    { echo "fidelity-30m: building the corpus failed:" >&2; tail -5 "$runs/corpus.log" >&2; exit 1; }
fi
for name in "$@"; do
  recipe=${name%-s*}
  seed=${name##*-s}
  extra=()
  if [ "$recipe" = quartet2-no46 ]; then recipe=quartet2; extra=(--four-over-six off); fi
  run="$runs/$name"
  if [ -f "$run/run.json" ]; then
    echo "fidelity-30m: $name finished earlier"
  else
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 60 ]; then
      echo "fidelity-30m: $name not started: ${left} s of the budget left"
      continue
    fi
    # The authors' 30M configuration (Quartet-II's scripts): seq 512, 512 sequences (262,144
    # tokens) per step, lr 1.2e-3, warmup 10%, cosine to lr/10; 2861 steps = 750M tokens, 25 per
    # parameter of the paper's 30M count.
    observe=(--keep-last 1)  # run controls: given again on every resume
    [ -z "${QUARTET_DIAGNOSTICS:-}" ] || observe+=(--diagnostics "$QUARTET_DIAGNOSTICS")
    if [ -e "$run/checkpoints/latest" ]; then
      cmd=("$quartet" train --resume "$run" --out "$run" "${observe[@]}")
    else
      cmd=("$quartet" train --model 30m --data "$corpus" --seq 512 --batch 128 --grad-accum 4 --lr 0.0012 --steps 2861
           --recipe "$recipe" "${extra[@]}" --seed "$seed" --eval-every 250 --eval-batches 8 --final-eval-batches 64
           --device cuda "${observe[@]}" --out "$run" --force)
    fi
    echo "fidelity-30m: ${cmd[*]} (budget ${left} s)"
    set +e
    timeout --signal=TERM --kill-after=120 "$left" "${cmd[@]}" >> "$run.log" 2>&1
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
  # QUARTET_DIAGNOSE=1: each finished run's gradient estimators on its own trained model and
  # data (`quartet diagnose`, docs/diagnostics.md): one micro-batch of 16 x 512 tokens, 64 draws,
  # the layers of blocks 1 and 4 of 6 (every layer would take minutes of the GPU's time).
  if [ -n "${QUARTET_DIAGNOSE:-}" ] && [ -f "$run/run.json" ] && [ ! -f "$run/diagnose/diagnose.json" ]; then
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 60 ]; then
      echo "fidelity-30m: $name not diagnosed: ${left} s of the budget left"
    else
      timeout "$left" "$quartet" diagnose "$run" --device cuda --batch 16 --draws 64 --layers 1,4 --out "$run/diagnose" \
        > "$run.diagnose.log" 2>&1 || echo "fidelity-30m: diagnose of $name failed: $(tail -n 1 "$run.diagnose.log")"
    fi
  fi
  cp "$run/diagnose/diagnose.json" "$out/$name.diagnose.json" 2>/dev/null || true
  cp "$run/diagnose/diagnose.png" "$out/$name.diagnose.png" 2>/dev/null || true
  cp "$run/metrics.jsonl" "$out/$name.metrics.jsonl" 2>/dev/null || true
  cp "$run.log" "$out/$name.log" 2>/dev/null || true
  cp "$run/run.json" "$out/$name.run.json" 2>/dev/null || true
done
