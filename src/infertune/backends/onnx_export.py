"""Export the FP32 model to ONNX once (dynamic batch axis), cached; ORT, OpenVINO and TensorRT start here."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infertune.backends.base import PrepareContext

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX file, whether it came from the cache, and the seconds the export took."""

    path: Path
    cache_hit: bool
    seconds: float


def export_onnx(ctx: PrepareContext) -> OnnxExport:
    """Export ``ctx.model`` with ``torch.onnx.export(dynamo=True)`` and a dynamic batch dimension.

    The file is cached by weights, torch version, opset and per-sample input shape (not batch size),
    so one export serves every batch size and every ONNX-based backend.
    """
    import torch

    opset = int(ctx.settings.get("onnx_opset", DEFAULT_OPSET))
    entry = ctx.cache.entry("onnx", torch=torch.__version__, opset=opset, sample_shape=ctx.input_shape[1:])
    path = entry.file("model.onnx")
    if entry.hit:
        ctx.log(f"reusing cached ONNX export {path}")
        return OnnxExport(path, True, 0.0)
    start = time.perf_counter()
    example = torch.from_numpy(ctx.example_input[:1].copy())
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet():
        torch.onnx.export(
            ctx.model.eval(),
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            optimize=True,
            external_data=False,
        )
    entry.commit({"opset": opset})
    return OnnxExport(path, False, time.perf_counter() - start)


@contextlib.contextmanager
def _quiet() -> Any:
    """torch.onnx's dynamo exporter prints progress lines and warnings; keep the terminal clean."""
    buf = io.StringIO()
    level = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger("torch.onnx").setLevel(level)
