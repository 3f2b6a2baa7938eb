#!/usr/bin/env bash
# On the GPU machine (which has cuobjdump), from a .gpu/ bundle (scripts/gpu-bundle.sh): the
# sm_90a SASS of the main fused quantization kernels into $OUT/sass-<name>.txt, and per kernel
# its static instruction count and most frequent opcodes, the view that says where a kernel's
# instructions go (docs/cuda.md). Usage: bash gpu-sass.sh [binary] (default ./quartet).
cd "$(dirname "$0")"
for f in quartet cuda_tests; do [ -f "$f.gz" ] && gunzip -f "$f.gz" && chmod +x "$f"; done
OUT=${OUT:-.}
BIN=${1:-./quartet}
CUOBJDUMP=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
"$CUOBJDUMP" -sass -arch sm_90a "$BIN" > "$OUT/sass-all.tmp" 2>&1 || { echo "cuobjdump failed"; head "$OUT/sass-all.tmp"; exit 1; }
python3 - "$OUT/sass-all.tmp" "$OUT" <<'PY'
import collections, re, sys
text = open(sys.argv[1]).read()
out = sys.argv[2]
# name: regex on the mangled name (quantizer enum: 0 rtn, 1 four_over_six, 3 sr, 4 ms_eden_g16,
# 6 mxfp4_quest, 7 mxfp4_rtn; then the rotation and the source)
wanted = {
    "rtn": r"fused_rowwise_kernelILb0ELNS_13QuantizerKindE0ELi0E13__nv_bfloat16",
    "four_over_six": r"fused_rowwise_kernelILb0ELNS_13QuantizerKindE1ELi0E13__nv_bfloat16",
    "ms_eden_g16_rht128_rowwise": r"fused_rowwise_kernelILb0ELNS_13QuantizerKindE4ELi128E13__nv_bfloat16",
    "ms_eden_g16_rht128_transposed": r"fused_tile_kernelILb0ELNS_13QuantizerKindE4ELi128ENS1_18TransposedBf16Tile",
    "ms_eden_g16_rht128_requant": r"fused_tile_kernelILb0ELNS_13QuantizerKindE4ELi128ENS1_11RequantTileILNS_13ElementFormatE0",
    "mxfp4_quest_rht32_rowwise": r"fused_rowwise_kernelILb0ELNS_13QuantizerKindE6ELi32E13__nv_bfloat16",
}
functions = re.split(r"\n\s*Function : ", text)
for name, pattern in wanted.items():
    body = next((f for f in functions if re.match(r"\S*" + pattern, f)), None)
    if body is None:
        print(f"{name}: not found")
        continue
    open(f"{out}/sass-{name}.txt", "w").write(body)
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", body)
    hist = collections.Counter(op.split(".")[0] for op in ops)
    top = ", ".join(f"{op} {n}" for op, n in hist.most_common(14))
    print(f"{name}: {len(ops)} instructions; {top}")
PY
rm -f "$OUT/sass-all.tmp"
