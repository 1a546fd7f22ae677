"""INT8 post-training quantization of an ONNX model with ONNX Runtime's tools, cached step by step.

Shared by the ``onnxruntime`` backend (CPU INT8) and the ``tensorrt`` backend (explicit-quantization
INT8). Three cached steps, so that changing one setting redoes only what depends on it:

    export --quant_pre_process--> pre-processed  --calibration--> tensor ranges (JSON)
                                                 --quantize_static / quantize_dynamic--> model.int8.onnx

Why the defaults are what they are (measurements: docs/results/cpu.md, "ONNX Runtime's INT8 recipes"):

* On an x86 CPU **without VNNI** (AVX2 only), u8 activations + s8 weights + ``reduce_range``, which ran
  much faster than s8/s8: MLAS's U8S8 kernel is ``vpmaddubsw``, whose 16-bit intermediate saturates
  unless weights use 7 bits.
* On an x86 CPU **with AVX512-VNNI**, u8s8 without ``reduce_range``: as fast (``vpdpbusd`` does not
  saturate) and closer to fp32. s8s8 was clearly slower (the x86 S8S8 path is not the fast one);
  QOperator, per-tensor weights, AddQDQPairToWeight, QDQKeepRemovableActivations and leaving Add
  unquantized were all within noise of QDQ u8s8. So: u8s8 everywhere on x86, ``reduce_range`` only
  where there is no VNNI, QDQ format (the portable one).
* On 64-bit Arm ORT's own guidance is s8s8 QDQ (its int8 dot-product kernels are signed); not
  measured here.
* Against the hand-tuned point (QDQ u8s8 + reduce_range, ORT's default spinning threads) the default
  ``onnxruntime:int8`` is faster, but that gain is the session's no-spinning default (see
  ``onnxruntime.py``), not the quantization: with spinning the two ran alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infertune.backends.base import PrepareContext
from infertune.backends.onnx_export import graph_inputs
from infertune.errors import ConfigError

#: option word -> ORT CalibrationMethod member name.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
#: option word -> activation type (weights are always signed 8-bit).
TYPE_OPTIONS = {"u8s8": "u8", "s8s8": "s8"}
RANGE_OPTIONS = {"reduce_range": True, "no_reduce_range": False}
MODES = ("static", "dynamic")
FORMATS = ("qdq", "qoperator")
ALLOWED_OPTIONS = (*CALIBRATION_METHODS, *TYPE_OPTIONS, *RANGE_OPTIONS, *MODES, *FORMATS)
DEFAULT_CALIBRATION_SAMPLES = 32
#: calibration batches where the export has a dynamic batch axis: several samples per run (an export
#: with a static batch is calibrated in batches of exactly its size).
CALIBRATION_CHUNK = 8
#: CPU flags (underscores removed) that give x86 an 8-bit dot product without saturation.
INT8_DOT_FLAGS = frozenset({"avx512vnni", "avxvnni", "amxint8"})


@dataclass(frozen=True)
class Int8Recipe:
    """Every setting that changes the quantized model; all of it goes into the cache key.

    Attributes:
        mode: ``static`` (calibrated activation scales) or ``dynamic`` (scales computed per run).
        method: calibration method for static mode (``minmax``, ``percentile``, ``entropy``).
        activations: ``u8`` or ``s8``; weights are always ``s8``, per channel.
        reduce_range: quantize weights to 7 bits (avoids ``vpmaddubsw`` saturation without VNNI).
        quant_format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs) or ``qoperator`` (QLinearConv...).
        calibration_samples: how many calibration samples static mode uses.
        symmetric_activations: force activation zero points to 0 (TensorRT requires it).
        why: how the types were chosen, for the log (not part of the key).
    """

    mode: str = "static"
    method: str = "minmax"
    activations: str = "u8"
    reduce_range: bool = False
    quant_format: str = "qdq"
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    symmetric_activations: bool = False
    why: str = ""

    def key_parts(self) -> dict[str, Any]:
        parts = asdict(self)
        parts.pop("why")
        if self.mode == "dynamic":  # no calibration: these do not change the model
            for name in ("method", "calibration_samples", "quant_format", "activations", "symmetric_activations"):
                parts.pop(name)
        return parts

    def key(self) -> str:
        """A short readable summary, e.g. ``static-minmax-u8s8-qdq-n32``."""
        if self.mode == "dynamic":
            return "dynamic" + ("-rr" if self.reduce_range else "")
        rr = "-rr" if self.reduce_range else ""
        sym = "-sym" if self.symmetric_activations else ""
        return (f"static-{self.method}-{self.activations}s8{rr}{sym}-{self.quant_format}"
                f"-n{self.calibration_samples}")


def resolve_recipe(options: dict[str, str], settings: dict[str, Any], flags: frozenset[str] | None = None,
                   machine: str | None = None) -> Int8Recipe:
    """Build the recipe from a variant's options, the config's ``int8`` block and this CPU.

    Options win over settings; settings win over the CPU-based defaults. Unknown or contradictory
    options raise ConfigError naming the option and what is allowed.
    """
    int8 = dict(settings.get("int8") or {})
    unknown = sorted(set(options) - set(ALLOWED_OPTIONS))
    if unknown:
        raise ConfigError(
            f"onnxruntime:int8: unknown option(s) {', '.join(repr(u) for u in unknown)}; "
            f"allowed: {', '.join(ALLOWED_OPTIONS)}"
        )
    method = _one_of(options, CALIBRATION_METHODS, "calibration method")
    if method is None:
        method = str(int8.get("calibration_method", "minmax")).lower()
        if method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"int8.calibration_method: {method!r} is not one of {', '.join(CALIBRATION_METHODS)}"
            )
    mode = _one_of(options, MODES, "mode") or "static"
    if mode == "dynamic" and any(o in options for o in (*CALIBRATION_METHODS, *TYPE_OPTIONS, *FORMATS)):
        raise ConfigError(
            "onnxruntime:int8:dynamic computes activation scales at run time: it takes no calibration "
            f"method, type or format option (only {', '.join(RANGE_OPTIONS)})"
        )
    samples = _calibration_samples(int8)
    default_act, default_rr, why = default_types(flags if flags is not None else cpu_flags(),
                                                 machine or platform.machine())
    types = _one_of(options, TYPE_OPTIONS, "type")
    rr = _one_of(options, RANGE_OPTIONS, "range")
    return Int8Recipe(
        mode=mode,
        method=method,
        activations=TYPE_OPTIONS[types] if types else default_act,
        reduce_range=RANGE_OPTIONS[rr] if rr else default_rr,
        quant_format=_one_of(options, FORMATS, "format") or "qdq",
        calibration_samples=samples,
        why=_why(mode, why, bool(types or rr)),
    )


def _why(mode: str, cpu_reason: str, from_options: bool) -> str:
    if mode == "dynamic":
        return "dynamic: u8 weights, activation scales computed on every run"
    return "set by the variant's options" if from_options else cpu_reason


def tensorrt_recipe(settings: dict[str, Any]) -> Int8Recipe:
    """TensorRT's explicit quantization wants signed, symmetric activations and no reduced range."""
    int8 = dict(settings.get("int8") or {})
    method = str(int8.get("calibration_method", "minmax")).lower()
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"int8.calibration_method: {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    return Int8Recipe(method=method, activations="s8", reduce_range=False, quant_format="qdq",
                      calibration_samples=_calibration_samples(int8), symmetric_activations=True,
                      why="TensorRT Q/DQ: s8 symmetric")


def _one_of(options: dict[str, str], group: Any, what: str) -> str | None:
    """The single option of ``group`` present in ``options`` (None if absent); two of a group conflict."""
    chosen = [o for o in options if o in group]
    if len(chosen) > 1:
        raise ConfigError(f"onnxruntime:int8: options {' and '.join(chosen)} conflict (pick one {what})")
    return chosen[0] if chosen else None


def _calibration_samples(int8: dict[str, Any]) -> int:
    value = int8.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"int8.calibration_samples must be a positive integer, not {value!r}")
    return value


def default_types(flags: frozenset[str], machine: str) -> tuple[str, bool, str]:
    """(activation type, reduce_range, why) for this CPU; see the module docstring for the numbers."""
    arch = machine.lower()
    if arch in ("aarch64", "arm64"):
        return "s8", False, "Arm CPU: s8s8 (ORT's signed int8 dot-product kernels)"
    normalized = {f.replace("_", "").lower() for f in flags}
    if normalized & INT8_DOT_FLAGS:
        return "u8", False, "x86 with VNNI: u8s8, full range (no saturation, same speed, more accurate)"
    return "u8", True, "x86 without VNNI: u8s8 + reduce_range (avoids vpmaddubsw saturation; ~1.8x s8s8)"


def cpu_flags() -> frozenset[str]:
    """ISA flags of this CPU: /proc/cpuinfo on Linux, py-cpuinfo elsewhere; empty when neither works."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        import cpuinfo

        return frozenset(cpuinfo.get_cpu_info().get("flags", []))
    except Exception:  # noqa: BLE001 - py-cpuinfo runs probes that can fail in many ways; no flags then
        return frozenset()


def quantize_cached(ctx: PrepareContext, source: Path, source_key: str, recipe: Int8Recipe) -> Path:
    """Return the quantized form of ``source`` under ``recipe``, building and caching what is missing."""
    import onnxruntime as ort

    pre = _preprocessed(ctx, source, source_key, ort.__version__)
    # which calibration data (infertune.inputs.InputSource.calibration_identity): other data, other model
    calibration_id = (ctx.settings.get("int8") or {}).get("calibration_id") if recipe.mode != "dynamic" else None
    entry = ctx.cache.entry("onnx-int8", ort=ort.__version__, onnx=source_key, calibration=calibration_id,
                            **recipe.key_parts())
    out = entry.file("model.int8.onnx")
    if entry.hit:
        ctx.log(f"reusing cached INT8 model {out} ({recipe.key()})")
        return out
    ctx.log(f"quantizing ({recipe.key()}; {recipe.why})")
    start = time.perf_counter()
    if recipe.mode == "dynamic":
        _quantize_dynamic(pre, out, recipe)
    else:
        calib = ctx.cache.entry("onnx-calibration", ort=ort.__version__, onnx=source_key, method=recipe.method,
                                samples=recipe.calibration_samples, calibration=calibration_id)
        _quantize_static(pre, out, recipe, ctx.calibration, calib.file("ranges.json"))
        if not calib.hit:
            calib.commit({"method": recipe.method, "samples": recipe.calibration_samples})
    entry.commit({"recipe": recipe.key(), "quantize_s": round(time.perf_counter() - start, 3)})
    return out


def _preprocessed(ctx: PrepareContext, source: Path, source_key: str, ort_version: str) -> Path:
    """Shape inference + ORT's basic graph optimizations (BN folding), which quantization expects first."""
    entry = ctx.cache.entry("onnx-preprocessed", ort=ort_version, onnx=source_key)
    out = entry.file("model.pre.onnx")
    if not entry.hit:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with _quiet():
            quant_pre_process(str(source), str(out))
        entry.commit()
    return out


def _quantize_static(pre: Path, out: Path, recipe: Int8Recipe, calibration: Callable[[int], np.ndarray],
                     ranges: Path) -> None:
    """``quantize_static`` with per-channel s8 weights; tensor ranges are read from / saved to ``ranges``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    act = QuantType.QUInt8 if recipe.activations == "u8" else QuantType.QInt8
    extra: dict[str, Any] = {
        "ActivationSymmetric": recipe.symmetric_activations,
        "WeightSymmetric": True,
        # one calibration batch per collect_data call: histograms grow incrementally instead of
        # holding every intermediate tensor of every sample in memory at once.
        "CalibStridedMinMax": 1,
    }
    inputs = graph_inputs(pre)
    shape = inputs[0][1]
    static_batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
    with _quiet():
        quantize_static(
            str(pre),
            str(out),
            _CalibrationBatches(calibration, recipe.calibration_samples, [name for name, _ in inputs], static_batch),
            quant_format=QuantFormat.QDQ if recipe.quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            reduce_range=recipe.reduce_range,
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[recipe.method]),
            extra_options=extra,
            calibration_cache_path=str(ranges),
        )


def _quantize_dynamic(pre: Path, out: Path, recipe: Int8Recipe) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(pre), str(out), per_channel=True, reduce_range=recipe.reduce_range,
                         weight_type=QuantType.QUInt8)


class _CalibrationBatches:
    """A ``CalibrationDataReader`` over ``calibration(n)`` in batches fed to ``input_names`` (every input of
    the graph, in order; token ids and masks keep their integer dtype); draws the samples only when first read.

    Lazy because a cached calibration (ranges.json) means the samples are never needed, and real
    calibration images are costly to load. ``__len__``/``set_range`` serve ORT's strided collection.
    A graph with a static batch (``static_batch``) needs batches of exactly that size: the last one
    then wraps around to the first samples; otherwise batches hold ``CALIBRATION_CHUNK`` samples.
    """

    def __init__(self, calibration: Callable[[int], Any], n: int, input_names: list[str],
                 static_batch: int | None = None) -> None:
        self._calibration = calibration
        self._n = n
        self._input_names = input_names
        self._static_batch = static_batch
        self._batches: list[dict[str, np.ndarray]] | None = None
        self._range = (0, 0)
        self._pos = 0

    def _load(self) -> list[dict[str, np.ndarray]]:
        if self._batches is None:
            from infertune.backends.runner_io import feeds
            from infertune.inputs import batch_size, take

            data = self._calibration(self._n)
            data = feeds(self._input_names, list(data.values()) if isinstance(data, dict) else data)
            count, size = batch_size(data), self._static_batch or CALIBRATION_CHUNK
            self._batches = [take(data, [i % count for i in range(s, s + size)]) if self._static_batch
                             else take(data, slice(s, s + size)) for s in range(0, count, size)]
            self._range = (0, len(self._batches))
            self._pos = 0
        return self._batches

    def __len__(self) -> int:
        return len(self._load())

    def set_range(self, start_index: int, end_index: int) -> None:
        self._load()
        self._range = (start_index, end_index)
        self._pos = start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        batches = self._load()
        if self._pos >= min(self._range[1], len(batches)):
            return None
        self._pos += 1
        return batches[self._pos - 1]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's quantization tools log advice on the root logger and print histogram progress to stdout;
    the run's own progress lines stay readable without them."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
