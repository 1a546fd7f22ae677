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
    #: the inputs (an ``infertune.inputs.InputSource``: specs, verification/calibration/timed data).
    input_source: Any
    cache_root: str
    use_cache: bool
    settings: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    log_path: str | None = None
    #: False for ``infertune verify``: prepare and verify only, no timing.
    measure: bool = True
    #: what the verification set is (the row's ``verify_inputs``).
    verify_inputs: str = ""
    #: accuracy mode: the FP32 reference's {"top1": .., "top5": .., "samples": ..} on the labelled set.
    ref_accuracy: dict[str, Any] | None = None
    #: the worker's data-memory cap (RLIMIT_DATA) in MB; None: no cap.
    memory_limit_mb: int | None = None
    #: the module that registers this variant's backend, imported by the worker (plugins, test backends).
    backend_module: str = ""
    #: what the outputs are compared with (``LoadedModel.reference``), said on every row.
    reference: str = ""


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
        "reference": job.reference,
    }


def configure_torch(threads: int) -> None:
    """Pin torch's intra-op threads (runtimes get ``threads`` from the context) so variants compete
    fairly; keep fp32 honest on GPUs (cuDNN's TF32 convolutions, on by default, are not fp32: only a
    ``tf32`` variant turns them on); let cuDNN pick its fastest algorithm per shape (autotuned in the
    first call, which is timed apart, not in the timed loop)."""
    import torch

    from infertune.backends.torch_common import set_tf32

    torch.set_num_threads(threads)
    set_tf32(False)
    torch.backends.cudnn.benchmark = True


def rebuild_model(job: VariantJob) -> Any:
    """Rebuild the architecture without downloading, then load the parent's exact weights."""
    import torch

    from infertune.models import load_model

    spec = dict(job.model_spec)
    loaded = load_model(spec["name"], pretrained=False, weights=None, seed=spec.get("seed", 0), warn=lambda m: None)
    if loaded.kind != "torch":  # an ONNX file: the file is the weights
        return loaded.module
    state = torch.load(job.state_dict_path, map_location="cpu", weights_only=True)
    loaded.module.load_state_dict(state)
    return loaded.module.eval()


def run_variant(job: VariantJob, emit: Emit, model: Any = None) -> None:
    """Run prepare -> verify -> measure -> record for each batch size of ``job.variant``."""
    from infertune.backends.base import PrepareContext
    from infertune.backends.registry import get_backend
    from infertune.cache import ArtifactCache
    from infertune.variants import parse_variant
    from infertune.verify import tolerance_for

    variant = parse_variant(job.variant)
    backend = get_backend(variant.backend)
    configure_torch(job.threads)
    if model is None:
        emit("stage", job.batch_sizes[0], "load model")
        model = rebuild_model(job)
    verify_inputs, reference, labels = load_reference(job.reference_path)
    source = job.input_source
    cache = ArtifactCache(job.cache_root, f"{job.model_name}-{job.model_digest}", enabled=job.use_cache)
    tolerance = tolerance_for(job.tolerances, variant.precision)
    for batch in job.batch_sizes:
        row = base_row(job, batch)
        calibration = _RecordedCalibration(source)
        ctx = PrepareContext(
            model=model,
            example_input=source.timed_batch(batch),
            precision=variant.precision,
            options=variant.option_dict,
            device=job.device,
            threads=job.threads,
            cache=cache,
            calibration=calibration,
            settings=job.settings,
            log=lambda msg, b=batch: emit("log", b, msg),
        )
        samples: list[float] | None = None
        try:
            samples = _run_cell(backend, ctx, row, (verify_inputs, reference, labels), tolerance, job, emit)
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
        row["calibration_inputs"] = _calibration_text(calibration, variant, row, job)
        emit("row", row, samples)


class _RecordedCalibration:
    """``source.calibration`` that remembers whether a backend drew samples, and describes them."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.description = ""

    @property
    def used(self) -> bool:
        return bool(self.description)

    def __call__(self, n: int) -> Any:
        samples = self.source.calibration(n)
        self.description = self.source.describe_calibration(n)
        return samples


def _calibration_text(calibration: _RecordedCalibration, variant: Any, row: dict[str, Any], job: VariantJob) -> str:
    """What calibrated this row: the samples drawn, or for a cached INT8 artifact the same source
    (the cache key holds the calibration source's identity, so a hit was calibrated on it)."""
    if calibration.used:
        return calibration.description
    if variant.precision == "int8" and row.get("cache_hit") and "dynamic" not in variant.options:
        n = int((job.settings.get("int8") or {}).get("calibration_samples", 32))
        return f"{calibration.source.describe_calibration(n)} (cached INT8 artifact)"
    return ""


def _run_cell(backend: Any, ctx: Any, row: dict[str, Any], verification: tuple[np.ndarray, list[Any], Any],
              tolerance: Any, job: VariantJob, emit: Emit) -> list[float] | None:
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
        if job.measure:
            row["first_inference_ms"] = time_first_call(runner, timed_input) / 1e6
        if backend.produces_outputs:
            emit("stage", batch, "verify")
            verify_step(runner, verification, batch, tolerance, job, row)
        if not job.measure:
            return None
        emit("stage", batch, "measure")
        policy = TimingPolicy(**job.timing)
        timing = measure(runner, timed_input, policy)
        stats = summarize(timing.samples_ms, batch)
        row.update(stats.as_row_fields())
        row["warmup_iterations"] = policy.warmup_iterations
        row["measured_s"] = timing.wall_ns / 1e9
        if runner.latency_scope == "device":
            row.update(_end_to_end_fields(runner, ctx.example_input, policy, timing))
    finally:
        peak = probe.stop()
        row["peak_host_mb"] = peak.host_mb
        row["peak_device_mb"] = peak.device_mb
        runner.close()
    return timing.samples_ms


def _end_to_end_fields(runner: Any, host_batch: Any, policy: Any, device_timing: Any) -> dict[str, float]:
    """For a device-latency runner: the synchronised host time of the device loop (a check on the CUDA
    events) and a second loop timed end to end, host array in and host array out."""
    from infertune.inputs import batch_size
    from infertune.measure.stats import summarize
    from infertune.measure.timer import EndToEnd, measure

    e2e = summarize(measure(EndToEnd(runner), host_batch, policy).samples_ms, batch_size(host_batch))
    return {
        "host_latency_p50_ms": float(np.median(device_timing.host_samples_ms)),
        "e2e_latency_p50_ms": e2e.p50_ms,
        "e2e_latency_p99_ms": e2e.p99_ms,
        "e2e_throughput_ips": e2e.throughput_ips,
    }


def verify_step(runner: Any, verification: tuple[Any, list[Any], Any], batch: int, tolerance: Any,
                job: VariantJob, row: dict[str, Any]) -> None:
    """Compare with the reference (and, in accuracy mode, gate on accuracy); fill the row's fidelity fields."""
    from infertune.accuracy import Accuracy, accuracy, gate

    from infertune.results import joined_note

    inputs, reference, labels = verification
    outputs = run_outputs(runner, inputs, batch)
    fid = _compare(outputs, reference, tolerance)
    row.update(fid.as_row_fields())
    row["verify_inputs"] = job.verify_inputs
    failures = list(fid.failures)
    if labels is not None and job.ref_accuracy and outputs:
        acc = accuracy(outputs[0][1], labels)
        row.update(top1_acc=acc.top1, top5_acc=acc.top5, ref_top1_acc=job.ref_accuracy["top1"],
                   ref_top5_acc=job.ref_accuracy["top5"])
        failure = gate(acc, Accuracy(**job.ref_accuracy), tolerance.accuracy_ratio_min)
        if failure:
            failures.append(failure)
    for note in (*getattr(runner, "notes", ()), *fid.notes):
        row["note"] = joined_note(row.get("note", ""), note)
    if fid.unverifiable:
        shown = f"; against it: {'; '.join(failures)}" if failures else ""
        row.update(status="unverifiable", error=f"{fid.unverifiable}{shown}")
    elif failures:
        row.update(status="fidelity_failed", fidelity_ok=False, error="; ".join(failures))


def run_outputs(runner: Any, inputs: Any, batch: int) -> list[tuple[str, np.ndarray]]:
    """Run the verification samples through ``runner`` in batches of exactly ``batch``; outputs per tensor.

    The last chunk wraps around to the first samples so static-shape artifacts see their own shape;
    only the real samples are kept.
    """
    from infertune.inputs import batch_size, take
    from infertune.verify import output_list

    n = batch_size(inputs)
    chunks: list[list[tuple[str, np.ndarray]]] = []
    for start in range(0, n, batch):
        idx = [(start + i) % n for i in range(batch)]
        out = output_list(runner.to_numpy(runner(runner.to_native(take(inputs, idx)))))
        runner.synchronize()
        chunks.append([(name, arr[: min(batch, n - start)]) for name, arr in out])
    return [(name, np.concatenate([c[i][1] for c in chunks])) for i, (name, _) in enumerate(chunks[0])]


def verify(runner: Any, inputs: Any, reference: Any, batch: int, tolerance: Any) -> Any:
    """Run the verification samples through ``runner`` (see ``run_outputs``) and compare with ``reference``."""
    return _compare(run_outputs(runner, inputs, batch), reference, tolerance)


def _compare(outputs: list[tuple[str, np.ndarray]], reference: Any, tolerance: Any) -> Any:
    from infertune.verify import compare

    return compare(dict(outputs) if len(outputs) > 1 else outputs[0][1], reference, tolerance)


#: how runtimes word a failed allocation (torch, ONNX Runtime, OpenVINO, the C library).
_OOM_WORDS = ("can't allocate memory", "cannot allocate memory", "failed to allocate", "bad_alloc", "out of memory")


def is_out_of_memory(err: BaseException) -> bool:
    """True when ``err`` is an allocation failure (what a memory limit turns an oversized cell into)."""
    return isinstance(err, MemoryError) or any(w in str(err).lower() for w in _OOM_WORDS)


def _one_line(err: BaseException, limit: int = 500) -> str:
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_reference(path: Path, inputs: Any, reference: Any, labels: np.ndarray | None = None) -> None:
    """Save the verification inputs (one array or {name: array}), the reference output(s) (one array or
    ``output_list`` pairs) and labels."""
    from infertune.verify import output_list

    outputs = reference if isinstance(reference, list) else output_list(reference)
    arrays = {f"reference_{i}": arr for i, (_, arr) in enumerate(outputs)}
    names = np.array([name for name, _ in outputs])
    extra = {"labels": labels} if labels is not None else {}
    named_inputs = inputs if isinstance(inputs, dict) else {"": inputs}
    feeds = {f"input_{i}": arr for i, arr in enumerate(named_inputs.values())}
    np.savez(path, input_names=np.array(list(named_inputs)), output_names=names, **feeds, **arrays, **extra)


def load_reference(path: str | Path) -> tuple[Any, Any, np.ndarray | None]:
    """(inputs: one array or {name: array}, reference outputs: one array or a {name: array} dict, labels or None)."""
    with np.load(path) as ref:
        names = [str(n) for n in ref["output_names"]]
        outputs = [ref[f"reference_{i}"] for i in range(len(names))]
        labels = ref["labels"] if "labels" in ref.files else None
        input_names = [str(n) for n in ref["input_names"]]
        feeds = {name: ref[f"input_{i}"] for i, name in enumerate(input_names)}
        inputs = feeds[""] if input_names == [""] else feeds
    reference = outputs[0] if len(outputs) == 1 else dict(zip(names, outputs))
    return inputs, reference, labels


def job_to_dict(job: VariantJob) -> dict[str, Any]:
    return dataclasses.asdict(job)
