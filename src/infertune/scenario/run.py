"""``infertune scenario``, as the parent sees it: the run's plan (``plan.make_plan`` at the serving batch
sizes), the FP32 reference job, then one ``ServingJob`` per variant through the same executor as a run;
every scenario row goes to ``scenario_results_<TS>.csv/.json`` as soon as it exists, LoadGen's logs to
``scenario_results_<TS>_loadgen/``.

Variants are served in the ladder's order; each one's server search starts from the best VALID QPS the
earlier ones reached (configurations that cannot beat it are pruned) and gets what is left of the time
budget. The parent never runs the model or LoadGen.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infertune import errors, interrupts
from infertune.config import RunConfig
from infertune.errors import InfertuneError, RunFailed
from infertune.executors.base import (
    Executor,
    ExecutorSettings,
    JobFailedEvent,
    NoticeEvent,
    ReferenceEvent,
    StageEvent,
    make_executor,
)
from infertune.results import Status
from infertune.scenario.job import (
    SERVED,
    ScenarioRowEvent,
    SearchOutcomeEvent,
    ServingJob,
)
from infertune.scenario.rows import RowDetails, ScenarioFiles
from infertune.scenario.serve import ServingPlan
from infertune.scenario.settings import (
    SCENARIOS,
    BatchPolicy,
    TrialSettings,
    import_loadgen,
)

Log = Callable[[str], None]


@dataclass
class ScenarioRunResult:
    """What ``infertune scenario`` produced: the files, the server search's answer and whether it met the bound."""

    files: ScenarioFiles
    log_root: Path
    #: the server search's one-paragraph answer ("" when no search ran).
    server_outcome: str = ""
    #: False when a server search ran and no configuration met the bound.
    bound_met: bool = True
    notices: list[str] = field(default_factory=list)


def policies_of(cfg: RunConfig) -> tuple[BatchPolicy, ...]:
    """Every combination of the config's max_batch × max_delay_ms × instances (batch 1 needs no delay)."""
    sc = cfg.scenario
    out: dict[BatchPolicy, None] = {}
    for b in sc.max_batch:
        for d in sc.max_delay_ms:
            for i in sc.instances:
                out[BatchPolicy(b, 0.0 if b == 1 else d, i)] = None
    return tuple(out)


def serving_batches(policies: Sequence[BatchPolicy], scenarios: Sequence[str], samples_per_query: int) -> tuple[int, ...]:
    """The batch sizes a worker prepares and verifies: every policy's buckets, 1 and multi-stream's query."""
    sizes: set[int] = set()
    if {"server", "offline"} & set(scenarios):
        for p in policies:
            sizes.update(p.buckets())
    if "single-stream" in scenarios:
        sizes.add(1)
    if "multi-stream" in scenarios:
        sizes.add(samples_per_query)
    return tuple(sorted(sizes))


def run_scenarios(cfg: RunConfig, scenarios: Sequence[str], force: bool = False, log: Log = print) -> ScenarioRunResult:
    """Run ``scenarios`` (a subset of ``SCENARIOS``) for every variant of the config's ladder.

    Raises:
        InfertuneError: bad input (no LoadGen, a wrong model or input shape), before any long work.
        RunFailed: the FP32 reference crashed or hung; every row says so.
        RunInterrupted: Ctrl-C / SIGTERM; the files hold every finished row.
    """
    with interrupts.catch_signals():
        return _run(cfg, tuple(s for s in SCENARIOS if s in scenarios), force, log)


def _run(cfg: RunConfig, scenarios: tuple[str, ...], force: bool, log: Log) -> ScenarioRunResult:
    from infertune import env as envmod
    from infertune.plan import make_plan
    from infertune.resume import run_id_of
    from infertune.sink import claim_stem

    import_loadgen()  # missing LoadGen is bad input: say how to install it before any work
    sc = cfg.scenario
    policies = policies_of(cfg)
    batches = serving_batches(policies, scenarios, sc.samples_per_query)
    # its executor runs one job at a time (a LoadGen trial holds the machine), so a job's threads are every core's
    one_at_a_time = {"batch_sizes": list(batches), "concurrent_jobs": 1}
    cfg = cfg.model_copy(update={"benchmark": cfg.benchmark.model_copy(update=one_at_a_time)})
    plan = make_plan(cfg, measure=False, log=log)
    stem = claim_stem(Path(cfg.output.dir), "scenario_results")
    environment = envmod.capture(plan.threads)
    environment.update(device=plan.device, requested_device=cfg.benchmark.device)
    files = ScenarioFiles(stem.with_suffix(".csv"), stem.with_suffix(".json"), config=cfg.model_dump(mode="json"),
                          environment=environment, run={"status": "running", "scenarios": list(scenarios)})
    files.write()
    result = ScenarioRunResult(files, Path(f"{stem}_loadgen"))
    executor = make_executor(cfg.benchmark.isolation, ExecutorSettings(
        cell_timeout_s=cfg.benchmark.cell_timeout_s, log_path=f"{stem}.log"))
    trial = TrialSettings("server", min_duration_ms=int(sc.min_duration_s * 1000), min_query_count=sc.min_query_count,
                          latency_bound_ms=sc.latency_bound_ms, samples_per_query=sc.samples_per_query,
                          sample_count=sc.sample_count, samples_on_device=sc.samples_on_device)
    tmp = Path(tempfile.mkdtemp(prefix="infertune-"))
    try:
        reference = _reference(plan, executor, files, tmp, scenarios, log)
        vjobs = {j.variant.name: j for j in plan.variant_jobs(reference, run_id_of(stem), 0, lambda v, b, n: True)}
        best = _Best()
        if "server" in scenarios and sc.server_qps is None:
            log(_search_estimate(cfg, len(policies), len(vjobs)))
        start = time.monotonic()
        for n, variant in enumerate(plan.ladder, 1):
            identity = f"[{n}/{len(plan.ladder)}] {variant.name}"
            if variant.name not in vjobs:
                _unavailable(files, plan, variant, scenarios, reference.weights_tag, run_id_of(stem))
                log(f"{identity}: unavailable: {plan.availability[variant.name].reason}")
                continue
            budget = None if sc.search_budget_s is None else max(0.0, sc.search_budget_s - (time.monotonic() - start))
            job = ServingJob(
                cells=vjobs[variant.name],
                plan=ServingPlan(scenarios=scenarios, policies=policies, trial=trial, server_qps=sc.server_qps,
                                 search_budget_s=budget, rel_tol=sc.search_tolerance, floor_qps=best.qps,
                                 price_per_hour=sc.price_per_hour),
                results_dir=str(stem.parent), log_root=str(result.log_root), force=force)
            _serve(executor, job, files, best, identity, log, result)
        if "server" in scenarios and sc.server_qps is None:
            result.server_outcome = best.message or "no variant ran the server scenario"
            result.bound_met = best.row_id is not None
            files.mark_best("server", best.row_id, result.server_outcome)
        files.run["status"] = "complete"
        files.write()
    except interrupts.RunInterrupted as stop:
        files.run.update(status="interrupted", stopped_by=stop.signal_name)
        files.write()
        stop.summary = f"the rows finished so far are in {files.csv_path} (+ .json); LoadGen's logs in {result.log_root}"
        raise
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _search_estimate(cfg: RunConfig, policies: int, variants: int) -> str:
    """How long the server search can take, before it starts (the user bounds it with search_budget_s)."""
    from infertune.scenario.search import plan_trials

    sc = cfg.scenario
    trials = plan_trials(policies, sc.search_tolerance) * variants
    worst_min = trials * (sc.min_duration_s + 2.0) / 60
    bound = f"scenario.search_budget_s = {sc.search_budget_s:.0f} s bounds it" if sc.search_budget_s else "no budget set"
    return (f"server search: {policies} batch policies x {variants} variant(s), at most {trials} LoadGen trials of "
            f">= {sc.min_duration_s:g} s (~{worst_min:.0f} min; pruning by offline throughput usually skips many); "
            f"{bound} (--search-budget-s)")


@dataclass
class _Best:
    """The best VALID server configuration over the variants served so far."""

    qps: float = 0.0
    row_id: str | None = None
    message: str = ""

    def offer(self, event: SearchOutcomeEvent) -> None:
        if event.best_row_id is not None and event.best_qps > self.qps:
            self.qps, self.row_id, self.message = event.best_qps, event.best_row_id, event.message
        elif self.row_id is None and not self.message:
            self.message = event.message  # nothing met the bound yet: keep the first variant's best-found text


def _reference(plan: Any, executor: Executor, files: ScenarioFiles, workdir: Path, scenarios: tuple[str, ...],
               log: Log) -> Any:
    """The FP32 reference at every serving batch size, computed in a worker as a run does."""
    outcome: Any = None
    events = executor.run([plan.reference_job(str(workdir))])
    try:
        for event in events:
            if isinstance(event, NoticeEvent):
                log(event.text)
            elif isinstance(event, (ReferenceEvent, JobFailedEvent)):
                outcome = event
    finally:
        events.close()  # an interrupt leaves early: closing kills the worker
    if isinstance(outcome, ReferenceEvent):
        return outcome.reference
    if outcome is None:
        outcome = JobFailedEvent("reference", Status.CRASHED, "the reference job", "it ended without a result")
    if outcome.bad_input:
        raise getattr(errors, getattr(outcome, "error_type", ""), InfertuneError)(outcome.reason)
    message = f"the FP32 reference {outcome.status} in {outcome.stage}: {outcome.reason}"
    for variant in plan.ladder:
        for scenario in scenarios:
            files.add(_identity_row(plan, variant, scenario, "", "", status=str(outcome.status),
                                    error=f"not run: {message}"))
    files.run.update(status="failed", failure=message)
    files.write()
    raise RunFailed(f"{message}. Every scenario has a row saying so in {files.csv_path}")


def _serve(executor: Executor, job: ServingJob, files: ScenarioFiles, best: _Best, identity: str, log: Log,
           result: ScenarioRunResult) -> None:
    last = ""
    events = executor.run([job])
    try:
        for event in events:
            _take(event, files, best, identity, log, result, last)
            if isinstance(event, StageEvent):
                last = event.stage
    finally:
        events.close()  # an interrupt leaves early: closing kills the worker


def _take(event: Any, files: ScenarioFiles, best: _Best, identity: str, log: Log, result: ScenarioRunResult,
          last: str) -> None:
    """One event of a serving job: rows to the files, the search's answer to ``best``, stages to the terminal
    (the worker's own log lines are in the run's ``.log``, written by the executor)."""
    if isinstance(event, ScenarioRowEvent):
        files.add(event.row, event.details)
        r = event.row
        verdict = f"{r.verdict} " if r.verdict else ""
        rate = "" if r.qps is None else f"{r.qps:.1f} samples/s"
        log(f"{identity}  {r.scenario:<13} {r.policy_label:<16} {r.status} {verdict}{rate} {r.error[:160]}".rstrip())
    elif isinstance(event, SearchOutcomeEvent):
        best.offer(event)
        log(f"{identity}  {event.message}")
    elif isinstance(event, StageEvent) and event.stage not in (last, SERVED):
        log(f"{identity}  {event.stage}")
    elif isinstance(event, NoticeEvent):
        result.notices.append(event.text)
        log(event.text)


def _unavailable(files: ScenarioFiles, plan: Any, variant: Any, scenarios: tuple[str, ...], weights: str,
                 run_id: str) -> None:
    for scenario in scenarios:
        files.add(_identity_row(plan, variant, scenario, weights, run_id, status=str(Status.UNAVAILABLE),
                                error=plan.availability[variant.name].reason), RowDetails())


def _identity_row(plan: Any, variant: Any, scenario: str, weights: str, run_id: str, **fields: Any) -> Any:
    from infertune.scenario.records import RowIdentity

    identity = RowIdentity(model=plan.model_label, variant=variant.name, backend=variant.backend,
                           precision=variant.precision, device=plan.device, weights=weights, run_id=run_id)
    return identity.row(scenario, **fields)
