"""The four steps of a cell, in one place: prepare -> verify -> measure -> record.

``run_variant`` runs every batch size of one variant (so a backend may reuse work across batch
sizes, e.g. one ONNX export) and reports through ``emit``: ``("stage", batch, name)`` while it works
and ``("row", row_dict, samples_ms)`` for each finished cell. It runs in a worker process (the
default) or in-process; either way a cell that raises becomes a ``failed`` row and the next cell
goes on. Nothing here formats or prints results.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infertune.errors import InfertuneError, UnavailableError

Emit = Callable[..., None]


@dataclass
class VariantJob:
    """Everything a worker needs to run one variant over all batch sizes (picklable)."""

    variant: str
    batch_sizes: list[int]
    model_spec: dict[str, Any]
    state_dict_path: str
    model_name: str
    weights_tag: str
    model_digest: str
    device: str
    requested_device: str
    threads: int
    timing: dict[str, Any]
    tolerances: dict[str, dict[str, Any]]
    reference_path: str
    input_source: dict[str, Any]
    cache_root: str
    use_cache: bool
    settings: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    log_path: str | None = None
    #: the worker's data-memory cap (RLIMIT_DATA) in MB; None: no cap.
    memory_limit_mb: int | None = None
    #: the module that registers this variant's backend, imported by the worker (plugins, test backends).
    backend_module: str = ""


def base_row(job: VariantJob, batch: int) -> dict[str, Any]:
    """The identity fields every row of this job carries."""
    from infertune.backends.registry import get_backend
    from infertune.variants import parse_variant

    v = parse_variant(job.variant)
    return {
        "model": job.model_name,
        "variant": v.name,
        "backend": v.backend,
        "precision": v.precision,
        "options": ",".join(v.options),
        "batch_size": batch,
        "device": job.device,
        "requested_device": job.requested_device,
        "weights": job.weights_tag,
        "run_id": job.run_id,
        "label": get_backend(v.backend).label,
        "threads": job.threads,
    }


def configure_torch(threads: int) -> None:
    """Pin torch's intra-op threads (runtimes get ``threads`` from the context) so variants compete
    fairly, and keep fp32 honest on GPUs: cuDNN's TF32 convolutions (on by default) are not fp32."""
    import torch

    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def rebuild_model(job: VariantJob) -> Any:
    """Rebuild the architecture without downloading, then load the parent's exact weights."""
    import torch

    from infertune.models import load_model

    spec = dict(job.model_spec)
    loaded = load_model(spec["name"], pretrained=False, weights=None, seed=spec.get("seed", 0), warn=lambda m: None)
    state = torch.load(job.state_dict_path, map_location="cpu", weights_only=True)
    loaded.module.load_state_dict(state)
    return loaded.module.eval()


def run_variant(job: VariantJob, emit: Emit, model: Any = None) -> None:
    """Run prepare -> verify -> measure -> record for each batch size of ``job.variant``."""
    from infertune.backends.base import PrepareContext
    from infertune.backends.registry import get_backend
    from infertune.cache import ArtifactCache
    from infertune.inputs import InputSource
    from infertune.variants import parse_variant
    from infertune.verify import Tolerance

    variant = parse_variant(job.variant)
    backend = get_backend(variant.backend)
    configure_torch(job.threads)
    if model is None:
        emit("stage", job.batch_sizes[0], "load model")
        model = rebuild_model(job)
    ref = np.load(job.reference_path)
    verify_inputs, reference = ref["inputs"], ref["reference"]
    source = InputSource(**job.input_source)
    cache = ArtifactCache(job.cache_root, f"{job.model_name}-{job.model_digest}", enabled=job.use_cache)
    tolerance = Tolerance(**job.tolerances.get(variant.precision, {}))
    for batch in job.batch_sizes:
        row = base_row(job, batch)
        ctx = PrepareContext(
            model=model,
            example_input=source.timed_batch(batch),
            precision=variant.precision,
            options=variant.option_dict,
            device=job.device,
            threads=job.threads,
            cache=cache,
            calibration=source.calibration,
            settings=job.settings,
            log=lambda msg, b=batch: emit("log", b, msg),
        )
        samples: list[float] | None = None
        try:
            samples = _run_cell(backend, ctx, row, verify_inputs, reference, tolerance, job, emit)
        except UnavailableError as err:
            row.update(status="unavailable", error=str(err))
        except InfertuneError as err:
            row.update(status="failed", error=str(err))
        except Exception as err:  # a backend bug or a runtime's refusal: failure is data
            if job.memory_limit_mb and is_out_of_memory(err):
                row.update(status="crashed", error=f"out of memory: the cell needed more than the worker's limit "
                           f"of {job.memory_limit_mb} MB (benchmark.memory_limit_mb): {_one_line(err, 300)}")
            else:
                row.update(status="failed", error=_one_line(err))
            emit("log", batch, traceback.format_exc())
        emit("row", row, samples)


def _run_cell(backend: Any, ctx: Any, row: dict[str, Any], verify_inputs: np.ndarray, reference: np.ndarray,
              tolerance: Any, job: VariantJob, emit: Emit) -> list[float]:
    from infertune.cache import dir_size_mb
    from infertune.measure.memory import MemoryProbe
    from infertune.measure.stats import summarize
    from infertune.measure.timer import TimingPolicy, measure, time_first_call

    batch = ctx.batch_size
    backend.check(ctx.device, ctx.precision)
    probe = MemoryProbe(ctx.device)
    probe.start()
    emit("stage", batch, "prepare")
    t0 = time.perf_counter()
    runner = backend.prepare(ctx)
    row["convert_s"] = time.perf_counter() - t0
    row["cache_hit"] = runner.cache_hit
    row["artifact_mb"] = dir_size_mb(runner.artifact_path)
    row["latency_scope"] = runner.latency_scope
    try:
        timed_input = runner.to_native(ctx.example_input)
        row["first_inference_ms"] = time_first_call(runner, timed_input) / 1e6
        if backend.produces_outputs:
            emit("stage", batch, "verify")
            fid = verify(runner, verify_inputs, reference, batch, tolerance)
            row.update(fid.as_row_fields())
            if not fid.ok:
                row.update(status="fidelity_failed", error="; ".join(fid.failures))
        emit("stage", batch, "measure")
        policy = TimingPolicy(**job.timing)
        timing = measure(runner, timed_input, policy)
        stats = summarize(timing.samples_ms, batch)
        row.update(stats.as_row_fields())
        row["warmup_iterations"] = policy.warmup_iterations
        row["measured_s"] = timing.wall_ns / 1e9
    finally:
        peak = probe.stop()
        row["peak_host_mb"] = peak.host_mb
        row["peak_device_mb"] = peak.device_mb
        runner.close()
    return timing.samples_ms


def verify(runner: Any, inputs: np.ndarray, reference: np.ndarray, batch: int, tolerance: Any) -> Any:
    """Run the verification samples through ``runner`` in batches of exactly ``batch`` and compare.

    The last chunk wraps around to the first samples so static-shape artifacts see their own shape;
    only the real samples are compared.
    """
    from infertune.verify import compare

    n = len(inputs)
    outputs = []
    for start in range(0, n, batch):
        idx = [(start + i) % n for i in range(batch)]
        out = runner.to_numpy(runner(runner.to_native(inputs[idx])))
        runner.synchronize()
        outputs.append(np.asarray(out)[: min(batch, n - start)])
    return compare(np.concatenate(outputs), reference, tolerance)


#: how runtimes word a failed allocation (torch, ONNX Runtime, OpenVINO, the C library).
_OOM_WORDS = ("can't allocate memory", "cannot allocate memory", "failed to allocate", "bad_alloc", "out of memory")


def is_out_of_memory(err: BaseException) -> bool:
    """True when ``err`` is an allocation failure (what a memory limit turns an oversized cell into)."""
    return isinstance(err, MemoryError) or any(w in str(err).lower() for w in _OOM_WORDS)


def _one_line(err: BaseException, limit: int = 500) -> str:
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_reference(path: Path, inputs: np.ndarray, reference: np.ndarray) -> None:
    np.savez(path, inputs=inputs, reference=reference)


def job_to_dict(job: VariantJob) -> dict[str, Any]:
    return dataclasses.asdict(job)
