"""The plan of a run: from the config to the device, the ladder, the cells, and the typed jobs workers run.

Everything here is decided in the parent before any model code runs: which device, which variants
and batch sizes (the cells), how long to time them, the fidelity bounds, and which variants cannot
run here at all (their rows say why without a worker). ``Plan.reference_job`` and
``Plan.variant_jobs`` build the jobs an executor runs; the jobs carry typed objects (``Variant``,
``TimingPolicy``, ``Tolerance``, the reference's ``InputSource``), never dicts rebuilt on the other side.
A ``--per-node`` run (``place_on_nodes``) has a cell per (variant, batch size, node) and a job per
(variant, node), each pinned to its node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infertune.backends.base import Availability
from infertune.cell import VariantJob, identity_row
from infertune.config import RunConfig
from infertune.errors import ConfigError
from infertune.executors.base import ClusterNode
from infertune.inputs import InputSpec
from infertune.measure.timer import TimingPolicy
from infertune.reference import Reference, ReferenceJob
from infertune.results import ResultRow, cell_id
from infertune.variants import Variant
from infertune.verify import Tolerance

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What a run will do, decided before any model code runs."""

    cfg: RunConfig
    #: ``cpu`` or ``cuda`` (``auto`` resolved, a missing GPU fallen back to the CPU).
    device: str
    threads: int
    ladder: tuple[Variant, ...]
    batches: tuple[int, ...]
    rounds: int
    #: None for ``infertune verify`` (prepare and verify, no timing).
    timing: TimingPolicy | None
    tolerances: dict[str, Tolerance]
    #: the workers' data-memory cap in MB (CPU runs only), None for none.
    memory_limit_mb: int | None
    #: variant name -> whether its backend can run here (a ``no`` becomes ``unavailable`` rows, no worker).
    availability: dict[str, Availability]
    #: the model's inputs (name, one sample's shape, dtype, value range), known without building the model.
    inputs: tuple[InputSpec, ...] = ()
    #: ``--per-node``: the nodes every variant runs on, each job pinned to one; empty: jobs run anywhere.
    nodes: tuple[ClusterNode, ...] = ()
    #: ``--per-node`` resumed: nodes of the run that are not in the cluster now (their cells cannot run).
    absent_nodes: tuple[str, ...] = ()

    @property
    def measure(self) -> bool:
        return self.timing is not None

    @property
    def pinned(self) -> bool:
        """Whether each job is pinned to a node (``--per-node``)."""
        return bool(self.nodes or self.absent_nodes)

    @property
    def places(self) -> tuple[str, ...]:
        """The rows' ``pinned_node`` values: every planned node's name, or ``""`` alone when jobs are not pinned."""
        return (*(n.name for n in self.nodes), *self.absent_nodes) or ("",)

    def cells(self) -> list[tuple[Variant, int, str]]:
        """Every planned cell as (variant, batch size, pinned node name or "")."""
        return [(v, b, node) for node in self.places for v in self.ladder for b in self.batches]

    @property
    def cells_planned(self) -> int:
        return len(self.ladder) * len(self.batches) * len(self.places)

    @property
    def model_label(self) -> str:
        """The rows' ``model`` (``models.model_label``)."""
        from infertune.models import model_label

        return model_label(self.cfg.model.name)

    def row_order(self, row: ResultRow) -> tuple[int, int, int]:
        """Where a row sits in the files: node by node, each in the ladder's order, then the batch sizes'
        (rows arrive in any order)."""
        names = [v.name for v in self.ladder]
        node = self.places.index(row.pinned_node) if row.pinned_node in self.places else len(self.places)
        variant = names.index(row.variant) if row.variant in names else len(names)
        batch = self.batches.index(row.batch_size) if row.batch_size in self.batches else len(self.batches)
        return node, variant, batch

    def cell_id(self, variant: Variant, batch: int, node: str = "") -> str:
        return cell_id(self.model_label, variant.name, batch, self.device, node)

    def row(self, variant: Variant, batch: int, run_id: str, weights: str = "", node: str = "") -> ResultRow:
        """A row the parent writes itself (no worker ran the cell: unavailable, or the run cannot go on)."""
        return identity_row(variant, batch, model=self.model_label, device=self.device,
                            requested_device=self.cfg.benchmark.device, weights=weights, run_id=run_id,
                            threads=self.threads_on(next((n for n in self.nodes if n.name == node), None)),
                            pinned_node=node)

    def threads_on(self, node: ClusterNode | None) -> int:
        """A job's thread count: ``benchmark.threads``, else this machine's usable cores, or for a pinned job
        its node's CPUs as Ray counts them (each kind of hardware used as a local run there would use it)."""
        if node is None or self.cfg.benchmark.threads:
            return self.threads
        return max(1, int(node.cpus))

    def reference_job(self, workdir: str) -> ReferenceJob:
        """The job that loads the model and computes its FP32 outputs at every batch size, in a worker."""
        return ReferenceJob(
            model=self.cfg.model, verify=self.cfg.verify, workdir=workdir, batches=self.batches, threads=self.threads,
            inputs=self.inputs,
            needs_calibration_id=any(v.precision == "int8" for v in self.ladder), memory_limit_mb=self.memory_limit_mb,
            cache_root=self.cfg.output.models_dir if self.cfg.output.use_cache else "",
        )

    def variant_jobs(self, reference: Reference, run_id: str, round_index: int,
                     todo: Callable[[Variant, int, str], bool], per_cell: bool = False) -> list[VariantJob]:
        """One job per available variant (and node, when pinned) over the batch sizes ``todo`` still wants in
        this round, or with ``per_cell`` one job per such batch size; ``todo`` gets the variant, the batch size
        and the node's name ("" when not pinned)."""
        from infertune.backends.registry import get_backend

        cfg = self.cfg
        int8 = cfg.optimization.int8.model_dump()
        if reference.calibration_id is not None:  # INT8 caches are keyed by the calibration data too
            int8["calibration_id"] = reference.calibration_id
        settings = {"onnx_opset": cfg.optimization.onnx_opset, "int8": int8}
        jobs = []
        for node, variant in [(n, v) for n in (self.nodes if self.pinned else (None,)) for v in self.ladder]:
            name = node.name if node is not None else ""
            batches = tuple(b for b in self.batches if todo(variant, b, name))
            if not batches or not self.availability[variant.name].ok:
                continue
            for group in [(b,) for b in batches] if per_cell else [batches]:
                cell = f"@b{group[0]}" if per_cell else ""
                jobs.append(VariantJob(
                    job_id=f"{variant.name}{cell}@{name}@{round_index}" if name else f"{variant.name}{cell}@{round_index}",
                    variant=variant, batches=group, model=cfg.model,
                    reference=reference, model_label=self.model_label, device=self.device,
                    requested_device=cfg.benchmark.device, threads=self.threads_on(node), timing=self.timing,
                    tolerance=self.tolerances.get(variant.precision, Tolerance()), cache_root=cfg.output.models_dir,
                    use_cache=cfg.output.use_cache, settings=settings, run_id=run_id, round_index=round_index,
                    rounds=self.rounds, memory_limit_mb=self.memory_limit_mb,
                    modules=(type(get_backend(variant.backend)).__module__,), pinned=node,
                ))
        return jobs


def place_on_nodes(plan: Plan, alive: Sequence[ClusterNode], recorded: Sequence[str] | None = None,
                   ) -> tuple[Plan, list[str]]:
    """``--per-node``: the plan with its nodes, and the lines telling the user where the ladder runs.

    Every alive node takes the whole ladder, except that a ``cuda`` run leaves out the nodes without a
    GPU (a CPU-only head node is common; it cannot run a CUDA cell, and a column of failed rows for it would
    say nothing) and any run leaves out a node that offers Ray no CPU (a job pinned there would wait
    forever): the lines name them, and a cluster with no node left is refused. A resumed run
    (``recorded``: the node names its files hold) keeps its own nodes: new ones are not added, and those
    gone from the cluster become ``absent_nodes``, whose missing cells the pipeline records as not run.

    Raises:
        ConfigError: no node can run the plan's device.
    """
    lines: list[str] = []
    no_cpu = [n.name for n in alive if n.cpus < 1]
    if no_cpu:
        lines.append(f"per node: leaving out {', '.join(no_cpu)} (it offers Ray no CPU, e.g. a head started with "
                     "--num-cpus 0: a job pinned there would wait forever)")
    usable = [n for n in alive if n.cpus >= 1]
    if plan.device == "cuda":
        without = [n.name for n in usable if n.gpus <= 0]
        usable = [n for n in usable if n.gpus > 0]
        if without:
            lines.append(f"per node: leaving out {', '.join(without)} (no GPU; this run is on cuda; --device cpu "
                         "runs the CPU ladder on every node)")
    if not usable:
        need = "a GPU and a CPU for Ray's tasks" if plan.device == "cuda" else "a CPU for Ray's tasks"
        raise ConfigError(f"--per-node: no node of the Ray cluster offers {need} (nodes: "
                          f"{', '.join(n.name for n in alive) or 'none'}); add such nodes"
                          + (", or run with --device cpu" if plan.device == "cuda" else ""))
    absent: tuple[str, ...] = ()
    if recorded is not None:
        by_name = {n.name: n for n in usable}
        absent = tuple(name for name in recorded if name not in by_name)
        usable = [by_name[name] for name in recorded if name in by_name]
        if absent:
            lines.append(f"per node: {', '.join(absent)} of this run are not in the Ray cluster now: their missing "
                         "cells are recorded as not run (--resume again once they are back)")
    else:
        usable.sort(key=lambda n: n.name)
    lines.append(f"per node: the ladder runs on {len(usable)} node(s): {', '.join(n.name for n in usable)}")
    return dataclasses.replace(plan, nodes=tuple(usable), absent_nodes=absent), lines


def make_plan(cfg: RunConfig, measure: bool, log: Log) -> Plan:
    """Resolve the device and the ladder, and run the checks that need no model (bad input fails here)."""
    from infertune import env as envmod
    from infertune import preflight
    from infertune.backends.registry import get_backend
    from infertune.config import tolerances
    from infertune.ladder import build_ladder
    from infertune.models import input_specs, model_kind

    device = resolve_device(cfg.benchmark.device, log)
    ladder = tuple(build_ladder(cfg, device))
    preflight.check_output(cfg)
    inputs = input_specs(cfg.model, cfg.benchmark.batch_sizes, log)
    preflight.check_input_memory(cfg, inputs)
    kind = model_kind(cfg.model.name)
    b = cfg.benchmark
    timing = TimingPolicy(warmup_iterations=b.warmup_iterations, min_iterations=b.benchmark_iterations,
                          min_time_s=b.min_time_s, max_iterations=b.max_iterations,
                          warmup_min_time_s=_warmup_time_s(cfg, device),
                          precision=timing_precision(cfg, device)) if measure else None
    return Plan(
        cfg=cfg, device=device, threads=b.threads or default_threads(cfg, device, envmod.usable_cores()), ladder=ladder,
        batches=tuple(b.batch_sizes), rounds=b.rounds, timing=timing, tolerances=tolerances(cfg),
        memory_limit_mb=_memory_limit(cfg, device, log),
        availability={v.name: _availability(get_backend(v.backend), device, v.precision, kind) for v in ladder},
        inputs=inputs,
    )


def _availability(backend: Any, device: str, precision: str, kind: str) -> Availability:
    """Whether ``backend`` runs here, and can start from a model of ``kind`` (torch rungs cannot take an ONNX file)."""
    here = backend.availability(device, precision)
    return backend.accepts(kind) if here.ok else here


def resolve_device(requested: str, log: Log) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu. ``cuda`` without a GPU falls back to cpu with one line."""
    import torch

    has_gpu = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if has_gpu else "cpu"
    if requested == "cuda" and not has_gpu:
        log("warning: device 'cuda' was requested but no CUDA GPU is visible; running on the CPU instead "
            "(rows record requested_device=cuda, device=cpu)")
        return "cpu"
    return requested


def _memory_limit(cfg: RunConfig, device: str, log: Log) -> int | None:
    """The worker memory cap to apply: CPU runs only (see ``executors.process.apply_memory_limit``)."""
    limit = cfg.benchmark.memory_limit_mb
    if limit and device != "cpu":
        log(f"warning: benchmark.memory_limit_mb ({limit} MB) is applied on CPU runs only: on {device} the "
            "runtime's driver maps host memory that a data-size cap would count; running without it")
        return None
    return limit


#: a GPU run's jobs at once, by default: up to this many per core (most of a job is waiting for the slot, or
#: compiling on one core) ...
GPU_JOBS_PER_CORE = 3
#: ... and one per this many GB of the host's memory, and of the GPU's (a worker holds a CUDA context, the model
#: and its workspace in each).
GPU_JOB_GB = 2.0


def concurrent_jobs(cfg: RunConfig, device: str, cores: int | None = None, host_gb: float | None = None,
                    gpu_gb: float | None = None) -> int:
    """``benchmark.concurrent_jobs``, or its default for ``device``: on the CPU 1 (see the config's comment); on a
    GPU as many as the machine holds (``GPU_JOBS_PER_CORE``, ``GPU_JOB_GB``), so that with a job per cell every
    cell of the ladder prepares at once and the measurements follow in one stretch (docs/measurement.md, "Jobs
    side by side"). ``cores``, ``host_gb``, ``gpu_gb``: this machine's, read when not given."""
    from infertune import env as envmod

    if cfg.benchmark.concurrent_jobs is not None:
        return cfg.benchmark.concurrent_jobs
    if device != "cuda":
        return 1
    cores = cores if cores is not None else envmod.usable_cores()
    host_gb = host_gb if host_gb is not None else envmod.host_memory_gb()
    gpu_gb = gpu_gb if gpu_gb is not None else envmod.gpu_memory_gb()
    return max(1, min([GPU_JOBS_PER_CORE * cores] + [int(gb // GPU_JOB_GB) for gb in (host_gb, gpu_gb) if gb]))


def default_threads(cfg: RunConfig, device: str, cores: int) -> int:
    """A job's intra-op threads when ``benchmark.threads`` is unset: every usable core on the CPU, where jobs
    run one at a time; on a GPU, where ``concurrent_jobs`` prepare side by side, each job's share of them (a
    pool of every core in each of several workers oversubscribes the CPU work of their preparations, such as
    the batch-norm fold and the model's copy: docs/results/h200.md)."""
    if device != "cuda":
        return cores
    return max(1, cores // concurrent_jobs(cfg, device, cores))


def timing_precision(cfg: RunConfig, device: str) -> float | None:
    """The precision target as a fraction: configured, else ±0.5% on CUDA and none on the CPU
    (docs/measurement.md, "How long is a cell timed")."""
    if cfg.benchmark.precision_pct is not None:
        return cfg.benchmark.precision_pct / 100 or None
    return 0.005 if device == "cuda" else None


def _warmup_time_s(cfg: RunConfig, device: str) -> float:
    """Configured warmup time, else 0.5 s on CUDA (an idle GPU clocks down: 345 MHz of 1980 on the
    H200 seen here) and none on the CPU, where the warmup count suffices."""
    if cfg.benchmark.warmup_time_s is not None:
        return cfg.benchmark.warmup_time_s
    return 0.5 if device == "cuda" else 0.0
