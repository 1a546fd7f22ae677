"""The one timed loop every backend goes through.

Warm up by count; then run until BOTH the configured iteration count and a minimum wall time are
met (so fast variants get enough samples and slow ones are not cut short); each iteration is timed
with ``time.perf_counter_ns`` around ``runner(inputs)`` and ``runner.synchronize()``. On a GPU runner
the per-iteration device time also comes from CUDA events. The clock is a parameter so tests can
drive the loop with a fake clock and never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infertune.backends.base import Runner

Clock = Callable[[], int]


@dataclass(frozen=True)
class TimingPolicy:
    """How long to measure one cell.

    Attributes:
        warmup_iterations: untimed calls before timing (caches, lazy init, autotuning).
        min_iterations: timed calls at least.
        min_time_s: timed seconds at least (the loop ends when both minimums are met).
        max_iterations: a hard cap so a very fast variant with a long min_time stays bounded.
    """

    warmup_iterations: int = 3
    min_iterations: int = 10
    min_time_s: float = 1.0
    max_iterations: int = 10_000


@dataclass
class Timing:
    """Raw samples of one cell, in nanoseconds, plus the one-off first call."""

    samples_ns: list[int]
    first_call_ns: int | None = None
    device_samples_ms: list[float] = field(default_factory=list)
    wall_ns: int = 0

    @property
    def samples_ms(self) -> list[float]:
        """Per-iteration latency in ms: CUDA-event device time when measured, else host time."""
        if self.device_samples_ms:
            return list(self.device_samples_ms)
        return [s / 1e6 for s in self.samples_ns]


def time_first_call(runner: Runner, inputs: Any, clock: Clock = time.perf_counter_ns) -> int:
    """Time the very first call (lazy initialisation, JIT, autotuning land here)."""
    t0 = clock()
    runner(inputs)
    runner.synchronize()
    return clock() - t0


def measure(
    runner: Runner,
    inputs: Any,
    policy: TimingPolicy,
    clock: Clock = time.perf_counter_ns,
) -> Timing:
    """Warm up, then time iterations until ``policy`` is satisfied; returns the raw samples."""
    for _ in range(policy.warmup_iterations):
        runner(inputs)
        runner.synchronize()
    samples: list[int] = []
    device_ms: list[float] = []
    min_ns = int(policy.min_time_s * 1e9)
    events = runner.cuda_event_pair()
    start = clock()
    elapsed = 0
    while len(samples) < policy.max_iterations and (
        len(samples) < policy.min_iterations or elapsed < min_ns
    ):
        t0 = clock()
        if events is not None:
            events[0].record()
        runner(inputs)
        if events is not None:
            events[1].record()
        runner.synchronize()
        t1 = clock()
        samples.append(t1 - t0)
        if events is not None:
            device_ms.append(float(events[0].elapsed_time(events[1])))
        elapsed = t1 - start
    return Timing(samples_ns=samples, device_samples_ms=device_ms, wall_ns=clock() - start)
