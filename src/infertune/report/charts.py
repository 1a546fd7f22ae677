"""PNG charts of a report, per (model, device[, node]): latency, throughput, speedup, distribution, speed vs fidelity.

Each chart answers one question at a glance. Latency, speedup and distribution are small multiples,
one panel per batch size with its own scale (batch 1 and batch 256 on one axis would flatten one of
them), variants in ladder order top to bottom as in the tables, and every variant of the ladder
listed: one that has no timing says why ("unavailable", "crashed") where its bar would be.

Figures are drawn on matplotlib's Agg canvas attached per figure, not through pyplot, so making charts
never needs a display and never changes the plotting backend of a notebook or program that calls us.
Sizes are fixed (``WIDTH_PX`` wide, a height that grows with the number of variants), never cropped
to content, so the HTML page and the tests know what they get.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from infertune.report.view import (
    BASELINE_VARIANT,
    fastest_passing,
    fmt_ms,
    group_key,
    group_rows,
    is_measured,
    is_overhead,
    keeps_predictions,
    node_title,
    scope_text,
    speedup,
)
from infertune.results import ResultRow

__all__ = ["CAPTIONS", "DPI", "WIDTH_PX", "caption_for", "draw_charts", "write_charts"]

#: every chart is this many pixels wide (12 in at 100 dpi): the width of the HTML page's content.
DPI = 100
WIDTH_PX = 1200

#: what each chart answers, by the last part of its file name (``resnet50_cpu_latency.png``).
CAPTIONS = {
    "latency": "Latency per batch for each variant and batch size: the bar is the median (p50), the whisker "
               "ends at p99 (the slow tail). Shorter is better; ★ marks the fastest variant that kept the "
               "predictions.",
    "throughput": "Throughput against batch size: where batching stops paying off, and which variant "
                  "serves the most images per second.",
    "speedup": "Speedup over pytorch:fp32 (its p50 over the variant's p50) at each batch size; hatched bars "
               "changed the predictions beyond tolerance.",
    "distribution": "Every timed iteration, per variant and batch size: the box spans p25–p75, the whiskers "
                    "p1–p99. A wide box means noisy timings; compare medians only when boxes do not overlap.",
    "pareto": "Speed against fidelity to the FP32 reference: variants on the dashed frontier are not beaten "
              "on both at once; X marks a variant that failed its fidelity check.",
}

_FAILED_HATCH = "///"
_MUTED = "#6e7781"
_MAX_PARETO_PANELS = 3
#: fidelity measures a speed-vs-fidelity chart can use, best first: (row field, axis label, as percent).
#: Fields another version of the result schema may add are looked up by name, so none is required.
_FIDELITY_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("top1_acc", "top-1 accuracy (%)", True),
    ("top1_agreement", "top-1 agreement with FP32 eager (%)", True),
    ("top5_overlap", "top-5 overlap with FP32 eager (%)", True),
    ("sqnr_db", "SQNR vs FP32 eager outputs (dB, higher is closer)", False),
    ("cosine_min", "lowest per-sample cosine vs FP32 eager", False),
)


def caption_for(path: Path) -> str:
    """What a chart file answers, from its name; the chart's own title names model and device."""
    kind = next((k for k in sorted(CAPTIONS, key=len, reverse=True) if path.stem.endswith(k)), "")
    return CAPTIONS[kind] if kind else path.stem


def write_charts(rows: Iterable[ResultRow], samples: dict[str, list[float]] | None, out_dir: Path | str) -> list[Path]:
    """Write the charts of every (model, device, pinned node) in ``rows`` as PNG files into ``out_dir``.

    A chart with nothing to draw (no measured rows, no raw samples, no fidelity numbers) is skipped
    rather than drawn empty. The null backend is left out: it measures the harness, not the model.

    Returns:
        The PNG paths written, in a stable order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, fig in draw_charts(rows, samples):
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=DPI)
        written.append(path)
    return written


def draw_charts(rows: Iterable[ResultRow], samples: dict[str, list[float]] | None) -> list[tuple[str, Any]]:
    """(file stem, matplotlib Figure) for every chart ``write_charts`` would write, in the same order."""
    rows = list(rows)
    samples = samples or {}
    figures: list[tuple[str, Any]] = []
    for (model, device, node), subset in _by_model_device(rows).items():
        ctx = _Context(model, device, [r for r in subset if not is_overhead(r)], samples, node)
        if not ctx.measured:
            continue
        where = f"{_slug(model)}_{_slug(device)}" + (f"_{_slug(node)}" if node else "")
        for name, draw in _CHARTS:
            fig = draw(ctx)
            if fig is not None:
                figures.append((f"{where}_{name}", fig))
    return figures


class _Context:
    """The rows of one (model, device, pinned node) and the lookups every chart needs."""

    def __init__(self, model: str, device: str, rows: list[ResultRow], samples: dict[str, list[float]],
                 node: str = "") -> None:
        self.model, self.device, self.rows, self.samples, self.node = model, device, rows, samples, node
        self.measured = [r for r in rows if is_measured(r)]
        self.groups = group_rows(rows)
        self.variants = list(dict.fromkeys(r.variant for r in rows))  # the ladder, measured or not
        self.batches = sorted({r.batch_size for r in self.measured})
        palette = _palette(len(self.variants))
        self.color = {v: palette[i] for i, v in enumerate(self.variants)}
        self.by_cell = {(r.variant, r.batch_size): r for r in rows}
        self.best = {b: fastest_passing(self.groups[(model, device, b, node)]) for b in self.batches}

    def cell(self, variant: str, batch: int) -> ResultRow | None:
        return self.by_cell.get((variant, batch))

    def measured_cell(self, variant: str, batch: int) -> ResultRow | None:
        row = self.cell(variant, batch)
        return row if row is not None and is_measured(row) else None

    def speedup(self, row: ResultRow) -> float | None:
        return speedup(row, self.groups[group_key(row)])

    def title(self, what: str) -> str:
        where = f" · {node_title(self.node, self.rows)}" if self.node else ""
        return f"{self.model} on {self.device}{where}: {what}"

    @property
    def any_failed_fidelity(self) -> bool:
        return any(r.status == "fidelity_failed" for r in self.measured)


# ---------------------------------------------------------------- the charts


def _latency(ctx: _Context) -> Any:
    """p50 bars with a whisker to p99, one panel per batch size."""
    fig, axes = _panels(ctx, len(ctx.batches))

    def p50_p99(row: ResultRow) -> tuple[float | None, float | None]:
        return row.latency_p50_ms, row.latency_p99_ms

    log = _needs_log(ctx, ctx.batches, p50_p99)
    for ax, batch in zip(axes, ctx.batches):
        _hbars(ax, ctx, batch, p50_p99, label=fmt_ms, log=log)
        ax.set_xlabel("ms per batch" + (" (log scale)" if log else ""))
        ax.set_title(f"batch {batch}", fontsize=10)
    failed = "; hatched: failed fidelity" if ctx.any_failed_fidelity else ""
    fig.suptitle(ctx.title(f"{scope_text(ctx.measured)} latency — bar p50, whisker to p99{failed}"))
    return fig


def _speedup(ctx: _Context) -> Any:
    """Speedup over pytorch:fp32, one panel per batch size; a dotted line at 1x."""
    if not any(ctx.speedup(r) for r in ctx.measured):
        return None
    fig, axes = _panels(ctx, len(ctx.batches))
    for ax, batch in zip(axes, ctx.batches):
        _hbars(ax, ctx, batch, lambda r: (ctx.speedup(r), None), label=lambda v: f"{v:.2f}×")
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlabel(f"× vs {BASELINE_VARIANT}")
        ax.set_title(f"batch {batch}", fontsize=10)
    failed = "; hatched: failed fidelity" if ctx.any_failed_fidelity else ""
    fig.suptitle(ctx.title(f"speedup over {BASELINE_VARIANT} at p50 (higher is better){failed}"))
    return fig


def _throughput(ctx: _Context) -> Any:
    """Items per second against batch size, a line per variant; bars when there is one batch size."""
    if len(ctx.batches) == 1:
        batch = ctx.batches[0]
        fig, axes = _panels(ctx, 1)
        _hbars(axes[0], ctx, batch, lambda r: (r.throughput_ips, None),  # type: ignore[arg-type, return-value]
               label=lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
        axes[0].set_xlabel("images per second (at p50 latency)")
        fig.suptitle(ctx.title(f"throughput at batch {batch} (higher is better; run more batch sizes "
                               "to see scaling)"))
        return fig
    fig, ax = _single(height_in=max(5.5, 0.19 * len(ctx.variants) + 1.5))  # room for the legend
    values: list[float] = []
    lines: list[tuple[float, Any]] = []
    for i, variant in enumerate(ctx.variants):
        pts = [(b, r) for b in ctx.batches if (r := ctx.measured_cell(variant, b)) and _finite(r.throughput_ips)]
        if not pts:
            continue
        failed = any(r.status == "fidelity_failed" for _, r in pts)
        ys = [r.throughput_ips for _, r in pts]
        values += ys  # type: ignore[arg-type]
        # past ten variants colours repeat: a different marker keeps two lines of one colour apart
        marker = "X" if failed else "osD^v"[(i // 10) % 5]
        (line,) = ax.plot([b for b, _ in pts], ys, marker=marker, color=ctx.color[variant],
                          linestyle="--" if failed else "-", linewidth=1.8,
                          label=variant + (" (failed fidelity)" if failed else ""))
        lines.append((ys[-1], line))  # type: ignore[arg-type]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ctx.batches, [str(b) for b in ctx.batches])
    ax.minorticks_off()
    if values and max(values) / max(min(values), 1e-12) > 30:
        ax.set_yscale("log")
    _readable_ticks(ax.yaxis)
    ax.set_xlabel("batch size (images per call)")
    ax.set_ylabel("images per second (at p50 latency)")
    ax.grid(alpha=0.3, which="both")
    ordered = [line for _, line in sorted(lines, key=lambda p: -p[0])]  # legend in the lines' order at the right
    fig.legend(ordered, [line.get_label() for line in ordered], loc="outside right upper", fontsize=8,
               title="variant (top = most at the largest batch)", title_fontsize=8)
    missing = _not_measured(ctx)
    if missing:
        ax.set_title("not measured: " + missing, fontsize=8, color=_MUTED, loc="left")
    fig.suptitle(ctx.title("throughput vs batch size (higher is better)"))
    return fig


def _distribution(ctx: _Context) -> Any:
    """Boxes of the raw per-iteration latencies, one panel per batch size that has samples."""
    batches = [b for b in ctx.batches if any(ctx.samples.get(r.cell_id) for r in ctx.measured if r.batch_size == b)]
    if not batches:
        return None
    fig, axes = _panels(ctx, len(batches))
    for ax, batch in zip(axes, batches):
        data, positions, colors, hatches = [], [], [], []
        for i, variant in enumerate(ctx.variants):
            row = ctx.cell(variant, batch)
            values = ctx.samples.get(row.cell_id) if row is not None and is_measured(row) else None
            if values:
                data.append(values)
                positions.append(i)
                colors.append(ctx.color[variant])
                hatches.append(_FAILED_HATCH if row.status == "fidelity_failed" else "")  # type: ignore[union-attr]
            else:
                _status_text(ax, i, row, "no raw samples" if row is not None and is_measured(row) else None)
        box = ax.boxplot(data, positions=positions, whis=(1, 99), showfliers=False, patch_artist=True,
                         widths=0.6, medianprops={"color": "black", "linewidth": 1.4}, **_horizontal())
        _variant_axis(ax, ctx)  # boxplot relabels the y axis with positions: put the names back
        for patch, color, hatch in zip(box["boxes"], colors, hatches):
            patch.set_facecolor(color)
            patch.set_alpha(0.75)
            patch.set_hatch(hatch)
        lo = min(float(np.percentile(d, 1)) for d in data)
        hi = max(float(np.percentile(d, 99)) for d in data)
        if lo > 0 and hi / lo > 30:  # batch 1 of INT8 next to FP32 eager: a linear axis hides the fast ones
            ax.set_xscale("log")
        for pos, values in zip(positions, data):
            ax.annotate(f"n={len(values)}", (float(np.percentile(values, 99)), pos), textcoords="offset points",
                        xytext=(4, -3), fontsize=7, color=_MUTED)
        ax.set_xlim(right=_pad_right(ax, hi))
        _readable_ticks(ax.xaxis)
        ax.set_xlabel("ms per batch")
        ax.set_title(f"batch {batch}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(ctx.title("latency of every timed iteration — box p25–p75, whiskers p1–p99"))
    return fig


def _pareto(ctx: _Context) -> Any:
    """Speedup (or throughput, without a baseline) against a fidelity measure, and the frontier of
    variants that no other variant beats on both."""
    metric = _fidelity_metric(ctx)
    if metric is None:
        return None
    name, label, percent, why = metric
    use_speedup = any(ctx.speedup(r) for r in ctx.measured)

    def x_of(row: ResultRow) -> float | None:
        return ctx.speedup(row) if use_speedup else row.throughput_ips

    panels: list[tuple[int, list[tuple[ResultRow, float, float]]]] = []
    for batch in ctx.batches:
        points = []
        for variant in ctx.variants:
            row = ctx.measured_cell(variant, batch)
            if row is not None and _finite(x := x_of(row)) and (y := _metric_value(row, name, percent)) is not None:
                points.append((row, float(x), y))  # type: ignore[arg-type]
        if points:
            panels.append((batch, points))
    if not panels:
        return None
    panels = [panels[i] for i in _spread_index(len(panels), _MAX_PARETO_PANELS)]
    fig = _figure(height_in=5.5)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False).ravel()
    drawn: dict[str, Any] = {}
    for ax, (batch, points) in zip(axes, panels):
        for row, x, y in points:
            passed = keeps_predictions(row)
            drawn[row.variant] = ax.scatter([x], [y], s=70, color=ctx.color[row.variant], zorder=3,
                                            marker="o" if passed else "X", edgecolors="black", linewidths=0.6)
        frontier = _frontier([(x, y, row) for row, x, y in points if keeps_predictions(row)])
        if len(frontier) > 1:
            ax.plot([p[0] for p in frontier], [p[1] for p in frontier], linestyle="--", color=_MUTED,
                    linewidth=1, zorder=2)
        if use_speedup:
            ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
        _readable_ticks(ax.xaxis)
        _readable_ticks(ax.yaxis)
        ax.set_xlabel(f"speedup over {BASELINE_VARIANT} (×)" if use_speedup else "images per second")
        ax.set_title(f"batch {batch}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(label)
    fig.legend(list(drawn.values()), list(drawn), loc="outside lower center", ncols=min(len(drawn), 5),
               fontsize=8, title="variant (o passed its fidelity check, X failed it)", title_fontsize=8)
    fig.suptitle(ctx.title("speed vs fidelity (up and right is better)") + (f"\n{why}" if why else ""))
    fig.canvas.draw()  # settle the layout first: labels are placed by where the points really are
    for ax, (_, points) in zip(axes, panels):
        _label_points(ax, [(x, y, row.variant) for row, x, y in points])
    return fig


#: points closer than this (pixels) share one label, their names stacked.
_LABEL_CLUSTER_PX = 20
#: where a label may go relative to its point (points), nearest first, tried until one overlaps nothing.
_LABEL_OFFSETS = tuple((sx * d, sy * d) for d in (7, 20, 35, 55, 80, 110)
                       for sx, sy in ((1, -1), (1, 1), (-1, -1), (-1, 1)))


def _label_points(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Name every point: points that pile up share one label (names stacked), and each label goes to the
    first nearby spot that overlaps no point, no other label and stays inside the panel."""
    renderer = ax.figure.canvas.get_renderer()
    pixels = ax.transData.transform([(x, y) for x, y, _ in points])
    clusters: list[list[int]] = []
    for i, p in enumerate(pixels):
        near = next((c for c in clusters if min(np.hypot(*(pixels[j] - p)) for j in c) < _LABEL_CLUSTER_PX), None)
        if near is None:
            clusters.append([i])
        else:
            near.append(i)
    taken = [(p[0] - 7, p[1] - 7, p[0] + 7, p[1] + 7) for p in pixels]  # the markers
    inside = ax.get_window_extent(renderer)
    for cluster in sorted(clusters, key=lambda c: -len(c)):
        members = sorted(cluster, key=lambda j: pixels[j][0])
        anchor = (float(np.mean([points[j][0] for j in members])), float(np.mean([points[j][1] for j in members])))
        text = "\n".join(points[j][2] for j in members)
        chosen, chosen_box = _LABEL_OFFSETS[0], None
        for dx, dy in _LABEL_OFFSETS:
            probe = _point_label(ax, text, anchor, dx, dy, leader=False)
            box = probe.get_window_extent(renderer).padded(3)  # the text and its white box
            probe.remove()
            fits = (box.x0 >= inside.x0 + 4 and box.x1 <= inside.x1 - 4 and box.y0 >= inside.y0 + 4
                    and box.y1 <= inside.y1 - 4
                    and not any(box.x0 < t[2] and box.x1 > t[0] and box.y0 < t[3] and box.y1 > t[1] for t in taken))
            if fits:
                chosen, chosen_box = (dx, dy), box
                break
        label = _point_label(ax, text, anchor, *chosen, leader=abs(chosen[0]) > 10)
        label.set_in_layout(False)
        if chosen_box is not None:
            taken.append((chosen_box.x0, chosen_box.y0, chosen_box.x1, chosen_box.y1))


def _point_label(ax: Any, text: str, anchor: tuple[float, float], dx: float, dy: float, leader: bool) -> Any:
    """A variant's name ``(dx, dy)`` points from its marker, in a white box; a thin line back to it when far."""
    return ax.annotate(text, anchor, xytext=(dx, dy), textcoords="offset points", fontsize=7,
                       ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
                       bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.85, "lw": 0},
                       arrowprops={"arrowstyle": "-", "color": _MUTED, "lw": 0.5} if leader else None)


_CHARTS: list[tuple[str, Callable[[_Context], Any]]] = [
    ("latency", _latency),
    ("throughput", _throughput),
    ("speedup", _speedup),
    ("distribution", _distribution),
    ("pareto", _pareto),
]


# ---------------------------------------------------------------- drawing helpers


def _figure(height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_PX / DPI, round(height_in * DPI) / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # headless, per figure: no global backend switch
    return fig


def _single(height_in: float) -> tuple[Any, Any]:
    fig = _figure(height_in)
    return fig, fig.add_subplot()


def _panels(ctx: _Context, count: int) -> tuple[Any, list[Any]]:
    """Up to four panels a row, sharing the variant axis; height grows with the number of variants."""
    ncols = min(count, 4)
    nrows = math.ceil(count / ncols)
    panel_in = 0.3 * len(ctx.variants) + 1.1
    fig = _figure(height_in=nrows * panel_in + 0.6)
    axes = list(fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[:count]:
        _variant_axis(ax, ctx)
    return fig, axes[:count]


def _variant_axis(ax: Any, ctx: _Context) -> None:
    ax.set_yticks(range(len(ctx.variants)), ctx.variants, fontsize=9)
    ax.set_ylim(len(ctx.variants) - 0.5, -0.5)  # ladder order top to bottom, as in the tables
    ax.tick_params(axis="y", length=0)


def _hbars(ax: Any, ctx: _Context, batch: int,
           value: Callable[[ResultRow], tuple[float | None, float | None]],
           label: Callable[[float], str], log: bool = False) -> None:
    """One horizontal bar per variant (value, optional whisker end); the status where there is no value.

    The fastest variant that kept the predictions gets a ★ and a bold label. With ``log`` the axis is
    logarithmic and bars start at half the smallest value, so a 5 ms bar stays visible next to 400 ms.
    """
    bars: list[tuple[int, ResultRow, float, float | None]] = []
    for i, variant in enumerate(ctx.variants):
        row = ctx.cell(variant, batch)
        v, whisker = value(row) if row is not None and is_measured(row) else (None, None)
        if _finite(v) and (not log or v > 0):  # type: ignore[operator]
            bars.append((i, row, v, whisker if _finite(whisker) and whisker > v else None))  # type: ignore[arg-type, operator]
        else:
            _status_text(ax, i, row, "no value" if row is not None and is_measured(row) else None)
    if not bars:
        return
    base = 0.0
    if log:
        ax.set_xscale("log")
        base = min(v for _, _, v, _ in bars) / 2
    ends = []
    for i, row, v, whisker in bars:
        ax.barh(i, v - base, left=base, height=0.7, color=ctx.color[row.variant], edgecolor="black", linewidth=0.4,
                hatch=_FAILED_HATCH if row.status == "fidelity_failed" else None)
        end = v
        if whisker is not None:
            ax.plot([v, whisker], [i, i], color="black", linewidth=1)
            ax.plot([whisker], [i], marker="|", markersize=9, color="black")
            end = whisker
        ends.append(end)
        best = ctx.best.get(batch) is row
        ax.annotate(("★ " if best else "") + label(v), (end, i), textcoords="offset points",
                    xytext=(4, 0), va="center", fontsize=8, fontweight="bold" if best else "normal")
    ax.set_xlim(base, _pad_right(ax, max(ends)))
    _readable_ticks(ax.xaxis)
    ax.grid(axis="x", alpha=0.3)


def _needs_log(ctx: _Context, batches: list[int], value: Callable[[ResultRow], tuple[Any, Any]]) -> bool:
    """True when, in some panel, the longest bar (or whisker) is over 20x the shortest: then a linear
    axis would shrink the fast variants, the ones a reader looks for, to slivers."""
    for batch in batches:
        pairs = [value(r) for v in ctx.variants if (r := ctx.measured_cell(v, batch)) is not None]
        lows = [a for a, _ in pairs if _finite(a) and a > 0]
        highs = [max(a, b) if _finite(b) else a for a, b in pairs if _finite(a) and a > 0]
        if lows and max(highs) / min(lows) > 20:
            return True
    return False


def _status_text(ax: Any, y: int, row: ResultRow | None, measured_reason: str | None) -> None:
    """Where a bar would be: why there is none ("unavailable", "crashed", "not run at this batch")."""
    if measured_reason is not None:
        text = measured_reason
    elif row is None:
        text = "not run at this batch size"
    else:
        text = row.status.replace("_", " ")
    ax.text(0.01, y, text, transform=ax.get_yaxis_transform(), va="center", fontsize=8,
            color=_MUTED, style="italic")


def _pad_right(ax: Any, end: float) -> float:
    """Room right of the longest bar for its label: a quarter more on a linear axis, 3x on a log one."""
    return end * (3.0 if ax.get_xscale() == "log" else 1.25)


def _readable_ticks(axis: Any) -> None:
    """Tick labels that never run together: as many 1-2-5 steps as the axis's length in pixels holds,
    plain numbers with thousands separators (``0.1``, ``50``, ``2,000``), on linear and log axes alike."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    axis.set_major_locator(_FittedLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def tick_label(value: float) -> str:
    """A tick's text: ``0``, ``0.25``, ``50``, ``2,000``, ``10,000``."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.6g}"


def _fitted_locator_class() -> type:
    from matplotlib import rcParams
    from matplotlib.axis import XAxis
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import Locator, MaxNLocator

    class FittedLocator(Locator):  # type: ignore[misc]
        """The densest of a few tick sets whose labels fit the axis's length: 1, 2 and 5 per decade down
        to one label every few decades on a log axis; 1-2-2.5-5 steps of fewer and fewer bins on a linear one."""

        def __call__(self) -> Any:
            vmin, vmax = sorted(self.axis.get_view_interval())
            return self.tick_values(vmin, vmax)

        def tick_values(self, vmin: float, vmax: float) -> Any:
            horizontal = isinstance(self.axis, XAxis)
            box = self.axis.axes.bbox
            length = box.width if horizontal else box.height
            log = self.axis.get_scale() == "log"
            size = rcParams["xtick.labelsize" if horizontal else "ytick.labelsize"]
            em = FontProperties(size=size).get_size_in_points() * self.axis.axes.figure.dpi / 72
            last: list[float] = []
            for ticks in (self._log_sets(vmin, vmax) if log else self._linear_sets(vmin, vmax, MaxNLocator)):
                inside = [t for t in ticks if vmin <= t <= vmax]
                if len(inside) >= 2:
                    last = ticks
                    if self._fits(inside, vmin, vmax, length, log, horizontal, em):
                        return np.asarray(ticks)
            return np.asarray(last)

        @staticmethod
        def _log_sets(vmin: float, vmax: float) -> list[list[float]]:
            lo, hi = math.floor(math.log10(max(vmin, 1e-300))), math.ceil(math.log10(max(vmax, 1e-300)))
            sets = [[m * 10.0**e for e in range(lo, hi + 1) for m in subs] for subs in ((1, 2, 5), (1, 3), (1,))]
            sets += [[10.0**e for e in range(lo, hi + 1) if e % stride == 0] for stride in (2, 3, 5, 10)]
            return sets

        @staticmethod
        def _linear_sets(vmin: float, vmax: float, max_n: Any) -> list[list[float]]:
            return [list(max_n(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)) for n in range(10, 0, -1)]

        @staticmethod
        def _fits(ticks: list[float], vmin: float, vmax: float, length: float, log: bool, horizontal: bool,
                  em: float) -> bool:
            def position(v: float) -> float:
                if log:
                    return length * (math.log(v) - math.log(vmin)) / (math.log(vmax) - math.log(vmin))
                return length * (v - vmin) / (vmax - vmin)

            sizes = [(len(tick_label(t)) * 0.62 * em if horizontal else 1.2 * em) for t in ticks]
            return all(position(b) - position(a) >= (sa + sb) / 2 + 0.8 * em
                       for a, b, sa, sb in zip(ticks, ticks[1:], sizes, sizes[1:]))

    return FittedLocator


def _FittedLocator() -> Any:
    return _fitted_locator_class()()


def _horizontal() -> dict[str, Any]:
    """Horizontal boxes (variant names readable on the y axis); the keyword changed in matplotlib 3.10."""
    import matplotlib

    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _not_measured(ctx: _Context) -> str:
    """``aoti:fp16 (crashed), tensorrt:fp16 (unavailable)``: variants with no timing at any batch size."""
    out = []
    for variant in ctx.variants:
        rows = [r for r in ctx.rows if r.variant == variant]
        if rows and not any(is_measured(r) for r in rows):
            out.append(f"{variant} ({rows[0].status.replace('_', ' ')})")
    return ", ".join(out)


# ---------------------------------------------------------------- speed vs fidelity


def _fidelity_metric(ctx: _Context) -> tuple[str, str, bool, str] | None:
    """The first fidelity measure that tells the variants apart: (field, label, as percent, why).

    Accuracy or top-1 agreement reads best, but on a few verification images every variant often
    agrees 100%; then a finer measure (SQNR) is drawn and the title says why.
    """
    candidates = []
    for name, label, percent in _FIDELITY_METRICS:
        values = [_metric_value(r, name, percent) for r in ctx.measured]
        values = [v for v in values if v is not None]
        if values:
            candidates.append((name, label, percent, values))
    if not candidates:
        return None
    for name, label, percent, values in candidates:
        if max(values) - min(values) > 1e-9 * max(1.0, abs(max(values))):
            skipped = [c for c in candidates[: candidates.index((name, label, percent, values))] if c[2]]
            why = (f"{skipped[0][1].split(' (')[0]} is {skipped[0][3][0]:.0f}% for every variant, "
                   f"so {label.split(' (')[0]} is shown" if skipped else "")
            return name, label, percent, why
    name, label, percent, _ = candidates[0]
    return name, label, percent, ""


def _metric_value(row: ResultRow, name: str, percent: bool) -> float | None:
    value = getattr(row, name, None)
    if not _finite(value):
        return None
    v = float(value)  # type: ignore[arg-type]
    return 100.0 * v if percent and v <= 1.0 else v


def _frontier(points: list[tuple[float, float, ResultRow]]) -> list[tuple[float, float, ResultRow]]:
    """Points no other point beats on both speed and fidelity, by increasing speed."""
    best_y = -math.inf
    kept = []
    for x, y, row in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best_y:
            kept.append((x, y, row))
            best_y = y
    return sorted(kept, key=lambda p: p[0])


def _spread_index(count: int, limit: int) -> list[int]:
    """At most ``limit`` indexes into ``count`` items, always the first and last, the rest evenly spaced."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


# ---------------------------------------------------------------- small helpers


def _by_model_device(rows: list[ResultRow]) -> dict[tuple[str, str, str], list[ResultRow]]:
    """Rows per (model, device, pinned node): a ``--per-node`` run gets each node's charts."""
    out: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in rows:
        out.setdefault((r.model, r.device, r.pinned_node), []).append(r)
    return out


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"
