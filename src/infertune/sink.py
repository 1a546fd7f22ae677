"""The sink: where a run's events become durable rows, and the run's files are claimed and kept valid.

Each row is first appended to the journal (``.jsonl``, fsynced), then folded into the CSV/JSON
(rewritten atomically): a later round of a cell is pooled into its first row (``LatencyStats.merge``).
The run's files are claimed when the run starts, by exclusive creation (``claim_stem``), so any number
of runs started at once into one folder each get their own. The sink also tracks the cells in
progress, so an interrupt can mark each one ``interrupted``, and explains INT8 rows that are not faster.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from infertune import interrupts
from infertune.cell import VariantJob
from infertune.errors import InfertuneError
from infertune.executors.base import (
    Event,
    ExecutorSettings,
    Job,
    JobWatch,
    LogEvent,
    NoticeEvent,
    RowEvent,
    StageEvent,
)
from infertune.journal import Journal
from infertune.results import RUN_FILE_SUFFIXES, ResultFiles, ResultRow, Status

Log = Callable[[str], None]


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


def claim_stem(out_dir: Path, prefix: str = "benchmark_results") -> Path:
    """Create ``<out_dir>/<prefix>_<timestamp>[_<n>].*`` exclusively and return the stem.

    Every file of the run is created with ``O_EXCL`` before the run does anything else, so two runs
    started in the same second never share a file: the second gets the suffix ``_2`` (then ``_3``...).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{prefix}_{timestamp()}"
    for n in range(1, 10_000):
        stem = out_dir / (base if n == 1 else f"{base}_{n}")
        created: list[Path] = []
        try:
            for suffix in RUN_FILE_SUFFIXES:
                path = Path(f"{stem}{suffix}")
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                created.append(path)
            return stem
        except FileExistsError:
            for path in created:
                with contextlib.suppress(OSError):
                    path.unlink()
    raise InfertuneError(f"cannot claim a name for this run's files in {out_dir}: 10000 runs share this second")


def release_stem(stem: Path) -> None:
    """Remove a claimed run's files (bad input found before any row existed: nothing half-written stays)."""
    for suffix in RUN_FILE_SUFFIXES:
        with contextlib.suppress(OSError):
            Path(f"{stem}{suffix}").unlink()


class Sink:
    """Takes the executor's events: rows to the journal and files, stages to the progress bar, notices to the user."""

    def __init__(self, files: ResultFiles, journal: Journal, run_id: str, log: Log, progress: Any = None) -> None:
        self.files = files
        self.journal = journal
        self.run_id = run_id
        self.log = log
        self.progress = progress
        self.notices: list[str] = []
        self._watches: dict[str, JobWatch] = {}
        self._rounds: dict[str, int] = {}

    # ------------------------------------------------------------------ events

    def expect(self, jobs: list[Job], round_index: int = 0) -> None:
        """Jobs about to be handed to the executor (their events name them)."""
        for job in jobs:
            self._watches[job.job_id] = JobWatch(job, ExecutorSettings())
            self._rounds[job.job_id] = round_index

    def take(self, event: Event) -> None:
        """One event from the executor."""
        watch = self._watches.get(event.job_id)
        if watch is not None:
            watch.observe(event)
        if isinstance(event, StageEvent):
            if self.progress and watch is not None:
                self.progress.stage(watch.job.label, event.batch if event.batch is not None else "", event.stage)
        elif isinstance(event, NoticeEvent):
            if event.text not in self.notices:
                self.notices.append(event.text)
                self.log(event.text)
        elif isinstance(event, RowEvent):
            with interrupts.deferred():
                self.keep(event.row, event.samples_ms, self._rounds.get(event.job_id, 0))
            if self.progress:
                self.progress.advance()
        elif isinstance(event, LogEvent):
            pass  # the executor already wrote it to the run's log

    # ------------------------------------------------------------------ rows

    def keep(self, row: ResultRow, samples: list[float] | None, round_index: int) -> None:
        """Journal the cell (fsynced), then fold it into the CSV/JSON; a failed write is a clear error."""
        try:
            self.journal.append(round_index, asdict(row), samples)
            self.record(row, samples, round_index)
        except OSError as err:
            raise InfertuneError(
                f"cannot write the results to {self.files.csv_path.parent} ({err.strerror or err}); the rows finished "
                f"before this one are in {self.files.csv_path.name} and {self.journal.path.name}: free space, then "
                f"infertune run --resume {self.files.csv_path}"
            ) from None

    def record(self, row: ResultRow, samples: list[float] | None, round_index: int) -> None:
        """Add a cell's row; in later rounds, pool its samples into the row already recorded.

        The first measured round's one-off costs (conversion, first call, size) stay: later rounds load
        from the cache. A later round that fails keeps the earlier numbers and says so in ``note``.
        """
        import json

        from infertune.measure.stats import summarize

        files = self.files
        earlier = files.find(row.cell_id) if round_index else None
        pooled = files.samples_ms.get(row.cell_id) if earlier is not None else None
        if earlier is None or (not pooled and samples is not None):
            row.rounds = 1 if samples is not None else None
            row.round_p50s_ms = json.dumps([row.latency_p50_ms]) if samples is not None else ""
            if earlier is None:
                files.add(row, samples)
            else:  # earlier rounds failed; this one measured, so it becomes the row
                files.update(row, samples)
            return
        if samples is None:
            earlier.add_note(f"round {round_index + 1} {row.status}: {row.error}"[:300])
            files.update(earlier, None)
            return
        merged = summarize(list(pooled or []), row.batch_size).merge(summarize(samples, row.batch_size))
        earlier.update(**merged.as_row_fields(), rounds=(earlier.rounds or 1) + 1,
                       round_p50s_ms=json.dumps([*json.loads(earlier.round_p50s_ms or "[]"), row.latency_p50_ms]),
                       measured_s=(earlier.measured_s or 0.0) + (row.measured_s or 0.0))
        files.update(earlier, list(merged.samples_ms))

    def fill(self, rows: list[ResultRow], durable: bool = True) -> None:
        """Rows the parent wrote itself (unavailable variants; every cell of a run that cannot go on).

        ``durable=False`` keeps them out of the journal, so ``--resume`` runs those cells again.
        """
        for row in rows:
            if durable:
                self.keep(row, None, 0)
            else:
                self.record(row, None, 0)
            if self.progress:
                self.progress.advance()

    # ------------------------------------------------------------------ the run's end

    def interrupted(self, stop: interrupts.RunInterrupted) -> None:
        """Mark each cell in progress ``interrupted``, flag the run, and tell the user how to finish it."""
        files = self.files
        marked = 0
        for job_id, watch in self._watches.items():
            if not isinstance(watch.job, VariantJob) or watch.stage == "start" or watch.batch is None:
                continue  # not started yet, or not a variant: nothing of it is half done
            batch = next((b for b in watch.job.batches if b not in watch.finished and b == watch.batch),
                         next((b for b in watch.job.batches if b not in watch.finished), None))
            if batch is None:
                continue
            row = watch.job.base_row(batch)
            row.update(status=Status.INTERRUPTED, error=f"interrupted by {stop.signal_name} during {watch.stage}; "
                       f"infertune run --resume {files.csv_path} runs it again")
            self.keep(row, None, self._rounds.get(job_id, 0))
            marked += 1
        files.run.update(status="interrupted", stopped_by=stop.signal_name)
        files.write()
        finished = sum(1 for r in files.rows if r.status != Status.INTERRUPTED)
        planned = files.run.get("cells_planned", "?")
        progress = f"{finished} of {planned} cells finished"
        if files.run.get("rounds", 1) > 1:
            progress = (f"round {files.run.get('round', 1)} of {files.run['rounds']} was in progress "
                        f"({finished} of {planned} cells have rows)")
        in_progress = ", the cell in progress is marked interrupted" if marked == 1 else \
            f", the {marked} cells in progress are marked interrupted" if marked else ""
        stop.summary = (f"{progress}{in_progress}; results in {files.csv_path} (+ .json, .jsonl); finish the run "
                        f"with: infertune run --resume {files.csv_path}")

    def recheck(self, rows: list[ResultRow]) -> None:
        """The baseline timed again at the end of the run: each p50 goes beside the first on the baseline's row
        (not journaled: a resumed run times its own end-of-run check)."""
        for row in rows:
            first = self.files.find(row.cell_id)
            if first is not None and row.status == Status.OK and row.latency_p50_ms:
                first.recheck_p50_ms = row.latency_p50_ms
        self.files.write()

    def finish(self) -> None:
        annotate_int8(self.files)
        self.files.run["status"] = "complete"
        self.files.write()


def annotate_int8(files: ResultFiles) -> None:
    """Explain INT8 rows that are not faster than their FP32 parent (same backend, batch and pinned node)."""
    fp32 = {(r.backend, r.batch_size, r.device, r.pinned_node): r for r in files.rows
            if r.precision == "fp32" and r.status == Status.OK}
    changed = False
    for r in files.rows:
        parent = fp32.get((r.backend, r.batch_size, r.device, r.pinned_node))
        if r.precision != "int8" or parent is None or not r.latency_p50_ms or not parent.latency_p50_ms:
            continue
        if r.latency_p50_ms >= parent.latency_p50_ms:
            cause = ("this CPU has VNNI, so the likely cause is quantize/dequantize overhead around "
                     "unfused layers or an unsuited activation/weight type choice"
                     if _has_int8_dot_product(r)
                     else "this CPU lacks VNNI/AMX int8 dot-product instructions, so int8 convolutions run "
                     "on slower AVX2 paths")
            note = (f"INT8 not faster than {parent.variant} ({r.latency_p50_ms:.1f} vs {parent.latency_p50_ms:.1f} ms): "
                    f"{cause}")
            if note not in r.note:  # notes are appended, never overwritten
                r.add_note(note)
                changed = True
    if changed:
        files.write()


def _has_int8_dot_product(row: ResultRow) -> bool:
    """Whether the CPU that ran ``row`` has VNNI/AMX: its node's (a Ray run records it), else this machine's."""
    from infertune.env import ISA_FLAGS, has_int8_dot_product

    if row.node_isa:
        names = set(row.node_isa.split(", "))
        return has_int8_dot_product({flag for flag, name in ISA_FLAGS.items() if name in names})
    return has_int8_dot_product()
