#!/usr/bin/env bash
# The default run (`python benchmark_all.py`: ./config.yaml, device auto -> cuda, batch 1/4/8) twice in one
# folder on one machine: cold (empty models/, so no artifact and no Inductor cache), then warm (the same models/).
# Prints each run's wall time and, per variant, the seconds spent preparing (convert_s) in each run; each run
# goes through benchmarks/timeline.py (the same CLI as benchmark_all.py), whose $OUT/<run>.timeline.txt says
# where the time went (worker starts, prepare, verify, measure), and $OUT/<run>.runlog.txt is the run's own log
# (each compile's time, among others).
# THIRD="--concurrent-jobs 6" adds a third run, warm too, with those flags (a setting against the warm run);
# THIRD="--concurrent-jobs 4 --no-job-per-cell" is the way before session 7 (four jobs, each a whole variant).
# Usage (device machine, from a copy of the repo with .whl/): OUT=/some/dir bash benchmarks/h200_cold_warm.sh
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/h200_cold_warm}; mkdir -p "$OUT"
if [ -d "$REPO/.whl" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$REPO"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d /tmp/cold_warm.XXXX); cp "$REPO/config.yaml" "$WORK/"; cd "$WORK"
for run in cold warm ${THIRD:+third}; do
  start=$(date +%s.%N)
  flags=""; [ "$run" = third ] && flags=$THIRD
  timeout ${RUN_TIMEOUT:-540} python3 "$REPO/benchmarks/timeline.py" "$OUT/$run.timeline.txt" run --quiet \
    --output-dir "results_$run" $flags > "$OUT/$run.log" 2>&1
  echo "$run run: exit $?, $(python3 -c "print(f'{$(date +%s.%N) - $start:.0f}')") s wall" | tee -a "$OUT/summary.txt"
  cp results_$run/*.csv "$OUT/$run.csv" 2>/dev/null; cp results_$run/*.log "$OUT/$run.runlog.txt" 2>/dev/null
done
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import csv, sys
from collections import defaultdict
out = sys.argv[1]
prep = defaultdict(dict)
for run in ("cold", "warm", "third"):
    try:
        rows = list(csv.DictReader(open(f"{out}/{run}.csv")))
    except OSError:
        continue
    for r in rows:
        prep[r["variant"]][run] = prep[r["variant"]].get(run, 0.0) + float(r["convert_s"] or 0)
print(f"{'variant':60s} {'prepare cold (s)':>17s} {'warm (s)':>9s} {'third (s)':>9s}")
for v, d in prep.items():
    print(f"{v:60s} {d.get('cold', float('nan')):17.1f} {d.get('warm', float('nan')):9.1f} {d.get('third', float('nan')):9.1f}")
PY
du -sh models 2>/dev/null | tee -a "$OUT/summary.txt"
