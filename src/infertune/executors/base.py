"""The executor contract: jobs go in, typed events come out, whatever happens to the worker that ran them.

A **job** is work a worker does for a run: the FP32 reference (``reference.ReferenceJob``) or one
variant over its batch sizes (``cell.VariantJob``). An **executor** runs a sequence of jobs (one after
the other, or several at once: one per GPU) and yields their events as they happen, interleaved, each
naming its job (``job_id``). Its promises, which the pipeline's sink relies on:

- every job ends in its terminal events: a ``RowEvent`` for each batch size of a variant job, a
  ``ReferenceEvent`` or a ``JobFailedEvent`` for the reference job. When a worker dies or runs past a
  deadline, the executor gets the missing ones from ``job.lost(...)`` (rows ``crashed``/``timeout``);
- closing the iterator early (an interrupted run, a failed write) stops and kills what still runs;
- the parent process never runs a job's code except in the in-process executor (debugging).

A new executor is one module ``infertune/executors/<name>.py`` defining an ``Executor`` subclass with
``name = "<name>"`` decorated with ``@register_executor``; ``benchmark.isolation: <name>`` selects it.
``JobWatch`` holds the bookkeeping every executor needs (deadlines, the stage in progress, the cells
still owed), so an executor only decides where and when jobs run.
"""

from __future__ import annotations

import importlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TypeVar

from infertune.errors import ConfigError

if TYPE_CHECKING:
    from infertune.config import RunConfig
    from infertune.reference import Reference
    from infertune.results import ResultRow, Status


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class StageEvent:
    """The job started a stage (``load model``, ``forward``, ``prepare``, ``verify``, ``measure``) of a batch size."""

    job_id: str
    batch: int | None
    stage: str


@dataclass(frozen=True)
class LogEvent:
    """A line for the run's ``.log`` file (a runtime's message, a traceback); never shown on the terminal."""

    job_id: str
    batch: int | None
    text: str


@dataclass(frozen=True)
class NoticeEvent:
    """A line for the user (``warning: ... using random weights``), shown once on the terminal."""

    job_id: str
    text: str


@dataclass(frozen=True)
class RowEvent:
    """A finished cell: its row (built by the worker) and raw per-iteration samples (None when not timed)."""

    job_id: str
    row: ResultRow
    samples_ms: list[float] | None = None


@dataclass(frozen=True)
class ReferenceEvent:
    """The reference job's result: the model's identity and where the per-batch FP32 outputs are."""

    job_id: str
    reference: Reference


@dataclass(frozen=True)
class JobFailedEvent:
    """A job that owes no rows (the reference) did not finish.

    ``bad_input``: the user's input is at fault (unknown model, weights that do not fit, an input shape
    the model cannot take): the run stops with one error line, exit 2. Otherwise the worker crashed,
    timed out or ran out of memory (``status``), during ``stage``.
    """

    job_id: str
    status: Status
    stage: str
    reason: str
    bad_input: bool = False
    #: with ``bad_input``: the ``infertune.errors`` class that said so (``ModelError``, ``ConfigError``).
    error_type: str = ""


@dataclass(frozen=True)
class LastWordsEvent:
    """What a dying worker managed to say (``SystemExit: 3``); executors fold it into the death reason."""

    job_id: str
    text: str


Event = StageEvent | LogEvent | NoticeEvent | RowEvent | ReferenceEvent | JobFailedEvent | LastWordsEvent
Emit = Callable[[Event], None]


# ---------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Loss:
    """Why and where a job's worker stopped before the job ended: what ``Job.lost`` turns into events."""

    status: Status
    #: the cause, for the row's ``error``: ``worker process killed by SIGSEGV (Segmentation fault)``.
    reason: str
    #: the stage and batch size in progress when it stopped (the job's first batch if it said nothing).
    stage: str
    batch: int | None
    #: batch sizes that already have their row; whether a terminal non-row event was already sent.
    finished: frozenset[int] = frozenset()
    ended: bool = False


class Job(ABC):
    """Work for one worker; subclasses are frozen dataclasses that pickle (executors ship them to workers).

    Attributes every job has:
        job_id: unique within a run; every event the job causes names it.
        device: ``cpu`` or ``cuda``: an executor with several GPUs gives each cuda job one of its own.
        threads: intra-op threads (the worker's OMP/MKL environment is set to it).
        batches: the batch sizes it works on, in order (its stages and rows name them).
        memory_limit_mb: the worker's data-memory cap (RLIMIT_DATA), None for none.
        modules: imported by the worker before the job runs (backends registered outside infertune).
    """

    job_id: str
    device: str
    threads: int
    batches: tuple[int, ...]
    memory_limit_mb: int | None
    modules: tuple[str, ...]
    #: what one timed unit of the job is called in a timeout's reason.
    unit: ClassVar[str] = "cell"
    #: whether ``variant_timeout_s`` bounds the whole job (variant jobs; the reference has only ``cell_timeout_s``).
    whole_job_timeout: ClassVar[bool] = True

    def libraries(self) -> tuple[str, ...]:
        """Heavy libraries the job will import (``transformers`` for a Hugging Face model): a process
        executor may load them once for all its workers (``executors.process.WORKER_PRELOAD``)."""
        return ()

    @abstractmethod
    def run(self, emit: Emit) -> None:
        """Do the work in this process, reporting every stage, log line and result through ``emit``."""

    @abstractmethod
    def lost(self, loss: Loss) -> list[Event]:
        """The terminal events this job still owes after its worker stopped early (none if it owed none)."""

    @property
    def label(self) -> str:
        """How the user sees the job (the progress bar, the log's banner)."""
        return self.job_id


# ---------------------------------------------------------------------------------------------- executors


@dataclass(frozen=True)
class ClusterNode:
    """A machine of a cluster that jobs can be pinned to (``--per-node``): what the plan and the rows need of it."""

    #: the node's name in the cluster (Ray: ``ray start --node-name``, by default its IP address): what rows
    #: record as ``pinned_node``, and how ``--resume`` finds the node again after a cluster restart.
    name: str
    #: the executor's handle for scheduling (Ray's node id; it changes when the node restarts).
    node_id: str
    host: str = ""
    #: what the node offers Ray's tasks (a head started with ``--num-cpus 0`` offers no CPU: no job can run there).
    cpus: float = 0.0
    gpus: int = 0


@dataclass(frozen=True)
class ExecutorSettings:
    """What bounds a job, and where workers write their output."""

    #: a batch size (or the reference's stage) running longer than this is killed: ``timeout``.
    cell_timeout_s: float = 1800.0
    #: the whole job; None: only ``cell_timeout_s`` bounds it.
    variant_timeout_s: float | None = None
    #: the run's ``.log``: workers' stdout/stderr and ``LogEvent`` lines go there (None: nowhere).
    log_path: str | None = None
    #: the run's whole configuration, for an executor with a section of its own (``ray``); None in tests.
    config: RunConfig | None = None
    #: jobs the default executor runs at once (``benchmark.concurrent_jobs``, resolved for the device).
    concurrent_jobs: int = 1


class Executor(ABC):
    """Runs jobs somewhere and streams their events back (see the module docstring for the promises)."""

    #: the ``benchmark.isolation`` value that selects this executor.
    name: ClassVar[str]

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings

    @classmethod
    def get_ready(cls, libraries: Sequence[str]) -> None:
        """Called before the run is planned: start what workers will need (``libraries``: the model's heavy
        imports) while the parent plans, if that saves time. Nothing by default."""

    def close(self) -> None:
        """The run is over: release what the executor started for it (a local Ray instance). Nothing by default."""

    @property
    def jobs_at_once(self) -> int | None:
        """How many jobs ``run`` starts at once, in the order given (later ones as earlier ones end); None when
        it cannot say (a cluster starts what its resources allow)."""
        return None

    def nodes(self) -> list[ClusterNode]:
        """The alive nodes a job can be pinned to (``--per-node``); an executor of one machine has none to offer."""
        raise ConfigError(f"--per-node (ray.per_node) pins jobs to a cluster's nodes, which the {self.name!r} executor "
                          "does not have: add --executor ray")

    @abstractmethod
    def run(self, jobs: Sequence[Job]) -> Iterator[Event]:
        """Run ``jobs`` and yield their events as they happen; every job ends in its terminal events.

        Jobs may run in any order and at the same time; the caller must not assume otherwise beyond
        what ``job_id`` says. Closing the iterator before it is exhausted kills the jobs still running.
        """

    def run_then(self, jobs: Sequence[Job], last: Sequence[Job]) -> Iterator[Event]:
        """``run`` for ``jobs`` and ``last``, where a job of ``last`` measures only once every job of ``jobs`` has
        ended (the end-of-run check of the baseline). Here ``last`` starts once ``jobs`` have ended; an executor
        that can prepare it beside them, and hold back only its measurement, overrides this."""
        yield from self.run(jobs)
        if last:
            yield from self.run(last)


_EXECUTORS: dict[str, type[Executor]] = {}
#: executors whose module name differs from their name; any other ``<name>`` lives in ``executors/<name>.py``.
_MODULES = {"process": "infertune.executors.process", "none": "infertune.executors.inprocess"}

E = TypeVar("E", bound=type[Executor])


def register_executor(cls: E) -> E:
    """Class decorator: make ``cls`` selectable as ``benchmark.isolation: <cls.name>`` (duplicates rejected)."""
    if cls.name in _EXECUTORS and _EXECUTORS[cls.name] is not cls:
        raise ValueError(f"executor {cls.name!r} is registered twice ({_EXECUTORS[cls.name].__name__}, {cls.__name__})")
    _EXECUTORS[cls.name] = cls
    return cls


def executor_class(name: str) -> type[Executor]:
    """The executor called ``name``, importing its module on first use; ConfigError naming the known ones."""
    if name not in _EXECUTORS and re.fullmatch(r"[a-z][a-z0-9_]*", name):  # a config value names a module here
        module = _MODULES.get(name, f"infertune.executors.{name}")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the executor exists but its runtime (e.g. ray) is missing
                raise ConfigError(f"benchmark.isolation: {name} needs {err.name}, which is not installed") from None
    if name not in _EXECUTORS:
        raise ConfigError(f"unknown benchmark.isolation {name!r}: use process (a worker per variant, the default), "
                          "none (in this process, for debugging) or the name of a module in infertune/executors/")
    return _EXECUTORS[name]


def make_executor(name: str, settings: ExecutorSettings) -> Executor:
    return executor_class(name)(settings)


# ---------------------------------------------------------------------------------------------- bookkeeping


#: the stage a job is in while it waits for the machine's measurement slot (``executors.slot``).
WAIT_STAGE = "wait for the measurement slot"


@dataclass
class JobWatch:
    """One running job as its executor sees it: the stage in progress, the cells finished, its deadlines.

    An executor calls ``observe`` on every event from the job's worker, sleeps until ``deadline``,
    asks ``timeout_reason`` when it passes, and on the worker's end yields ``lost_events`` (the rows
    or failure the job still owes: none when it finished properly).
    """

    job: Job
    settings: ExecutorSettings
    started: float = field(default_factory=time.monotonic)
    batch: int | None = None
    stage: str = "start"
    finished: set[int] = field(default_factory=set)
    ended: bool = False
    last_words: str = ""
    cell_deadline: float = 0.0

    def __post_init__(self) -> None:
        self.batch = self.job.batches[0] if self.job.batches else None
        self.cell_deadline = self.started + self.settings.cell_timeout_s

    @property
    def variant_deadline(self) -> float:
        limit = self.settings.variant_timeout_s
        return self.started + limit if limit and self.job.whole_job_timeout else float("inf")

    @property
    def deadline(self) -> float:
        return min(self.cell_deadline, self.variant_deadline)

    def observe(self, event: Event) -> None:
        """Track stages, finished cells and the job's end; a new batch size, a finished cell or the end of a
        wait for the measurement slot restarts the cell clock. The wait itself is not the cell's time: it
        is other jobs' work, each bounded by its own clock."""
        if isinstance(event, StageEvent):
            if event.stage == WAIT_STAGE:
                self.cell_deadline = float("inf")
            elif event.batch != self.batch or self.stage == WAIT_STAGE:
                self.cell_deadline = time.monotonic() + self.settings.cell_timeout_s
            self.batch, self.stage = event.batch, event.stage
        elif isinstance(event, RowEvent):
            self.finished.add(event.row.batch_size)
            self.cell_deadline = time.monotonic() + self.settings.cell_timeout_s
        elif isinstance(event, (ReferenceEvent, JobFailedEvent)):
            self.ended = True
        elif isinstance(event, LastWordsEvent):
            self.last_words = event.text

    def timeout_reason(self) -> str:
        if self.variant_deadline <= self.cell_deadline:
            return (f"variant ran longer than {self.settings.variant_timeout_s:.0f} s (benchmark.variant_timeout_s); "
                    "the worker was killed")
        return (f"{self.job.unit} ran longer than {self.settings.cell_timeout_s:.0f} s (benchmark.cell_timeout_s); "
                "the worker was killed")

    def lost_events(self, status: Status, reason: str) -> list[Event]:
        """The terminal events the job still owes, as ``job.lost`` words them."""
        batch = self.batch
        if batch in self.finished:  # it died between cells: the next one was in progress
            batch = next((b for b in self.job.batches if b not in self.finished), batch)
        return self.job.lost(Loss(status=status, reason=reason, stage=self.stage, batch=batch,
                                  finished=frozenset(self.finished), ended=self.ended))


def import_job_modules(job: Job) -> None:
    """Import the modules a job names (backends registered outside infertune, e.g. test backends)."""
    for module in job.modules:
        if module and module not in ("__main__", "__mp_main__"):
            importlib.import_module(module)

