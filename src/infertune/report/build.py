"""``infertune report``: read result files, write their charts, ``report.html`` and ``report.md``.

Only result files are read (CSV, and the JSON beside it when present; several files merge), so a
report can be built on any machine, without torch or any runtime installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from infertune.report.charts import write_charts
from infertune.report.data import ReportData, load_report_data
from infertune.report.html import render_html
from infertune.report.markdown import render_markdown

__all__ = ["build_report", "default_out_dir", "render_markdown"]


def build_report(results: Path | str | Sequence[Path | str], out_dir: Path | str | None = None) -> dict[str, Path]:
    """Write charts (PNG), ``report.html`` (self-contained) and ``report.md`` for one run or several.

    Args:
        results: the run's CSV (``results/benchmark_results_TIMESTAMP.csv``) or its JSON, or several
            such files to merge into one report.
        out_dir: where to write; by default a folder next to the (first) file, named after it.

    Returns:
        ``{"html": ..., "markdown": ..., <chart stem>: ...}``, every path written.

    Raises:
        InfertuneError: a file is missing, empty or not an infertune results file.
    """
    from infertune.report.serving import build_serving_report, is_scenario_file

    paths = [results] if isinstance(results, (str, Path)) else list(results)
    scenario_files = [p for p in paths if is_scenario_file(p)]
    if scenario_files:  # `infertune scenario` results: the serving report (report/serving.py)
        rest = [p for p in paths if p not in scenario_files]
        serving = build_serving_report(scenario_files, None if rest else out_dir)
        return serving if not rest else {**{f"serving_{k}": v for k, v in serving.items()}, **build_report(rest, out_dir)}
    data = load_report_data(results)
    out = Path(out_dir) if out_dir is not None else default_out_dir(data)
    out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(data.rows, data.samples, out)
    html_path = out / "report.html"
    html_path.write_text(render_html(data, charts), encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(render_markdown(data, charts), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, **{p.stem: p for p in charts}}


def default_out_dir(data: ReportData) -> Path:
    """``results/benchmark_results_TS/`` for one file; ``..._TS_and_2_more/`` when three files merge."""
    first = data.sources[0]
    more = len(data.sources) - 1
    return first.parent / (f"{first.stem}_and_{more}_more" if more else first.stem)
