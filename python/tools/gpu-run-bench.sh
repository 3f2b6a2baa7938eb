#!/usr/bin/env bash
# On the GPU machine, from a build/gpu-torch/ bundle (python/tools/gpu-bundle.sh): quartet.torch.Linear
# against nn.Linear in BF16 and against `quartet bench` for the same layers, and a converted Llama's
# training step (bench/torch_linear_bench.py), into $OUT/torch-bench.json and $OUT/torch-bench.log.
# Arguments go to the script (--quick, --sets 7B, --recipes quartet2,nvidia, ...).
cd "$(dirname "$0")"
for f in lib/libopenblas.so.0 libquartet_c.so quartet; do [ -f "$f.gz" ] && gunzip -f "$f.gz"; done
chmod +x quartet
export LD_LIBRARY_PATH=$PWD:$PWD/lib:${LD_LIBRARY_PATH:-}
export QUARTET_C_LIBRARY=$PWD/libquartet_c.so
export PYTHONPATH=$PWD/python
export PYTHONUNBUFFERED=1
OUT=${OUT:-.}
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
"$PYTHON" torch_linear_bench.py --quartet ./quartet --json "$OUT/torch-bench.json" "$@" 2>&1 | tee "$OUT/torch-bench.log"
exit "${PIPESTATUS[0]}"
