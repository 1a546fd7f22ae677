"""Raw samples -> the numbers in a result row: percentiles, spread, throughput and a noise flag.

Percentiles use linear interpolation (numpy's default) over the raw samples, which are kept in the
JSON so any other statistic can be recomputed later. A cell is flagged ``noisy`` when the
interquartile range exceeds 10% of the median (the rule torch.utils.benchmark uses), or when the
medians of the first and second half of its samples lie more than 2% apart: a machine that drifts
while one cell is timed drifts between runs too, so a rerun's median can differ by as much
(docs/measurement.md, "When is a cell noisy").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOISE_IQR_OVER_MEDIAN = 0.10
#: halves' medians further apart than this (a fraction of the median) flag the cell as noisy.
NOISE_DRIFT_OVER_MEDIAN = 0.02
#: fewer samples than this and the two halves say nothing about drift.
_MIN_SAMPLES_FOR_DRIFT = 4
#: fewer samples than this and the median's confidence interval spans the whole sample.
_MIN_SAMPLES_FOR_CI = 6


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-iteration latencies (ms) for one batch size."""

    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_ips: float
    cv: float
    iqr_over_median: float
    drift_over_median: float
    noisy: bool
    iterations: int
    #: half the width of the median's 95% confidence interval, as a fraction of the median (``median_ci``).
    p50_ci_over_median: float | None = None
    batch_size: int = 1
    #: the raw samples these numbers summarise (kept so that rounds can be pooled: ``merge``).
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    def merge(self, other: LatencyStats) -> LatencyStats:
        """The summary of both sets of samples pooled (a later round of the same cell)."""
        if other.batch_size != self.batch_size:
            raise ValueError(f"cannot pool batch {other.batch_size} samples into batch {self.batch_size} ones")
        return summarize([*self.samples_ms, *other.samples_ms], self.batch_size)

    def as_row_fields(self) -> dict[str, float | int | bool]:
        return {
            "latency_mean_ms": self.mean_ms,
            "latency_std_ms": self.std_ms,
            "latency_min_ms": self.min_ms,
            "latency_p50_ms": self.p50_ms,
            "latency_p90_ms": self.p90_ms,
            "latency_p95_ms": self.p95_ms,
            "latency_p99_ms": self.p99_ms,
            "latency_max_ms": self.max_ms,
            "throughput_ips": self.throughput_ips,
            "cv": self.cv,
            "iqr_over_median": self.iqr_over_median,
            "drift_over_median": self.drift_over_median,
            "noisy": self.noisy,
            "iterations": self.iterations,
            "p50_ci_over_median": self.p50_ci_over_median,
        }


def summarize(samples_ms: list[float], batch_size: int) -> LatencyStats:
    """Summarise latencies of whole batches; throughput is items per second at the median latency."""
    if not samples_ms:
        raise ValueError("no samples to summarise")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    a = np.asarray(samples_ms, dtype=np.float64)
    p25, p50, p75, p90, p95, p99 = np.percentile(a, [25, 50, 75, 90, 95, 99])
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    iqr_over_median = float((p75 - p25) / p50) if p50 > 0 else 0.0
    drift = half_drift(a, float(p50))
    return LatencyStats(
        mean_ms=mean,
        std_ms=std,
        min_ms=float(a.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(a.max()),
        throughput_ips=batch_size * 1000.0 / float(p50) if p50 > 0 else float("inf"),
        cv=std / mean if mean > 0 else 0.0,
        iqr_over_median=iqr_over_median,
        drift_over_median=drift,
        noisy=iqr_over_median > NOISE_IQR_OVER_MEDIAN or drift > NOISE_DRIFT_OVER_MEDIAN,
        iterations=int(a.size),
        p50_ci_over_median=median_ci(a),
        batch_size=batch_size,
        samples_ms=tuple(float(s) for s in samples_ms),
    )


def median_ci(samples_ms: np.ndarray) -> float | None:
    """Half the width of the median's 95% confidence interval, as a fraction of the median (None below 6 samples).

    Distribution-free: the interval runs between the order statistics at ranks n/2 -+ 1.96 sqrt(n)/2 (the
    normal approximation of the binomial), so it holds for any latency distribution, skewed ones included.
    Like every statistic of one cell's samples it cannot see drift between runs (docs/measurement.md).
    """
    n = samples_ms.size
    if n < _MIN_SAMPLES_FOR_CI:
        return None
    ordered = np.sort(samples_ms)
    spread = 1.96 * np.sqrt(n) / 2
    low = ordered[max(0, int(np.floor(n / 2 - spread)) - 1)]
    high = ordered[min(n - 1, int(np.ceil(n / 2 + spread)) - 1)]
    median = float(np.median(ordered))
    return float((high - low) / 2 / median) if median > 0 else None


def half_drift(samples_ms: np.ndarray, p50: float) -> float:
    """|median of the second half - median of the first half| / median, samples in time order (0 below 4 samples)."""
    if samples_ms.size < _MIN_SAMPLES_FOR_DRIFT or p50 <= 0:
        return 0.0
    half = samples_ms.size // 2
    return float(abs(np.median(samples_ms[half:]) - np.median(samples_ms[:half])) / p50)
