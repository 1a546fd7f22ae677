"""The same ladder on each node side by side (``--per-node`` runs): a table per (model, device, batch size)
with a line per variant and a column per node, so one model's speed on each kind of hardware reads across.

Each cell is that node's own measurement: its p50 and its speedup over the same node's ``pytorch:fp32``
(``results.fill_speedups``), ★ on each node's fastest variant that kept the predictions (``report.view``'s
rule). Files with fewer than two pinned nodes have no such table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from infertune.report.view import (
    fastest_passing,
    fmt_ms,
    fmt_speedup,
    group_rows,
    is_measured,
    md_escape,
    node_title,
    speedup,
    status_word,
)
from infertune.results import ResultRow

__all__ = ["SideBySide", "print_side_by_side", "side_by_side", "side_by_side_markdown"]


@dataclass(frozen=True)
class NodeCell:
    """One variant on one node: ``12.3 ms · 1.52×``, a status word, or ``—`` (not in that node's rows)."""

    text: str
    best: bool = False


@dataclass(frozen=True)
class SideBySide:
    """One (model, device, batch size) across the nodes."""

    title: str
    #: ``node-a (AMD EPYC 7B13)``: each node's name and hardware, in the file's order.
    nodes: tuple[str, ...]
    #: (variant, one cell per node) in ladder order.
    lines: tuple[tuple[str, tuple[NodeCell, ...]], ...]
    #: per node: "node-a: openvino:int8 (2.10×)", or that nothing passed there.
    fastest: tuple[str, ...]


def side_by_side(rows: Iterable[ResultRow]) -> list[SideBySide]:
    """The side-by-side tables of ``rows``; none when fewer than two pinned nodes are in them."""
    rows = list(rows)
    nodes = list(dict.fromkeys(r.pinned_node for r in rows if r.pinned_node))
    if len(nodes) < 2:
        return []
    tables: dict[tuple[str, str, int], dict[str, list[ResultRow]]] = {}
    for (model, device, batch, node), group in group_rows(rows).items():
        if node:
            tables.setdefault((model, device, batch), {})[node] = group
    out = []
    for (model, device, batch), by_node in tables.items():
        here = [n for n in nodes if n in by_node]
        best = {n: fastest_passing(by_node[n]) for n in here}
        variants = dict.fromkeys(r.variant for n in here for r in by_node[n])
        lines = tuple((v, tuple(_cell(next((r for r in by_node[n] if r.variant == v), None), by_node[n], best[n])
                                for n in here)) for v in variants)
        fastest = tuple(f"{n}: {_fastest(best[n], by_node[n])}" for n in here)
        out.append(SideBySide(f"{model} · {device} · batch {batch}", tuple(node_title(n, rows) for n in here),
                              lines, fastest))
    return out


def _cell(row: ResultRow | None, group: list[ResultRow], best: ResultRow | None) -> NodeCell:
    if row is None:
        return NodeCell("—")
    if not is_measured(row):
        return NodeCell(status_word(row))
    gain = speedup(row, group)
    text = f"{fmt_ms(row.latency_p50_ms)} ms" + (f" · {fmt_speedup(gain, '×')}" if gain is not None else "")
    if row.status == "fidelity_failed":
        text += f" ({status_word(row)})"
    return NodeCell(text + (" ★" if row is best else ""), row is best)


def _fastest(best: ResultRow | None, group: list[ResultRow]) -> str:
    if best is None:
        return "none kept the predictions"
    gain = speedup(best, group)
    return best.variant + (f" ({fmt_speedup(gain, '×')} vs its own pytorch:fp32)" if gain is not None else "")


def print_side_by_side(rows: Iterable[ResultRow], console: Console) -> None:
    """The tables on the terminal (rich), each followed by its nodes' fastest variants."""
    for table_view in side_by_side(rows):
        table = Table(title=f"{table_view.title}  (p50 · speedup vs the node's own pytorch:fp32)",
                      title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("Format")
        for node in table_view.nodes:
            table.add_column(Text(node), justify="right")
        for variant, cells in table_view.lines:
            table.add_row(Text(variant), *(Text(c.text, style="bold green" if c.best else "") for c in cells))
        console.print(table)
        console.print(Text("fastest per node: " + "; ".join(table_view.fastest), style="bold"))
        console.print()


def side_by_side_markdown(rows: Iterable[ResultRow]) -> list[str]:
    """The tables as GitHub markdown (a ``##`` section), or nothing for files of fewer than two nodes."""
    tables = side_by_side(rows)
    if not tables:
        return []
    intro = ("Each node ran the whole ladder (`--per-node`); each cell is that node's p50 and its speedup over "
             "the same node's pytorch:fp32. ★ each node's fastest variant that kept the predictions.")
    parts = ["## Side by side per node", "", intro, ""]
    for view in tables:
        parts += [f"### {md_escape(view.title)}", "",
                  "| Format | " + " | ".join(md_escape(n) for n in view.nodes) + " |",
                  "|---|" + "---:|" * len(view.nodes)]
        for variant, cells in view.lines:
            shown = [f"**{md_escape(c.text)}**" if c.best else md_escape(c.text) for c in cells]
            parts.append(f"| {md_escape(variant)} | " + " | ".join(shown) + " |")
        parts += ["", "Fastest per node: " + md_escape("; ".join(view.fastest)), ""]
    return parts
