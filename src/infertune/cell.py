"""The four steps of a cell, in one place: prepare -> verify -> measure -> record.

A ``VariantJob`` runs every batch size of one variant (so a backend may reuse work across batch
sizes, e.g. one ONNX export) in a worker and reports through ``emit``: a ``StageEvent`` while it
works, a ``LogEvent`` for the run's log and a ``RowEvent`` with the ``ResultRow`` it built for each
finished cell. A cell that raises becomes a ``failed`` row and the next cell goes on; a worker that
dies leaves the executor to report the cells it owed (``VariantJob.lost``). Nothing here formats or
prints results.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from infertune.errors import InfertuneError, UnavailableError
from infertune.executors.base import (
    ClusterNode,
    Emit,
    Event,
    Job,
    LogEvent,
    Loss,
    RowEvent,
    StageEvent,
)
from infertune.results import ResultRow, Status

if TYPE_CHECKING:
    from infertune.config import ModelConfig
    from infertune.measure.timer import TimingPolicy
    from infertune.reference import Reference
    from infertune.variants import Variant
    from infertune.verify import Tolerance


@dataclass(frozen=True)
class VariantJob(Job):
    """Everything a worker needs to run one variant over its batch sizes (picklable, typed)."""

    job_id: str
    variant: Variant
    batches: tuple[int, ...]
    #: the model section of the config: the worker rebuilds the architecture, then loads the reference's weights.
    model: ModelConfig
    #: what the reference worker produced: weights, per-batch outputs, input source, digest, accuracy.
    reference: Reference
    #: the row's ``model`` (``resnet50``, a timm name without its prefix).
    model_label: str
    device: str
    requested_device: str
    threads: int
    #: None for ``infertune verify``: prepare and verify only, no timing.
    timing: TimingPolicy | None
    tolerance: Tolerance
    cache_root: str
    use_cache: bool
    #: backend-tunable settings (``PrepareContext.settings``: ``onnx_opset``, the ``int8`` block).
    settings: dict[str, Any]
    run_id: str = ""
    #: the round this job measures (0-based; ``benchmark.rounds``).
    round_index: int = 0
    rounds: int = 1
    #: the worker's data-memory cap (RLIMIT_DATA) in MB; None: no cap.
    memory_limit_mb: int | None = None
    #: the module that registers this variant's backend (plugins, test backends), imported by the worker.
    modules: tuple[str, ...] = ()
    #: False for the end-of-run check of the baseline, verified earlier in the run: prepare and time only.
    verify_outputs: bool = True
    #: ``--per-node``: the node this job must run on (its rows say so in ``pinned_node``); None: anywhere.
    pinned: ClusterNode | None = None

    def libraries(self) -> tuple[str, ...]:
        from infertune.models import model_libraries

        return model_libraries(self.model.name)

    @property
    def label(self) -> str:
        where = f" on {self.pinned.name}" if self.pinned is not None else ""
        rounds = f" (round {self.round_index + 1}/{self.rounds})" if self.rounds > 1 else ""
        return f"{self.variant.name}{where}{rounds}"

    def base_row(self, batch: int) -> ResultRow:
        """A row with the identity fields every row of this job carries."""
        return identity_row(self.variant, batch, model=self.model_label, device=self.device,
                            requested_device=self.requested_device, weights=self.reference.weights_tag,
                            run_id=self.run_id, threads=self.threads, reference=self.reference.description,
                            pinned_node=self.pinned.name if self.pinned is not None else "")

    def run(self, emit: Emit) -> None:
        run_variant(self, emit)

    def lost(self, loss: Loss) -> list[Event]:
        what = "timed out" if loss.status == Status.TIMEOUT else str(loss.status)
        events: list[Event] = []
        for batch in self.batches:
            if batch in loss.finished:
                continue
            row = self.base_row(batch)
            row.update(status=loss.status, error=loss.reason if batch == loss.batch else
                       f"not run: the worker {what} on batch {loss.batch}")
            events.append(RowEvent(self.job_id, row, None))
        return events


def identity_row(variant: Variant, batch: int, *, model: str, device: str, requested_device: str, weights: str,
                 run_id: str, threads: int, reference: str = "", pinned_node: str = "") -> ResultRow:
    """A cell's row before anything happened to it: who, what, where (the worker fills in the rest)."""
    from infertune.backends.registry import get_backend

    return ResultRow(
        model=model, variant=variant.name, backend=variant.backend, precision=variant.precision,
        options=",".join(variant.options), batch_size=batch, device=device, requested_device=requested_device,
        weights=weights, run_id=run_id, label=get_backend(variant.backend).label, threads=threads,
        reference=reference, pinned_node=pinned_node,
    )


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


def stop_compile_workers() -> None:
    """End Inductor's compile-worker processes (torch.compile, AOTInductor) while this job still shares the
    measurement slot: left to notice the worker's exit, they wind down beside another job's measurement."""
    async_compile = sys.modules.get("torch._inductor.async_compile")
    if async_compile is not None:
        async_compile.shutdown_compile_workers()


def rebuild_model(model: ModelConfig, weights_path: str) -> Any:
    """Rebuild the architecture without downloading, then load the reference worker's exact weights
    (an ONNX file is its own weights).

    The architecture is first built on the meta device, where the random initialisation the weights
    replace anyway costs nothing (ResNet50: ~0.2 s a worker), and takes the saved tensors as they are.
    A model that cannot be built there, or keeps a tensor the weights file does not hold (a
    non-persistent buffer), is built again the ordinary way.
    """
    import torch

    from infertune.models import load_model

    def build() -> Any:
        return load_model(model.name, pretrained=False, weights=None, seed=model.seed, warn=lambda m: None)

    try:
        with torch.device("meta"):
            empty = build()
    except Exception:  # noqa: BLE001 - a factory that computes with tensor values: the ordinary way below
        empty = None
    if empty is not None and empty.kind != "torch":
        return empty.module
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    if empty is not None:
        with contextlib.suppress(Exception):
            empty.module.load_state_dict(state, assign=True)
            if not any(t.is_meta for t in (*empty.module.parameters(), *empty.module.buffers())):
                return empty.module.eval()
    loaded = build()
    if loaded.kind != "torch":
        return loaded.module
    loaded.module.load_state_dict(state)
    return loaded.module.eval()


def run_variant(job: VariantJob, emit: Emit) -> None:
    """Run prepare -> verify -> measure -> record for each batch size of ``job.variant``."""
    from infertune.backends.base import PrepareContext
    from infertune.backends.registry import get_backend
    from infertune.cache import ArtifactCache
    from infertune.reference import load_reference

    backend = get_backend(job.variant.backend)
    configure_torch(job.threads)
    emit(StageEvent(job.job_id, job.batches[0], "load model"))
    try:
        model = rebuild_model(job.model, job.reference.weights_path)
    except Exception as err:  # noqa: BLE001 - the reference worker built it: this is rare, and still data
        for batch in job.batches:
            row = job.base_row(batch)
            row.update(status=Status.FAILED, error=f"rebuilding the model in the worker failed: {one_line(err)}")
            emit(RowEvent(job.job_id, row, None))
        return
    source = job.reference.source
    cache = ArtifactCache(job.cache_root, f"{job.model_label}-{job.reference.digest}", enabled=job.use_cache)
    for batch in job.batches:
        row = job.base_row(batch)
        calibration = _RecordedCalibration(source)
        ctx = PrepareContext(
            model=model,
            example_input=source.timed_batch(batch),
            precision=job.variant.precision,
            options=job.variant.option_dict,
            device=job.device,
            threads=job.threads,
            cache=cache,
            calibration=calibration,
            settings=job.settings,
            log=lambda msg, b=batch: emit(LogEvent(job.job_id, b, msg)),
        )
        samples: list[float] | None = None
        try:
            reference_failure = job.reference.failed_batches.get(batch)
            if reference_failure and backend.produces_outputs:
                raise InfertuneError(f"the FP32 reference failed at batch {batch} (the model's own forward, eager): "
                                     f"{reference_failure}")
            verifies = backend.produces_outputs and job.verify_outputs
            verification = load_reference(job.reference.path, batch) if verifies else None
            samples = _run_cell(backend, ctx, row, verification, job, emit)
        except UnavailableError as err:
            row.update(status=Status.UNAVAILABLE, error=str(err))
        except InfertuneError as err:
            row.update(status=Status.FAILED, error=str(err))
        except Exception as err:  # noqa: BLE001 - a backend bug or a runtime's refusal: failure is data
            if job.memory_limit_mb and is_out_of_memory(err):
                row.update(status=Status.CRASHED, error=f"out of memory: the cell needed more than the worker's limit "
                           f"of {job.memory_limit_mb} MB (benchmark.memory_limit_mb): {one_line(err, 300)}")
            else:
                row.update(status=Status.FAILED, error=one_line(err))
            emit(LogEvent(job.job_id, batch, traceback.format_exc()))
        row.calibration_inputs = _calibration_text(calibration, row, job)
        emit(RowEvent(job.job_id, row, samples))
    stop_compile_workers()


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


def _calibration_text(calibration: _RecordedCalibration, row: ResultRow, job: VariantJob) -> str:
    """What calibrated this row: the samples drawn, or for a cached INT8 artifact the same source
    (the cache key holds the calibration source's identity, so a hit was calibrated on it)."""
    if calibration.used:
        return calibration.description
    if job.variant.precision == "int8" and row.cache_hit and "dynamic" not in job.variant.options:
        n = int((job.settings.get("int8") or {}).get("calibration_samples", 32))
        return f"{calibration.source.describe_calibration(n)} (cached INT8 artifact)"
    return ""


def _run_cell(backend: Any, ctx: Any, row: ResultRow, verification: tuple[Any, Any, Any] | None,
              job: VariantJob, emit: Emit) -> list[float] | None:
    from infertune.cache import artifact_ref, dir_size_mb
    from infertune.measure.gpu_clock import gpu_warmed_up
    from infertune.measure.load import LoadMeter
    from infertune.measure.load import row_fields as load_fields
    from infertune.measure.memory import MemoryProbe
    from infertune.measure.stats import summarize
    from infertune.measure.timer import measure, time_first_call

    batch = ctx.batch_size
    backend.check(ctx.device, ctx.precision)
    probe = MemoryProbe(ctx.device)
    probe.start()
    emit(StageEvent(job.job_id, batch, "prepare"))
    t0 = time.perf_counter()
    runner = backend.prepare(ctx)
    row.update(convert_s=time.perf_counter() - t0, cache_hit=runner.cache_hit,
               artifact_mb=dir_size_mb(runner.artifact_path), artifact=artifact_ref(runner.artifact_path, ctx.cache.root),
               latency_scope=runner.latency_scope)
    policy = job.timing
    warm_calls = 0  # untimed calls at this batch size so far: they count as warm-up (measure.timer)
    try:
        timed_input = runner.to_native(ctx.example_input)
        if policy is not None:
            row.first_inference_ms = time_first_call(runner, timed_input) / 1e6
            warm_calls += 1
        if verification is not None:
            emit(StageEvent(job.job_id, batch, "verify"))
            warm_calls += verify_step(runner, verification, batch, job, row)
        if policy is None:
            return None
        emit(StageEvent(job.job_id, batch, "measure"))
        meter = LoadMeter()
        meter.start()
        on_gpu = runner.latency_scope == "device"
        timing = measure(runner, timed_input, policy, already_warm=warm_calls,
                         warmed_up=gpu_warmed_up if on_gpu else lambda: False,
                         host_batch=ctx.example_input if on_gpu else None)
        row.update(**summarize(timing.samples_ms, batch).as_row_fields(), warmup_iterations=timing.warmup_calls,
                   measured_s=timing.wall_ns / 1e9, rounds=1,
                   **load_fields(meter.stop(None if on_gpu else ctx.threads), meter.load_avg_before))
        if on_gpu:
            row.update(**_end_to_end_fields(timing, batch))
    finally:
        peak = probe.stop()
        row.update(peak_host_mb=peak.host_mb, peak_device_mb=peak.device_mb)
        runner.close()
    return timing.samples_ms


def _end_to_end_fields(timing: Any, batch: int) -> dict[str, float]:
    """For a device-latency runner: the synchronised host time of its calls (a check on the CUDA events)
    and their end-to-end time, host array in and host array out (``measure.timer.measure``)."""
    from infertune.measure.stats import summarize

    e2e = summarize(timing.e2e_samples_ms, batch)
    return {
        "host_latency_p50_ms": float(np.median(timing.host_samples_ms)),
        "e2e_latency_p50_ms": e2e.p50_ms,
        "e2e_latency_p99_ms": e2e.p99_ms,
        "e2e_throughput_ips": e2e.throughput_ips,
    }


def verify_step(runner: Any, verification: tuple[Any, Any, Any], batch: int, job: VariantJob,
                row: ResultRow) -> int:
    """Compare with the reference at this batch size (and, in accuracy mode, gate on accuracy); fill the
    row's fidelity fields. Returns how many calls of ``runner`` that took."""
    from infertune.accuracy import accuracy, gate
    from infertune.inputs import batch_size

    inputs, reference, labels = verification
    tolerance = job.tolerance
    outputs = run_outputs(runner, inputs, batch)
    calls = -(-batch_size(inputs) // batch)  # batched_outputs' chunks
    fid = _compare(outputs, reference, tolerance)
    row.update(**fid.as_row_fields(), verify_inputs=job.reference.verify_description)
    failures = list(fid.failures)
    ref_accuracy = (job.reference.accuracy or {}).get(batch)
    if labels is not None and ref_accuracy is not None and outputs:
        acc = accuracy(outputs[0][1], labels)
        row.update(top1_acc=acc.top1, top5_acc=acc.top5, ref_top1_acc=ref_accuracy.top1, ref_top5_acc=ref_accuracy.top5)
        failure = gate(acc, ref_accuracy, tolerance.accuracy_ratio_min)
        if failure:
            failures.append(failure)
    for note in (*getattr(runner, "notes", ()), *fid.notes):
        row.add_note(note)
    if fid.unverifiable:
        shown = f"; against it: {'; '.join(failures)}" if failures else ""
        row.update(status=Status.UNVERIFIABLE, error=f"{fid.unverifiable}{shown}")
    elif failures:
        row.update(status=Status.FIDELITY_FAILED, fidelity_ok=False, error="; ".join(failures))
    return calls


def batched_outputs(call: Callable[[Any], list[tuple[str, np.ndarray]]], inputs: Any,
                    batch: int) -> list[tuple[str, np.ndarray]]:
    """``call`` on the samples (one array, or {input name: array}) in batches of exactly ``batch``; the
    outputs per tensor, one row per sample.

    The last chunk wraps around to the first samples so static-shape artifacts see their own shape;
    only the real samples are kept. The FP32 reference and every variant go through this one function,
    so each is judged on exactly the batches the other saw.
    """
    from infertune.inputs import batch_size, take

    n = batch_size(inputs)
    chunks: list[list[tuple[str, np.ndarray]]] = []
    for start in range(0, n, batch):
        idx = [(start + i) % n for i in range(batch)]
        chunks.append([(name, arr[: min(batch, n - start)]) for name, arr in call(take(inputs, idx))])
    return [(name, np.concatenate([c[i][1] for c in chunks])) for i, (name, _) in enumerate(chunks[0])]


def run_outputs(runner: Any, inputs: Any, batch: int) -> list[tuple[str, np.ndarray]]:
    """Run the verification samples through ``runner`` in batches of exactly ``batch`` (``batched_outputs``)."""
    from infertune.verify import output_list

    def call(chunk: Any) -> list[tuple[str, np.ndarray]]:
        out = output_list(runner.to_numpy(runner(runner.to_native(chunk))))
        runner.synchronize()
        return out

    return batched_outputs(call, inputs, batch)


def _compare(outputs: list[tuple[str, np.ndarray]], reference: Any, tolerance: Tolerance) -> Any:
    from infertune.verify import compare

    return compare(dict(outputs) if len(outputs) > 1 else outputs[0][1], reference, tolerance)


#: how runtimes word a failed allocation (torch, ONNX Runtime, OpenVINO, the C library).
_OOM_WORDS = ("can't allocate memory", "cannot allocate memory", "failed to allocate", "bad_alloc", "out of memory")


def is_out_of_memory(err: BaseException) -> bool:
    """True when ``err`` is an allocation failure (what a memory limit turns an oversized cell into)."""
    return isinstance(err, MemoryError) or any(w in str(err).lower() for w in _OOM_WORDS)


def one_line(err: BaseException, limit: int = 500) -> str:
    """``RuntimeError: text | next line`` cut to ``limit`` characters: an exception as a row's ``error``."""
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
