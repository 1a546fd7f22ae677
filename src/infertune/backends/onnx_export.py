"""Export the FP32 model to ONNX once with a dynamic batch axis, cached; ORT, OpenVINO and TensorRT start here.

The export traces an example of **two** samples: with a one-sample example the exporter may quietly
specialise the batch to 1 (torchvision's ``vit_b_16`` came out with a static batch of 1, so ORT at
batch 2 failed with "Got: 2 Expected: 1"). The exported graph's input shapes are then read back:
only a graph whose batch dimension is symbolic serves every batch size. A model that fixes its batch
(``int(x.shape[0])``, a reshape to a constant) either makes the exporter raise or comes out static;
either way the reason is cached with the dynamic attempt (tried once), the model is exported once
per batch size instead (the cache key then holds the batch), and ``OnnxExport.note`` says so for
the row. Exporter errors are cleaned for the row: no terminal colour codes, the root cause first
(``Constraints violated (batch)``, the failing line of the model), never cut before it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infertune.backends.base import PrepareContext
from infertune.errors import ModelError

INPUT_NAME = "input"
DEFAULT_OPSET = 18
#: bumped when the export's recipe changes, so older cached exports are not reused.
EXPORT_FORMAT = 2
#: the batch size of the example the dynamic export traces (>= 2: see the module docstring).
TRACE_BATCH = 2
#: longest error text kept from the exporter (the root cause comes first, so nothing useful is cut).
ERROR_CHARS = 1200


@dataclass(frozen=True)
class OnnxExport:
    """An exported ONNX file, whether it came from the cache, the seconds the export took, and whether
    its batch dimension is dynamic (when not, ``note`` says why: it belongs on the row)."""

    path: Path
    cache_hit: bool
    seconds: float
    dynamic_batch: bool = True
    note: str = ""

    @property
    def key(self) -> str:
        """The cache key naming this export (its directory): derived artifacts include it in theirs."""
        return self.path.parent.name


def export_onnx(ctx: PrepareContext) -> OnnxExport:
    """Export ``ctx.model`` with ``torch.onnx.export(dynamo=True)``, batch dynamic where the model allows it
    (a model that is an ONNX file is its own export).

    The dynamic export is cached by weights, torch version, opset and per-sample input shape (not the
    batch size), so one export serves every batch size and every ONNX-based backend. Where the batch
    cannot stay dynamic, the export for ``ctx.batch_size`` is returned (cached per batch size).

    Raises:
        ModelError: the model cannot be exported at all (the exporter's root cause, cleaned).
    """
    source = getattr(ctx.model, "onnx_path", None)
    if source is not None:  # the model is an ONNX file already (infertune.models_onnx.OnnxModel)
        return OnnxExport(Path(source), True, 0.0)
    import torch

    opset = int(ctx.settings.get("onnx_opset", DEFAULT_OPSET))
    parts = {"torch": torch.__version__, "opset": opset, "sample_shape": ctx.sample_key, "format": EXPORT_FORMAT}
    entry = ctx.cache.entry("onnx", **parts, batch="dynamic")
    path = entry.file("model.onnx")
    if entry.hit and entry.meta().get("dynamic_batch", True):
        ctx.log(f"reusing cached ONNX export {path}")
        return OnnxExport(path, True, 0.0)
    if entry.hit:
        reason = str(entry.meta().get("reason", "the batch dimension did not stay dynamic"))
    else:
        start = time.perf_counter()
        reason = _export_dynamic(ctx, path, opset)
        if not reason:
            entry.commit({"opset": opset, "dynamic_batch": True})
            return OnnxExport(path, False, time.perf_counter() - start)
        path.unlink(missing_ok=True)
        entry.commit({"opset": opset, "dynamic_batch": False, "reason": reason})  # tried once, not per cell
    note = (f"ONNX export: the batch dimension cannot stay dynamic ({reason}); exported for batch "
            f"{ctx.batch_size} only (one export per batch size)")
    ctx.log(note)
    return _export_static(ctx, parts, opset, note)


def _export_dynamic(ctx: PrepareContext, path: Path, opset: int) -> str:
    """Export with a dynamic batch; '' when the graph really has one, else why not (the file may be left)."""
    import torch

    from infertune.inputs import concat, named, take

    example = take(concat([ctx.example_input] * TRACE_BATCH), slice(0, TRACE_BATCH))
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        _torch_export(ctx.model, example, path, opset, dynamic_shapes=tuple({0: batch} for _ in named(example)))
    except Exception as err:  # noqa: BLE001 - any exporter failure means: try a static export instead
        return export_error_text(err)
    static = [f"{name} {shape}" for name, shape in graph_inputs(path) if not shape or isinstance(shape[0], int)]
    if static:
        return f"the exported graph's input is static: {', '.join(static)}"
    return ""


def _export_static(ctx: PrepareContext, parts: dict[str, Any], opset: int, note: str) -> OnnxExport:
    """The export for exactly ``ctx.input_shape`` (cached per batch size)."""
    entry = ctx.cache.entry("onnx", **parts, batch=ctx.batch_size)
    path = entry.file("model.onnx")
    if entry.hit:
        ctx.log(f"reusing cached ONNX export {path} (batch {ctx.batch_size})")
        return OnnxExport(path, True, 0.0, dynamic_batch=False, note=note)
    start = time.perf_counter()
    try:
        _torch_export(ctx.model, ctx.example_input, path, opset, dynamic_shapes=None)
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; the row gets the cleaned cause
        entry.discard()
        raise ModelError(f"the model cannot be exported to ONNX, so the ONNX-based variants cannot run it: "
                         f"{export_error_text(err)}") from None
    shapes = [tuple(shape) for _, shape in graph_inputs(path)]
    if shapes != ctx.batch_shapes:
        entry.discard()
        raise ModelError(f"the ONNX export's inputs are {shapes or 'missing'}, not the batch's shapes "
                         f"{ctx.batch_shapes}")
    entry.commit({"opset": opset, "dynamic_batch": False, "batch": ctx.batch_size})
    return OnnxExport(path, False, time.perf_counter() - start, dynamic_batch=False, note=note)


def _torch_export(model: Any, example: Any, path: Path, opset: int, dynamic_shapes: Any) -> None:
    """``torch.export`` then ``torch.onnx.export`` of the program, outputs named as the reference names them.

    ``example`` is one array (the graph's input is named ``input``) or {name: array} (the graph's
    inputs carry those names, in that order; integer inputs such as token ids stay integers).

    ``torch.export`` is called directly (non-strict) rather than through ``torch.onnx.export(module)``,
    whose fallback strategies can drop a guard silently: a model branching on ``x.shape[0] > 4`` came
    out with a dynamic batch and one branch frozen, and ``int(x.shape[0])`` came out static without
    an error. Called directly, both raise "Constraints violated (batch)" with the reason.
    """
    import torch

    from infertune.backends.runner_io import reference_output_names
    from infertune.backends.torch_common import to_tensors
    from infertune.inputs import named

    names = reference_output_names(model, example)
    tensors = to_tensors(example, "cpu", torch.float32)
    args = tensors if isinstance(tensors, tuple) else (tensors,)
    with _quiet() as captured:
        try:
            with torch.no_grad():
                program = torch.export.export(model.eval(), args, dynamic_shapes=dynamic_shapes, strict=False)
            torch.onnx.export(
                program,
                args,
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=list(named(example, INPUT_NAME)),
                output_names=names,
                optimize=True,
                external_data=False,
            )
        except Exception as err:
            err.add_note(captured.getvalue())  # what the exporter logged can hold the root cause
            raise
    problem = check_onnx_file(path)
    if problem:
        raise ModelError(f"the ONNX export of the model is invalid ({problem}); try another optimization.onnx_opset")


def graph_inputs(path: Path) -> list[tuple[str, list[int | str]]]:
    """(name, shape) of each real input of an ONNX graph; a symbolic dimension is its name (a str)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [(i.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                      for d in i.type.tensor_type.shape.dim])
            for i in graph.input if i.name not in weights]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_SUMMARY = re.compile(r"## Exception summary\s*\n(.*?)(?:\n\s*\n|\Z)", re.DOTALL)
_CALL = re.compile(r"The following call raised this error:\s*\n\s*(File .*?)\n\s*(\S.*?)\n", re.DOTALL)
#: torch's generic advice inside an error (how to get more logs, which API to call instead), not the cause.
_TORCH_ADVICE = re.compile(r"For more information, run with TORCH_LOGS=\S+\.?|If you're using [^.]*\.")
_CONSTRAINT = re.compile(r"(Constraints violated \([^)]*\)!?[^\n]*(?:\n\s*- [^\n]+)*)")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return _ANSI.sub("", text)


def export_error_text(err: BaseException) -> str:
    """The exporter's failure as one line for a row: the root cause first, then where, then the rest.

    ``torch.onnx.export`` wraps the real error in advice ("This is step 1/3 ...") with colour codes;
    the cause sits in its "Exception summary", in the chained exception, or in the log lines the
    exporter printed ("Constraints violated (batch)! ... Not all values of batch ..."): all are searched.
    """
    texts = [str(err), *getattr(err, "__notes__", [])]
    cause: BaseException | None = err
    while cause is not None and cause.__cause__ is not None and cause.__cause__ is not cause:
        cause = cause.__cause__
        texts.append(f"{type(cause).__name__}: {cause}")
    full = strip_ansi("\n".join(texts))
    parts: list[str] = []
    constraint = _CONSTRAINT.search(full)
    if constraint:
        parts.append(_one_line(constraint.group(1)))
    summary = _SUMMARY.search(full)
    if summary:
        parts.append(_one_line(re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", summary.group(1))))
    elif not parts:
        root = cause if cause is not None else err
        parts.append(_one_line(f"{type(root).__name__}: {strip_ansi(str(root)).strip().splitlines()[0] if str(root).strip() else ''}"))
    call = _CALL.search(full)
    if call:
        parts.append(f"at {_one_line(call.group(1))}: {call.group(2).strip()}")
    text = "; ".join(dict.fromkeys(p for p in parts if p))
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(_TORCH_ADVICE.sub("", text).split())


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
def _quiet() -> Iterator[io.StringIO]:
    """torch.onnx's dynamo exporter prints progress lines, warnings and (on failure) the root cause to
    stdout/stderr; keep the terminal clean and hand the text back for the error message."""
    buf = io.StringIO()
    level = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        logging.getLogger("torch.onnx").setLevel(level)
