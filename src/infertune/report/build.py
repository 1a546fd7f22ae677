"""``infertune report``: read one run's result files, write its charts, ``report.html`` and ``report.md``.

Only result files are read (CSV, and the JSON beside it when present), so a report can be built on
any machine, without torch or any runtime installed.
"""

from __future__ import annotations

from pathlib import Path

from infertune.report import environment
from infertune.report.charts import caption_for, write_charts
from infertune.report.data import ReportData, load_report_data
from infertune.report.html import render_html
from infertune.report.table import markdown_table
from infertune.report.view import build_views

__all__ = ["build_report"]


def build_report(results_path: Path | str, out_dir: Path | str | None = None) -> dict[str, Path]:
    """Write charts (PNG), ``report.html`` (self-contained) and ``report.md`` for one run.

    Args:
        results_path: the run's CSV (``results/benchmark_results_TIMESTAMP.csv``) or its JSON.
        out_dir: where to write; by default a folder named after the file's stem, next to it.

    Returns:
        ``{"html": ..., "markdown": ..., <chart stem>: ...}``, every path written.

    Raises:
        InfertuneError: the file is missing, empty or not an infertune results file.
    """
    data = load_report_data(results_path)
    out = Path(out_dir) if out_dir is not None else data.source.parent / data.source.stem
    out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(data.rows, data.samples, out)
    html_path = out / "report.html"
    html_path.write_text(render_html(data, charts), encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(render_markdown(data, charts), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, **{p.stem: p for p in charts}}


def render_markdown(data: ReportData, charts: list[Path]) -> str:
    """The report as GitHub markdown (for ``docs/results/``): winners, tables, environment, charts."""
    models = ", ".join(dict.fromkeys(r.model for r in data.rows))
    devices = ", ".join(dict.fromkeys(r.device for r in data.rows))
    parts = [f"# infertune results: {models} on {devices}", "", f"From `{data.source.name}`.", ""]
    parts.extend(f"> {note}\n" for note in data.notes)
    parts += ["## Best variant per batch size", ""]
    parts.extend(f"- {v.title}: {v.fastest_sentence()}" for v in build_views(data.rows))
    facts = environment.summary(data.environment)
    isa = environment.isa_features(data.environment)
    if facts or isa is not None:
        parts += ["", "## Environment", ""]
        parts.extend(f"- {label}: {value}" for label, value in facts)
        if isa is not None:
            parts.append("- ISA: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in isa.items()))
        libs = environment.versions(data.environment)
        if libs:
            parts.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in libs))
    parts += ["", "## Results", "", markdown_table(data.rows).rstrip()]
    if charts:
        parts += ["", "## Charts", ""]
        parts.extend(f"![{caption_for(path)}]({path.name})" for path in charts)
    return "\n".join(parts) + "\n"
