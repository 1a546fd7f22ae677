#!/usr/bin/env bash
# Inductor's compile pool against three torch.compile processes side by side (issue 17, "a faster answer").
# Each process's first Inductor compile starts a pool of compile workers (torch's maybe_warm_pool: min(32,
# cores) workers behind a sidecar that imports torch again), warm cache or not. This times three side-by-side
# compiles of ResNet50 (benchmarks/h200_warm_compile.py --prefold: batch 1, then batch 4) cold (each its own
# empty cache) and warm (the same caches again), for each pool setting in $SETTINGS:
# "default" (torch's own), or a TORCHINDUCTOR_COMPILE_THREADS value (1: no pool, compile in the process).
# Usage (GPU machine): OUT=/some/dir SETTINGS="default 4 1" bash benchmarks/h200_compile_pool.sh
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/h200_compile_pool}; mkdir -p "$OUT"
for setting in ${SETTINGS:-default 4 1}; do
  for phase in cold warm; do
    start=$(date +%s.%N)
    for i in 1 2 3; do
      if [ "$setting" = default ]; then env -u TORCHINDUCTOR_COMPILE_THREADS python3 "$REPO/benchmarks/h200_warm_compile.py" \
          "/tmp/pool_$setting.$i" --prefold > "$OUT/$setting.$phase.$i.txt" 2>&1 &
      else TORCHINDUCTOR_COMPILE_THREADS=$setting python3 "$REPO/benchmarks/h200_warm_compile.py" \
          "/tmp/pool_$setting.$i" --prefold > "$OUT/$setting.$phase.$i.txt" 2>&1 &
      fi
    done
    wait
    wall=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
    echo "threads=$setting $phase: 3 processes side by side, $wall s wall; per process (batch 1, batch 4 compile s):" \
      $(for i in 1 2 3; do grep -o 'compile) [0-9.]*' "$OUT/$setting.$phase.$i.txt" | awk '{printf "%s/", $2}'; echo -n " "; done)
  done
done
