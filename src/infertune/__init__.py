"""infertune: find the fastest way to run a model on this machine without changing its predictions.

Public API:
    run(config=None, **overrides) -> RunResult   benchmark a ladder of variants (see pipeline.run)
    verify_ladder(config=None, **overrides)      the same ladder, verified (and accuracy-gated) but not timed
    load_results(path) -> pandas.DataFrame       read a results CSV/JSON
    load(folder) -> ExportedModel                open an export (`infertune export`) with only its runtime
    list_backends() -> list[str]                 registered backends
    RunConfig                                    the validated configuration model
"""

from __future__ import annotations

import os
from typing import Any

from infertune.results import load_results

__version__ = "0.1.0"


def run(config: str | None = None, log: Any = print, resume: str | None = None, **overrides: Any) -> Any:
    """Run a benchmark from a YAML path and/or section overrides, e.g. ``run(benchmark={"batch_sizes": [1]})``.

    ``resume="results/benchmark_results_<TS>.csv"`` finishes that interrupted run with its saved config.
    """
    from infertune.config import load_config
    from infertune.pipeline import run as _run

    if resume is not None:
        from infertune.resume import load_resume

        state = load_resume(resume)
        return _run(state.config, log=log, resume=state)
    return _run(load_config(config, overrides), log=log)


def verify_ladder(config: str | None = None, log: Any = print, **overrides: Any) -> Any:
    """Prepare and verify every variant without timing (``infertune verify``), e.g.
    ``verify_ladder(verify={"dataset": "val/"})``. (``infertune.verify`` is the metrics module.)"""
    from infertune.config import load_config
    from infertune.pipeline import run as _run

    return _run(load_config(config, overrides), log=log, measure=False)


def load(folder: str | os.PathLike[str], threads: int | None = None, check_hashes: bool = True) -> Any:
    """Open an export folder (``infertune export RESULTS --to DIR``): a callable, numpy in, numpy out.

    Needs only the artifact's runtime (an ONNX or OpenVINO export never imports torch); checks the files'
    hashes, warns on another runtime version or a CPU without the features the numbers relied on.
    See ``infertune.export.load.load``.
    """
    from infertune.export.load import load as _load

    return _load(folder, threads=threads, check_hashes=check_hashes)


def list_backends() -> list[str]:
    from infertune.backends.registry import list_backends as _list

    return _list()


def __getattr__(name: str) -> Any:
    if name == "RunConfig":
        from infertune.config import RunConfig

        return RunConfig
    raise AttributeError(name)


__all__ = ["RunConfig", "__version__", "list_backends", "load", "load_results", "run", "verify_ladder"]
