"""The hand-tuned reference methods of issue 3, written directly against each library (not through
infertune's backends), so the benchmark compares the tool with independent by-hand code.

Each builder takes (model, batch, threads, cache_dir) and returns a zero-argument callable that runs
one inference on a fixed batch. Conversions are cached in ``cache_dir`` so every measuring process
after the first only loads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Builder = Callable[[Any, int, int, Path], Callable[[], Any]]


def _input(batch: int) -> np.ndarray:
    return np.random.default_rng(123).standard_normal((batch, 3, 224, 224)).astype(np.float32)


def _torch_fn(fn: Any, batch: int) -> Callable[[], Any]:
    import torch

    x = torch.from_numpy(_input(batch))

    def call() -> Any:
        with torch.inference_mode():
            return fn(x)

    return call


def eager(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _torch_fn(model, batch)


def torchscript(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    import torch

    x = torch.from_numpy(_input(batch))
    with torch.inference_mode():
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
    return _torch_fn(traced, batch)


def _compile(model: Any, batch: int, mode: str | None, freezing: bool) -> Callable[[], Any]:
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = freezing
    compiled = torch.compile(model, mode=mode)
    call = _torch_fn(compiled, batch)
    call()  # compile now, not inside the timed loop
    return call


def compile_default(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _compile(model, batch, None, False)


def compile_freezing(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _compile(model, batch, None, True)


def compile_max_autotune(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _compile(model, batch, "max-autotune", False)


def _onnx(model: Any, cache: Path) -> Path:
    import torch

    path = cache / "resnet50.onnx"
    if not path.exists():
        x = torch.from_numpy(_input(1))
        tmp = cache / f"tmp-{os.getpid()}.onnx"
        torch.onnx.export(model, (x,), str(tmp), dynamo=True, input_names=["input"], output_names=["out"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), external_data=False)
        tmp.replace(path)
    return path


def _ort_call(path: Path, batch: int, threads: int) -> Callable[[], Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: _input(batch)}
    return lambda: sess.run(None, feed)


def ort_fp32(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _ort_call(_onnx(model, cache), batch, threads)


class _Calib:
    """32 synthetic calibration samples, one per call (ORT's CalibrationDataReader protocol)."""

    def __init__(self) -> None:
        data = np.random.default_rng(7).standard_normal((32, 1, 3, 224, 224)).astype(np.float32)
        self._it = iter({"input": d} for d in data)

    def get_next(self) -> Any:
        return next(self._it, None)

    def rewind(self) -> None:
        self.__init__()


def _ort_int8(model: Any, cache: Path, activation: str, reduce_range: bool) -> Path:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = f"resnet50-int8-{activation}s8{'-rr' if reduce_range else ''}.onnx"
    path = cache / name
    if path.exists():
        return path
    pre = cache / f"pre-{os.getpid()}.onnx"
    quant_pre_process(str(_onnx(model, cache)), str(pre))
    tmp = cache / f"tmp-{os.getpid()}-{name}"
    quantize_static(str(pre), str(tmp), _Calib(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax,
                    activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    tmp.replace(path)
    pre.unlink(missing_ok=True)
    return path


def ort_int8_s8s8(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _ort_call(_ort_int8(model, cache, "s8", False), batch, threads)


def ort_int8_u8s8_rr(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _ort_call(_ort_int8(model, cache, "u8", True), batch, threads)


def _ov_call(xml: Path, batch: int, threads: int) -> Callable[[], Any]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape([batch, 3, 224, 224])
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    x = _input(batch)
    return lambda: request.infer({0: x})


def _ov_fp32_ir(model: Any, cache: Path) -> Path:
    import openvino as ov
    import torch

    xml = cache / "resnet50-ov-fp32.xml"
    if not xml.exists():
        ov_model = ov.convert_model(model, example_input=torch.from_numpy(_input(1)))
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml


def ov_fp32(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    return _ov_call(_ov_fp32_ir(model, cache), batch, threads)


def ov_int8_nncf(model: Any, batch: int, threads: int, cache: Path) -> Callable[[], Any]:
    import nncf
    import openvino as ov

    xml = cache / "resnet50-ov-int8.xml"
    if not xml.exists():
        core = ov.Core()
        fp32 = core.read_model(str(_ov_fp32_ir(model, cache)))
        data = np.random.default_rng(7).standard_normal((32, 1, 3, 224, 224)).astype(np.float32)
        quantized = nncf.quantize(fp32, nncf.Dataset(list(data)), subset_size=32)
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return _ov_call(xml, batch, threads)


#: name -> (description as in the issue, builder)
METHODS: dict[str, tuple[str, Builder]] = {
    "eager": ("PyTorch eager fp32", eager),
    "torchscript": ("TorchScript trace + freeze + optimize_for_inference", torchscript),
    "compile_default": ("torch.compile default", compile_default),
    "compile_freezing": ("torch.compile with inductor freezing", compile_freezing),
    "compile_max_autotune": ("torch.compile max-autotune", compile_max_autotune),
    "ort_fp32": ("ONNX Runtime fp32, all graph optimizations", ort_fp32),
    "ov_fp32": ("OpenVINO fp32, latency hint", ov_fp32),
    "ort_int8_s8s8": ("ONNX Runtime INT8 QDQ, s8 activations / s8 weights", ort_int8_s8s8),
    "ort_int8_u8s8_rr": ("ONNX Runtime INT8 QDQ, u8 activations / s8 weights, reduce_range", ort_int8_u8s8_rr),
    "ov_int8_nncf": ("OpenVINO INT8 (NNCF post-training quantization)", ov_int8_nncf),
}
