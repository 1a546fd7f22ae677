"""The two contracts every backend implements: Backend (convert/compile) and Runner (run it).

The harness only ever calls what is declared here, so a new backend is one file that subclasses
these and registers itself with ``@register_backend``. Heavy runtimes (torch, onnxruntime, openvino,
tensorrt) are imported inside ``prepare`` and the runner, never at module import time, so that
listing backends and reading reports works on a machine without them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from infertune.errors import ConfigError, UnavailableError

#: Numerical formats a variant can ask for. ``int8`` means post-training quantization; ``tf32`` is fp32
#: storage with TF32 tensor-core math on NVIDIA GPUs.
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run a (device, precision) here, and if not, why and how to fix it."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass
class PrepareContext:
    """Everything ``Backend.prepare`` may use to build one runner for one cell.

    Attributes:
        model: the FP32 ``torch.nn.Module`` in eval mode, on the CPU (the backend moves or copies it); for
            an ONNX file, an ``infertune.models_onnx.OnnxModel`` (only backends whose ``sources`` hold
            ``onnx`` get one).
        example_input: the timed input at the cell's batch size: one array (a float32 NCHW batch for an
            image model), or {input name: array} in the model's input order when it has several inputs.
        precision: one of ``PRECISIONS``.
        options: the variant's options (``{"mode": "max-autotune"}``, ``{"hint": "throughput"}``...).
        device: ``"cpu"`` or ``"cuda"`` (already resolved: never ``"auto"``).
        threads: intra-op threads the runtime must use (the harness pins torch's too).
        cache: where converted artifacts live; see ``infertune.cache.ArtifactCache``.
        calibration: returns ``n`` calibration samples, shaped like ``example_input`` (never the
            verification samples); used by INT8 backends.
        settings: backend-tunable settings from the config (e.g. ``onnx_opset``, ``int8`` block).
        log: one-line progress/info messages ("reusing cached artifact ...").
    """

    model: Any
    example_input: Any
    precision: str
    options: dict[str, str]
    device: str
    threads: int
    cache: Any
    calibration: Callable[[int], Any]
    settings: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    @property
    def batch_size(self) -> int:
        from infertune.inputs import batch_size

        return batch_size(self.example_input)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The (first) input's shape, batch included."""
        first = next(iter(self.example_input.values())) if isinstance(self.example_input, dict) else self.example_input
        return tuple(int(d) for d in first.shape)

    @property
    def sample_key(self) -> Any:
        """What artifact cache keys hold for the inputs: one sample's shape (a single array, as always),
        or every input's (name, dtype, shape) for several inputs."""
        return self.input_signature if isinstance(self.example_input, dict) else self.input_shape[1:]

    @property
    def batch_shapes(self) -> list[tuple[int, ...]]:
        """Every input's shape at this batch size, in input order."""
        from infertune.inputs import named

        return [tuple(int(d) for d in arr.shape) for arr in named(self.example_input).values()]

    @property
    def input_signature(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """(name, dtype, one sample's shape) of every input, in order: part of artifact cache keys."""
        from infertune.inputs import named

        return tuple((name, str(arr.dtype), tuple(int(d) for d in arr.shape[1:]))
                     for name, arr in named(self.example_input).items())


class Runner(ABC):
    """A ready-to-run model. The timer calls ``__call__`` then ``synchronize`` in its loop.

    ``to_native`` converts a host float32 array into whatever ``__call__`` takes (a torch tensor on
    the device, an ORT feed dict...). It is called outside the timed region, so what the loop times
    is ``latency_scope``: ``"end_to_end"`` when host input goes in and host output comes out,
    ``"device"`` when the input already sits on the accelerator.
    """

    latency_scope: ClassVar[str] = "end_to_end"
    #: whether ``to_native`` also takes a torch tensor already on the runner's device (a serving instance
    #: then gathers batches from a device-resident sample library instead of copying them from the host).
    accepts_device_tensors: ClassVar[bool] = False
    #: set by prepare: the converted artifact on disk (None for eager), and whether it came from cache.
    artifact_path: Path | None = None
    cache_hit: bool = False
    #: what the row should say about how this runner was built (e.g. an export with a static batch).
    notes: tuple[str, ...] = ()

    def to_native(self, batch: np.ndarray) -> Any:
        return batch

    @abstractmethod
    def __call__(self, inputs: Any) -> Any:
        """Run one inference on native inputs; may return before the device is done."""

    def to_numpy(self, outputs: Any) -> np.ndarray:
        """Bring outputs back as a float32 host array (used by verify, never timed); a model with
        several outputs may return a list or a {name: array} dict (each output is then verified)."""
        return np.asarray(outputs, dtype=np.float32)

    def synchronize(self) -> None:
        """Block until the device has finished all queued work. CPU runtimes return at once."""

    def cuda_event_pair(self) -> tuple[Any, Any] | None:
        """Return (start, end) CUDA events for device-side timing, or None on a CPU runner."""
        return None

    def close(self) -> None:
        """Release sessions, engines and device memory."""


class Backend(ABC):
    """A way of converting and running a model: one subclass per file, registered by name."""

    name: ClassVar[str]
    #: import names (``importlib.util.find_spec``), not pip names.
    requires: ClassVar[tuple[str, ...]] = ()
    #: the pip command that installs what is missing.
    install_hint: ClassVar[str] = ""
    devices: ClassVar[frozenset[str]] = frozenset({"cpu"})
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32"})
    #: (device, precision) pairs that exist in principle but have no sensible path, with the reason
    #: (e.g. fp16 on a CPU: no fast half-precision convolutions there).
    unsupported: ClassVar[dict[tuple[str, str], str]] = {}
    #: one-line description for ``infertune backends`` and the docs.
    description: ClassVar[str] = ""
    #: the human label used in the seed's table ("PyTorch", "ONNX Runtime"...).
    label: ClassVar[str] = ""
    #: whether outputs are comparable with the reference (False for the null backend).
    produces_outputs: ClassVar[bool] = True
    #: whether ``prepare`` writes a converted artifact (the free-space check counts one model's weights each).
    writes_artifacts: ClassVar[bool] = True
    #: whether ``prepare`` compiles for tens of seconds (Inductor, AOTInductor, a TensorRT engine): an
    #: executor that runs jobs at once starts these first, so the longest job does not end the run alone.
    compiles: ClassVar[bool] = False
    #: the seed's ``optimization.enable_*`` switch that turns this backend's default rungs on or off.
    seed_switch: ClassVar[str] = ""
    #: rungs an opt-in backend adds on every device when its ``seed_switch`` is on (off by default; on a
    #: machine without it the rows say why); empty: ``default_variants`` decides.
    switch_variants: ClassVar[tuple[str, ...]] = ()
    #: the model kinds this backend can start from (``LoadedModel.kind``): ``torch`` (an nn.Module),
    #: ``onnx`` (an ONNX file).
    sources: ClassVar[frozenset[str]] = frozenset({"torch"})

    def availability(self, device: str, precision: str) -> Availability:
        """Can this backend run here? Never raises, never imports the runtime itself."""
        if device not in self.devices:
            return Availability.no(
                f"{self.name} does not run on {device} (supported: {', '.join(sorted(self.devices))})"
            )
        if precision not in self.precisions:
            return Availability.no(
                f"{self.name} has no {precision} path (supported: {', '.join(sorted(self.precisions))})"
            )
        if (device, precision) in self.unsupported:
            return Availability.no(f"{self.name} {precision}: {self.unsupported[(device, precision)]}")
        missing = [mod for mod in self.requires if importlib.util.find_spec(mod) is None]
        if missing:
            hint = f"; install it with: {self.install_hint}" if self.install_hint else ""
            return Availability.no(f"{', '.join(missing)} is not installed{hint}")
        if device == "cuda" and not _cuda_available():
            return Availability.no("no CUDA GPU is visible (torch.cuda.is_available() is False)")
        return Availability.yes()

    def accepts(self, kind: str) -> Availability:
        """Can this backend start from a model of ``kind`` (``torch`` or ``onnx``)? Never raises."""
        if kind in self.sources:
            return Availability.yes()
        what = {"onnx": "an ONNX file", "torch": "a torch module"}
        takers = ", ".join(_backends_for(kind)) or "none"
        return Availability.no(f"{self.name} starts from {' or '.join(what.get(k, k) for k in sorted(self.sources))}; "
                               f"this model is {what.get(kind, kind)} (backends that take it: {takers})")

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        """Raise ConfigError naming an unknown or conflicting option and the allowed ones.

        Called when the ladder is built, so a typo stops the run before any conversion; ``prepare``
        parses the same options again. The default accepts none.
        """
        if options:
            raise ConfigError(f"{self.name}: unknown option(s) {', '.join(sorted(options))}; it takes none")

    def default_variants(self, device: str) -> list[str]:
        """Variants this backend contributes to the default ladder on ``device``."""
        return []

    def version(self) -> str:
        """Version of the runtime behind this backend, part of the artifact cache key."""
        for mod in self.requires:
            try:
                return importlib.metadata.version(_DIST_NAMES.get(mod, mod))
            except importlib.metadata.PackageNotFoundError:
                continue
        return "n/a"

    def check(self, device: str, precision: str) -> None:
        """Raise UnavailableError with the reason when this backend cannot run the cell."""
        avail = self.availability(device, precision)
        if not avail.ok:
            raise UnavailableError(avail.reason)

    @abstractmethod
    def prepare(self, ctx: PrepareContext) -> Runner:
        """Convert or compile the model for one cell and return a runner (cached where possible)."""


#: import name -> distribution name, where they differ.
_DIST_NAMES = {"tensorrt": "tensorrt", "torch_tensorrt": "torch-tensorrt", "cv2": "opencv-python"}


def _backends_for(kind: str) -> list[str]:
    from infertune.backends.registry import get_backend, list_backends

    return [name for name in list_backends()
            if kind in get_backend(name).sources and get_backend(name).produces_outputs]


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())
