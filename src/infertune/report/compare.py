"""Compare two runs cell by cell, and call a change significant only when it exceeds the run-to-run noise.

The samples of one run are not independent draws of "the" latency: a machine drifts between runs (other
processes, clocks, memory placement), so two identical runs' medians differ by far more than the spread of
either run's samples suggests (0.9% on ONNX Runtime, 2.2% on eager, 10.8% on OpenVINO INT8 over four
identical ResNet18 runs). A test on one run's samples against another's therefore calls that drift
"significant". So each cell is judged on the *medians of independent runs*:

* **Run-to-run basis** (the files hold several runs per side): each round of a run measured with
  ``benchmark.rounds`` > 1 (a fresh worker per round; ``round_p50s_ms`` in the row) and each file given
  for a side (``compare A1 A2 -- B1 B2``) is one replicate. A t-test on the log medians, with the spread
  estimated from the replicates of both sides (at least ``MIN_RUN_SPREAD``), gives the p-value and a 95%
  interval of the p50 change; the p-values are adjusted across cells (Benjamini-Hochberg).
* **Floor basis** (one run per side, one round each): the run-to-run spread cannot be estimated, and the
  output says so. A change is significant only when the raw samples differ (Mann-Whitney U, adjusted
  across cells) *and* the p50 moved by more than ``FLOOR`` (15%, above the 11.5% seen between two
  identical runs). Smaller real changes need replicates to be told from drift.

The point changes of p50, p99 and throughput are candidate against baseline (the geometric mean over a
side's files). ``--fail-on-regression PCT`` counts a cell as a regression when its p50 got slower by
more than PCT percent **and** the change is significant, or when a cell that passed in the baseline fails
in the candidate. Docs: docs/measurement.md ("Comparing runs").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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

#: fewer raw samples than this per side and the floor basis cannot test a cell (Mann-Whitney cannot reach
#: p < 0.05 with 3 vs 3).
MIN_SAMPLES = 5
#: without replicates, a p50 change must exceed this to be significant: the largest change seen between two
#: identical runs (+11.5%, OpenVINO INT8, ResNet18 batch 1, four runs on a quiet 2-core machine) plus a margin.
FLOOR = 0.15
#: the run-to-run spread (standard deviation of log medians) assumed at least, so that two or three
#: replicates that happen to agree closely cannot make a tiny change "significant" (0.9% was the smallest
#: range of medians seen over four identical runs).
MIN_RUN_SPREAD = 0.005
#: a significant change of the p50 smaller than this is reported as negligible.
NEGLIGIBLE = 0.005
#: config keys that differ between any two runs without changing what was measured.
_IGNORED_CONFIG = ("output.",)

_Key = tuple[str, str, int, str, str]  # (model, variant, batch size, device, pinned node: "" unless --per-node)


@dataclass
class CellComparison:
    """One cell on both sides: point changes (fractions, +0.10 = 10% more), the test, a verdict."""

    model: str
    variant: str
    batch_size: int
    device: str
    baseline: ResultRow | None  # the side's last file's row
    candidate: ResultRow | None
    p50_baseline_ms: float | None = None  # the side's p50 (geometric mean over its files)
    p50_candidate_ms: float | None = None
    p50_change: float | None = None
    p99_change: float | None = None
    throughput_change: float | None = None
    p50_ci: tuple[float, float] | None = None  # 95% interval of the p50 change, from run-to-run replicates
    p_value: float | None = None  # adjusted across cells; None = not tested
    n_baseline: int = 0  # raw samples
    n_candidate: int = 0
    runs_baseline: int = 0  # replicates: rounds and files
    runs_candidate: int = 0
    basis: str = ""  # "runs" (judged against the run-to-run spread) or "floor" (against FLOOR)
    significant: bool | None = None  # None = not measured on both sides
    node: str = ""  # the pinned node (--per-node runs): a node's cells are compared with the same node's

    @property
    def where(self) -> str:
        """``resnet18 · cpu``, and ``· node-a`` for a pinned cell."""
        return f"{self.model} · {self.device}" + (f" · {self.node}" if self.node else "")

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
        if self.significant and abs(self.p50_change) < NEGLIGIBLE:  # type: ignore[arg-type]
            return f"{prefix}negligible (significant, but p50 within ±{100 * NEGLIGIBLE:g}%)"
        if self.significant:
            return f"{prefix}{direction}"
        if self.basis == "floor" and abs(self.p50_change) <= FLOOR:  # type: ignore[arg-type]
            return f"{prefix}within run-to-run drift (±{100 * FLOOR:g}% without replicates)"
        return f"{prefix}no significant change"

    def is_regression(self, threshold_pct: float) -> bool:
        """Slower by more than ``threshold_pct`` percent and significant, or newly failing.

        The null backend measures the harness, not the model: it never fails a build.
        """
        if self.overhead:
            return False
        if self.newly_failing:
            return True
        if self.p50_change is None or self.p50_change * 100 <= threshold_pct:
            return False
        return bool(self.significant)


@dataclass
class Comparison:
    """Two sides compared (one or more runs each): every cell, the test settings, what differs between them."""

    baseline_runs: list[ReportData]
    candidate_runs: list[ReportData]
    cells: list[CellComparison]
    alpha: float
    differences: list[tuple[str, str, str]] = field(default_factory=list)  # (key, baseline, candidate)

    @property
    def baseline(self) -> ReportData:
        return self.baseline_runs[0]

    @property
    def candidate(self) -> ReportData:
        return self.candidate_runs[0]

    @property
    def shared(self) -> list[CellComparison]:
        return [c for c in self.cells if c.measured_in_both]

    def regressions(self, threshold_pct: float) -> list[CellComparison]:
        return [c for c in self.cells if c.is_regression(threshold_pct)]


def compare_runs(baseline: Path | str | Sequence[Path | str], candidate: Path | str | Sequence[Path | str],
                 alpha: float = 0.01) -> Comparison:
    """Compare every cell of two sides, each one results CSV/JSON or several runs of the same command.

    Args:
        baseline: the reference run(s) (e.g. main's results).
        candidate: the run(s) under test.
        alpha: significance level for the adjusted p-values.

    Raises:
        InfertuneError: a file is not a results file, alpha is outside (0, 1), or the sides share no
            measured cell.
    """
    if not 0 < alpha < 1:
        raise InfertuneError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")
    base, cand = _load_side(baseline), _load_side(candidate)
    sides_a, sides_b = _by_key(base), _by_key(cand)
    keys = list(sides_a) + [k for k in sides_b if k not in sides_a]
    cells = [_point_changes(k, sides_a.get(k), sides_b.get(k)) for k in keys]
    if not any(c.measured_in_both for c in cells):
        raise InfertuneError(
            f"{_names(base)} and {_names(cand)} have no measured (model, variant, batch size, device) in "
            "common: compare runs of the same model and ladder"
        )
    _test(cells, sides_a, sides_b, alpha)
    return Comparison(base, cand, cells, alpha, _differences(base[0], cand[0]))


@dataclass
class _SideCell:
    """One cell on one side: its row in each file that has it."""

    rows: list[ResultRow]
    samples: list[float]

    @property
    def row(self) -> ResultRow:
        return self.rows[-1]

    @property
    def measured(self) -> list[ResultRow]:
        return [r for r in self.rows if is_measured(r)]

    def replicates(self) -> list[float]:
        """Medians of independent runs: each round's p50 where a run had several rounds, else the run's p50."""
        out: list[float] = []
        for row in self.measured:
            rounds = _round_p50s(row)
            out.extend(rounds if len(rounds) >= 2 else [row.latency_p50_ms])  # type: ignore[list-item]
        return out

    def mean(self, attr: str) -> float | None:
        """Geometric mean of a field over the side's runs (the value itself for one run)."""
        values = [getattr(r, attr) for r in self.measured]
        values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
        return float(np.exp(np.mean(np.log(values)))) if values else None


def _load_side(paths: Path | str | Sequence[Path | str]) -> list[ReportData]:
    if isinstance(paths, (str, Path)):
        return [load_report_data(paths)]
    if not paths:
        raise InfertuneError("a side of the comparison has no results file: pass at least one per side")
    return [load_report_data(p) for p in paths]


def _names(runs: list[ReportData]) -> str:
    return " + ".join(r.source.name for r in runs)


def _by_key(runs: list[ReportData]) -> dict[_Key, _SideCell]:
    cells: dict[_Key, _SideCell] = {}
    for run in runs:
        for row in run.rows:
            key = (row.model, row.variant, row.batch_size, row.device, row.pinned_node)
            cell = cells.setdefault(key, _SideCell([], []))
            cell.rows.append(row)
            cell.samples.extend(run.samples.get(row.cell_id, []))
    return cells


def _round_p50s(row: ResultRow) -> list[float]:
    try:
        values = json.loads(row.round_p50s_ms) if row.round_p50s_ms else []
    except (TypeError, ValueError):
        return []
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v > 0] \
        if isinstance(values, list) else []


def _point_changes(key: _Key, a: _SideCell | None, b: _SideCell | None) -> CellComparison:
    cell = CellComparison(*key[:4], baseline=a.row if a else None, candidate=b.row if b else None, node=key[4])
    if a is not None and b is not None and a.measured and b.measured:
        cell.p50_baseline_ms, cell.p50_candidate_ms = a.mean("latency_p50_ms"), b.mean("latency_p50_ms")
        cell.p50_change = _change(cell.p50_baseline_ms, cell.p50_candidate_ms)
        cell.p99_change = _change(a.mean("latency_p99_ms"), b.mean("latency_p99_ms"))
        cell.throughput_change = _change(a.mean("throughput_ips"), b.mean("throughput_ips"))
    return cell


def _change(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or a <= 0:
        return None
    return b / a - 1.0


def _test(cells: list[CellComparison], sides_a: dict[_Key, _SideCell], sides_b: dict[_Key, _SideCell],
          alpha: float) -> None:
    """Judge every cell measured on both sides: against the run-to-run spread where there are replicates,
    else against the floor; p-values adjusted across the cells of each basis."""
    from scipy.stats import false_discovery_control, mannwhitneyu

    tested: dict[str, list[tuple[CellComparison, float]]] = {"runs": [], "floor": []}
    for cell in cells:
        if not cell.measured_in_both:
            continue
        a, b = sides_a[_key(cell)], sides_b[_key(cell)]
        ra, rb = a.replicates(), b.replicates()
        cell.n_baseline, cell.n_candidate = len(a.samples), len(b.samples)
        cell.runs_baseline, cell.runs_candidate = len(ra), len(rb)
        if len(ra) + len(rb) >= 3:
            cell.basis = "runs"
            p, cell.p50_ci = _between_runs(ra, rb)
            tested["runs"].append((cell, p))
            continue
        cell.basis = "floor"
        cell.significant = False
        if min(len(a.samples), len(b.samples)) >= MIN_SAMPLES:
            tested["floor"].append((cell, float(mannwhitneyu(a.samples, b.samples, alternative="two-sided").pvalue)))
        else:  # no raw samples to test: the point change alone, against the floor
            cell.significant = abs(cell.p50_change) > FLOOR  # type: ignore[arg-type]
    for basis, pairs in tested.items():
        if not pairs:
            continue
        raw = [p for _, p in pairs]
        adjusted = false_discovery_control(raw, method="bh") if len(raw) > 1 else np.asarray(raw)
        for (cell, _), p in zip(pairs, adjusted):
            cell.p_value = float(p)
            beyond_floor = basis == "runs" or abs(cell.p50_change) > FLOOR  # type: ignore[arg-type]
            cell.significant = bool(p < alpha) and beyond_floor


def _key(cell: CellComparison) -> _Key:
    return (cell.model, cell.variant, cell.batch_size, cell.device, cell.node)


def _between_runs(ra: list[float], rb: list[float]) -> tuple[float, tuple[float, float]]:
    """Two-sided t-test of the log medians (pooled spread, at least ``MIN_RUN_SPREAD``); p and 95% interval."""
    from scipy.stats import t as student_t

    la, lb = np.log(ra), np.log(rb)
    dof = len(la) + len(lb) - 2
    squares = float(((la - la.mean()) ** 2).sum() + ((lb - lb.mean()) ** 2).sum())
    spread = max(math.sqrt(squares / dof), MIN_RUN_SPREAD)
    se = spread * math.sqrt(1 / len(la) + 1 / len(lb))
    diff = float(lb.mean() - la.mean())
    p = float(2 * student_t.sf(abs(diff) / se, dof))
    q = float(student_t.ppf(0.975, dof))
    return p, (math.expm1(diff - q * se), math.expm1(diff + q * se))


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
    """What was compared, how each cell was judged, what changed, and (with a threshold) the verdict."""
    lines = [f"baseline: {' + '.join(str(r.source) for r in c.baseline_runs)}",
             f"candidate: {' + '.join(str(r.source) for r in c.candidate_runs)}"]
    lines.extend(basis_lines(c))
    shared = c.shared
    sig = [x for x in shared if x.significant and abs(x.p50_change) >= NEGLIGIBLE]  # type: ignore[arg-type]
    slower = sum(1 for x in sig if x.p50_change > 0)  # type: ignore[operator]
    lines.append(f"the p50 of {len(sig)} of {len(shared)} cells changed significantly "
                 f"({slower} slower, {len(sig) - slower} faster)")
    if c.differences:
        shown = "; ".join(f"{k}: {a} → {b}" for k, a, b in c.differences[:10])
        more = f" (and {len(c.differences) - 10} more)" if len(c.differences) > 10 else ""
        lines.append(f"the runs differ in: {shown}{more}")
    if threshold_pct is not None:
        lines.extend(regression_lines(c, threshold_pct))
    return lines


def basis_lines(c: Comparison) -> list[str]:
    """How the cells were judged: against the run-to-run spread, or (without replicates) against the floor."""
    runs = [x for x in c.shared if x.basis == "runs"]
    floor = [x for x in c.shared if x.basis == "floor"]
    lines = []
    if runs:
        counts = sorted({f"{x.runs_baseline} vs {x.runs_candidate}" for x in runs})
        lines.append(
            f"run-to-run: {len(runs)} cell(s) judged against the spread of independent runs' medians "
            f"({', '.join(counts)} runs: rounds recorded in the files and files given per side); t-test on the "
            f"log medians, p-values adjusted across cells (Benjamini-Hochberg), alpha {c.alpha:g}")
    if floor:
        without = [r.source.name for r in (*c.baseline_runs, *c.candidate_runs) if not r.has_samples]
        how = (f"no raw samples in {', '.join(without)} (a CSV without the JSON beside it), so point values"
               if without else "the raw samples must differ (Mann-Whitney U, adjusted across cells) and")
        lines.append(
            f"no run-to-run information for {len(floor)} cell(s) (one run per side, one round each): their "
            f"drift between runs cannot be estimated, so {how} a p50 change counts only beyond "
            f"±{100 * FLOOR:g}% (identical runs' medians differed by up to 11.5%); to detect smaller changes measure "
            "with --rounds 3 or compare several runs per side: infertune compare A1.json A2.json -- B1.json B2.json")
    return lines


def regression_lines(c: Comparison, threshold_pct: float) -> list[str]:
    regressions = c.regressions(threshold_pct)
    rule = f"p50 slower by more than {threshold_pct:g}% and significant, or newly failing"
    if not regressions:
        return [f"no regression ({rule})"]
    out = [f"REGRESSION in {len(regressions)} cell(s) ({rule}):"]
    for x in regressions:
        what = (f"status {x.status_change}" if x.newly_failing and not x.measured_in_both
                else f"p50 {fmt_change(x.p50_change)} {fmt_ci(x.p50_ci)}".rstrip())
        if x.newly_failing and x.measured_in_both:
            what = f"status {x.status_change}; {what}"
        out.append(f"  {x.where} · {x.variant} · batch {x.batch_size}: {what}")
    return out


def print_comparison(c: Comparison, threshold_pct: float | None, console: Any = None) -> None:
    """The comparison as a rich table: significant slowdowns red, speedups green, noise dimmed."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    many_models = len({x.model for x in c.cells}) > 1
    many_devices = len({x.device for x in c.cells}) > 1
    many_nodes = len({x.node for x in c.cells}) > 1
    table = Table(title="infertune compare: candidate vs baseline (+ = more)", title_justify="left")
    if many_models:
        table.add_column("Model")
    if many_devices:
        table.add_column("Device")
    if many_nodes:
        table.add_column("Node")
    for name, justify in (("Variant", "left"), ("Batch", "right"), ("p50 base → cand (ms)", "right"),
                          ("Δ p50 [95% CI]", "right"), ("Δ p99", "right"), ("Δ throughput", "right"),
                          ("runs base/cand", "right"), ("p (adj.)", "right"), ("Verdict", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for x in c.cells:
        style = _style(x, threshold_pct)
        base_p50, cand_p50 = fmt_ms(x.p50_baseline_ms), fmt_ms(x.p50_candidate_ms)
        cells = ([x.model] if many_models else []) + ([x.device] if many_devices else []) + \
            ([x.node] if many_nodes else []) + [
            x.variant, str(x.batch_size), f"{base_p50} → {cand_p50}",
            f"{fmt_change(x.p50_change)} {fmt_ci(x.p50_ci)}".strip(), fmt_change(x.p99_change),
            fmt_change(x.throughput_change),
            f"{x.runs_baseline}/{x.runs_candidate}" if x.measured_in_both else "—", fmt_p(x.p_value),
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
              "| runs base/cand | p (adj.) | Verdict |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in c.cells:
        base_p50, cand_p50 = fmt_ms(x.p50_baseline_ms), fmt_ms(x.p50_candidate_ms)
        change = f"{fmt_change(x.p50_change)} {fmt_ci(x.p50_ci)}".strip()
        if x.significant:
            change = f"**{change}**"
        verdict = x.verdict() + (" ✗ REGRESSION" if threshold_pct is not None and x.is_regression(threshold_pct)
                                 else "")
        lines.append(f"| {md_escape(x.where)} | {md_escape(x.variant)} | {x.batch_size} | "
                     f"{base_p50} → {cand_p50} | {change} | {fmt_change(x.p99_change)} | "
                     f"{fmt_change(x.throughput_change)} | {x.runs_baseline}/{x.runs_candidate} | {fmt_p(x.p_value)} | "
                     f"{md_escape(verdict)} |")
    notes = [f"- {md_escape(line.strip())}" for line in summary_lines(c, threshold_pct)]
    return "\n".join(["## infertune compare", "", *notes, "", *lines]) + "\n"

