"""One run, as the parent sees it: plan -> executor -> sink. The parent never runs the user's model.

``plan.make_plan`` decides the device, the ladder and the cells; the run's files are claimed; the
executor (``benchmark.isolation``) runs the reference job (load the model, check its input shape,
compute its FP32 outputs per batch size) and then, round after round, one job per variant; the sink
journals each row (fsynced) and folds it into the CSV/JSON. If the reference cannot be computed
because the input is wrong, the claimed files are removed and the error is one line (exit 2); if its
worker crashes, hangs or runs out of memory, every planned cell gets a row saying so and the run ends
with ``RunFailed`` (exit 3). An interrupt (Ctrl-C, SIGTERM) marks the cells in progress
``interrupted``; ``--resume`` (``infertune.resume``) later runs only the cells still missing.
With ``--per-node`` the executor names the cluster's nodes before the sink opens, and every cell is
planned once per node (``plan.place_on_nodes``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infertune import errors, interrupts
from infertune.config import RunConfig
from infertune.errors import ConfigError, InfertuneError, RunFailed
from infertune.executors.base import (
    Event,
    Executor,
    ExecutorSettings,
    Job,
    JobFailedEvent,
    ReferenceEvent,
    RowEvent,
    StageEvent,
    executor_class,
    make_executor,
)
from infertune.journal import Journal
from infertune.ladder import BASELINE
from infertune.plan import Plan, concurrent_jobs, make_plan, place_on_nodes
from infertune.reference import Reference
from infertune.results import ResultFiles, ResultRow, Status, journal_path_for
from infertune.resume import ResumeState, run_id_of
from infertune.sink import Sink, claim_stem, release_stem, timestamp
from infertune.variants import Variant

Log = Callable[[str], None]


@dataclass
class RunResult:
    """What a run produced: the rows and the files holding them."""

    rows: list[ResultRow]
    csv_path: Path
    json_path: Path
    config_path: Path
    log_path: Path
    environment: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    journal_path: Path | None = None


def run(cfg: RunConfig, log: Log = print, progress: Any = None, measure: bool = True,
        resume: ResumeState | None = None) -> RunResult:
    """Run the whole ladder described by ``cfg``; returns the rows and where they were written.

    Args:
        cfg: the validated configuration.
        log: one-line messages for the user (warnings, cache reuse).
        progress: an object with ``start(total)``, ``stage(variant, batch, stage)``, ``advance()`` and
            ``stop()`` (see ``infertune.progress``), or None.
        measure: False for ``infertune verify``: every cell is prepared and verified, never timed
            (files are named ``verify_results_<TS>``).
        resume: an interrupted run to continue (``infertune.resume.load_resume``); ``cfg`` must be its
            saved config. Its journal is replayed and only the cells it lacks are run.

    Raises:
        RunInterrupted: SIGINT or SIGTERM stopped the run; the files hold every finished row, the cells
            in progress are recorded as ``interrupted`` and ``summary`` says how to resume.
        RunFailed: the FP32 reference crashed, hung or ran out of memory; every cell has a row saying so.
        InfertuneError: bad input (see ``infertune.preflight``; the model, its weights or input shape).
    """
    with interrupts.catch_signals():
        return _run(cfg, log, progress, resume, measure)


def _run(cfg: RunConfig, log: Log, progress: Any, resume: ResumeState | None, measure: bool) -> RunResult:
    from infertune import env as envmod
    from infertune.models import model_libraries

    executor_class(cfg.benchmark.isolation).get_ready(model_libraries(cfg.model.name))
    plan = make_plan(cfg, measure, log)
    if resume is not None and resume.environment.get("device") not in (None, plan.device):
        raise ConfigError(f"cannot resume {resume.stem.name} here: it ran on {resume.environment['device']}, "
                          f"this machine runs on {plan.device}; start a new run instead")
    environment = dict(resume.environment) if resume is not None and resume.environment else envmod.capture(plan.threads)
    environment.update(device=plan.device, requested_device=cfg.benchmark.device)
    stem = resume.stem if resume is not None else claim_stem(Path(cfg.output.dir), "benchmark_results" if measure
                                                             else "verify_results")
    executor = make_executor(cfg.benchmark.isolation, ExecutorSettings(
        cell_timeout_s=cfg.benchmark.cell_timeout_s, variant_timeout_s=cfg.benchmark.variant_timeout_s,
        log_path=f"{stem}.log", config=cfg, concurrent_jobs=concurrent_jobs(cfg, plan.device)))
    try:
        if cfg.ray.per_node:
            plan = _on_every_node(plan, executor, stem, resume, log)
        sink = _open_sink(plan, stem, environment, resume, log, progress)
    except BaseException:
        executor.close()  # a local Ray instance started to list the nodes stops here
        raise
    result = RunResult(sink.files.rows, sink.files.csv_path, sink.files.json_path, Path(f"{stem}.config.yaml"),
                       Path(f"{stem}.log"), environment, sink.notices, journal_path=sink.journal.path)
    tmp = Path(tempfile.mkdtemp(prefix="infertune-"))
    try:
        if progress:
            progress.start(plan.cells_planned * plan.rounds)
        try:
            reference = _reference(plan, executor, sink, tmp, resume, fresh=resume is None)
            _variants(plan, executor, sink, reference, resume)
        except interrupts.RunInterrupted as stop:
            sink.interrupted(stop)
            raise
        sink.finish()
    except RunFailed as failed:
        result.rows = sink.files.rows
        failed.result = result
        raise
    finally:
        executor.close()
        if progress:
            progress.stop()
        _rm_tree(tmp)
    result.rows = sink.files.rows
    return result


def _on_every_node(plan: Plan, executor: Executor, stem: Path, resume: ResumeState | None, log: Log) -> Plan:
    """``--per-node``: the plan with the cluster's nodes (a resumed run keeps its own); a cluster that cannot
    run it ends the run before any work, and a new run's claimed files go."""
    try:
        recorded = resume.run.get("nodes") if resume is not None else None
        plan, lines = place_on_nodes(plan, executor.nodes(), recorded)
    except InfertuneError:
        if resume is None:
            release_stem(stem)
        raise
    for line in lines:
        log(line)
    return plan


def _open_sink(plan: Plan, stem: Path, environment: dict[str, Any], resume: ResumeState | None, log: Log,
               progress: Any) -> Sink:
    """The run's files (new, or an interrupted run's replayed from its journal) and the sink that keeps them."""
    run_state: dict[str, Any] = {"status": "running", "cells_planned": plan.cells_planned, "rounds": plan.rounds}
    if plan.pinned:  # the nodes this run is made of: --resume runs their missing cells on them, and on no others
        run_state["nodes"] = list(plan.places)
    files = ResultFiles(stem.with_suffix(".csv"), stem.with_suffix(".json"), config=plan.cfg.model_dump(mode="json"),
                        environment=environment, run=run_state, order=plan.row_order)
    sink = Sink(files, Journal(journal_path_for(files.csv_path)), run_id_of(stem), log, progress)
    if resume is not None:
        run_state.update(model_digest=resume.run.get("model_digest"),
                         resumed=[*resume.run.get("resumed", []), timestamp()])
        for rec in resume.records:
            if rec.status != Status.INTERRUPTED:  # interrupted cells run again
                sink.record(resume.row(rec), rec.samples_ms, rec.round)
    else:
        _write_config(Path(f"{stem}.config.yaml"), plan.cfg)
    sink.journal.open()
    files.write()
    return sink


def _reference(plan: Plan, executor: Executor, sink: Sink, workdir: Path, resume: ResumeState | None,
               fresh: bool) -> Reference:
    """Run the reference job; a wrong input ends the run as bad input, a dead worker as ``RunFailed``."""
    from infertune import preflight

    job = plan.reference_job(str(workdir))
    outcomes = _execute(executor, [job], sink)
    outcome = outcomes[-1] if outcomes else JobFailedEvent(job.job_id, Status.CRASHED, "the reference job",
                                                           "it ended without a result")
    if isinstance(outcome, JobFailedEvent):
        if outcome.bad_input:
            error_class = getattr(errors, outcome.error_type, InfertuneError)
            _release_if(fresh, sink)
            raise error_class(outcome.reason)
        raise _fail_every_cell(plan, sink, outcome)
    reference = outcome.reference
    if resume is not None and resume.run.get("model_digest") not in (None, reference.digest):
        raise ConfigError(f"cannot resume {resume.stem.name}: the model's weights now differ from the run's "
                          f"(digest {reference.digest} vs {resume.run['model_digest']}; were pretrained weights "
                          "downloaded one time and not the other?); start a new run instead")
    try:
        preflight.check_artifact_space(plan.cfg, list(plan.ladder), reference.weights_mb)
    except InfertuneError:
        _release_if(fresh, sink)
        raise
    sink.files.run["model_digest"] = reference.digest
    sink.files.write()
    return reference


def _release_if(fresh: bool, sink: Sink) -> None:
    """Bad input found before any row: a new run's claimed files go (nothing half-written stays)."""
    if fresh:
        release_stem(sink.files.csv_path.with_suffix(""))


def _fail_every_cell(plan: Plan, sink: Sink, failed: JobFailedEvent) -> RunFailed:
    """The reference cannot be computed: a row for every cell still missing; the error to end the run with."""
    verb = {Status.TIMEOUT: "timed out", Status.CRASHED: "crashed"}.get(failed.status, "failed")
    message = f"the FP32 reference {verb} in {failed.stage}: {failed.reason}"
    status = failed.status if failed.status in (Status.CRASHED, Status.TIMEOUT) else Status.FAILED
    have = {r.cell_id for r in sink.files.rows}
    rows = []
    for variant, batch, node in plan.cells():
        if plan.cell_id(variant, batch, node) not in have:
            row = plan.row(variant, batch, sink.run_id, node=node)
            row.update(status=status, error=f"not run: {message}")
            rows.append(row)
    sink.fill(rows, durable=False)  # not journaled: --resume runs these cells again
    sink.files.run.update(status="failed", failure=message)
    sink.files.write()
    return RunFailed(f"{message}. Every cell has a row saying so in {sink.files.csv_path}; once the model is fixed "
                     f"(or benchmark.cell_timeout_s / memory raised): infertune run --resume {sink.files.csv_path}")


def _variants(plan: Plan, executor: Executor, sink: Sink, reference: Reference, resume: ResumeState | None) -> None:
    """Every round: rows for unavailable variants (round 1), then one job per variant with cells to run."""
    done = resume.done() if resume is not None else set()
    for round_index in range(plan.rounds):
        sink.files.run["round"] = round_index + 1

        def todo(variant: Variant, batch: int, node: str, r: int = round_index) -> bool:
            return (r, plan.cell_id(variant, batch, node)) not in done

        cells = [(v, b, n) for v, b, n in plan.cells() if todo(v, b, n)]
        skipped = plan.cells_planned - len(cells)
        unavailable = [(v, b, n) for v, b, n in cells if not plan.availability[v.name].ok]
        if round_index == 0:
            rows = []
            for v, batch, node in unavailable:
                row = plan.row(v, batch, sink.run_id, reference.weights_tag, node)
                row.update(status=Status.UNAVAILABLE, error=plan.availability[v.name].reason)
                rows.append(row)
            sink.fill(rows)
        else:
            skipped += len(unavailable)
        _not_on_the_cluster(plan, sink, reference, [c for c in cells if c[2] in plan.absent_nodes
                                                    and plan.availability[c[0].name].ok], round_index)
        if sink.progress and skipped:
            sink.progress.advance(skipped)
        jobs = plan.variant_jobs(reference, sink.run_id, round_index, todo, per_cell=_job_per_cell(plan, executor))
        rechecks = _recheck_jobs(plan, sink, reference) if round_index == plan.rounds - 1 else []
        _execute(executor, jobs, sink, round_index, rechecks=rechecks)


def _job_per_cell(plan: Plan, executor: Executor) -> bool:
    """``benchmark.job_per_cell``, else whether the executor runs several jobs at once: a job measures its
    cells in turn between preparations, and every other job's next preparation waits for its measurements (the
    slot of executors/slot.py), so jobs of several cells prepare in lock step, a phase per batch size; a job
    per cell prepares everything at once and measures it in one stretch (docs/measurement.md)."""
    setting = plan.cfg.benchmark.job_per_cell
    return setting if setting is not None else (executor.jobs_at_once or 1) > 1


def _not_on_the_cluster(plan: Plan, sink: Sink, reference: Reference, cells: list[tuple[Variant, int, str]],
                        round_index: int) -> None:
    """Cells of a resumed ``--per-node`` run whose node is gone: a row (or a round's note) saying so, not
    journaled, so that ``--resume`` runs them once the node is back."""
    for variant, batch, node in cells:
        row = plan.row(variant, batch, sink.run_id, reference.weights_tag, node)
        row.update(status=Status.FAILED, error=f"not run: node {node} of this run is not in the Ray cluster now; "
                   f"infertune run --resume {sink.files.csv_path} runs it once the node is back")
        sink.record(row, None, round_index)
        if sink.progress:
            sink.progress.advance()


def _recheck_jobs(plan: Plan, sink: Sink, reference: Reference) -> list[Job]:
    """The baseline, timed again at the end of the run: a machine that changed during the run shows as the
    baseline's drift, and every speedup of that batch size says so (``measure.load.speedup_caveats``).
    Handed over with the last round's jobs, it measures after all of them (``Executor.run_then``: with jobs side
    by side it prepares beside them). A ``--per-node`` run rechecks each node's baseline on its node."""
    if not plan.cfg.benchmark.baseline_check or plan.timing is None:
        return []
    from infertune.measure.load import recheck_policy

    jobs = plan.variant_jobs(reference, sink.run_id, 0, lambda v, b, n: v.name == BASELINE)
    return [dataclasses.replace(job, job_id=f"{job.job_id.rsplit('@', 1)[0]}@recheck", verify_outputs=False,
                                timing=recheck_policy(plan.timing)) for job in jobs]


def _execute(executor: Executor, jobs: Sequence[Job], sink: Sink, round_index: int = 0,
             rechecks: Sequence[Job] = ()) -> list[Event]:
    """Hand ``jobs`` and ``rechecks`` (the end-of-run check of the baseline, measured after every job of
    ``jobs``: ``Executor.run_then``) to the executor and each event to the sink; returns the reference's
    outcome, if any.

    Leaving early (an interrupt, a failed write) closes the executor's iterator, which kills what still runs.
    """
    sink.expect(list(jobs), round_index)
    recheck_ids = {job.job_id: job for job in rechecks}
    recheck_rows: list[ResultRow] = []
    events = executor.run_then(jobs, rechecks)
    outcomes: list[Event] = []
    try:
        for event in events:
            recheck = recheck_ids.get(getattr(event, "job_id", ""))
            if recheck is None:
                sink.take(event)
                if isinstance(event, (ReferenceEvent, JobFailedEvent)):
                    outcomes.append(event)
            elif isinstance(event, RowEvent):
                recheck_rows.append(event.row)
            elif isinstance(event, StageEvent) and sink.progress:
                sink.progress.stage(f"{recheck.label} (end-of-run check)", event.batch or "", event.stage)
    finally:
        events.close()
    if rechecks:
        sink.recheck(recheck_rows)
    return outcomes


def _write_config(path: Path, cfg: RunConfig) -> None:
    import yaml

    path.write_text("# resolved configuration of this run (defaults filled in)\n"
                    + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def _rm_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

