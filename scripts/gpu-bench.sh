#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle: the full benchmark suite into $OUT/bench.json, then
# a short table of the headline figures.
cd "$(dirname "$0")"
. ./gpu-unpack.sh
OUT=${OUT:-.}
./quartet bench --json "$OUT/bench.json" ${QUARTET_BENCH_ARGS:-} > "$OUT/bench.log" 2>&1 || { tail -20 "$OUT/bench.log"; exit 1; }
python3 - "$OUT/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["device"], r["commit"])
for row in r["results"]:
    extra = ""
    for k in ("ratio_to_copy", "ratio_to_bf16", "ratio_to_bf16_gemm", "tbps", "tflops", "mfu", "peak_gib",
              "ratio_to_pytorch"):
        if k in row:
            extra += f" {k}={row[k]:.3f}"
    if "error" in row:
        extra += " ERROR " + str(row["error"])[:80]
    if "tokens_per_s" in row:
        print(f'{row["case"]:<40} {row["tokens_per_s"]:10.0f} tok/s {row["ms_per_step"]:8.2f} ms/step{extra}')
    else:
        print(f'{row["case"]:<55} {row.get("median_ms", float("nan")):9.3f} ms{extra}')
PY
