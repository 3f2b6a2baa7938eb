#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): the CUDA tests, the attention
# and LM-head operation cases, a profiled training step per model (device time per operation),
# and the end-to-end training benchmark beside the PyTorch reference, with a short table of each.
# About six minutes on an H100. Files to $OUT: cuda_tests.log, ops.json, train-profile.json,
# train.json (and their .log).
cd "$(dirname "$0")"
. ./gpu-unpack.sh
export QUARTET_BINARY=$PWD/quartet
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
start=$(date +%s)
show() {
  python3 - "$1" <<'PY'
import json, sys
for row in json.load(open(sys.argv[1]))["results"]:
    if "tokens_per_s" in row:
        x = " ".join(f"{k}={row[k]:.3f}" for k in ("mfu", "peak_gib", "host_ms_per_step", "ratio_to_bf16", "ratio_to_pytorch") if k in row)
        print(f'{row["case"]:<26} {row["tokens_per_s"]:9.0f} tok/s {row["ms_per_step"]:8.2f} ms {x}')
        ops = row.get("device_ms_per_step_by_op", {})
        for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:8]:
            print(f'      {v:8.3f} ms  {k}')
    else:
        x = " ".join(f"{k}={row[k]:.3g}" for k in ("median_ms", "tbps", "tflops", "ratio_to_bf16_gemm") if k in row)
        print(f'{row["case"][:56]:<56} {x} {row.get("error", "")[:60]}')
PY
}
timeout 150 ./cuda_tests --gtest_brief=1 > "$OUT/cuda_tests.log" 2>&1
echo "tests rc=$? $(( $(date +%s) - start ))s"
grep -E "FAILED|Failure|\[  PASSED|tests ran" "$OUT/cuda_tests.log" | head -20
timeout 100 ./quartet bench --only ops --ops attention,lm_head --json "$OUT/ops.json" > "$OUT/ops.log" 2>&1
echo "ops rc=$? $(( $(date +%s) - start ))s"; show "$OUT/ops.json"
QUARTET_PROFILE_OPS=1 timeout 150 ./quartet bench --only train --recipes quartet2 --json "$OUT/train-profile.json" \
  > "$OUT/train-profile.log" 2>&1
echo "profile rc=$? $(( $(date +%s) - start ))s"; show "$OUT/train-profile.json"
timeout 330 ./quartet bench --only train --pytorch ./pytorch_reference.py --json "$OUT/train.json" > "$OUT/train.log" 2>&1
echo "train rc=$? $(( $(date +%s) - start ))s"; show "$OUT/train.json"
