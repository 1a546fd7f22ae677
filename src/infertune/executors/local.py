"""Where a variant's cells run: in a fresh worker process (default) or in this process.

A worker process per variant isolates what one runtime does to the next (thread pools, memory,
global compiler flags), lets a crash (segfault, abort, OOM kill) become a ``crashed`` row instead of
ending the run, bounds a hung cell with a timeout, and makes the per-cell peak memory the variant's own.
The worker's stdout/stderr go to the run's log file so runtime chatter never breaks the progress bar.

The parent blocks in ``multiprocessing.connection.wait`` on the worker's pipe and its process
sentinel with the next deadline as the timeout: it wakes for an event, a death or a deadline, never
to poll. The worker runs in its own process group, so the terminal's Ctrl-C reaches only the parent
(which decides what happens) and a kill takes the worker's own children (compilers) with it.
An optional memory limit (``benchmark.memory_limit_mb``) is applied in the worker as RLIMIT_DATA.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from typing import Any

from infertune import interrupts
from infertune.cell import VariantJob, base_row, is_out_of_memory, run_variant

Event = tuple[Any, ...]


def run_in_process(job: VariantJob, model: Any = None) -> Iterator[Event]:
    """Run the job here, yielding the same events a worker would send."""
    events: list[Event] = []
    run_variant(job, lambda *e: events.append(e), model=model)
    yield from events


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


def _worker_main(job: VariantJob, conn: Any) -> None:
    _own_process_group()
    if job.log_path:
        fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        print(f"=== {job.variant} (pid {os.getpid()}) ===", flush=True)
    if job.memory_limit_mb:
        apply_memory_limit(job.memory_limit_mb)

    def emit(*event: Any) -> None:
        if event[0] == "log":
            print(f"[{job.variant} b{event[1]}] {event[2]}", flush=True)
        conn.send(event)  # synchronous: a row sent is a row kept, even if the worker is killed next

    try:
        if job.backend_module and job.backend_module not in ("__main__", "__mp_main__"):
            importlib.import_module(job.backend_module)  # a backend registered outside infertune.backends
        run_variant(job, emit)
        conn.send(("done",))
    except BaseException as err:  # SystemExit, MemoryError at import...: say why before dying
        with contextlib.suppress(Exception):
            conn.send(("fatal", f"{type(err).__name__}: {err}"[:300]))
        raise
    finally:
        conn.close()


def run_in_worker(job: VariantJob, on_event: Callable[[Event], None] | None = None,
                  cell_timeout_s: float = 1800.0, variant_timeout_s: float | None = None) -> Iterator[Event]:
    """Run the job in a spawned process; yield its events, then synthesise rows for cells it never finished.

    ``crashed``: the worker died (signal or exit code) mid-cell. ``timeout``: a cell ran longer than
    ``cell_timeout_s`` (or the whole variant longer than ``variant_timeout_s``); the worker is killed
    and the remaining cells are reported too. Closing the generator early (an interrupted run) kills
    the worker.
    """
    ctx = mp.get_context("spawn")
    recv_conn, send_conn = ctx.Pipe(duplex=False)
    log_start = os.path.getsize(job.log_path) if job.log_path and os.path.exists(job.log_path) else 0
    proc: Any = None
    finished = False
    try:
        with interrupts.deferred():  # a Ctrl-C mid-start would leave a worker nobody owns
            proc = _start(ctx, job, send_conn)
        yield from _pump(proc, recv_conn, job, cell_timeout_s, variant_timeout_s, log_start)
        finished = True
    finally:
        if proc is not None:
            if finished:
                proc.join(timeout=10)
            if proc.is_alive():  # interrupted, timed out, or stuck after 'done'
                kill_worker(proc)
                proc.join()
        recv_conn.close()


def _start(ctx: Any, job: VariantJob, send_conn: Any) -> Any:
    """Spawn the worker with the job's thread count in its environment; keep only the pipe's reading end."""
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS=str(job.threads), MKL_NUM_THREADS=str(job.threads))
    try:
        proc = ctx.Process(target=_worker_main, args=(job, send_conn), daemon=False)
        proc.start()
    finally:
        send_conn.close()  # the parent keeps only the reading end, so a dead worker reads as EOF
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return proc


def kill_worker(proc: Any) -> None:
    """SIGKILL the worker and everything in its process group (compiler children included)."""
    with contextlib.suppress(OSError):
        if os.getpgid(proc.pid) == proc.pid:  # the worker leads its own group (see _own_process_group)
            os.killpg(proc.pid, signal.SIGKILL)
            return
    with contextlib.suppress(OSError):
        proc.kill()


def _pump(proc: Any, recv_conn: Any, job: VariantJob, cell_timeout_s: float,
          variant_timeout_s: float | None, log_start: int = 0) -> Iterator[Event]:
    """Relay the worker's events; on death or timeout, finish with rows for the cells it left."""
    done_batches: set[int] = set()
    current = job.batch_sizes[0]
    start = time.monotonic()
    cell_deadline = start + cell_timeout_s
    variant_deadline = start + variant_timeout_s if variant_timeout_s else float("inf")
    failure: tuple[str, str] | None = None
    fatal = ""
    while True:
        deadline = min(cell_deadline, variant_deadline)
        ready = wait([recv_conn, proc.sentinel], timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            kill_worker(proc)
            if variant_deadline <= cell_deadline:
                reason = (f"variant ran longer than {variant_timeout_s:.0f} s (benchmark.variant_timeout_s); "
                          "the worker was killed")
            else:
                reason = f"cell ran longer than {cell_timeout_s:.0f} s (benchmark.cell_timeout_s); the worker was killed"
            failure = ("timeout", reason)
            break
        try:
            if recv_conn not in ready and not recv_conn.poll():
                raise EOFError  # the worker exited and left nothing unread
            event = recv_conn.recv()
        except EOFError:
            proc.join(timeout=10)
            failure = ("crashed", _death_reason(proc.exitcode, job, fatal, log_start))
            break
        if event[0] == "fatal":
            fatal = event[1]
            continue
        if event[0] == "done":
            break
        if event[0] == "stage" and event[1] != current:
            current, cell_deadline = event[1], time.monotonic() + cell_timeout_s
        if event[0] == "row":
            done_batches.add(event[1]["batch_size"])
            cell_deadline = time.monotonic() + cell_timeout_s
        yield event
    missing = [b for b in job.batch_sizes if b not in done_batches]
    if failure is None and missing:  # 'done' without every row: should not happen, never lose the cells
        failure = ("crashed", f"the worker finished without a row for batch {missing[0]}")
    if failure is not None:
        if current in done_batches and missing:
            current = missing[0]
        for batch in missing:
            row = base_row(job, batch)
            what = "timed out" if failure[0] == "timeout" else failure[0]
            row.update(status=failure[0], error=failure[1] if batch == current else
                       f"not run: the worker {what} on batch {current}")
            yield ("row", row, None)


def _death_reason(exitcode: int | None, job: VariantJob, fatal: str = "", log_start: int = 0) -> str:
    """'worker process killed by SIGSEGV (Segmentation fault); last log line: ...': what the row says."""
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
    if job.memory_limit_mb:
        what += f" (its memory limit: {job.memory_limit_mb} MB, benchmark.memory_limit_mb)"
    tail = f"; it said: {fatal}" if fatal else ""
    out_of_memory = is_out_of_memory(RuntimeError(fatal)) or "failed to map segment" in fatal  # dlopen under a cap
    if job.memory_limit_mb and fatal and out_of_memory:
        tail += " -- raise benchmark.memory_limit_mb: loading the runtime alone needs more (torch: about 0.8 GB)"
    if not tail and job.log_path and os.path.exists(job.log_path):
        with open(job.log_path, "rb") as f:  # this worker's last words, not our banner
            f.seek(log_start)
            text = f.read().decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("=== ")]
        if lines:
            tail = f"; last log line: {lines[-1][:300]}"
    return f"worker process {what}{tail}"
