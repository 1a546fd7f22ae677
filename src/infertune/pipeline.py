"""One run: resolve the device, load the model once, compute the FP32 reference, then run every
variant's cells (``cell.run_variant``) and record each row to the result files as soon as it exists.

The parent process owns the result files; workers only send rows. If the run is interrupted or a
worker dies, the CSV/JSON already hold every finished row.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infertune.cell import VariantJob, base_row, configure_torch, save_reference
from infertune.config import RunConfig, tolerances
from infertune.errors import ConfigError
from infertune.results import ResultFiles, ResultRow

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


def run(cfg: RunConfig, log: Log = print, progress: Any = None, measure: bool = True) -> RunResult:
    """Run the whole ladder described by ``cfg``; returns the rows and where they were written.

    Args:
        cfg: the validated configuration.
        log: one-line messages for the user (warnings, cache reuse).
        progress: an object with ``start(total)``, ``stage(variant, batch, stage)``, ``advance()`` and
            ``stop()`` (see ``infertune.progress``), or None.
        measure: False for ``infertune verify``: every cell is prepared and verified, never timed
            (files are named ``verify_results_<TS>``).
    """
    import torch

    from infertune import env as envmod
    from infertune.backends.registry import get_backend
    from infertune.ladder import build_ladder
    from infertune.models import load_model

    device = resolve_device(cfg.benchmark.device, log)
    threads = cfg.benchmark.threads or envmod.usable_cores()
    configure_torch(threads)  # the reference below is true fp32 (no TF32) with pinned threads
    ladder = build_ladder(cfg, device)

    out_dir = Path(cfg.output.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = timestamp()
    prefix = "benchmark_results" if measure else "verify_results"
    stem = out_dir / f"{prefix}_{run_id}"
    while stem.with_suffix(".csv").exists():  # two runs in one second
        run_id += "_1"
        stem = out_dir / f"{prefix}_{run_id}"
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    config_path = Path(f"{stem}.config.yaml")
    log_path = Path(f"{stem}.log")
    _write_config(config_path, cfg)

    warnings: list[str] = []
    loaded = load_model(cfg.model.name, cfg.model.pretrained, cfg.model.weights, cfg.model.seed,
                        warn=lambda m: (warnings.append(m), log(m)))
    sample_shape = tuple(cfg.model.input_shape[1:])
    source, verification = _verification_set(cfg, loaded, sample_shape, lambda m: (warnings.append(m), log(m)))
    verify_inputs, reference, labels, ref_accuracy = verification
    verify_description = source.describe_verification(len(verify_inputs))
    int8_settings = cfg.optimization.int8.model_dump()
    if any(v.precision == "int8" for v in ladder):  # INT8 caches are keyed by the calibration data too
        try:
            int8_settings["calibration_id"] = source.calibration_identity()
        except ConfigError as err:  # no usable calibration set: the INT8 cells fail with this reason
            int8_settings["calibration_id"] = f"unusable: {err}"

    environment = envmod.capture(threads)
    environment.update(device=device, requested_device=cfg.benchmark.device)
    files = ResultFiles(csv_path, json_path, config=cfg.model_dump(mode="json"), environment=environment)
    files.write()

    tmp = Path(tempfile.mkdtemp(prefix="infertune-"))
    try:
        ref_path = tmp / "reference.npz"
        save_reference(ref_path, verify_inputs, reference, labels)
        state_path = tmp / "weights.pt"
        torch.save(loaded.module.state_dict(), state_path)
        digest = loaded.digest()
        tol = {k: asdict(v) for k, v in tolerances(cfg).items()}
        timing = {
            "warmup_iterations": cfg.benchmark.warmup_iterations,
            "warmup_min_time_s": _warmup_time_s(cfg, device),
            "min_iterations": cfg.benchmark.benchmark_iterations,
            "min_time_s": cfg.benchmark.min_time_s,
            "max_iterations": cfg.benchmark.max_iterations,
        }
        settings = {"onnx_opset": cfg.optimization.onnx_opset, "int8": int8_settings}
        batches = list(cfg.benchmark.batch_sizes)
        rounds = cfg.benchmark.rounds
        if progress:
            progress.start(len(ladder) * len(batches) * rounds)
        jobs = [VariantJob(
            variant=variant.name, batch_sizes=batches, model_spec=cfg.model.model_dump(),
            state_dict_path=str(state_path), model_name=_model_label(cfg.model.name),
            weights_tag=loaded.weights, model_digest=digest, device=device,
            requested_device=cfg.benchmark.device, threads=threads, timing=timing, tolerances=tol,
            reference_path=str(ref_path),
            input_source=asdict(source),
            cache_root=cfg.output.models_dir, use_cache=cfg.output.use_cache, settings=settings,
            run_id=run_id, log_path=str(log_path), measure=measure, verify_inputs=verify_description,
            ref_accuracy=ref_accuracy,
        ) for variant in ladder]
        for round_index in range(rounds):
            for variant, job in zip(ladder, jobs):
                avail = get_backend(variant.backend).availability(device, variant.precision)
                if not avail.ok:
                    if round_index == 0:
                        for batch in batches:
                            row = base_row(job, batch)
                            row.update(status="unavailable", error=avail.reason)
                            files.add(ResultRow(**row))
                    if progress:
                        progress.advance(len(batches))
                    continue
                for event in _events(job, cfg, loaded.module):
                    kind = event[0]
                    if kind == "stage" and progress:
                        label = job.variant if rounds == 1 else f"{job.variant} (round {round_index + 1}/{rounds})"
                        progress.stage(label, event[1], event[2])
                    elif kind == "log" and cfg.benchmark.isolation == "none":
                        _append_log(log_path, f"[{job.variant} b{event[1]}] {event[2]}")
                    elif kind == "row":
                        _record(files, ResultRow(**event[1]), event[2], round_index)
                        if progress:
                            progress.advance()
        _annotate_int8(files)
    finally:
        if progress:
            progress.stop()
        _rm_tree(tmp)
    return RunResult(files.rows, csv_path, json_path, config_path, log_path, environment, warnings)


def _verification_set(cfg: RunConfig, loaded: Any, shape: tuple[int, ...], warn: Log) -> tuple[Any, tuple[Any, ...]]:
    """The input source, and (inputs, FP32 reference outputs, labels or None, reference accuracy or None).

    Accuracy mode (``verify.dataset``) refuses random weights before any image is read.
    """
    from infertune.accuracy import accuracy, require_trained_weights
    from infertune.inputs import resolve_source

    v = cfg.verify
    if v.dataset:
        require_trained_weights(loaded.weights, v.dataset)
    pre = loaded.preprocessing or {}
    source, note = resolve_source(
        shape, seed=v.seed, inputs=v.inputs, images=v.images, dataset=v.dataset, verify_count=v.samples,
        calibration_images=v.calibration_images, mean=v.mean if v.mean is not None else pre.get("mean"),
        std=v.std if v.std is not None else pre.get("std"),
        num_classes=_num_classes(loaded.module, shape) if v.dataset else None)
    if note:
        warn(f"warning: {note}")
    inputs = source.verification(v.samples)
    reference = reference_outputs(loaded.module, inputs)
    labels = source.labels()
    ref_accuracy = None
    if labels is not None:
        acc = accuracy(reference[0][1], labels)
        ref_accuracy = {"top1": acc.top1, "top5": acc.top5, "samples": acc.samples}
    return source, (inputs, reference, labels, ref_accuracy)


def reference_outputs(module: Any, inputs: Any, chunk: int = 32) -> list[tuple[str, Any]]:
    """FP32 eager outputs on ``inputs``, in chunks (a labelled set may hold thousands of images)."""
    import numpy as np
    import torch

    from infertune.verify import output_list

    parts: list[list[tuple[str, Any]]] = []
    with torch.inference_mode():
        for start in range(0, len(inputs), chunk):
            parts.append(output_list(module(torch.from_numpy(inputs[start:start + chunk]))))
    return [(name, np.concatenate([p[i][1] for p in parts])) for i, (name, _) in enumerate(parts[0])]


def _num_classes(module: Any, shape: tuple[int, ...]) -> int | None:
    """The width of the model's first output on one zero sample (to map a dataset's class folders)."""
    import torch

    from infertune.verify import output_list

    with torch.inference_mode():
        first = output_list(module(torch.zeros((1, *shape))))[0][1]
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


def _events(job: VariantJob, cfg: RunConfig, model: Any) -> Any:
    from infertune.executors.local import run_in_process, run_in_worker

    if cfg.benchmark.isolation == "none":
        return run_in_process(job, model=model)
    return run_in_worker(job, cell_timeout_s=cfg.benchmark.cell_timeout_s)


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
            r.note = f"INT8 not faster than {parent.variant} ({r.latency_p50_ms:.1f} vs {parent.latency_p50_ms:.1f} ms): {cause}"
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
    return name.split(":")[-1] if name.startswith("timm:") else name


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

