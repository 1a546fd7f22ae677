"""Deterministic fakes for the serving tests: a sleep-based runner with a known service time and a sample
library whose samples identify themselves (the ``sleep`` backend over it is in ``scenario_sleep_backend``)."""

from __future__ import annotations

import time

import numpy as np

from infertune.backends.base import Runner

#: each fake output row holds this many values, all derived from its own sample.
OUT_WIDTH = 4


def identity_samples(n: int, shape: tuple[int, ...] = (3, 4, 4)) -> np.ndarray:
    """Sample i is filled with the value i, so an output row says which sample it came from."""
    return np.broadcast_to(np.arange(n, dtype=np.float32).reshape(n, *([1] * len(shape))), (n, *shape)).copy()


def expected_output(samples: np.ndarray, index: int) -> np.ndarray:
    return samples[index].reshape(-1)[:OUT_WIDTH] * 2 + 1


class SleepRunner(Runner):
    """Sleeps ``fixed_ms + per_sample_ms * batch`` (releasing the GIL like a runtime), then returns
    ``2 * x + 1`` of each sample's first values. ``batch`` is the only size it accepts (a static shape)."""

    def __init__(self, batch: int, fixed_ms: float, per_sample_ms: float, crash_after: int | None = None) -> None:
        self.batch, self.fixed_ms, self.per_sample_ms = batch, fixed_ms, per_sample_ms
        self.crash_after = crash_after
        self.calls: list[int] = []

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != self.batch:
            raise RuntimeError(f"static shape: built for batch {self.batch}, got {len(inputs)}")
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            import ctypes

            ctypes.string_at(0)  # a runtime that segfaults under traffic
        self.calls.append(len(inputs))
        time.sleep((self.fixed_ms + self.per_sample_ms * len(inputs)) / 1e3)
        return inputs.reshape(len(inputs), -1)[:, :OUT_WIDTH] * 2 + 1


def service_ms(batch: int, fixed_ms: float, per_sample_ms: float) -> float:
    return fixed_ms + per_sample_ms * batch
