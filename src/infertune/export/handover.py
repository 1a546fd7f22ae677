"""Per backend: which cached files are the hand-over, in which format, for which runtime, run with which settings.

The export side of each backend in one table (``HANDOVERS``), so no other module switches on a
backend's name. The settings recorded here come from the backends' own constants and functions
(``openvino.compile_config``, ORT's session defaults), so the export runs as the benchmark ran.

ONNX Runtime hands over the *portable* ONNX file its session was optimized from (the export, or its
INT8/fp16 form), not the saved level-ALL graph: that graph can hold layouts specific to the CPU it
was optimized on (NCHWc blocks sized for AVX-512...), which another machine may run wrongly. The
session options the benchmark used (``ORT_ENABLE_ALL`` at load time) are recorded instead; on the
benchmark's machine that is exactly what a cache miss measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infertune.export.artifact import (
    ArtifactError,
    CachedFile,
    cache_manifest,
    cached_files,
    entry_dir,
)
from infertune.results import ResultRow

#: why a backend has nothing to hand over (the selection passes over it, and says so when it was faster).
NO_ARTIFACT = {
    "pytorch": "eager PyTorch converts nothing: its deployable form is your model code plus its weights, which "
               "you already have (a TorchScript or state_dict written now would be a file that was never measured "
               "or verified; torchscript:* and aoti:* are the measured torch artifacts)",
    "torch_compile": "torch.compile compiles inside the process that runs it and leaves no deployable file; its "
                     "ahead-of-time form is aoti:<precision> (an AOTInductor .pt2), which can be exported",
    "null": "the null backend measures the harness and does not run the model",
}


@dataclass(frozen=True)
class HandOver:
    """How one backend's cached artifact becomes an export."""

    format: str
    #: the runtime's import name, the pip distributions that provide it, and how to install it.
    module: str
    distributions: tuple[str, ...]
    install: str
    needs_torch: bool
    #: (the row's artifact path) -> the files to ship, the entry point first.
    files: Callable[[Path], list[CachedFile]]
    #: (row, threads) -> ``RuntimeSpec.options``: the settings the benchmark ran it with.
    options: Callable[[ResultRow, int], dict[str, Any]]
    #: row -> the batch sizes the artifact accepts (None = any).
    batch_sizes: Callable[[ResultRow], list[int] | None]
    #: README lines that load it with the runtime alone ({path}, {input} and {precision_hint} are filled in).
    snippet: str


def handover_for(row: ResultRow) -> HandOver:
    """The hand-over of ``row``'s backend; SelectionError-style message when it has none."""
    reason = no_artifact(row)
    if reason:
        raise ArtifactError(f"{row.variant} cannot be exported: {reason}")
    return HANDOVERS[row.backend]


def no_artifact(row: ResultRow) -> str:
    """"" when ``row`` can be handed over, else why not."""
    if row.backend in NO_ARTIFACT:
        return NO_ARTIFACT[row.backend]
    if row.backend not in HANDOVERS:
        return f"no hand-over is defined for backend {row.backend!r} (exportable: {', '.join(HANDOVERS)})"
    if not row.artifact:
        return ("its row names no artifact (the run predates artifact paths in rows, or the cell failed before "
                "converting); run the variant again and export that run")
    return ""


# ---------------------------------------------------------------- files


def _single_file(artifact: Path) -> list[CachedFile]:
    """The artifact is one file of its cache entry (TorchScript .pt, AOTInductor .pt2, TensorRT .engine)."""
    return cached_files(entry_dir(artifact), [artifact.relative_to(entry_dir(artifact)).as_posix()])


def _whole_entry(artifact: Path) -> list[CachedFile]:
    """The artifact is a cache entry directory (OpenVINO: model.xml + model.bin); the .xml goes first."""
    files = cached_files(entry_dir(artifact))
    return sorted(files, key=lambda f: (f.export_name.rsplit(".", 1)[-1] != "xml", f.export_name))


def _ort_source(artifact: Path) -> list[CachedFile]:
    """The ONNX file the ORT session was optimized from, found through the ORT entry's recorded ``source``.

    ``source`` is the export's entry key, ``<export key>:int8:<int8 entry key>`` or ``<export key>:fp16``
    (``backends.onnxruntime._source_model``); the fp16 entry is the ``onnx-fp16`` one built from that
    export by the same onnxruntime (read from the entries' ``key.json``).
    """
    entry = entry_dir(artifact)
    source = str(cache_manifest(entry).get("source", ""))
    model_root = entry.parent.parent
    parts = source.split(":")
    if len(parts) == 1 and parts[0]:
        return _onnx_files(model_root / "onnx" / parts[0])
    if len(parts) == 3 and parts[1] == "int8":
        return _onnx_files(model_root / "onnx-int8" / parts[2])
    if len(parts) == 2 and parts[1] == "fp16":
        ort_version = _key(entry).get("ort")
        for candidate in sorted((model_root / "onnx-fp16").glob("*/key.json")):
            key = _key(candidate.parent)
            if key.get("onnx") == parts[0] and key.get("ort") == ort_version:
                return _onnx_files(candidate.parent)
    raise ArtifactError(f"cannot find the ONNX model that {entry} was optimized from (source {source!r}); "
                        "run the variant again to rebuild its cache entries")


def _onnx_files(entry: Path) -> list[CachedFile]:
    if not entry.is_dir():
        raise ArtifactError(f"the cache entry {entry} is gone; run the variant again to rebuild it")
    files = [f for f in cached_files(entry) if f.export_name.endswith(".onnx")]
    if len(files) != 1:
        raise ArtifactError(f"expected one .onnx file in {entry}, found {len(files)}; run the variant again")
    return files


def _key(entry: Path) -> dict[str, Any]:
    try:
        doc = json.loads((entry / "key.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


# ---------------------------------------------------------------- settings


def _options(row: ResultRow) -> dict[str, str]:
    from infertune.variants import parse_variant

    return parse_variant(row.variant).option_dict


def _ort_options(row: ResultRow, threads: int) -> dict[str, Any]:
    from infertune.backends.onnxruntime import CPU_EP, CUDA_EP, DEFAULT_SPINNING

    options = _options(row)
    spin = "spin" in options or (DEFAULT_SPINNING and "nospin" not in options)
    return {
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
        "session_config": {"session.intra_op.allow_spinning": "1" if spin else "0"},
        "providers": [CUDA_EP, CPU_EP] if row.device == "cuda" else [CPU_EP],
    }


def _openvino_options(row: ResultRow, threads: int) -> dict[str, Any]:
    from infertune.backends.openvino import compile_config, parse_options

    opts = parse_options(_options(row), row.precision)
    return {"device": "CPU", "compile_config": compile_config(row.precision, opts.hint, threads)}


def _torch_options(row: ResultRow, threads: int) -> dict[str, Any]:
    from infertune.backends.torch_common import TORCH_DTYPES

    options = _options(row)
    return {
        "torch_dtype": TORCH_DTYPES[row.precision],
        "channels_last": "channels_last" in options,
        "cuda_graph": "cuda_graph" in options,
        "optimize_for_inference": row.backend == "torchscript" and row.device == "cpu",
        "threads": threads,
    }


def _no_options(row: ResultRow, threads: int) -> dict[str, Any]:
    return {}


def _any_batch(row: ResultRow) -> list[int] | None:
    return None


def _measured_batch(row: ResultRow) -> list[int] | None:
    return [row.batch_size]


def _aoti_batch(row: ResultRow) -> list[int] | None:
    return None if "dynamic" in _options(row) else [row.batch_size]


_ORT_SNIPPET = """\
import onnxruntime as ort
session = ort.InferenceSession("{path}", providers=["CPUExecutionProvider"])
outputs = session.run(None, {{"{input}": batch}})   # batch: float32 numpy array, see "Input" below"""

_OPENVINO_SNIPPET = """\
import openvino as ov
compiled = ov.Core().compile_model("{path}", "CPU", {{"INFERENCE_PRECISION_HINT": "{precision_hint}"}})
outputs = compiled(batch)                         # batch: float32 numpy array, see "Input" below"""

_TORCHSCRIPT_SNIPPET = """\
import torch
module = torch.jit.optimize_for_inference(torch.jit.load("{path}").eval())   # CUDA: skip optimize_for_inference
outputs = module(torch.from_numpy(batch))         # batch: float32 numpy array, see "Input" below"""

_AOTI_SNIPPET = """\
import torch
package = torch._inductor.aoti_load_package("{path}")   # the same torch version as in infertune.json
outputs = package(torch.from_numpy(batch))        # batch: float32 numpy array, see "Input" below"""

_TENSORRT_SNIPPET = """\
import tensorrt as trt
engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(open("{path}", "rb").read())
# bind CUDA buffers for "{input}" and the output, then context.execute_async_v3 (infertune.load does this)"""

HANDOVERS: dict[str, HandOver] = {
    "onnxruntime": HandOver("onnx", "onnxruntime", ("onnxruntime", "onnxruntime-gpu"),
                            "pip install onnxruntime (CUDA: pip install onnxruntime-gpu)", False,
                            _ort_source, _ort_options, _any_batch, _ORT_SNIPPET),
    "openvino": HandOver("openvino-ir", "openvino", ("openvino",), "pip install openvino", False,
                         _whole_entry, _openvino_options, _any_batch, _OPENVINO_SNIPPET),
    "torchscript": HandOver("torchscript", "torch", ("torch",), "pip install torch", True,
                            _single_file, _torch_options, _measured_batch, _TORCHSCRIPT_SNIPPET),
    "aoti": HandOver("aoti-pt2", "torch", ("torch",), "pip install torch (the version in infertune.json)", True,
                     _single_file, _torch_options, _aoti_batch, _AOTI_SNIPPET),
    "tensorrt": HandOver("tensorrt-engine", "tensorrt", ("tensorrt",),
                         "pip install tensorrt torch (an NVIDIA GPU of the model in infertune.json)", True,
                         _single_file, _no_options, _measured_batch, _TENSORRT_SNIPPET),
}
