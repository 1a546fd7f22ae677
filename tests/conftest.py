"""Shared test fixtures: a tiny model, a PrepareContext factory, a fake clock, and a backend smoke check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from infertune.backends.base import PrepareContext, Runner
from infertune.backends.registry import get_backend
from infertune.cache import ArtifactCache
from infertune.measure.timer import TimingPolicy, measure
from infertune.verify import DEFAULT_TOLERANCES, Fidelity, compare

TINY_SHAPE = (3, 32, 32)


@pytest.fixture(scope="session")
def tiny_model():
    from infertune.testing import tiny_convnet

    return tiny_convnet()


def _samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *TINY_SHAPE)).astype(np.float32)


@pytest.fixture
def make_ctx(tiny_model, tmp_path: Path) -> Callable[..., PrepareContext]:
    """Build a PrepareContext for the tiny model: ``make_ctx("int8", {"method": "minmax"}, batch=2)``."""

    def factory(precision: str = "fp32", options: dict[str, str] | None = None, batch: int = 2,
                device: str = "cpu", settings: dict | None = None, cache_root: Path | None = None) -> PrepareContext:
        return PrepareContext(
            model=tiny_model,
            example_input=_samples(batch, seed=1),
            precision=precision,
            options=dict(options or {}),
            device=device,
            threads=1,
            cache=ArtifactCache(cache_root or tmp_path / "models", "tiny"),
            calibration=lambda n: _samples(n, seed=2),
            settings=dict(settings or {}),
            log=lambda msg: None,
        )

    return factory


def reference_outputs(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(batch)).numpy()


def smoke_cell(backend_name: str, ctx: PrepareContext) -> tuple[Runner, Fidelity, list[float]]:
    """Prepare, verify and measure one cell of ``backend_name`` on the tiny model; skip if unavailable."""
    backend = get_backend(backend_name)
    avail = backend.availability(ctx.device, ctx.precision)
    if not avail.ok:
        pytest.skip(f"{backend_name}:{ctx.precision} unavailable here: {avail.reason}")
    runner = backend.prepare(ctx)
    verify_in = _samples(ctx.batch_size, seed=3)
    out = runner.to_numpy(runner(runner.to_native(verify_in)))
    runner.synchronize()
    fid = compare(out, reference_outputs(ctx.model, verify_in), DEFAULT_TOLERANCES[ctx.precision])
    timing = measure(runner, runner.to_native(ctx.example_input), TimingPolicy(1, 3, 0.0))
    return runner, fid, timing.samples_ms


class FakeClock:
    """A clock that advances by scripted steps each time it is read (no sleeping in tests)."""

    def __init__(self, step_ns: int | list[int]) -> None:
        self.now = 0
        self._steps = step_ns if isinstance(step_ns, list) else None
        self._step = step_ns if isinstance(step_ns, int) else 0
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        if self._steps is not None:
            self.now += self._steps[(self.reads - 1) % len(self._steps)]
        else:
            self.now += self._step
        return self.now


@pytest.fixture
def fake_clock() -> Iterator[type[FakeClock]]:
    yield FakeClock


@pytest.fixture
def fault_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Register the fault-injection backends (tests/fault_backends.py) for one test; yields the marker folder.

    They are removed afterwards so that other tests see only infertune's own backends.
    """
    from infertune.backends import registry
    from tests import fault_backends as faults

    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(faults.MARKER_ENV, str(markers))
    classes = [c for c in vars(faults).values()
               if isinstance(c, type) and issubclass(c, faults._Fault) and c is not faults._Fault]
    for cls in classes:
        registry.register_backend(cls)
    yield markers
    for cls in classes:
        registry._REGISTRY.pop(cls.name, None)
