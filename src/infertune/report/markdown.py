"""The report as GitHub markdown (``report.md``): the fastest verified variant per batch size, failures
with their reasons, the seed's table per batch size, the environment and the charts.

Every string that comes from a result file goes through ``md_escape``: a model named
``<script>…</script>|x`` shows as typed and cannot split a table cell or inject HTML.
"""

from __future__ import annotations

from pathlib import Path

from infertune.report import environment
from infertune.report.charts import caption_for
from infertune.report.data import ReportData
from infertune.report.nodes import side_by_side_markdown
from infertune.report.table import markdown_table
from infertune.report.view import (
    build_views,
    fmt_ips,
    fmt_ms,
    fmt_speedup,
    md_escape,
    short_error,
)

__all__ = ["render_markdown"]


def render_markdown(data: ReportData, charts: list[Path]) -> str:
    """The whole markdown summary as one string; chart images are linked by file name (same folder)."""
    models = ", ".join(dict.fromkeys(r.model for r in data.rows))
    devices = ", ".join(dict.fromkeys(r.device for r in data.rows))
    sources = ", ".join(md_escape(p.name) for p in data.sources)
    parts = [f"# infertune results: {md_escape(models)} on {md_escape(devices)}", "", f"From {sources}.", ""]
    random = sorted({r.model for r in data.rows if r.weights == "random"})
    if random:
        parts += [(f"> Random weights for {md_escape(', '.join(random))}: speed and fidelity to FP32 are "
                   "measured as usual; accuracy would mean nothing."), ""]
    parts.extend(f"> {md_escape(note)}\n" for note in data.notes)
    parts += _fastest(data), _failures(data)
    parts += side_by_side_markdown(data.rows)
    parts += ["## Results per batch size", "", markdown_table(data.rows).rstrip(), ""]
    parts += _environment(data)
    if charts:
        parts += ["## Charts", ""]
        for path in charts:
            parts += [f"![{md_escape(caption_for(path))}]({path.name})", ""]
    return "\n".join(parts).rstrip() + "\n"


def _fastest(data: ReportData) -> str:
    lines = ["## Fastest variant that kept the predictions", "",
             ("| Model · device | Batch | Fastest verified variant | p50 (ms) | p99 (ms) | Throughput (img/sec) "
              "| Speedup vs PyTorch |"),
             "|---|---:|---|---:|---:|---:|---:|"]
    for view in build_views(data.rows):
        model, device, batch, node = view.key
        where = f"{md_escape(model)} · {md_escape(device)}" + (f" · {md_escape(node)}" if node else "")
        best = view.best
        if best is None:
            cells = ["none: no variant both ran and passed its fidelity check", "—", "—", "—", "—"]
        else:
            cells = [f"**{md_escape(best.variant)}**", fmt_ms(best.latency_p50_ms), fmt_ms(best.latency_p99_ms),
                     fmt_ips(best.throughput_ips), fmt_speedup(view.best_speedup, "×")]
        lines.append(f"| {where} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _failures(data: ReportData) -> str:
    """Each (variant, status, reason) once, with the batch sizes it hit."""
    merged: dict[tuple[str, str, str, str, str], list[int]] = {}
    for r in data.rows:
        if r.status != "ok":
            where = f"{r.model} · {r.device}" + (f" · {r.pinned_node}" if r.pinned_node else "")
            merged.setdefault((where, r.variant, r.status, r.error), []).append(r.batch_size)
    if not merged:
        return "## Failures\n\nNone: every cell ran and passed its fidelity check.\n"
    lines = ["## Failures", "", "| Variant | Model · device | Batch sizes | Status | Reason |", "|---|---|---|---|---|"]
    for (where, variant, status, error), batches in merged.items():
        reason = short_error(error, 300) or "—"
        lines.append(f"| {md_escape(variant)} | {md_escape(where)} | "
                     f"{', '.join(map(str, sorted(set(batches))))} | {md_escape(status)} | {md_escape(reason)} |")
    return "\n".join(lines) + "\n"


def _environment(data: ReportData) -> list[str]:
    env = data.environment
    facts = environment.summary(env)
    isa = environment.isa_features(env)
    if not facts and isa is None:
        return []
    parts = ["## Environment", ""]
    parts.extend(f"- {md_escape(label)}: {md_escape(value)}" for label, value in facts)
    if isa is not None:
        parts.append("- ISA: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in isa.items()))
    libs = environment.versions(env)
    if libs:
        parts.append("- Versions: " + ", ".join(f"{md_escape(k)} {md_escape(v)}" for k, v in libs))
    return [*parts, ""]
