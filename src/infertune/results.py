"""Result rows (a versioned schema with units in the field names) and their CSV / JSON files.

One row per (model, variant, batch size, device), and per node in a ``--per-node`` run. The CSV holds the
rows; the JSON beside it holds the rows, the raw per-iteration samples, the resolved config and the environment. Both files are
rewritten atomically after every finished row, so a run that dies halfway leaves valid files.
This module imports neither torch nor any runtime: reports work on a machine without them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class Status(str, Enum):
    """What became of a cell. A ``str`` whose value is what the files hold, so rows compare with plain strings."""

    OK = "ok"
    FIDELITY_FAILED = "fidelity_failed"
    UNVERIFIABLE = "unverifiable"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


#: the values ``ResultRow.status`` can take.
STATUSES = tuple(s.value for s in Status)


def joined_note(note: str, addition: str) -> str:
    """``note`` with ``addition`` appended ("a; b"): a row's note is added to, never overwritten, never repeated."""
    parts = [p for p in (note.strip(), addition.strip()) if p]
    if len(parts) == 2 and parts[1] in parts[0].split("; "):
        return parts[0]
    return "; ".join(parts)


#: backends whose row measures the harness itself (MLPerf's null backend), not a way to run the model.
HARNESS_BACKENDS = frozenset({"null"})


@dataclass
class ResultRow:
    """One measured (or failed) cell. Numbers are plain floats; the unit is in the name."""

    # identity
    model: str
    variant: str
    backend: str
    precision: str
    options: str
    batch_size: int
    device: str
    status: Status = Status.OK
    error: str = ""
    label: str = ""
    requested_device: str = ""
    weights: str = ""
    run_id: str = ""
    schema_version: int = SCHEMA_VERSION
    # latency over the timed iterations, per batch
    latency_mean_ms: float | None = None
    latency_std_ms: float | None = None
    latency_min_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    latency_scope: str = ""
    throughput_ips: float | None = None
    # GPU runners (latency_scope "device"): synchronised host time of the same timed iterations, and a
    # second loop timed end to end (host input -> host output, both copies included)
    host_latency_p50_ms: float | None = None
    e2e_latency_p50_ms: float | None = None
    e2e_latency_p99_ms: float | None = None
    e2e_throughput_ips: float | None = None
    speedup_vs_pytorch: float | None = None
    #: why this row's speedup is not to be trusted ("" when nothing is known against it): the machine was
    #: busy while this row or the baseline was timed, or the baseline drifted during the run (measure/load.py).
    speedup_flag: str = ""
    cv: float | None = None
    iqr_over_median: float | None = None
    drift_over_median: float | None = None
    #: half the width of the p50's 95% confidence interval over the p50 (measure/stats.py ``median_ci``).
    p50_ci_over_median: float | None = None
    noisy: bool | None = None
    iterations: int | None = None
    rounds: int | None = None
    #: each round's own p50 (JSON list, ms) when rounds > 1: the run-to-run spread ``compare`` judges changes by.
    round_p50s_ms: str = ""
    warmup_iterations: int | None = None
    measured_s: float | None = None
    threads: int | None = None
    # the machine while the timed loop ran (measure/load.py): other processes' CPU use in cores, the share of
    # the time the hypervisor stole, the 1-minute load average before and after, and the busy verdict
    other_cpu_cores: float | None = None
    cpu_steal_pct: float | None = None
    load_avg_1m_before: float | None = None
    load_avg_1m_after: float | None = None
    machine_busy: bool | None = None
    #: the baseline's p50 re-measured at the end of the run (baseline rows only): drift shows in speedup_flag.
    recheck_p50_ms: float | None = None
    # one-off costs
    convert_s: float | None = None
    first_inference_ms: float | None = None
    artifact_mb: float | None = None
    #: the converted artifact, relative to ``output.models_dir`` ("" when there is none, e.g. eager); read by export.
    artifact: str = ""
    peak_host_mb: float | None = None
    peak_device_mb: float | None = None
    cache_hit: bool | None = None
    # fidelity against the FP32 eager reference
    fidelity_ok: bool | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    cosine_min: float | None = None
    sqnr_db: float | None = None
    top1_agreement: float | None = None
    verify_samples: int | None = None
    mean_abs_err: float | None = None
    top5_overlap: float | None = None
    #: per-output metrics (JSON list) when the model has several outputs; the fields above are the worst.
    fidelity_outputs: str = ""
    # accuracy mode (verify.dataset): this variant's and the FP32 reference's accuracy on the labelled set
    top1_acc: float | None = None
    top5_acc: float | None = None
    ref_top1_acc: float | None = None
    ref_top5_acc: float | None = None
    # which inputs verified this row, what its outputs were compared with, and which inputs calibrated it (INT8 only)
    verify_inputs: str = ""
    reference: str = ""
    calibration_inputs: str = ""
    note: str = ""
    #: "variant", or "harness" for the null backend's row: the tool's own cost, never a speedup or a winner.
    role: str = "variant"
    # where the cell ran on a Ray cluster (docs/ray.md); empty in local runs, whose JSON holds the environment
    node: str = ""
    node_cpu: str = ""
    node_isa: str = ""
    node_gpu: str = ""
    #: ``--per-node`` runs: the Ray node the cell was pinned to (its name in the cluster). Part of the cell's
    #: identity (``cell_id``), so the same variant on two nodes is two cells; empty in every other run.
    pinned_node: str = ""
    #: when the cell held its node's measurement slot (Unix seconds; Ray runs): no two overlap on one node
    measure_start_unix_s: float | None = None
    measure_end_unix_s: float | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # a status no reader knows is an error here, not a mystery later

    def update(self, **values: Any) -> None:
        """Set fields by name; a name that is not a field raises (a typo must not vanish from the files)."""
        unknown = sorted(set(values) - _FIELD_SET)
        if unknown:
            raise TypeError(f"ResultRow has no field(s) {', '.join(unknown)}")
        for key, value in values.items():
            setattr(self, key, value)
        self.status = Status(self.status)

    def add_note(self, text: str) -> None:
        """Append ``text`` to ``note`` (see ``joined_note``)."""
        self.note = joined_note(self.note, text)

    @property
    def cell_id(self) -> str:
        return cell_id(self.model, self.variant, self.batch_size, self.device, self.pinned_node)


def cell_id(model: str, variant: str, batch_size: int, device: str, pinned_node: str = "") -> str:
    """A cell's key in the files (``samples_ms``, the journal): ``resnet50|onnxruntime:int8|8|cpu``, and
    ``...|cpu|node-a`` for a cell pinned to a node (``--per-node``); unpinned keys are as they always were."""
    key = f"{model}|{variant}|{batch_size}|{device}"
    return f"{key}|{pinned_node}" if pinned_node else key


FIELD_NAMES = [f.name for f in fields(ResultRow)]
_FIELD_SET = frozenset(FIELD_NAMES)
_FIELD_TYPES = {f.name: f.type for f in fields(ResultRow)}


def fill_speedups(rows: list[ResultRow]) -> None:
    """Set ``speedup_vs_pytorch`` = p50 of the baseline (``pytorch:fp32``) row of the same model/batch/device
    (and pinned node: a ``--per-node`` row is compared with its own node's baseline) over this row's p50.

    The harness's own row (the null backend) gets ``role`` "harness" and no speedup: its "speedup" of a
    million would otherwise top any ``df.speedup_vs_pytorch.idxmax()``.
    """
    from infertune.ladder import BASELINE
    from infertune.measure.load import speedup_caveats

    base: dict[tuple[str, int, str, str], ResultRow] = {}
    for r in rows:
        if r.variant == BASELINE and r.latency_p50_ms:
            base[(r.model, r.batch_size, r.device, r.pinned_node)] = r
    for r in rows:
        r.role = "harness" if r.backend in HARNESS_BACKENDS else "variant"
        ref = base.get((r.model, r.batch_size, r.device, r.pinned_node))
        measured = ref is not None and r.latency_p50_ms and r.role == "variant"
        r.speedup_vs_pytorch = (ref.latency_p50_ms / r.latency_p50_ms) if measured else None  # type: ignore[union-attr, operator]
        r.speedup_flag = "; ".join(speedup_caveats(r, ref)) if measured else ""


@dataclass
class ResultFiles:
    """The CSV and JSON files of one run, rewritten after each row."""

    csv_path: Path
    json_path: Path
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    rows: list[ResultRow] = field(default_factory=list)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)
    #: the run's state: status (running | complete | interrupted | failed), cells planned, model digest, resumes.
    run: dict[str, Any] = field(default_factory=dict)
    #: the rows' order in the files (the plan's: ladder, then batch size), whatever order they arrive in.
    order: Callable[[ResultRow], Any] | None = None

    def add(self, row: ResultRow, samples_ms: list[float] | None = None) -> None:
        self.rows.append(row)
        if samples_ms is not None:
            # nanosecond resolution is what the clock gives: more digits only bloat the JSON
            self.samples_ms[row.cell_id] = [round(s, 6) for s in samples_ms]
        self.write()

    def find(self, cell_id: str) -> ResultRow | None:
        return next((r for r in self.rows if r.cell_id == cell_id), None)

    def update(self, row: ResultRow, samples_ms: list[float] | None) -> None:
        """Replace the row of the same cell (a later measuring round pooled into it) and rewrite."""
        self.rows = [row if r.cell_id == row.cell_id else r for r in self.rows]
        if samples_ms is not None:
            self.samples_ms[row.cell_id] = [round(s, 6) for s in samples_ms]
        self.write()

    def write(self) -> None:
        if self.order is not None:
            self.rows.sort(key=self.order)
        fill_speedups(self.rows)
        _atomic_write(self.csv_path, _csv_text(self.rows))
        doc = {
            "schema_version": SCHEMA_VERSION,
            "config": self.config,
            "environment": self.environment,
            "run": self.run,
            "rows": [asdict(r) for r in self.rows],
            "samples_ms": self.samples_ms,
        }
        _atomic_write(self.json_path, json.dumps(_jsonable(doc), indent=1))


def _csv_text(rows: list[ResultRow]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELD_NAMES, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _atomic_write(path: Path, text: str) -> None:
    """Write a temporary file beside ``path``, fsync it, rename it over ``path``: readers see the old
    file or the new one, never half of one (a failed write leaves the old file and no temporary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp's 0600 would make results unreadable to colleagues
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask. Read once, at import: ``os.umask`` can only be read by setting it, which must
    not race with other threads."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: what ``open()`` / ``mkdir()`` would have created (0644 / 0755 under the usual umask): outputs written
#: through ``tempfile`` (0600 / 0700) get these, so colleagues can read results and exports.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


#: the files of one run, beside its stem (``results/benchmark_results_<TS>``); the journal is its identity.
RUN_FILE_SUFFIXES = (".jsonl", ".csv", ".json", ".config.yaml", ".log")


def json_path_for(csv_path: Path | str) -> Path:
    """The JSON file written beside a results CSV."""
    return Path(csv_path).with_suffix(".json")


def journal_path_for(csv_path: Path | str) -> Path:
    """The JSONL journal written beside a results CSV (one fsynced line per finished cell)."""
    return Path(csv_path).with_suffix(".jsonl")


def read_rows(path: Path | str) -> list[ResultRow]:
    """Read rows from a results CSV or JSON file (the format is chosen by the suffix)."""
    path = Path(path)
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
        raw = doc["rows"]
    else:
        with path.open(newline="") as f:
            raw = list(csv.DictReader(f))
    return [_row_from_dict(d) for d in raw]


def read_samples(path: Path | str) -> dict[str, list[float]]:
    """Raw per-iteration latencies (ms) by cell id, from the JSON beside a results CSV."""
    jp = Path(path) if Path(path).suffix == ".json" else json_path_for(path)
    if not jp.exists():
        return {}
    return json.loads(jp.read_text()).get("samples_ms", {})


def _row_from_dict(d: dict[str, Any]) -> ResultRow:
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        if name not in _FIELD_TYPES:
            continue  # a newer schema's extra column: ignore rather than fail
        kwargs[name] = _coerce(str(_FIELD_TYPES[name]), value)
    return ResultRow(**kwargs)


def _coerce(type_name: str, value: Any) -> Any:
    if value is None or value == "":
        return None if "None" in type_name else ("" if "str" in type_name else value)
    if type_name.startswith("int"):
        return int(float(value))
    if type_name.startswith("bool"):
        return value if isinstance(value, bool) else str(value).lower() in ("true", "1")
    if type_name.startswith("float"):
        return float(value)
    return value


def load_results(path: Path | str) -> Any:
    """Return the rows of a results CSV or JSON file as a pandas DataFrame (one row per cell)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        from infertune.errors import InfertuneError

        raise InfertuneError(f"no results file at {path}: pass the CSV or JSON a run wrote under results/")
    return pd.DataFrame([asdict(r) for r in read_rows(path)], columns=FIELD_NAMES)
