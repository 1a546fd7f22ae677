"""The verification file an export ships: the run's verification inputs and the FP32 reference outputs on them.

Written at export by the ``reference`` worker and read by ``ExportedModel.check`` (numpy only), so
the same check that passed at export can be repeated on any machine the folder is copied to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Named = list[tuple[str, np.ndarray]]


def write_verification(path: Path, inputs: np.ndarray, reference: Named) -> None:
    arrays = {f"reference_{i}": arr for i, (_, arr) in enumerate(reference)}
    np.savez(path, inputs=inputs, output_names=np.array([name for name, _ in reference]), **arrays)


def read_verification(path: Path) -> tuple[np.ndarray, Named]:
    """(inputs, the FP32 reference outputs by name)."""
    with np.load(path) as f:
        names = [str(n) for n in f["output_names"]]
        return f["inputs"], [(name, f[f"reference_{i}"]) for i, name in enumerate(names)]
