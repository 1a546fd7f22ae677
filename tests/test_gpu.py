"""The GPU code paths: CUDA graphs, TF32, device vs host timing, end-to-end latency, device memory.

The CPU-side contracts (options refused on the CPU with the fix, TF32 switched per variant) run
everywhere; everything that needs a CUDA GPU skips with that reason (CI has none; these ran on the
H200 device machine through benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from infertune.backends.registry import get_backend
from infertune.backends.torch_common import model_copy, parse_eager_options, set_tf32
from infertune.cell import configure_torch
from infertune.errors import ConfigError
from infertune.measure.timer import TimingPolicy, measure
from tests.conftest import smoke_cell

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")


@pytest.mark.parametrize("backend", ["pytorch", "torchscript"])
def test_cuda_graph_option_is_refused_on_the_cpu_with_the_fix(make_ctx, backend):
    with pytest.raises(ConfigError, match="'cuda_graph' needs a CUDA device.*leave it out"):
        get_backend(backend).prepare(make_ctx("fp32", {"cuda_graph": ""}))


def test_eager_options_name_the_allowed_ones():
    assert parse_eager_options("pytorch", {"channels_last": "", "cuda_graph": ""}, "cuda") == (True, True)
    with pytest.raises(ConfigError, match="allowed: channels_last, cuda_graph"):
        parse_eager_options("pytorch", {"graphs": ""}, "cuda")


def test_tf32_is_a_gpu_precision_and_off_unless_asked(tiny_model):
    pytorch = get_backend("pytorch")
    avail = pytorch.availability("cpu", "tf32")
    assert not avail.ok and "NVIDIA" in avail.reason
    assert "pytorch:tf32" in pytorch.default_variants("cuda")
    set_tf32(True)
    configure_torch(1)  # every worker starts with TF32 off: fp32 rows are true fp32
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.benchmark
    model_copy(tiny_model, "cpu", "tf32")  # a tf32 variant turns it on in its own worker
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    configure_torch(1)


def test_cuda_default_ladder_has_the_gpu_rungs():
    from infertune.config import validate_config
    from infertune.ladder import build_ladder

    names = [v.name for v in build_ladder(validate_config({"optimization": {"enable_tensorrt": True}}), "cuda")]
    for rung in ("pytorch:fp32", "pytorch:tf32", "pytorch:fp16:channels_last", "pytorch:bf16:channels_last",
                 "pytorch:fp16:channels_last:cuda_graph", "torchscript:fp16", "torch_compile:fp16:channels_last",
                 "torch_compile:fp16:channels_last:cuda_graph", "cudnn_fused:fp16:channels_last:cuda_graph",
                 "torch_compile:fp16:channels_last:cudnn_fused:cuda_graph", "aoti:fp16", "onnxruntime:fp32",
                 "tensorrt:fp16"):
        assert rung in names


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "precision", "options"),
    [
        ("pytorch", "tf32", {}),
        ("pytorch", "bf16", {"channels_last": ""}),
        ("pytorch", "fp16", {"channels_last": "", "cuda_graph": ""}),
        ("torchscript", "fp16", {"cuda_graph": ""}),
        ("torch_compile", "fp16", {"channels_last": "", "cuda_graph": ""}),
    ],
)
def test_gpu_variants_keep_predictions_and_time_on_the_device(make_ctx, backend, precision, options):
    runner, fid, samples = smoke_cell(backend, make_ctx(precision, options, batch=4, device="cuda"))
    assert fid.ok, fid.failures
    assert runner.latency_scope == "device"
    assert len(samples) >= 3 and all(s > 0 for s in samples)
    assert ("cuda_graph" in options) == (runner.graph is not None)


@needs_cuda
@pytest.mark.gpu
def test_a_compiled_cuda_graph_variant_compiles_once(make_ctx):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    runner = get_backend("torch_compile").prepare(make_ctx("fp16", {"cuda_graph": ""}, batch=4, device="cuda"))
    runner(runner.to_native(np.zeros((4, 3, 32, 32), dtype=np.float32)))
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


@needs_cuda
@pytest.mark.gpu
def test_a_cuda_graph_variant_shares_one_compiled_graph_across_batch_sizes(make_ctx):
    """Batch 1 is specialised by dynamo; 4 and 8 replay CUDA graphs of one dynamic-batch graph, each verified."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    for batch in (1, 4, 8):
        ctx = make_ctx("fp16", {"channels_last": "", "cuda_graph": ""}, batch=batch, device="cuda")
        runner, fid, samples = smoke_cell("torch_compile", ctx)
        assert fid.ok, (batch, fid.failures)
        assert runner.graph is not None and all(s > 0 for s in samples)
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])


@needs_cuda
@pytest.mark.gpu
def test_a_cuda_graph_refuses_another_batch_size(make_ctx):
    runner = get_backend("pytorch").prepare(make_ctx("fp16", {"cuda_graph": ""}, batch=4, device="cuda"))
    with pytest.raises(ConfigError, match="captured for input shape"):
        runner.to_native(np.zeros((2, 3, 32, 32), dtype=np.float32))


@needs_cuda
@pytest.mark.gpu
def test_cuda_event_timing_agrees_with_synchronised_host_timing():
    """A kernel-bound workload (ResNet-18 fp16, batch 64: milliseconds per call): the events measure
    the device's work, the host clock the same work plus launch and sync overhead."""
    import torchvision

    from infertune.backends.torch_common import TorchRunner

    configure_torch(1)
    model = torchvision.models.resnet18().eval().cuda().half().to(memory_format=torch.channels_last)
    runner = TorchRunner(model, "cuda", torch.float16, channels_last=True)
    x = runner.to_native(np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32))
    timing = measure(runner, x, TimingPolicy(10, 30, 0.5, warmup_min_time_s=0.5))
    device, host = np.median(timing.samples_ms), np.median(timing.host_samples_ms)
    assert device > 0.2, "workload too small to compare clocks"
    assert host >= device * 0.98
    assert host - device < max(0.1, 0.1 * device), (device, host)


@needs_cuda
@pytest.mark.gpu
def test_nvml_reads_the_sm_clock_and_a_busy_gpu_ends_the_warmup_at_its_count():
    """The warm-up's clock probe finds this GPU by its UUID; right after a second of work, when NVML says the
    GPU is at full clock, the warm-up stops at its count instead of running its half second."""
    import torchvision

    from infertune.backends.torch_common import TorchRunner
    from infertune.measure.gpu_clock import current_gpu_clock, gpu_warmed_up

    pytest.importorskip("pynvml", reason="nvidia-ml-py is an infertune dependency; this environment lacks it")
    clock = current_gpu_clock()
    assert clock is not None and clock.max_mhz > 0 and 0 < clock.mhz() <= clock.max_mhz * 1.05
    configure_torch(1)
    model = torchvision.models.resnet18().eval().cuda().half()
    runner = TorchRunner(model, "cuda", torch.float16)
    x = runner.to_native(np.random.default_rng(0).standard_normal((64, 3, 224, 224)).astype(np.float32))
    measure(runner, x, TimingPolicy(3, 10, 1.0))  # a second of work
    if not gpu_warmed_up():
        pytest.skip(f"this GPU stays below 95% of its max clock under load ({clock.mhz()} of {clock.max_mhz} MHz)")
    timing = measure(runner, x, TimingPolicy(3, 10, 0.1, warmup_min_time_s=0.5), warmed_up=gpu_warmed_up)
    assert timing.warmup_calls == 3


@needs_cuda
@pytest.mark.gpu
def test_a_cuda_run_records_device_and_end_to_end_latency_and_device_memory(tmp_path):
    from infertune.config import validate_config
    from infertune.pipeline import run

    cfg = validate_config({
        "model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False},
        "benchmark": {"batch_sizes": [2], "warmup_iterations": 1, "benchmark_iterations": 5, "min_time_s": 0.0,
                      "device": "cuda", "warmup_time_s": 0.05},
        "optimization": {"variants": ["pytorch:fp32", "pytorch:fp16:channels_last:cuda_graph"]},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })
    rows = run(cfg, log=lambda m: None).rows
    assert [r.status for r in rows] == ["ok", "ok"], [r.error for r in rows]
    for r in rows:
        assert r.device == "cuda" and r.latency_scope == "device"
        assert r.peak_device_mb and r.peak_device_mb > 0
        assert r.host_latency_p50_ms >= r.latency_p50_ms * 0.98
        # each call is timed alone and end to end in one loop: the trip adds both copies to the call's host time
        assert r.e2e_latency_p50_ms >= r.host_latency_p50_ms and r.e2e_latency_p99_ms >= r.e2e_latency_p50_ms
        assert r.e2e_throughput_ips == pytest.approx(r.batch_size * 1000 / r.e2e_latency_p50_ms)
