"""Which row of a run to hand over: the fastest that kept the predictions at a batch size, or the one asked for.

"Kept the predictions" and "fastest" are the report's own rules (``report.view``), so the export and
the report's winner card never disagree. A variant without an artifact (eager PyTorch, torch.compile)
cannot be handed over: the default pick then takes the fastest variant that has one and says which
faster one it passed over and why. A ``fidelity_failed``, ``failed`` or unmeasured row is refused
unless forced, and the reason travels into the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infertune.errors import InfertuneError
from infertune.report.view import (
    fastest_passing,
    fmt_ms,
    is_measured,
    keeps_predictions,
)
from infertune.results import ResultRow


class SelectionError(InfertuneError):
    """Nothing in the run can be handed over as asked; the message says what is there and what to pass."""


@dataclass(frozen=True)
class Choice:
    """The row to export, the sentence saying why it was picked, and why it is exported against the rules."""

    row: ResultRow
    selection: str
    #: "" for a measured variant that kept the predictions; else the reason, exported because of --force.
    forced: str = ""


def choose(rows: list[ResultRow], no_artifact: Callable[[ResultRow], str], batch_size: int | None = None,
           variant: str | None = None, force: bool = False) -> Choice:
    """Pick the row to export.

    Args:
        rows: the run's rows.
        no_artifact: "" when a row's variant can be handed over, else why not.
        batch_size: the batch size to pick at; None = the largest measured.
        variant: export exactly this variant (at ``batch_size``), instead of the fastest.
        force: export ``variant`` even if it failed fidelity, failed, or was not measured.
    """
    if not rows:
        raise SelectionError("the results file holds no rows: nothing to export")
    measured = sorted({r.batch_size for r in rows if is_measured(r)})
    present = sorted({r.batch_size for r in rows})
    if batch_size is not None and batch_size not in present:
        raise SelectionError(f"the run has no rows at batch size {batch_size}; it has {_list(present)}")
    if batch_size is None and not measured and not (force and variant):
        raise SelectionError("no variant of this run was measured (a `verify` run has no timings), so there is no "
                             "fastest one; export a named variant with --variant V --force (the manifest then "
                             "says it was not measured)")
    batch = batch_size if batch_size is not None else (measured or present)[-1]
    how = "as asked (--batch-size)" if batch_size is not None else \
        "the largest batch size measured; --batch-size picks another"
    group = [r for r in rows if r.batch_size == batch]
    if variant is not None:
        return _named(group, variant, batch, no_artifact, force)
    exportable = [r for r in group if not no_artifact(r)]
    best = fastest_passing(exportable)
    if best is None:
        raise SelectionError(f"no variant at batch {batch} kept the predictions and has an artifact to hand over "
                             f"({_describe(group, no_artifact)}); name one with --variant V (and --force to "
                             "export one that failed)")
    selection = f"fastest variant that kept the predictions at batch {batch} ({how})"
    overall = fastest_passing(group)
    if overall is not None and overall is not best:
        selection += (f"; {overall.variant} was faster ({fmt_ms(overall.latency_p50_ms)} ms vs "
                      f"{fmt_ms(best.latency_p50_ms)} ms p50) but has no artifact: {no_artifact(overall)}")
    return Choice(best, selection)


def _named(group: list[ResultRow], variant: str, batch: int, no_artifact: Callable[[ResultRow], str],
           force: bool) -> Choice:
    row = next((r for r in group if r.variant == variant), None)
    if row is None:
        raise SelectionError(f"the run has no {variant} row at batch {batch}; its variants there: "
                             f"{_list(sorted(r.variant for r in group))}")
    reason = no_artifact(row)
    if reason:
        raise SelectionError(f"{variant} cannot be exported: {reason}")
    problem = refusal(row)
    if problem and not force:
        raise SelectionError(f"refusing to export {variant} at batch {batch}: {problem}. --force exports it anyway "
                             "and the manifest then says so")
    return Choice(row, f"{variant} at batch {batch}, as asked (--variant)", forced=problem)


def refusal(row: ResultRow) -> str:
    """Why a row must not be handed over without --force ("" when it may)."""
    if keeps_predictions(row):
        return ""
    if row.status == "ok" and not is_measured(row):
        return "it was not measured (no latency: a `verify` run, or timing was skipped)"
    if row.status == "ok":
        return "it was not verified against the FP32 reference"
    return f"its status is {row.status}" + (f" ({row.error})" if row.error else "")


def _describe(group: list[ResultRow], no_artifact: Callable[[ResultRow], str]) -> str:
    parts = []
    for r in group:
        why = no_artifact(r) and "no artifact"
        parts.append(f"{r.variant}: {why or refusal(r) or 'ok'}")
    return "; ".join(parts) or "no rows"


def _list(items: list) -> str:
    return ", ".join(str(i) for i in items) or "none"
