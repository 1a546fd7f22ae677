"""OpenVINO on the CPU: fp32, bf16 (where the CPU has it) and int8 through NNCF post-training quantization.

Pipeline of one cell: convert the torch model (``openvino.convert_model`` traced on two samples;
option ``from_onnx`` starts from the shared ONNX export instead) to an IR with a dynamic batch axis and
static C×H×W, cached once per sample shape; int8 quantizes that IR with ``nncf.quantize`` on calibration
data (cached too, so one quantization serves every batch size); the IR is then reshaped to the cell's
static shape and compiled on the CPU with ``INFERENCE_NUM_THREADS = ctx.threads`` and an explicit
``INFERENCE_PRECISION_HINT``. A model that fixes its batch size (an output whose batch stays static
once the input's is made dynamic) is converted once per batch size instead, and the row says so.
The IR's outputs carry the names the FP32 reference uses, and the runner returns every output.

Why the precision hint is always set: on a CPU with AVX512_BF16 or AMX, OpenVINO runs an "fp32"
model in bf16 unless told otherwise (measured here: a plain compile reported ``bfloat16``), which
would silently turn an fp32 row into a bf16 one. ``fp32`` and ``int8`` therefore ask for ``f32``
(for int8, the ops left in float); ``bf16`` asks for ``bf16`` and is refused where the CPU does not
report the BF16 capability, or where the compiled model does not actually run in bf16.

The runner keeps one synchronous ``InferRequest`` and calls ``infer`` with ``share_inputs=True``
(no copy of the input batch into the request) and ``share_outputs=True``; the returned arrays are views
into the request's output tensors that the next call overwrites, so ``to_numpy`` copies them.

Why the defaults stay simple (LATENCY hint, one synchronous request, no AsyncInferQueue, f32 for the
non-quantized ops, NNCF's default preset with fast bias correction): measured on a few-core CPU with VNNI,
every int8 knob (presets, bias correction, target device, pinning, precision of the ops left in float,
splitting a batch over streams) was a tie within noise, and int8 already ran near that CPU's int8 peak;
f32 for the float ops keeps numerics that do not depend on the CPU. ``hint=throughput`` with one
request leaves streams idle on few cores (much slower there) and is kept only for many-core machines.
Measurements, fidelity and one-off costs: docs/results/cpu.md ("OpenVINO's defaults").
"""

from __future__ import annotations

import functools
import importlib.util
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infertune.backends.base import Availability, Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend
from infertune.backends.runner_io import feeds, named_outputs, reference_output_names
from infertune.errors import ConfigError, UnavailableError

INSTALL_HINT = "pip install 'infertune[openvino]'"

#: option -> allowed values ("" = a bare word). Checked before anything heavy is imported.
ALLOWED_OPTIONS: dict[str, tuple[str, ...]] = {
    "from_onnx": ("",),
    "hint": ("latency", "throughput"),
    "latency": ("",),
    "throughput": ("",),
    # int8 only: NNCF presets and bias correction.
    "preset": ("performance", "mixed"),
    "bias_correction": ("fast", "full"),
}
INT8_ONLY = ("preset", "bias_correction")

#: OpenVINO's name for each precision's runtime inference precision.
RUNTIME_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}

DEFAULT_CALIBRATION_SAMPLES = 32
#: bumped when the IR's recipe changes (two-sample trace, reference output names), so older IRs are rebuilt.
IR_FORMAT = 2


@dataclass(frozen=True)
class OvOptions:
    """A variant's options, validated: where the IR comes from, the performance hint, NNCF knobs."""

    from_onnx: bool = False
    hint: str = "latency"
    preset: str = "performance"
    bias_correction: str = "fast"


def parse_options(options: dict[str, str], precision: str) -> OvOptions:
    """Validate ``options`` (raises ConfigError naming the bad one and the allowed ones)."""
    for key, value in options.items():
        allowed = ALLOWED_OPTIONS.get(key)
        if allowed is None:
            raise ConfigError(
                f"openvino: unknown option {key!r}; allowed options: {_describe_allowed()}"
            )
        if value not in allowed:
            shown = ", ".join(repr(v) for v in allowed if v) or "no value (a bare word)"
            raise ConfigError(f"openvino: option {key!r} got {value!r}; allowed: {shown}")
        if key in INT8_ONLY and precision != "int8":
            raise ConfigError(f"openvino: option {key!r} only applies to int8, not {precision}")
    hint = options.get("hint", "latency")
    if "throughput" in options:
        hint = "throughput"
    if "latency" in options:
        if "throughput" in options or options.get("hint") == "throughput":
            raise ConfigError("openvino: options 'latency' and 'throughput' exclude each other")
        hint = "latency"
    return OvOptions(
        from_onnx="from_onnx" in options,
        hint=hint,
        preset=options.get("preset", "performance"),
        bias_correction=options.get("bias_correction", "fast"),
    )


def _describe_allowed() -> str:
    parts = []
    for key, values in ALLOWED_OPTIONS.items():
        shown = "|".join(v for v in values if v)
        parts.append(f"{key}={shown}" if shown else key)
    return ", ".join(parts)


class OpenVinoRunner(Runner):
    """One compiled model and one synchronous infer request, reused for every call; every output returned."""

    def __init__(self, compiled: Any, artifact_path: Path, cache_hit: bool) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.artifact_path = artifact_path
        self.cache_hit = cache_hit
        self.input_names = port_names(compiled.inputs, "input")
        self.input_dtypes = [port.get_element_type().to_dtype() for port in compiled.inputs]
        self.output_names = port_names(compiled.outputs, "output")

    def to_native(self, batch: Any) -> dict[int, np.ndarray]:
        # several inputs go by position (the model's argument order): converted names need not match
        arrays = list(batch.values()) if isinstance(batch, dict) else batch
        named = feeds(self.input_names, arrays, self.input_dtypes)
        return {i: named[name] for i, name in enumerate(self.input_names)}

    def __call__(self, inputs: dict[int, np.ndarray]) -> Any:
        # share_inputs: the request reads the arrays in place (no copy); the returned arrays are views
        # of the output tensors that the next call overwrites (to_numpy copies them).
        return self.request.infer(inputs, share_inputs=True, share_outputs=True)

    def to_numpy(self, outputs: Any) -> np.ndarray | dict[str, np.ndarray]:
        return named_outputs(self.output_names, [outputs[i] for i in range(len(self.output_names))])

    def close(self) -> None:
        self.request = None
        self.compiled = None


def port_names(ports: Any, stem: str) -> list[str]:
    """A name per model input/output: its tensor name, else ``stem`` (one port) or ``stem0``, ``stem1``..."""
    names = []
    for i, port in enumerate(ports):
        tensor_names = sorted(port.get_names())
        names.append(tensor_names[0] if tensor_names else (stem if len(ports) == 1 else f"{stem}{i}"))
    return names


@register_backend
class OpenVinoBackend(Backend):
    name = "openvino"
    label = "OpenVINO"
    sources = frozenset({"torch", "onnx"})
    description = "OpenVINO CPU plugin: fp32, bf16 (CPUs with BF16) and int8 via NNCF post-training quantization."
    requires = ("openvino",)
    install_hint = INSTALL_HINT
    devices = frozenset({"cpu"})
    precisions = frozenset({"fp32", "bf16", "int8"})

    def availability(self, device: str, precision: str) -> Availability:
        base = super().availability(device, precision)
        if not base.ok:
            return base
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            return Availability.no(f"nncf is not installed (needed for int8); install it with: {INSTALL_HINT}")
        if precision == "bf16":
            caps = cpu_capabilities()
            if caps is None:
                return Availability.no("could not query OpenVINO's CPU capabilities")
            if "BF16" not in caps:
                return Availability.no(
                    f"this CPU has no native bf16 in OpenVINO (capabilities: {', '.join(caps)}); "
                    "bf16 needs AVX512_BF16 or AMX"
                )
        return Availability.yes()

    def default_variants(self, device: str) -> list[str]:
        if device != "cpu":
            return []
        caps = cpu_capabilities() if importlib.util.find_spec("openvino") else None
        bf16 = ["openvino:bf16"] if caps and "BF16" in caps else []
        return ["openvino:fp32", *bf16, "openvino:int8"]

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        parse_options(options, precision)

    def prepare(self, ctx: PrepareContext) -> Runner:
        opts = parse_options(ctx.options, ctx.precision)
        self.check(ctx.device, ctx.precision)
        import openvino as ov

        core = ov.Core()
        ir_path, hit, note = _float_ir(ctx, opts)
        if ctx.precision == "int8":
            ir_path, hit = _int8_ir(ctx, opts, ir_path)
        model = core.read_model(ir_path)
        model.reshape({i: list(shape) for i, shape in enumerate(ctx.batch_shapes)})
        config = compile_config(ctx.precision, opts.hint, ctx.threads)
        start = time.perf_counter()
        compiled = core.compile_model(model, "CPU", config)
        _check_runtime_precision(compiled, ctx.precision)
        ctx.log(f"openvino: compiled {ir_path.name} ({ctx.precision}, {opts.hint}) in {time.perf_counter() - start:.2f} s")
        runner = OpenVinoRunner(compiled, ir_path.parent, hit)
        runner.notes = (note,) if note else ()
        return runner


def compile_config(precision: str, hint: str, threads: int) -> dict[str, Any]:
    """CPU plugin properties for one cell (plain strings: stable across OpenVINO releases)."""
    return {
        "PERFORMANCE_HINT": hint.upper(),
        "INFERENCE_NUM_THREADS": int(threads),
        "INFERENCE_PRECISION_HINT": RUNTIME_PRECISION[precision],
    }


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...] | None:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU (imports openvino: ~0.2 s, once); None on failure."""
    try:
        import openvino as ov

        return tuple(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except (ImportError, RuntimeError):  # availability must never raise
        return None


def _check_runtime_precision(compiled: Any, precision: str) -> None:
    """Refuse a bf16 cell that OpenVINO would quietly run in f32 (the row would be mislabelled)."""
    actual = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    wanted = "bfloat16" if precision == "bf16" else "float32"
    if wanted not in actual:
        if precision == "bf16":
            raise UnavailableError(f"OpenVINO compiled the bf16 variant as {actual} on this CPU")
        raise RuntimeError(f"OpenVINO compiled the {precision} variant as {actual}, expected {wanted}")


def _float_ir(ctx: PrepareContext, opts: OvOptions) -> tuple[Path, bool, str]:
    """The fp32 IR: (path, cache hit, note for the row).

    One IR with a dynamic batch (static C×H×W) per sample shape and source; where the model fixes its
    batch (or the ONNX export it starts from does), one IR per batch size, and the note says why.
    """
    import openvino as ov

    source: dict[str, Any] = {"source": "torch"}
    export = None
    if opts.from_onnx or hasattr(ctx.model, "onnx_path"):  # asked for, or the model is an ONNX file
        from infertune.backends.onnx_export import export_onnx

        export = export_onnx(ctx)
        source = {"source": "onnx", "onnx": export.key}
    parts = {"stage": "ir", "openvino": ov.__version__, "sample_shape": ctx.sample_key, "format": IR_FORMAT,
             **source}
    reason = export.note if export is not None and not export.dynamic_batch else ""
    if not reason:
        entry = ctx.cache.entry("openvino", **parts, batch="dynamic")
        path = entry.file("model.xml")
        if entry.hit and entry.meta().get("dynamic_batch", True):
            ctx.log(f"openvino: reusing cached IR {path}")
            return path, True, ""
        if entry.hit:
            reason = str(entry.meta().get("reason", "the batch dimension did not stay dynamic"))
        else:
            start = time.perf_counter()
            model = _convert(ctx, export.path if export else None, _two_samples(ctx.example_input))
            reason = _make_batch_dynamic(model, [shape[1:] for shape in ctx.batch_shapes])
            if not reason:
                _save(ctx, entry, model, start, source["source"])
                return path, False, ""
            entry.commit({"dynamic_batch": False, "reason": reason})  # tried once, not per cell
        reason = (f"OpenVINO IR: the batch dimension cannot stay dynamic ({reason}); converted for batch "
                  f"{ctx.batch_size} only (one IR per batch size)")
    entry = ctx.cache.entry("openvino", **parts, batch=ctx.batch_size)
    path = entry.file("model.xml")
    if entry.hit:
        ctx.log(f"openvino: reusing cached IR {path} (batch {ctx.batch_size})")
        return path, True, reason
    start = time.perf_counter()
    model = _convert(ctx, export.path if export else None, ctx.example_input)
    model.reshape({i: list(shape) for i, shape in enumerate(ctx.batch_shapes)})
    _save(ctx, entry, model, start, source["source"])
    return path, False, reason


def _save(ctx: PrepareContext, entry: Any, model: Any, start: float, source: str) -> None:
    import openvino as ov

    ov.save_model(model, entry.file("model.xml"), compress_to_fp16=False)
    seconds = time.perf_counter() - start
    entry.commit({"convert_s": round(seconds, 3), "source": source})
    ctx.log(f"openvino: converted to IR in {seconds:.1f} s")


def _two_samples(batch: Any) -> Any:
    """A two-sample example (of every input): tracing one sample can bake a batch of 1 into the graph."""
    from infertune.inputs import concat, take

    return take(concat([batch, batch]), slice(0, 2))


def _make_batch_dynamic(model: Any, sample_shapes: list[tuple[int, ...]]) -> str:
    """Reshape every input of ``model`` to a dynamic batch; '' when every output's batch follows, else why not."""
    try:
        model.reshape({i: [-1, *shape] for i, shape in enumerate(sample_shapes)})
    except RuntimeError as err:
        return f"reshaping the input to a dynamic batch failed: {str(err).splitlines()[0] if str(err) else err}"
    static = [f"{name} {output.get_partial_shape()}" for name, output in zip(port_names(model.outputs, "output"),
                                                                               model.outputs)
              if output.get_partial_shape().rank.is_static and len(output.get_partial_shape()) > 0
              and output.get_partial_shape()[0].is_static]
    return f"with a dynamic input batch the output stays static: {', '.join(static)}" if static else ""


def _convert(ctx: PrepareContext, onnx_path: Path | None, example: Any) -> Any:
    """Convert from the torch module (default, traced on ``example``) or from an ONNX file; the outputs
    are given the reference's names."""
    import openvino as ov

    if onnx_path is not None:
        return ov.convert_model(str(onnx_path))
    import torch

    from infertune.backends.torch_common import to_tensors

    with torch.inference_mode(), warnings.catch_warnings():
        # OpenVINO's torch frontend traces with torch.jit.trace, which warns that it is deprecated.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        model = ov.convert_model(ctx.model.eval(), example_input=to_tensors(example, "cpu", torch.float32))
    names = reference_output_names(ctx.model, example)
    if len(names) == len(model.outputs):
        for output, name in zip(model.outputs, names):
            output.get_tensor().set_names({name})
    return model


def _int8_ir(ctx: PrepareContext, opts: OvOptions, float_ir: Path) -> tuple[Path, bool]:
    """Quantize the fp32 IR with NNCF on calibration samples; cached per sample shape and NNCF settings."""
    import nncf
    import openvino as ov

    int8_settings = dict(ctx.settings.get("int8", {}) or {})
    samples = int(int8_settings.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES))
    entry = ctx.cache.entry(
        "openvino",
        stage="int8",
        openvino=ov.__version__,
        nncf=nncf.__version__,
        float_ir=float_ir.parent.name,  # names source, format and (for a per-batch IR) the batch
        sample_shape=ctx.sample_key,
        preset=opts.preset,
        bias_correction=opts.bias_correction,
        int8_settings=int8_settings,
        calibration_samples=samples,
    )
    path = entry.file("model.xml")
    if entry.hit:
        ctx.log(f"openvino: reusing cached int8 IR {path}")
        return path, True
    from infertune.inputs import batch_size, named, take

    calibration = ctx.calibration(samples)
    arrays = list(feeds(list(named(calibration)), calibration).values())  # every input, in order
    model = ov.Core().read_model(float_ir)
    batch_dim = model.inputs[0].get_partial_shape()[0]
    size = batch_dim.get_length() if batch_dim.is_static else 1  # a per-batch IR takes batches of its size
    count = batch_size(calibration)
    items = [{i: take(a, [j % count for j in range(start, start + size)]) for i, a in enumerate(arrays)}
             for start in range(0, count, size)]
    start = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        subset_size=len(items),
        preset=_preset(opts.preset),
        fast_bias_correction=opts.bias_correction == "fast",
    )
    ov.save_model(quantized, path, compress_to_fp16=False)
    seconds = time.perf_counter() - start
    entry.commit({"quantize_s": round(seconds, 3), "calibration_samples": count})
    ctx.log(f"openvino: NNCF quantized {count} calibration samples in {seconds:.1f} s")
    return path, False


def _preset(name: str) -> Any:
    import nncf

    return {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[name]
