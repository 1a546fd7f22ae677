"""torch_compile backend: compiled in prepare, verified, measured; options validated (few compiles: each costs seconds)."""

from __future__ import annotations

import dataclasses
import os

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
    folded = _folded_after(lambda: cells.append(smoke_cell("torch_compile", make_ctx("fp32", {"noprefold": ""}))))
    runner, fid, samples = cells[0]
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-4
    assert runner.compile_s > 0
    assert len(samples) >= 3 and all(s > 0 for s in samples)
    assert runner.artifact_path is None
    # frozen for real: Inductor's freezing passes folded batch norms into the convolutions, which
    # they can only do when dynamo traced the parameters as constants (freezing on at trace time)
    assert folded > 0


@pytest.mark.slow
def test_with_freezing_the_batch_norms_are_folded_before_compiling(make_ctx):
    logs: list[str] = []
    ctx = dataclasses.replace(make_ctx("fp32"), log=logs.append)
    runners = []
    folded_by_inductor = _folded_after(lambda: runners.append(get_backend("torch_compile").prepare(ctx)))
    assert any("2 batch norm(s) folded into convolutions before compiling" in line for line in logs), logs
    assert folded_by_inductor == 0  # nothing left for freezing to fold
    runner = runners[0]
    x = ctx.example_input
    np.testing.assert_allclose(runner.to_numpy(runner(runner.to_native(x))), reference_outputs(ctx.model, x),
                               atol=1e-4)


def test_a_model_torch_fx_cannot_trace_is_compiled_as_it_is_with_a_line_saying_so(make_ctx):
    from infertune.backends.torch_compile import prefolded
    from tests.fixture_models import untraceable_conv_bn

    logs: list[str] = []
    model = untraceable_conv_bn()
    ctx = dataclasses.replace(make_ctx("fp32"), model=model, log=logs.append)
    assert prefolded(ctx, "torch_compile") is model
    assert logs and "batch norms left to freezing: torch.fx could not trace the model" in logs[0]


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
    assert parse_options("torch_compile", {}, "cuda").prefold
    assert not parse_options("torch_compile", {"noprefold": ""}, "cuda").prefold
    assert not parse_options("torch_compile", {"nofreeze": ""}, "cuda").prefold  # folding belongs to freezing
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
        ({"nofreeze": "", "noprefold": ""}, "'noprefold'.*'nofreeze'.*leave one out"),
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
        "torch_compile:fp16:channels_last:cudnn_fused:cuda_graph",
    ]
    assert not backend.availability("cpu", "tf32").ok
    with pytest.raises(ConfigError, match="cannot be combined"):
        parse_options("torch_compile", {"cuda_graph": "", "reduce-overhead": ""}, "cuda")
    # torch.compile shares a dynamic-batch graph across the CUDA graphs of its batch sizes; a package cannot
    assert parse_options("torch_compile", {"cuda_graph": "", "dynamic": ""}, "cuda").dynamic
    with pytest.raises(ConfigError, match="cannot be combined with 'dynamic'"):
        parse_options("aoti", {"cuda_graph": "", "dynamic": ""}, "cuda")


@needs_cuda
@pytest.mark.gpu
def test_cuda_fp16_reduce_overhead(make_ctx):
    runner, fid, samples = smoke_cell("torch_compile", make_ctx("fp16", {"reduce-overhead": ""}, device="cuda"))
    assert fid.ok, fid.failures
    assert runner.latency_scope == "device"
    assert len(samples) >= 3


_PREPARE_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
from infertune.backends.base import PrepareContext
from infertune.backends.registry import get_backend
from infertune.cache import ArtifactCache
from infertune.cell import configure_torch
from infertune.testing import tiny_convnet
configure_torch(1)
x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
ctx = PrepareContext(model=tiny_convnet(), example_input=x, precision="fp32", options={opts!r}, device={device!r},
                     threads={threads}, cache=ArtifactCache(sys.argv[1], "tiny"), calibration=None, log=lambda m: None)
runner = get_backend("torch_compile").prepare(ctx)
from torch._dynamo.utils import counters
from torch._inductor import async_compile
print(json.dumps({{"cache_hit": runner.cache_hit, "fx_hits": counters["inductor"]["fxgraph_cache_hit"],
                  "compile_threads": async_compile.get_compile_threads(),
                  "compile_pools": len(async_compile._pool_set)}}))
"""


def _prepare_in_fresh_process(models_dir, options: dict[str, str], device: str = "cpu", threads: int = 1,
                              **env_vars: str) -> dict:
    """Prepare the tiny model in a new interpreter (no in-memory compile caches), models dir ``models_dir``."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)]), **env_vars}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the backend must choose the folder itself
    if "TORCHINDUCTOR_COMPILE_THREADS" not in env_vars:
        env.pop("TORCHINDUCTOR_COMPILE_THREADS", None)
    code = _PREPARE_IN_A_FRESH_PROCESS.format(opts=options, device=device, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code, str(models_dir)], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_run_is_served_by_the_fx_graph_cache_kept_in_the_models_dir(tmp_path):
    # nofreeze: on the CPU a frozen graph holds oneDNN-packed weights, which Inductor's FX graph cache
    # bypasses ('mkldnn tensors unpickleable'); its generated kernels are still reused from the folder
    first = _prepare_in_fresh_process(tmp_path / "models", {"nofreeze": ""})
    assert not first["cache_hit"] and first["fx_hits"] == 0
    assert any((tmp_path / "models" / "inductor").rglob("*")), "Inductor's cache is not under the models dir"
    second = _prepare_in_fresh_process(tmp_path / "models", {"nofreeze": ""})
    assert second["fx_hits"] >= 1 and second["cache_hit"]
    # another models dir starts cold again: the cache lives there, not in a global folder
    assert _prepare_in_fresh_process(tmp_path / "other", {"nofreeze": ""})["fx_hits"] == 0


@pytest.mark.slow
def test_the_compile_pool_is_the_jobs_share_of_the_cores_unless_the_environment_sets_it(tmp_path):
    """One thread, a job's share beside many others on a GPU, means no pool (torch would start one of
    min(32, cores) processes, even for a cache hit); a job with every core keeps torch's own choice, and
    TORCHINDUCTOR_COMPILE_THREADS still wins."""
    models = tmp_path / "models"
    assert _prepare_in_fresh_process(models, {"nofreeze": ""}, threads=1)["compile_threads"] == 1
    every_core = len(os.sched_getaffinity(0))
    alone = _prepare_in_fresh_process(models, {"nofreeze": ""}, threads=every_core)["compile_threads"]
    assert alone == torch._inductor.config.decide_compile_threads()
    told = _prepare_in_fresh_process(models, {"nofreeze": ""}, threads=1, TORCHINDUCTOR_COMPILE_THREADS="3")
    assert told["compile_threads"] == 3


@needs_cuda
@pytest.mark.gpu
@pytest.mark.slow
def test_on_a_gpu_a_one_thread_job_starts_no_compile_pool(tmp_path):
    """Where Triton is there (a GPU), torch starts its pool at the first compile; a job's share of one thread
    starts none."""
    assert _prepare_in_fresh_process(tmp_path / "models", {}, "cuda", threads=1)["compile_pools"] == 0
    assert _prepare_in_fresh_process(tmp_path / "models", {}, "cuda", threads=2)["compile_pools"] == 1


def test_no_cache_switches_inductor_caches_off(tmp_path, monkeypatch):
    from infertune.backends.torch_compile import configure_inductor_caches
    from infertune.cache import ArtifactCache

    monkeypatch.setattr(torch._inductor.config, "force_disable_caches", False)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", raising=False)
    folder = configure_inductor_caches(ArtifactCache(tmp_path / "models", "tiny"))
    assert folder == (tmp_path / "models" / "inductor").resolve() and folder.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    assert not torch._inductor.config.force_disable_caches
    assert configure_inductor_caches(ArtifactCache(tmp_path / "models", "tiny", enabled=False)) is None
    assert torch._inductor.config.force_disable_caches
    assert os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] == "1"
