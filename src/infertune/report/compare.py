"""Compare two runs cell by cell, and tell a real change from noise by testing the raw samples.

For every (model, variant, batch size, device) measured in both runs:

* the point changes of p50 latency, p99 latency and throughput, candidate against baseline;
* a two-sided Mann-Whitney U test on the two runs' raw per-iteration latencies (no normality
  assumed: latency distributions are skewed and often bimodal). Testing forty cells at 5% would flag
  two by chance, so the p-values are adjusted across cells (Benjamini-Hochberg);
* a bootstrap 95% confidence interval for the p50 change.

A change is *significant* when its adjusted p-value is below alpha. ``--fail-on-regression PCT`` then
counts a cell as a regression when its p50 got slower by more than PCT percent **and** the change is
significant, or when a cell that passed in the baseline fails in the candidate. Result files without
raw samples (a CSV without its JSON) cannot be tested: the point values are compared, the output says
so, and a slowdown beyond PCT counts on its own.

Samples of one run are not fully independent (a machine warms up, neighbours come and go), so the
p-values are somewhat optimistic; the PCT threshold is the guard against calling a tiny, "significant"
shift a regression.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infertune.errors import InfertuneError
from infertune.report import environment
from infertune.report.data import ReportData, load_report_data
from infertune.report.view import fmt_ms, is_measured, is_overhead, md_escape
from infertune.results import ResultRow

__all__ = ["CellComparison", "Comparison", "compare_runs", "comparison_markdown", "print_comparison"]

#: fewer raw samples than this per side and a cell is not tested (Mann-Whitney cannot reach p < 0.05 with 3 vs 3).
MIN_SAMPLES = 5
#: the bootstrap draws at most this many samples per side: enough for a stable median, fast on 100,000-sample cells.
_BOOTSTRAP_MAX = 2000
_BOOTSTRAP_RESAMPLES = 999
#: a significant change of the p50 smaller than this is reported as negligible: with 10,000 samples
#: (the null backend) a shift of one clock tick is "significant" yet means nothing.
NEGLIGIBLE = 0.005
#: config keys that differ between any two runs without changing what was measured.
_IGNORED_CONFIG = ("output.",)

_Key = tuple[str, str, int, str]  # (model, variant, batch size, device)


@dataclass
class CellComparison:
    """One cell in both runs: point changes (fractions, +0.10 = 10% more), the test, a verdict."""

    model: str
    variant: str
    batch_size: int
    device: str
    baseline: ResultRow | None
    candidate: ResultRow | None
    p50_change: float | None = None
    p99_change: float | None = None
    throughput_change: float | None = None
    p50_ci: tuple[float, float] | None = None  # bootstrap 95% interval of the p50 change
    p_value: float | None = None  # Mann-Whitney U, adjusted across cells; None = not tested
    n_baseline: int = 0
    n_candidate: int = 0
    significant: bool | None = None  # None = could not be tested

    @property
    def measured_in_both(self) -> bool:
        return self.p50_change is not None

    @property
    def status_change(self) -> str:
        """``ok → crashed`` when the status differs, else empty."""
        a = self.baseline.status if self.baseline else "absent"
        b = self.candidate.status if self.candidate else "absent"
        return "" if a == b else f"{a} → {b}"

    @property
    def newly_failing(self) -> bool:
        """Passed in the baseline, not in the candidate (fidelity failures and crashes alike)."""
        return (self.baseline is not None and self.baseline.status == "ok"
                and self.candidate is not None and self.candidate.status != "ok")

    @property
    def overhead(self) -> bool:
        row = self.baseline or self.candidate
        return row is not None and is_overhead(row)

    def verdict(self) -> str:
        if self.baseline is None:
            return "only in candidate"
        if self.candidate is None:
            return "only in baseline"
        if not self.measured_in_both:
            return f"status {self.status_change}" if self.status_change else "not measured in either run"
        prefix = f"status {self.status_change}; " if self.status_change else ""
        direction = "slower" if self.p50_change > 0 else "faster"  # type: ignore[operator]
        if self.significant is None:
            return f"{prefix}{direction} (not tested: no raw samples)"
        if self.significant and abs(self.p50_change) < NEGLIGIBLE:  # type: ignore[arg-type]
            return f"{prefix}negligible (significant, but p50 within ±{100 * NEGLIGIBLE:g}%)"
        if self.significant:
            return f"{prefix}{direction}"
        return f"{prefix}no significant change"

    def is_regression(self, threshold_pct: float) -> bool:
        """Slower by more than ``threshold_pct`` percent and significant (or untestable), or newly failing.

        The null backend measures the harness, not the model: it never fails a build.
        """
        if self.overhead:
            return False
        if self.newly_failing:
            return True
        if self.p50_change is None or self.p50_change * 100 <= threshold_pct:
            return False
        return self.significant is not False


@dataclass
class Comparison:
    """Two runs compared: every cell of either, the test settings, and what differs between the runs."""

    baseline: ReportData
    candidate: ReportData
    cells: list[CellComparison]
    alpha: float
    tested: bool  # whether any cell had raw samples on both sides
    untested_reason: str = ""
    differences: list[tuple[str, str, str]] = field(default_factory=list)  # (key, baseline, candidate)

    @property
    def shared(self) -> list[CellComparison]:
        return [c for c in self.cells if c.measured_in_both]

    def regressions(self, threshold_pct: float) -> list[CellComparison]:
        return [c for c in self.cells if c.is_regression(threshold_pct)]


def compare_runs(baseline: Path | str, candidate: Path | str, alpha: float = 0.05, seed: int = 0) -> Comparison:
    """Compare every cell of two runs (each a results CSV or JSON).

    Args:
        baseline: the reference run (e.g. main's results).
        candidate: the run under test.
        alpha: significance level for the adjusted p-values.
        seed: for the bootstrap's resampling, so the same files always give the same intervals.

    Raises:
        InfertuneError: a file is not a results file, alpha is outside (0, 1), or the runs share no
            measured cell.
    """
    if not 0 < alpha < 1:
        raise InfertuneError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")
    base, cand = load_report_data(baseline), load_report_data(candidate)
    rows_a, rows_b = _by_key(base.rows), _by_key(cand.rows)
    keys = list(rows_a) + [k for k in rows_b if k not in rows_a]
    cells = [_point_changes(k, rows_a.get(k), rows_b.get(k)) for k in keys]
    if not any(c.measured_in_both for c in cells):
        raise InfertuneError(
            f"{base.source.name} and {cand.source.name} have no measured (model, variant, batch size, device) in "
            "common: compare two runs of the same model and ladder"
        )
    tested = _test(cells, base, cand, alpha, np.random.default_rng(seed))
    reason = "" if tested else _untested_reason(base, cand)
    return Comparison(base, cand, cells, alpha, tested, reason, _differences(base, cand))


def _by_key(rows: Iterable[ResultRow]) -> dict[_Key, ResultRow]:
    return {(r.model, r.variant, r.batch_size, r.device): r for r in rows}


def _point_changes(key: _Key, a: ResultRow | None, b: ResultRow | None) -> CellComparison:
    cell = CellComparison(*key, baseline=a, candidate=b)
    if a is not None and b is not None and is_measured(a) and is_measured(b):
        cell.p50_change = _change(a.latency_p50_ms, b.latency_p50_ms)
        cell.p99_change = _change(a.latency_p99_ms, b.latency_p99_ms)
        cell.throughput_change = _change(a.throughput_ips, b.throughput_ips)
    return cell


def _change(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or a <= 0:
        return None
    return b / a - 1.0


def _test(cells: list[CellComparison], base: ReportData, cand: ReportData, alpha: float,
          rng: np.random.Generator) -> bool:
    """Mann-Whitney U per cell with enough samples on both sides; BH-adjusted; bootstrap CI of the p50 change."""
    from scipy.stats import bootstrap, false_discovery_control, mannwhitneyu

    tested: list[CellComparison] = []
    raw_p: list[float] = []
    for cell in cells:
        if not cell.measured_in_both:
            continue
        xa = np.asarray(base.samples.get(cell.baseline.cell_id, []), dtype=float)  # type: ignore[union-attr]
        xb = np.asarray(cand.samples.get(cell.candidate.cell_id, []), dtype=float)  # type: ignore[union-attr]
        cell.n_baseline, cell.n_candidate = len(xa), len(xb)
        if len(xa) < MIN_SAMPLES or len(xb) < MIN_SAMPLES:
            continue
        raw_p.append(float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue))
        tested.append(cell)
        sa, sb = _subsample(xa, rng), _subsample(xb, rng)
        if np.median(sa) > 0:
            ci = bootstrap((sa, sb), _median_change, n_resamples=_BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                           method="percentile", vectorized=True, rng=rng, batch=100).confidence_interval
            cell.p50_ci = (float(ci.low), float(ci.high))
    if not tested:
        return False
    adjusted = false_discovery_control(raw_p, method="bh") if len(raw_p) > 1 else np.asarray(raw_p)
    for cell, p in zip(tested, adjusted):
        cell.p_value = float(p)
        cell.significant = bool(p < alpha)
    return True


def _median_change(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(b, axis=axis) / np.median(a, axis=axis) - 1.0


def _subsample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= _BOOTSTRAP_MAX else rng.choice(x, _BOOTSTRAP_MAX, replace=False)


def _untested_reason(base: ReportData, cand: ReportData) -> str:
    without = [d.source.name for d in (base, cand) if not d.has_samples]
    if without:
        return (f"no raw samples in {' and '.join(without)} (a CSV without the JSON beside it): significance "
                "cannot be tested, so the changes below are point values")
    return f"fewer than {MIN_SAMPLES} raw samples per cell: significance cannot be tested; changes are point values"


def _differences(base: ReportData, cand: ReportData) -> list[tuple[str, str, str]]:
    """Environment and config keys whose values differ: the first suspects for any change."""
    out = []
    for prefix, a, b in (("", base.environment, cand.environment), ("config.", base.config, cand.config)):
        if not a or not b:
            continue
        fa, fb = dict(environment.flatten(a)), dict(environment.flatten(b))
        for key in sorted(set(fa) | set(fb)):
            if prefix and key.startswith(_IGNORED_CONFIG):
                continue
            va, vb = fa.get(key, "—"), fb.get(key, "—")
            if va != vb:
                out.append((prefix + key, va, vb))
    return out


# ---------------------------------------------------------------- output


def fmt_change(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f}%"


def fmt_ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def summary_lines(c: Comparison, threshold_pct: float | None) -> list[str]:
    """What was compared, how, what changed, and (with a threshold) the regression verdict."""
    lines = [f"baseline: {c.baseline.source}", f"candidate: {c.candidate.source}"]
    shared = c.shared
    if c.tested:
        sig = [x for x in shared if x.significant and abs(x.p50_change) >= NEGLIGIBLE]  # type: ignore[arg-type]
        slower = sum(1 for x in sig if x.p50_change > 0)  # type: ignore[operator]
        untested = sum(1 for x in shared if x.significant is None)
        lines.append(
            f"test: Mann-Whitney U on the raw samples, p-values adjusted across {len(shared) - untested} cells "
            f"(Benjamini-Hochberg), alpha {c.alpha:g}: the p50 of {len(sig)} of {len(shared)} cells changed "
            f"significantly "
            f"({slower} slower, {len(sig) - slower} faster)"
            + (f"; {untested} cells had too few samples to test" if untested else ""))
    else:
        lines.append(c.untested_reason)
    if c.differences:
        shown = "; ".join(f"{k}: {a} → {b}" for k, a, b in c.differences[:10])
        more = f" (and {len(c.differences) - 10} more)" if len(c.differences) > 10 else ""
        lines.append(f"the runs differ in: {shown}{more}")
    if threshold_pct is not None:
        lines.extend(regression_lines(c, threshold_pct))
    return lines


def regression_lines(c: Comparison, threshold_pct: float) -> list[str]:
    regressions = c.regressions(threshold_pct)
    rule = (f"p50 slower by more than {threshold_pct:g}% and significant, or newly failing" if c.tested
            else f"p50 slower by more than {threshold_pct:g}% (point values: no samples to test), or newly failing")
    if not regressions:
        return [f"no regression ({rule})"]
    out = [f"REGRESSION in {len(regressions)} cell(s) ({rule}):"]
    for x in regressions:
        what = (f"status {x.status_change}" if x.newly_failing and not x.measured_in_both
                else f"p50 {fmt_change(x.p50_change)} {fmt_ci(x.p50_ci)}".rstrip())
        if x.newly_failing and x.measured_in_both:
            what = f"status {x.status_change}; {what}"
        out.append(f"  {x.model} · {x.device} · {x.variant} · batch {x.batch_size}: {what}")
    return out


def print_comparison(c: Comparison, threshold_pct: float | None, console: Any = None) -> None:
    """The comparison as a rich table: significant slowdowns red, speedups green, noise dimmed."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    many_models = len({x.model for x in c.cells}) > 1
    many_devices = len({x.device for x in c.cells}) > 1
    table = Table(title="infertune compare: candidate vs baseline (+ = more)", title_justify="left")
    if many_models:
        table.add_column("Model")
    if many_devices:
        table.add_column("Device")
    for name, justify in (("Variant", "left"), ("Batch", "right"), ("p50 base → cand (ms)", "right"),
                          ("Δ p50 [95% CI]", "right"), ("Δ p99", "right"), ("Δ throughput", "right"),
                          ("n base/cand", "right"), ("p (adj.)", "right"), ("Verdict", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for x in c.cells:
        style = _style(x, threshold_pct)
        base_p50 = fmt_ms(x.baseline.latency_p50_ms) if x.baseline and is_measured(x.baseline) else "—"
        cand_p50 = fmt_ms(x.candidate.latency_p50_ms) if x.candidate and is_measured(x.candidate) else "—"
        cells = ([x.model] if many_models else []) + ([x.device] if many_devices else []) + [
            x.variant, str(x.batch_size), f"{base_p50} → {cand_p50}",
            f"{fmt_change(x.p50_change)} {fmt_ci(x.p50_ci)}".strip(), fmt_change(x.p99_change),
            fmt_change(x.throughput_change),
            f"{x.n_baseline}/{x.n_candidate}" if x.measured_in_both else "—", fmt_p(x.p_value),
            x.verdict() + (" ✗ REGRESSION" if threshold_pct is not None and x.is_regression(threshold_pct) else ""),
        ]
        table.add_row(*(Text(v) for v in cells), style=style)  # Text: file contents are never markup
    console.print(table)
    for line in summary_lines(c, threshold_pct):
        console.print(Text(line, style="bold red" if line.startswith("REGRESSION") else ""))


def _style(x: CellComparison, threshold_pct: float | None) -> str:
    if threshold_pct is not None and x.is_regression(threshold_pct):
        return "bold red"
    if x.newly_failing:
        return "red"
    if not x.measured_in_both:
        return "dim"
    if x.significant is False:
        return "dim"
    if x.significant and abs(x.p50_change) >= NEGLIGIBLE:  # type: ignore[arg-type]
        return "red" if x.p50_change > 0 else "green"  # type: ignore[operator]
    return "dim" if x.significant else ""


def comparison_markdown(c: Comparison, threshold_pct: float | None) -> str:
    """The comparison as GitHub markdown (for a pull-request comment); significant changes in bold."""
    lines = [("| Model · device | Variant | Batch | p50 base → cand (ms) | Δ p50 [95% CI] | Δ p99 | Δ throughput "
              "| p (adj.) | Verdict |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for x in c.cells:
        base_p50 = fmt_ms(x.baseline.latency_p50_ms) if x.baseline and is_measured(x.baseline) else "—"
        cand_p50 = fmt_ms(x.candidate.latency_p50_ms) if x.candidate and is_measured(x.candidate) else "—"
        change = f"{fmt_change(x.p50_change)} {fmt_ci(x.p50_ci)}".strip()
        if x.significant:
            change = f"**{change}**"
        verdict = x.verdict() + (" ✗ REGRESSION" if threshold_pct is not None and x.is_regression(threshold_pct)
                                 else "")
        lines.append(f"| {md_escape(x.model)} · {md_escape(x.device)} | {md_escape(x.variant)} | {x.batch_size} | "
                     f"{base_p50} → {cand_p50} | {change} | {fmt_change(x.p99_change)} | "
                     f"{fmt_change(x.throughput_change)} | {fmt_p(x.p_value)} | {md_escape(verdict)} |")
    notes = [f"- {md_escape(line.strip())}" for line in summary_lines(c, threshold_pct)]
    return "\n".join(["## infertune compare", "", *notes, "", *lines]) + "\n"

