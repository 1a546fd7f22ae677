"""The serving job: one variant served through LoadGen in a worker, so a runtime that crashes or hangs
under traffic becomes a row, never the end of the run.

The variant is prepared and verified as ``infertune verify`` would (``cells`` is an ordinary
``cell.VariantJob`` without timing: same model rebuild, cache, reference and fidelity gate, through
``cell.verify_step``), at every batch size a batch policy may run. A variant that fails verification is
refused (one ``fidelity_failed`` row per scenario) unless ``force``. Then LoadGen drives it
(``serve.serve_variant``); each finished (scenario, policy) travels back as a ``ScenarioRowEvent``.

Each LoadGen trial is one timed unit for the executor (a new ``StageEvent`` number restarts the cell
clock), so ``benchmark.cell_timeout_s`` bounds a trial, not the whole search.
"""

from __future__ import annotations

import itertools
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from infertune.executors.base import Emit, Event, Job, LogEvent, Loss, StageEvent
from infertune.results import ResultRow, Status
from infertune.scenario.rows import RowDetails, ScenarioRow
from infertune.scenario.serve import ServingPlan, serve_variant
from infertune.scenario.settings import SCENARIOS

if TYPE_CHECKING:
    from infertune.backends.base import Runner
    from infertune.cell import VariantJob


@dataclass(frozen=True)
class ScenarioRowEvent:
    """A finished (scenario, variant, policy): its row and the JSON details (batch histogram, trials)."""

    job_id: str
    row: ScenarioRow
    details: RowDetails


@dataclass(frozen=True)
class SearchOutcomeEvent:
    """The server search's answer for this variant: the best row (None: nothing VALID), its QPS, and the
    message for the user (when nothing met the bound it names the closest configuration found)."""

    job_id: str
    best_row_id: str | None
    best_qps: float
    message: str


#: the job's last stage: every row it owes has been sent (``lost`` then owes nothing).
SERVED = "served"


class FidelityRefused(Exception):
    """The variant does not keep the model's predictions: it is not served unless forced."""


@dataclass(frozen=True)
class ServingJob(Job):
    """Serve ``cells.variant`` through ``plan`` (see the module docstring). Picklable, typed."""

    cells: VariantJob
    plan: ServingPlan
    #: where the result files are (rows name LoadGen's log folders relative to it) and where the logs go.
    results_dir: str
    log_root: str
    force: bool = False
    unit: ClassVar[str] = "LoadGen trial"

    # the executor's view of the job is the variant job's
    @property
    def job_id(self) -> str:  # type: ignore[override]
        return self.cells.job_id

    @property
    def device(self) -> str:  # type: ignore[override]
        return self.cells.device

    @property
    def threads(self) -> int:  # type: ignore[override]
        return self.cells.threads

    @property
    def batches(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.cells.batches

    @property
    def memory_limit_mb(self) -> int | None:  # type: ignore[override]
        return self.cells.memory_limit_mb

    @property
    def modules(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.cells.modules

    @property
    def label(self) -> str:
        return f"{self.cells.variant.name} (serving)"

    def identity(self, **fields: Any) -> Any:
        from infertune.scenario.records import RowIdentity

        v = self.cells.variant
        return RowIdentity(model=self.cells.model_label, variant=v.name, backend=v.backend, precision=v.precision,
                           device=self.device, weights=self.cells.reference.weights_tag, run_id=self.cells.run_id,
                           **fields)

    def rows_for_all(self, status: Status, error: str, scenarios: tuple[str, ...] | None = None) -> list[Event]:
        identity = self.identity()
        return [ScenarioRowEvent(self.job_id, identity.row(s, status=str(status), error=error), RowDetails())
                for s in (scenarios if scenarios is not None else self.plan.scenarios)]

    def run(self, emit: Emit) -> None:
        try:
            self._serve(emit)
        except FidelityRefused as err:
            for event in self.rows_for_all(Status.FIDELITY_FAILED, str(err)):
                emit(event)
        except Exception as err:  # noqa: BLE001 - preparing failed (a runtime's refusal, a bug): failure is data
            from infertune.cell import one_line
            from infertune.errors import UnavailableError

            status = Status.UNAVAILABLE if isinstance(err, UnavailableError) else Status.FAILED
            emit(LogEvent(self.job_id, None, traceback.format_exc()))
            for event in self.rows_for_all(status, str(err) if status == Status.UNAVAILABLE else one_line(err)):
                emit(event)
        emit(StageEvent(self.job_id, None, SERVED))

    def lost(self, loss: Loss) -> list[Event]:
        """The worker died or a trial ran too long: the scenario in progress gets that row, later ones 'not run'.

        Stages name the scenario they serve (``server: b8 d2ms x1 at 95.0 QPS``); ``SERVED`` means nothing is owed.
        """
        if loss.stage == SERVED:
            return []
        current = next((s for s in SCENARIOS if loss.stage.startswith(f"{s}:")), None)
        todo = [s for s in SCENARIOS if s in self.plan.scenarios]
        if current is None:  # it died while loading or preparing: every scenario
            return self.rows_for_all(loss.status, f"{loss.reason} (during {loss.stage})")
        later = tuple(todo[todo.index(current) + 1:]) if current in todo else ()
        what = "timed out" if loss.status == Status.TIMEOUT else str(loss.status)
        return [*self.rows_for_all(loss.status, f"{loss.reason} (during {loss.stage})", (current,)),
                *self.rows_for_all(loss.status, f"not run: the worker {what} during {current}", later)]

    # ------------------------------------------------------------------ in the worker

    def _serve(self, emit: Emit) -> None:
        from infertune.backends.registry import get_backend
        from infertune.cell import configure_torch, rebuild_model
        from infertune.scenario.session import ServingSession

        steps = itertools.count(1)

        def stage(text: str) -> None:
            emit(StageEvent(self.job_id, next(steps), text))

        cells = self.cells
        backend = get_backend(cells.variant.backend)
        backend.check(cells.device, cells.variant.precision)
        configure_torch(cells.threads)
        stage("load model")
        model = rebuild_model(cells.model, cells.reference.weights_path)
        verified: set[int] = set()
        fidelity: list[ResultRow] = []

        def make_runner(size: int, threads: int) -> Runner:
            runner = self._prepare(backend, model, size, threads, lambda m: emit(LogEvent(self.job_id, size, m)))
            if size not in verified and backend.produces_outputs:
                stage(f"verify batch {size}")
                fidelity.append(self._verify(runner, size))
                verified.add(size)
            return runner

        samples = cells.reference.source.timed_batch(self.plan.trial.sample_count)
        session = ServingSession(make_runner, samples, cells.device, cells.threads, Path(self.log_root),
                                 cells.variant.name, samples_on_device=self.plan.trial.samples_on_device)
        try:
            for size in cells.batches:  # prepare and verify every bucket before any traffic: refuse early
                stage(f"prepare batch {size}")
                session.prepare_bucket(size)
            worst = min(fidelity, key=lambda f: f.cosine_min if f.cosine_min is not None else 1.0, default=None)
            identity = self.identity(fidelity_ok=all(f.fidelity_ok is not False for f in fidelity) if fidelity else None,
                                     cosine_min=worst.cosine_min if worst else None,
                                     note="served although it failed verification (--force)"
                                     if any(f.fidelity_ok is False for f in fidelity) else "")
            serve_variant(self.plan, session, identity, Path(self.results_dir),
                          lambda row, details: emit(ScenarioRowEvent(self.job_id, row, details)),
                          lambda best_id, qps, message: emit(SearchOutcomeEvent(self.job_id, best_id, qps, message)),
                          stage)
        finally:
            session.close()

    def _prepare(self, backend: Any, model: Any, size: int, threads: int, log: Any) -> Runner:
        """A runner for exactly ``size`` samples, prepared as a run's cell is (same cache, same settings)."""
        from infertune.backends.base import PrepareContext
        from infertune.cache import ArtifactCache

        cells = self.cells
        source = cells.reference.source
        ctx = PrepareContext(
            model=model, example_input=source.timed_batch(size), precision=cells.variant.precision,
            options=cells.variant.option_dict, device=cells.device, threads=threads,
            cache=ArtifactCache(cells.cache_root, f"{cells.model_label}-{cells.reference.digest}", enabled=cells.use_cache),
            calibration=source.calibration, settings=cells.settings, log=log,
        )
        return backend.prepare(ctx)

    def _verify(self, runner: Runner, size: int) -> ResultRow:
        """``cell.verify_step`` at this batch size; a failure refuses the variant unless ``force``."""
        from infertune.cell import verify_step
        from infertune.reference import load_reference

        cells = self.cells
        failure = cells.reference.failed_batches.get(size)
        if failure:
            raise FidelityRefused(f"the FP32 reference failed at batch {size}: {failure}; cannot verify the variant")
        row = cells.base_row(size)
        verify_step(runner, load_reference(cells.reference.path, size), size, cells, row)
        if row.status == Status.FIDELITY_FAILED and not self.force:
            raise FidelityRefused(f"refused: {cells.variant.name} fails verification at batch {size} ({row.error}); "
                                  "serving it would answer with wrong predictions (--force serves it anyway)")
        return row
