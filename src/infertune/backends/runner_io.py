"""A runner's inputs and outputs by the runtime's own tensor names, so every input is fed and every output checked.

ONNX Runtime, OpenVINO and TensorRT all name their graph's inputs and outputs. Runners read those
names from the session, compiled model or engine (never from a constant), feed a batch through
``feeds`` and hand outputs to verification through ``named_outputs``: one array for a one-output
model, a ``{name: array}`` dict (in the graph's order) otherwise, which is what ``verify.compare``
matches against the reference by name and order. ``reference_output_names`` gives the names the
FP32 reference uses (``verify.output_list``), so converted graphs can carry the same names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def feeds(names: Sequence[str], batch: Any, dtypes: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """``{input name: contiguous array}`` for one batch, each in its graph input's dtype.

    ``batch`` is one array (a model with one input), a sequence of arrays in the graph's input order,
    or a mapping by input name. ``dtypes`` are the graph inputs' numpy dtypes, in order; without them a
    float input is fed as float32 and an integer or bool input (token ids, masks) as it is. A count or
    name that does not fit the graph raises ValueError naming the graph's inputs.
    """
    if isinstance(batch, Mapping):
        unknown = sorted(set(batch) - set(names))
        if unknown or len(batch) != len(names):
            raise ValueError(f"the model's inputs are {list(names)}; got {sorted(batch)}")
        arrays = [batch[name] for name in names]
    elif isinstance(batch, (list, tuple)):
        arrays = list(batch)
    else:
        arrays = [batch]
    if len(arrays) != len(names):
        raise ValueError(f"the model has {len(names)} input(s) {list(names)}; got {len(arrays)} array(s)")
    wanted = list(dtypes) if dtypes is not None else [None] * len(arrays)
    return {name: np.ascontiguousarray(a, dtype=_dtype(a, dtype)) for name, a, dtype in zip(names, arrays, wanted)}


def _dtype(array: Any, wanted: Any) -> Any:
    if wanted is not None:
        return wanted
    return np.float32 if np.issubdtype(np.asarray(array).dtype, np.floating) else np.asarray(array).dtype


#: ONNX Runtime's type strings (``NodeArg.type``) -> numpy dtypes.
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def named_outputs(names: Sequence[str], arrays: Sequence[Any]) -> np.ndarray | dict[str, np.ndarray]:
    """Host float32 copies: the array itself for one output, else ``{name: array}`` in graph order."""
    copies = [np.array(a, dtype=np.float32, copy=True) for a in arrays]
    if len(copies) == 1:
        return copies[0]
    return dict(zip(names, copies))


def reference_output_names(model: Any, example: Any) -> list[str]:
    """The names the FP32 reference gives ``model``'s outputs (``output``; ``output0``...; dict keys);
    ``example`` is one array or {input name: array}."""
    import torch

    from infertune.backends.torch_common import call, to_tensors
    from infertune.verify import output_list

    with torch.inference_mode():
        return [name for name, _ in output_list(call(model, to_tensors(example, "cpu", torch.float32)))]
