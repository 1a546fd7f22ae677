"""The seed's results table (``Format | Latency (ms) | Throughput (img/sec) | Speedup``), for the
terminal (rich) and as GitHub markdown, one table per (model, device, batch size).

Extra columns (p95, fidelity, one-off costs, status) are kept compact so the seed's four columns still read first.
GPU tables add ``E2E p50 (ms)``: the latency of a second loop timed from host input to host output,
next to the device latency (input already on the GPU, CUDA events) of the main columns.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from infertune.report.view import (
    GroupView,
    LineView,
    best_variants,
    build_views,
    fmt_ms,
    md_escape,
)
from infertune.results import ResultRow

__all__ = ["HEADERS", "best_variants", "markdown_table", "seed_table"]

#: the seed README's four columns, then ours.
HEADERS = ("Format", "Latency (ms)", "Throughput (img/sec)", "Speedup", "p95 (ms)", "Fidelity",
           "Convert (s)", "Size (MB)", "Peak mem (MB)", "Status")
#: printed under a table whose rows ran with random weights.
RANDOM_WEIGHTS_NOTE = ("fidelity is agreement with random weights: it shows each variant computes the same "
                       "function as FP32 eager, not that its predictions are right (use trained weights for that)")
E2E_HEADER = "E2E p50 (ms)"
#: columns right-aligned as numbers.
_NUMERIC = {"Latency (ms)", "Throughput (img/sec)", "Speedup", "p95 (ms)", E2E_HEADER, "Convert (s)", "Size (MB)",
            "Peak mem (MB)"}

_STYLES = {"best": "bold green", "fidelity_failed": "red", "error": "dim", "overhead": "dim italic", "ok": ""}


def seed_table(rows: Iterable[ResultRow], console: Console | None = None) -> None:
    """Print one rich table per (model, device, batch size), with the winner and any notes under it.

    Args:
        rows: result rows, in the order the run wrote them.
        console: where to print (a ``Console(record=True)`` in tests); the terminal by default.
    """
    console = console or Console()
    views = build_views(rows)
    if not views:
        console.print("no result rows to show")
        return
    for view in views:
        console.print(_rich_table(view))
        for line in _under_lines(view):
            console.print(Text(line, style="bold" if line.startswith("fastest") else "dim"))
        console.print()


def _random_weights(view: GroupView) -> bool:
    """True when the group's rows ran with random weights: its agreement numbers say nothing about accuracy."""
    weights = {ln.row.weights for ln in view.lines if ln.row.weights}
    return bool(weights) and all(w.startswith("random") for w in weights)


def _has_e2e(view: GroupView) -> bool:
    """True when some row of the group was also timed end to end (GPU runners)."""
    return any(ln.row.e2e_latency_p50_ms is not None for ln in view.lines)


def _headers(view: GroupView) -> tuple[str, ...]:
    headers = list(HEADERS)
    if _has_e2e(view):
        headers.insert(headers.index("p95 (ms)") + 1, E2E_HEADER)
    if _random_weights(view):
        headers[headers.index("Fidelity")] = "Fidelity (random weights)"
    return tuple(headers)


def _rich_table(view: GroupView) -> Table:
    table = Table(title=f"{view.title}  (p50 {view.scope} latency)", title_justify="left")
    for header in _headers(view):
        numeric = header in _NUMERIC
        # Status carries the reason a cell did not run: let it wrap rather than cut it off.
        table.add_column(header, justify="right" if numeric else "left",
                         overflow="fold", no_wrap=header != "Status")
    for line in view.lines:
        # Text(), never markup strings: "pip install infertune[openvino]" must print as written.
        table.add_row(*(Text(cell) for cell in _cells(line, _has_e2e(view))), style=_STYLES[line.kind])
    return table


def _cells(line: LineView, e2e: bool = False) -> list[str]:
    variant = f"{line.variant} ★" if line.kind == "best" else line.variant
    latency = f"{line.latency} †" if line.noisy else line.latency
    e2e_cell = [fmt_ms(line.row.e2e_latency_p50_ms)] if e2e else []
    return [variant, latency, line.throughput, line.speedup, line.p95, *e2e_cell, line.fidelity,
            line.convert, line.size, line.memory, line.status]


def _under_lines(view: GroupView) -> list[str]:
    """The winner sentence, the noise footnote, and the run's notes ("INT8 slower than FP32: ...")."""
    lines = [view.fastest_sentence()]
    if _random_weights(view):
        lines.append(RANDOM_WEIGHTS_NOTE)
    if view.noisy_lines:
        lines.append(view.noise_footnote())
    lines.extend(f"note: {note}" for note in view.notes)
    return lines


def markdown_table(rows: Iterable[ResultRow]) -> str:
    """The same tables as GitHub markdown: a ``###`` heading per group, the winner in bold."""
    parts: list[str] = []
    for view in build_views(rows):
        parts.append(f"### {_md_escape(view.title)}\n")
        parts.append(f"p50 {_md_escape(view.scope)} latency per batch; speedup vs pytorch:fp32.\n")
        headers = _headers(view)
        parts.append("| " + " | ".join(headers) + " |")
        parts.append("|" + "|".join(("---:" if h in _NUMERIC else "---") for h in headers) + "|")
        for line in view.lines:
            cells = [_md_escape(c) for c in _cells(line, _has_e2e(view))]
            if line.kind == "best":
                cells = [f"**{c}**" for c in cells]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
        parts.extend(f"{_md_escape(line)}  " for line in _under_lines(view))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n" if parts else "_no result rows_\n"


def _md_escape(text: str) -> str:
    """Keep a cell on one line, its pipes from splitting it, and markup in result files inert."""
    return md_escape(text)
