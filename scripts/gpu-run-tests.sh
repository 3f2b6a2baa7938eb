#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): the CUDA tests; with
# "sanitize" a compute-sanitizer memcheck pass over the kernels; with "bench" the full
# `quartet bench` (bench.json). Logs and results go to $OUT.
cd "$(dirname "$0")"
. ./gpu-unpack.sh
export QUARTET_BINARY=$PWD/quartet  # the training test runs the command as a user would
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
./cuda_tests --gtest_brief=1 2>&1 | tee "$OUT/cuda_tests.log" | tail -40
status=${PIPESTATUS[0]}
for arg in "$@"; do
  case "$arg" in
    sanitize)
      SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
      "$SAN" --tool memcheck --leak-check full ./cuda_tests \
        --gtest_filter='Cuda.Quantizers*:Cuda.Requant*:Cuda.Padded*:Cuda.Fused*:Cuda.TrustMask*:Cuda.Attention*:FlashAttention.MatchesTheReferenceAcrossShapes:FlashAttention.BackwardIsDeterministic:ModelOps*:Ops/OpsTable.GpuMatchesTheCpu*' 2>&1 |
        tail -15 | tee "$OUT/sanitizer.log" ;;
    bench)
      [ "$status" -eq 0 ] || { echo "tests failed: no benchmark"; exit 1; }
      bash ./gpu-bench.sh ;;
  esac
done
exit "$status"
