"""The timer and the statistics, driven by a fake clock (no sleeping, no wall-clock assertions)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from infertune.backends.base import Runner
from infertune.measure.stats import median_ci, summarize
from infertune.measure.timer import (
    PRECISION_MIN_SAMPLES,
    PRECISION_MIN_TIME_SHARE,
    TimingPolicy,
    measure,
    time_first_call,
)


class CountingRunner(Runner):
    def __init__(self) -> None:
        self.calls = 0
        self.syncs = 0

    def __call__(self, inputs):
        self.calls += 1
        return inputs

    def synchronize(self) -> None:
        self.syncs += 1


def test_loop_stops_at_iteration_count_when_min_time_is_met(fake_clock):
    runner = CountingRunner()
    # every clock read advances 1 s: each iteration "takes" 1 s
    timing = measure(runner, None, TimingPolicy(warmup_iterations=2, min_iterations=5, min_time_s=0.5),
                     clock=fake_clock(1_000_000_000))
    assert len(timing.samples_ns) == 5
    assert runner.calls == 2 + 5
    assert runner.syncs == runner.calls  # synchronised after every call, warmup included
    assert all(s == 1_000_000_000 for s in timing.samples_ns)


def test_loop_runs_past_the_count_until_min_time(fake_clock):
    runner = CountingRunner()
    timing = measure(runner, None, TimingPolicy(0, 3, min_time_s=0.01), clock=fake_clock(1_000_000))
    # 1 ms per clock read, 2 reads per iteration: 10 ms of loop time takes 5 iterations, past the 3 asked
    assert len(timing.samples_ns) == 5
    assert all(s == 1_000_000 for s in timing.samples_ns)


def test_calls_already_made_count_towards_the_warmup_count(fake_clock):
    runner = CountingRunner()
    # the first call and two verification batches were made: one more warm-up call tops up to 3
    timing = measure(runner, None, TimingPolicy(warmup_iterations=3, min_iterations=4, min_time_s=0.0),
                     clock=fake_clock(1), already_warm=2)
    assert runner.calls == 1 + 4
    assert timing.warmup_calls == 3
    # more calls already made than the count asks: no warm-up call at all
    runner = CountingRunner()
    timing = measure(runner, None, TimingPolicy(warmup_iterations=3, min_iterations=4, min_time_s=0.0),
                     clock=fake_clock(1), already_warm=8)
    assert runner.calls == 4 and timing.warmup_calls == 8


def test_calls_already_made_do_not_count_towards_the_warmup_time(fake_clock):
    runner = CountingRunner()
    # 1 ms per clock read; 10 ms of warm-up asked: the loop still warms up for 10 ms after 5 earlier calls
    timing = measure(runner, None, TimingPolicy(warmup_iterations=3, min_iterations=1, min_time_s=0.0,
                                                warmup_min_time_s=0.01), clock=fake_clock(1_000_000), already_warm=5)
    assert runner.calls - 1 >= 3  # 3 clock reads per warm-up call (the loop's, and the call's start and end)
    assert timing.warmup_calls == 5 + runner.calls - 1


def test_max_iterations_bounds_the_loop(fake_clock):
    timing = measure(CountingRunner(), None, TimingPolicy(0, 1, min_time_s=100.0, max_iterations=7),
                     clock=fake_clock(1))
    assert len(timing.samples_ns) == 7


def test_first_call_is_timed_apart(fake_clock):
    runner = CountingRunner()
    assert time_first_call(runner, None, clock=fake_clock(5)) == 5
    assert runner.calls == 1


def test_statistics_match_numpy_on_known_samples():
    samples = [10.0, 11.0, 12.0, 13.0, 100.0]
    s = summarize(samples, batch_size=4)
    assert s.p50_ms == 12.0
    assert s.min_ms == 10.0 and s.max_ms == 100.0
    assert s.mean_ms == pytest.approx(29.2)
    assert s.p99_ms == pytest.approx(np.percentile(samples, 99))
    assert s.throughput_ips == pytest.approx(4 * 1000 / 12.0)
    assert s.cv == pytest.approx(np.std(samples, ddof=1) / np.mean(samples))
    assert s.iqr_over_median == pytest.approx((13 - 11) / 12)
    assert s.noisy is True  # IQR/median = 16.7% > 10%


def test_steady_samples_are_not_noisy():
    s = summarize([10.0, 10.1, 10.2, 9.9, 10.0], 1)
    assert s.noisy is False
    assert s.iterations == 5


@pytest.mark.parametrize(("samples", "batch"), [([], 1), ([1.0], 0)])
def test_statistics_reject_bad_input(samples, batch):
    with pytest.raises(ValueError):
        summarize(samples, batch)


def test_warmup_runs_until_both_its_count_and_its_time(fake_clock):
    runner = CountingRunner()
    # 10 ms per clock read; 0.05 s of warmup needs more than the 1 call counted
    timing = measure(runner, None, TimingPolicy(1, 2, 0.0, warmup_min_time_s=0.05), clock=fake_clock(10_000_000))
    warmup_calls = runner.calls - len(timing.samples_ns)
    assert warmup_calls > 1
    assert warmup_calls <= 6  # stops once the time is met


def test_with_the_host_batch_each_timed_call_is_also_timed_host_to_host(fake_clock):
    """One loop gives both figures from the same calls: the call alone, and the trip with both copies."""

    class DeviceRunner(CountingRunner):
        latency_scope = "device"

        def __init__(self):
            super().__init__()
            self.copies_in = self.copies_out = 0

        def to_native(self, batch):
            self.copies_in += 1
            return ("on-device", batch)

        def __call__(self, inputs):
            assert inputs[0] == "on-device"  # a fresh copy of the host batch, every call
            return super().__call__(inputs)

        def to_numpy(self, outputs):
            self.copies_out += 1
            return np.asarray(outputs[1])

    runner = DeviceRunner()
    # 1 ms per clock read: the call alone spans one read (1 ms), the trip three (copy in, call, copy out)
    timing = measure(runner, None, TimingPolicy(2, 5, 0.0), clock=fake_clock(1_000_000), host_batch=np.ones(2))
    assert len(timing.e2e_samples_ns) == len(timing.samples_ns) == 5
    assert all(e2e > call for e2e, call in zip(timing.e2e_samples_ns, timing.samples_ns, strict=True))
    assert timing.host_samples_ms == [1.0] * 5 and timing.e2e_samples_ms == [3.0] * 5
    assert runner.calls == runner.copies_in == runner.copies_out == 2 + 5  # warm-up calls make the trip too
    without = measure(CountingRunner(), None, TimingPolicy(2, 5, 0.0), clock=fake_clock(1_000_000))
    assert without.e2e_samples_ns == []


def test_a_cell_whose_median_drifts_while_timed_is_noisy():
    """Steady within each half (IQR small) but the second half 5% slower: a rerun could differ as much."""
    steady = [10.0, 10.02, 9.98, 10.01] * 5
    drifting = steady + [x * 1.05 for x in steady]
    assert not summarize(steady * 2, 1).noisy
    s = summarize(drifting, 1)
    assert s.iqr_over_median < 0.10 and s.drift_over_median == pytest.approx(0.05, rel=0.1) and s.noisy


def test_a_steady_cell_ends_once_its_median_is_known_to_the_precision_asked(fake_clock):
    # 1 ms per clock read (2 reads per timed call): every sample is 1 ms, the median's interval is 0
    policy = TimingPolicy(0, 10, min_time_s=1.0, precision=0.005)
    timing = measure(CountingRunner(), None, policy, clock=fake_clock(1_000_000))
    n = len(timing.samples_ns)
    assert PRECISION_MIN_SAMPLES <= n < 400  # without the target: 1 s / 2 ms = 500 calls
    assert timing.wall_ns >= PRECISION_MIN_TIME_SHARE * 1e9  # not before a fifth of min_time_s
    full = measure(CountingRunner(), None, dataclasses.replace(policy, precision=None), clock=fake_clock(1_000_000))
    assert len(full.samples_ns) == 500


def test_a_noisy_cell_still_runs_its_whole_min_time(fake_clock):
    # samples spread 0.5-1.5 ms: after 500 calls the median is known to some +-4%, not +-0.5%
    steps = [int(s) for s in np.random.default_rng(0).uniform(0.5e6, 1.5e6, 997)]
    timing = measure(CountingRunner(), None, TimingPolicy(0, 10, min_time_s=1.0, precision=0.005),
                     clock=fake_clock(steps))
    assert timing.wall_ns >= 1e9


def test_the_median_interval_spans_the_order_statistics_around_it():
    a = np.arange(1.0, 101.0)  # ranks 50 -+ 9.8 -> the 40th and 60th values around a median of 50.5
    assert median_ci(a) == pytest.approx((60 - 40) / 2 / 50.5)
    assert median_ci(np.full(50, 3.0)) == 0.0
    assert median_ci(np.arange(1.0, 6.0)) is None  # 5 samples: the interval is the whole sample
    assert summarize(list(a), 1).p50_ci_over_median == median_ci(a)


def test_the_precision_target_is_half_a_percent_on_a_gpu_and_off_on_the_cpu_unless_configured():
    from infertune.config import validate_config
    from infertune.plan import timing_precision

    tiny = {"name": "resnet18", "pretrained": False}
    config = validate_config({"model": tiny})
    assert (timing_precision(config, "cuda"), timing_precision(config, "cpu")) == (0.005, None)
    config = validate_config({"model": tiny, "benchmark": {"precision_pct": 2}})
    assert (timing_precision(config, "cuda"), timing_precision(config, "cpu")) == (0.02, 0.02)
    config = validate_config({"model": tiny, "benchmark": {"precision_pct": 0}})
    assert timing_precision(config, "cuda") is None


def test_the_warmup_time_ends_early_once_the_gpu_is_known_to_be_at_full_clock(fake_clock):
    policy = TimingPolicy(warmup_iterations=3, min_iterations=1, min_time_s=0.0, warmup_min_time_s=0.5)
    runner = CountingRunner()
    measure(runner, None, policy, clock=fake_clock(1_000_000), warmed_up=lambda: True)
    assert runner.calls == 3 + 1  # the count still holds; the half second does not
    runner = CountingRunner()
    measure(runner, None, policy, clock=fake_clock(1_000_000), warmed_up=lambda: False)
    assert runner.calls > 100  # ~1 ms per call: the whole 0.5 s


class FakeNvml:
    """pynvml's calls that gpu_clock uses, with a scripted SM clock."""

    NVML_CLOCK_SM = 1

    def __init__(self, mhz, max_mhz=1980):
        self.clock, self.max = mhz, max_mhz

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return self.max

    def nvmlDeviceGetClockInfo(self, handle, kind):
        if isinstance(self.clock, Exception):
            raise self.clock
        return self.clock


def test_a_gpu_counts_as_warmed_up_at_95_percent_of_its_max_sm_clock_and_not_when_nvml_fails():
    from infertune.measure.gpu_clock import SmClock

    assert SmClock(FakeNvml(1980), None).at_full_speed()
    assert SmClock(FakeNvml(1890), None).at_full_speed()  # 95.5%
    assert not SmClock(FakeNvml(345), None).at_full_speed()  # an idle H200 seen on 2026-11-28
    assert not SmClock(FakeNvml(RuntimeError("NVML_ERROR_GPU_IS_LOST")), None).at_full_speed()


def test_without_a_gpu_the_clock_is_not_known_and_the_warmup_runs_its_time():
    import torch

    from infertune.measure.gpu_clock import current_gpu_clock, gpu_warmed_up

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/test_gpu.py checks the clock there")
    assert current_gpu_clock() is None and gpu_warmed_up() is False
