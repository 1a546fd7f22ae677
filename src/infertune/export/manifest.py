"""``infertune.json``: what an export is, how it must be run, how it was verified and how fast it was.

Written by ``build`` and read by ``load``; standard library only, so reading it needs neither torch
nor a runtime. The parts a loader acts on are typed (files, runtime, input, verification, ISA
needs); the measured numbers and the environment are descriptive and kept as they were recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from infertune.errors import InfertuneError

SCHEMA_VERSION = 1
MANIFEST_NAME = "infertune.json"
VERIFICATION_NAME = "verification.npz"
README_NAME = "README.md"


@dataclass(frozen=True)
class FileRecord:
    """One shipped file and its content hash (checked again by ``load``)."""

    name: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class RuntimeSpec:
    """The runtime that runs the artifact, the version it was measured with and the settings it ran under.

    ``options`` are the session/compile settings of the benchmark (format-specific, see ``load``);
    ``distributions`` are the pip distributions that provide ``module`` (the first installed one is
    compared with ``version``).
    """

    format: str
    module: str
    distributions: list[str]
    version: str
    install: str
    device: str
    needs_torch: bool
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """The one input: name, shape with the batch first (None = any batch), dtype, layout, accepted batches."""

    name: str
    shape: list[int | None]
    dtype: str
    layout: str
    #: batch sizes the artifact accepts; None = any (a dynamic batch axis).
    batch_sizes: list[int] | None


@dataclass(frozen=True)
class Verification:
    """The shipped verification set, the batch size it is run at, the bound the outputs must keep
    (``verify.Tolerance`` fields) and the reference's output names (``verify.output_list``)."""

    file: str
    samples: int
    batch_size: int
    inputs: str
    tolerance: dict[str, float | None]
    output_names: list[str]


@dataclass(frozen=True)
class IsaNeed:
    """CPU instructions the measured numbers relied on: ``any_of`` raw /proc/cpuinfo flags."""

    what: str
    any_of: list[str]


@dataclass
class ExportManifest:
    """Everything ``infertune.json`` holds."""

    variant: str
    backend: str
    precision: str
    options: str
    model: str
    weights: str
    model_digest: str
    entry_point: str
    files: list[FileRecord]
    runtime: RuntimeSpec
    input: InputSpec
    verification: Verification
    speed_depends_on: list[IsaNeed]
    #: why this variant was picked ("fastest variant that kept the predictions at batch 8 ...").
    selection: str
    #: "" for a verified, measured variant; else why it was exported anyway (``--force``).
    forced: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    preprocessing: dict[str, Any] | None = None
    fidelity: dict[str, Any] = field(default_factory=dict)
    performance: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    infertune_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(jsonable(asdict(self)), indent=2) + "\n", encoding="utf-8")
        return path


_NESTED = {"files": FileRecord, "runtime": RuntimeSpec, "input": InputSpec, "verification": Verification,
           "speed_depends_on": IsaNeed}


def read_manifest(folder: Path | str) -> ExportManifest:
    """Read ``folder/infertune.json``; a missing or foreign file is an error that says what the folder should be."""
    path = Path(folder) / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InfertuneError(f"{folder} is not an infertune export (no {MANIFEST_NAME}); create one with "
                             "`infertune export results/benchmark_results_<TS>.json --to DIR`") from None
    except (OSError, ValueError) as err:
        raise InfertuneError(f"cannot read {path}: {err}") from None
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        raise InfertuneError(f"{path} is not an export manifest of schema {SCHEMA_VERSION} "
                             f"(found {doc.get('schema_version') if isinstance(doc, dict) else doc!r}); "
                             "export it again with this infertune")
    known = {f.name for f in fields(ExportManifest)}
    kwargs: dict[str, Any] = {}
    for name, value in doc.items():
        if name not in known:
            continue
        kind = _NESTED.get(name)
        if kind is None:
            kwargs[name] = value
        elif isinstance(value, list):
            kwargs[name] = [kind(**v) for v in value]
        else:
            kwargs[name] = kind(**value)
    return ExportManifest(**kwargs)



def jsonable(obj: Any) -> Any:
    """``obj`` with tuples as lists and non-finite floats as None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj
