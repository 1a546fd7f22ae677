"""Helpers shared by the torch-based backends: precision mapping, a runner over a torch callable, CUDA graphs.

``tf32`` is a precision of its own: fp32 storage with TF32 tensor-core math (cuDNN convolutions and
matmuls on NVIDIA Ampere and newer). The harness switches TF32 off for every worker
(``cell.configure_torch``) so that ``fp32`` rows are true fp32; a ``tf32`` variant switches it on in
its own worker only.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from infertune.backends.base import Runner
from infertune.errors import ConfigError

TORCH_DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: why a tf32 variant cannot run on the CPU (used in the backends' ``unsupported`` tables).
#: bare-word options of the eager-style torch backends (pytorch, torchscript).
EAGER_OPTIONS = ("channels_last", "cuda_graph")
TF32_CPU_REASON = "TF32 is a tensor-core format of NVIDIA GPUs (Ampere and newer); on the CPU use fp32 or bf16"


def torch_dtype(precision: str) -> Any:
    import torch

    return getattr(torch, TORCH_DTYPES[precision])


def set_tf32(enabled: bool) -> None:
    """Let (or forbid) cuDNN convolutions and CUDA matmuls use TF32 tensor cores in this process."""
    import torch

    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def to_tensors(batch: Any, device: Any, dtype: Any, channels_last: bool = False) -> Any:
    """A host batch as the callable's arguments: one tensor for one array, a tuple in input order for
    ``{name: array}``. Float inputs take the variant's ``dtype``; integer and bool inputs (token ids,
    masks) keep theirs; ``channels_last`` applies to 4-D float inputs."""
    import torch

    def one(array: Any) -> Any:
        t = array.to(device) if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array)).to(device)
        if t.is_floating_point():
            t = t.to(dtype)
            if channels_last and t.ndim == 4:
                t = t.contiguous(memory_format=torch.channels_last)
        return t

    return tuple(one(a) for a in batch.values()) if isinstance(batch, dict) else one(batch)


def call(fn: Any, inputs: Any) -> Any:
    """``fn(*inputs)`` for a tuple of tensors (several inputs), ``fn(inputs)`` for one."""
    return fn(*inputs) if isinstance(inputs, tuple) else fn(inputs)


class TorchRunner(Runner):
    """Runs a torch callable under ``inference_mode`` on CPU or CUDA; a model with several inputs gets
    them as positional arguments, in input order.

    On CUDA the input is placed on the device by ``to_native`` (outside the timed region), so the
    latency is device latency, synchronised with ``torch.cuda.synchronize`` and timed with CUDA events.
    """

    accepts_device_tensors = True

    def __init__(self, fn: Any, device: str, dtype: Any, channels_last: bool = False) -> None:
        import torch

        self._torch = torch
        self.fn = fn
        self.device = torch.device(device)
        self.dtype = dtype
        self.channels_last = channels_last
        self.is_cuda = self.device.type == "cuda"
        #: the captured graph, when ``capture_cuda_graph`` was called.
        self.graph: CudaGraphCall | None = None

    @property
    def latency_scope(self) -> str:  # type: ignore[override]
        return "device" if self.is_cuda else "end_to_end"

    def to_native(self, batch: Any) -> Any:
        t = to_tensors(batch, self.device, self.dtype, self.channels_last)
        if self.graph is not None:  # the graph reads fixed buffers: fill them (outside the timed call)
            return self.graph.load(t)
        return t

    def __call__(self, inputs: Any) -> Any:
        if self.graph is not None:
            return self.graph(inputs)
        with self._torch.inference_mode():
            return call(self.fn, inputs)

    def capture_cuda_graph(self, example: Any, dynamic_batch: bool = False) -> None:
        """From now on every call replays one CUDA graph of ``fn`` captured at ``example``'s shape
        (``dynamic_batch``: a torch.compile'd ``fn`` compiles for any batch size, see ``CudaGraphCall``)."""
        if not self.is_cuda:
            raise ConfigError("option 'cuda_graph' needs a CUDA device; on the CPU leave it out")
        with self._torch.inference_mode():
            self.graph = CudaGraphCall(self.fn, example, dynamic_batch=dynamic_batch)

    def to_numpy(self, outputs: Any) -> Any:
        """One float32 array, or a {name: array} dict when the model returns several tensors."""
        from infertune.verify import output_list

        named = output_list(outputs)
        return named[0][1] if len(named) == 1 else dict(named)

    def synchronize(self) -> None:
        if self.is_cuda:
            self._torch.cuda.synchronize(self.device)

    def cuda_event_pair(self) -> tuple[Any, Any] | None:
        if not self.is_cuda:
            return None
        ev = self._torch.cuda.Event
        return ev(enable_timing=True), ev(enable_timing=True)

    def close(self) -> None:
        self.fn = None
        self.graph = None
        if self.is_cuda:
            self._torch.cuda.empty_cache()


def parse_eager_options(backend: str, options: dict[str, str], device: str) -> tuple[bool, bool]:
    """(channels_last, cuda_graph) from a pytorch/torchscript variant's bare-word options."""
    unknown = sorted(set(options) - set(EAGER_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{backend}: unknown option(s) {', '.join(repr(u) for u in unknown)}; allowed: {', '.join(EAGER_OPTIONS)}"
        )
    return "channels_last" in options, wants_cuda_graph(backend, options, device)


def wants_cuda_graph(backend: str, options: dict[str, str], device: str) -> bool:
    """Whether a variant asked for ``cuda_graph``; a ConfigError naming the fix when not on CUDA."""
    if "cuda_graph" in options and device != "cuda":
        raise ConfigError(f"{backend}: option 'cuda_graph' needs a CUDA device (this run is on {device}); leave it out")
    return "cuda_graph" in options


def model_copy(model: Any, device: str, precision: str, channels_last: bool = False) -> Any:
    """A deep copy of the FP32 model moved to ``device`` and cast to ``precision`` (the original stays FP32)."""
    import copy

    set_tf32(precision == "tf32")
    m = copy.deepcopy(model).eval().to(device=device, dtype=torch_dtype(precision))
    if channels_last:
        import torch

        m = m.to(memory_format=torch.channels_last)
    return m


#: this worker's device copies for the eager backend, per source model and (device, precision, channels_last).
_EAGER_COPIES: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, bool], Any]] = weakref.WeakKeyDictionary()


def shared_model_copy(model: Any, device: str, precision: str, channels_last: bool = False) -> Any:
    """``model_copy``, made once per worker: a variant's later batch sizes run the copy its first one made.

    For backends that run the copy as it is (never change it): the copy and its move to the device cost
    seconds per batch size while other jobs prepare beside it, and every such second keeps measurements waiting.
    """
    copies = _EAGER_COPIES.setdefault(model, {})
    key = (device, precision, channels_last)
    if key not in copies:
        copies[key] = model_copy(model, device, precision, channels_last)
    set_tf32(precision == "tf32")
    return copies[key]


class CudaGraphCall:
    """``fn`` captured once in a CUDA graph over a static input buffer, replayed on every call.

    A CUDA graph launches a whole forward pass with one call, so batch-1 latency stops being the
    sum of ~160 kernel launches from Python: on a fast GPU that cuts it several-fold, eager or compiled
    (docs/results/h200.md, "GPU figures moved from backend docstrings").
    The graph reads fixed input buffers (one per input) and writes one fixed output: ``load`` copies new
    inputs into them, and a call with other tensors of the same shapes copies too; another shape is
    refused (the graph was captured for one batch size).
    """

    def __init__(self, fn: Any, example: Any, warmup: int = 3, dynamic_batch: bool = False) -> None:
        """``dynamic_batch``: mark the input buffers' batch dimension dynamic for torch.compile, so that ``fn``
        compiles (in the first warm-up call) a graph that other batch sizes reuse."""
        import torch

        self._torch = torch
        self.static_input = tuple(t.clone() for t in example) if isinstance(example, tuple) else example.clone()
        if dynamic_batch:
            for buffer in self.static_input if isinstance(self.static_input, tuple) else (self.static_input,):
                torch._dynamo.mark_dynamic(buffer, 0)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # lazy init, cuDNN autotuning and allocations happen outside the graph
            for _ in range(warmup):
                call(fn, self.static_input)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = call(fn, self.static_input)

    def load(self, tensors: Any) -> Any:
        """Copy ``tensors`` (one, or a tuple) into the graph's input buffers and return the buffers."""
        buffers = self.static_input if isinstance(self.static_input, tuple) else (self.static_input,)
        given = tensors if isinstance(tensors, tuple) else (tensors,)
        for buffer, tensor in zip(buffers, given, strict=True):
            if tuple(tensor.shape) != tuple(buffer.shape):
                raise ConfigError(
                    f"the CUDA graph was captured for input shape {tuple(buffer.shape)}, got "
                    f"{tuple(tensor.shape)}: a graph serves one batch size (each cell captures its own)"
                )
            with self._torch.inference_mode():  # the buffers were made under inference mode (capture)
                buffer.copy_(tensor)
        return self.static_input

    def __call__(self, inputs: Any) -> Any:
        if inputs is not self.static_input:
            self.load(inputs)
        self.graph.replay()
        return self.static_output
