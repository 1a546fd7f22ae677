"""Turn LoadGen trials into scenario rows: the identity every row of a variant carries, the trial a row
reports (a server row: the highest VALID QPS, else the lowest p99 seen), and its JSON details."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infertune.scenario.cost import cost_per_million
from infertune.scenario.rows import RowDetails, ScenarioRow, TrialPoint
from infertune.scenario.settings import BatchPolicy
from infertune.scenario.sut import TrialOutcome


@dataclass(frozen=True)
class RowIdentity:
    """What every row of one served variant says about the variant (its fidelity came from the verify step)."""

    model: str
    variant: str
    backend: str
    precision: str
    device: str
    weights: str = ""
    run_id: str = ""
    fidelity_ok: bool | None = None
    cosine_min: float | None = None
    note: str = ""

    def row(self, scenario: str, policy: BatchPolicy | None = None, threads: int | None = None, **fields: object) -> ScenarioRow:
        row = ScenarioRow(model=self.model, variant=self.variant, backend=self.backend, precision=self.precision,
                          device=self.device, scenario=scenario, weights=self.weights, run_id=self.run_id,
                          fidelity_ok=self.fidelity_ok, cosine_min=self.cosine_min, note=self.note)
        if policy is not None:
            row.max_batch, row.max_delay_ms, row.instances = policy.max_batch, policy.max_delay_ms, policy.instances
        row.threads_per_instance = threads
        for key, value in fields.items():
            setattr(row, key, value)
        return row


def reported_trial(outcomes: Sequence[TrialOutcome]) -> TrialOutcome:
    """The trial a row shows: the VALID one with the highest target QPS, else the one with the lowest p99."""
    valid = [o for o in outcomes if o.result.valid]
    if valid:
        return max(valid, key=lambda o: (o.trial.target_qps if o.trial.scenario == "server" else 0.0, o.result.qps or 0))
    measured = [o for o in outcomes if o.result.latency_p99_ms is not None]
    return min(measured, key=lambda o: o.result.latency_p99_ms) if measured else outcomes[-1]


def scenario_row(identity: RowIdentity, outcomes: Sequence[TrialOutcome], threads: int,
                 price_per_hour: float | None, results_dir: Path) -> tuple[ScenarioRow, RowDetails]:
    """One row (and its details) for the trials of one (scenario, variant, policy)."""
    chosen = reported_trial(outcomes)
    r = chosen.result
    # a server row's rate is the arrival rate LoadGen sustained (MLPerf's server result); others what it measured
    rate = chosen.trial.target_qps if chosen.trial.scenario == "server" and r.valid else r.qps
    row = identity.row(
        chosen.trial.scenario, chosen.policy, threads,
        status="failed" if chosen.error else "ok", error=chosen.error,
        verdict=r.verdict, reasons="; ".join(r.reasons),
        latency_bound_ms=chosen.trial.latency_bound_ms if chosen.trial.scenario == "server" else None,
        target_qps=chosen.trial.target_qps if chosen.trial.scenario in ("server", "offline") else None,
        qps=r.qps, reported_latency_ms=r.reported_latency_ms,
        latency_p50_ms=r.latency_p50_ms, latency_p90_ms=r.latency_p90_ms, latency_p99_ms=r.latency_p99_ms,
        latency_p999_ms=r.latency_p999_ms, latency_mean_ms=r.latency_mean_ms, latency_max_ms=r.latency_max_ms,
        query_count=r.query_count, duration_s=r.duration_s, batch_mean=chosen.batches.mean_size(),
        trials=len(outcomes), price_per_hour=price_per_hour, cost_per_million=cost_per_million(price_per_hour, rate),
        loadgen_logs=_relative(chosen.log_dir, results_dir),
    )
    points = [TrialPoint(o.trial.target_qps if o.trial.scenario == "server" else None, o.result.qps,
                         o.result.latency_p99_ms, o.result.reported_latency_ms, o.result.verdict) for o in outcomes]
    return row, RowDetails(chosen.batches.histogram(), points)


def _relative(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path)
