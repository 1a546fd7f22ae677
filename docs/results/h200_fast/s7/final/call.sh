#!/usr/bin/env bash
# session 7, call D: the GPU's place among the cores; the eager baseline's spread unpinned and pinned to each half
# of the cores; then the default run cold and warm on the final code
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
REPO=$PWD
exec > >(tee -a "$OUT/log.txt") 2>&1
step() { echo; echo "=== $1 ($(date +%T), ${SECONDS}s)"; }
step machine; nvidia-smi -L; uptime
step topology
lscpu | grep -iE "model name|socket|numa|core|thread|MHz" ; nvidia-smi topo -m
bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | head -1 | tr 'A-F' 'a-f' | sed 's/^0000//')
echo "gpu $bus local_cpulist: $(cat /sys/bus/pci/devices/$bus/local_cpulist 2>&1) numa_node: $(cat /sys/bus/pci/devices/$bus/numa_node 2>&1)"
step "eager baseline: pytorch:fp32 b1 b4 b8, p50 / end-of-run recheck"
mkdir -p /tmp/e && cd /tmp/e
for i in 1 2; do for pin in none 0-7 8-15; do
  [ $SECONDS -gt 110 ] && break 2
  pre=""; [ $pin = none ] || pre="taskset -c $pin"
  timeout 40 $pre python3 $REPO/benchmark_all.py -q --variants pytorch:fp32 --batch-size 1 4 8 --output-dir r_${pin}_$i > /dev/null 2>&1
  python3 - r_${pin}_$i $pin <<'PY'
import csv, glob, sys
rows = [r for f in glob.glob(f"{sys.argv[1]}/*.csv") for r in csv.DictReader(open(f)) if r["status"] == "ok"]
print(f"{sys.argv[2]:6s}", " ".join(f"b{r['batch_size']}={float(r['latency_p50_ms']):.2f}/{float(r['recheck_p50_ms'] or 'nan'):.2f}" for r in rows))
PY
done; done
cd $REPO
step "default run cold, warm"
mkdir -p $OUT/r
RUN_TIMEOUT=180 OUT=$OUT/r timeout 265 bash benchmarks/h200_cold_warm.sh 2>&1 | tail -20
for f in cold warm; do echo "$f: $(grep -h '^total' $OUT/r/$f.timeline.txt)"; done
python3 - $OUT/r <<'PY'
import csv, sys
for run in ("cold", "warm"):
    try:
        rows = [r for r in csv.DictReader(open(f"{sys.argv[1]}/{run}.csv"))]
    except OSError:
        continue
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"{run}: {len(rows)} rows, {len(ok)} ok, busy {sum(r['machine_busy'] == 'True' for r in ok)}; baseline p50/recheck: "
          + " ".join(f"b{r['batch_size']}={r['latency_p50_ms'][:5]}/{r['recheck_p50_ms'][:5]}" for r in ok if r['variant'] == 'pytorch:fp32'))
PY
step end
cd $OUT && tar czf runs.tgz r && rm -rf r
