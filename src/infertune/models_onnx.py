"""An ONNX file as the model (``--model path/to/model.onnx``): its inputs come from the file, and the
reference is ONNX Runtime in fp32 on the CPU with every graph optimization off.

Why that reference: with no torch module there is no eager run to compare with, and the closest thing
to "the model as written" is the graph executed node by node, unfused (``ORT_DISABLE_ALL``), in fp32
on the CPU provider. The rungs that start from ONNX (ONNX Runtime, OpenVINO, TensorRT) are then
judged against it; torch rungs cannot take a file and say so in their rows.

Input names, dtypes and shapes are read from the graph (reading the protobuf runs no code). A
dimension the file leaves free takes, in this order: the batch sizes (the first dimension),
``model.input_shape`` (a single input of the same rank), the size of a same-named dimension already
resolved, ``model.sequence_length`` (an integer ``[batch, sequence]`` input, e.g. token ids); any other
free dimension is a clear error asking for ``model.inputs``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infertune.errors import ConfigError, ModelError
from infertune.inputs import FLOAT_DTYPES, InputSpec

#: what every row of an ONNX model says its outputs were compared with.
REFERENCE = "onnxruntime:fp32 cpu, graph optimizations off"
#: ONNX TensorProto element types infertune can feed -> numpy dtype names.
ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool"}


@dataclass(frozen=True)
class OnnxInput:
    """One graph input: its name, dimensions (an int when fixed, the symbolic name or None when free), dtype."""

    name: str
    dims: tuple[int | str | None, ...]
    dtype: str

    def shown(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


@dataclass
class OnnxModel:
    """An ONNX file standing where a torch module stands for other models; backends that start from
    ONNX use ``path``, the reference runs ``forward``. Picklable (the session is made on first use)."""

    path: Path
    inputs: tuple[OnnxInput, ...]
    output_names: tuple[str, ...]
    threads: int = 1
    _session: Any = field(default=None, repr=False, compare=False)

    @property
    def onnx_path(self) -> Path:
        """The file backends that start from ONNX read (``backends.onnx_export.export_onnx`` returns it)."""
        return self.path

    def digest(self) -> str:
        """A short hash of the file: part of every artifact cache key."""
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]

    def forward(self, feeds: dict[str, np.ndarray]) -> Any:
        """The reference run: one array, or {output name: array} when the graph has several outputs."""
        outputs = self._reference_session().run(None, feeds)
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(self.output_names, outputs))

    def _reference_session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            so.intra_op_num_threads = self.threads
            so.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}


def is_onnx_path(name: str) -> bool:
    return name.lower().endswith(".onnx")


def read_onnx(name: str) -> OnnxModel:
    """The file's inputs and outputs (weights stay on disk); a missing or unreadable file is a ModelError."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {name} does not exist: give the path of an .onnx file")
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # noqa: BLE001 - DecodeError, OSError...: a damaged or foreign file
        raise ModelError(f"{name} is not a readable ONNX model ({type(err).__name__}: {str(err)[:120]}); "
                         "export it with torch.onnx.export or check the file is complete") from None
    initializers = {init.name for init in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:  # old exporters list the weights as inputs too
            continue
        tensor = value.type.tensor_type
        dtype = ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise ModelError(f"{name}: input {value.name!r} has ONNX element type {tensor.elem_type}; infertune "
                             f"feeds {', '.join(ONNX_DTYPES.values())}")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        inputs.append(OnnxInput(value.name, dims, dtype))
    if not inputs:
        raise ModelError(f"{name} has no inputs to feed")
    return OnnxModel(path=path.resolve(), inputs=tuple(inputs), output_names=tuple(o.name for o in graph.output))


def onnx_input_specs(model: OnnxModel, input_shape: Sequence[int] | None, inputs_cfg: Sequence[Any] | None,
                     sequence_length: int, batch_sizes: Sequence[int]) -> tuple[tuple[InputSpec, ...], list[str]]:
    """The file's inputs as specs (free dimensions resolved, see the module docstring) and notes for the user.

    ``input_shape`` is ``model.input_shape`` when the user set it (None otherwise). ``inputs_cfg``
    (``model.inputs``) may restate the inputs, to set value ranges or free dimensions; its names, dtypes
    and fixed dimensions must agree with the file's.
    """
    name = model.path.name
    for onnx_input in model.inputs:
        if not onnx_input.dims:
            raise ModelError(f"{name}: input {onnx_input.name!r} is a scalar; infertune needs a batch dimension first")
        first = onnx_input.dims[0]
        if isinstance(first, int) and first > 0 and any(b != first for b in batch_sizes):
            raise ConfigError(f"{name} fixes the batch of input {onnx_input.name!r} at {first} "
                              f"(shape {onnx_input.shown()}): set benchmark.batch_sizes to [{first}] (--batch-size "
                              f"{first}) or export the model with a dynamic batch axis")
    if inputs_cfg:
        return _specs_from_config(model, inputs_cfg), []
    notes: list[str] = []
    sizes: dict[str, int] = {}
    specs = []
    single = len(model.inputs) == 1
    for onnx_input in model.inputs:
        sample = []
        for pos, dim in enumerate(onnx_input.dims[1:], start=1):
            if isinstance(dim, int) and dim > 0:
                sample.append(dim)
                continue
            size = _free_dim(onnx_input, pos, dim, single, input_shape, sizes, sequence_length, name)
            if isinstance(dim, str):
                sizes.setdefault(dim, size)
            sample.append(size)
        if single and input_shape is not None and all(isinstance(d, int) and d > 0 for d in onnx_input.dims[1:]) \
                and list(input_shape[1:]) != sample:
            notes.append(f"model.input_shape {list(input_shape)} is not used: {name} fixes input "
                         f"{onnx_input.name!r} at {onnx_input.shown()}")
        if onnx_input.dtype not in FLOAT_DTYPES:
            notes.append(f"{name}: input {onnx_input.name!r} ({onnx_input.dtype}) gets synthetic values 0 or 1; "
                         "give its range in model.inputs (token ids: [0, vocab_size)) for realistic ones")
        specs.append(InputSpec(onnx_input.name, tuple(sample), onnx_input.dtype))
    return tuple(specs), notes


def _free_dim(onnx_input: OnnxInput, pos: int, dim: str | int | None, single: bool, input_shape: Sequence[int],
              sizes: dict[str, int], sequence_length: int, name: str) -> int:
    """The size of a dimension the file leaves free (see the module docstring for the order)."""
    if single and input_shape is not None and len(input_shape) == len(onnx_input.dims):
        return int(input_shape[pos])
    if isinstance(dim, str) and dim in sizes:
        return sizes[dim]
    if onnx_input.dtype not in FLOAT_DTYPES and len(onnx_input.dims) == 2:
        return sequence_length
    label = f"{dim!r}" if dim else "a free dimension"
    fix = (f"--input-shape with {len(onnx_input.dims)} numbers (batch first)" if single
           else "model.inputs with each input's shape")
    raise ConfigError(f"{name}: input {onnx_input.name!r} {onnx_input.shown()} has {label} at position {pos} that "
                      f"infertune cannot size: set {fix}")


def _specs_from_config(model: OnnxModel, inputs_cfg: Sequence[Any]) -> tuple[InputSpec, ...]:
    """``model.inputs`` checked against the file: same names, dtypes and fixed dimensions; the file's order."""
    name = model.path.name
    given = {i.name: i for i in inputs_cfg}
    expected = [i.name for i in model.inputs]
    if set(given) != set(expected):
        raise ConfigError(f"model.inputs names {', '.join(given)}, but {name} takes {', '.join(expected)}: "
                          "name each of the file's inputs once")
    specs = []
    for onnx_input in model.inputs:
        cfg = given[onnx_input.name]
        if cfg.dtype != onnx_input.dtype:
            raise ConfigError(f"model.inputs {cfg.name!r}: dtype {cfg.dtype}, but {name} takes {onnx_input.dtype}")
        shape = list(cfg.shape)
        fits = len(shape) == len(onnx_input.dims) and all(
            not (isinstance(d, int) and d > 0) or d == s for d, s in zip(onnx_input.dims[1:], shape[1:]))
        if not fits:
            raise ConfigError(f"model.inputs {cfg.name!r}: shape {shape} does not fit {name}'s {onnx_input.shown()}")
        low, high = (cfg.range if cfg.range is not None else (None, None))
        specs.append(InputSpec(cfg.name, tuple(shape[1:]), cfg.dtype, low, high))
    return tuple(specs)
