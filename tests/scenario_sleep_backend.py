"""The ``sleep`` test backend: serves ``SleepRunner`` through the real SUT, in a worker.

Importing this module registers it (a worker imports it again, because the job names this module).
Tests import it through ``registered()``, which also removes it from the registry afterwards, so it never
shows up in ``list_backends()`` for other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infertune.backends.base import Backend, PrepareContext
from infertune.backends.registry import _REGISTRY, register_backend
from infertune.errors import ConfigError
from tests.scenario_fakes import SleepRunner


@register_backend
class SleepBackend(Backend):
    """``sleep:fp32``: a SleepRunner of 2 ms + 0.5 ms per sample (options ``fixed_ms=..``, ``per_sample_ms=..``,
    ``crash_after=N``: segfault on the call after N);
    its outputs are not the model's, so it skips verification like the null backend."""

    name = "sleep"
    label = "Sleep (fake)"
    description = "test backend: sleeps a known service time"
    devices = frozenset({"cpu"})
    precisions = frozenset({"fp32"})
    produces_outputs = False

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        for key in options:
            if key not in ("fixed_ms", "per_sample_ms", "crash_after"):
                raise ConfigError(f"sleep: unknown option {key}")

    def version(self) -> str:
        return "0"

    def prepare(self, ctx: PrepareContext) -> Any:
        crash = ctx.options.get("crash_after")
        return SleepRunner(ctx.batch_size, float(ctx.options.get("fixed_ms", 2.0)),
                           float(ctx.options.get("per_sample_ms", 0.5)), int(crash) if crash else None)


@contextmanager
def registered() -> Iterator[None]:
    """The ``sleep`` backend, registered for the duration of the block."""
    register_backend(SleepBackend)  # again, if an earlier block removed it
    try:
        yield
    finally:
        _REGISTRY.pop("sleep", None)
