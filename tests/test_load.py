"""The busy-machine rule (measure/load.py), driven by fake /proc/stat readings: no real load needed."""

from __future__ import annotations

import os

import pytest

from infertune.measure.load import BUSY_MARGIN_CORES, LoadMeter, between, snapshot

HZ = os.sysconf("SC_CLK_TCK")


def _stat(user: float, idle: float, steal: float = 0.0, cores: int = 2) -> str:
    """A /proc/stat whose aggregate line holds these many seconds of user, idle and steal time."""
    ticks = [user * HZ, 0, 0, idle * HZ, 0, 0, 0, steal * HZ, 0, 0]
    per_cpu = "\n".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0" for i in range(cores))
    return "cpu  " + " ".join(str(int(t)) for t in ticks) + "\n" + per_cpu + "\nintr 0\n"


def _snap(user: float, idle: float, own: float, steal: float = 0.0, cores: int = 2):
    return snapshot(lambda: _stat(user, idle, steal, cores), lambda: own, lambda: "0.50 0.40 0.30 1/100 1")


def test_quiet_machine_is_not_busy() -> None:
    # 10 s on 2 cores = 20 core-seconds; this process used 19.9 of the 20 busy ones
    load = between(_snap(0, 0, own=0), _snap(20, 0, own=19.9), threads=2)
    assert load is not None and not load.busy
    assert load.other_cpu_cores == pytest.approx(0.01, abs=1e-3)


def test_other_work_on_our_cores_is_busy() -> None:
    # others took 5 of 20 core-seconds: half a core, on a machine whose two cores the cell needs
    load = between(_snap(0, 0, own=0), _snap(19, 1, own=14), threads=2)
    assert load is not None and load.busy
    assert load.other_cpu_cores == pytest.approx(0.5)
    assert "0.50 cores" in load.describe()


def test_other_work_on_free_cores_is_not_busy() -> None:
    # 16 cores, the cell uses 2: 10 other cores busy still leave it its own
    load = between(_snap(0, 0, own=0, cores=16), _snap(120, 40, own=20, cores=16), threads=2)
    assert load is not None and not load.busy
    assert load.other_cpu_cores == pytest.approx(10.0)


def test_margin_is_the_boundary() -> None:
    below = between(_snap(0, 0, own=0), _snap(10, 10, own=10 - 10 * (BUSY_MARGIN_CORES - 0.05)), threads=2)
    above = between(_snap(0, 0, own=0), _snap(10, 10, own=10 - 10 * (BUSY_MARGIN_CORES + 0.05)), threads=2)
    assert below is not None and above is not None
    assert not below.busy and above.busy


def test_steal_alone_makes_it_busy() -> None:
    load = between(_snap(0, 0, own=0), _snap(18, 0, own=18, steal=2), threads=2)
    assert load is not None and load.busy
    assert load.steal_fraction == pytest.approx(0.1)
    assert "stole 10%" in load.describe()


def test_unreadable_proc_records_nothing() -> None:
    def fail() -> str:
        raise OSError("no /proc here")

    assert snapshot(fail) is None
    assert between(None, _snap(1, 1, own=0), threads=1) is None


def test_real_meter_reads_this_machine() -> None:
    meter = LoadMeter()
    meter.start()
    sum(i * i for i in range(200_000))  # some work of our own, so the interval is not empty
    load = meter.stop(threads=1)
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat on this system: the meter records nothing by design")
    assert load is None or load.other_cpu_cores >= 0.0


# ---------------------------------------------------------------- speedups carry the flag


def _row(variant: str, p50: float, **fields):
    from infertune.results import ResultRow

    backend, precision = variant.split(":")
    return ResultRow("m", variant, backend, precision, "", 1, "cpu", latency_p50_ms=p50,
                     **{"iqr_over_median": 0.02, **fields})


def test_speedups_of_a_quiet_run_carry_no_flag() -> None:
    from infertune.results import fill_speedups

    rows = [_row("pytorch:fp32", 60.0, machine_busy=False, recheck_p50_ms=61.0), _row("openvino:int8", 10.0,
                                                                                      machine_busy=False)]
    fill_speedups(rows)
    assert rows[1].speedup_vs_pytorch == pytest.approx(6.0)
    assert rows[0].speedup_flag == rows[1].speedup_flag == ""


def test_a_busy_variant_or_baseline_flags_the_speedup_in_words() -> None:
    from infertune.results import fill_speedups

    rows = [_row("pytorch:fp32", 2600.0, machine_busy=True), _row("openvino:int8", 8.3, machine_busy=False),
            _row("onnxruntime:int8", 12.0, machine_busy=True)]
    fill_speedups(rows)
    assert rows[1].speedup_flag == "the machine was busy while the baseline was timed"
    assert rows[2].speedup_flag.startswith("the machine was busy while this variant was timed")


def test_a_baseline_that_drifted_beyond_its_noise_flags_every_speedup() -> None:
    from infertune.measure.load import DRIFT_MIN
    from infertune.results import fill_speedups

    drifted = [_row("pytorch:fp32", 60.0, recheck_p50_ms=60.0 * 1.3), _row("openvino:int8", 10.0)]
    fill_speedups(drifted)
    assert drifted[1].speedup_flag == "the baseline drifted +30% between the start and the end of the run"
    within = [_row("pytorch:fp32", 60.0, recheck_p50_ms=60.0 * (1 + DRIFT_MIN / 2)), _row("openvino:int8", 10.0)]
    fill_speedups(within)
    assert within[1].speedup_flag == ""
    noisy = [_row("pytorch:fp32", 60.0, recheck_p50_ms=60.0 * 1.15, iqr_over_median=0.1), _row("openvino:int8", 10.0)]
    fill_speedups(noisy)  # a baseline whose own spread is 10% may move 20% unflagged
    assert noisy[1].speedup_flag == ""


def test_the_table_says_so_when_speedups_are_flagged() -> None:
    import io

    from rich.console import Console

    from infertune.report.table import seed_table
    from infertune.results import fill_speedups

    rows = [_row("pytorch:fp32", 2600.0, machine_busy=True, status="ok"), _row("openvino:int8", 8.3)]
    fill_speedups(rows)
    out = io.StringIO()
    seed_table(rows, Console(file=out, width=120, force_terminal=False))
    text = out.getvalue()
    assert "⚠" in text.split("openvino:int8", 1)[1].splitlines()[0]  # on the variant's own line
    text = " ".join(text.split())  # notes wrap at the console's width
    assert "⚠ speedups not to be trusted: the machine was busy while this variant was timed (pytorch:fp32)" in text
    assert "the machine was busy while the baseline was timed (openvino:int8)" in text
    assert "vs PyTorch ⚠ see below" in text


def test_a_run_records_the_load_and_rechecks_the_baseline(tmp_path) -> None:
    from infertune.config import validate_config
    from infertune.pipeline import run

    cfg = validate_config({
        "model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False},
        # a timed loop longer than 10 of /proc/stat's ticks (100 ms), so the load over it can be judged
        "benchmark": {"batch_sizes": [1], "warmup_iterations": 1, "benchmark_iterations": 3, "min_time_s": 0.2,
                      "isolation": "none", "device": "cpu"},
        "optimization": {"variants": ["pytorch:fp32", "null:fp32"]},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })
    rows = run(cfg, log=lambda m: None).rows
    base = rows[0]
    assert base.variant == "pytorch:fp32" and base.recheck_p50_ms is not None and base.recheck_p50_ms > 0
    if os.path.exists("/proc/stat"):
        assert isinstance(base.machine_busy, bool) and base.other_cpu_cores is not None
        assert base.load_avg_1m_before is not None and base.load_avg_1m_after is not None
    off = cfg.model_copy(update={"benchmark": cfg.benchmark.model_copy(update={"baseline_check": False})})
    assert run(off, log=lambda m: None).rows[0].recheck_p50_ms is None


def test_the_end_of_run_check_is_brief_and_never_longer_than_the_run_asks() -> None:
    from infertune.measure.load import (
        RECHECK_MIN_ITERATIONS,
        RECHECK_MIN_TIME_S,
        recheck_policy,
    )
    from infertune.measure.timer import TimingPolicy

    run_policy = TimingPolicy(warmup_iterations=3, min_iterations=10, min_time_s=1.0, warmup_min_time_s=0.5)
    brief = recheck_policy(run_policy)
    assert brief.min_iterations == RECHECK_MIN_ITERATIONS < run_policy.min_iterations
    assert brief.min_time_s == RECHECK_MIN_TIME_S < run_policy.min_time_s
    assert brief.warmup_iterations == 1 and brief.warmup_min_time_s == 0.5  # a GPU still clocks up first
    short = TimingPolicy(warmup_iterations=0, min_iterations=3, min_time_s=0.1)
    assert recheck_policy(short) == short  # a run that asks for less gets no more


def test_the_end_of_run_check_does_not_verify_again(tmp_path, monkeypatch) -> None:
    """The recheck job prepares and times the baseline only: its outputs were verified earlier in the run."""
    import infertune.reference as reference_module
    from infertune.config import validate_config
    from infertune.pipeline import run

    loaded: list[int] = []
    original = reference_module.load_reference  # run_variant imports it when it runs: the patch applies

    def counting(path, batch):  # type: ignore[no-untyped-def]
        loaded.append(batch)
        return original(path, batch)

    monkeypatch.setattr(reference_module, "load_reference", counting)
    cfg = validate_config({
        "model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False},
        "benchmark": {"batch_sizes": [1, 2], "warmup_iterations": 1, "benchmark_iterations": 3, "min_time_s": 0.05,
                      "isolation": "none", "device": "cpu"},
        "optimization": {"variants": ["pytorch:fp32"]},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })
    rows = run(cfg, log=lambda m: None).rows
    assert all(r.recheck_p50_ms for r in rows)  # the check ran at both batch sizes...
    assert sorted(loaded) == [1, 2]  # ...but only the run's own cells loaded the reference to verify


def test_a_gpu_cell_leaves_free_every_core_it_did_not_use() -> None:
    # 16 cores, 10 s: the GPU cell's process used 1 core (its launching thread), others used 3 cores
    before, after = _snap(0, 0, own=0, cores=16), _snap(40, 120, own=10, cores=16)
    assert between(before, after, threads=16).busy  # judged by its thread count, the cell had no free core
    gpu = between(before, after, threads=None)
    assert not gpu.busy and gpu.other_cpu_cores == pytest.approx(3.0)
    # others took 15.4 of the 16 cores and the cell got 0.6 of its one: its own core was contended
    assert between(_snap(0, 0, own=0, cores=16), _snap(160, 0, own=6, cores=16), threads=None).busy


def test_a_window_shorter_than_ten_clock_ticks_gets_no_verdict() -> None:
    # 50 ms of a 2-core machine with one tick of someone else's work: /proc/stat cannot tell 0.2 cores from 0
    short = between(_snap(0, 0, own=0), _snap(0.06, 0.04, own=0.05), threads=2)
    assert short is None
    assert between(_snap(0, 0, own=0), _snap(0.6, 0.4, own=0.5), threads=2) is not None


def _handed_jobs(tmp_path, monkeypatch, variants=("pytorch:fp32", "null:fp32"), **benchmark) -> tuple[list[list[str]], list]:
    """The job ids of each call to the (one-at-a-time) executor in a run of ``variants``, and the run's rows."""
    from infertune.config import validate_config
    from infertune.executors.inprocess import InProcessExecutor
    from infertune.pipeline import run

    handed: list[list[str]] = []
    original = InProcessExecutor.run

    def recording(self, jobs):  # type: ignore[no-untyped-def]
        handed.append([job.job_id for job in jobs])
        return original(self, jobs)

    monkeypatch.setattr(InProcessExecutor, "run", recording)
    cfg = validate_config({
        "model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False},
        "benchmark": {"batch_sizes": [1], "warmup_iterations": 1, "benchmark_iterations": 3, "min_time_s": 0.0,
                      "isolation": "none", "device": "cpu", **benchmark},
        "optimization": {"variants": list(variants)},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })
    return handed, run(cfg, log=lambda m: None).rows


def test_the_baseline_recheck_comes_after_the_last_round_of_the_ladder(tmp_path, monkeypatch) -> None:
    """One job at a time, it is handed over after the last round's jobs (never as a row of its own)."""
    handed, rows = _handed_jobs(tmp_path, monkeypatch, rounds=2)
    reference, first_round, last_round, recheck = handed
    assert not any(job.endswith("@recheck") for job in reference + first_round + last_round)
    assert recheck == ["pytorch:fp32@recheck"] and len(last_round) == len(first_round)
    assert len(rows) == 2 and rows[0].recheck_p50_ms is not None


def test_executors_say_how_many_jobs_they_start_at_once() -> None:
    from infertune.executors.base import ExecutorSettings, make_executor

    assert make_executor("process", ExecutorSettings(concurrent_jobs=3)).jobs_at_once == 3
    assert make_executor("none", ExecutorSettings(concurrent_jobs=3)).jobs_at_once == 1
    assert make_executor("ray", ExecutorSettings(concurrent_jobs=3)).jobs_at_once is None  # the cluster decides
