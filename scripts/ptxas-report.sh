#!/usr/bin/env bash
# Registers, stack frame and spills of CUDA kernels for sm_90a, from ptxas -v (no GPU needed):
# the quantization kernels, or those of the file QUARTET_PTXAS_SOURCE names. Extra nvcc flags
# pass through, e.g. an occupancy experiment:
#   scripts/ptxas-report.sh -DQUARTET_FUSED_MIN_BLOCKS=4
#   QUARTET_PTXAS_SOURCE=src/backend/cuda/attention.cu scripts/ptxas-report.sh
# Prints one line per kernel: registers, stack bytes, spill store/load bytes, demangled name; then
# ptxas's performance warnings (e.g. C7513, wgmma instructions serialized), each with its kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
log=$(mktemp)
trap 'rm -f "$log" "$log.o"' EXIT
"$NVCC" -O3 -DNDEBUG --generate-code=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -std=c++20 \
  -Xcompiler=-ffp-contract=off -I include -I src -Xptxas -v "$@" -c "${QUARTET_PTXAS_SOURCE:-src/backend/cuda/quantize.cu}" -o "$log.o" 2> "$log" ||
  { grep -v "^ptxas info" "$log" >&2; echo "ptxas-report: nvcc failed (flags: $*)" >&2; exit 1; }
python3 - "$log" <<'PY'
import re, subprocess, sys
text = open(sys.argv[1]).read()
entries = re.split(r"ptxas info\s+: Compiling entry function '", text)[1:]
rows = []
for e in entries:
    name = e.split("'")[0]
    grab = lambda pattern: (re.search(pattern, e) or [None, "?"])[1]
    rows.append((grab(r"Used (\d+) registers"), grab(r"(\d+) bytes stack frame"), grab(r"(\d+) bytes spill stores"),
                 grab(r"(\d+) bytes spill loads"), name))
names = subprocess.run(["c++filt"], input="\n".join(r[4] for r in rows), capture_output=True, text=True).stdout.split("\n")
print("%5s %6s %7s %7s  %s" % ("regs", "stack", "spill_st", "spill_ld", "kernel"))
for r, n in sorted(zip(rows, names), key=lambda x: x[1]):
    n = n.replace("quartet::cuda::(anonymous namespace)::", "").replace("quartet::", "")
    print("%5s %6s %7s %7s  %s" % (r[0], r[1], r[2], r[3], n[:150]))
warnings = re.findall(r"\((C\d+)\) Potential Performance Loss: (.*?) in the function '([^']+)'", text)
for code, what, mangled in warnings:
    name = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip()
    name = name.replace("quartet::cuda::(anonymous namespace)::", "").replace("quartet::", "")
    print("%s %s: %s" % (code, name[:150], what))
PY
