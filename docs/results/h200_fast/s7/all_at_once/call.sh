#!/usr/bin/env bash
# session 7, call B: a job per cell, all at once (default now): cold, warm; warm the old way; warm with 12 jobs; warm again
# variant), and warm with 16 and 8 jobs at once
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
REPO=$PWD
exec > >(tee -a "$OUT/log.txt") 2>&1
step() { echo; echo "=== $1 ($(date +%T), ${SECONDS}s)"; }
step machine; nvidia-smi -L; uptime; free -g | head -2
step "default run cold, warm, warm the old way"
mkdir -p $OUT/r
RUN_TIMEOUT=200 THIRD="--concurrent-jobs 4 --no-job-per-cell" OUT=$OUT/r timeout 400 bash benchmarks/h200_cold_warm.sh 2>&1 | tail -22
for j in 12 d2; do
  step "warm with $j jobs"
  cd /tmp/cold_warm.* && [ $SECONDS -lt 480 ] && { s=$(date +%s.%N); timeout 80 python3 $REPO/benchmarks/timeline.py $OUT/r/j$j.timeline.txt run --quiet \
    --output-dir results_j$j $([ $j = d2 ] || echo --concurrent-jobs $j) > $OUT/r/j$j.log 2>&1; echo "j$j run: exit $?, $(python3 -c "print(f'{$(date +%s.%N) - $s:.0f}')") s wall"; \
    cp results_j$j/*.csv $OUT/r/j$j.csv; cp results_j$j/*.log $OUT/r/j$j.runlog.txt; }
  cd $REPO
done
python3 - $OUT/r <<'PY'
import csv, sys
for run in ("cold", "warm", "third", "j12", "jd2"):
    try:
        rows = [r for r in csv.DictReader(open(f"{sys.argv[1]}/{run}.csv"))]
    except OSError:
        continue
    ok = [r for r in rows if r["status"] == "ok"]
    busy = [(r["variant"], r["batch_size"], r["other_cpu_cores"][:5]) for r in ok if r["machine_busy"] == "True"]
    print(f"{run}: {len(rows)} rows, {len(ok)} ok, {len(busy)} busy: {busy}")
    print("   " + " ".join(f"{r['variant'].split(':',1)[1][:28]}/b{r['batch_size']}={float(r['latency_p50_ms']):.3f}"
                           for r in ok if r['variant'].startswith(('torch_compile', 'cudnn_fused', 'pytorch:fp16'))))
PY
for f in cold warm third j12 jd2; do echo "$f: $(grep -h '^total' $OUT/r/$f.timeline.txt)"; done
step end
cd $OUT && tar czf runs.tgz r && rm -rf r
