"""The typed settings of a serving test: which scenario, how LoadGen drives it, how the SUT batches.

One home for the MLPerf vocabulary: the four scenario names as the CLI spells them, LoadGen's enum
for each, the percentile each scenario reports, and the translation of ``TrialSettings`` into a
``mlperf_loadgen.TestSettings``. Nothing here imports LoadGen at module level (``infertune report``
reads scenario rows on machines without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infertune.errors import UnavailableError

#: the scenarios in the order ``scenario all`` runs them (offline first: it bounds the server search).
SCENARIOS = ("offline", "single-stream", "multi-stream", "server")

#: LoadGen's name for each scenario (``mlperf_loadgen.TestScenario.<name>``).
LOADGEN_NAMES = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server",
                 "offline": "Offline"}

#: the latency percentile MLPerf reports for each scenario (offline reports throughput only).
REPORTED_PERCENTILE = {"single-stream": 90.0, "multi-stream": 99.0, "server": 99.0, "offline": None}

INSTALL_HINT = "pip install 'infertune[serving]' (MLPerf LoadGen: mlcommons-loadgen)"


@dataclass(frozen=True)
class BatchPolicy:
    """How the SUT serves queued samples: batches of up to ``max_batch`` samples, dispatched when full
    or when the oldest sample has waited ``max_delay_ms``, by ``instances`` executors at once."""

    max_batch: int = 1
    max_delay_ms: float = 0.0
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.instances < 1 or self.max_delay_ms < 0:
            raise ValueError(f"invalid batch policy {self}: max_batch and instances >= 1, max_delay_ms >= 0")

    @property
    def label(self) -> str:
        """``b8 d2ms x2``: max batch, max delay, instances (the row's and the chart's name for it)."""
        return f"b{self.max_batch} d{self.max_delay_ms:g}ms x{self.instances}"

    def buckets(self) -> tuple[int, ...]:
        """The batch sizes prepared for this policy: powers of two below ``max_batch``, and ``max_batch``.

        A formed batch of n samples runs on the smallest bucket >= n, padded (and its outputs trimmed):
        a runtime with static shapes then always gets a shape it was built for, and padding wastes at
        most half a batch.
        """
        sizes = {self.max_batch}
        size = 1
        while size < self.max_batch:
            sizes.add(size)
            size *= 2
        return tuple(sorted(sizes))


@dataclass(frozen=True)
class TrialSettings:
    """One LoadGen run: the scenario and the knobs LoadGen takes for it.

    Attributes:
        scenario: one of ``SCENARIOS``.
        min_duration_ms: LoadGen runs at least this long (MLPerf uses 600 000; short runs are a preview).
        min_query_count: ... and at least this many queries (offline: samples).
        latency_bound_ms: the server scenario's bound on p99 (a run above it is INVALID); for
            single-/multi-stream the expected latency LoadGen plans the run with.
        target_qps: the server scenario's Poisson arrival rate; offline's expected throughput.
        samples_per_query: multi-stream's samples per query (MLPerf: 8).
        sample_count: samples held in the query sample library (LoadGen's performance sample count).
        samples_on_device: on a GPU, the library sits in device memory and a batch is gathered there.
        max_duration_ms: a hard stop (0: none).
    """

    scenario: str
    min_duration_ms: int = 10_000
    min_query_count: int = 100
    latency_bound_ms: float = 100.0
    target_qps: float = 10.0
    samples_per_query: int = 8
    sample_count: int = 64
    samples_on_device: bool = True
    max_duration_ms: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {', '.join(SCENARIOS)}")


def import_loadgen() -> Any:
    """``mlperf_loadgen``, or an UnavailableError that says how to install it."""
    try:
        import mlperf_loadgen
    except ImportError:
        raise UnavailableError(f"MLPerf LoadGen is not installed; install it with: {INSTALL_HINT}") from None
    return mlperf_loadgen


def loadgen_test_settings(trial: TrialSettings) -> Any:
    """The ``mlperf_loadgen.TestSettings`` of one trial (performance mode)."""
    lg = import_loadgen()
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, LOADGEN_NAMES[trial.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(trial.min_duration_ms)
    ts.min_query_count = int(trial.min_query_count)
    ts.max_duration_ms = int(trial.max_duration_ms)
    bound_ns = int(trial.latency_bound_ms * 1e6)
    if trial.scenario == "server":
        ts.server_target_qps = float(trial.target_qps)
        ts.server_target_latency_ns = bound_ns
        ts.server_target_latency_percentile = 0.99
    elif trial.scenario == "offline":
        ts.offline_expected_qps = float(trial.target_qps)
    elif trial.scenario == "single-stream":
        ts.single_stream_expected_latency_ns = bound_ns
    else:
        ts.multi_stream_expected_latency_ns = bound_ns
        ts.multi_stream_samples_per_query = int(trial.samples_per_query)
    return ts
