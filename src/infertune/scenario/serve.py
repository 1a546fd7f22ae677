"""Serve one variant through the scenarios asked for: the worker-side plan that turns a ``ServingPlan``
into LoadGen trials and rows.

Offline runs first, once per (max_batch, instances): its throughput is both a row and the upper end of the
server search. Single-stream serves one query at a time (batch 1, one instance), multi-stream one query of
``samples_per_query`` samples at a time, as one batch per instance count. The server scenario runs every
policy at ``server_qps`` when given, else searches the highest VALID QPS (``search.search_server``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from infertune.scenario.records import RowIdentity, scenario_row
from infertune.scenario.rows import RowDetails, ScenarioRow
from infertune.scenario.search import SearchOutcome, ServerPoint, search_server
from infertune.scenario.session import ServingSession
from infertune.scenario.settings import SCENARIOS, BatchPolicy, TrialSettings
from infertune.scenario.sut import TrialOutcome

EmitRow = Callable[[ScenarioRow, RowDetails], None]
#: the server search's result for this variant: (best row id or None, best VALID QPS, the user's message).
EmitOutcome = Callable[[str | None, float, str], None]


@dataclass(frozen=True)
class ServingPlan:
    """What to run for each variant (picklable: it travels to the worker inside the job).

    Attributes:
        scenarios: a subset of ``SCENARIOS``, run in that order.
        policies: the batch policies the server scenario tries (offline uses their max_batch × instances).
        trial: LoadGen settings shared by every trial (its scenario and rate are set per trial).
        server_qps: run the server scenario at this rate only; None: search the best.
        search_budget_s: the server search stops before a trial that would end later (None: no bound).
        rel_tol: the search's precision on QPS.
        floor_qps: a VALID server QPS an earlier variant reached: only better configurations are searched.
        price_per_hour: the machine's price, for the cost per million inferences.
    """

    scenarios: tuple[str, ...]
    policies: tuple[BatchPolicy, ...]
    trial: TrialSettings
    server_qps: float | None = None
    search_budget_s: float | None = None
    rel_tol: float = 0.05
    floor_qps: float = 0.0
    price_per_hour: float | None = None


class TrialFailed(Exception):
    """The SUT's runtime raised during a trial: the scenario's row says so and its numbers are not used."""


def serve_variant(plan: ServingPlan, session: ServingSession, identity: RowIdentity, results_dir: Path,
                  emit_row: EmitRow, emit_outcome: EmitOutcome, stage: Callable[[str], None] = lambda s: None) -> None:
    """Run ``plan.scenarios`` for one variant; every (scenario, policy) becomes one row through ``emit_row``."""
    offline: dict[tuple[int, int], float] = {}
    serving = [""]  # the scenario in progress: every stage names it (the job's ``lost`` reads it back)

    def say(text: str) -> None:
        stage(f"{serving[0]}: {text}")

    def row(outcomes: list[TrialOutcome], policy: BatchPolicy) -> ScenarioRow:
        r, details = scenario_row(identity, outcomes, session.threads_per_instance(policy), plan.price_per_hour,
                                  results_dir)
        emit_row(r, details)
        return r

    def offline_qps(policy: BatchPolicy) -> float:
        key = (policy.max_batch, policy.instances)
        if key not in offline:
            full = BatchPolicy(policy.max_batch, 0.0, policy.instances)
            say(f"offline run {full.label}")
            outcomes = [_run(session, replace(plan.trial, scenario="offline", target_qps=session.estimate_qps(full)), full)]
            if not outcomes[0].result.valid and outcomes[0].result.qps:  # the estimate was off: plan with what LoadGen saw
                outcomes.append(_run(session, replace(plan.trial, scenario="offline", target_qps=outcomes[0].result.qps), full))
            offline[key] = row(outcomes, full).qps or 0.0
        return offline[key]

    for scenario in (s for s in SCENARIOS if s in plan.scenarios):
        serving[0] = scenario
        try:
            _scenario(scenario, plan, session, offline_qps, row, emit_outcome, say)
        except TrialFailed as err:
            emit_row(identity.row(scenario, status="failed", error=str(err)[:500]), RowDetails())


def _scenario(scenario: str, plan: ServingPlan, session: ServingSession, offline_qps: Callable[[BatchPolicy], float],
              row: Callable[[list[TrialOutcome], BatchPolicy], ScenarioRow], emit_outcome: EmitOutcome,
              stage: Callable[[str], None]) -> None:
    if scenario == "offline":
        for policy in plan.policies:
            offline_qps(policy)
    elif scenario == "single-stream":
        single = BatchPolicy(1, 0.0, 1)
        stage("one query at a time")
        expected_ms = 1000.0 / session.estimate_qps(single)
        row([_run(session, replace(plan.trial, scenario=scenario, latency_bound_ms=expected_ms), single)], single)
    elif scenario == "multi-stream":
        for instances in sorted({p.instances for p in plan.policies}):
            multi = BatchPolicy(plan.trial.samples_per_query, 0.0, instances)
            stage(f"{multi.max_batch} samples per query, x{instances}")
            expected_ms = 1000.0 * multi.max_batch / session.estimate_qps(multi)
            row([_run(session, replace(plan.trial, scenario=scenario, latency_bound_ms=expected_ms), multi)], multi)
    else:
        _server(plan, session, offline_qps, row, emit_outcome, stage)


def _server(plan: ServingPlan, session: ServingSession, offline_qps: Callable[[BatchPolicy], float],
            row: Callable[[list[TrialOutcome], BatchPolicy], ScenarioRow], emit_outcome: EmitOutcome,
            stage: Callable[[str], None]) -> None:
    by_policy: dict[BatchPolicy, list[TrialOutcome]] = {}

    def trial(policy: BatchPolicy, qps: float) -> ServerPoint:
        stage(f"{policy.label} at {qps:.1f} QPS")
        outcome = _run(session, replace(plan.trial, scenario="server", target_qps=qps), policy)
        by_policy.setdefault(policy, []).append(outcome)
        return ServerPoint(policy, qps, outcome.result.valid, outcome.result.latency_p99_ms)

    if plan.server_qps is not None:
        for policy in plan.policies:
            trial(policy, plan.server_qps)
        search = SearchOutcome(best=None)
    else:
        search = search_server(plan.policies, offline_qps, trial, budget_s=plan.search_budget_s,
                               trial_s=lambda qps: _trial_seconds(plan.trial, qps), rel_tol=plan.rel_tol,
                               floor_qps=plan.floor_qps)
    best_id = None
    for policy, outcomes in by_policy.items():
        r = row(outcomes, policy)
        if search.best is not None and search.best.policy == policy:
            best_id = r.row_id
    if plan.server_qps is None:
        emit_outcome(best_id, search.best.target_qps if search.best else 0.0,
                     search.message(plan.trial.latency_bound_ms) + _pruned_text(search))


def _trial_seconds(trial: TrialSettings, qps: float) -> float:
    """How long a LoadGen run at ``qps`` lasts: until its minimum duration and query count are both met (+1 s)."""
    return max(trial.min_duration_ms / 1e3, trial.min_query_count / qps if qps > 0 else 0.0) + 1.0


def _pruned_text(search: SearchOutcome) -> str:
    if not search.pruned:
        return ""
    return "; pruned: " + ", ".join(f"{p.label} ({why})" for p, why in search.pruned)


def _run(session: ServingSession, trial: TrialSettings, policy: BatchPolicy) -> TrialOutcome:
    outcome = session.run(trial, policy)
    if outcome.error:
        raise TrialFailed(f"the runtime failed during a {trial.scenario} trial ({policy.label}): {outcome.error}")
    return outcome
