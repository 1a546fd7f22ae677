"""The executor contract (executors/base.py), checked on small jobs: every job ends in its terminal events
whatever its worker does, closing the iterator kills what runs, and a new executor is one registered class."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from infertune.config import validate_config
from infertune.executors.base import (
    Emit,
    Event,
    Executor,
    ExecutorSettings,
    Job,
    JobFailedEvent,
    Loss,
    NoticeEvent,
    StageEvent,
    executor_class,
    register_executor,
)
from infertune.results import Status

#: executors that run jobs in other processes: each must keep the whole contract.
ISOLATING = ["process"]


@dataclass(frozen=True)
class ChoreJob(Job):
    """Says hello, writes its pid to ``pid_file``, then does ``action`` (nothing, hang, die) at its second stage."""

    pid_file: str
    action: str = "nothing"
    job_id: str = "chore"
    device: str = "cpu"
    threads: int = 1
    batches: tuple[int, ...] = (1, 2)
    memory_limit_mb: int | None = None
    modules: tuple[str, ...] = ()

    def run(self, emit: Emit) -> None:
        Path(self.pid_file).write_text(str(os.getpid()))
        emit(StageEvent(self.job_id, 1, "hello"))
        emit(NoticeEvent(self.job_id, "hello from the worker"))
        emit(StageEvent(self.job_id, 2, "work"))
        if self.action == "hang":
            time.sleep(3600)
        if self.action == "die":
            os._exit(7)
        emit(JobFailedEvent(self.job_id, Status.FAILED, "work", "finished on purpose"))  # its terminal event

    def lost(self, loss: Loss) -> list[Event]:
        if loss.ended:
            return []
        return [JobFailedEvent(self.job_id, loss.status, f"{loss.stage} of batch {loss.batch}", loss.reason)]


def _gone(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@pytest.mark.parametrize("name", ISOLATING)
def test_a_job_that_finishes_dies_or_hangs_ends_in_exactly_one_terminal_event(name, tmp_path):
    executor = executor_class(name)(ExecutorSettings(cell_timeout_s=5, log_path=str(tmp_path / "run.log")))
    jobs = [ChoreJob(str(tmp_path / f"{action}.pid"), action, job_id=action) for action in ("nothing", "die", "hang")]
    events = list(executor.run(jobs))
    terminal = {e.job_id: e for e in events if isinstance(e, JobFailedEvent)}
    assert len([e for e in events if isinstance(e, JobFailedEvent)]) == 3
    assert terminal["nothing"].reason == "finished on purpose"
    assert terminal["die"].status == Status.CRASHED and "exited with code 7" in terminal["die"].reason
    assert terminal["die"].stage == "work of batch 2"
    assert terminal["hang"].status == Status.TIMEOUT and "ran longer than 5 s" in terminal["hang"].reason
    assert [e.text for e in events if isinstance(e, NoticeEvent)] == ["hello from the worker"] * 3
    assert all(_gone(int((tmp_path / f"{a}.pid").read_text())) for a in ("nothing", "die", "hang"))


@pytest.mark.parametrize("name", ISOLATING)
def test_closing_the_iterator_kills_the_running_worker(name, tmp_path):
    executor = executor_class(name)(ExecutorSettings(cell_timeout_s=600))
    events = executor.run([ChoreJob(str(tmp_path / "hang.pid"), "hang")])
    for event in events:
        if isinstance(event, StageEvent) and event.stage == "work":
            break
    pid = int((tmp_path / "hang.pid").read_text())
    assert not _gone(pid)
    events.close()
    assert _gone(pid)


@register_executor
class ShuffledExecutor(Executor):
    """A test executor in one class: runs the jobs here, then hands on their events interleaved and in
    reverse job order, as a parallel executor might. The run's files must not care."""

    name = "test_shuffled"

    def run(self, jobs: Sequence[Job]) -> Iterator[Event]:
        per_job: list[list[Event]] = []
        for job in jobs:
            per_job.append([])
            job.run(per_job[-1].append)
        per_job.reverse()
        while any(per_job):
            for events in per_job:
                if events:
                    yield events.pop(0)


def test_a_new_executor_is_one_registered_class_and_rows_keep_the_plan_order(tmp_path):
    from infertune.pipeline import run

    cfg = validate_config({
        "model": {"name": "infertune.testing:tiny_convnet", "input_shape": [1, 3, 32, 32], "pretrained": False},
        "benchmark": {"batch_sizes": [1, 2], "warmup_iterations": 0, "benchmark_iterations": 2, "min_time_s": 0,
                      "device": "cpu", "isolation": "test_shuffled"},
        "optimization": {"variants": ["pytorch:fp32", "null:fp32", "torchscript:fp32"]},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })
    result = run(cfg, log=lambda m: None)
    assert [(r.variant, r.batch_size) for r in result.rows] == [
        (v, b) for v in ("pytorch:fp32", "null:fp32", "torchscript:fp32") for b in (1, 2)]
    assert all(r.status == "ok" for r in result.rows)


def test_an_unknown_executor_name_is_a_config_error_naming_the_choices():
    from infertune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"benchmark.isolation: 'threads': use process .* none"):
        validate_config({"benchmark": {"isolation": "threads"}})
    with pytest.raises(ConfigError, match="benchmark.isolation"):
        validate_config({"benchmark": {"isolation": "../etc"}})


@dataclass(frozen=True)
class WhereJob(Job):
    """Reports what its worker inherited: an environment variable, the working directory, sys.path, threads."""

    job_id: str = "where"
    device: str = "cpu"
    threads: int = 3
    batches: tuple[int, ...] = (1,)
    memory_limit_mb: int | None = None
    modules: tuple[str, ...] = ()

    def run(self, emit: Emit) -> None:
        import sys

        seen = (os.environ.get("INFERTUNE_TEST_MARK", ""), os.getcwd(), sys.path[-1], os.environ["OMP_NUM_THREADS"],
                str(os.getppid() != int(os.environ["INFERTUNE_TEST_PARENT"])))
        emit(NoticeEvent(self.job_id, "|".join(seen)))
        emit(JobFailedEvent(self.job_id, Status.FAILED, "report", "done"))

    def lost(self, loss: Loss) -> list[Event]:
        return []


def test_a_worker_inherits_the_parents_environment_folder_and_path_at_its_start(tmp_path, monkeypatch):
    """Workers fork from a server started once (with torch imported); what the parent changed since the
    server started must still reach each new worker, as it would reach a freshly spawned one."""
    import sys

    executor = executor_class("process")(ExecutorSettings(cell_timeout_s=60))
    monkeypatch.setenv("INFERTUNE_TEST_PARENT", str(os.getpid()))
    list(executor.run([WhereJob(job_id="first")]))  # the fork server is running now
    monkeypatch.setenv("INFERTUNE_TEST_MARK", "set after the server started")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path / "plugins")])
    notices = [e.text for e in executor.run([WhereJob()]) if isinstance(e, NoticeEvent)]
    mark, cwd, last_path, threads, forked_from_server = notices[0].split("|")
    assert mark == "set after the server started"
    assert Path(cwd).resolve() == tmp_path.resolve()
    assert last_path == str(tmp_path / "plugins")
    assert threads == "3"  # the job's thread count, whatever the server's environment said
    assert forked_from_server == "True"  # not the parent's own child: forked by the server
