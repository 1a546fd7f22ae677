"""Backends that fail on purpose, registered from the tests (never by infertune itself).

Importing this module registers them; a worker process imports it again because the job names the
module its backend lives in. Each fails in ``prepare`` of the batch sizes it is told to (all of them
by default), the way real compilers and runtimes fail: a segfault, an abort, an exit, a hang, an
allocation past the memory limit, an exception. ``slow_once`` sleeps the first time it runs (so a
test can interrupt a run at a known cell) and succeeds when the run is resumed; ``interrupt_second``
sends its own process SIGINT the second time it runs (an in-process run's second round). ``where``
does not fail: it runs as eager PyTorch does and notes the node it ran on (tests/test_ray_per_node.py).
``cores_probe`` (and ``cores_probe_compiling``, a compiling rung to the executors) does not fail either: it
notes which cores its worker's threads may use while it prepares and while it is called
(tests/test_concurrent_jobs.py).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.null import NullRunner
from infertune.backends.registry import register_backend

#: folder where slow_once / interrupt_second leave their "already ran once" markers (set by the test).
MARKER_ENV = "INFERTUNE_TEST_MARKERS"
#: the node's name, set on each node of a test Ray cluster: ``where`` notes it on its rows.
NODE_ENV = "INFERTUNE_TEST_NODE"
CHUNK = 64 << 20


class _Fault(Backend):
    label = "Fault injection (tests)"
    description = "Fails on purpose; registered by the tests only."
    devices = frozenset({"cpu"})
    precisions = frozenset({"fp32"})
    produces_outputs = False

    def version(self) -> str:
        return "0"

    def prepare(self, ctx: PrepareContext) -> Runner:
        self.fail(ctx)
        return NullRunner()

    def fail(self, ctx: PrepareContext) -> None:
        raise NotImplementedError


@register_backend
class WhereBackend(_Fault):
    name = "where"
    produces_outputs = True  # a verified row is where runner notes go

    def prepare(self, ctx: PrepareContext) -> Runner:
        from infertune.backends.registry import get_backend

        runner = get_backend("pytorch").prepare(ctx)
        runner.notes = (*runner.notes, f"ran on {os.environ.get(NODE_ENV, 'a node without a name')}")
        return runner


@register_backend
class SegfaultBackend(_Fault):
    name = "fault_segfault"

    def fail(self, ctx: PrepareContext) -> None:
        ctypes.string_at(0)  # read address 0: SIGSEGV


@register_backend
class AbortBackend(_Fault):
    name = "fault_abort"

    def fail(self, ctx: PrepareContext) -> None:
        os.abort()  # SIGABRT, as a failed C++ assertion does


@register_backend
class ExitBackend(_Fault):
    name = "fault_exit"

    def fail(self, ctx: PrepareContext) -> None:
        sys.exit(3)  # a library that calls exit()


@register_backend
class HangBackend(_Fault):
    name = "fault_hang"

    def fail(self, ctx: PrepareContext) -> None:
        time.sleep(3600)


@register_backend
class MemoryHogBackend(_Fault):
    name = "fault_memory"

    def fail(self, ctx: PrepareContext) -> None:
        import resource

        import numpy as np

        limit, _hard = resource.getrlimit(resource.RLIMIT_DATA)
        if limit == resource.RLIM_INFINITY:
            raise RuntimeError("fault_memory refuses to run without benchmark.memory_limit_mb")
        chunks = []
        for _ in range(limit // CHUNK + 16):  # at most 1 GB past the limit, should it not be enforced
            chunks.append(np.zeros(CHUNK, dtype=np.uint8))  # calloc: address space, not touched pages
        raise RuntimeError(f"allocated {len(chunks) * CHUNK >> 20} MB past a {limit >> 20} MB limit: not enforced")


@register_backend
class KillParentBackend(_Fault):
    """SIGKILLs the process that started its worker: under the Ray executor, the Ray worker running the job
    (as Ray's memory monitor or a lost node would). Never run it under the process executor: that parent is
    the run itself."""

    name = "fault_kill_parent"

    def fail(self, ctx: PrepareContext) -> None:
        os.kill(_job_owner(), signal.SIGKILL)
        time.sleep(30)  # dies with its parent (PR_SET_PDEATHSIG) before this ends


def _job_owner() -> int:
    """The process that asked for this worker: the parent, or the parent's parent when the worker was
    forked by the owner's fork server (``executors.process``), which exits when its owner dies."""
    parent = os.getppid()
    cmdline = Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ")
    if b"multiprocessing.forkserver" in cmdline:
        return int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return parent


@register_backend
class RaiseBackend(_Fault):
    name = "fault_raise"

    def fail(self, ctx: PrepareContext) -> None:
        raise RuntimeError("deliberate failure in prepare")


def _count_run(name: str) -> int:
    """How many times ``name`` has run in this test, this time included (marker files ``<name>.<n>``
    record each run with the pid of the process that ran it)."""
    folder = Path(os.environ[MARKER_ENV])
    n = 1
    while (folder / f"{name}.{n}").exists():
        n += 1
    (folder / f"{name}.{n}").write_text(str(os.getpid()))
    return n


@register_backend
class SlowOnceBackend(_Fault):
    """A good variant (eager PyTorch underneath, verified) whose first cell is slow enough to interrupt."""

    name = "slow_once"
    produces_outputs = True

    def prepare(self, ctx: PrepareContext) -> Runner:
        if _count_run(self.name) == 1:
            time.sleep(600)  # the test interrupts the run meanwhile
        from infertune.backends.registry import get_backend

        return get_backend("pytorch").prepare(ctx)


@register_backend
class InterruptSecondBackend(_Fault):
    name = "interrupt_second"

    def fail(self, ctx: PrepareContext) -> None:
        if _count_run(self.name) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # in-process run: as if Ctrl-C arrived during this cell
            time.sleep(30)  # the handler raises before this ends


@register_backend
class SlowPrepareBackend(_Fault):
    """A good variant (eager PyTorch underneath, verified) whose prepare takes a second and leaves a marker
    ``prepare.<options>.b<batch>`` holding when it started and ended: two of them in one run show whether
    their preparations overlapped (tests/test_concurrent_jobs.py). Any options are accepted, to tell them apart."""

    name = "slow_prepare"
    produces_outputs = True

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        pass

    def prepare(self, ctx: PrepareContext) -> Runner:
        from infertune.backends.registry import get_backend

        start = time.time()
        time.sleep(1.0)
        tag = ",".join(ctx.options) or "plain"
        (Path(os.environ[MARKER_ENV]) / f"prepare.{tag}.b{ctx.batch_size}").write_text(f"{start} {time.time()}")
        return get_backend("pytorch").prepare(dataclasses.replace(ctx, options={}))


class _CoresRunner(NullRunner):
    """Notes, the first time each is seen, the cores it is called on and those of a thread its backend started
    while preparing: a line ``call <caller's cores> <thread's cores>``."""

    def __init__(self, marker: Path, thread: threading.Thread) -> None:
        self.marker = marker
        self.thread = thread
        self.seen: set[str] = set()

    def __call__(self, inputs: Any) -> Any:
        line = f"call {_cores(0)} {_cores(self.thread.native_id or 0)}"
        if line not in self.seen:
            self.seen.add(line)
            with self.marker.open("a") as f:
                f.write(line + "\n")
        return inputs


def _cores(tid: int) -> str:
    return ",".join(map(str, sorted(os.sched_getaffinity(tid))))


def _cores_marker(backend: str, batch: int) -> Path:
    return Path(os.environ[MARKER_ENV]) / f"cores.{backend}.b{batch}"


@register_backend
class CoresProbeBackend(_Fault):
    """``cores.cores_probe.b<batch>``: ``prepare <cores>``, then, once they change while it still prepares (it
    waits up to a minute), ``widened <its cores> <the cores of a thread it started>``, then its calls."""

    name = "cores_probe"

    def prepare(self, ctx: PrepareContext) -> Runner:
        marker = _cores_marker(self.name, ctx.batch_size)
        first = _cores(0)
        marker.write_text(f"prepare {first}\n")
        thread = threading.Thread(target=threading.Event().wait, daemon=True)  # as a runtime's thread pool
        thread.start()
        deadline = time.monotonic() + 60
        while _cores(0) == first and time.monotonic() < deadline:
            time.sleep(0.05)
        with marker.open("a") as f:
            f.write(f"widened {_cores(0)} {_cores(thread.native_id or 0)}\n")
        return _CoresRunner(marker, thread)


@register_backend
class CompilingCoresProbeBackend(CoresProbeBackend):
    """A compiling rung to the executors; it prepares once ``cores_probe`` has started preparing (up to a minute)."""

    name = "cores_probe_compiling"
    compiles = True

    def prepare(self, ctx: PrepareContext) -> Runner:
        deadline = time.monotonic() + 60
        while not _cores_marker(CoresProbeBackend.name, ctx.batch_size).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        marker = _cores_marker(self.name, ctx.batch_size)
        marker.write_text(f"prepare {_cores(0)}\n")
        return _CoresRunner(marker, threading.current_thread())
