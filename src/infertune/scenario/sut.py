"""The LoadGen glue: a query sample library over samples already in memory, and a system under test
whose ``issue_query`` hands samples to the dynamic batcher; one ``run_trial`` per LoadGen run.

LoadGen and the SUT run in the same (worker) process: a query crosses no pipe, so the latencies
LoadGen measures are the SUT's own. Each answer points LoadGen at the sample's own output row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infertune.scenario.batcher import (
    BatchLog,
    DynamicBatcher,
    InferBatch,
    QueuedSample,
)
from infertune.scenario.loadgen_log import (
    LoadgenResult,
    parse_result,
)
from infertune.scenario.settings import (
    BatchPolicy,
    TrialSettings,
    import_loadgen,
    loadgen_test_settings,
)


@dataclass
class TrialOutcome:
    """One LoadGen run: LoadGen's result, the batches the SUT formed, and an executor error if one happened."""

    trial: TrialSettings
    policy: BatchPolicy
    result: LoadgenResult
    batches: BatchLog
    log_dir: Path
    error: str = ""


def run_trial(trial: TrialSettings, policy: BatchPolicy, instances: Sequence[InferBatch], log_dir: Path) -> TrialOutcome:
    """Run one LoadGen test against a batcher over ``instances``; LoadGen's logs go to ``log_dir``.

    Only the summary and detail logs are kept (the trace and the empty accuracy log are removed).
    """
    lg = import_loadgen()

    def respond(samples: list[QueuedSample], outputs: np.ndarray | None) -> None:
        if outputs is None:
            responses = [lg.QuerySampleResponse(s.response_id, 0, 0) for s in samples]
        else:
            base = outputs.__array_interface__["data"][0]
            row = outputs[0].nbytes if len(outputs) else 0
            responses = [lg.QuerySampleResponse(s.response_id, base + i * row, row) for i, s in enumerate(samples)]
        lg.QuerySamplesComplete(responses)  # LoadGen copies what it keeps before this returns

    batcher = DynamicBatcher(policy, instances, respond)
    sut = lg.ConstructSUT(lambda queries: batcher.submit((q.id, q.index) for q in queries), lambda: None)
    qsl = lg.ConstructQSL(trial.sample_count, trial.sample_count, _noop, _noop)  # samples already in memory
    log_dir.mkdir(parents=True, exist_ok=True)
    batcher.start()
    try:
        lg.StartTestWithLogSettings(sut, qsl, loadgen_test_settings(trial), _log_settings(lg, log_dir))
    finally:
        batcher.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    _keep_only_summary_and_detail(log_dir)
    samples_per_query = trial.samples_per_query if trial.scenario == "multi-stream" else 1
    error = f"{type(batcher.error).__name__}: {batcher.error}" if batcher.error is not None else ""
    return TrialOutcome(trial, policy, parse_result(trial.scenario, log_dir, samples_per_query), batcher.log,
                        log_dir, error[:500])


def _noop(_samples: Any) -> None:
    """QSL load/unload: the sample library is an array already in memory."""


def _log_settings(lg: Any, log_dir: Path) -> Any:
    settings = lg.LogSettings()
    settings.log_output.outdir = str(log_dir)
    settings.log_output.copy_summary_to_stdout = False
    settings.enable_trace = False
    return settings


#: what LoadGen writes besides the summary and detail logs (an empty accuracy log in performance mode, a trace).
_NOT_KEPT = ("mlperf_log_accuracy.json", "mlperf_log_trace.json")


def _keep_only_summary_and_detail(log_dir: Path) -> None:
    for name in _NOT_KEPT:
        (log_dir / name).unlink(missing_ok=True)
