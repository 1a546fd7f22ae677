"""Worker: load a freshly written export in a new process, as a user would, and re-verify it on its shipped set.

Run as ``python -m infertune.export.roundtrip DIR OUT_JSON [--block-torch]`` by ``build``. With
``--block-torch`` (ONNX and OpenVINO exports) importing torch fails in this process, which proves the
export loads and runs with its runtime alone. Writes the fidelity figures, the input name and the
outputs' names and per-sample shapes.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--block-torch" in sys.argv:
    sys.modules["torch"] = None  # type: ignore[assignment]  # any `import torch` now raises ImportError

import json
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str]) -> int:
    folder, out_json = Path(argv[0]), Path(argv[1])
    from infertune.errors import InfertuneError
    from infertune.export.load import load
    from infertune.export.manifest import jsonable

    try:
        model = load(folder)
        fidelity = model.check()
        batch = model.manifest.verification.batch_size
        from infertune.export.verification import read_verification

        inputs, _ = read_verification(folder / model.manifest.verification.file)
        first = model.run(inputs[[i % len(inputs) for i in range(batch)]])
    except InfertuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_json.write_text(json.dumps(jsonable({
        "fidelity": asdict(fidelity),
        "input_name": model.input_name,
        "outputs": [{"name": name, "shape": ["N", *arr.shape[1:]]} for name, arr in first],
    })))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
