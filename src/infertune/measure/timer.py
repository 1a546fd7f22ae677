"""The one timed loop every backend goes through.

Warm up until both a count and a minimum time are met (a GPU may idle at a fraction of its clock and
need some hundred milliseconds of work to ramp up; the time ends early once the GPU is known to be at its
full clock, ``gpu_clock``; cuDNN autotuning and lazy initialisation happen in the first call, timed apart). The count includes the untimed calls the cell already made on the same
runner at the same batch size (the first call, the verification batches: ``already_warm``), so the
warm-up tops them up instead of repeating them; the time does not (a first call's compile keeps the
GPU idle). Then run until BOTH the configured iteration count and a minimum
wall time are met (so fast variants get enough samples and slow ones are not cut short), or, with a
precision target, until the median is known that well (its 95% confidence interval, ``stats.median_ci``)
after at least ``PRECISION_MIN_SAMPLES`` calls and ``PRECISION_MIN_TIME_SHARE`` of the minimum time: a
steady cell then ends early and a noisy one still runs its full time; each
iteration is timed with ``time.perf_counter_ns`` around ``runner(inputs)`` and ``runner.synchronize()``.
On a GPU runner the per-iteration device time also comes from CUDA events recorded around the call
on the current stream; the synchronised host time of the same iterations is kept too, so the two can
be checked against each other. Given the host batch, each of those calls is also timed end to end, as
trtexec does: the host array copied in (``to_native``), the call, the outputs copied back (``to_numpy``);
one loop gives both figures from the same calls, so a launch-bound cell, which no precision target ends
early, times its ``min_time_s`` once rather than once per figure. The clock is a parameter so tests can
drive the loop with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infertune.backends.base import Runner
from infertune.measure.stats import median_ci

Clock = Callable[[], int]

#: a precision target may end the loop only after this many timed calls (enough for a p99 that is not the max) ...
PRECISION_MIN_SAMPLES = 100
#: ... and this share of ``min_time_s``.
PRECISION_MIN_TIME_SHARE = 0.2
#: the median is checked each time the sample count has grown by this factor (sorting every call would cost).
_PRECISION_CHECK_GROWTH = 1.25


@dataclass(frozen=True)
class TimingPolicy:
    """How long to measure one cell.

    Attributes:
        warmup_iterations: untimed calls before timing (caches, lazy init, autotuning).
        min_iterations: timed calls at least.
        min_time_s: timed seconds at least (the loop ends when both minimums are met).
        max_iterations: a hard cap so a very fast variant with a long min_time stays bounded.
        warmup_min_time_s: untimed seconds at least (warmup ends when both warmup minimums are met).
        precision: end the timed loop before ``min_time_s`` once the median's 95% confidence interval is
            within this fraction of it either side (None: always run ``min_time_s``).
    """

    warmup_iterations: int = 3
    min_iterations: int = 10
    min_time_s: float = 1.0
    max_iterations: int = 10_000
    warmup_min_time_s: float = 0.0
    precision: float | None = None

    def precise_enough(self, samples_ms: list[float], elapsed_ns: int) -> bool:
        """Whether a precision target lets the loop end now, before ``min_time_s``."""
        if self.precision is None or len(samples_ms) < max(PRECISION_MIN_SAMPLES, self.min_iterations):
            return False
        if elapsed_ns < PRECISION_MIN_TIME_SHARE * self.min_time_s * 1e9:
            return False
        ci = median_ci(np.asarray(samples_ms))
        return ci is not None and ci <= self.precision


@dataclass
class Timing:
    """Raw samples of one cell, in nanoseconds, plus the one-off first call."""

    samples_ns: list[int]
    first_call_ns: int | None = None
    device_samples_ms: list[float] = field(default_factory=list)
    #: each timed call's whole trip, host array in and host array out (only when ``measure`` had the host batch)
    e2e_samples_ns: list[int] = field(default_factory=list)
    wall_ns: int = 0
    #: untimed calls before the timed loop: those made before ``measure`` plus its own warm-up calls.
    warmup_calls: int = 0

    @property
    def host_samples_ms(self) -> list[float]:
        """Synchronised host time per iteration in ms (equal to ``samples_ms`` on CPU runners)."""
        return [s / 1e6 for s in self.samples_ns]

    @property
    def e2e_samples_ms(self) -> list[float]:
        """End-to-end time per iteration in ms (empty unless ``measure`` had the host batch)."""
        return [s / 1e6 for s in self.e2e_samples_ns]

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
    already_warm: int = 0,
    warmed_up: Callable[[], bool] = lambda: False,
    host_batch: Any = None,
) -> Timing:
    """Warm up, then time iterations until ``policy`` is satisfied; returns the raw samples.

    ``already_warm``: untimed calls of ``runner`` on inputs of this shape made just before (they count
    towards ``policy.warmup_iterations``, not towards its minimum warm-up time).
    ``warmed_up``: asked after the warm-up count is met; True ends the warm-up before its minimum time
    (a GPU already at its full clock: ``gpu_clock.gpu_warmed_up``).
    ``host_batch``: the host array ``inputs`` came from; every call (warm-up included) then takes a fresh
    copy of it and brings its outputs back to the host, and ``e2e_samples_ns`` times that whole trip.
    """

    events = runner.cuda_event_pair()

    def call() -> tuple[int, int, int | None]:
        """One call: when it ended, its synchronised host time and, with a host batch, its end-to-end time
        (the device and host samples time the call alone, between the copies)."""
        trip_start = clock() if host_batch is not None else 0
        native = runner.to_native(host_batch) if host_batch is not None else inputs
        t0 = clock()
        if events is not None:
            events[0].record()
        outputs = runner(native)
        if events is not None:
            events[1].record()
        runner.synchronize()
        t1 = clock()
        if host_batch is None:
            return t1, t1 - t0, None
        runner.to_numpy(outputs)
        runner.synchronize()
        end = clock()
        return end, t1 - t0, end - trip_start

    warm_until = clock() + int(policy.warmup_min_time_s * 1e9)
    done = already_warm
    while done < policy.warmup_iterations or (
        clock() < warm_until and done < policy.max_iterations and not warmed_up()
    ):
        call()
        done += 1
    samples: list[int] = []
    device_ms: list[float] = []
    e2e: list[int] = []
    min_ns = int(policy.min_time_s * 1e9)
    start = clock()
    elapsed = 0
    next_check = PRECISION_MIN_SAMPLES
    while len(samples) < policy.max_iterations and (
        len(samples) < policy.min_iterations or elapsed < min_ns
    ):
        if policy.precision is not None and len(samples) >= next_check:
            next_check = int(len(samples) * _PRECISION_CHECK_GROWTH) + 1
            if policy.precise_enough(device_ms or [s / 1e6 for s in samples], elapsed):
                break
        end, host_ns, trip_ns = call()
        samples.append(host_ns)
        if trip_ns is not None:
            e2e.append(trip_ns)
        if events is not None:
            device_ms.append(float(events[0].elapsed_time(events[1])))
        elapsed = end - start
    return Timing(samples_ns=samples, device_samples_ms=device_ms, e2e_samples_ns=e2e, wall_ns=clock() - start,
                  warmup_calls=done)
