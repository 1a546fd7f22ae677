"""Result rows -> what a table shows: groups per (model, device, batch, node), the winner, display strings.

Every renderer (rich terminal, markdown, HTML) reads the same ``GroupView`` so the three never
disagree about which variant won or how a number is rounded. Numbers are formatted here, at display
time only; the rows themselves keep plain floats.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# the variant every speedup is measured against (the seed's "PyTorch | 1.0x" line)
from infertune.ladder import BASELINE as BASELINE_VARIANT
from infertune.results import HARNESS_BACKENDS, ResultRow

#: statuses whose rows carry no timings. Any other status with a p50 is shown as measured (a fidelity
#: failure is measured, just not trusted; an unverifiable row is measured, but its reference was too
#: degenerate to judge it).
UNMEASURED_STATUSES = frozenset({"unavailable", "failed", "crashed", "timeout", "interrupted"})

#: the noise rules used by ``measure.stats``: IQR over median above 10% (torch.utils.benchmark's), or the
#: medians of the first and second half of the samples more than 2% apart (drift while timed).
NOISE_THRESHOLD = 0.10
DRIFT_THRESHOLD = 0.02

GroupKey = tuple[str, str, int, str]  # (model, device, batch_size, pinned_node: "" unless --per-node)


def group_key(row: ResultRow) -> GroupKey:
    return (row.model, row.device, row.batch_size, row.pinned_node)


def group_rows(rows: Iterable[ResultRow]) -> dict[GroupKey, list[ResultRow]]:
    """Rows per (model, device, batch size, pinned node): models and devices in file order, batch sizes
    ascending, and a ``--per-node`` run's nodes one after the other within each batch size.

    Rows inside a group keep file order, which is the run's ladder order (baseline first).
    """
    groups: dict[GroupKey, list[ResultRow]] = {}
    first_seen: dict[tuple[str, str], int] = {}
    nodes: dict[str, int] = {}
    for row in rows:
        first_seen.setdefault((row.model, row.device), len(first_seen))
        nodes.setdefault(row.pinned_node, len(nodes))
        groups.setdefault(group_key(row), []).append(row)
    order = sorted(groups, key=lambda k: (first_seen[(k[0], k[1])], k[2], nodes[k[3]]))
    return {k: groups[k] for k in order}


def node_hardware(rows: Iterable[ResultRow]) -> str:
    """What a node is, from its rows: ``AMD EPYC 7B13 · NVIDIA H200`` (CPU model, then the GPU a job had)."""
    cpu = next((r.node_cpu for r in rows if r.node_cpu), "")
    gpus = list(dict.fromkeys(r.node_gpu for r in rows if r.node_gpu))
    return " · ".join(filter(None, [cpu, *gpus]))


def node_title(node: str, rows: Iterable[ResultRow]) -> str:
    """``node-a (AMD EPYC 7B13)``: a pinned node's name and what it is."""
    hardware = node_hardware([r for r in rows if r.pinned_node == node])
    return f"{node} ({hardware})" if hardware else node


def is_measured(row: ResultRow) -> bool:
    return row.status not in UNMEASURED_STATUSES and _finite(row.latency_p50_ms)


def is_overhead(row: ResultRow) -> bool:
    """The harness's own row (null backend): its latency is the tool's cost, not a way to run the model."""
    return row.role == "harness" or row.backend in HARNESS_BACKENDS  # files written before ``role`` existed


def keeps_predictions(row: ResultRow) -> bool:
    """Measured, status ok, not known to fail fidelity, and an actual way to run the model."""
    return (
        row.status == "ok"
        and _finite(row.latency_p50_ms)
        and row.fidelity_ok is not False
        and not is_overhead(row)
    )


def best_variants(rows: Iterable[ResultRow]) -> dict[GroupKey, ResultRow]:
    """The fastest row (lowest p50 latency) that has status ``ok`` per (model, device, batch size, pinned node).

    Rows with status ``fidelity_failed`` are never picked however fast they are, nor is the null
    backend (it measures the harness, it does not run the model). Groups where nothing passed are absent.
    """
    best: dict[GroupKey, ResultRow] = {}
    for key, group in group_rows(rows).items():
        winner = fastest_passing(group)
        if winner is not None:
            best[key] = winner
    return best


def fastest_passing(group: list[ResultRow]) -> ResultRow | None:
    """The lowest-p50 row of one group that keeps predictions; None when no row does."""
    passing = [r for r in group if keeps_predictions(r)]
    return min(passing, key=lambda r: r.latency_p50_ms) if passing else None  # type: ignore[arg-type, return-value]


def speedup(row: ResultRow, group: list[ResultRow]) -> float | None:
    """Speedup over ``pytorch:fp32`` in the same group: the stored value, else computed from the p50s.

    None for the harness's row: a null call is not a faster way to run the model.
    """
    if not is_measured(row) or is_overhead(row):
        return None
    if _finite(row.speedup_vs_pytorch):
        return row.speedup_vs_pytorch
    base = next((r for r in group if r.variant == BASELINE_VARIANT and is_measured(r)), None)
    if base is None or not row.latency_p50_ms:
        return None
    return base.latency_p50_ms / row.latency_p50_ms  # type: ignore[operator]


# ---------------------------------------------------------------- display strings


def fmt_ms(value: float | None) -> str:
    """Milliseconds with about three significant digits (15.2, 3.20, 0.912, 1,234)."""
    if not _finite(value):
        return "—"
    v = float(value)  # type: ignore[arg-type]
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ips(value: float | None) -> str:
    """Items per second: whole numbers from 100 up, as the seed's table shows them."""
    if not _finite(value):
        return "—"
    v = float(value)  # type: ignore[arg-type]
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_speedup(value: float | None, sign: str = "x") -> str:
    return f"{value:.2f}{sign}" if _finite(value) else "—"


def fmt_seconds(value: float | None, cached: bool | None = None) -> str:
    """Conversion seconds; ``(cached)`` when the artifact came from the cache."""
    if not _finite(value):
        return "—"
    text = f"{value:.1f}" if value >= 0.1 else f"{value:.2f}"  # type: ignore[operator]
    return f"{text} (cached)" if cached else text


def fmt_mb(value: float | None) -> str:
    return f"{value:,.0f}" if _finite(value) and value >= 10 else (f"{value:.1f}" if _finite(value) else "—")  # type: ignore[operator]


def fmt_pct(value: float | None) -> str:
    return f"{100 * value:.0f}%" if _finite(value) else "—"


def short_error(error: str, limit: int = 140) -> str:
    """First non-empty line of an error, cut to ``limit`` characters (the full text stays in the HTML)."""
    line = next((ln.strip() for ln in (error or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fidelity_text(row: ResultRow) -> str:
    """``cos 0.9991`` when verified and within tolerance, ``FAILED: reason`` when not."""
    if row.status == "fidelity_failed" or row.fidelity_ok is False:
        reason = short_error(row.error, 80) or (f"cos {row.cosine_min:.4f}" if _finite(row.cosine_min) else "")
        return f"FAILED: {reason}" if reason else "FAILED"
    if not is_measured(row):
        return "—"
    if row.status == "unverifiable":
        return "unverifiable: degenerate reference"
    if is_overhead(row):
        return "n/a (no outputs)"
    if _finite(row.cosine_min):
        return f"cos {row.cosine_min:.4f}"
    if _finite(row.sqnr_db):
        return f"SQNR {row.sqnr_db:.1f} dB"
    if row.variant == BASELINE_VARIANT:
        return "reference"
    return "not verified"


def status_word(row: ResultRow) -> str:
    """One or two words for a table cell: ``ok``, ``harness``, ``✗ fidelity``, ``unavailable``...

    A status this version does not know is shown as written (underscores as spaces), never dropped.
    """
    if row.status == "ok":
        return "harness" if is_overhead(row) else "ok"
    if row.status == "fidelity_failed":
        return "✗ fidelity"
    return row.status.replace("_", " ") or "—"


#: the note under a table for the harness's row.
HARNESS_NOTE = ("measures the harness itself (a call that does no work): its p50 is the tool's own overhead "
                "per call, included in every other latency; it is not a variant and has no speedup")


def reason_text(row: ResultRow, limit: int = 300) -> str:
    """Why a row is not a plain ``ok``, in full (first line of the error), for a numbered note; empty if none."""
    if is_overhead(row) and row.status == "ok":
        return HARNESS_NOTE
    if row.status == "ok":
        return ""
    reason = short_error(row.error, limit)
    if row.status == "fidelity_failed":
        cos = f"cosine {row.cosine_min:.4f}" if _finite(row.cosine_min) else ""
        return f"fidelity failed: {reason or cos or 'outside tolerance'}"
    return f"{status_word(row)}: {reason}" if reason else ""


def fidelity_word(row: ResultRow) -> str:
    """The fidelity cell without the reason (which goes to a note): ``cos 0.9991``, ``✗ cos 0.9100``."""
    if row.status == "fidelity_failed" or row.fidelity_ok is False:
        return f"✗ cos {row.cosine_min:.4f}" if _finite(row.cosine_min) else "✗ failed"
    return fidelity_text(row)


def noise_reason(row: ResultRow) -> str:
    """Which noise rule flagged the row: ``IQR/median 12%`` and/or ``halves 3.1% apart``."""
    parts = []
    if _finite(row.iqr_over_median) and row.iqr_over_median > NOISE_THRESHOLD:  # type: ignore[operator]
        parts.append(f"IQR/median {fmt_pct(row.iqr_over_median)}")
    if _finite(row.drift_over_median) and row.drift_over_median > DRIFT_THRESHOLD:  # type: ignore[operator]
        parts.append(f"halves {100 * row.drift_over_median:.1f}% apart")  # type: ignore[operator]
    return ", ".join(parts) or "flagged noisy"


#: markdown punctuation that could turn text from a result file into emphasis, code, links or a strikethrough.
_MD_SPECIAL = re.compile(r"([\\`*\[\]~|])")
_MD_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword _ is literal already


def md_escape(text: str) -> str:
    """Text from a result file as one line of inert markdown: HTML and markdown syntax shown as typed.

    ``<script>`` becomes ``&lt;script&gt;``, ``|`` cannot split a table cell, ``[x](y)`` makes no link;
    ``torch_compile`` stays readable because an underscore inside a word is literal in markdown.
    """
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _MD_EDGE_UNDERSCORE.sub(r"\\_", text)


def scope_text(rows: Iterable[ResultRow]) -> str:
    """Which latency the numbers are ("end-to-end", "device"), as recorded in the rows."""
    scopes = sorted({r.latency_scope for r in rows if r.latency_scope})
    return " / ".join(s.replace("_", "-") for s in scopes) or "unlabelled"


# ---------------------------------------------------------------- the view


@dataclass
class LineView:
    """One table line: display strings plus the flags a renderer styles by."""

    row: ResultRow
    variant: str
    latency: str
    throughput: str
    speedup: str
    p95: str
    fidelity: str
    kind: str  # "ok", "best", "fidelity_failed", "error", "overhead"
    noisy: bool
    samples: int | None = None
    convert: str = "—"
    size: str = "—"
    memory: str = "—"
    p99: str = "—"


@dataclass
class GroupView:
    """One (model, device, batch, node) table and the lines printed under it."""

    key: GroupKey
    title: str
    scope: str
    lines: list[LineView]
    best: ResultRow | None
    best_speedup: float | None
    has_baseline: bool
    notes: list[str] = field(default_factory=list)

    @property
    def noisy_lines(self) -> list[LineView]:
        return [ln for ln in self.lines if ln.noisy]

    @property
    def flagged_lines(self) -> list[LineView]:
        """Lines whose speedup carries a caveat (busy machine, drifted baseline: ``ResultRow.speedup_flag``)."""
        return [ln for ln in self.lines if ln.row.speedup_flag and ln.speedup != "—"]

    def flag_footnote(self) -> str:
        """In words: which speedups are not to be trusted, and why."""
        reasons: dict[str, list[str]] = {}
        for ln in self.flagged_lines:
            for reason in ln.row.speedup_flag.split("; "):
                reasons.setdefault(reason, []).append(ln.variant)
        parts = [f"{reason} ({', '.join(variants)})" for reason, variants in reasons.items()]
        return ("⚠ speedups not to be trusted: " + "; ".join(parts) + ". The numbers measure a machine that was "
                "shared or changing, not only the variants: rerun on a quiet machine (or with --rounds 3)")

    def fastest_sentence(self, sign: str = "×") -> str:
        """"fastest that keeps predictions: X (Y× vs PyTorch)", or why there is none."""
        if self.best is None:
            return "fastest that keeps predictions: none (no variant both ran and passed fidelity)"
        if self.best_speedup is None:
            return f"fastest that keeps predictions: {self.best.variant} (no {BASELINE_VARIANT} row to compare with)"
        caveat = " ⚠ see below" if self.best.speedup_flag else ""
        return (f"fastest that keeps predictions: {self.best.variant} "
                f"({fmt_speedup(self.best_speedup, sign)} vs PyTorch{caveat})")

    def noise_footnote(self) -> str:
        parts = [f"{ln.variant} {noise_reason(ln.row)}" for ln in self.noisy_lines]
        return (f"† noisy: IQR/median above {fmt_pct(NOISE_THRESHOLD)}, or the medians of the first and second "
                f"half of the samples more than {fmt_pct(DRIFT_THRESHOLD)} apart ({'; '.join(parts)}): a rerun "
                "may differ by that much; use --rounds 3, more iterations or a quieter machine")


def build_views(rows: Iterable[ResultRow], samples: dict[str, list[float]] | None = None) -> list[GroupView]:
    """One ``GroupView`` per (model, device, batch size, pinned node), in display order."""
    samples = samples or {}
    views: list[GroupView] = []
    for key, group in group_rows(rows).items():
        best = fastest_passing(group)
        lines = [_line(r, group, r is best, samples.get(r.cell_id)) for r in group]
        notes = list(dict.fromkeys(f"{r.variant}: {r.note}" for r in group if r.note))
        views.append(GroupView(
            key=key,
            title=f"{key[0]} · {key[1]} · batch {key[2]}" + (f" · on {node_title(key[3], group)}" if key[3] else ""),
            scope=scope_text(group),
            lines=lines,
            best=best,
            best_speedup=speedup(best, group) if best is not None else None,
            has_baseline=any(r.variant == BASELINE_VARIANT and is_measured(r) for r in group),
            notes=notes,
        ))
    return views


def _line(row: ResultRow, group: list[ResultRow], is_best: bool, samples: list[float] | None) -> LineView:
    measured = is_measured(row)
    if is_best:
        kind = "best"
    elif row.status == "fidelity_failed":
        kind = "fidelity_failed"
    elif not measured:
        kind = "error"
    elif is_overhead(row):
        kind = "overhead"
    else:
        kind = "ok"
    return LineView(
        row=row,
        variant=row.variant,
        latency=fmt_ms(row.latency_p50_ms) if measured else "—",
        throughput=fmt_ips(row.throughput_ips) if measured and not is_overhead(row) else "—",
        speedup=_flagged(fmt_speedup(speedup(row, group)), row),
        p95=fmt_ms(row.latency_p95_ms) if measured else "—",
        fidelity=fidelity_text(row),
        kind=kind,
        noisy=bool(row.noisy) and measured,
        samples=len(samples) if samples is not None else None,
        convert=fmt_seconds(row.convert_s, row.cache_hit),
        size=fmt_mb(row.artifact_mb),
        memory=fmt_mb(row.peak_host_mb),
        p99=fmt_ms(row.latency_p99_ms) if measured else "—",
    )


def _flagged(text: str, row: ResultRow) -> str:
    return f"{text} ⚠" if row.speedup_flag and text != "—" else text


def _finite(value: float | None) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
