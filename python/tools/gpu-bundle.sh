#!/usr/bin/env bash
# Builds libquartet_c.so with the CUDA backend and the C interface's CUDA test here, and bundles
# them with the Python package, its tests and the shared libraries the GPU machine lacks (as
# scripts/gpu-bundle.sh does for the program) into .gpu-torch/ (git-ignored). On the GPU machine:
#   bash .gpu-torch/run-tests.sh        # C interface on CUDA, then the Python tests on CUDA
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.gpu-torch/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.gpu-torch/" >> .git/info/exclude; }
cmake --preset release > /dev/null
cmake --build --preset release --target quartet_c c_api_cuda_tests
rm -rf .gpu-torch && mkdir -p .gpu-torch/lib .gpu-torch/tests
cp build/release/libquartet_c.so build/release/tests/c_api_cuda_tests .gpu-torch/
for lib in $(ldd build/release/libquartet_c.so build/release/tests/c_api_cuda_tests | awk '/=>/ {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libopenblas*|libgfortran*|libquadmath*|libfmt*) cp -L "$lib" .gpu-torch/lib/ ;;
  esac
done
strip .gpu-torch/libquartet_c.so .gpu-torch/c_api_cuda_tests
cp -r python .gpu-torch/python
cp tests/python/*.py .gpu-torch/tests/
cp python/tools/gpu-run-tests.sh .gpu-torch/run-tests.sh
du -sh .gpu-torch
