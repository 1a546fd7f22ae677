#!/usr/bin/env bash
# One device call for issue 17, most important first: the fused rungs against the best torch.compile rung
# measured by the tool (ratios in one run), a kernel profile, the AOTInductor crash diagnosis, the GPU tests.
# Usage (device machine, from a copy of the repo with .whl/): OUT=/some/dir bash benchmarks/h200_fused.sh [batches]
# Logs go to $OUT/log.txt; the run's CSV/JSON to $OUT/fused/; every step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/h200_fused}; mkdir -p "$OUT/fused"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1
BATCHES=${*:-1 256 1024}
exec > >(tee -a "$OUT/log.txt") 2>&1
step() { echo; echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)"
gcc --version | head -1; ldconfig -p | grep -E 'libcuda\.so' | head -3

step "tool run: the fused rungs against torch.compile's best and the fp32 baseline, batch $BATCHES"
mkdir -p /tmp/fused_cwd; (cd /tmp/fused_cwd && timeout ${RUN_TIMEOUT:-300} python3 -m infertune run --device cuda --quiet --no-pretrained --batch-size $BATCHES \
  --iterations 20 --min-time 1 --output-dir /tmp/fused_run \
  --variants pytorch:fp32 torch_compile:fp16:channels_last:cuda_graph cudnn_fused:fp16:channels_last:cuda_graph \
  torch_compile:fp16:channels_last:cudnn_fused:cuda_graph)
cp /tmp/fused_run/*.csv /tmp/fused_run/*.json "$OUT/fused/" 2>/dev/null
step "profile: fused ResNet50 fp16 channels_last in a CUDA graph, batch 256"
timeout 60 python3 benchmarks/h200_fused_profile.py 256

step "aoti: build a tiny fp16 CUDA package, then load it in stages (a crash's last stage line says where)"
timeout 120 python3 benchmarks/aoti_crash.py build /tmp/aoti16 fp16
timeout 20 python3 benchmarks/aoti_crash.py inspect /tmp/aoti16/model.pt2
timeout 45 python3 -X faulthandler benchmarks/aoti_crash.py load /tmp/aoti16/model.pt2; echo "load exit status $?"
step "aoti: the same load under cuda-gdb (native backtrace)"
timeout 90 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt -ex "info registers rip" \
  --args python3 benchmarks/aoti_crash.py load /tmp/aoti16/model.pt2 2>&1 | grep -v -E "^\[(New|Thread|Detaching)" | tail -60

step "tests: fused pass and backends on CUDA"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cudnn_fusion.py tests/test_gpu.py -rfEs -x 2>&1 | tail -15

echo "=== done ($(date +%T))"
