"""Where a variant's cells run: in a fresh worker process (default) or in this process.

A worker process per variant isolates what one runtime does to the next (thread pools, memory,
global compiler flags), lets a crash (segfault, OOM kill) become a ``crashed`` row instead of ending
the run, bounds a hung cell with a timeout, and makes the per-cell peak memory the variant's own.
The worker's stdout/stderr go to the run's log file so runtime chatter never breaks the progress bar.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from infertune.cell import VariantJob, base_row, run_variant

Event = tuple[Any, ...]


def run_in_process(job: VariantJob, model: Any = None) -> Iterator[Event]:
    """Run the job here, yielding the same events a worker would send."""
    events: list[Event] = []
    run_variant(job, lambda *e: events.append(e), model=model)
    yield from events


def _worker_main(job: VariantJob, conn: Any) -> None:
    if job.log_path:
        fd = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        print(f"=== {job.variant} (pid {os.getpid()}) ===", flush=True)

    def emit(*event: Any) -> None:
        if event[0] == "log":
            print(f"[{job.variant} b{event[1]}] {event[2]}", flush=True)
        conn.send(event)  # synchronous: a row sent is a row kept, even if the worker is killed next

    try:
        run_variant(job, emit)
    finally:
        conn.send(("done",))
        conn.close()


def run_in_worker(job: VariantJob, on_event: Callable[[Event], None] | None = None,
                  cell_timeout_s: float = 1800.0) -> Iterator[Event]:
    """Run the job in a spawned process; yield its events, then synthesise rows for cells it never finished.

    ``crashed``: the worker died (signal or exit code) mid-cell. ``timeout``: a cell ran longer than
    ``cell_timeout_s``; the worker is killed and the remaining cells are reported as timed out.
    """
    ctx = mp.get_context("spawn")
    recv_conn, send_conn = ctx.Pipe(duplex=False)
    env_threads = str(job.threads)
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS=env_threads, MKL_NUM_THREADS=env_threads)
    try:
        proc = ctx.Process(target=_worker_main, args=(job, send_conn), daemon=False)
        proc.start()
        send_conn.close()  # the parent keeps only the reading end, so a dead worker reads as EOF
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield from _pump(proc, recv_conn, job, cell_timeout_s)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():  # interrupted, or stuck after 'done'
            proc.kill()
            proc.join()


def _pump(proc: Any, recv_conn: Any, job: VariantJob, cell_timeout_s: float) -> Iterator[Event]:
    """Relay the worker's events; on death or timeout, finish with rows for the cells it left."""
    done_batches: set[int] = set()
    current = job.batch_sizes[0]
    cell_start = time.monotonic()
    failure: tuple[str, str] | None = None
    while True:
        if recv_conn.poll(0.5):
            try:
                event = recv_conn.recv()
            except EOFError:
                proc.join(timeout=10)
                failure = ("crashed", _death_reason(proc.exitcode, job.log_path))
                break
        else:
            if time.monotonic() - cell_start > cell_timeout_s:
                proc.kill()
                failure = ("timeout", f"cell ran longer than {cell_timeout_s:.0f} s (benchmark.cell_timeout_s); "
                           "the worker was killed")
                break
            continue
        if event[0] == "done":
            break
        if event[0] == "stage" and event[1] != current:
            current, cell_start = event[1], time.monotonic()
        if event[0] == "row":
            done_batches.add(event[1]["batch_size"])
            cell_start = time.monotonic()
        yield event
    if failure is not None:
        for batch in job.batch_sizes:
            if batch not in done_batches:
                row = base_row(job, batch)
                row.update(status=failure[0], error=failure[1] if batch == current else
                           f"not run: the worker {failure[0]} on batch {current}")
                yield ("row", row, None)


def _death_reason(exitcode: int | None, log_path: str | None) -> str:
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            what = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            what = f"killed by signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            what += " (often the out-of-memory killer: try smaller batch sizes)"
    else:
        what = f"exited with code {exitcode}"
    tail = ""
    if log_path and os.path.exists(log_path):
        lines = [ln for ln in open(log_path, errors="replace").read().splitlines() if ln.strip()]
        if lines:
            tail = f"; last log line: {lines[-1][:300]}"
    return f"worker process {what}{tail}"
