"""One run: resolve the device, load the model once, compute the FP32 reference, then run every
variant's cells (``cell.run_variant``) and record each row to the result files as soon as it exists.

The parent process owns the result files; workers only send rows. Each row is first appended to the
journal (``.jsonl``, fsynced), then folded into the CSV/JSON (rewritten atomically). If a worker dies
the run goes on; if the run is interrupted (Ctrl-C, SIGTERM) the cell in progress is recorded as
``interrupted`` and ``--resume`` (``infertune.resume``) later runs only the cells still missing.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infertune import interrupts
from infertune.cell import VariantJob, base_row, configure_torch, save_reference
from infertune.config import RunConfig, tolerances
from infertune.errors import ConfigError, InfertuneError
from infertune.journal import Journal
from infertune.results import ResultFiles, ResultRow, journal_path_for
from infertune.resume import ResumeState, run_id_of

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


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d_%H%M%S")


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
        RunInterrupted: SIGINT or SIGTERM stopped the run; the files hold every finished row, the cell
            in progress is recorded as ``interrupted`` and ``summary`` says how to resume.
        InfertuneError: bad input found before any long work (see ``infertune.preflight``).
    """
    with interrupts.catch_signals():
        return _run(cfg, log, progress, resume, measure)


def _run(cfg: RunConfig, log: Log, progress: Any, resume: ResumeState | None, measure: bool) -> RunResult:
    import torch

    from infertune import env as envmod
    from infertune import preflight
    from infertune.backends.registry import get_backend
    from infertune.ladder import build_ladder
    from infertune.models import input_specs, load_model

    device = resolve_device(cfg.benchmark.device, log)
    threads = cfg.benchmark.threads or envmod.usable_cores()
    configure_torch(threads)  # the reference below is true fp32 (no TF32) with pinned threads
    ladder = build_ladder(cfg, device)
    preflight.check_output(cfg)
    specs = input_specs(cfg.model, cfg.benchmark.batch_sizes, log)
    preflight.check_input_memory(cfg, specs)
    if resume is not None and resume.environment.get("device") not in (None, device):
        raise ConfigError(f"cannot resume {resume.stem.name} here: it ran on {resume.environment['device']}, "
                          f"this machine runs on {device}; start a new run instead")

    stem = resume.stem if resume is not None else _new_stem(Path(cfg.output.dir), "benchmark_results" if measure else "verify_results")
    run_id = run_id_of(stem)
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    config_path = Path(f"{stem}.config.yaml")
    log_path = Path(f"{stem}.log")

    warnings: list[str] = []
    loaded = load_model(cfg.model.name, cfg.model.pretrained, cfg.model.weights, cfg.model.seed,
                        warn=lambda m: (warnings.append(m), log(m)))
    preflight.check_artifact_space(cfg, ladder, loaded)
    source, verification = _verification_set(cfg, loaded, specs, lambda m: (warnings.append(m), log(m)))
    verify_inputs, reference, labels, ref_accuracy = verification
    verify_description = source.describe_verification(len(verify_inputs))
    int8_settings = cfg.optimization.int8.model_dump()
    if any(v.precision == "int8" for v in ladder):  # INT8 caches are keyed by the calibration data too
        try:
            int8_settings["calibration_id"] = source.calibration_identity()
        except ConfigError as err:  # no usable calibration set: the INT8 cells fail with this reason
            int8_settings["calibration_id"] = f"unusable: {err}"
    digest = loaded.digest()
    if resume is not None and resume.run.get("model_digest") not in (None, digest):
        raise ConfigError(f"cannot resume {resume.stem.name}: the model's weights now differ from the run's "
                          f"(digest {digest} vs {resume.run['model_digest']}; were pretrained weights downloaded "
                          "one time and not the other?); start a new run instead")
    memory_limit = _memory_limit(cfg, device, log)

    batches = list(cfg.benchmark.batch_sizes)
    rounds = cfg.benchmark.rounds
    environment = dict(resume.environment) if resume is not None and resume.environment else envmod.capture(threads)
    environment.update(device=device, requested_device=cfg.benchmark.device)
    run_state: dict[str, Any] = {"status": "running", "cells_planned": len(ladder) * len(batches), "rounds": rounds,
                                 "model_digest": digest}
    files = ResultFiles(csv_path, json_path, config=cfg.model_dump(mode="json"), environment=environment,
                        run=run_state)
    journal = Journal(journal_path_for(csv_path))
    done: set[tuple[int, str]] = set()
    if resume is not None:
        run_state["resumed"] = [*resume.run.get("resumed", []), timestamp()]
        for rec in resume.records:
            if rec.status != "interrupted":  # interrupted cells run again
                _record(files, ResultRow(**_known_fields(rec.row)), rec.samples_ms, rec.round)
        done = resume.done()
    else:
        _write_config(config_path, cfg)
    journal.open()
    files.write()

    tmp = Path(tempfile.mkdtemp(prefix="infertune-"))
    in_flight: _InFlight | None = None
    try:
        ref_path = tmp / "reference.npz"
        save_reference(ref_path, verify_inputs, reference, labels)
        state_path = tmp / "weights.pt"
        if loaded.kind == "torch":  # an ONNX file is its own weights: workers read it
            torch.save(loaded.module.state_dict(), state_path)
        tol = {k: asdict(v) for k, v in tolerances(cfg).items()}
        timing = {
            "warmup_iterations": cfg.benchmark.warmup_iterations,
            "warmup_min_time_s": _warmup_time_s(cfg, device),
            "min_iterations": cfg.benchmark.benchmark_iterations,
            "min_time_s": cfg.benchmark.min_time_s,
            "max_iterations": cfg.benchmark.max_iterations,
        }
        settings = {"onnx_opset": cfg.optimization.onnx_opset, "int8": int8_settings}
        if progress:
            progress.start(len(ladder) * len(batches) * rounds)
        jobs = [VariantJob(
            variant=variant.name, batch_sizes=batches, model_spec=cfg.model.model_dump(),
            state_dict_path=str(state_path), model_name=_model_label(cfg.model.name),
            weights_tag=loaded.weights, model_digest=digest, device=device,
            requested_device=cfg.benchmark.device, threads=threads, timing=timing, tolerances=tol,
            reference_path=str(ref_path),
            input_source=source,
            cache_root=cfg.output.models_dir, use_cache=cfg.output.use_cache, settings=settings,
            run_id=run_id, log_path=str(log_path), measure=measure, verify_inputs=verify_description,
            ref_accuracy=ref_accuracy, memory_limit_mb=memory_limit,
            backend_module=type(get_backend(variant.backend)).__module__, reference=loaded.reference,
        ) for variant in ladder]
        try:
            for round_index in range(rounds):
                files.run["round"] = round_index + 1
                for variant, job in zip(ladder, jobs):
                    todo = [b for b in batches if (round_index, _cell_id(job, b)) not in done]
                    if progress and len(todo) < len(batches):
                        progress.advance(len(batches) - len(todo))
                    if not todo:
                        continue
                    backend = get_backend(variant.backend)
                    avail = backend.availability(device, variant.precision)
                    if avail.ok:
                        avail = backend.accepts(loaded.kind)
                    if not avail.ok:
                        if round_index == 0:
                            for batch in todo:
                                row = base_row(job, batch)
                                row.update(status="unavailable", error=avail.reason)
                                _keep(files, journal, row, None, round_index)
                        if progress:
                            progress.advance(len(todo))
                        continue
                    in_flight = _InFlight(dataclasses.replace(job, batch_sizes=todo), round_index)

                    def handle(event: tuple[Any, ...], job: VariantJob = job, cell: _InFlight = in_flight,
                               round_index: int = round_index) -> None:
                        kind = event[0]
                        if kind == "stage":
                            cell.batch, cell.stage = event[1], event[2]
                            if progress:
                                label = job.variant if rounds == 1 else \
                                    f"{job.variant} (round {round_index + 1}/{rounds})"
                                progress.stage(label, event[1], event[2])
                        elif kind == "log" and cfg.benchmark.isolation == "none":
                            _append_log(log_path, f"[{job.variant} b{event[1]}] {event[2]}")
                        elif kind == "row":
                            with interrupts.deferred():
                                _keep(files, journal, event[1], event[2], round_index)
                                cell.finished.add(event[1]["batch_size"])
                            if progress:
                                progress.advance()

                    _run_job(in_flight.job, cfg, loaded.module, handle)
                    in_flight = None
        except interrupts.RunInterrupted as stop:
            _record_interrupt(files, journal, in_flight, stop)
            raise
        _annotate_int8(files)
        files.run["status"] = "complete"
        files.write()
    finally:
        if progress:
            progress.stop()
        _rm_tree(tmp)
    return RunResult(files.rows, csv_path, json_path, config_path, log_path, environment, warnings,
                     journal_path=journal.path)


@dataclass
class _InFlight:
    """The variant whose worker is running: the batch and stage it last reported, the batches it finished."""

    job: VariantJob
    round_index: int
    batch: int | None = None
    stage: str = "start"
    finished: set[int] = field(default_factory=set)

    def unfinished_cell(self) -> int | None:
        left = [b for b in self.job.batch_sizes if b not in self.finished]
        if not left:
            return None
        return self.batch if self.batch in left else left[0]


def _run_job(job: VariantJob, cfg: RunConfig, model: Any, handle: Callable[[tuple[Any, ...]], None]) -> None:
    """Run one variant's cells in a worker (or here), passing every event to ``handle`` as it happens."""
    from infertune.cell import run_variant
    from infertune.executors.local import run_in_worker

    if cfg.benchmark.isolation == "none":
        def handle_here(*event: Any) -> None:
            interrupts.repair_signal_stack()  # a runtime in this process may have left one dangling
            handle(event)

        try:
            run_variant(job, handle_here, model=model)
        finally:
            interrupts.repair_signal_stack()
        return
    events = run_in_worker(job, cell_timeout_s=cfg.benchmark.cell_timeout_s,
                           variant_timeout_s=cfg.benchmark.variant_timeout_s)
    try:
        for event in events:
            handle(event)
    finally:
        events.close()  # stopped early (interrupted, a write failed): kills the worker


def _keep(files: ResultFiles, journal: Journal, row: dict[str, Any], samples: list[float] | None,
          round_index: int) -> None:
    """Journal the cell (fsynced), then fold it into the CSV/JSON; a failed write is a clear error."""
    result = ResultRow(**_known_fields(row))
    try:
        journal.append(round_index, asdict(result), samples)
        _record(files, result, samples, round_index)
    except OSError as err:
        raise InfertuneError(
            f"cannot write the results to {files.csv_path.parent} ({err.strerror or err}); the rows finished "
            f"before this one are in {files.csv_path.name} and {journal.path.name}: free space, then "
            f"infertune run --resume {files.csv_path}"
        ) from None


def _record_interrupt(files: ResultFiles, journal: Journal, in_flight: _InFlight | None,
                      stop: interrupts.RunInterrupted) -> None:
    """Mark the cell in progress ``interrupted``, flag the run, and tell the user how to finish it."""
    marked = 0
    batch = in_flight.unfinished_cell() if in_flight is not None else None
    if in_flight is not None and batch is not None:
        row = base_row(in_flight.job, batch)
        row.update(status="interrupted", error=f"interrupted by {stop.signal_name} during {in_flight.stage}; "
                   f"infertune run --resume {files.csv_path} runs it again")
        _keep(files, journal, row, None, in_flight.round_index)
        marked = 1
    files.run.update(status="interrupted", stopped_by=stop.signal_name)
    files.write()
    finished = sum(1 for r in files.rows if r.status != "interrupted")
    progress = f"{finished} of {files.run.get('cells_planned', '?')} cells finished"
    if files.run.get("rounds", 1) > 1:
        progress = (f"round {files.run.get('round', 1)} of {files.run['rounds']} was in progress "
                    f"({finished} of {files.run.get('cells_planned', '?')} cells have rows)")
    stop.summary = (f"{progress}{', the cell in progress is marked interrupted' if marked else ''}; results in "
                    f"{files.csv_path} (+ .json, .jsonl); finish the run with: infertune run --resume {files.csv_path}")


def _memory_limit(cfg: RunConfig, device: str, log: Log) -> int | None:
    """The worker memory cap to apply: CPU runs only (see ``executors.local.apply_memory_limit``)."""
    limit = cfg.benchmark.memory_limit_mb
    if limit and device != "cpu":
        log(f"warning: benchmark.memory_limit_mb ({limit} MB) is applied on CPU runs only: on {device} the "
            "runtime's driver maps host memory that a data-size cap would count; running without it")
        return None
    return limit


def _new_stem(out_dir: Path, prefix: str = "benchmark_results") -> Path:
    """``<out_dir>/<prefix>_<timestamp>``, unique even for two runs in one second."""
    run_id = timestamp()
    stem = out_dir / f"{prefix}_{run_id}"
    while stem.with_suffix(".csv").exists() or stem.with_suffix(".jsonl").exists():
        run_id += "_1"
        stem = out_dir / f"{prefix}_{run_id}"
    return stem


def _cell_id(job: VariantJob, batch: int) -> str:
    return ResultRow(**_known_fields(base_row(job, batch))).cell_id


def _known_fields(row: dict[str, Any]) -> dict[str, Any]:
    from infertune.results import FIELD_NAMES

    return {k: v for k, v in row.items() if k in FIELD_NAMES}


def _verification_set(cfg: RunConfig, loaded: Any, specs: tuple[Any, ...], warn: Log) -> tuple[Any, tuple[Any, ...]]:
    """The input source, and (inputs, FP32 reference outputs, labels or None, reference accuracy or None).

    Accuracy mode (``verify.dataset``) refuses random weights before any image is read.
    """
    from infertune import preflight
    from infertune.accuracy import accuracy, require_trained_weights
    from infertune.inputs import resolve_source

    v = cfg.verify
    if v.dataset:
        require_trained_weights(loaded.weights, v.dataset)
    pre = loaded.preprocessing or {}
    source, note = resolve_source(
        seed=v.seed, inputs=v.inputs, images=v.images, dataset=v.dataset, verify_count=v.samples,
        calibration_images=v.calibration_images, mean=v.mean if v.mean is not None else pre.get("mean"),
        std=v.std if v.std is not None else pre.get("std"),
        num_classes=_num_classes(cfg, loaded, specs) if v.dataset else None, specs=specs)
    if note:
        warn(f"warning: {note}")
    inputs = source.verification(v.samples)
    with preflight.input_shape_check(cfg, specs):
        reference = reference_outputs(loaded, inputs)
    labels = source.labels()
    ref_accuracy = None
    if labels is not None:
        acc = accuracy(reference[0][1], labels)
        ref_accuracy = {"top1": acc.top1, "top5": acc.top5, "samples": acc.samples}
    return source, (inputs, reference, labels, ref_accuracy)


def reference_outputs(loaded: Any, inputs: Any, chunk: int = 32) -> list[tuple[str, Any]]:
    """FP32 reference outputs (``LoadedModel.forward``) on ``inputs``, in chunks (a labelled set may hold
    thousands of images)."""
    import numpy as np

    from infertune.inputs import batch_size, take
    from infertune.verify import output_list

    parts: list[list[tuple[str, Any]]] = []
    for start in range(0, batch_size(inputs), chunk):
        parts.append(output_list(loaded.forward(take(inputs, slice(start, start + chunk)))))
    return [(name, np.concatenate([p[i][1] for p in parts])) for i, (name, _) in enumerate(parts[0])]


def _num_classes(cfg: RunConfig, loaded: Any, specs: tuple[Any, ...]) -> int | None:
    """The width of the model's first output on one synthetic sample (to map a dataset's class folders)."""
    from infertune import preflight
    from infertune.inputs import synthetic_batch
    from infertune.verify import output_list

    with preflight.input_shape_check(cfg, specs):
        first = output_list(loaded.forward(synthetic_batch(specs, 1, 0)))[0][1]
    return int(first.shape[1]) if first.ndim == 2 else None


def _record(files: ResultFiles, row: ResultRow, samples: list[float] | None, round_index: int) -> None:
    """Add a cell's row; in later rounds, pool its samples into the row already recorded.

    The first measured round's one-off costs (conversion, first call, size) stay: later rounds load
    from the cache. A later round that fails keeps the earlier numbers and says so in ``note``.
    """
    from infertune.measure.stats import summarize

    earlier = files.find(row.cell_id) if round_index else None
    pooled = files.samples_ms.get(row.cell_id) if earlier is not None else None
    if earlier is None or (not pooled and samples is not None):
        row.rounds = 1 if samples is not None else None
        if earlier is None:
            files.add(row, samples)
        else:  # earlier rounds failed; this one measured, so it becomes the row
            files.update(row, samples)
        return
    if samples is None:
        earlier.note = f"{earlier.note} round {round_index + 1} {row.status}: {row.error}".strip()[:500]
        files.update(earlier, None)
        return
    merged = list(pooled or []) + list(samples)
    for key, value in summarize(merged, row.batch_size).as_row_fields().items():
        setattr(earlier, key, value)
    earlier.rounds = (earlier.rounds or 1) + 1
    earlier.measured_s = (earlier.measured_s or 0.0) + (row.measured_s or 0.0)
    files.update(earlier, merged)


def _annotate_int8(files: ResultFiles) -> None:
    """Explain INT8 rows that are not faster than their FP32 parent (same backend and batch)."""
    from infertune.env import has_int8_dot_product

    fp32 = {(r.backend, r.batch_size, r.device): r for r in files.rows if r.precision == "fp32" and r.status == "ok"}
    changed = False
    for r in files.rows:
        parent = fp32.get((r.backend, r.batch_size, r.device))
        if r.precision != "int8" or parent is None or not r.latency_p50_ms or not parent.latency_p50_ms:
            continue
        if r.latency_p50_ms >= parent.latency_p50_ms:
            cause = ("this CPU has VNNI, so the likely cause is quantize/dequantize overhead around "
                     "unfused layers or an unsuited activation/weight type choice"
                     if has_int8_dot_product()
                     else "this CPU lacks VNNI/AMX int8 dot-product instructions, so int8 convolutions run "
                     "on slower AVX2 paths")
            r.add_note(f"INT8 not faster than {parent.variant} ({r.latency_p50_ms:.1f} vs {parent.latency_p50_ms:.1f} ms): {cause}")
            changed = True
    if changed:
        files.write()


def _warmup_time_s(cfg: RunConfig, device: str) -> float:
    """Configured warmup time, else 0.5 s on CUDA (an idle GPU clocks down: 345 MHz of 1980 on the
    H200 seen here) and none on the CPU, where the warmup count suffices."""
    if cfg.benchmark.warmup_time_s is not None:
        return cfg.benchmark.warmup_time_s
    return 0.5 if device == "cuda" else 0.0


def _model_label(name: str) -> str:
    """What rows call the model: a timm or hf name without its prefix; an ONNX file or a model folder by its name."""
    from infertune.models_onnx import is_onnx_path

    if is_onnx_path(name):
        return Path(name).name
    bare = name.split(":", 1)[-1] if name.startswith(("timm:", "hf:")) else name
    return Path(bare).name if name.startswith("hf:") and Path(bare).is_dir() else bare


def _write_config(path: Path, cfg: RunConfig) -> None:
    import yaml

    path.write_text("# resolved configuration of this run (defaults filled in)\n"
                    + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def _append_log(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text.rstrip() + "\n")


def _rm_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

