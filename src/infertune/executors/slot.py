"""The measurement slot: several jobs prepare at once on one machine, and one measures at a time.

Jobs that share a machine (the default executor with ``benchmark.concurrent_jobs`` above 1, or Ray's CPU
jobs on one node) share its measurement slot: a reader-writer lock on a file in the machine's temp
folder. A job holds it shared while it loads, converts, compiles, calibrates and verifies, and exclusive
while it measures (warm-up, timed loop, end-to-end loop): preparations overlap each other, but a
measurement overlaps nothing else of any infertune job on that machine, of any run or user. ``flock``
locks die with their process, so a crashed worker never leaves the slot taken. Rows record when they held
it (``measure_start_unix_s``, ``measure_end_unix_s``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infertune.executors.base import (
    WAIT_STAGE,
    Emit,
    Event,
    Job,
    Loss,
    RowEvent,
    StageEvent,
)

MEASURE_STAGE = "measure"
#: the machine's slot file; every infertune job on the machine, of any run or user, shares it.
SLOT_FILE = "infertune-measurement-slot.lock"
#: ``keep_until_exit`` moves the locks just below this descriptor number (or the process's limit, if lower).
_HIGHEST_FD = 4096


def machine_slot_path() -> str:
    """This machine's slot file (in its temp folder: shared by every run and user here)."""
    return os.path.join(tempfile.gettempdir(), SLOT_FILE)


class MeasurementSlot:
    """A reader-writer lock shared by every process on one machine through two files (``flock``).

    ``share()`` while preparing, ``take()`` to measure, ``give_back()`` after. A waiting ``take`` holds
    the turnstile file, so preparations that start later wait behind it instead of starving it.
    Locks belong to the open files: a process that dies releases them with its descriptors.
    """

    def __init__(self, path: str) -> None:
        # read-only is enough for flock, and lets another user's run share a slot file it did not create
        self._main = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        self._turn = os.open(f"{path}.turn", os.O_RDONLY | os.O_CREAT, 0o644)

    def share(self) -> None:
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def take(self) -> None:
        fcntl.flock(self._main, fcntl.LOCK_UN)
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self._main, fcntl.LOCK_UN)

    def share_if_nobody_measures(self) -> bool:
        """Share the slot at once, unless somebody measures now; a measurement waiting for its turn does not
        stop this (nor wait behind it: the turnstile is for preparations that may take seconds)."""
        try:
            fcntl.flock(self._main, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def give_back(self) -> None:
        self.release()
        self.share()

    def keep_until_exit(self) -> None:
        """Keep holding the slot as it is until this process has exited, teardown included.

        A worker's exit frees its memory and closes its GPU driver files (which tears down the CUDA context):
        seconds of CPU that would otherwise run beside the next job's measurement (seen on the H200 as
        ``machine_busy`` rows right after a job ended). The kernel frees a dying process's memory first and
        then closes its descriptors in ascending order, so the lock moves to the highest descriptor this
        process may have, released after everything else.
        """
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        top = _HIGHEST_FD if soft == resource.RLIM_INFINITY else min(soft, _HIGHEST_FD)
        held = self._main  # the turnstile is only ever held for a moment
        self._main = fcntl.fcntl(held, fcntl.F_DUPFD_CLOEXEC, max(held + 1, top - 1))
        os.close(held)

    def close(self) -> None:
        os.close(self._main)
        os.close(self._turn)


class Gate:
    """A lock the parent holds while the run's other jobs go on; a job behind it (``SlottedJob.gate_path``)
    prepares as usual, and before its first measurement waits, out of the slot, until the parent opens it.

    So the end-of-run check of the baseline prepares beside the last jobs and still measures after all of
    them, without a phase of its own at the end (``Executor.run_then``). A dead parent opens it too.
    """

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="infertune-gate-", suffix=".lock")
        self._fd: int | None = fd
        fcntl.flock(fd, fcntl.LOCK_EX)

    def open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with the descriptor
            self._fd = None

    def close(self) -> None:
        self.open()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    @staticmethod
    def wait(path: str) -> None:
        """Block until the gate at ``path`` is open (or gone: the run ended)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class SlottedJob(Job):
    """A job as it runs beside others: inside the machine's measurement slot, and (Ray's GPU jobs) on its GPU's
    share of the cores."""

    job: Job
    #: the slot file; empty for a Ray GPU job (its GPU is its own, and its cores too).
    slot_path: str = ""
    #: the cores the worker may use; empty: all of the node's.
    cores: tuple[int, ...] = ()
    #: a ``Gate`` the job waits behind before its first measurement; empty: none.
    gate_path: str = ""
    #: the cores the worker starts on, leaving the others to the compiling jobs (``CompilersFirst``); it gets all
    #: of its cores back once they have prepared, and before each measurement. Empty: it prepares on all of them.
    prepare_cores: tuple[int, ...] = ()

    job_id = property(lambda self: self.job.job_id)  # type: ignore[assignment]
    device = property(lambda self: self.job.device)  # type: ignore[assignment]
    threads = property(lambda self: self.job.threads)  # type: ignore[assignment]
    batches = property(lambda self: self.job.batches)  # type: ignore[assignment]
    memory_limit_mb = property(lambda self: self.job.memory_limit_mb)  # type: ignore[assignment]
    modules = property(lambda self: self.job.modules)  # type: ignore[assignment]
    unit = property(lambda self: self.job.unit)  # type: ignore[assignment]
    whole_job_timeout = property(lambda self: self.job.whole_job_timeout)  # type: ignore[assignment]
    label = property(lambda self: self.job.label)  # type: ignore[assignment]

    def libraries(self) -> tuple[str, ...]:
        return self.job.libraries()

    def run(self, emit: Emit) -> None:
        if self.cores:
            os.sched_setaffinity(0, self.cores)  # before any runtime starts its thread pool
        widen = None
        if self.prepare_cores:
            every_core = sorted(os.sched_getaffinity(0))
            widen = functools.partial(set_process_affinity, every_core)
            os.sched_setaffinity(0, self.prepare_cores)
        slot = MeasurementSlot(self.slot_path) if self.slot_path else None
        if slot is not None:
            slot.share()
        try:
            self.job.run(SlotKeeper(emit, slot, self.gate_path, widen))
        finally:
            if slot is not None:  # the worker exits next (executors.process): its teardown stays in the slot
                slot.keep_until_exit()

    def lost(self, loss: Loss) -> list[Event]:
        return self.job.lost(loss)


def set_process_affinity(cores: Sequence[int], pid: int | str = "self") -> None:
    """Move every thread of process ``pid`` to ``cores`` (a runtime's pools and the GPU driver's threads
    started meanwhile would otherwise keep the cores the process had when they started)."""
    with contextlib.suppress(OSError):  # a process that ended meanwhile
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), cores)


class SlotKeeper:
    """The worker's ``emit``, taking the slot before a ``measure`` stage and giving it back at the next
    stage or row; the row records the window in which the slot was held. A worker that prepared on a share of
    the cores (``prepare_cores``) measures on all of them: ``widen`` is called before each measurement."""

    def __init__(self, emit: Emit, slot: MeasurementSlot | None, gate_path: str = "",
                 widen: Callable[[], None] | None = None) -> None:
        self.emit = emit
        self.slot = slot
        self.since: float | None = None
        self.gate_path = gate_path
        self.widen = widen

    def __call__(self, event: Event) -> None:
        if self.since is not None and isinstance(event, (StageEvent, RowEvent)):
            until = time.time()
            self.since, since = None, self.since
            if isinstance(event, RowEvent):  # sent before sharing again, which waits while another job measures
                event.row.update(measure_start_unix_s=since, measure_end_unix_s=until)
                if self.slot is not None:
                    self.slot.release()
                self.emit(event)
                if self.slot is not None:
                    self.slot.share()
                return
            if self.slot is not None:
                self.slot.give_back()
        if isinstance(event, StageEvent) and event.stage == MEASURE_STAGE:
            if self.slot is not None:
                self.emit(StageEvent(event.job_id, event.batch, WAIT_STAGE))
                if self.gate_path:  # out of the slot while waiting: the jobs ahead must measure
                    self.slot.release()
                    Gate.wait(self.gate_path)
                    self.gate_path = ""
                self.slot.take()
            if self.widen is not None:
                self.widen()
            self.since = time.time()
        self.emit(event)


def compiles(job: Job) -> bool:
    """Whether ``job`` is a compiling rung's (``Backend.compiles``): its preparation is the run's longest."""
    from infertune.backends.registry import get_backend

    variant = getattr(job, "variant", None)
    return variant is not None and get_backend(variant.backend).compiles


def longest_first(jobs: Sequence[Job]) -> list[Job]:
    """The jobs in the order to start them when several run at once: the compiling rungs first, the rest
    (other variants, other kinds of job) in their order. Started last, a 60 s compile ran alone at the end
    on 2 GPUs and bounded the run (docs/results/ray.md)."""
    return sorted(jobs, key=lambda job: not compiles(job))


class CompilersFirst:
    """The compiling jobs prepare first. Every job of the default GPU run starts at once, and measuring waits
    until all have prepared, so the compiling jobs (one busy thread each, the longest preparations) bound that
    phase; sharing every core fairly with two dozen eager jobs doubled their time (docs/measurement.md, "Jobs
    side by side"). So while compiling jobs prepare, the others prepare on the cores they leave: one core per
    compiling job still preparing, the others keeping at least a quarter of them. As the compiling jobs finish
    preparing, the parent moves the others' threads onto the cores freed, holding the measurement slot shared
    while it does, so never during a measurement (and never waiting for one: it tries again at the next event);
    a worker takes every core back itself before each of its measurements.
    """

    def __init__(self, jobs: Sequence[Job], cores: Sequence[int], slot_path: str) -> None:
        self.slot_path = slot_path
        self.cores = tuple(sorted(cores))
        compiling = {job.job_id for job in jobs if compiles(job)}
        mixed = 0 < len(compiling) < len(jobs) and len(self.cores) > 1
        self.preparing = compiling if mixed else set()
        self.spare = self._spare()
        self.moved = self.spare  # the cores the narrowed workers are on
        self.narrowed: dict[str, int] = {}  # job id -> the pid of its worker, started on the spare cores

    def _spare(self) -> tuple[int, ...]:
        """The cores the other jobs prepare on now (empty: all of them)."""
        if not self.preparing:
            return ()
        keep = max(len(self.cores) - len(self.preparing), len(self.cores) // 4, 1)
        return self.cores[-keep:]

    def prepare_cores(self, job: Job) -> tuple[int, ...]:
        """The cores ``job``'s worker starts on (empty: all); call ``started`` with its pid."""
        return () if compiles(job) else self.spare

    def started(self, job: Job, pid: int) -> None:
        if self.prepare_cores(job):
            self.narrowed[job.job_id] = pid

    def observe(self, job_id: str, event: Event | None) -> None:
        """``job_id``'s worker sent ``event`` (None: it ended). A compiling job waiting to measure, or with a row,
        is done preparing: its core goes to the others (now, or at a later event if somebody measures now)."""
        if job_id in self.preparing and (event is None or isinstance(event, RowEvent) or
                                         (isinstance(event, StageEvent) and event.stage == WAIT_STAGE)):
            self.preparing.discard(job_id)
            self.spare = self._spare()
        elif event is None:
            self.narrowed.pop(job_id, None)
        if self.narrowed and self.spare != self.moved:
            self._move()

    def _move(self) -> None:
        slot = MeasurementSlot(self.slot_path)
        try:
            if not slot.share_if_nobody_measures():
                return
            for pid in self.narrowed.values():
                set_process_affinity(self.spare or self.cores, pid)
            self.moved = self.spare
            if not self.spare:
                self.narrowed.clear()
        finally:
            slot.close()

