#!/usr/bin/env bash
# On the GPU machine, from a build/gpu-torch/ bundle (python/tools/gpu-bundle.sh): the C interface on
# CUDA against the layer on the CUDA backend, then the Python package's tests (which run on
# "cuda" as well as "cpu" where a GPU is present) and the Hugging Face Llama training test.
# Logs go to $OUT.
cd "$(dirname "$0")"
for f in lib/libopenblas.so.0 libquartet_c.so c_api_cuda_tests; do [ -f "$f.gz" ] && gunzip -f "$f.gz"; done
export LD_LIBRARY_PATH=$PWD:$PWD/lib:${LD_LIBRARY_PATH:-}
export QUARTET_C_LIBRARY=$PWD/libquartet_c.so
export PYTHONPATH=$PWD/python:$PWD/tests
OUT=${OUT:-.}
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
status=0
if [ -f c_api_cuda_tests ]; then
  chmod +x c_api_cuda_tests
  ./c_api_cuda_tests 2>&1 | tee "$OUT/c_api_cuda_tests.log" | tail -25
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
  echo "c_api_cuda_tests: not in this bundle (made with gpu-bundle.sh --bench); the Python tests alone"
fi
for module in test_linear test_convert test_compile test_gpu_training; do
  (cd tests && "$PYTHON" run_tests.py "$module") 2>&1 | tee "$OUT/python_$module.log" | tail -30
  code=${PIPESTATUS[0]}
  [ "$code" -eq 0 ] || [ "$code" -eq 77 ] || status=1
done
exit "$status"
