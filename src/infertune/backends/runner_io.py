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


def feeds(names: Sequence[str], batch: Any) -> dict[str, np.ndarray]:
    """``{input name: contiguous float32 array}`` for one batch.

    ``batch`` is one array (a model with one input), a sequence of arrays in the graph's input order,
    or a mapping by input name. A count or name that does not fit the graph raises ValueError naming
    the graph's inputs.
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
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in zip(names, arrays)}


def named_outputs(names: Sequence[str], arrays: Sequence[Any]) -> np.ndarray | dict[str, np.ndarray]:
    """Host float32 copies: the array itself for one output, else ``{name: array}`` in graph order."""
    copies = [np.array(a, dtype=np.float32, copy=True) for a in arrays]
    if len(copies) == 1:
        return copies[0]
    return dict(zip(names, copies))


def reference_output_names(model: Any, example: np.ndarray) -> list[str]:
    """The names the FP32 reference gives ``model``'s outputs (``output``; ``output0``...; dict keys)."""
    import torch

    from infertune.verify import output_list

    with torch.inference_mode():
        return [name for name, _ in output_list(model(torch.from_numpy(np.ascontiguousarray(example))))]
