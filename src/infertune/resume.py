"""``infertune run --resume RUN``: find an interrupted run's files and what it still has to do.

A run is the set of files ``<dir>/benchmark_results_<TS>.{csv,json,jsonl,config.yaml,log}``; RUN may
name any of them, their common stem, or the folder (then the newest run there that did not finish).
The saved ``.config.yaml`` is the run's configuration; the journal (``.jsonl``) says which cells are
done. The pipeline replays the journal into the result files and reruns only the cells it lacks
(missing, or recorded as ``interrupted``), appending to the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infertune.errors import InfertuneError
from infertune.journal import JournalRecord, read_journal
from infertune.results import RUN_FILE_SUFFIXES, ResultRow

STEM_PREFIX = "benchmark_results_"


@dataclass
class ResumeState:
    """An earlier run to continue: its files' stem, config, journal and what its JSON recorded."""

    stem: Path
    config: Any
    records: list[JournalRecord]
    environment: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return run_id_of(self.stem)

    def done(self) -> set[tuple[int, str]]:
        """(round, cell id) pairs with a final row; ``interrupted`` ones are to be run again."""
        return {(rec.round, self.row(rec).cell_id) for rec in self.records if rec.status != "interrupted"}

    def row(self, record: JournalRecord) -> ResultRow:
        """The journal record's row; a field this version does not know is an error naming it, not a silent drop."""
        try:
            return ResultRow(**record.row)
        except (TypeError, ValueError) as err:
            raise InfertuneError(f"cannot resume {self.stem.name}: its journal holds a row this version of infertune "
                                 f"cannot read ({err}); start a new run") from None


def run_id_of(stem: Path) -> str:
    """``20261128_184104`` from ``results/benchmark_results_20261128_184104`` (any ``<kind>_results_`` prefix)."""
    return stem.name.split("_results_", 1)[-1]


def run_stem(path: Path | str) -> Path:
    """The stem ``<dir>/benchmark_results_<TS>`` that ``path`` names (a file, the stem, or a folder)."""
    p = Path(path)
    if p.is_dir():
        return _newest_unfinished(p)
    for suffix in RUN_FILE_SUFFIXES:
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


def _newest_unfinished(folder: Path) -> Path:
    stems = sorted((j.with_suffix("") for j in folder.glob("*_results_*.jsonl")
                    if Path(f"{j.with_suffix('')}.config.yaml").is_file()),
                   key=run_id_of, reverse=True)
    if not stems:
        raise InfertuneError(
            f"no resumable run in {folder}: it has no {STEM_PREFIX}<TIMESTAMP>.jsonl journal; "
            "pass --resume the results file of the run to continue"
        )
    for stem in stems:
        if (_json_doc(stem).get("run") or {}).get("status") != "complete":
            return stem
    raise InfertuneError(f"every run in {folder} is complete (newest: {stems[0].name}.csv); nothing to resume")


def _json_doc(stem: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(f"{stem}.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def load_resume(path: Path | str) -> ResumeState:
    """Everything needed to continue the run ``path`` names; InfertuneError saying what is missing."""
    from infertune.config import load_config

    stem = run_stem(path)
    config_path = Path(f"{stem}.config.yaml")
    journal_path = Path(f"{stem}.jsonl")
    if not config_path.is_file():
        raise InfertuneError(
            f"cannot resume {path}: {config_path.name} (the run's saved config) is not there; pass a file "
            f"of a run, e.g. results/{STEM_PREFIX}<TIMESTAMP>.csv"
        )
    if not journal_path.is_file():
        raise InfertuneError(
            f"cannot resume {stem.name}: it has no journal ({journal_path.name}); runs written before "
            "--resume existed cannot be continued, start a new run"
        )
    config = load_config(config_path)
    doc = _json_doc(stem)
    return ResumeState(stem=stem, config=config, records=read_journal(journal_path),
                       environment=dict(doc.get("environment") or {}), run=dict(doc.get("run") or {}))
