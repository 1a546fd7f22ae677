"""Compare two runs cell by cell: the p50 latency ratio per common (model, variant, batch, device).

Meant for regressions ("did the new runtime version slow ONNX Runtime down?"): ratios within the
noise band (about 10% on a shared VM) are labelled ties, not wins.
"""

from __future__ import annotations

from pathlib import Path

from infertune.errors import InfertuneError
from infertune.report.data import load_report_data
from infertune.report.view import fmt_ms, is_measured
from infertune.results import ResultRow

__all__ = ["compare_runs"]

#: ratios within this band of 1.0 are called a tie.
TIE_BAND = 0.10

_Key = tuple[str, str, int, str]


def compare_runs(path_a: Path | str, path_b: Path | str) -> str:
    """A markdown table of B's p50 over A's p50 for every measured cell the two runs share.

    Raises:
        InfertuneError: a file is not a results file, or the runs share no measured cell.
    """
    a, b = load_report_data(path_a), load_report_data(path_b)
    cells_a, cells_b = _cells(a.rows), _cells(b.rows)
    common = [k for k in cells_a if k in cells_b]
    if not common:
        raise InfertuneError(
            f"{a.source.name} and {b.source.name} have no measured (model, variant, batch, device) in common: "
            "compare two runs of the same model and ladder"
        )
    lines = [
        f"A = `{a.source.name}`, B = `{b.source.name}`; ratio = B p50 / A p50 (above 1: B is slower).",
        "",
        "| Model | Device | Variant | Batch | A p50 (ms) | B p50 (ms) | B/A | Verdict |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for key in common:
        ra, rb = cells_a[key], cells_b[key]
        ratio = rb.latency_p50_ms / ra.latency_p50_ms  # type: ignore[operator]
        model, variant, batch, device = key
        lines.append(f"| {model} | {device} | {variant} | {batch} | {fmt_ms(ra.latency_p50_ms)} | "
                     f"{fmt_ms(rb.latency_p50_ms)} | {ratio:.2f} | {_verdict(ratio, ra, rb)} |")
    only_a = [k for k in cells_a if k not in cells_b]
    only_b = [k for k in cells_b if k not in cells_a]
    for name, keys in (("A", only_a), ("B", only_b)):
        if keys:
            lines += ["", f"Measured only in {name}: " + ", ".join(f"{k[1]} batch {k[2]}" for k in keys)]
    return "\n".join(lines) + "\n"


def _cells(rows: list[ResultRow]) -> dict[_Key, ResultRow]:
    return {(r.model, r.variant, r.batch_size, r.device): r for r in rows if is_measured(r)}


def _verdict(ratio: float, a: ResultRow, b: ResultRow) -> str:
    noisy = " (noisy)" if a.noisy or b.noisy else ""
    if ratio > 1 + TIE_BAND:
        return f"B slower{noisy}"
    if ratio < 1 - TIE_BAND:
        return f"B faster{noisy}"
    return f"tie{noisy}"
