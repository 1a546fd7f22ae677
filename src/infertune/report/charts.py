"""PNG charts of one run, per (model, device): latency, throughput, speedup, distribution, speed vs fidelity.

Figures are drawn on matplotlib's Agg canvas attached per figure, not through pyplot, so making charts
never needs a display and never changes the plotting backend of a notebook or program that calls us.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from infertune.report.view import (
    BASELINE_VARIANT,
    group_rows,
    is_measured,
    is_overhead,
    keeps_predictions,
    scope_text,
    speedup,
)
from infertune.results import ResultRow

__all__ = ["CAPTIONS", "caption_for", "write_charts"]

#: what each chart answers, by the last part of its file name (``resnet50_cpu_latency.png``).
CAPTIONS = {
    "latency": "p50 latency per variant, grouped by batch size (lower is better)",
    "throughput": "throughput vs batch size: where batching stops paying off",
    "speedup": "speedup over pytorch:fp32 per batch size; hatched bars changed the predictions",
    "distribution": "per-iteration latency at the largest batch: wide boxes mean noisy timings",
    "speed_vs_fidelity": "speed vs fidelity: pick the rightmost point that passed (o), never an X",
}

_FAILED_HATCH = "///"


def caption_for(path: Path) -> str:
    """What a chart file answers, from its name; the chart's own title names model and device."""
    kind = next((k for k in sorted(CAPTIONS, key=len, reverse=True) if path.stem.endswith(k)), "")
    return CAPTIONS[kind] if kind else path.stem


def write_charts(rows: Iterable[ResultRow], samples: dict[str, list[float]] | None, out_dir: Path | str) -> list[Path]:
    """Write the charts of every (model, device) in ``rows`` as PNG files into ``out_dir``.

    A chart with nothing to draw (no measured rows, no raw samples, no fidelity numbers) is skipped
    rather than drawn empty. The null backend is left out: it measures the harness, not the model.

    Returns:
        The PNG paths written, in a stable order.
    """
    rows = list(rows)
    samples = samples or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for (model, device), subset in _by_model_device(rows).items():
        measured = [r for r in subset if is_measured(r) and not is_overhead(r)]
        if not measured:
            continue
        ctx = _Context(model, device, measured, subset, samples)
        for name, draw in _CHARTS:
            fig = draw(ctx)
            if fig is None:
                continue
            path = out / f"{_slug(model)}_{_slug(device)}_{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written.append(path)
    return written


class _Context:
    """The rows of one (model, device) and the lookups every chart needs."""

    def __init__(self, model: str, device: str, measured: list[ResultRow], all_rows: list[ResultRow],
                 samples: dict[str, list[float]]) -> None:
        self.model, self.device, self.measured, self.samples = model, device, measured, samples
        self.groups = group_rows(all_rows)
        self.batches = sorted({r.batch_size for r in measured})
        self.variants = list(dict.fromkeys(r.variant for r in measured))
        palette = _palette(len(self.variants))
        self.color = {v: palette[i] for i, v in enumerate(self.variants)}
        self.by_cell = {(r.variant, r.batch_size): r for r in measured}

    @property
    def hatch_note(self) -> str:
        """Explains hatched bars in a title, only when there are some."""
        failed = any(r.status == "fidelity_failed" for r in self.measured)
        return "; hatched: failed fidelity, do not deploy" if failed else ""

    def title(self, what: str) -> str:
        return f"{self.model} on {self.device}: {what}"

    def speedup(self, row: ResultRow) -> float | None:
        return speedup(row, self.groups[(row.model, row.device, row.batch_size)])


def _latency_bars(ctx: _Context) -> Any:
    """(a) p50 latency per variant, grouped by batch size; whiskers p5-p95 from samples, else min-p95."""
    fig, ax = _figure()
    use_p5 = all(ctx.samples.get(r.cell_id) for r in ctx.measured)
    _grouped_bars(ax, ctx, lambda r: r.latency_p50_ms, whiskers=lambda r: _whiskers(r, ctx.samples, use_p5))
    lows = [r.latency_p50_ms for r in ctx.measured]
    highs = [max(r.latency_p95_ms or 0.0, r.latency_p50_ms) for r in ctx.measured]
    # batch 1 next to batch 256, or a p95 tail 100x the median: on a linear axis the small bars vanish
    if max(highs) / max(min(lows), 1e-12) > 30:
        ax.set_yscale("log")
    ax.set_ylabel(f"p50 latency per batch (ms), {scope_text(ctx.measured)}")
    ax.set_title(ctx.title(f"latency per batch (whiskers: {'p5' if use_p5 else 'min'}–p95{ctx.hatch_note})"))
    return fig


def _throughput_lines(ctx: _Context) -> Any:
    """(b) throughput vs batch size, one line per variant; dashed where fidelity failed."""
    fig, ax = _figure()
    for variant in ctx.variants:
        pts = [(b, ctx.by_cell[(variant, b)]) for b in ctx.batches if (variant, b) in ctx.by_cell]
        pts = [(b, r) for b, r in pts if r.throughput_ips]
        if not pts:
            continue
        failed = any(r.status == "fidelity_failed" for _, r in pts)
        ax.plot([b for b, _ in pts], [r.throughput_ips for _, r in pts], marker="o", color=ctx.color[variant],
                linestyle="--" if failed else "-", label=variant + (" (failed fidelity)" if failed else ""))
    if len(ctx.batches) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ctx.batches, [str(b) for b in ctx.batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (items/s at p50)")
    ax.set_title(ctx.title("throughput vs batch size"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    return fig


def _speedup_bars(ctx: _Context) -> Any:
    """(c) speedup over pytorch:fp32 per batch size; hatched bars failed fidelity."""
    if not any(ctx.speedup(r) for r in ctx.measured):
        return None
    fig, ax = _figure()
    _grouped_bars(ax, ctx, ctx.speedup, label_fmt="{:.2f}x")
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    ax.set_ylabel(f"speedup over {BASELINE_VARIANT} (p50, higher is better)")
    ax.set_title(ctx.title(f"speedup vs PyTorch{ctx.hatch_note}"))
    return fig


def _distribution(ctx: _Context) -> Any:
    """(d) per-iteration latency distribution at the largest batch size that has raw samples."""
    batches = [b for b in ctx.batches if any(ctx.samples.get(r.cell_id) for r in ctx.measured if r.batch_size == b)]
    if not batches:
        return None
    batch = batches[-1]
    cells = [ctx.by_cell[(v, batch)] for v in ctx.variants if (v, batch) in ctx.by_cell]
    cells = [r for r in cells if ctx.samples.get(r.cell_id)]
    fig, ax = _figure(height=max(3.0, 0.6 * len(cells) + 1.5))
    data = [ctx.samples[r.cell_id] for r in cells]
    box = ax.boxplot(data, patch_artist=True, showfliers=True, whis=(5, 95),
                     flierprops={"markersize": 3, "alpha": 0.5}, **_horizontal())
    for patch, row in zip(box["boxes"], cells):
        patch.set_facecolor(ctx.color[row.variant])
        patch.set_alpha(0.6)
        if row.status == "fidelity_failed":
            patch.set_hatch(_FAILED_HATCH)
    ax.set_yticks(range(1, len(cells) + 1), [f"{r.variant}  (n={len(ctx.samples[r.cell_id])})" for r in cells])
    ax.invert_yaxis()  # ladder order top to bottom, as in the table
    lo, hi = min(min(d) for d in data), max(max(d) for d in data)
    if lo > 0 and hi / lo > 30:  # a long tail would squash every box into the left edge
        ax.set_xscale("log")
    ax.set_xlabel(f"latency per iteration (ms), {scope_text(cells)}")
    ax.set_title(ctx.title(f"latency distribution at batch {batch} (box: IQR, whiskers: p5–p95)"))
    ax.grid(axis="x", alpha=0.3)
    return fig


def _speed_vs_fidelity(ctx: _Context) -> Any:
    """(e) speedup against fidelity at the largest batch: pick the rightmost point that passed."""
    batch = ctx.batches[-1]
    cells = [ctx.by_cell[(v, batch)] for v in ctx.variants if (v, batch) in ctx.by_cell]
    metric, label = _fidelity_metric(cells)
    pts = [(r, ctx.speedup(r), getattr(r, metric)) for r in cells]
    pts = [(r, x, y) for r, x, y in pts if x is not None and y is not None and np.isfinite(y)]
    if not pts:
        return None
    fig, ax = _figure()
    for i, (row, x, y) in enumerate(sorted(pts, key=lambda p: p[1])):
        passed = keeps_predictions(row)
        ax.scatter([x], [y], s=80, color=ctx.color[row.variant], marker="o" if passed else "X",
                   edgecolors="black", linewidths=0.6, zorder=3)
        # neighbours in speed often share a cosine of ~1.0: alternate label heights so names stay apart
        ax.annotate(row.variant + ("" if passed else " (failed)"), (x, y), textcoords="offset points",
                    xytext=(6, 6 if i % 2 == 0 else -14), fontsize=8)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel(f"speedup over {BASELINE_VARIANT} at batch {batch} (higher is better)")
    ax.set_ylabel(label)
    ax.set_title(ctx.title(f"speed vs fidelity at batch {batch} (o passed, X failed)"))
    ax.grid(alpha=0.3)
    return fig


_CHARTS: list[tuple[str, Callable[[_Context], Any]]] = [
    ("latency", _latency_bars),
    ("throughput", _throughput_lines),
    ("speedup", _speedup_bars),
    ("distribution", _distribution),
    ("speed_vs_fidelity", _speed_vs_fidelity),
]


# ---------------------------------------------------------------- helpers


def _figure(height: float = 5.5) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height))
    FigureCanvasAgg(fig)  # headless, per figure: no global backend switch
    return fig, fig.add_subplot()


def _grouped_bars(ax: Any, ctx: _Context, value: Callable[[ResultRow], float | None],
                  whiskers: Callable[[ResultRow], tuple[float, float]] | None = None,
                  label_fmt: str | None = None) -> None:
    """One group of bars per batch size, one bar per variant, hatched where fidelity failed."""
    n = len(ctx.variants)
    width = 0.8 / max(n, 1)
    x = np.arange(len(ctx.batches))
    for i, variant in enumerate(ctx.variants):
        xs, ys, errs, hatches = [], [], [], []
        for j, batch in enumerate(ctx.batches):
            row = ctx.by_cell.get((variant, batch))
            v = value(row) if row is not None else None
            if v is None:
                continue
            xs.append(x[j] - 0.4 + width * (i + 0.5))
            ys.append(v)
            errs.append(whiskers(row) if whiskers else (0.0, 0.0))
            hatches.append(_FAILED_HATCH if row.status == "fidelity_failed" else "")
        if not xs:
            continue
        yerr = np.array(errs).T if whiskers else None
        bars = ax.bar(xs, ys, width, yerr=yerr, capsize=2, color=ctx.color[variant], label=variant,
                      edgecolor="black", linewidth=0.4)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        if label_fmt and len(xs) * n <= 40:  # labels stay readable up to ~40 bars
            ax.bar_label(bars, [label_fmt.format(y) for y in ys], fontsize=7, padding=2)
    ax.set_xticks(x, [f"batch {b}" for b in ctx.batches])
    # outside the axes: inside, the legend covers the first group's bars whatever "best" picks
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)


def _whiskers(row: ResultRow, samples: dict[str, list[float]], use_p5: bool) -> tuple[float, float]:
    """Distances below and above the p50 bar: to p5 (or min) and to p95."""
    p50 = row.latency_p50_ms or 0.0
    if use_p5:
        low = float(np.percentile(samples[row.cell_id], 5))
    else:
        low = row.latency_min_ms if row.latency_min_ms is not None else p50
    high = row.latency_p95_ms if row.latency_p95_ms is not None else p50
    return max(p50 - low, 0.0), max(high - p50, 0.0)


def _horizontal() -> dict[str, Any]:
    """Horizontal boxes (variant names readable on the y axis); the keyword changed in matplotlib 3.10."""
    import matplotlib

    major, minor = (int(p) for p in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _fidelity_metric(rows: list[ResultRow]) -> tuple[str, str]:
    """Cosine when recorded (every verified row has it), else SQNR."""
    if any(r.cosine_min is not None for r in rows):
        return "cosine_min", "lowest per-sample cosine vs FP32 reference (1 = identical)"
    return "sqnr_db", "SQNR vs FP32 reference (dB, higher is better)"


def _by_model_device(rows: list[ResultRow]) -> dict[tuple[str, str], list[ResultRow]]:
    out: dict[tuple[str, str], list[ResultRow]] = {}
    for r in rows:
        out.setdefault((r.model, r.device), []).append(r)
    return out


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"
