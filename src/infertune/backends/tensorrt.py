"""TensorRT 10: parse the shared ONNX export, build a serialized engine for one batch size, cache it.

The engine is built with an optimization profile fixed to the cell's shape (min = opt = max), which
is what TensorRT tunes best for; a different batch size is a different cached ``.engine``. The runner
uses torch CUDA tensors as the engine's input and output buffers and enqueues on torch's current
stream, so timing goes through the same CUDA events and ``torch.cuda.synchronize`` as the other GPU
backends, and the latency is device latency (input already on the GPU). Input and output names are
read from the engine (``engine_io``), and every output is returned and verified.

INT8 uses explicit quantization: the ONNX export is quantized into a QDQ graph with symmetric signed
8-bit activations and per-channel weights (what TensorRT expects of Q/DQ nodes) by
``infertune.backends.ort_quantize`` with the run's calibration samples, then built with the INT8 and
FP16 flags (layers TensorRT cannot run in INT8 fall back to FP16). TensorRT 10 deprecates the
implicit-calibration API (``IInt8Calibrator``), so it is not used.

None of this can run on the machine it was written on (no GPU); it follows the TensorRT 10 Python API.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from infertune.backends.base import Availability, Backend, PrepareContext, Runner
from infertune.backends.onnx_export import export_onnx
from infertune.backends.registry import register_backend
from infertune.backends.runner_io import named_outputs
from infertune.errors import ConfigError

ENGINE = "model.engine"
#: builder workspace (MiB) unless settings say ``tensorrt: {workspace_mb: ...}``.
DEFAULT_WORKSPACE_MB = 4096


@register_backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    label = "TensorRT"
    sources = frozenset({"torch", "onnx"})
    description = "NVIDIA TensorRT engine built from the ONNX export (fp32/fp16/int8 via QDQ); CUDA only."
    requires = ("tensorrt",)
    compiles = True
    seed_switch = "enable_tensorrt"
    switch_variants = ("tensorrt:fp16",)
    install_hint = "pip install tensorrt (needs an NVIDIA GPU with CUDA)"
    devices = frozenset({"cuda"})
    precisions = frozenset({"fp32", "fp16", "int8"})

    def availability(self, device: str, precision: str) -> Availability:
        if device != "cuda":
            return Availability.no(f"TensorRT runs only on NVIDIA GPUs (device is {device})")
        base = super().availability(device, precision)
        if not base.ok and base.reason.startswith("no CUDA GPU"):
            return Availability.no(f"TensorRT needs an NVIDIA GPU: {base.reason}")
        return base

    def default_variants(self, device: str) -> list[str]:
        return ["tensorrt:fp16"] if device == "cuda" else []

    def prepare(self, ctx: PrepareContext) -> Runner:
        self.check(ctx.device, ctx.precision)
        if ctx.options:
            raise ConfigError(f"tensorrt: unknown option(s) {', '.join(sorted(ctx.options))}; it takes none")
        import tensorrt as trt

        source, source_key, note = _source_onnx(ctx)
        workspace_mb = int(ctx.settings.get("tensorrt", {}).get("workspace_mb", DEFAULT_WORKSPACE_MB))
        entry = ctx.cache.entry(
            self.name,
            tensorrt=trt.__version__,
            onnx=source_key,
            precision=ctx.precision,
            input_shape=ctx.input_shape,
            **({"inputs": ctx.input_signature} if isinstance(ctx.example_input, dict) else {}),
            gpu=_gpu_name(),
            workspace_mb=workspace_mb,
        )
        path = entry.file(ENGINE)
        if entry.hit:
            ctx.log(f"reusing cached TensorRT engine {path}")
        else:
            start = time.perf_counter()
            path.write_bytes(_build_engine(source, ctx.precision, ctx.batch_shapes, workspace_mb))
            entry.commit({"build_s": round(time.perf_counter() - start, 3)})
        runner = TensorRTRunner(path.read_bytes(), ctx.batch_shapes)
        runner.notes = (note,) if note else ()
        runner.artifact_path = path
        runner.cache_hit = entry.hit
        return runner


def _source_onnx(ctx: PrepareContext) -> tuple[Path, str, str]:
    """The ONNX file the engine is built from, its cache key (the FP32 export, or its QDQ INT8 form),
    and the export's note for the row."""
    export = export_onnx(ctx)
    if ctx.precision != "int8":
        return export.path, export.key, export.note
    from infertune.backends.ort_quantize import quantize_cached, tensorrt_recipe

    quantized = quantize_cached(ctx, export.path, export.key, tensorrt_recipe(ctx.settings))
    return quantized, f"{export.key}:int8:{quantized.parent.name}", export.note


def _build_engine(onnx_path: Path, precision: str, shapes: list[tuple[int, ...]], workspace_mb: int) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine for exactly ``shapes`` (one per input, in the
    graph's order); raise with the parser's errors."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the Q/DQ nodes, no calibrator
    if network.num_inputs != len(shapes):
        raise RuntimeError(f"{onnx_path.name} has {network.num_inputs} inputs; the batch has {len(shapes)}")
    profile = builder.create_optimization_profile()
    for i, shape in enumerate(shapes):
        profile.set_shape(network.get_input(i).name, shape, shape, shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine for input shape {shape}")
    return bytes(serialized)


def _gpu_name() -> str:
    """Engines are specific to the GPU model (and TensorRT version), so the GPU is part of the cache key."""
    import torch

    return torch.cuda.get_device_name()


def engine_io(engine: Any, input_mode: Any) -> tuple[list[str], list[str]]:
    """(input names, output names) of an engine, in the engine's order (``input_mode`` is
    ``trt.TensorIOMode.INPUT``)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == input_mode]
    return inputs, [n for n in names if n not in inputs]


class TensorRTRunner(Runner):
    """Executes a deserialized engine with torch CUDA tensors as I/O buffers on torch's current stream.

    One buffer per output, allocated once and overwritten by every call; ``to_numpy`` copies them all out.
    """

    latency_scope = "device"

    def __init__(self, engine_bytes: bytes, input_shapes: list[tuple[int, ...]]) -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.input_names, self.output_names = engine_io(self.engine, trt.TensorIOMode.INPUT)
        if len(self.input_names) != len(input_shapes):
            raise RuntimeError(f"the engine's inputs are {self.input_names}; the batch has {len(input_shapes)}")
        for name, shape in zip(self.input_names, input_shapes):
            self.context.set_input_shape(name, shape)
        self.input_dtypes = [_torch_dtype(self.engine.get_tensor_dtype(name)) for name in self.input_names]
        self.outputs = []
        for name in self.output_names:
            buffer = torch.empty(tuple(self.context.get_tensor_shape(name)),
                                 dtype=_torch_dtype(self.engine.get_tensor_dtype(name)), device="cuda")
            self.context.set_tensor_address(name, buffer.data_ptr())
            self.outputs.append(buffer)

    def to_native(self, batch: Any) -> Any:
        """One CUDA tensor per engine input, in the engine's order (several inputs go by position)."""
        arrays = list(batch.values()) if isinstance(batch, dict) else [batch]
        return tuple(self._torch.from_numpy(np.ascontiguousarray(a)).to("cuda", dtype).contiguous()
                     for a, dtype in zip(arrays, self.input_dtypes, strict=True))

    def __call__(self, inputs: Any) -> Any:
        for name, tensor in zip(self.input_names, inputs):
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(self._torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return self.outputs

    def to_numpy(self, outputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        return named_outputs(self.output_names, [o.detach().float().cpu().numpy() for o in outputs])

    def synchronize(self) -> None:
        self._torch.cuda.synchronize()

    def cuda_event_pair(self) -> tuple[Any, Any]:
        ev = self._torch.cuda.Event
        return ev(enable_timing=True), ev(enable_timing=True)

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.outputs = []
        self._torch.cuda.empty_cache()


def _torch_dtype(trt_dtype: Any) -> Any:
    """Map a ``trt.DataType`` to the torch dtype of the buffer that backs it."""
    import tensorrt as trt
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32,
             trt.int64: torch.int64, trt.bool: torch.bool}
    if trt_dtype not in table:
        raise RuntimeError(f"unsupported TensorRT I/O dtype {trt_dtype}")
    return table[trt_dtype]
