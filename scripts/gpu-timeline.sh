#!/usr/bin/env bash
# On the GPU machine, from a .gpu/ bundle (scripts/gpu-bundle.sh): where the GPU time goes, per
# kernel (total over the run, calls, mean). Two workloads:
#   bash .gpu/gpu-timeline.sh [recipes] [sets]       `quartet bench --only linear` (default
#                                                    quartet2 at 7B): the linear layers
#   bash .gpu/gpu-timeline.sh train [model] [recipe]
#                                                    three training steps of `quartet bench --only
#                                                    train --quick` (default 124m at 8 x 1024, GPT-2
#                                                    vocabulary, quartet2): whole steps
# Nsight Systems traces the run where it is installed, otherwise Nsight Compute times every
# launch. The SASS of the main kernels is scripts/gpu-sass.sh's job. Writes three files to $OUT.
cd "$(dirname "$0")"
. ./gpu-unpack.sh
OUT=${OUT:-.}
if [ "${1:-}" = train ]; then
  run=(./quartet bench --only train --quick --models "${2:-124m}" --recipes "${3:-quartet2}")
  reps=()
else
  run=(./quartet bench --only linear --recipes "${1:-quartet2}" --sets "${2:-7B}")
  reps=(--reps 1)
fi
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
if [ -n "$NSYS" ]; then
  "$NSYS" profile --force-overwrite true -o "$OUT/timeline" --trace cuda \
    "${run[@]}" > "$OUT/timeline-run.log" 2>&1
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
  # Without Nsight Systems: Nsight Compute times every launch (of a bench run with one
  # repetition per case); kernels are serialised, so the sum is an upper bound of the pipelined
  # time.
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
    "${run[@]}" "${reps[@]}" > "$OUT/timeline-ncu.csv" 2> "$OUT/timeline-ncu.err"
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
