"""The reference job: load the user's model and compute its FP32 outputs, in a worker, once per run.

Everything that runs the user's model code for the reference happens here, never in the parent:
loading (download, factory, weights file), the weights digest, the input-shape check, the number of
classes (accuracy mode) and the FP32 outputs. A model that segfaults, hangs or exhausts memory in its
forward takes down this worker, not the run.

The reference for a cell at batch size b is eager FP32 on **exactly the batches the variant receives**:
the verification samples cut in chunks of b, the last partial chunk wrapped around to the first
samples (``cell.batched_outputs``, shared with every variant). A model whose forward depends on its
batch (``if x.mean() > 0``, batch statistics) is then judged against what it really computes.
Outputs are stored per batch size in one ``.npz``; the exact weights go beside it so every variant
worker rebuilds the same model. An ONNX file has no eager form: its reference is ONNX Runtime fp32 on
the CPU with every graph optimization off (``models_onnx``), and the file itself is its weights.

The outputs are cached under the models dir, keyed by the weights' digest, the verification inputs'
hash, the batch sizes, the torch version, the thread count and the CPU (model name and ISA flags): the
same computation gives the same numbers, so a rerun reads them instead of running the model again.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from infertune.errors import InfertuneError
from infertune.executors.base import (
    Emit,
    Event,
    Job,
    JobFailedEvent,
    Loss,
    NoticeEvent,
    ReferenceEvent,
    StageEvent,
)
from infertune.results import Status

if TYPE_CHECKING:
    from infertune.accuracy import Accuracy
    from infertune.config import ModelConfig, VerifyConfig
    from infertune.inputs import Batch, InputSource, InputSpec

REFERENCE_JOB_ID = "reference"
LOAD_STAGE = "load model"
FORWARD_STAGE = "forward"


#: the file of a cached reference entry holding its outputs (``save_reference``'s format).
CACHED_OUTPUTS = "outputs.npz"


@dataclass(frozen=True)
class Reference:
    """What the reference worker found: the model's identity and where its per-batch outputs are."""

    #: the ``.npz`` holding the inputs, the labels (accuracy mode) and the outputs per batch size.
    path: str
    #: the model's exact weights (a ``state_dict``), which variant workers load.
    weights_path: str
    weights_tag: str
    digest: str
    weights_mb: float
    source: InputSource
    #: the row's ``verify_inputs``.
    verify_description: str
    #: batch size -> why the model's own forward failed there (those cells cannot be verified).
    failed_batches: dict[int, str] = field(default_factory=dict)
    #: accuracy mode: batch size -> the FP32 reference's accuracy on the labelled set.
    accuracy: dict[int, Accuracy] | None = None
    #: the INT8 cache keys' calibration identity (None when no INT8 variant is planned).
    calibration_id: str | None = None
    #: how the reference ran the model (``LoadedModel.reference``): every row says it.
    description: str = ""


@dataclass(frozen=True)
class ReferenceJob(Job):
    """Load the model, check it takes the input shape, and compute its outputs at every batch size."""

    model: ModelConfig
    verify: VerifyConfig
    workdir: str
    batches: tuple[int, ...]
    threads: int
    #: whether INT8 variants are planned (their cache keys need the calibration set's identity).
    needs_calibration_id: bool = False
    memory_limit_mb: int | None = None
    #: the model's inputs (``models.input_specs``, resolved by the plan).
    inputs: tuple[InputSpec, ...] = ()
    job_id: str = REFERENCE_JOB_ID
    device: str = "cpu"  # the reference is FP32 eager on the CPU, with TF32 off, whatever the run's device
    #: the artifact cache (``output.models_dir``): a rerun with the same weights, inputs, torch, CPU and
    #: threads reads the outputs computed before instead of running the model again ("": no cache).
    cache_root: str = ""
    modules: tuple[str, ...] = ()
    unit: ClassVar[str] = "the stage"
    whole_job_timeout: ClassVar[bool] = False

    def libraries(self) -> tuple[str, ...]:
        from infertune.models import model_libraries

        return model_libraries(self.model.name)

    @property
    def label(self) -> str:
        return "FP32 reference"

    @cached_property
    def specs(self) -> tuple[InputSpec, ...]:
        """The model's inputs: the plan's, or (a job built elsewhere, e.g. by export) resolved here from the config."""
        if self.inputs:
            return self.inputs
        from infertune.models import input_specs

        return input_specs(self.model, self.batches, warn=lambda m: None)

    def run(self, emit: Emit) -> None:
        where = [LOAD_STAGE, None]  # the stage and batch in progress, for a failure's message

        def track(event: Event) -> None:
            if isinstance(event, StageEvent):
                where[:] = [event.stage, event.batch]
            emit(event)

        try:
            emit(ReferenceEvent(self.job_id, self._compute(track)))
        except _Stop as stop:
            emit(JobFailedEvent(self.job_id, stop.status, stop.stage, stop.reason, bad_input=stop.bad_input,
                                error_type=stop.error_type))
        except Exception as err:  # noqa: BLE001 - the model's own failure: the run says which and where
            from infertune.cell import is_out_of_memory, one_line

            oom = is_out_of_memory(err)
            emit(JobFailedEvent(self.job_id, Status.CRASHED if oom else Status.FAILED,
                                describe_stage(str(where[0]), where[1]),
                                f"out of memory: {one_line(err, 300)}" if oom else one_line(err)))
            print(traceback.format_exc(), flush=True)

    def lost(self, loss: Loss) -> list[Event]:
        if loss.ended:
            return []
        stage = describe_stage(loss.stage, loss.batch)
        return [JobFailedEvent(self.job_id, loss.status, stage, loss.reason)]

    # ------------------------------------------------------------------ the work, in the worker

    def _compute(self, emit: Emit) -> Reference:
        import torch

        from infertune.cell import configure_torch
        from infertune.inputs import batch_size
        from infertune.models import load_model

        configure_torch(self.threads)
        emit(StageEvent(self.job_id, None, LOAD_STAGE))
        try:
            loaded = load_model(self.model.name, self.model.pretrained, self.model.weights, self.model.seed,
                                warn=lambda m: emit(NoticeEvent(self.job_id, m)))
        except InfertuneError as err:
            raise _Stop.bad_input_at(describe_stage(LOAD_STAGE, None), err) from None
        workdir = Path(self.workdir)
        weights_path = workdir / "weights.pt"
        if loaded.kind == "torch":
            state = loaded.module.state_dict()
            torch.save(state, weights_path)
            weights_mb = sum(t.numel() * t.element_size() for t in state.values()) / 1e6
        else:  # an ONNX file is its own weights: variant workers read it
            weights_mb = Path(loaded.module.path).stat().st_size / 1e6
        source, inputs, labels = self._inputs(loaded, emit)
        digest = loaded.digest()
        cached = self._cache_entry(loaded, digest, inputs)
        outputs: dict[int, list[tuple[str, np.ndarray]]] = {}
        failed: dict[int, str] = {}
        if cached is not None and cached.hit:
            outputs = _read_outputs(cached.file(CACHED_OUTPUTS), self.batches)
        else:
            for i, batch in enumerate(self.batches):
                emit(StageEvent(self.job_id, batch, FORWARD_STAGE))
                try:
                    outputs[batch] = self._forward(loaded, inputs, batch, shape_check=i == 0)
                except _Stop:
                    raise
                except Exception as err:
                    from infertune.cell import is_out_of_memory, one_line

                    if is_out_of_memory(err):
                        raise
                    failed[batch] = one_line(err)
            if cached is not None and not failed:
                save_reference(cached.file(CACHED_OUTPUTS), inputs, outputs)
                cached.commit()
        path = workdir / "reference.npz"
        save_reference(path, inputs, outputs, labels)
        accuracy = None
        if labels is not None:
            from infertune.accuracy import accuracy as score

            accuracy = {b: score(out[0][1], labels) for b, out in outputs.items()}
        return Reference(
            path=str(path), weights_path=str(weights_path), weights_tag=loaded.weights, digest=digest,
            weights_mb=weights_mb, source=source, verify_description=source.describe_verification(batch_size(inputs)),
            failed_batches=failed, accuracy=accuracy, calibration_id=self._calibration_id(source),
            description=loaded.reference,
        )

    def _cache_entry(self, loaded: Any, digest: str, inputs: Batch) -> Any:
        """The cache entry of these outputs, keyed by all they depend on, or None without a cache."""
        if not self.cache_root:
            return None
        import hashlib

        import torch

        from infertune import env
        from infertune.cache import ArtifactCache
        from infertune.inputs import named

        feeds = hashlib.sha256()
        for name, arr in named(inputs).items():
            feeds.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            feeds.update(np.ascontiguousarray(arr).tobytes())
        return ArtifactCache(self.cache_root, f"{loaded.name}-{digest}").entry(
            "reference", how=loaded.reference, inputs=feeds.hexdigest(), batches=list(self.batches),
            torch=torch.__version__, threads=self.threads, cpu=env.cpu_model(), isa=sorted(env.cpu_flags()))

    def _inputs(self, loaded: Any, emit: Emit) -> tuple[InputSource, Batch, np.ndarray | None]:
        """The input source, the verification samples and their labels (accuracy mode) or None."""
        from infertune.accuracy import require_trained_weights
        from infertune.inputs import resolve_source

        v = self.verify
        pre = loaded.preprocessing or {}
        try:
            if v.dataset:
                require_trained_weights(loaded.weights, v.dataset)
            num_classes = self._num_classes(loaded) if v.dataset else None
            source, note = resolve_source(
                seed=v.seed, inputs=v.inputs, images=v.images, dataset=v.dataset, verify_count=v.samples,
                calibration_images=v.calibration_images, mean=v.mean if v.mean is not None else pre.get("mean"),
                std=v.std if v.std is not None else pre.get("std"), num_classes=num_classes, specs=self.specs)
            if note:
                emit(NoticeEvent(self.job_id, f"warning: {note}"))
            return source, source.verification(v.samples), source.labels()
        except InfertuneError as err:
            raise _Stop.bad_input_at("reading the verification inputs", err) from None

    def _forward(self, loaded: Any, inputs: Batch, batch: int, shape_check: bool) -> list[tuple[str, np.ndarray]]:
        """FP32 reference outputs (``LoadedModel.forward``) on ``inputs`` in batches of exactly ``batch``;
        the first call checks the model takes its inputs."""
        from infertune.cell import batched_outputs
        from infertune.verify import output_list

        def call(chunk: Batch) -> list[tuple[str, np.ndarray]]:
            if not shape_check:
                return output_list(loaded.forward(chunk))
            return self._shape_checked(lambda: output_list(loaded.forward(chunk)))

        return batched_outputs(call, inputs, batch)

    def _shape_checked(self, forward: Any) -> Any:
        from infertune import preflight

        try:
            with preflight.input_shape_check(self.model, self.specs):
                return forward()
        except InfertuneError as err:
            raise _Stop.bad_input_at(describe_stage(FORWARD_STAGE, None), err) from None

    def _num_classes(self, loaded: Any) -> int | None:
        """The width of the model's first output on one synthetic sample (to map a dataset's class folders)."""
        from infertune.inputs import synthetic_batch
        from infertune.verify import output_list

        sample = synthetic_batch(self.specs, 1, 0)
        first = self._shape_checked(lambda: output_list(loaded.forward(sample)))[0][1]
        return int(first.shape[1]) if first.ndim == 2 else None

    def _calibration_id(self, source: InputSource) -> str | None:
        if not self.needs_calibration_id:
            return None
        from infertune.errors import ConfigError

        try:
            return source.calibration_identity()
        except ConfigError as err:  # no usable calibration set: the INT8 cells fail with this reason
            return f"unusable: {err}"


class _Stop(Exception):
    """The reference cannot be computed; ``bad_input``: the user's input is at fault (model, weights,
    input shape, image folders), not the model's code."""

    def __init__(self, status: Status, stage: str, reason: str, bad_input: bool = False, error_type: str = "") -> None:
        super().__init__(reason)
        self.status, self.stage, self.reason = status, stage, reason
        self.bad_input, self.error_type = bad_input, error_type

    @classmethod
    def bad_input_at(cls, stage: str, error: InfertuneError) -> _Stop:
        return cls(Status.FAILED, stage, str(error), bad_input=True, error_type=type(error).__name__)


def describe_stage(stage: str, batch: int | None) -> str:
    """``loading the model``, ``the model's forward at batch 8``: where the reference stopped, in words."""
    if stage == FORWARD_STAGE:
        return "the model's forward" + (f" at batch {batch}" if batch is not None else "")
    if stage in (LOAD_STAGE, "start"):
        return "loading the model"
    return stage


def save_reference(path: Path, inputs: Batch, outputs: dict[int, list[tuple[str, np.ndarray]]],
                   labels: np.ndarray | None = None) -> None:
    """Save the verification inputs (one array, or {name: array}), each batch size's output tensors
    (``output_list`` pairs) and the labels."""
    arrays: dict[str, np.ndarray] = {}
    names: list[str] = []
    for batch, pairs in outputs.items():
        names = [name for name, _ in pairs]
        for i, (_, arr) in enumerate(pairs):
            arrays[f"b{batch}_output_{i}"] = arr
    extra = {"labels": labels} if labels is not None else {}
    named = inputs if isinstance(inputs, dict) else {"": inputs}  # "": a single unnamed array
    feeds = {f"input_{i}": arr for i, arr in enumerate(named.values())}
    np.savez(path, input_names=np.array(list(named)), output_names=np.array(names),
             batches=np.array(sorted(outputs), dtype=np.int64), **feeds, **arrays, **extra)


def _read_outputs(path: Path, batches: tuple[int, ...]) -> dict[int, list[tuple[str, np.ndarray]]]:
    """The per-batch output tensors ``save_reference`` wrote to ``path``, as ``output_list`` pairs."""
    with np.load(path) as saved:
        names = [str(n) for n in saved["output_names"]]
        return {b: [(name, saved[f"b{b}_output_{i}"]) for i, name in enumerate(names)] for b in batches}


def load_reference(path: str | Path, batch: int) -> tuple[Batch, Any, np.ndarray | None]:
    """(inputs: one array or {name: array}, the reference outputs at ``batch``: one array or a {name: array}
    dict, labels or None)."""
    with np.load(path) as ref:
        names = [str(n) for n in ref["output_names"]]
        outputs = [ref[f"b{batch}_output_{i}"] for i in range(len(names))]
        labels = ref["labels"] if "labels" in ref.files else None
        input_names = [str(n) for n in ref["input_names"]]
        feeds = {name: ref[f"input_{i}"] for i, name in enumerate(input_names)}
        inputs = feeds[""] if input_names == [""] else feeds
    reference = outputs[0] if len(outputs) == 1 else dict(zip(names, outputs))
    return inputs, reference, labels
