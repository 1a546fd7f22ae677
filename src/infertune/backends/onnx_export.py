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
from infertune.errors import ModelError

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
    """Export ``ctx.model`` with ``torch.onnx.export(dynamo=True)`` and a dynamic batch dimension (a model
    that is an ONNX file is its own export).

    The file is cached by weights, torch version, opset and per-sample input shape (not batch size),
    so one export serves every batch size and every ONNX-based backend.
    """
    source = getattr(ctx.model, "onnx_path", None)
    if source is not None:  # the model is an ONNX file already (infertune.models_onnx.OnnxModel)
        return OnnxExport(Path(source), True, 0.0)
    import torch

    opset = int(ctx.settings.get("onnx_opset", DEFAULT_OPSET))
    entry = ctx.cache.entry("onnx", torch=torch.__version__, opset=opset, sample_shape=ctx.input_shape[1:])
    path = entry.file("model.onnx")
    if entry.note:
        ctx.log(entry.note)
    if entry.hit:
        problem = check_onnx_file(path)
        if not problem:
            ctx.log(f"reusing cached ONNX export {path}")
            return OnnxExport(path, True, 0.0)
        ctx.log(f"cached ONNX export {path} is invalid ({problem}); exporting again")
        entry.discard()
        entry = ctx.cache.entry("onnx", torch=torch.__version__, opset=opset, sample_shape=ctx.input_shape[1:])
        path = entry.file("model.onnx")
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
    problem = check_onnx_file(path)
    if problem:
        entry.discard()
        raise ModelError(f"the ONNX export of the model is invalid ({problem}); the ONNX-based variants cannot "
                         "run it. Try another optimization.onnx_opset")
    entry.commit({"opset": opset})
    return OnnxExport(path, False, time.perf_counter() - start)


_checked: set[tuple[str, int, int]] = set()


def check_onnx_file(path: Path) -> str:
    """'' when ``path`` is a complete, valid ONNX model (``onnx.checker``), else the problem in one line.

    A truncated or corrupt file (a full disk, an interrupted copy) otherwise surfaces as an obscure
    runtime error deep in a session constructor. Checked once per file version per process.
    """
    import onnx

    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        return f"cannot read it: {err.strerror}"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _checked:
        return ""
    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # noqa: BLE001 - onnx raises ValidationError, DecodeError, OSError... when damaged
        text = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
        return text if len(text) <= 200 else text[:197] + "..."
    _checked.add(key)
    return ""


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
