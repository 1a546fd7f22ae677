"""Every registered backend goes through prepare -> verify -> measure on the tiny model (or skips with why)."""

from __future__ import annotations

import pytest

from infertune.backends.registry import get_backend, list_backends
from tests.conftest import smoke_cell


def test_registry_lists_every_backend_module():
    names = list_backends()
    assert names[:2] == ["null", "pytorch"]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ["pytorch"])
def test_eager_backends_reproduce_reference(name, make_ctx):
    runner, fid, samples = smoke_cell(name, make_ctx("fp32", batch=2))
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-5
    assert len(samples) >= 3 and all(s > 0 for s in samples)


def test_null_backend_returns_its_input(make_ctx):
    ctx = make_ctx()
    runner = get_backend("null").prepare(ctx)
    x = runner.to_native(ctx.example_input)
    assert runner(x) is x
