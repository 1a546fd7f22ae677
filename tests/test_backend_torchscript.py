"""torchscript: trace + freeze (+ optimize_for_inference) on the tiny model; cached .pt; options checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infertune.backends.registry import get_backend
from infertune.errors import ConfigError
from tests.conftest import smoke_cell

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(runner, batch: np.ndarray) -> np.ndarray:
    return runner.to_numpy(runner(runner.to_native(batch)))


def test_fp32_cpu_reproduces_reference_and_writes_artifact(make_ctx):
    runner, fid, samples = smoke_cell("torchscript", make_ctx("fp32", batch=2))
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-4  # BN folding changes rounding only
    assert runner.cache_hit is False
    assert runner.artifact_path.name == "model.pt" and runner.artifact_path.stat().st_size > 0
    assert runner.latency_scope == "end_to_end"
    assert len(samples) >= 3 and all(s > 0 for s in samples)


def test_second_prepare_is_cache_hit_with_same_outputs(make_ctx, tmp_path):
    backend = get_backend("torchscript")
    first = backend.prepare(make_ctx("fp32", cache_root=tmp_path / "c"))
    second = backend.prepare(make_ctx("fp32", cache_root=tmp_path / "c"))
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.artifact_path == first.artifact_path
    x = make_ctx().example_input
    np.testing.assert_array_equal(_run(first, x), _run(second, x))


def test_batch_size_is_part_of_the_cache_key(make_ctx, tmp_path):
    backend = get_backend("torchscript")
    b2 = backend.prepare(make_ctx("fp32", batch=2, cache_root=tmp_path / "c"))
    b4 = backend.prepare(make_ctx("fp32", batch=4, cache_root=tmp_path / "c"))
    assert b4.cache_hit is False
    assert b4.artifact_path != b2.artifact_path


def test_unknown_option_names_it_and_the_allowed_ones(make_ctx):
    with pytest.raises(ConfigError, match=r"'bogus'.*allowed: channels_last"):
        get_backend("torchscript").prepare(make_ctx("fp32", {"bogus": ""}))


def test_fp16_on_cpu_is_unavailable_with_reason():
    avail = get_backend("torchscript").availability("cpu", "fp16")
    assert not avail.ok
    assert "only on CUDA" in avail.reason


def test_default_variants_per_device():
    backend = get_backend("torchscript")
    assert backend.default_variants("cpu") == ["torchscript:fp32"]
    assert backend.default_variants("cuda")[0] == "torchscript:fp16"


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("options", [{}, {"channels_last": ""}])
def test_fp16_cuda_within_tolerance_and_device_timed(make_ctx, options):
    runner, fid, samples = smoke_cell("torchscript", make_ctx("fp16", options, batch=2, device="cuda"))
    assert fid.ok, fid.failures
    assert runner.latency_scope == "device"
    assert runner.cuda_event_pair() is not None
    assert len(samples) >= 3 and all(s > 0 for s in samples)
