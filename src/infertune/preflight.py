"""Checks that run before any long work, so bad input costs seconds, not a half-finished sweep.

Each check turns a problem that would otherwise surface minutes later as a traceback (or as a
run that dies writing its first row) into one ``ConfigError`` / ``ModelError`` naming the problem
and the fix: output folders that cannot be written or are nearly full, a batch whose input alone
cannot fit in memory, an input shape the model cannot take.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from infertune.errors import ConfigError, InfertuneError, ModelError

#: the result files (CSV, JSON, journal, log) of one run are small; below this the disk is full.
RESULTS_MIN_FREE_MB = 20
#: converted artifacts: each converting variant writes about one model's weights, plus this margin.
MODELS_MIN_FREE_MB = 50


def writable_dir(path: Path | str, key: str) -> Path:
    """Create ``path`` if needed and prove a file can be written there; ConfigError naming ``key`` if not."""
    path = Path(path)
    fix = f"set {key} to a folder you can write to"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{key} {path} is a file, not a folder: {fix}") from None
    except OSError as err:
        raise ConfigError(f"cannot create {key} {path} ({err.strerror}): {fix}") from None
    if not path.is_dir():
        raise ConfigError(f"{key} {path} is not a folder: {fix}")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".infertune-write-probe-") as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise ConfigError(f"cannot write to {key} {path} ({err.strerror}): {fix}") from None
    return path


def free_space(path: Path | str, key: str, need_mb: float) -> None:
    """ConfigError when the disk holding ``path`` has less than ``need_mb`` MB free."""
    free_mb = shutil.disk_usage(path).free / 1e6
    if free_mb < need_mb:
        raise ConfigError(
            f"only {free_mb:.0f} MB free on the disk holding {key} {path}; this run needs about {need_mb:.0f} MB: "
            f"free some space or point {key} to another disk"
        )


def check_output(cfg: Any) -> None:
    """The results folder is writable with room for the result files; the cache folder is writable."""
    results = writable_dir(cfg.output.dir, "output.dir")
    free_space(results, "output.dir", RESULTS_MIN_FREE_MB)
    writable_dir(cfg.output.models_dir, "output.models_dir")


def check_artifact_space(cfg: Any, ladder: list[Any], weights_mb: float) -> None:
    """Room for the artifacts: about one copy of the weights per converting variant (once the model is known)."""
    from infertune.backends.registry import get_backend

    converting = sum(1 for v in ladder if get_backend(v.backend).writes_artifacts)
    free_space(cfg.output.models_dir, "output.models_dir", MODELS_MIN_FREE_MB + converting * weights_mb)


def check_input_memory(cfg: Any, specs: Sequence[Any]) -> None:
    """The largest timed batch's inputs must fit in half of this machine's memory, with room for the model."""
    import psutil

    batch = max(cfg.benchmark.batch_sizes)
    need = batch * sum(spec.bytes_per_sample for spec in specs)
    total = psutil.virtual_memory().total
    if need > total / 2:
        what = (f"{list(specs[0].shape)} {specs[0].dtype} inputs" if len(specs) == 1
                else f"inputs ({', '.join(s.describe() for s in specs)})")
        raise ConfigError(
            f"batch size {batch} of {what} needs {need / 1e9:.3g} GB for the input alone; this machine has "
            f"{total / 1e9:.1f} GB of memory: lower benchmark.batch_sizes or the input shape"
        )


@contextlib.contextmanager
def input_shape_check(model: Any, specs: Sequence[Any]) -> Iterator[None]:
    """Wrap the model's first FP32 forward pass (in the reference worker): a model that cannot take its
    inputs (``specs``, from ``model.input_shape`` or ``model.inputs``) raises inside it, and that becomes
    one ModelError naming the inputs and the fix instead of a traceback. A failed allocation is not a
    shape problem and passes through."""
    from infertune.cell import is_out_of_memory

    try:
        yield
    except InfertuneError:
        raise
    except Exception as err:
        if is_out_of_memory(err):
            raise
        text = f"{type(err).__name__}: {err}".replace("\n", " ")
        text = text if len(text) <= 240 else text[:237] + "..."
        if len(specs) == 1 and specs[0].dtype == "float32" and not model.inputs:
            shape = [model.input_shape[0], *specs[0].shape]
            raise ModelError(
                f"{model.name} cannot take inputs of shape {shape} ({text}): set model.input_shape (or "
                "--input-shape, batch first: B C H W for images, B F for F features) to the shape the model expects"
            ) from None
        shown = "; ".join(s.describe() for s in specs)
        raise ModelError(f"{model.name} cannot take its inputs ({shown}) ({text}): set model.inputs to the "
                         "names, shapes (batch first), dtypes and value ranges the model expects, in its "
                         "argument order") from None
