"""ONNX Runtime: the shared ONNX export (fp32), its fp16 form (CUDA) or its INT8 form (CPU), in one session.

Every variant's session uses ``ORT_ENABLE_ALL`` (constant folding, Conv+BN+activation fusion, NCHWc
layouts for fp32, QDQ -> QLinearConv/NHWC for INT8), ``ctx.threads`` intra-op threads, one inter-op
thread and sequential execution. The optimized graph is saved into the cache (so the artifact's size
is the real size of what runs) and reloaded without re-optimizing on a cache hit: measured on
ResNet50 INT8, a session from the saved graph ran as fast as one optimized at load time and gave
identical outputs. Because level-ALL graphs can hold CPU-specific ops, the key includes the CPU's
ISA flags. INT8 quantization lives in ``ort_quantize`` (recipes and the reasons for its defaults).

Idle intra-op threads do NOT spin-wait by default (``session.intra_op.allow_spinning=0``; the variant
option ``spin`` or the setting ``onnxruntime.allow_spinning: true`` turns it back on). A spinning
thread burns the core that the other thread of the parallel loop (or another process) needs: on a
machine with few cores shared with other work, spinning made INT8 and fp32 runs markedly slower, while
on an idle CPU it gained next to nothing. Measurements: docs/results/cpu.md ("ONNX Runtime's defaults").
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from infertune.backends.base import Availability, Backend, PrepareContext, Runner
from infertune.backends.onnx_export import export_onnx
from infertune.backends.registry import register_backend
from infertune.backends.runner_io import ORT_DTYPES, feeds, named_outputs
from infertune.errors import ConfigError

if TYPE_CHECKING:
    from infertune.backends.ort_quantize import Int8Recipe

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
OPTIMIZED = "model.optimized.onnx"
#: session options any ORT variant takes (``onnxruntime:int8:nospin``); the rest of an int8 variant's
#: options are quantization options (``ort_quantize.ALLOWED_OPTIONS``).
SESSION_OPTIONS = ("spin", "nospin")
#: ``transformer[=bert|vit|gpt2...]``: run ONNX Runtime's transformer optimizer (attention, LayerNorm, GELU and
#: bias fusions; ``onnxruntime.transformers.optimizer``) on the export first; any precision takes it.
TRANSFORMER_OPTION = "transformer"
#: whether idle intra-op threads spin-wait; see the module docstring for the measurement.
DEFAULT_SPINNING = False
#: ISA flags that change which kernels/layouts ORT's level-ALL optimizer picks (part of the cache key).
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "amx_int8", "asimddp", "i8mm", "sve")


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    label = "ONNX Runtime"
    sources = frozenset({"torch", "onnx"})
    description = "ONNX Runtime session over the ONNX export: fp32, fp16 (CUDA), INT8 static/dynamic (CPU)."
    requires = ("onnxruntime",)
    seed_switch = "enable_onnx"
    install_hint = "pip install onnxruntime (for CUDA: pip install onnxruntime-gpu)"
    devices = frozenset({"cpu", "cuda"})
    precisions = frozenset({"fp32", "fp16", "int8"})
    unsupported = {
        ("cpu", "fp16"): "needs the CUDA execution provider (the CPU provider has no fast fp16 convolutions)",
        ("cuda", "int8"): "runs on the CPU provider only (the CUDA provider has no int8 convolutions); "
                          "use onnxruntime:int8 on cpu or tensorrt:int8",
    }

    def availability(self, device: str, precision: str) -> Availability:
        base = super().availability(device, precision)
        if not base.ok:
            return base
        if device == "cuda" and CUDA_EP not in _providers():
            return Availability.no("onnxruntime here is the CPU build; pip install onnxruntime-gpu")
        return Availability.yes()

    def default_variants(self, device: str) -> list[str]:
        if device == "cuda":
            has_ep = self.availability("cuda", "fp16").ok
            return ["onnxruntime:fp32"] + (["onnxruntime:fp16"] if has_ep else [])
        return ["onnxruntime:fp32", "onnxruntime:int8"]

    def validate_options(self, options: dict[str, str], device: str, precision: str) -> None:
        from infertune.backends.ort_quantize import resolve_recipe

        _, rest = _split_options(SimpleNamespace(options=options, precision=precision, settings={}))
        if precision == "int8":
            resolve_recipe(rest, {})

    def prepare(self, ctx: PrepareContext) -> Runner:
        self.check(ctx.device, ctx.precision)
        spin, quant_options = _split_options(ctx)
        recipe = None
        if ctx.precision == "int8":  # resolved before the export so a bad option fails at once
            from infertune.backends.ort_quantize import resolve_recipe

            recipe = resolve_recipe(quant_options, ctx.settings)
        import onnxruntime as ort

        source, source_key, export_note = _source_model(ctx, recipe)
        provider = CUDA_EP if ctx.device == "cuda" else CPU_EP
        entry = ctx.cache.entry(
            self.name,
            ort=ort.__version__,
            source=source_key,
            provider=provider,
            isa=_isa_fingerprint(),
            level="all",
        )
        path = entry.file(OPTIMIZED)
        if entry.hit:
            ctx.log(f"reusing cached optimized ORT model {path}")
            session = _session(path, ctx.threads, provider, spin, optimize=False)
        else:
            start = time.perf_counter()
            session = _session(source, ctx.threads, provider, spin, optimize=True, save_to=path)
            entry.commit({"optimize_s": round(time.perf_counter() - start, 3), "source": source_key})
        runner = OrtRunner(session, source)
        runner.notes = (export_note,) if export_note else ()
        runner.artifact_path = path
        runner.cache_hit = entry.hit
        return runner


def _split_options(ctx: PrepareContext) -> tuple[bool, dict[str, str]]:
    """(allow spinning, the remaining options); non-int8 variants take session options only."""
    chosen = [o for o in SESSION_OPTIONS if o in ctx.options]
    if len(chosen) > 1:
        raise ConfigError("onnxruntime: options spin and nospin conflict (pick one)")
    rest = {k: v for k, v in ctx.options.items() if k not in (*SESSION_OPTIONS, TRANSFORMER_OPTION)}
    if rest and ctx.precision != "int8":
        raise ConfigError(
            f"onnxruntime:{ctx.precision}: unknown option(s) {', '.join(sorted(rest))}; "
            f"allowed: {', '.join((*SESSION_OPTIONS, TRANSFORMER_OPTION))} (quantization options go on onnxruntime:int8)"
        )
    if chosen:
        return chosen[0] == "spin", rest
    setting = ctx.settings.get("onnxruntime", {}).get("allow_spinning", DEFAULT_SPINNING)
    if not isinstance(setting, bool):
        raise ConfigError(f"onnxruntime.allow_spinning must be true or false, not {setting!r}")
    return setting, rest


def _source_model(ctx: PrepareContext, recipe: Int8Recipe | None) -> tuple[Path, str, str]:
    """The ONNX file the session starts from, a cache key naming it (export, fp16 or INT8 form), and
    the export's note for the row ("" unless the batch could not stay dynamic)."""
    export = export_onnx(ctx)
    path, key = export.path, export.key
    if TRANSFORMER_OPTION in ctx.options:
        path, key = _transformer_optimized(ctx, path, key, ctx.options[TRANSFORMER_OPTION] or "bert")
    if ctx.precision == "fp32":
        return path, key, export.note
    if ctx.precision == "fp16":
        return _fp16(ctx, path, key), f"{key}:fp16", export.note
    from infertune.backends.ort_quantize import quantize_cached

    assert recipe is not None  # prepare resolves it for every int8 cell
    quantized = quantize_cached(ctx, path, key, recipe)
    return quantized, f"{key}:int8:{quantized.parent.name}", export.note


def _transformer_optimized(ctx: PrepareContext, source: Path, source_key: str, model_type: str) -> tuple[Path, str]:
    """The export after ONNX Runtime's transformer optimizer (heads and hidden size read from the graph), cached."""
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    if model_type not in MODEL_TYPES:
        raise ConfigError(f"onnxruntime: option transformer={model_type}: ONNX Runtime's optimizer knows "
                          f"{', '.join(sorted(MODEL_TYPES))}")
    entry = ctx.cache.entry("onnx-transformer", ort=ort.__version__, onnx=source_key, model_type=model_type)
    out = entry.file("model.transformer.onnx")
    if not entry.hit:
        start = time.perf_counter()
        optimized = optimize_model(str(source), model_type=model_type, num_heads=0, hidden_size=0,
                                   use_gpu=ctx.device == "cuda")
        optimized.save_model_to_file(str(out))
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        entry.commit({"optimize_s": round(time.perf_counter() - start, 3), "fused": fused})
        ctx.log(f"onnxruntime: transformer optimizer ({model_type}) fused {fused or 'nothing'}")
    return out, f"{source_key}:transformer-{model_type}"


def _fp16(ctx: PrepareContext, source: Path, source_key: str) -> Path:
    """Convert weights and compute to fp16, keeping fp32 inputs/outputs so feeds stay the same."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    entry = ctx.cache.entry("onnx-fp16", ort=ort.__version__, onnx=source_key)
    out = entry.file("model.fp16.onnx")
    if not entry.hit:
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(model, str(out))
        entry.commit()
    return out


def _session(model: Path, threads: int, provider: str, spin: bool, optimize: bool,
             save_to: Path | None = None) -> Any:
    """One InferenceSession with the options every ORT variant shares (see the module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3  # level-ALL serialization warns about hardware-specific ops; the key covers it
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    providers = [provider] if provider == CPU_EP else [provider, CPU_EP]
    return ort.InferenceSession(str(model), so, providers=providers)


def _providers() -> list[str]:
    """Execution providers this onnxruntime build offers (imports onnxruntime: only asked for CUDA cells)."""
    try:
        import onnxruntime as ort
    except (ImportError, OSError):
        return []
    return list(ort.get_available_providers())


def _isa_fingerprint() -> str:
    from infertune.backends.ort_quantize import cpu_flags

    flags = cpu_flags()
    return platform.machine() + ":" + ",".join(f for f in _ISA_FLAGS if f in flags)


class OrtRunner(Runner):
    """Feeds host arrays (each in its graph input's dtype) and returns every host output: latency is end
    to end on any provider.

    Input and output names come from the session (``runner_io``), so a model with several outputs
    has each one verified. ``source_path`` is the model the session was optimized from (the export,
    or its fp16/INT8 form).
    """

    def __init__(self, session: Any, source_path: Path) -> None:
        self.session = session
        self.source_path = source_path
        self.input_names = [i.name for i in session.get_inputs()]
        self.input_dtypes = [ORT_DTYPES.get(i.type) for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def to_native(self, batch: Any) -> dict[str, np.ndarray]:
        return feeds(self.input_names, batch, self.input_dtypes)

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, inputs)

    def to_numpy(self, outputs: list[np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        return named_outputs(self.output_names, outputs)

    def close(self) -> None:
        self.session = None
