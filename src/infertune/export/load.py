"""Open an export with only its runtime: ``infertune.load(DIR)`` returns a callable, numpy in, numpy out.

Loading checks every shipped file against the sha256 in ``infertune.json``, warns when the installed
runtime is not the version the export was measured with, and warns when this CPU lacks an
instruction set the measured speed relied on (VNNI for INT8...). It then opens the artifact with the
settings the benchmark used (ORT's graph optimizations and threading, OpenVINO's explicit precision
hint so an fp32 model is not silently run in bf16, TorchScript's CPU rewrite).

This module imports no runtime and no torch at import time, and an ONNX or OpenVINO export never
imports torch or infertune's model code: only numpy, the runtime, and infertune's numpy-only
``verify`` (for ``check``) and standard-library ``env`` (ISA flags) modules.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infertune.cache import file_sha256
from infertune.errors import InfertuneError
from infertune.export.manifest import (
    ExportManifest,
    RuntimeSpec,
    read_manifest,
)

Outputs = list[tuple[str, np.ndarray]]


class ExportIntegrityError(InfertuneError):
    """A shipped file is missing or differs from the hash recorded at export."""


@dataclass
class _Session:
    """An opened artifact: its input and output names and a function from one batch to named outputs."""

    input_name: str
    output_names: list[str]
    run: Callable[[np.ndarray], Outputs]


class ExportedModel:
    """A loaded export. ``model(batch)`` -> the output array (a {name: array} dict for several outputs).

    ``batch`` is a float32 array (or a torch tensor, which gives torch tensors back on its device) shaped like
    ``manifest.input.shape``; ``check()`` re-verifies the export on the verification set it ships with.
    """

    def __init__(self, folder: Path, manifest: ExportManifest, session: _Session) -> None:
        self.folder = folder
        self.manifest = manifest
        self._session = session

    @property
    def input_name(self) -> str:
        return self._session.input_name

    @property
    def output_names(self) -> list[str]:
        return list(self._session.output_names)

    @property
    def batch_sizes(self) -> list[int] | None:
        """The batch sizes this artifact accepts; None = any."""
        return self.manifest.input.batch_sizes

    def __call__(self, batch: Any) -> Any:
        as_torch = type(batch).__module__.split(".")[0] == "torch"
        array = batch.detach().float().cpu().numpy() if as_torch else np.asarray(batch, dtype=np.float32)
        outputs = self.run(np.ascontiguousarray(array, dtype=np.float32))
        if as_torch:
            import torch

            outputs = [(name, torch.from_numpy(arr).to(batch.device)) for name, arr in outputs]
        return outputs[0][1] if len(outputs) == 1 else dict(outputs)

    def run(self, batch: np.ndarray) -> Outputs:
        """Named float32 outputs of one batch (shape and batch size checked first)."""
        self._check_input(batch)
        return [(name, np.asarray(arr, dtype=np.float32)) for name, arr in self._session.run(batch)]

    def check(self) -> Any:
        """Run the shipped verification inputs and compare with the shipped FP32 reference outputs, at the
        precision's tolerance; returns ``infertune.verify.Fidelity`` (``.ok``, ``.failures``, metrics)."""
        from infertune.export.verification import read_verification
        from infertune.verify import Tolerance, compare

        v = self.manifest.verification
        inputs, reference = read_verification(self.folder / v.file)
        outputs = run_in_batches(self.run, inputs, v.batch_size)
        return compare(_one_or_dict(outputs), _one_or_dict(reference), Tolerance(**v.tolerance))

    def _check_input(self, batch: np.ndarray) -> None:
        spec = self.manifest.input
        if batch.ndim != len(spec.shape) or list(batch.shape[1:]) != list(spec.shape[1:]):
            expected = ", ".join("N" if d is None else str(d) for d in spec.shape)
            raise InfertuneError(f"this export takes {spec.dtype} {spec.layout} batches shaped ({expected}); "
                                 f"got {tuple(batch.shape)}")
        if spec.batch_sizes is not None and batch.shape[0] not in spec.batch_sizes:
            raise InfertuneError(
                f"this {self.manifest.runtime.format} artifact accepts batch size {_sizes(spec.batch_sizes)} only "
                f"(it was built for that shape), got {batch.shape[0]}: split or pad the batch, or export the "
                "variant measured at the batch size you need")


def load(folder: Path | str, threads: int | None = None, check_hashes: bool = True) -> ExportedModel:
    """Open an export folder written by ``infertune export``.

    Args:
        folder: the folder holding ``infertune.json``.
        threads: intra-op threads for the runtime; None = the runtime's default (the number the
            export was measured with is ``manifest.environment["threads"]``).
        check_hashes: verify every shipped file against its recorded sha256 first (on by default).

    Raises:
        InfertuneError: not an export, a file changed since export (``ExportIntegrityError``), or the
            runtime is not installed (the message says what to install).
    """
    root = Path(folder)
    manifest = read_manifest(root)
    if check_hashes:
        verify_files(root, manifest)
    module = import_runtime(manifest.runtime)
    warn_about_machine(manifest)
    opener = _OPENERS.get(manifest.runtime.format)
    if opener is None:
        raise InfertuneError(f"{root}: unknown artifact format {manifest.runtime.format!r}; "
                             f"this infertune opens {', '.join(sorted(_OPENERS))}")
    return ExportedModel(root, manifest, opener(module, root, manifest, threads))


def verify_files(root: Path, manifest: ExportManifest) -> None:
    """Raise ExportIntegrityError when a shipped file is missing or its sha256 is not the recorded one."""
    for record in manifest.files:
        path = root / record.name
        if not path.is_file():
            raise ExportIntegrityError(f"{path} is missing: the export is incomplete; copy the whole folder again "
                                       "or export it again")
        digest = file_sha256(path)
        if digest != record.sha256:
            raise ExportIntegrityError(
                f"{path} does not match the sha256 recorded in infertune.json (recorded {record.sha256[:16]}..., "
                f"found {digest[:16]}...): it was changed or damaged after export and is not the verified "
                "artifact; copy the folder again or export it again")


def import_runtime(runtime: RuntimeSpec) -> Any:
    """Import the runtime; a missing one says what to install, another version than measured is a warning."""
    try:
        module = importlib.import_module(runtime.module)
    except ImportError as err:
        raise InfertuneError(f"this {runtime.format} export runs on {runtime.module}, which cannot be imported "
                             f"here ({err}); install it: {runtime.install}") from None
    installed = _installed_version(runtime.distributions)
    if installed is not None and installed != runtime.version:
        warnings.warn(f"{runtime.module} {installed} is installed; the export was measured and verified with "
                      f"{runtime.version}: outputs and speed may differ (model.check() re-verifies it here)",
                      RuntimeWarning, stacklevel=3)
    return module


def warn_about_machine(manifest: ExportManifest) -> None:
    """Warn for each instruction set the measured speed relied on that this CPU lacks."""
    if manifest.runtime.device != "cpu" or not manifest.speed_depends_on:
        return
    from infertune.env import cpu_flags

    flags = cpu_flags()
    if not flags:  # not Linux: nothing to compare with
        return
    for need in manifest.speed_depends_on:
        if not flags & set(need.any_of):
            warnings.warn(f"this CPU lacks {need.what}, which the measured speed of {manifest.variant} relied on: "
                          "expect it to run slower than the numbers in infertune.json", RuntimeWarning, stacklevel=3)


def run_in_batches(run: Callable[[np.ndarray], Outputs], inputs: np.ndarray, batch: int) -> Outputs:
    """Run ``inputs`` in batches of exactly ``batch`` (the last wraps around to the first samples, so a
    fixed-shape artifact sees its own shape); only the real samples' outputs are kept."""
    n = len(inputs)
    chunks: list[Outputs] = []
    for start in range(0, n, batch):
        idx = [(start + i) % n for i in range(batch)]
        chunks.append([(name, arr[: min(batch, n - start)]) for name, arr in run(inputs[idx])])
    return [(name, np.concatenate([c[i][1] for c in chunks])) for i, (name, _) in enumerate(chunks[0])]


def _one_or_dict(outputs: Outputs) -> Any:
    return outputs[0][1] if len(outputs) == 1 else dict(outputs)


def _sizes(sizes: list[int]) -> str:
    return " or ".join(str(s) for s in sizes)


def _installed_version(distributions: list[str]) -> str | None:
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


# ---------------------------------------------------------------- one opener per format


def _open_onnx(ort: Any, root: Path, m: ExportManifest, threads: int | None) -> _Session:
    """An ONNX Runtime session with the benchmark's session options (graph level, threading, spinning)."""
    opts = m.runtime.options
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opts.get("graph_optimization_level",
                                                                              "ORT_ENABLE_ALL"))
    so.intra_op_num_threads = int(threads or 0)
    so.inter_op_num_threads = int(opts.get("inter_op_num_threads", 0))
    so.execution_mode = getattr(ort.ExecutionMode, opts.get("execution_mode", "ORT_SEQUENTIAL"))
    for key, value in opts.get("session_config", {}).items():
        so.add_session_config_entry(key, str(value))
    available = set(ort.get_available_providers())
    wanted = list(opts.get("providers", ["CPUExecutionProvider"]))
    providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    if providers[0] != wanted[0]:
        warnings.warn(f"the export was measured with {wanted[0]}, which this onnxruntime lacks; running on "
                      f"{providers[0]}", RuntimeWarning, stacklevel=3)
    session = ort.InferenceSession(str(root / m.entry_point), so, providers=providers)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def run(batch: np.ndarray) -> Outputs:
        return list(zip(output_names, session.run(None, {input_name: batch})))

    return _Session(input_name, output_names, run)


def _open_openvino(ov: Any, root: Path, m: ExportManifest, threads: int | None) -> _Session:
    """The IR compiled per batch size (static shapes, as measured) with the benchmark's compile config."""
    opts = m.runtime.options
    core = ov.Core()
    model = core.read_model(str(root / m.entry_point))
    config = dict(opts.get("compile_config", {}))
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    else:
        config.pop("INFERENCE_NUM_THREADS", None)
    device = opts.get("device", "CPU")
    output_names = [_port_name(port, i) for i, port in enumerate(model.outputs)]
    requests: dict[int, Any] = {}

    def run(batch: np.ndarray) -> Outputs:
        n = int(batch.shape[0])
        if n not in requests:
            model.reshape([n, *batch.shape[1:]])
            requests[n] = core.compile_model(model, device, config).create_infer_request()
        result = requests[n].infer({0: batch})
        return [(name, np.array(result[i], copy=True)) for i, name in enumerate(output_names)]

    return _Session(_port_name(model.inputs[0], 0, "input"), output_names, run)


def _port_name(port: Any, index: int, prefix: str = "output") -> str:
    try:
        return str(port.get_any_name())
    except RuntimeError:  # an unnamed port
        return f"{prefix}{index}"


def _open_torchscript(torch: Any, root: Path, m: ExportManifest, threads: int | None) -> _Session:
    """``torch.jit.load``; on the CPU, ``optimize_for_inference`` again (as measured: its graph cannot be saved)."""
    device = m.runtime.device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit warns that it is deprecated on every call
        module = torch.jit.load(str(root / m.entry_point), map_location=device).eval()
        if device == "cpu" and m.runtime.options.get("optimize_for_inference"):
            module = torch.jit.optimize_for_inference(module)
    return _torch_session(torch, module, m, threads)


def _open_aoti(torch: Any, root: Path, m: ExportManifest, threads: int | None) -> _Session:
    """An AOTInductor package, loaded as the benchmark loaded it."""
    return _torch_session(torch, torch._inductor.aoti_load_package(str(root / m.entry_point)), m, threads)


def _torch_session(torch: Any, fn: Any, m: ExportManifest, threads: int | None) -> _Session:
    """Run a torch callable as the benchmark did: its dtype and memory format, TF32 only for ``tf32``, and on
    CUDA one captured graph per batch shape when it was measured with ``cuda_graph``. (TF32 and the thread
    count are process-wide torch settings.)"""
    from infertune.verify import output_list

    if threads:
        torch.set_num_threads(int(threads))
    opts, device = m.runtime.options, m.runtime.device
    dtype = getattr(torch, opts.get("torch_dtype", "float32"))
    channels_last = bool(opts.get("channels_last"))
    if device == "cuda":  # torch's default lets cuDNN use TF32 even for fp32: not what was verified
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = m.precision == "tf32"
    graphs: dict[tuple[int, ...], Any] = {}

    def call(t: Any) -> Any:
        if not (opts.get("cuda_graph") and device == "cuda"):
            return fn(t)
        from infertune.backends.torch_common import CudaGraphCall

        if tuple(t.shape) not in graphs:
            graphs[tuple(t.shape)] = CudaGraphCall(fn, t)
        return graphs[tuple(t.shape)](t)

    def run(batch: np.ndarray) -> Outputs:
        t = torch.from_numpy(batch).to(device, dtype)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return output_list(call(t))  # copies to host: a graph's static output is not kept

    # a torch module's outputs are named as the FP32 reference's are (``verify.output_list``)
    return _Session(m.input.name, list(m.verification.output_names), run)


def _open_tensorrt(trt: Any, root: Path, m: ExportManifest, threads: int | None) -> _Session:
    """The serialized engine, run by the benchmark's own runner (torch CUDA buffers, one fixed shape)."""
    from infertune.backends.onnx_export import OUTPUT_NAME
    from infertune.backends.tensorrt import TensorRTRunner

    batch = (m.input.batch_sizes or [1])[0]
    runner = TensorRTRunner((root / m.entry_point).read_bytes(), (batch, *m.input.shape[1:]))
    output_name = OUTPUT_NAME

    def run(inputs: np.ndarray) -> Outputs:
        out = runner(runner.to_native(inputs))
        runner.synchronize()
        return [(output_name, runner.to_numpy(out))]

    return _Session(m.input.name, [output_name], run)


_OPENERS: dict[str, Callable[[Any, Path, ExportManifest, int | None], _Session]] = {
    "onnx": _open_onnx,
    "openvino-ir": _open_openvino,
    "torchscript": _open_torchscript,
    "aoti-pt2": _open_aoti,
    "tensorrt-engine": _open_tensorrt,
}
