"""The fidelity table that ``infertune verify`` prints: every metric of every verified cell, the
failing metric named, accuracy when a labelled set was used, and which inputs verified and calibrated.

Reads result rows only (no torch, no runtime), like the rest of report/.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from infertune.results import ResultRow

RANDOM_WEIGHTS_CAPTION = ("agreement with random weights: shows each variant computes the same function as "
                          "FP32 eager, not that its predictions are right")


def fidelity_table(rows: Iterable[ResultRow], console: Console | None = None) -> None:
    """Print one table per (model, device, weights) with every fidelity metric per cell."""
    console = console or Console()
    rows = list(rows)
    if not rows:
        console.print("no result rows to show")
        return
    groups: dict[tuple[str, str, str], list[ResultRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.device, r.weights), []).append(r)
    for (model, device, weights), group in groups.items():
        accuracy = any(r.top1_acc is not None for r in group)
        random = weights.startswith("random")
        title = f"{model} · {device} · weights: {weights or 'unknown'}"
        table = Table(title=title, title_justify="left", caption=RANDOM_WEIGHTS_CAPTION if random else None,
                      caption_justify="left")
        headers = ["Variant", "Batch", "Status", "cos min", "SQNR (dB)", "max abs", "max rel",
                   "top-1 agree", "top-5 overlap"]
        if accuracy:
            headers += ["top-1 acc", "top-5 acc"]
        headers.append("Failing metric / reason")
        for h in headers:
            table.add_column(h, justify="left" if h in ("Variant", "Status", "Failing metric / reason") else "right",
                             overflow="fold")
        for r in group:
            cells = [r.variant, str(r.batch_size), r.status, _num(r.cosine_min, ".5f"), _num(r.sqnr_db, ".1f"),
                     _num(r.max_abs_err, ".3g"), _num(r.max_rel_err, ".2e"), _pct(r.top1_agreement),
                     _pct(r.top5_overlap)]
            if accuracy:
                cells += [_pct(r.top1_acc), _pct(r.top5_acc)]
            cells.append(r.error if r.status != "ok" else "")
            style = "red" if r.status == "fidelity_failed" else ("dim" if r.status != "ok" else "")
            table.add_row(*(Text(c) for c in cells), style=style)
        console.print(table)
        for line in input_lines(group):
            console.print(Text(line, style="dim"))
        console.print()


def input_lines(rows: list[ResultRow]) -> list[str]:
    """Which inputs verified the rows, which calibrated them, and the reference's accuracy."""
    lines = [f"verified on: {v}" for v in dict.fromkeys(r.verify_inputs for r in rows if r.verify_inputs)]
    lines += [f"INT8 calibrated on: {c}" for c in dict.fromkeys(r.calibration_inputs for r in rows
                                                               if r.calibration_inputs)]
    ref = next((r for r in rows if r.ref_top1_acc is not None), None)
    if ref is not None:
        lines.append(f"FP32 reference accuracy: top-1 {_pct(ref.ref_top1_acc)}, top-5 {_pct(ref.ref_top5_acc)}")
    return lines


def _num(value: float | None, spec: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return format(value, spec)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
