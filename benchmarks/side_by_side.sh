#!/usr/bin/env bash
# Does a setting move the numbers? The same ladder run with flags A and with flags B, alternately, in one folder on
# one machine (artifacts cached after the first run); prints each cell's p50 per run, the ratio of the medians
# (B / A) and the seconds each mode spent timing cells. Defaults compare one job at a time with 4 at a time.
# Usage: OUT=dir [A="--concurrent-jobs 1"] [B="--concurrent-jobs 4"] [ROUNDS=2] bash this [variants...]
#   e.g. A="--precision 0" B="" bash this ...   (the whole min_time_s against the GPU's default precision target)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/side_by_side}; ROUNDS=${ROUNDS:-2}; mkdir -p "$OUT"
A=${A-"--concurrent-jobs 1"}; B=${B-"--concurrent-jobs 4"}
VARIANTS=${*:-pytorch:fp32 pytorch:fp16:channels_last pytorch:fp16:channels_last:cuda_graph torchscript:fp16 cudnn_fused:fp16:channels_last:cuda_graph}
WORK=$(mktemp -d /tmp/side_by_side.XXXX); cp "$REPO/config.yaml" "$WORK/"; cd "$WORK"
echo "A: infertune run $A; B: infertune run $B" | tee -a "$OUT/summary.txt"
for round in $(seq 1 "$ROUNDS"); do
  for mode in A B; do
    flags=${!mode}
    start=$(date +%s.%N)
    python3 -m infertune run --quiet --variants $VARIANTS $flags --output-dir "r${round}_$mode" \
      > "$OUT/r${round}_$mode.log" 2>&1
    echo "round $round, $mode: exit $?, $(python3 -c "print(f'{$(date +%s.%N) - $start:.0f}')") s" | tee -a "$OUT/summary.txt"
    cp r${round}_$mode/*.csv "$OUT/r${round}_$mode.csv"
  done
done
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import csv, glob, statistics, sys
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(f"{out}/r*_[AB].csv")):
    name = path.rsplit("/", 1)[1][:-4]
    runs[name] = {(r["variant"], r["batch_size"]): r for r in csv.DictReader(open(path)) if r["status"] == "ok"}
names = sorted(runs)
cells = [c for c in runs[names[0]] if c[0] != "null:fp32"]
print(f"{'cell':52s} " + " ".join(f"{n:>9s}" for n in names) + "      B/A")
for cell in cells:
    p50 = {n: float(runs[n][cell]["latency_p50_ms"]) for n in names if cell in runs[n]}
    a = statistics.median(v for n, v in p50.items() if n.endswith("_A"))
    b = statistics.median(v for n, v in p50.items() if n.endswith("_B"))
    print(f"{cell[0] + ' b' + cell[1]:52s} " + " ".join(f"{p50.get(n, float('nan')):9.3f}" for n in names)
          + f"  {b / a:7.3f}")
for n in names:
    timed = sum(float(r["measured_s"] or 0) for r in runs[n].values())
    print(f"{n}: {timed:.1f} s in timed loops (device loops; end-to-end loops not included)")
PY
