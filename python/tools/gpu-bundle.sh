#!/usr/bin/env bash
# Builds libquartet_c.so with the CUDA backend, the C interface's CUDA test and the quartet
# program, and bundles them with the Python package, its tests, the PyTorch benchmark and the
# shared libraries the GPU machine lacks (as scripts/gpu-bundle.sh does for the program) into
# build/gpu-torch/ (ignored by git, like all of build/). BUILD is a CUDA-enabled build folder
# (default: the release preset's, configured here):
#   python/tools/gpu-bundle.sh [--bench] [BUILD]
# then on the GPU machine, with build/gpu-torch carried along:
#   bash build/gpu-torch/run-tests.sh   # the C interface on CUDA, then the Python tests
#   bash build/gpu-torch/run-bench.sh   # bench/torch_linear_bench.py beside `quartet bench`
# The program is there for the benchmark, which times `quartet bench` in the same run. With
# --bench the bundle leaves out the C interface's test program (run-tests.sh then runs the Python
# tests alone) and goes to build/gpu-torch-bench: small enough to travel beside the checkout
# (the whole bundle is about 55 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH_ONLY=0
if [ "${1:-}" = "--bench" ]; then BENCH_ONLY=1; shift; fi
BUILD=${1:-build/release}
[ -n "${1:-}" ] || cmake --preset release -DQUARTET_CUDA=ON > /dev/null
ls "$BUILD"/CMakeFiles/*/CMakeCUDACompiler.cmake > /dev/null 2>&1 ||
  { echo "gpu-bundle: $BUILD is not a CUDA-enabled build folder" >&2; exit 1; }
cmake --build "$BUILD" --target quartet_c c_api_cuda_tests quartet
BUNDLE=build/gpu-torch
[ "$BENCH_ONLY" = 0 ] || BUNDLE=build/gpu-torch-bench
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/lib" "$BUNDLE/tests"
cp "$BUILD/libquartet_c.so" "$BUILD/tests/c_api_cuda_tests" "$BUILD/quartet" "$BUNDLE/"
for lib in $(ldd "$BUILD/libquartet_c.so" "$BUILD/tests/c_api_cuda_tests" "$BUILD/quartet" | awk '/=>/ {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libopenblas*|libgfortran*|libquadmath*|libfmt*|libpcre2*|libcrypto*) cp -L "$lib" "$BUNDLE/lib/" ;;
  esac
done
strip "$BUNDLE/libquartet_c.so" "$BUNDLE/c_api_cuda_tests" "$BUNDLE/quartet"
[ "$BENCH_ONLY" = 0 ] || rm "$BUNDLE/c_api_cuda_tests"
# Compressed to fit the transfer to the GPU machine; run-tests.sh and run-bench.sh unpack.
gzip -9 "$BUNDLE/lib/libopenblas.so.0" "$BUNDLE/libquartet_c.so" "$BUNDLE/quartet"
[ "$BENCH_ONLY" = 1 ] || gzip -9 "$BUNDLE/c_api_cuda_tests"
cp -r python "$BUNDLE/python"
rm -rf "$BUNDLE/python/build" "$BUNDLE/python/quartet.egg-info"
find "$BUNDLE/python" -name __pycache__ -prune -exec rm -rf {} +
cp tests/python/*.py "$BUNDLE/tests/"
cp python/tools/gpu-run-tests.sh "$BUNDLE/run-tests.sh"
cp python/tools/gpu-run-bench.sh "$BUNDLE/run-bench.sh"
cp bench/torch_linear_bench.py "$BUNDLE/"
du -sh "$BUNDLE"
