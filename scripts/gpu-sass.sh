#!/usr/bin/env bash
# On the GPU machine (which has cuobjdump), from a .gpu/ bundle (scripts/gpu-bundle.sh): the
# sm_90a SASS of the main fused kernels (gpu-kernels.sh) into one file, $OUT/sass.txt (one file:
# only so many come back from the machine), and per kernel its static instruction count and most
# frequent opcodes, the view that says where a kernel's instructions go (docs/cuda.md).
# Usage: bash gpu-sass.sh [binary] (default ./quartet). SASS_KERNELS (entries as gpu-kernels.sh's,
# space-separated) replaces the list, e.g. the FP4-operand GEMM's kernels (gpu-session.sh gemmprofile).
cd "$(dirname "$0")"
for f in quartet cuda_tests; do [ -f "$f.gz" ] && gunzip -f "$f.gz" && chmod +x "$f"; done
OUT=${OUT:-.}
BIN=${1:-./quartet}
source ./gpu-kernels.sh
[ -z "${SASS_KERNELS:-}" ] || read -r -a MAIN_KERNELS <<< "$SASS_KERNELS"
CUOBJDUMP=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
"$CUOBJDUMP" -sass -arch sm_90a "$BIN" > "$OUT/sass-all.tmp" 2>&1 || { echo "cuobjdump failed"; head "$OUT/sass-all.tmp"; exit 1; }
python3 - "$OUT/sass-all.tmp" "$OUT/sass.txt" "${MAIN_KERNELS[@]}" <<'PY'
import collections, re, sys
text = open(sys.argv[1]).read()
out = open(sys.argv[2], "w")
wanted = dict(entry.split(":")[:2] for entry in sys.argv[3:])
functions = re.split(r"\n\s*Function : ", text)
for name, pattern in wanted.items():
    body = next((f for f in functions if re.match(r"\S*" + pattern, f)), None)
    if body is None:
        print(f"{name}: not found")
        continue
    out.write(f"==== {name}\n{body}\n")
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", body)
    hist = collections.Counter(op.split(".")[0] for op in ops)
    top = ", ".join(f"{op} {n}" for op, n in hist.most_common(14))
    print(f"{name}: {len(ops)} instructions; {top}")
PY
rm -f "$OUT/sass-all.tmp"
