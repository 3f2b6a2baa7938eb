#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): where the time of the linear
# layers goes. Nsight Systems traces `quartet bench --only linear` for the recipes and shape
# sets given (default quartet2 at 7B) and prints the GPU time per kernel (total over the run,
# calls, mean); the SASS of the main quantization kernels goes to $OUT/sass-*.txt.
#   bash .gpu/gpu-timeline.sh [recipes] [sets]
cd "$(dirname "$0")"
for f in lib/libopenblas.so.0 quartet cuda_tests; do [ -f "$f.gz" ] && gunzip -f "$f.gz" && chmod +x "$f"; done
export LD_LIBRARY_PATH=$PWD/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-.}
recipes=${1:-quartet2}
sets=${2:-7B}
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
if [ -n "$NSYS" ]; then
  "$NSYS" profile --force-overwrite true -o "$OUT/timeline" --trace cuda \
    ./quartet bench --only linear --recipes "$recipes" --sets "$sets" > "$OUT/timeline-bench.log" 2>&1
  "$NSYS" stats --force-export true --report cuda_gpu_kern_sum --format csv "$OUT/timeline.nsys-rep" \
    > "$OUT/timeline-kernels.csv" 2> "$OUT/timeline-stats.err"
  python3 - "$OUT/timeline-kernels.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 8]
head, body = rows[0], rows[1:]
col = {name: i for i, name in enumerate(head)}
print("%7s %9s %7s %10s  %s" % ("time%", "total ms", "calls", "mean us", "kernel"))
for r in body[:40]:
    print("%7s %9.2f %7s %10.1f  %s" % (r[col["Time (%)"]], float(r[col["Total Time (ns)"]]) / 1e6, r[col["Instances"]],
                                        float(r[col["Avg (ns)"]]) / 1e3, r[col["Name"]][:110]))
PY
  rm -f "$OUT/timeline.nsys-rep" "$OUT/timeline.sqlite"
else
  # Without Nsight Systems: Nsight Compute times every launch of a run with one repetition
  # per case (kernels serialised, so the sum is an upper bound of the pipelined time).
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
    ./quartet bench --only linear --recipes "$recipes" --sets "$sets" --reps 1 > "$OUT/timeline-ncu.csv" 2> "$OUT/timeline-ncu.err"
  python3 - "$OUT/timeline-ncu.csv" <<'PY'
import csv, sys, collections
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
rows = list(csv.reader(lines))
head, body = rows[0], rows[1:]
col = {n: i for i, n in enumerate(head)}
total, calls = collections.defaultdict(float), collections.Counter()
for r in body:
    if r[col["Metric Name"]] != "gpu__time_duration.sum":
        continue
    name = r[col["Kernel Name"]]
    v = float(r[col["Metric Value"]].replace(",", ""))
    unit = r[col["Metric Unit"]]
    us = {"ns": v / 1000, "nsecond": v / 1000, "ms": v * 1000, "msecond": v * 1000}.get(unit, v)
    total[name] += us
    calls[name] += 1
print("%10s %6s %9s  %s" % ("total us", "calls", "mean us", "kernel"))
for name, us in sorted(total.items(), key=lambda kv: -kv[1])[:45]:
    print("%10.1f %6d %9.1f  %s" % (us, calls[name], us / calls[name], name[:120]))
PY
fi
CUOBJDUMP=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
"$CUOBJDUMP" -sass -arch sm_90a ./quartet > "$OUT/sass-all.txt" 2>&1 || echo "cuobjdump failed"
python3 - "$OUT/sass-all.txt" "$OUT" <<'PY'
import re, sys, collections
text = open(sys.argv[1]).read()
funcs = re.split(r"\n\s*Function : ", text)
wanted = {"fused_rowwise_kernelILb0ELNS_13QuantizerKindE1ELi0E13__nv_bfloat16": "four_over_six_rowwise",
          "fused_rowwise_kernelILb0ELNS_13QuantizerKindE4ELi128E13__nv_bfloat16": "eden_g16_rht128_rowwise",
          "fused_rowwise_kernelILb1ELNS_13QuantizerKindE0ELi0E13__nv_bfloat16": "amax_rowwise",
          "dequantize_bf16_kernelILNS_13ElementFormatE0E": "dequant"}
for f in funcs:
    name = f.split("\n", 1)[0]
    for key, short in wanted.items():
        if key in name:
            body = f
            open("%s/sass-%s.txt" % (sys.argv[2], short), "w").write(body)
            ops = collections.Counter(m.group(1).split(".")[0] for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", body))
            print(short, sum(ops.values()), "static instructions:", ", ".join("%s %d" % kv for kv in ops.most_common(18)))
PY
rm -f "$OUT/sass-all.txt"
