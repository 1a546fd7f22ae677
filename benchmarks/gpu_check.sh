#!/usr/bin/env bash
# The GPU code paths on a CUDA machine, in one call: the backend tests (GPU tests run instead of
# skipping), then ResNet50 up the default CUDA ladder at batch sizes 1..256 (result files in $OUT).
# Usage (device machine): OUT=/some/dir [VARIANTS="pytorch:fp32 ..."] bash benchmarks/gpu_check.sh [batch sizes...]
# (VARIANTS unset: the default CUDA ladder.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if [ -d .whl ]; then  # packages the device image lacks, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
BATCHES=${*:-1 8 64 256}
timeout ${PYTEST_TIMEOUT:-240} python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_backend_core.py \
  tests/test_backend_torchscript.py tests/test_backend_torch_compile.py tests/test_backend_aoti.py \
  tests/test_backend_onnxruntime.py tests/test_backend_tensorrt.py tests/test_measure.py \
  -k "cuda or gpu or eager or null or measure or loop or statistic or warmup or end_to_end" \
  -rfEs 2>&1 | tail -30 | tee "$OUT/pytest_gpu.txt"
timeout ${RUN_TIMEOUT:-420} python3 -m infertune run --device cuda --quiet --no-pretrained --batch-size $BATCHES \
  --iterations 20 --min-time 1 ${VARIANTS:+--variants $VARIANTS} --output-dir "$OUT" 2>&1 | tee "$OUT/run.txt"
ls "$OUT"  # the report is built from these files on any machine: infertune report <csv>
