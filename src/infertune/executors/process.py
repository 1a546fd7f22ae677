"""The default executor: each job in a fresh worker process, one at a time.

A worker process per job isolates what one runtime does to the next (thread pools, memory, global
compiler flags), lets a crash (segfault, abort, OOM kill) become rows instead of ending the run,
bounds a hung cell with a timeout, and makes the per-cell peak memory the variant's own. The user's
model runs only in workers, the FP32 reference included. Jobs run one after the other: on one
machine, two timed cells at once would measure each other. With ``benchmark.concurrent_jobs`` above 1
(the default on a GPU, whose run is mostly compiling) several workers run at once inside the machine's
measurement slot (``executors.slot``): they compile, convert and verify side by side, and each measures
alone, with every other job waiting.

The parent blocks in ``multiprocessing.connection.wait`` on the worker's pipe and its process
sentinel with the next deadline as the timeout: it wakes for an event, a death or a deadline, never
to poll. The worker runs in its own process group, so the terminal's Ctrl-C reaches only the parent
(which decides what happens) and a kill takes the worker's own children (compilers) with it. Its
stdout/stderr go to the run's log file so runtime chatter never breaks the progress bar. An optional
memory limit (``benchmark.memory_limit_mb``) is applied in the worker as RLIMIT_DATA.

Workers are forked from a fork server that has imported torch, torchvision and the job code once
(``WORKER_PRELOAD``): each worker is still a fresh process of its own (a crash, a runtime's global
state, its memory stay its own), but it skips the seconds of imports a spawned interpreter pays. The
server has never run a model, touched a GPU or started a thread pool. What a spawned worker would
inherit from the parent at start (``sys.path``, the working directory, the environment, with the
job's thread count) is handed over with the job and set first thing in the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from infertune import interrupts
from infertune.executors.base import (
    Event,
    Executor,
    ExecutorSettings,
    Job,
    JobWatch,
    LastWordsEvent,
    LogEvent,
    import_job_modules,
    register_executor,
)
from infertune.results import Status

#: what the worker sends after the job's last event.
_DONE = "done"
#: imported once by the fork server, so that every worker forked from it starts with them loaded (with
#: the first job's own heavy libraries, ``Job.libraries``: the server starts with a process's first job).
#: ``infertune.config`` brings pydantic, which unpickling a job's model settings would otherwise import in
#: every worker (0.35 s each). Nothing here may initialise CUDA (a forked child could not use it):
#: Inductor's compile_fx does on a GPU machine, so it is not preloaded; transformers and timm do not
#: (checked on the H200, where tests/test_gpu.py runs CUDA cells in forked workers).
WORKER_PRELOAD = ("numpy", "torch", "torchvision", "infertune.config", "infertune.cell", "infertune.reference",
                  "infertune.executors.process")


@register_executor
class ProcessExecutor(Executor):
    """A worker process per job; one job at a time, or with ``concurrent_jobs`` above 1 several, preparing
    side by side and measuring in turns (``executors.slot``), the compiling rungs started first."""

    name = "process"

    @property
    def jobs_at_once(self) -> int:
        return self.settings.concurrent_jobs

    @classmethod
    def get_ready(cls, libraries: Sequence[str]) -> None:
        """Start the fork server now: it imports ``WORKER_PRELOAD`` on another core while the parent plans."""
        from multiprocessing import forkserver

        _set_preload(libraries)
        forkserver.ensure_running()

    def run(self, jobs: Sequence[Job]) -> Iterator[Event]:
        yield from self.run_then(jobs, ())

    def run_then(self, jobs: Sequence[Job], last: Sequence[Job]) -> Iterator[Event]:
        """One at a time, ``last`` simply comes last; side by side, ``last`` starts behind ``jobs`` (as soon as a
        worker is free) and prepares beside them, and the gate (``executors.slot.Gate``) holds back its
        measurements until every job of ``jobs`` has ended: at the end of the run without a phase of its own."""
        from infertune.executors.slot import longest_first

        width = self.settings.concurrent_jobs
        yield from run_workers(jobs if width == 1 else longest_first(jobs), self.settings, width, last=last)


def apply_memory_limit(limit_mb: int) -> None:
    """Cap this process's data memory (heap and private mappings: RLIMIT_DATA) at ``limit_mb``.

    RLIMIT_DATA rather than RLIMIT_AS: runtimes reserve far more address space than they use (torch
    alone maps ~3 GB of address space for ~0.8 GB of data), so an address-space cap fails them at
    import. An allocation past the cap fails (MemoryError, std::bad_alloc) instead of waking the
    kernel's OOM killer. Children (compiler processes) inherit the cap.
    """
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = int(limit_mb) * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _own_process_group() -> None:
    """Leave the terminal's foreground group (Ctrl-C goes to the parent alone) and die with the parent."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    with contextlib.suppress(Exception):  # Linux only: SIGKILL this worker if the parent dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class WorkerStart:
    """What a spawned worker would have inherited from the parent when it started."""

    sys_path: tuple[str, ...]
    cwd: str
    environ: tuple[tuple[str, str], ...]

    @classmethod
    def now(cls, threads: int) -> WorkerStart:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        return cls(tuple(sys.path), os.getcwd(), tuple(env.items()))

    def apply(self) -> None:
        sys.path[:] = self.sys_path
        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.environ)


def _worker_main(job: Job, conn: Any, log_path: str | None, start: WorkerStart) -> None:
    start.apply()
    _own_process_group()
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        print(f"=== {job.label} (pid {os.getpid()}) ===", flush=True)
    if job.memory_limit_mb:
        apply_memory_limit(job.memory_limit_mb)

    def emit(event: Event) -> None:
        if isinstance(event, LogEvent):
            print(f"[{job.label} b{event.batch}] {event.text}", flush=True)
        conn.send(event)  # synchronous: a row sent is a row kept, even if the worker is killed next

    try:
        import_job_modules(job)
        job.run(emit)
        conn.send(_DONE)
    except BaseException as err:  # SystemExit, MemoryError at import...: say why before dying
        with contextlib.suppress(Exception):
            conn.send(LastWordsEvent(job.job_id, f"{type(err).__name__}: {err}"[:300]))
        raise
    finally:
        conn.close()


def run_in_worker(job: Job, settings: ExecutorSettings) -> Iterator[Event]:
    """Run ``job`` in a worker process; yield its events, then whatever it still owes if it died or hung.

    ``crashed``: the worker died (signal or exit code). ``timeout``: a cell ran longer than
    ``cell_timeout_s`` (or the job longer than ``variant_timeout_s``); the worker is killed. Closing
    the generator early (an interrupted run) kills the worker.
    """
    yield from run_workers([job], settings, width=1)


def run_workers(jobs: Sequence[Job], settings: ExecutorSettings, width: int,
                last: Sequence[Job] = ()) -> Iterator[Event]:
    """Run ``jobs`` in worker processes, up to ``width`` at once, in order; yield their events as they come.

    With ``width`` above 1 each job runs inside the machine's measurement slot (``executors.slot``), so
    preparations overlap and measurements take turns, and each worker writes to a log of its own, added
    to the run's log when the job ends (lines of jobs running at once would interleave there). The jobs of
    ``last`` start after ``jobs`` and measure once all of ``jobs`` have ended (side by side, behind a gate).
    """
    from infertune.executors.slot import CompilersFirst, Gate, machine_slot_path

    pending = [*jobs, *last]
    running: list[_Worker] = []
    gate = Gate() if last and width > 1 else None
    first_ids = {job.job_id for job in jobs}
    first = CompilersFirst(pending if width > 1 else (), os.sched_getaffinity(0), machine_slot_path())
    try:
        while pending or running:
            while pending and len(running) < width:
                job = pending.pop(0)
                if width == 1:
                    running.append(_Worker(job, settings))
                    continue
                behind = gate.path if gate is not None and job.job_id not in first_ids else ""
                running.append(_Worker.slotted(job, settings, behind, first.prepare_cores(job)))
                first.started(job, running[-1].proc.pid)
            if gate is not None and not any(w.job_id in first_ids for w in running) \
                    and not any(job.job_id in first_ids for job in pending):
                gate.open()
            handles = [handle for worker in running for handle in worker.handles]
            deadline = min(w.watch.deadline for w in running)  # infinite while every job waits for the slot
            ready = wait(handles, timeout=None if deadline == float("inf") else max(0.0, deadline - time.monotonic()))
            for worker in list(running):
                for event in worker.step(ready):
                    first.observe(worker.job_id, event)
                    yield event
                if worker.done:
                    first.observe(worker.job_id, None)
                    worker.close()
                    running.remove(worker)
    finally:
        for worker in running:  # interrupted: no worker outlives the run
            worker.close()
        if gate is not None:
            gate.close()


class _Worker:
    """One job's worker process as the parent sees it: started at construction, advanced by ``step``."""

    def __init__(self, job: Job, settings: ExecutorSettings, own_log: str | None = None) -> None:
        ctx = _set_preload(job.libraries())
        recv_conn, send_conn = ctx.Pipe(duplex=False)
        self.run_log = settings.log_path
        self.own_log = own_log
        log_path = own_log or self.run_log
        self.log_start = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else 0
        self.job_id = job.job_id
        self.watch = JobWatch(job, dataclasses.replace(settings, log_path=log_path))
        self.conn = recv_conn
        self.done = False
        self._finished = False
        with interrupts.deferred():  # a Ctrl-C mid-start would leave a worker nobody owns
            try:
                self.proc = _start(ctx, job, send_conn, log_path)
            except BaseException:
                recv_conn.close()
                raise

    @classmethod
    def slotted(cls, job: Job, settings: ExecutorSettings, gate_path: str = "",
                prepare_cores: tuple[int, ...] = ()) -> _Worker:
        """A worker for ``job`` inside the machine's measurement slot (behind the gate at ``gate_path``, if any;
        preparing on ``prepare_cores``, if any)."""
        from infertune.executors.slot import SlottedJob, machine_slot_path

        own_log = None
        if settings.log_path:
            fd, own_log = tempfile.mkstemp(prefix=f"{os.path.basename(settings.log_path)}.", suffix=".part",
                                           dir=os.path.dirname(os.path.abspath(settings.log_path)))
            os.close(fd)
        return cls(SlottedJob(job, machine_slot_path(), gate_path=gate_path, prepare_cores=prepare_cores), settings, own_log)

    @property
    def handles(self) -> list[Any]:
        return [self.conn, self.proc.sentinel]

    def step(self, ready: list[Any]) -> list[Event]:
        """The events this worker has for the parent now, given what ``wait`` found ``ready``; when the worker
        ended (done, dead or past its deadline) also what the job still owes, and ``done`` is set."""
        events: list[Event] = []
        failure: tuple[Status, str] | None = None
        while self.conn in ready or self.proc.sentinel in ready:
            try:
                if not self.conn.poll():
                    raise EOFError  # only the sentinel woke us: the worker exited and left nothing unread
                event = self.conn.recv()
            except EOFError:
                self.proc.join(timeout=10)
                failure = (Status.CRASHED, death_reason(self.proc.exitcode, self.watch, self.log_start))
                break
            if event == _DONE:  # anything still owed now is a bug in the job, never a lost cell
                self._finished = True
                failure = (Status.CRASHED, "the worker finished without reporting this")
                break
            self.watch.observe(event)
            if not isinstance(event, LastWordsEvent):
                events.append(event)
            ready = [self.conn] if self.conn.poll() else []
        else:
            if time.monotonic() >= self.watch.deadline:
                kill_worker(self.proc)
                failure = (Status.TIMEOUT, self.watch.timeout_reason())
        if failure is not None:
            self.done = True
            events.extend(self.watch.lost_events(*failure))
        return events

    def close(self) -> None:
        """Reap (or, unfinished, kill) the worker; add its own log to the run's."""
        if self._finished:
            self.proc.join(timeout=10)
        if self.proc.is_alive():  # interrupted, timed out, or stuck after 'done'
            kill_worker(self.proc)
            self.proc.join()
        self.conn.close()
        if self.own_log:
            with contextlib.suppress(OSError):
                if self.run_log:
                    with open(self.own_log, "rb") as part, open(self.run_log, "ab") as log:
                        shutil.copyfileobj(part, log)
                os.unlink(self.own_log)


def _set_preload(libraries: Sequence[str]) -> Any:
    """The fork server's context; the preload takes effect when the server starts (on first use)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*WORKER_PRELOAD, *libraries])
    return ctx


def _start(ctx: Any, job: Job, send_conn: Any, log_path: str | None) -> Any:
    """Start the worker with the parent's path, folder and environment (the job's thread count in it);
    keep only the pipe's reading end."""
    try:
        proc = ctx.Process(target=_worker_main, args=(job, send_conn, log_path, WorkerStart.now(job.threads)),
                           daemon=False)
        proc.start()
    finally:
        send_conn.close()  # the parent keeps only the reading end, so a dead worker reads as EOF
    return proc


def kill_worker(proc: Any) -> None:
    """SIGKILL the worker and everything in its process group (compiler children included)."""
    with contextlib.suppress(OSError):
        if os.getpgid(proc.pid) == proc.pid:  # the worker leads its own group (see _own_process_group)
            os.killpg(proc.pid, signal.SIGKILL)
            return
    with contextlib.suppress(OSError):
        proc.kill()


def death_reason(exitcode: int | None, watch: JobWatch, log_start: int = 0) -> str:
    """'worker process killed by SIGSEGV (Segmentation fault); last log line: ...': what the row says."""
    from infertune.cell import is_out_of_memory

    limit = watch.job.memory_limit_mb
    if exitcode is not None and exitcode < 0:
        try:
            name, detail = signal.Signals(-exitcode).name, signal.strsignal(-exitcode) or ""
        except ValueError:
            name, detail = f"signal {-exitcode}", ""
        if -exitcode == signal.SIGKILL:
            detail += "; often the out-of-memory killer: try smaller batch sizes or set benchmark.memory_limit_mb"
        what = f"killed by {name}" + (f" ({detail})" if detail else "")
    else:
        what = f"exited with code {exitcode}"
    if limit:
        what += f" (its memory limit: {limit} MB, benchmark.memory_limit_mb)"
    fatal = watch.last_words
    tail = f"; it said: {fatal}" if fatal else ""
    out_of_memory = is_out_of_memory(RuntimeError(fatal)) or "failed to map segment" in fatal  # dlopen under a cap
    if limit and fatal and out_of_memory:
        tail += " -- raise benchmark.memory_limit_mb: loading the runtime alone needs more (torch: about 0.8 GB)"
    log_path = watch.settings.log_path
    if not tail and log_path and os.path.exists(log_path):
        with open(log_path, "rb") as f:  # this worker's last words, not our banner
            f.seek(log_start)
            text = f.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("=== ")]
        if lines:
            tail = f"; last log line: {lines[-1][:300]}"
    return f"worker process {what}{tail}"
