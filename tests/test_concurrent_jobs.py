"""The default executor with ``benchmark.concurrent_jobs`` above 1: jobs prepare side by side and measure in
turns (the machine's measurement slot), a crash or a hang beside them is still a row, and the workers' logs
all reach the run's log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from infertune.config import validate_config
from infertune.executors.base import WAIT_STAGE, RowEvent, StageEvent
from infertune.executors.slot import CompilersFirst
from infertune.journal import read_journal
from infertune.pipeline import run
from infertune.plan import concurrent_jobs
from infertune.results import ResultRow, read_rows
from infertune.variants import Variant, parse_variant

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False}
CLI = "import sys, tests.fault_backends; from infertune.cli import main; sys.exit(main(sys.argv[1:]))"


def _config(tmp_path: Path, variants: list[str], **bench) -> dict:
    return {
        "model": TINY,
        "benchmark": {"batch_sizes": [1, 2], "warmup_iterations": 1, "benchmark_iterations": 2,
                      "min_time_s": 0.3, "device": "cpu", **bench},
        "optimization": {"variants": variants},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    }


def _measure_windows_apart(rows: list[ResultRow]) -> None:
    windows = sorted((r.measure_start_unix_s, r.measure_end_unix_s, r.variant, r.batch_size) for r in rows)
    assert all(start is not None and end is not None and start <= end for start, end, *_ in windows), windows
    for (_, end, *first), (start, _, *second) in pairwise(windows):
        assert end <= start, f"{first} and {second} were measured at the same time"


def _interval(markers: Path, name: str) -> tuple[float, float]:
    start, end = (markers / name).read_text().split()
    return float(start), float(end)


def test_jobs_prepare_side_by_side_and_measure_in_turns(tmp_path, fault_backends):
    variants = ["pytorch:fp32", "slow_prepare:fp32:a", "slow_prepare:fp32:b", "fault_segfault:fp32"]
    config = _config(tmp_path, variants, concurrent_jobs=3, job_per_cell=False)
    result = run(validate_config(config), log=lambda m: None)

    rows = {(r.variant, r.batch_size): r for r in result.rows}
    assert len(rows) == 8
    measured = [r for r in result.rows if r.variant != "fault_segfault:fp32"]
    assert all(r.status == "ok" and r.latency_p50_ms for r in measured), [(r.variant, r.error) for r in measured]
    _measure_windows_apart(measured)
    crash = rows[("fault_segfault:fp32", 1)]
    assert crash.status == "crashed" and "killed by SIGSEGV" in crash.error
    assert rows[("fault_segfault:fp32", 2)].error == "not run: the worker crashed on batch 1"
    # the two slow preparations of batch 1 ran at the same time
    (a_start, a_end), (b_start, b_end) = (_interval(fault_backends, f"prepare.{v}.b1") for v in ("a", "b"))
    assert a_start < b_end and b_start < a_end, "the preparations took turns instead of overlapping"
    log = result.log_path.read_text()
    assert all(f"=== {v} (pid" in log for v in variants)  # every worker's own log reached the run's
    assert not list(result.log_path.parent.glob("*.part"))
    assert len(read_journal(result.journal_path)) == 8


def test_side_by_side_each_cell_has_a_worker_of_its_own(tmp_path, fault_backends):
    """The default with several jobs at once: a variant's batch sizes prepare at the same time, in workers of
    their own, and a crash at one batch size takes nothing else with it."""
    variants = ["slow_prepare:fp32:a", "fault_segfault:fp32", "pytorch:fp32"]
    result = run(validate_config(_config(tmp_path, variants, concurrent_jobs=4)), log=lambda m: None)

    rows = {(r.variant, r.batch_size): r for r in result.rows}
    assert len(rows) == 6
    measured = [r for r in result.rows if r.variant != "fault_segfault:fp32"]
    assert all(r.status == "ok" and r.latency_p50_ms for r in measured), [(r.variant, r.error) for r in measured]
    _measure_windows_apart(measured)
    for batch in (1, 2):
        crash = rows[("fault_segfault:fp32", batch)]
        assert crash.status == "crashed" and "killed by SIGSEGV" in crash.error, crash.error
    (b1_start, b1_end), (b2_start, b2_end) = (_interval(fault_backends, f"prepare.a.b{b}") for b in (1, 2))
    assert b1_start < b2_end and b2_start < b1_end, "a variant's batch sizes were prepared in turn"
    assert result.log_path.read_text().count("=== slow_prepare:fp32:a (pid") == 2
    assert len(read_journal(result.journal_path)) == 6


def test_side_by_side_the_baseline_recheck_prepares_beside_the_ladder_and_measures_after_it(tmp_path, fault_backends,
                                                                                            monkeypatch):
    from infertune.executors.process import ProcessExecutor

    events: list = []
    original = ProcessExecutor.run_then

    def recording(self, jobs, last):  # type: ignore[no-untyped-def]
        for event in original(self, jobs, last):
            events.append(event)
            yield event

    monkeypatch.setattr(ProcessExecutor, "run_then", recording)
    config = _config(tmp_path, ["pytorch:fp32", "slow_prepare:fp32:a"], concurrent_jobs=8)
    result = run(validate_config(config), log=lambda m: None)

    assert all(r.status == "ok" and r.recheck_p50_ms for r in result.rows if r.variant == "pytorch:fp32")
    rows = [e for e in events if isinstance(e, RowEvent)]
    ladder = [e.row for e in rows if not e.job_id.endswith("@recheck")]
    rechecks = [e.row for e in rows if e.job_id.endswith("@recheck")]
    assert len(ladder) == 4 and len(rechecks) == 2
    assert min(r.measure_start_unix_s for r in rechecks) >= max(r.measure_end_unix_s for r in ladder)
    recheck_prepared = next(i for i, e in enumerate(events) if isinstance(e, StageEvent) and e.stage == "prepare"
                            and e.job_id.endswith("@recheck"))
    last_ladder_row = max(i for i, e in enumerate(events) if isinstance(e, RowEvent)
                          and not e.job_id.endswith("@recheck"))
    assert recheck_prepared < last_ladder_row, "the recheck waited for the ladder to prepare"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to leave one to the compiling job")
def test_side_by_side_the_other_jobs_prepare_off_the_compiling_jobs_cores_until_those_have_prepared(tmp_path,
                                                                                                   fault_backends):
    """The compiling jobs bound the preparation phase, so the others start on the cores they leave; once the
    compiling jobs have prepared, every thread of the others (a pool started meanwhile too) gets every core."""
    config = _config(tmp_path, ["cores_probe:fp32", "cores_probe_compiling:fp32"], concurrent_jobs=4,
                     batch_sizes=[1])
    result = run(validate_config(config), log=lambda m: None)

    assert all(r.status == "ok" for r in result.rows), [(r.variant, r.error) for r in result.rows]
    everywhere = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    spare = ",".join(map(str, CompilersFirst(_jobs(1, 1), os.sched_getaffinity(0), "").spare))
    assert spare and spare != everywhere
    probe = (fault_backends / "cores.cores_probe.b1").read_text().splitlines()
    assert probe[:2] == [f"prepare {spare}", f"widened {everywhere} {everywhere}"]
    assert set(probe[2:]) == {f"call {everywhere} {everywhere}"}
    compiling = (fault_backends / "cores.cores_probe_compiling.b1").read_text().splitlines()
    assert compiling[0] == f"prepare {everywhere}" and set(compiling[1:]) == {f"call {everywhere} {everywhere}"}


@dataclass(frozen=True)
class _Job:  # what CompilersFirst reads of a VariantJob
    job_id: str
    variant: Variant


def _jobs(compiling: int, others: int) -> list[_Job]:
    return [_Job(f"c{i}", parse_variant("torch_compile:fp32")) for i in range(compiling)] + \
        [_Job(f"o{i}", parse_variant("pytorch:fp32")) for i in range(others)]


def test_the_others_leave_a_core_to_each_compiling_job_still_preparing_and_keep_a_quarter_of_them(tmp_path):
    cores = range(16)
    first = CompilersFirst(_jobs(9, 27), cores, str(tmp_path / "slot"))
    assert first.prepare_cores(_jobs(9, 27)[-1]) == tuple(range(9, 16)) and first.prepare_cores(_jobs(1, 0)[0]) == ()
    first.observe("c0", StageEvent("c0", 1, WAIT_STAGE))  # prepared: its core goes to the others
    first.observe("c1", RowEvent("c1", ResultRow(model="m", variant="v", backend="b", precision="p", options="",
                                                 batch_size=1, device="cuda")))  # failed in preparation
    first.observe("c2", None)  # crashed
    first.observe("c3", StageEvent("c3", 1, "verify"))  # still preparing
    assert first.spare == tuple(range(6, 16))
    for job in ("c3", "c4", "c5", "c6", "c7", "c8"):
        first.observe(job, None)
    assert first.spare == () and first.prepare_cores(_jobs(0, 1)[0]) == ()
    assert CompilersFirst(_jobs(14, 1), cores, "").spare == (12, 13, 14, 15)  # a quarter at least
    assert CompilersFirst(_jobs(0, 3), cores, "").spare == ()  # nothing compiles: no split
    assert CompilersFirst(_jobs(3, 0), cores, "").spare == ()  # nothing else to move
    assert CompilersFirst(_jobs(1, 1), [5], "").spare == ()  # one core: nowhere to move to


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to leave one to the compiling job")
def test_the_parent_moves_the_others_threads_only_while_nobody_measures_and_never_waits_for_it(tmp_path):
    from infertune.executors.slot import MeasurementSlot

    path = str(tmp_path / "slot")
    cores = sorted(os.sched_getaffinity(0))
    first = CompilersFirst(_jobs(1, 1), cores, path)
    spare = first.spare
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.sched_setaffinity(other.pid, spare)
        first.started(_jobs(0, 1)[0], other.pid)
        measuring = MeasurementSlot(path)
        measuring.share()
        measuring.take()
        started = time.monotonic()
        first.observe("c0", None)  # the compiling job has prepared, but somebody measures: not now...
        assert time.monotonic() - started < 1.0
        assert os.sched_getaffinity(other.pid) == set(spare) != set(cores)
        measuring.release()
        measuring.close()
        first.observe("o0", StageEvent("o0", 1, "verify"))  # ...at the next event
        assert os.sched_getaffinity(other.pid) == set(cores) and first.narrowed == {}
    finally:
        other.kill()
        other.wait()


def test_a_hang_beside_other_jobs_times_out_alone(tmp_path, fault_backends):
    """The hung preparation holds the slot (shared) until its cell times out; the job waiting to measure
    gets its own full cell time once the slot is free, so it still finishes."""
    config = _config(tmp_path, ["fault_hang:fp32", "pytorch:fp32"], concurrent_jobs=2, cell_timeout_s=8)
    result = run(validate_config(config), log=lambda m: None)

    rows = {(r.variant, r.batch_size): r for r in result.rows}
    hang = rows[("fault_hang:fp32", 1)]
    assert hang.status == "timeout" and "benchmark.cell_timeout_s" in hang.error
    assert rows[("pytorch:fp32", 1)].status == rows[("pytorch:fp32", 2)].status == "ok"


def test_one_job_at_a_time_on_the_cpu_and_on_a_gpu_as_many_as_the_machine_holds_unless_configured():
    config = validate_config({"model": TINY})
    assert concurrent_jobs(config, "cpu", cores=64, host_gb=512, gpu_gb=80) == 1
    # three per core, one per 2 GB of the host's memory and of the GPU's, whichever allows fewest
    assert concurrent_jobs(config, "cuda", cores=16, host_gb=128, gpu_gb=143) == 48
    assert concurrent_jobs(config, "cuda", cores=16, host_gb=32, gpu_gb=143) == 16
    assert concurrent_jobs(config, "cuda", cores=16, host_gb=128, gpu_gb=16) == 8
    assert concurrent_jobs(config, "cuda", cores=2, host_gb=128, gpu_gb=143) == 6
    assert concurrent_jobs(config, "cuda", cores=1, host_gb=1, gpu_gb=1) == 1
    config = validate_config({"model": TINY, "benchmark": {"concurrent_jobs": 2}})
    assert (concurrent_jobs(config, "cpu"), concurrent_jobs(config, "cuda")) == (2, 2)


def test_each_of_the_jobs_side_by_side_on_a_gpu_gets_its_share_of_the_cores_unless_configured(monkeypatch):
    from infertune import env
    from infertune.plan import default_threads

    monkeypatch.setattr(env, "host_memory_gb", lambda: 16.0)  # 8 jobs at most
    monkeypatch.setattr(env, "gpu_memory_gb", lambda: 80.0)
    config = validate_config({"model": TINY})
    assert default_threads(config, "cpu", 16) == 16
    assert [default_threads(config, "cuda", n) for n in (2, 16, 128)] == [1, 2, 16]
    config = validate_config({"model": TINY, "benchmark": {"concurrent_jobs": 3}})
    assert default_threads(config, "cuda", 16) == 5 and default_threads(config, "cpu", 16) == 16


def test_gpu_and_host_memory_are_read_without_touching_cuda(monkeypatch):
    import subprocess

    from infertune import env

    env.gpu_memory_gb.cache_clear()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "143771\n", ""))
    assert round(env.gpu_memory_gb(), 1) == 150.8  # MiB
    env.gpu_memory_gb.cache_clear()

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(subprocess, "run", missing)
    assert env.gpu_memory_gb() is None
    env.gpu_memory_gb.cache_clear()
    assert env.host_memory_gb() > 0.5


def test_ctrl_c_stops_every_running_job_and_resume_finishes(tmp_path, fault_backends):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, ["slow_once:fp32", "pytorch:fp32"], concurrent_jobs=2,
                                             job_per_cell=False)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", CLI, "run", "-q", "--config", str(config)], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = fault_backends / "slow_once.1"
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():  # slow_once asleep in its preparation, pytorch:fp32 started beside it
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never got there"
            time.sleep(0.5)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    csv = next((tmp_path / "results").glob("benchmark_results_*.csv"))
    statuses = {(r.variant, r.batch_size): r.status for r in read_rows(csv)}
    assert statuses[("slow_once:fp32", 1)] == "interrupted"
    assert statuses.get(("pytorch:fp32", 1)) == "interrupted"  # it was waiting for the slow job's slot
    worker = int(marker.read_text())
    time.sleep(1)
    assert not Path(f"/proc/{worker}").exists() or "\nState:\tZ" in Path(f"/proc/{worker}/status").read_text()

    proc = subprocess.Popen([sys.executable, "-c", CLI, "run", "-q", "--resume", str(csv.parent)], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert {r.status for r in read_rows(csv)} == {"ok"} and len(read_rows(csv)) == 4


def test_a_job_per_cell_by_default_only_when_jobs_run_side_by_side():
    from types import SimpleNamespace

    from infertune.executors.base import ExecutorSettings, make_executor
    from infertune.pipeline import _job_per_cell

    def plan(setting):  # type: ignore[no-untyped-def]
        return SimpleNamespace(cfg=validate_config({"model": TINY, "benchmark": {"job_per_cell": setting}}))

    side_by_side = make_executor("process", ExecutorSettings(concurrent_jobs=4))
    one_at_a_time = make_executor("process", ExecutorSettings(concurrent_jobs=1))
    cluster = make_executor("ray", ExecutorSettings(concurrent_jobs=4))  # starts what its resources allow
    assert [_job_per_cell(plan(None), e) for e in (side_by_side, one_at_a_time, cluster)] == [True, False, False]
    assert _job_per_cell(plan(False), side_by_side) is False and _job_per_cell(plan(True), one_at_a_time) is True
