"""Every registered backend goes through prepare -> verify -> measure on the tiny model (or skips with why),
and the registry refuses what would make a backend ambiguous."""

from __future__ import annotations

import pytest

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import (
    _REGISTRY,
    BACKEND_MODULES,
    get_backend,
    list_backends,
    register_backend,
)
from infertune.measure.timer import TimingPolicy, measure
from tests.conftest import smoke_cell


def test_every_backend_module_registers_a_backend_under_its_own_name():
    names = list_backends()
    assert names[:2] == ["null", "pytorch"]
    for module in BACKEND_MODULES:  # a module whose @register_backend was forgotten would register nothing
        classes = [b for b in _REGISTRY.values() if type(b).__module__ == f"infertune.backends.{module}"]
        assert classes, f"infertune.backends.{module} registers no backend"
    for name in names:
        assert get_backend(name).name == name


def test_a_second_backend_under_a_taken_name_is_refused():
    class Impostor(Backend):
        name = "onnxruntime"

        def prepare(self, ctx: PrepareContext) -> Runner:
            raise NotImplementedError

    with pytest.raises(ValueError, match="registered twice"):
        register_backend(Impostor)
    assert type(get_backend("onnxruntime")).__name__ != "Impostor"
    original = type(get_backend("onnxruntime"))
    assert register_backend(original) is original  # the same class again (a module imported twice) is harmless


def _first_runnable(backend: Backend) -> tuple[str | None, str | None, str]:
    """(device, precision) this machine can run the backend on, fp32 and the CPU first; else why not."""
    reasons = []
    for device in ("cpu", "cuda"):
        for precision in ("fp32", *sorted(backend.precisions - {"fp32"})):
            if precision not in backend.precisions:
                continue
            avail = backend.availability(device, precision)
            if avail.ok:
                return device, precision, ""
            reasons.append(f"{device} {precision}: {avail.reason}")
    return None, None, "; ".join(reasons)


@pytest.mark.parametrize("name", list_backends())
def test_every_backend_prepares_verifies_and_measures(name, make_ctx):
    backend = get_backend(name)
    device, precision, why = _first_runnable(backend)
    if precision is None:
        pytest.skip(f"{name} cannot run on this machine: {why}")
    ctx = make_ctx(precision, batch=2, device=device)
    if not backend.produces_outputs:  # nothing to compare (the null backend): prepare and measure only
        runner = backend.prepare(ctx)
        samples = measure(runner, runner.to_native(ctx.example_input), TimingPolicy(1, 3, 0.0)).samples_ms
    else:
        runner, fid, samples = smoke_cell(name, ctx)
        assert fid.ok, (name, device, precision, fid.failures)
        if precision == "fp32":
            assert fid.max_abs_err < 1e-3, (name, fid.max_abs_err)
    try:
        assert len(samples) >= 3 and all(s > 0 for s in samples)
    finally:
        runner.close()


def test_null_backend_returns_its_input(make_ctx):
    ctx = make_ctx()
    runner = get_backend("null").prepare(ctx)
    x = runner.to_native(ctx.example_input)
    assert runner(x) is x


def test_the_eager_backend_copies_the_model_once_per_worker_for_all_its_batch_sizes(make_ctx, tiny_model):
    """Later batch sizes run the first one's device copy (its copy costs seconds beside other jobs on a GPU);
    another precision gets its own copy, and the source model stays as it was."""
    import torch

    from infertune.backends.registry import get_backend

    eager = get_backend("pytorch")
    first, second = eager.prepare(make_ctx(batch=1)), eager.prepare(make_ctx(batch=4))
    assert first.fn is second.fn and first.fn is not tiny_model
    bf16 = eager.prepare(make_ctx(precision="bf16", batch=1))
    assert bf16.fn is not first.fn and next(bf16.fn.parameters()).dtype == torch.bfloat16
    assert next(tiny_model.parameters()).dtype == torch.float32
