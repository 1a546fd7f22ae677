"""Scenario rows and their files: one row per (scenario, variant, batch policy), written like a run's.

Why not ``results.ResultRow``: a run's row is one tight-loop cell (variant × batch size) with the
timer's statistics; a serving row is a LoadGen verdict for a batch *policy* under traffic (scenario,
target and achieved QPS, bound, reasons, batch sizes formed, cost). Merging them would give every run
row a dozen empty serving columns and every serving row the timer's. Both share the file discipline of
``results.py`` (atomic rewrite after every row, CSV + JSON beside each other) and the status vocabulary.
The JSON adds per row the batch-size histogram, every LoadGen trial (the latency-versus-QPS points) and
where LoadGen's logs are, and per scenario the search's outcome. Importing this needs no runtime.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from infertune.results import _atomic_write, _jsonable

SCHEMA_VERSION = 1
#: the JSON's ``kind``: how ``infertune report`` tells scenario files from run files.
KIND = "scenario"


@dataclass
class ScenarioRow:
    """One scenario run of one variant under one batch policy. Units are in the names; ``qps`` is samples/s."""

    model: str
    variant: str
    backend: str
    precision: str
    device: str
    scenario: str
    status: str = "ok"
    error: str = ""
    max_batch: int | None = None
    max_delay_ms: float | None = None
    instances: int | None = None
    threads_per_instance: int | None = None
    #: LoadGen's verdict (VALID / INVALID) and, when INVALID, its reasons.
    verdict: str = ""
    reasons: str = ""
    latency_bound_ms: float | None = None
    #: server: the Poisson arrival rate asked for (MLPerf's server result when VALID); offline: the expected rate.
    target_qps: float | None = None
    #: completed samples per second as LoadGen measured them.
    qps: float | None = None
    #: the percentile MLPerf reports for the scenario: p90 single-stream, p99 multi-stream (per query) and server.
    reported_latency_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p999_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_max_ms: float | None = None
    query_count: int | None = None
    duration_s: float | None = None
    batch_mean: float | None = None
    #: LoadGen runs behind this row (a server search bisects on QPS: several).
    trials: int | None = None
    #: the best configuration of this scenario in this run.
    best: bool = False
    price_per_hour: float | None = None
    cost_per_million: float | None = None
    fidelity_ok: bool | None = None
    cosine_min: float | None = None
    weights: str = ""
    run_id: str = ""
    #: LoadGen's summary and detail logs of the trial this row reports, relative to the results file.
    loadgen_logs: str = ""
    note: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def row_id(self) -> str:
        return f"{self.model}|{self.variant}|{self.scenario}|{self.policy_label}|{self.device}"

    @property
    def policy_label(self) -> str:
        if self.max_batch is None:
            return "-"
        return f"b{self.max_batch} d{(self.max_delay_ms or 0):g}ms x{self.instances}"


FIELD_NAMES = [f.name for f in fields(ScenarioRow)]


@dataclass(frozen=True)
class TrialPoint:
    """One LoadGen run behind a row: what was asked, what LoadGen saw (a point of the latency-vs-QPS chart)."""

    target_qps: float | None
    qps: float | None
    latency_p99_ms: float | None
    reported_latency_ms: float | None
    verdict: str


@dataclass
class RowDetails:
    """What the JSON keeps beside a row: the batch sizes formed (size -> count) and its trials."""

    batch_histogram: dict[int, int] = field(default_factory=dict)
    trials: list[TrialPoint] = field(default_factory=list)


@dataclass
class ScenarioFiles:
    """The CSV and JSON of one ``infertune scenario`` run, rewritten atomically after each row."""

    csv_path: Path
    json_path: Path
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    rows: list[ScenarioRow] = field(default_factory=list)
    details: dict[str, RowDetails] = field(default_factory=dict)
    #: per scenario: the search's one-paragraph outcome (best found, or why none).
    outcomes: dict[str, str] = field(default_factory=dict)

    def add(self, row: ScenarioRow, details: RowDetails | None = None) -> None:
        self.rows.append(row)
        self.details[row.row_id] = details or RowDetails()
        self.write()

    def mark_best(self, scenario: str, row_id: str | None, outcome: str) -> None:
        for r in self.rows:
            if r.scenario == scenario:
                r.best = r.row_id == row_id
        self.outcomes[scenario] = outcome
        self.write()

    def write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELD_NAMES, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
        _atomic_write(self.csv_path, buf.getvalue())
        doc = {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "config": self.config,
            "environment": self.environment,
            "run": self.run,
            "rows": [asdict(r) for r in self.rows],
            "details": {k: asdict(v) for k, v in self.details.items()},
            "outcomes": self.outcomes,
        }
        _atomic_write(self.json_path, json.dumps(_jsonable(doc), indent=1))


def is_scenario_file(path: Path | str) -> bool:
    """Whether ``path`` (a CSV or its JSON) holds scenario rows."""
    path = Path(path)
    if path.suffix == ".csv":
        try:
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError):
            return False
        return "scenario" in header and "verdict" in header
    try:
        return json.loads(path.read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def read_scenario_file(path: Path | str) -> tuple[list[ScenarioRow], dict[str, RowDetails], dict[str, Any]]:
    """(rows, details by row id, the whole JSON document or {} for a CSV without its JSON)."""
    path = Path(path)
    json_path = path.with_suffix(".json")
    if json_path.exists():
        doc = json.loads(json_path.read_text())
        rows = [_row(d) for d in doc.get("rows", [])]
        details = {k: RowDetails({int(s): int(c) for s, c in v.get("batch_histogram", {}).items()},
                                 [TrialPoint(**t) for t in v.get("trials", [])])
                   for k, v in doc.get("details", {}).items()}
        return rows, details, doc
    with path.open(newline="") as f:
        return [_row(d) for d in csv.DictReader(f)], {}, {}


_TYPES = {f.name: str(f.type) for f in fields(ScenarioRow)}


def _row(d: dict[str, Any]) -> ScenarioRow:
    from infertune.results import _coerce

    return ScenarioRow(**{k: _coerce(_TYPES[k], v) for k, v in d.items() if k in _TYPES})
