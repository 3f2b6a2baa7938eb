#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): Nsight Compute on one launch
# of each main fused kernel at the quick bench shapes (bf16 4096 x 8192), printing duration,
# DRAM and SM throughput, occupancy and executed instructions per 16-element group: the
# numbers that say whether a kernel is bound by bytes or by instructions (docs/cuda.md).
# The raw reports go, one after the other, to the single file $OUT/ncu.txt (only so many files
# come back from the machine).
cd "$(dirname "$0")"
. ./gpu-unpack.sh
OUT=${OUT:-.}
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
source ./gpu-kernels.sh
: > "$OUT/ncu.txt"
printf '%-32s %10s %8s %8s %8s %10s\n' kernel us dram% sm% occ% inst/group
for entry in "${MAIN_KERNELS[@]}"; do
  name=${entry%%:*}
  regex=${entry#*:}
  entry_groups=$QUICK_GROUPS
  case "$regex" in *:*) entry_groups=${regex#*:}; regex=${regex%%:*} ;; esac
  report=$(mktemp)
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
  { echo "=== $name"; cat "$report"; } >> "$OUT/ncu.txt"
  rm -f "$report"
done
