#!/usr/bin/env bash
# Builds the CUDA-enabled programs here and bundles them, with the shared libraries the GPU
# machine lacks (its OS has no OpenBLAS OpenMP build nor the headers to build the project),
# into .gpu/ (git-ignored), to be carried to the GPU machine:
#   scripts/gpu-bundle.sh && <run there>: bash .gpu/gpu-run-tests.sh [sanitize] [bench]
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.gpu/" >> .git/info/exclude; }
cmake --preset release -DQUARTET_CUDA=ON > /dev/null  # no GPU here: build its code anyway
# An object whose header dependencies ninja has not recorded ("#deps 0", seen once after two
# builds ran in the same folder at once) is not rebuilt when a header changes, and the GPU would
# measure stale kernels: such objects are deleted first, so that they are rebuilt.
for obj in $(ninja -C build/release -t deps 2>/dev/null | awk '/: #deps 0,/ {sub(/:$/, "", $1); print $1}'); do
  echo "gpu-bundle: $obj has no recorded header dependencies; rebuilding it" >&2
  rm -f "build/release/$obj"
done
cmake --build --preset release --target quartet cuda_tests
rm -rf .gpu && mkdir -p .gpu/lib
cp build/release/quartet build/release/tests/cuda_tests scripts/gpu-run-tests.sh .gpu/
for lib in $(ldd build/release/tests/cuda_tests build/release/quartet | awk '/=>/ {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libopenblas*|libgfortran*|libquadmath*|libfmt*|libpcre2*|libcrypto*) cp -L "$lib" .gpu/lib/ ;;
  esac
done
# CUPTI, for `quartet bench --trace-dir` (opened at run time; the GPU machine's toolkit may not be
# on its library path).
cupti=$(find /usr/local/cuda/ -name 'libcupti.so.13' 2>/dev/null | head -1)
if [ -n "$cupti" ]; then cp -L "$cupti" .gpu/lib/; else echo "gpu-bundle: no libcupti.so.13 here; the bundle cannot trace" >&2; fi
strip .gpu/quartet .gpu/cuda_tests
# Compressed to fit the transfer to the GPU machine; gpu-run-tests.sh and gpu-bench.sh unpack.
gzip -9 .gpu/lib/libopenblas.so.0 .gpu/quartet .gpu/cuda_tests
[ ! -f .gpu/lib/libcupti.so.13 ] || gzip -9 .gpu/lib/libcupti.so.13
cp scripts/gpu-unpack.sh scripts/gpu-session.sh scripts/gpu-bench.sh scripts/gpu-profile.sh scripts/gpu-timeline.sh scripts/gpu-sass.sh scripts/gpu-kernels.sh \
  scripts/gpu-train-report.sh scripts/build-code-corpus.sh scripts/gpu-concurrency.sh bench/pytorch_reference.py .gpu/
du -sh .gpu
