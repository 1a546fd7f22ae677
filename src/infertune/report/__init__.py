"""Reports built from result files only: the seed's table, charts, one HTML page, markdown, run comparison
(``compare_runs``: per-cell changes tested on the raw samples).

Nothing here imports torch or a runtime (matplotlib and jinja2 are imported when a chart or page is
made), so ``infertune report results/x.csv`` works on a machine that only has the result files.
"""

from infertune.report.build import build_report
from infertune.report.charts import write_charts
from infertune.report.compare import Comparison, compare_runs
from infertune.report.data import ReportData, load_report_data
from infertune.report.html import render_html
from infertune.report.table import best_variants, markdown_table, seed_table

__all__ = [
    "Comparison",
    "ReportData",
    "best_variants",
    "build_report",
    "compare_runs",
    "load_report_data",
    "markdown_table",
    "render_html",
    "seed_table",
    "write_charts",
]
