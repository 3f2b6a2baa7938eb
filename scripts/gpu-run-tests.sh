#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): the CUDA tests, and with
# "sanitize" a compute-sanitizer memcheck pass over the kernels. Logs go to $OUT.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
./cuda_tests --gtest_brief=1 2>&1 | tee "$OUT/cuda_tests.log" | tail -40
if [ "${1:-}" = "sanitize" ]; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  "$SAN" --tool memcheck --leak-check full ./cuda_tests \
    --gtest_filter='Cuda.Quantizers*:Cuda.Requant*:Cuda.Padded*:Cuda.Layers*:Cuda.Attention*' 2>&1 | tail -15 | tee "$OUT/sanitizer.log"
fi
