"""The run's journal: one JSON line per finished cell, appended, flushed and fsynced as it arrives.

The CSV and JSON are rewritten atomically after each row, but an atomic rename is not a durable
one: after a power cut or a kernel panic only data that reached the disk survives. The journal
(``benchmark_results_<TS>.jsonl``) is the durable record: each line holds one cell's row for one
round and its raw samples, written with ``fsync`` before the run moves on. ``--resume`` replays it to
rebuild the run's state and reruns only the cells it lacks. A torn last line (the machine died
mid-write) is skipped when reading; every line before it is intact.
This module imports neither torch nor any runtime.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_VERSION = 1


@dataclass(frozen=True)
class JournalRecord:
    """One finished (or interrupted) cell in one round."""

    round: int
    row: dict[str, Any]
    samples_ms: list[float] | None

    @property
    def status(self) -> str:
        return str(self.row.get("status") or "ok")


class Journal:
    """Append-only JSONL file; each ``append`` is on disk when it returns."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, round_index: int, row: dict[str, Any], samples_ms: list[float] | None) -> None:
        from infertune.results import _jsonable

        record = {"v": JOURNAL_VERSION, "round": round_index, "row": row, "samples_ms": samples_ms}
        line = json.dumps(_jsonable(record), separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            data = line.encode()
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def open(self) -> None:
        """Create the journal (a run with no finished cell yet is still resumable) or, when resuming,
        end a torn last line so that the next record starts on a line of its own."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())


def read_journal(path: Path | str) -> list[JournalRecord]:
    """Every complete record, in order; a torn or garbled line is skipped (it never reached the disk whole)."""
    records: list[JournalRecord] = []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            records.append(JournalRecord(int(doc["round"]), dict(doc["row"]), doc.get("samples_ms")))
        except (ValueError, KeyError, TypeError):
            continue
    return records
