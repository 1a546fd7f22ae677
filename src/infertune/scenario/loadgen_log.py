"""Read LoadGen's verdict and numbers from its detail log (``mlperf_log_detail.txt``, one ``:::MLLOG`` JSON per line).

The detail log is LoadGen's machine-readable record; the summary beside it is for people. Both stay
in the trial's log folder. The reasons of an INVALID run are LoadGen's own flags (performance
constraints, minimum duration, minimum queries, early stopping) and its own reason text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infertune.scenario.settings import REPORTED_PERCENTILE

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"

#: LoadGen's flag -> what it means when false.
_CONSTRAINTS = {
    "result_perf_constraints_met": "the latency bound was not met",
    "result_min_duration_met": "the minimum duration was not met",
    "result_min_queries_met": "the minimum query count was not met",
    "early_stopping_met": "early stopping: too few queries to estimate the percentile",
}


@dataclass(frozen=True)
class LoadgenResult:
    """One LoadGen run as LoadGen saw it. Latencies in ms (per query for multi-stream)."""

    scenario: str
    valid: bool
    reasons: tuple[str, ...] = ()
    #: samples per second: offline/server completed samples, single-/multi-stream derived from latency.
    qps: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_p999_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_max_ms: float | None = None
    query_count: int | None = None
    duration_s: float | None = None
    early_stopping: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        return "VALID" if self.valid else "INVALID"

    @property
    def reported_latency_ms(self) -> float | None:
        """The percentile MLPerf reports for this scenario (p90 single-stream, p99 multi-stream and server)."""
        pct = REPORTED_PERCENTILE.get(self.scenario)
        return {90.0: self.latency_p90_ms, 99.0: self.latency_p99_ms}.get(pct) if pct else None


def read_detail_log(path: Path | str) -> dict[str, Any]:
    """Every ``key: value`` of a detail log (the last value of a repeated key wins)."""
    values: dict[str, Any] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(":::MLLOG "):
                continue
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            values[entry.get("key", "")] = entry.get("value")
            if entry.get("key") == "result_validity":
                values["_validity_time_ms"] = entry.get("time_ms")
    return values


def parse_result(scenario: str, log_dir: Path | str, samples_per_query: int = 1) -> LoadgenResult:
    """The ``LoadgenResult`` of the run whose logs are in ``log_dir``."""
    v = read_detail_log(Path(log_dir) / DETAIL_LOG)
    if "result_validity" not in v:
        raise RuntimeError(f"LoadGen wrote no result to {Path(log_dir) / DETAIL_LOG} (did the run finish?)")
    valid = v.get("result_validity") == "VALID"
    reasons = [text for key, text in _CONSTRAINTS.items() if v.get(key) is False]
    extra = str(v.get("result_invalid_reason") or "").strip()
    if extra:
        reasons.append(extra)
    per_query = "_per_query" if scenario == "multi-stream" else ""

    def ms(pct: str) -> float | None:
        value = v.get(f"result_{pct}_percentile{per_query}_latency_ns")
        return None if value is None else float(value) / 1e6

    mean_key = "result_mean_query_latency_ns" if per_query else "result_mean_latency_ns"
    max_key = "result_max_query_latency_ns" if per_query else "result_max_latency_ns"
    mean_ms = float(v[mean_key]) / 1e6 if v.get(mean_key) is not None else None
    validity_ms = v.get("_validity_time_ms")
    return LoadgenResult(
        scenario=scenario,
        valid=valid,
        reasons=tuple(reasons) if not valid else (),
        qps=_qps(scenario, v, mean_ms, samples_per_query),
        latency_p50_ms=ms("50.00"),
        latency_p90_ms=ms("90.00"),
        latency_p99_ms=ms("99.00"),
        latency_p999_ms=ms("99.90"),
        latency_mean_ms=mean_ms,
        latency_max_ms=float(v[max_key]) / 1e6 if v.get(max_key) is not None else None,
        query_count=int(v["result_query_count"]) if v.get("result_query_count") is not None else None,
        duration_s=float(validity_ms) / 1e3 if validity_ms is not None else None,
        early_stopping=" ".join(str(v.get("early_stopping_result") or "").split()),
        raw=v,
    )


def _qps(scenario: str, v: dict[str, Any], mean_ms: float | None, samples_per_query: int) -> float | None:
    if scenario == "offline":
        value = v.get("result_samples_per_second")
    elif scenario == "server":
        value = v.get("result_completed_samples_per_sec")
    elif scenario == "single-stream":
        value = v.get("result_qps_with_loadgen_overhead")
    else:  # multi-stream: queries arrive back to back; each carries samples_per_query samples
        value = samples_per_query * 1000.0 / mean_ms if mean_ms else None
    return None if value is None else float(value)
