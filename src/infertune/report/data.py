"""Load result files for a report, checking them first so a wrong file gets a clear message.

A report needs the rows (CSV or JSON). The JSON beside a CSV adds the environment, the resolved
config and the raw samples; without it the report still works, and says what it could not show.
Several files merge into one report (a CPU run and a GPU run, or runs of several models): rows are
concatenated, and a cell measured in two files keeps the later file's row, with a note.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from infertune.errors import InfertuneError
from infertune.results import ResultRow, json_path_for, read_rows

#: columns a results CSV cannot do without: the ResultRow fields that have no default.
REQUIRED_COLUMNS = tuple(f.name for f in fields(ResultRow) if f.default is MISSING and f.default_factory is MISSING)

_WHAT_TO_PASS = "pass a CSV (or the JSON beside it) written by `infertune run` / benchmark_all.py"


@dataclass
class ReportData:
    """Everything a report shows, read from one run's files (or several merged: see ``runs``)."""

    source: Path
    rows: list[ResultRow]
    samples: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the report could not show, and why
    runs: list[ReportData] = field(default_factory=list)  # the files merged into this one; empty for one file

    @property
    def sources(self) -> list[Path]:
        return [r.source for r in self.runs] if self.runs else [self.source]

    @property
    def has_samples(self) -> bool:
        return bool(self.samples)


def load_report_data(paths: Path | str | Sequence[Path | str]) -> ReportData:
    """Read rows, samples, config and environment from one or more results CSV / JSON files.

    Args:
        paths: a results file, or several to merge. A CSV passed together with its own JSON is read once.

    Raises:
        InfertuneError: a file is missing, empty, or not an infertune results file; the message
            says what is wrong and what to pass instead.
    """
    if isinstance(paths, (str, Path)):
        return _load_one(Path(paths))
    unique = _without_duplicates([Path(p) for p in paths])
    if not unique:
        raise InfertuneError(f"no results file given: {_WHAT_TO_PASS}")
    if len(unique) == 1:
        return _load_one(unique[0])
    return merge([_load_one(p) for p in unique])


def merge(runs: list[ReportData]) -> ReportData:
    """One ReportData from several files: rows in file order, a cell measured twice keeps the later row.

    The environment and config shown at the top are the first file's; when the files disagree the
    report says so and shows every file's environment.
    """
    rows: dict[str, ResultRow] = {}
    origin: dict[str, Path] = {}
    samples: dict[str, list[float]] = {}
    notes: list[str] = []
    for run in runs:
        replaced: dict[Path, list[str]] = {}
        for row in run.rows:
            if row.cell_id in rows:
                replaced.setdefault(origin[row.cell_id], []).append(row.cell_id)
                del rows[row.cell_id]  # re-insert at the later file's position
                samples.pop(row.cell_id, None)
            rows[row.cell_id] = row
            origin[row.cell_id] = run.source
            if row.cell_id in run.samples:
                samples[row.cell_id] = run.samples[row.cell_id]
        for older, cells in replaced.items():
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            notes.append(f"{len(cells)} cell(s) are in both {older} and {run.source}: showing the later file's "
                         f"rows ({shown}); to compare two runs use `infertune compare`")
        notes.extend(f"{run.source.name}: {note}" for note in run.notes)
    environments = [r.environment for r in runs if r.environment]
    if any(env != environments[0] for env in environments[1:]):
        notes.append("the files were recorded in different environments: the summary shows "
                     f"{runs[0].source.name}'s; every file's environment is listed under Environment")
    first = runs[0]
    return ReportData(first.source, list(rows.values()), samples,
                      next((r.config for r in runs if r.config), {}), environments[0] if environments else {},
                      notes, runs)


def _without_duplicates(paths: list[Path]) -> list[Path]:
    """Drop repeated paths, and a CSV whose JSON (which holds the same rows and more) is also given."""
    resolved = list(dict.fromkeys(p.resolve() if p.exists() else p for p in paths))
    jsons = {p for p in resolved if p.suffix.lower() == ".json"}
    return [p for p in resolved if not (p.suffix.lower() == ".csv" and json_path_for(p) in jsons)]


def _load_one(path: Path) -> ReportData:
    _check_file(path)
    if path.suffix.lower() == ".json":
        doc = _read_json(path, required=True)
        rows = _rows_from(path)
        return ReportData(path, rows, *_extras(doc))
    _check_csv_header(path)
    rows = _rows_from(path)
    data = ReportData(path, rows)
    beside = json_path_for(path)
    if not beside.exists():
        data.notes.append(
            f"No {beside.name} beside {path.name}: environment, resolved config and raw samples are not "
            "shown, and the latency distribution chart is skipped. Keep the JSON a run writes next to its CSV."
        )
        return data
    try:
        doc = _read_json(beside, required=False)
    except InfertuneError as exc:
        data.notes.append(f"{exc} Environment, config and raw samples are not shown.")
        return data
    data.samples, data.config, data.environment = _extras(doc)
    return data


def _check_file(path: Path) -> None:
    if path.is_dir():
        found = sorted(path.glob("*.csv"), key=lambda p: p.stat().st_mtime)
        hint = f" (newest here: {found[-1]})" if found else ""
        raise InfertuneError(f"{path} is a folder: pass one results file inside it{hint}")
    if not path.exists():
        raise InfertuneError(f"no results file at {path}: {_WHAT_TO_PASS}, "
                             "e.g. results/benchmark_results_TIMESTAMP.csv")
    if path.suffix.lower() not in (".csv", ".json"):
        raise InfertuneError(f"{path} is not a .csv or .json file: {_WHAT_TO_PASS}")
    if not path.read_bytes().strip():
        raise InfertuneError(f"{path} is empty (the run may have stopped before its first row): {_WHAT_TO_PASS}")


def _check_csv_header(path: Path) -> None:
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InfertuneError(f"{path} is not a readable CSV ({exc}): {_WHAT_TO_PASS}") from exc
    columns = {h.strip() for h in header}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        # 'variant' first: it is the column that says "this is an infertune results file"
        first = "variant" if "variant" in missing else missing[0]
        others = [c for c in missing if c != first]
        also = f" (nor {', '.join(others)})" if others else ""
        seed = " It looks like the original project's output; rerun it with `infertune run`." if "format" in {
            c.lower() for c in columns} else ""
        raise InfertuneError(f"{path} has no {first!r} column{also}: {_WHAT_TO_PASS}.{seed}")


def _read_json(path: Path, required: bool) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InfertuneError(f"{path} is not valid JSON ({exc}): {_WHAT_TO_PASS}") from exc
    if not isinstance(doc, dict) or (required and not isinstance(doc.get("rows"), list)):
        raise InfertuneError(f"{path} has no 'rows' list, so it is not an infertune results JSON: {_WHAT_TO_PASS}")
    return doc


def _rows_from(path: Path) -> list[ResultRow]:
    try:
        rows = read_rows(path)
    except (TypeError, ValueError, KeyError) as exc:
        raise InfertuneError(f"{path} has a row that is not an infertune result ({exc}): {_WHAT_TO_PASS}") from exc
    if not rows:
        raise InfertuneError(f"{path} has no result rows yet (the run recorded no cells): {_WHAT_TO_PASS}")
    return rows


def _extras(doc: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, Any]]:
    """Samples, config and environment from a results JSON; absent or malformed parts become empty."""
    samples = doc.get("samples_ms") if isinstance(doc.get("samples_ms"), dict) else {}
    clean = {str(k): [float(x) for x in v if isinstance(x, (int, float))]
             for k, v in samples.items() if isinstance(v, list)}
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    env = doc.get("environment") if isinstance(doc.get("environment"), dict) else {}
    return clean, config, env
