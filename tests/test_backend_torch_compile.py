"""torch_compile backend: compiled in prepare, verified, measured; options validated (few compiles: each costs seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infertune.backends.registry import get_backend
from infertune.backends.torch_compile import CompileOptions, parse_options
from infertune.errors import ConfigError
from tests.conftest import reference_outputs, smoke_cell

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.slow
def test_cpu_fp32_compiles_in_prepare_and_matches_reference(make_ctx):
    cells = []
    folded = _folded_after(lambda: cells.append(smoke_cell("torch_compile", make_ctx("fp32", batch=2))))
    runner, fid, samples = cells[0]
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-4
    assert runner.compile_s > 0
    assert len(samples) >= 3 and all(s > 0 for s in samples)
    assert runner.artifact_path is None
    # frozen for real: Inductor's freezing passes folded batch norms into the convolutions, which
    # they can only do when dynamo traced the parameters as constants (freezing on at trace time)
    assert folded > 0


def _folded_after(fn) -> int:
    """How many binary ops (batch norm into conv) Inductor's freezing passes folded while ``fn`` ran."""
    from torch._dynamo.utils import counters

    before = counters["inductor"]["binary_folding"]
    fn()
    return counters["inductor"]["binary_folding"] - before


@pytest.mark.slow
def test_dynamic_batch_serves_other_batch_sizes_without_recompiling(make_ctx):
    from torch._dynamo.utils import counters

    ctx = make_ctx("fp32", {"dynamic": "", "nofreeze": ""}, batch=2)
    runners = []
    assert _folded_after(lambda: runners.append(get_backend("torch_compile").prepare(ctx))) == 0
    runner = runners[0]
    # the same graph again needs no new code (FX graph cache or dynamo's in-process cache)
    assert get_backend("torch_compile").prepare(ctx).cache_hit
    frames_after_prepare = counters["stats"]["unique_graphs"]
    for batch in (3, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        out = runner.to_numpy(runner(runner.to_native(x)))
        np.testing.assert_allclose(out, reference_outputs(ctx.model, x), atol=1e-4)
    assert counters["stats"]["unique_graphs"] == frames_after_prepare


def test_freezing_defaults_per_device_and_modes_expand():
    assert parse_options("torch_compile", {}, "cpu").freeze
    assert not parse_options("torch_compile", {"nofreeze": ""}, "cpu").freeze
    assert parse_options("torch_compile", {}, "cuda").freeze  # 30.8k vs 26.2k img/s on the H200
    assert not parse_options("torch_compile", {"nofreeze": ""}, "cuda").freeze
    opts = parse_options("torch_compile", {"mode": "max-autotune"}, "cpu")
    assert opts.mode == "max-autotune"
    assert opts.inductor_options() == {
        "max_autotune": True, "triton.cudagraphs": True, "coordinate_descent_tuning": True, "freezing": True,
    }
    assert CompileOptions(freeze=False).inductor_options() == {"freezing": False}


def test_reduce_overhead_is_refused_on_cpu_with_the_reason(make_ctx):
    for options in ({"reduce-overhead": ""}, {"mode": "reduce-overhead"}):
        with pytest.raises(ConfigError, match="reduce-overhead.*CUDA"):
            get_backend("torch_compile").prepare(make_ctx("fp32", options))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"fullgraph": ""}, "unknown option 'fullgraph'.*nofreeze"),
        ({"mode": "fastest"}, "'mode' got 'fastest'.*'max-autotune'"),
        ({"max-autotune": "yes"}, "no value"),
        ({"default": "", "max-autotune": ""}, "choose one mode"),
        ({"freeze": "", "nofreeze": ""}, "exclude each other"),
        ({"cuda_graph": ""}, "'cuda_graph' needs a CUDA device"),
    ],
)
def test_bad_options_raise_config_error(make_ctx, options, match):
    with pytest.raises(ConfigError, match=match):
        get_backend("torch_compile").prepare(make_ctx("fp32", options))


def test_availability_and_defaults():
    backend = get_backend("torch_compile")
    assert not backend.availability("cpu", "fp16").ok
    assert backend.availability("cpu", "fp32").ok
    assert backend.default_variants("cpu") == ["torch_compile:fp32"]
    assert backend.default_variants("cuda") == [
        "torch_compile:fp16:channels_last", "torch_compile:fp16:channels_last:cuda_graph",
    ]
    assert not backend.availability("cpu", "tf32").ok
    with pytest.raises(ConfigError, match="cannot be combined"):
        parse_options("torch_compile", {"cuda_graph": "", "reduce-overhead": ""}, "cuda")


@needs_cuda
@pytest.mark.gpu
def test_cuda_fp16_reduce_overhead(make_ctx):
    runner, fid, samples = smoke_cell("torch_compile", make_ctx("fp16", {"reduce-overhead": ""}, device="cuda"))
    assert fid.ok, fid.failures
    assert runner.latency_scope == "device"
    assert len(samples) >= 3
