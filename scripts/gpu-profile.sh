#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): Nsight Compute on one launch
# of each main fused kernel at the quick bench shapes (bf16 4096 x 8192), printing duration,
# DRAM and SM throughput, occupancy and executed instructions per 16-element group: the
# numbers that say whether a kernel is bound by bytes or by instructions (docs/cuda.md).
# Raw reports go to $OUT/ncu-*.txt.
cd "$(dirname "$0")"
for f in lib/libopenblas.so.0 quartet cuda_tests; do [ -f "$f.gz" ] && gunzip -f "$f.gz" && chmod +x "$f"; done
export LD_LIBRARY_PATH=$PWD/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-.}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
groups=$((4096 * 8192 / 16))
# name: mangled-name regex (pass 0 = quantize, 1 = amax; quantizer enum: 0 rtn, 1 four_over_six,
# 3 sr, 4 ms_eden_g16, 5 ms_eden_g128, 6 mxfp4_quest, 7 mxfp4_rtn; then the rotation size and
# the source)
kernels=(
  "rtn:fused_rowwise_kernelILb0ELNS_13QuantizerKindE0ELi0E13__nv_bfloat16"
  "amax:fused_rowwise_kernelILb1ELNS_13QuantizerKindE0ELi0E13__nv_bfloat16"
  "four_over_six:fused_rowwise_kernelILb0ELNS_13QuantizerKindE1ELi0E13__nv_bfloat16"
  "ms_eden_g16_rht128_rowwise:fused_rowwise_kernelILb0ELNS_13QuantizerKindE4ELi128E13__nv_bfloat16"
  "ms_eden_g16_rht128_transposed:fused_tile_kernelILb0ELNS_13QuantizerKindE4ELi128ENS1_18TransposedBf16Tile"
  "ms_eden_g16_rht128_requant:fused_tile_kernelILb0ELNS_13QuantizerKindE4ELi128ENS1_11RequantTile"
  "eden_g16_finish_dequantize:eden_g16_finish_dequantize_kernel"
  "eden_g16_finish:eden_g16_finish_kernel"
  "mxfp4_quest_rht32_rowwise:fused_rowwise_kernelILb0ELNS_13QuantizerKindE6ELi32E13__nv_bfloat16"
  "mxfp4_rtn_rht32_rowwise:fused_rowwise_kernelILb0ELNS_13QuantizerKindE7ELi32E13__nv_bfloat16"
  "dequantize_nvfp4_bf16:dequantize_bf16_kernelILNS_13ElementFormatE0E:$((4096 * 1024 / 16))"
)
printf '%-32s %10s %8s %8s %8s %10s\n' kernel us dram% sm% occ% inst/group
for entry in "${kernels[@]}"; do
  name=${entry%%:*}
  regex=${entry#*:}
  entry_groups=$groups
  case "$regex" in *:*) entry_groups=${regex#*:}; regex=${regex%%:*} ;; esac
  report="$OUT/ncu-$name.txt"
  timeout 120 "$NCU" --clock-control none --kernel-name-base mangled -k "regex:$regex" -c 1 \
    --section SpeedOfLight --section Occupancy --section InstructionStats \
    ./quartet bench --quick --only quantize,gemm > "$report" 2>&1
  python3 - "$report" "$name" "$entry_groups" <<'PY'
import re, sys
text, name, groups = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3])
def grab(label):
    m = re.search(label + r"\s+\S+\s+([\d,.]+)", text)
    return float(m.group(1).replace(",", "")) if m else float("nan")
inst = grab(r"Executed Instructions")
print("%-32s %10.2f %8.2f %8.2f %8.2f %10.0f" % (name, grab(r"Duration"), grab(r"DRAM Throughput"),
      grab(r"Compute \(SM\) Throughput"), grab(r"Achieved Occupancy"), inst * 32 / groups))
PY
done
