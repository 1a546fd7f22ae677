"""tensorrt: availability reasons read clearly where it cannot run; a real engine where it can."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from infertune.backends import base
from infertune.backends.registry import get_backend
from infertune.errors import ConfigError, UnavailableError
from tests.conftest import smoke_cell

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt_gpu = pytest.mark.skipif(
    not (HAS_TRT and torch.cuda.is_available()), reason="needs tensorrt and a CUDA GPU"
)


@pytest.fixture
def trt():
    return get_backend("tensorrt")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_on_cpu_the_reason_is_the_device(trt, precision):
    avail = trt.availability("cpu", precision)
    assert not avail.ok
    assert avail.reason == "TensorRT runs only on NVIDIA GPUs (device is cpu)"


def test_missing_runtime_says_how_to_install(trt, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    avail = trt.availability("cuda", "fp16")
    assert not avail.ok
    assert avail.reason == "tensorrt is not installed; install it with: pip install tensorrt (needs an NVIDIA GPU with CUDA)"


def test_installed_runtime_without_gpu_says_no_gpu(trt, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt" else real(name, *a))
    monkeypatch.setattr(base, "_cuda_available", lambda: False)
    avail = trt.availability("cuda", "fp16")
    assert not avail.ok
    assert avail.reason.startswith("TensorRT needs an NVIDIA GPU: no CUDA GPU")


def test_prepare_where_unavailable_raises_with_the_reason(trt, make_ctx):
    with pytest.raises(UnavailableError, match="only on NVIDIA GPUs"):
        trt.prepare(make_ctx("fp16", device="cpu"))


def test_bf16_is_not_a_tensorrt_precision(trt):
    avail = trt.availability("cuda", "bf16")
    assert not avail.ok and "no bf16 path" in avail.reason


def test_default_variants(trt):
    assert trt.default_variants("cpu") == []
    assert trt.default_variants("cuda") == ["tensorrt:fp16"]


@needs_trt_gpu
def test_options_are_rejected(trt, make_ctx):
    with pytest.raises(ConfigError, match="'?bogus'?.*takes none"):
        trt.prepare(make_ctx("fp16", {"bogus": ""}, device="cuda"))


@needs_trt_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_verifies_and_is_cached(make_ctx, tmp_path, precision):
    ctx = make_ctx(precision, batch=2, device="cuda", cache_root=tmp_path / "c")
    runner, fid, samples = smoke_cell("tensorrt", ctx)
    assert fid.ok, fid.failures
    assert runner.latency_scope == "device" and runner.cache_hit is False
    assert runner.artifact_path.suffix == ".engine" and runner.artifact_path.stat().st_size > 0
    assert all(s > 0 for s in samples)
    again = get_backend("tensorrt").prepare(make_ctx(precision, batch=2, device="cuda", cache_root=tmp_path / "c"))
    assert again.cache_hit is True
    x = ctx.example_input
    np.testing.assert_array_equal(
        runner.to_numpy(runner(runner.to_native(x))), again.to_numpy(again(again.to_native(x)))
    )


def test_engine_io_lists_every_input_and_output_by_the_engine_s_names():
    """The runner binds a buffer per output (no GPU here: an engine stand-in with TensorRT's I/O API)."""
    from infertune.backends.tensorrt import engine_io

    class Engine:
        names = ["input", "logits", "features"]
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return "IN" if name == "input" else "OUT"

    assert engine_io(Engine(), "IN") == (["input"], ["logits", "features"])
