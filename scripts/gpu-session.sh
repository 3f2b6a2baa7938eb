#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): one command that checks the
# build, optionally measures, and gives the rest of its time to the fidelity campaign
# (scripts/fidelity-30m.sh, docs/fidelity.md), so that one call does the most it can:
#   bash .gpu/gpu-session.sh MODE SECONDS [NAME...]
# MODE: a '+'-joined set of tests (cuda_tests, to $OUT/cuda-tests.log), gemmtests (only the
# FP4-operand GEMM's tests, to $OUT/gemm-tests.log: a quick round of the kernel lab), bench (`quartet bench
# --only train` at 124m and 1b for quartet2 and bf16) or fullbench (every recipe beside the
# PyTorch reference), trace (`quartet bench --only train --models 124m --recipes quartet2
# --trace-dir`: the device's busy and idle time per step, and each kernel's share, recorded with
# CUPTI; the Chrome traces to $OUT/traces), nodependent (trace's timed rows again with
# QUARTET_DEPENDENT_LAUNCH=0, traced, to $OUT/train-nodependent.json and $OUT/traces-nodependent),
# fp4train (bench's quartet2 rows with the copies, then with QUARTET_NVFP4_GEMM=fp4-operand and
# the TMA kernel: no BF16 copy of any GEMM's first operand, to $OUT/train-copies.json and
# $OUT/train-fp4-operand.json, their output to $OUT/train-fp4train.log), onepass (bench's quartet2 rows again with QUARTET_QUANTIZE_BOTH_WAYS=fused: dY quantized by the
# one-pass kernel instead of two passes, to $OUT/train-onepass.json), quantize (`quartet
# bench --only quantize`, every quantizer case, to $OUT/quantize-bench.json), gemm (`quartet bench
# --only gemm`: cuBLAS BF16, the emulated NVFP4 GEMM and the NVFP4-operand kernel, to
# $OUT/gemm-bench.json), gemmprofile (Nsight Compute on the TMA form of the NVFP4-operand kernel,
# its first launch of the gemm bench, to $OUT/ncu-gemm-tma.txt; the SASS of the FP4-operand kernels
# to $OUT/sass-gemm.txt), concurrency (gpu-concurrency.sh: two quartet2 runs of the campaign's shape
# on one GPU, about two minutes), attnbwd (the attention operation bench and bf16 train benches with
# QUARTET_ATTENTION_BACKWARD=split and =wgmma alternating, to $OUT/attention-*.json and
# attention-bwd.log), or none. More than six output files come back packed in $OUT/session.tar.gz.
# SECONDS: the whole command's budget; the campaign runs NAMEs
# (started or resumed) in what is left of it, one lane per GPU, with diagnostics every 250 steps
# and `quartet diagnose` on quartet2-s1 once it has finished (QUARTET_DIAGNOSTICS and
# QUARTET_DIAGNOSE override these; scripts/fidelity-30m.sh). When the CUDA tests fail, no campaign
# run starts, in that call or a later one of the same bundle, until a test call passes (exit 1;
# QUARTET_CAMPAIGN_DESPITE_FAILED_TESTS=1 overrides).
set -uo pipefail
call_start=$(date +%s)
[ $# -ge 2 ] || { echo "usage: $0 MODE SECONDS [NAME...]" >&2; exit 2; }
mode=$1
budget=$2
shift 2
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu-session: SECONDS must be a whole number, got $budget" >&2; exit 2; }
cd "$(dirname "$0")"
. ./gpu-unpack.sh
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
# A failed test run leaves this mark beside the bundle, so that the calls after it (mode none)
# refuse the campaign too, until a test run passes.
failed_mark=$PWD/cuda-tests.failed
# The device timeline of a traced bench's JSON ($1): per step busy and idle time, the idle gaps
# by size, the kernels with most idle time before them and ($2 of them) the most busy time.
print_timeline() {
  python3 - "$1" "$2" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = r.get("device_timeline")
    if not t: continue
    if "error" in t:
        print(f"{r['case']}: {r['ms_per_step']:.2f} ms/step timed; no timeline: {t['error']}")
        continue
    print(f"{r['case']}: {r['ms_per_step']:.2f} ms/step timed; traced span {t['span_ms_per_step']:.2f}, "
          f"busy {t['busy_ms_per_step']:.2f}, idle in step {t['idle_in_step_ms_per_step']:.2f}, between "
          f"{t['idle_between_steps_ms_per_step']:.2f}; {t['kernels_per_step']:.0f} kernels, "
          f"{t['memsets_per_step']:.0f} memsets, {t['memcpys_per_step']:.0f} copies per step")
    print("   idle gaps in a step: " + ", ".join(
        f"{'<' + format(g['below_us'], 'g') if g['below_us'] is not None else '>=100'} us "
        f"{g['gaps_per_step']:.0f}x {g['ms_per_step']:.2f} ms" for g in t.get("idle_gaps_in_step", [])))
    for e in t["by_idle_before"][:6]:
        print(f"   idle {e['idle_before_ms_per_step']:.3f} ms before {e['calls_per_step']:.0f}x {e['name'][:90]}")
    for e in t["by_busy_time"][:int(sys.argv[2])]:
        print(f"   busy {e['ms_per_step']:.3f} ms in {e['calls_per_step']:.0f}x {e['name'][:90]}")
PY
}
if [[ "$mode" == *gemmtests* ]]; then
  t0=$(date +%s)
  # A kernel that hangs (a barrier never completing) is stopped, not left to eat the call.
  timeout -k 10 120 ./cuda_tests --gtest_brief=1 --gtest_filter='GemmFp4Operand.*' > "$OUT/gemm-tests.log" 2>&1
  echo "gemm tests rc=$? in $(( $(date +%s) - t0 )) s"
  tail -4 "$OUT/gemm-tests.log"
fi
if [[ "$mode" == *tests* && "${mode//gemmtests/}" == *tests* ]]; then
  t0=$(date +%s)
  QUARTET_BINARY=$PWD/quartet timeout -k 10 400 ./cuda_tests --gtest_brief=1 > "$OUT/cuda-tests.log" 2>&1
  rc=$?
  echo "cuda_tests rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -4 "$OUT/cuda-tests.log"
  if [ "$rc" -eq 0 ]; then rm -f "$failed_mark"; else echo "cuda_tests rc=$rc" > "$failed_mark"; fi
fi
if [[ "$mode" == *bench* ]]; then
  t0=$(date +%s)
  if [[ "$mode" == *fullbench* ]]; then
    bench=(--recipes quartet2,nvidia,tetrajet2,quartet1 --pytorch "$PWD/pytorch_reference.py")
  else
    bench=(--models 124m,1b --recipes quartet2)
  fi
  ./quartet bench --only train "${bench[@]}" --json "$OUT/train-bench.json" > "$OUT/train-bench.log" 2>&1
  echo "train bench rc=$? in $(( $(date +%s) - t0 )) s"
  grep '"case":"train/' "$OUT/train-bench.log" | cut -c1-200
fi
if [[ "$mode" == *trace* ]]; then
  t0=$(date +%s)
  ./quartet bench --only train --models 124m --recipes quartet2 --trace-dir "$OUT/traces" \
    --json "$OUT/train-trace.json" > "$OUT/train-trace.log" 2>&1
  echo "traced train bench rc=$? in $(( $(date +%s) - t0 )) s"
  gzip -9f "$OUT"/traces/*.trace.json 2>/dev/null
  print_timeline "$OUT/train-trace.json" 0 || tail -5 "$OUT/train-trace.log"
fi
if [[ "$mode" == *nodependent* ]]; then  # the same as trace's timed rows, without dependent launches
  t0=$(date +%s)
  # Traced too: without dependent launches no kernel's duration includes waiting for the one
  # before it, so the busy time per kernel is that kernel's own.
  QUARTET_DEPENDENT_LAUNCH=0 ./quartet bench --only train --models 124m --recipes quartet2 \
    --trace-dir "$OUT/traces-nodependent" \
    --json "$OUT/train-nodependent.json" > "$OUT/train-nodependent.log" 2>&1
  echo "train bench without dependent launches rc=$? in $(( $(date +%s) - t0 )) s"
  gzip -9f "$OUT"/traces-nodependent/*.trace.json 2>/dev/null
  print_timeline "$OUT/train-nodependent.json" 25 || tail -5 "$OUT/train-nodependent.log"
fi
if [[ "$mode" == *onepass* ]]; then  # quartet2's step with dY quantized by one pass, not two
  t0=$(date +%s)
  QUARTET_QUANTIZE_BOTH_WAYS=fused ./quartet bench --only train --models 124m,1b --recipes quartet2 \
    --json "$OUT/train-onepass.json" > "$OUT/train-onepass.log" 2>&1
  echo "train bench with dY's one-pass quantization rc=$? in $(( $(date +%s) - t0 )) s"
  grep '"case":"train/' "$OUT/train-onepass.log" | cut -c1-200
fi
if [[ "$mode" == *fp4train* ]]; then  # quartet2's step with every NVFP4 GEMM reading its first operand as FP4
  t0=$(date +%s)
  # Its baseline in the same call, the copies path, first (compare only rows of one call).
  # One log for both (only so many files come back from a call).
  ./quartet bench --only train --models 124m,1b --recipes quartet2 \
    --json "$OUT/train-copies.json" > "$OUT/train-fp4train.log" 2>&1
  QUARTET_NVFP4_GEMM=fp4-operand QUARTET_FP4_OPERAND_KERNEL=tma ./quartet bench --only train --models 124m,1b \
    --recipes quartet2 --json "$OUT/train-fp4-operand.json" >> "$OUT/train-fp4train.log" 2>&1
  echo "train bench, copies then the FP4-operand GEMM (TMA), rc=$? in $(( $(date +%s) - t0 )) s"
  grep -h '"case":"train/' "$OUT/train-fp4train.log" | cut -c1-200
fi
if [[ "$mode" == *quantize* ]]; then  # the quantizer cases, the one-pass dY kernel's among them
  t0=$(date +%s)
  ./quartet bench --only quantize --json "$OUT/quantize-bench.json" > "$OUT/quantize-bench.log" 2>&1
  echo "quantize bench rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E '"case":"quantize/ms_eden_g16\+rht128/(both_ways|rowwise_then_transposed)' "$OUT/quantize-bench.log" | cut -c1-200
fi
gemm_modes=${mode//gemmtests/}
if [[ "${gemm_modes//gemmprofile/}" == *gemm* ]]; then  # the GEMM cases: cuBLAS BF16, the copies path, the NVFP4-operand kernel
  t0=$(date +%s)
  ./quartet bench --only gemm --json "$OUT/gemm-bench.json" > "$OUT/gemm-bench.log" 2>&1
  echo "gemm bench rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E '"case":"gemm' "$OUT/gemm-bench.log" | cut -c1-220
fi
if [[ "$mode" == *gemmprofile* ]]; then  # Nsight Compute on the TMA kernel's first launch (16384 x 11008 x 4096)
  t0=$(date +%s)
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  timeout -k 10 300 "$ncu" --clock-control none -k regex:gemm_fp4_operand_tma_kernel -c 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section InstructionStats \
    ./quartet bench --only gemm > "$OUT/ncu-gemm-tma.txt" 2>&1
  echo "gemm profile rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Issue Slots Busy|Stall|Registers Per" "$OUT/ncu-gemm-tma.txt" | head -30
  # The kernels' SASS (cuobjdump is on the GPU machine only): what each k-tile's loop issues.
  SASS_KERNELS="tma_128x256:gemm_fp4_operand_tma_kernelILi2E tma_128x128:gemm_fp4_operand_tma_kernelILi1E cp_async_128x128:gemm_fp4_operand_kernelILi1E" \
    OUT="$OUT" bash ./gpu-sass.sh ./quartet
  mv "$OUT/sass.txt" "$OUT/sass-gemm.txt" 2>/dev/null
fi
if [[ "$mode" == *attnbwd* ]]; then  # the attention backward on mma.sync (split) and on wgmma, alternating
  t0=$(date +%s)
  for round in 1 2; do
    for kernels in split wgmma; do
      QUARTET_ATTENTION_BACKWARD=$kernels ./quartet bench --only ops --ops attention \
        --json "$OUT/attention-$kernels-$round.json" >> "$OUT/attention-bwd.log" 2>&1
      echo "attention ops bench ($kernels, round $round) rc=$?" | tee -a "$OUT/attention-bwd.log"
    done
  done
  # Each backward in whole bf16 training steps (head dim 64 at 124m, 128 at 1b).
  for kernels in split wgmma; do
    QUARTET_ATTENTION_BACKWARD=$kernels ./quartet bench --only train --models 124m,1b --recipes bf16 \
      --json "$OUT/attention-train-$kernels.json" >> "$OUT/attention-bwd.log" 2>&1
    echo "bf16 train bench ($kernels) rc=$?" | tee -a "$OUT/attention-bwd.log"
  done
  echo "attention backward comparison in $(( $(date +%s) - t0 )) s"
  grep -h -E '"case":"(ops/attention|train/)' "$OUT"/attention-*.json 2>/dev/null | cut -c1-200 ||
    grep -h '"case"' "$OUT/attention-bwd.log" | cut -c1-200
fi
if [[ "$mode" == *concurrency* ]]; then  # runs of the campaign's shape sharing one GPU
  t0=$(date +%s)
  # Three measurements of about 40 s; at most 420 s, whatever hangs (its runs are stopped too).
  timeout -k 20 420 bash ./gpu-concurrency.sh quartet2 2 60 > "$OUT/concurrency.log" 2>&1
  echo "concurrency rc=$? in $(( $(date +%s) - t0 )) s"
  cat "$OUT/concurrency.txt" 2>/dev/null
fi
# Only so many files come back from a call: more than six go back as one archive.
shopt -s nullglob
outputs=("$OUT"/*)
shopt -u nullglob
if [ "${#outputs[@]}" -gt 6 ]; then
  (cd "$OUT" && tar czf session.tar.gz --remove-files -- *) && echo "gpu-session: ${#outputs[@]} outputs packed into session.tar.gz"
fi
left=$(( budget - ($(date +%s) - call_start) ))
# A campaign run trained by a build that fails its tests would cost a session and prove nothing.
if [ -f "$failed_mark" ]; then
  if [ $# -gt 0 ] && [ "${QUARTET_CAMPAIGN_DESPITE_FAILED_TESTS:-0}" != 1 ]; then
    echo "gpu-session: cuda_tests failed on this bundle: the campaign runs ($*) are not started" \
      "(QUARTET_CAMPAIGN_DESPITE_FAILED_TESTS=1 starts them anyway)"
  fi
  [ "${QUARTET_CAMPAIGN_DESPITE_FAILED_TESTS:-0}" = 1 ] || exit 1
fi
if [ $# -gt 0 ]; then
  cd ..
  QUARTET_DIAGNOSTICS=${QUARTET_DIAGNOSTICS:-250} QUARTET_DIAGNOSE=${QUARTET_DIAGNOSE-quartet2-s1} \
    bash scripts/fidelity-30m.sh "$PWD/.gpu/quartet" "$(( left > 0 ? left : 0 ))" "$@"
fi
