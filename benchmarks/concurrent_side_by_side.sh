#!/usr/bin/env bash
# Do concurrent jobs disturb the numbers? The same ladder run one job at a time and N at a time, alternately,
# in one folder on one machine (artifacts cached after the first run); prints each cell's p50 per run and the
# ratio of the medians (concurrent / one at a time). Usage: OUT=dir [JOBS=4] [ROUNDS=2] bash this [variants...]
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/concurrent_side_by_side}; JOBS=${JOBS:-4}; ROUNDS=${ROUNDS:-2}; mkdir -p "$OUT"
VARIANTS=${*:-pytorch:fp32 pytorch:fp16:channels_last pytorch:fp16:channels_last:cuda_graph torchscript:fp16 cudnn_fused:fp16:channels_last:cuda_graph}
WORK=$(mktemp -d /tmp/side_by_side.XXXX); cp "$REPO/config.yaml" "$WORK/"; cd "$WORK"
for round in $(seq 1 "$ROUNDS"); do
  for jobs in 1 "$JOBS"; do
    start=$(date +%s.%N)
    python3 -m infertune run --quiet --variants $VARIANTS --concurrent-jobs "$jobs" --output-dir "r${round}_j${jobs}" \
      > "$OUT/r${round}_j${jobs}.log" 2>&1
    echo "round $round, $jobs at a time: exit $?, $(python3 -c "print(f'{$(date +%s.%N) - $start:.0f}')") s" | tee -a "$OUT/summary.txt"
    cp r${round}_j${jobs}/*.csv "$OUT/r${round}_j${jobs}.csv"
  done
done
python3 - "$OUT" "$JOBS" <<'PY' | tee -a "$OUT/summary.txt"
import csv, glob, statistics, sys
out, jobs = sys.argv[1], sys.argv[2]
runs = {}
for path in sorted(glob.glob(f"{out}/r*_j*.csv")):
    name = path.rsplit("/", 1)[1][:-4]
    runs[name] = {(r["variant"], r["batch_size"]): r for r in csv.DictReader(open(path)) if r["status"] == "ok"}
names = sorted(runs)
cells = [c for c in runs[names[0]] if c[0] != "null:fp32"]
print(f"{'cell':52s} " + " ".join(f"{n:>9s}" for n in names) + f"  {jobs}-at-once/1")
for cell in cells:
    p50 = {n: float(runs[n][cell]["latency_p50_ms"]) for n in names if cell in runs[n]}
    one = statistics.median(v for n, v in p50.items() if n.endswith("_j1"))
    many = statistics.median(v for n, v in p50.items() if not n.endswith("_j1"))
    print(f"{cell[0] + ' b' + cell[1]:52s} " + " ".join(f"{p50.get(n, float('nan')):9.3f}" for n in names)
          + f"  {many / one:6.3f}")
PY
