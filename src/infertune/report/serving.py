"""The serving report: from ``infertune scenario`` result files, a latency-versus-QPS chart with the bound
drawn, the best configuration per scenario, every row, and where LoadGen's logs are, as HTML and markdown.

It reads files only (no runtime, no LoadGen). The HTML is one self-contained page like the run report's:
its chart is inlined, text from the files is escaped, and a Content-Security-Policy allows no network
and no script.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infertune.errors import InfertuneError
from infertune.report.view import md_escape
from infertune.scenario.rows import (
    RowDetails,
    ScenarioRow,
    is_scenario_file,
    read_scenario_file,
)
from infertune.scenario.settings import SCENARIOS

__all__ = ["best_rows", "build_serving_report", "is_scenario_file", "serving_markdown"]

CHART_NAME = "latency_vs_qps.png"


@dataclass
class ServingData:
    """Scenario rows of one or more files, with their trial details and the searches' outcomes."""

    sources: list[Path]
    rows: list[ScenarioRow]
    details: dict[str, RowDetails]
    outcomes: dict[str, str]


def load_serving(paths: Sequence[Path | str]) -> ServingData:
    data = ServingData([], [], {}, {})
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InfertuneError(f"no results file at {path}: pass a scenario_results_<TS>.csv (or .json)")
        rows, details, doc = read_scenario_file(path)
        data.sources.append(path)
        data.rows.extend(rows)
        data.details.update(details)
        data.outcomes.update(doc.get("outcomes", {}))
    return data


def best_rows(rows: Sequence[ScenarioRow]) -> dict[str, ScenarioRow]:
    """Per scenario, the best row: server the one the search marked (else the highest VALID rate), offline the
    highest throughput, single-/multi-stream the lowest reported latency; only VALID rows of working variants."""
    best: dict[str, ScenarioRow] = {}
    for scenario in SCENARIOS:
        candidates = [r for r in rows if r.scenario == scenario and r.status == "ok" and r.verdict == "VALID"]
        if not candidates:
            continue
        marked = [r for r in candidates if r.best]
        if marked:
            best[scenario] = marked[0]
        elif scenario == "server":
            best[scenario] = max(candidates, key=lambda r: r.target_qps or 0.0)
        elif scenario == "offline":
            best[scenario] = max(candidates, key=lambda r: r.qps or 0.0)
        else:
            best[scenario] = min(candidates, key=lambda r: r.reported_latency_ms or float("inf"))
    return best


def build_serving_report(paths: Sequence[Path | str], out_dir: Path | str | None = None) -> dict[str, Path]:
    """Write ``latency_vs_qps.png``, ``report.html`` and ``report.md`` for scenario result files."""
    data = load_serving(paths)
    first = data.sources[0]
    out = Path(out_dir) if out_dir is not None else first.parent / first.stem
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    chart = write_latency_chart(data, out / CHART_NAME)
    if chart is not None:
        written["latency_vs_qps"] = chart
    html_path = out / "report.html"
    html_path.write_text(serving_html(data, chart), encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(serving_markdown(data, chart), encoding="utf-8")
    return {"html": html_path, "markdown": md_path, **written}


# ---------------------------------------------------------------------------------------------- chart


def write_latency_chart(data: ServingData, path: Path) -> Path | None:
    """p99 against the QPS LoadGen completed, one line per (variant, policy) of the server trials; VALID
    trials filled, INVALID hollow; the bound as a dashed line; the best configuration starred."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    server = [r for r in data.rows if r.scenario == "server" and data.details.get(r.row_id, RowDetails()).trials]
    if not server:
        return None
    fig = Figure(figsize=(9, 5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = _palette(len(server))
    for color, row in zip(colors, server):
        points = sorted((t.qps, t.latency_p99_ms, t.verdict) for t in data.details[row.row_id].trials
                        if t.qps is not None and t.latency_p99_ms is not None)
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, color=color, linewidth=1, alpha=0.7, label=f"{row.variant} {row.policy_label}")
        for x, y, verdict in points:
            ax.plot([x], [y], "o", color=color, markerfacecolor=color if verdict == "VALID" else "none", markersize=6)
        if row.best and row.latency_p99_ms is not None and row.qps is not None:
            ax.plot([row.qps], [row.latency_p99_ms], "*", color=color, markersize=16, markeredgecolor="black")
    for bound in sorted({r.latency_bound_ms for r in server if r.latency_bound_ms}):
        ax.axhline(bound, color="crimson", linestyle="--", linewidth=1.2)
        ax.annotate(f"bound: p99 ≤ {bound:g} ms", (0.01, bound), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 4), color="crimson", fontsize=9)
    latencies = [t.latency_p99_ms for r in server for t in data.details[r.row_id].trials if t.latency_p99_ms]
    if latencies and max(latencies) / max(min(latencies), 1e-9) > 50:
        ax.set_yscale("log")
    model_device = sorted({f"{r.model} on {r.device}" for r in server})
    ax.set_title(f"Server scenario: p99 latency vs QPS ({', '.join(model_device)}); filled = VALID, hollow = INVALID",
                 fontsize=10)
    ax.set_xlabel("completed queries per second (LoadGen)")
    ax.set_ylabel("p99 latency (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.93))
    fig.savefig(path)
    return path


def _palette(n: int) -> list[object]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---------------------------------------------------------------------------------------------- text


def _result_text(row: ScenarioRow) -> str:
    if row.scenario == "server":
        return f"{_num(row.target_qps)} QPS at p99 {_num(row.latency_p99_ms)} ms (bound {_num(row.latency_bound_ms)} ms)"
    if row.scenario == "offline":
        return f"{_num(row.qps)} samples/s"
    pct = "p90" if row.scenario == "single-stream" else "p99 per query"
    return f"{pct} {_num(row.reported_latency_ms)} ms ({_num(row.qps)} samples/s)"


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _cost(row: ScenarioRow) -> str:
    return "—" if row.cost_per_million is None else f"{row.cost_per_million:.4g} per 1M"


_TABLE = ("scenario", "variant", "policy", "status", "verdict", "QPS", "p50 ms", "p99 ms", "p99.9 ms", "mean batch",
          "trials", "cost", "reasons / error")


def _table_cells(row: ScenarioRow) -> list[str]:
    return [row.scenario, row.variant, row.policy_label, row.status, row.verdict,
            _num(row.target_qps if row.scenario == "server" and row.verdict == "VALID" else row.qps),
            _num(row.latency_p50_ms), _num(row.latency_p99_ms), _num(row.latency_p999_ms), _num(row.batch_mean),
            str(row.trials or ""), _cost(row), row.error or row.reasons]


def serving_markdown(data: ServingData, chart: Path | None) -> str:
    lines = ["# Serving report", "", f"From {', '.join(md_escape(s.name) for s in data.sources)}.", "",
             "## Best configuration per scenario", ""]
    best = best_rows(data.rows)
    if best:
        lines += ["| scenario | variant | batch policy | result | cost |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {md_escape(r.variant)} | {md_escape(r.policy_label)} | {md_escape(_result_text(r))} | "
                  f"{md_escape(_cost(r))} |" for s, r in best.items()]
    else:
        lines.append("No scenario has a VALID result.")
    for scenario, text in data.outcomes.items():
        lines += ["", f"**{scenario} search:** {md_escape(text)}"]
    if chart is not None:
        lines += ["", f"![p99 latency vs QPS, the bound dashed]({chart.name})"]
    lines += ["", "## All rows", "", "| " + " | ".join(_TABLE) + " |", "|" + "---|" * len(_TABLE)]
    lines += ["| " + " | ".join(md_escape(c) for c in _table_cells(r)) + " |" for r in data.rows]
    logs = sorted({r.loadgen_logs for r in data.rows if r.loadgen_logs})
    if logs:
        lines += ["", (f"LoadGen's summary and detail logs: {len(logs)} folders beside the results, e.g. "
                       f"`{md_escape(logs[0])}`.")]
    return "\n".join(lines) + "\n"


_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def serving_html(data: ServingData, chart: Path | None) -> str:
    esc = html.escape
    best = best_rows(data.rows)
    parts = [(f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
              f'<meta http-equiv="Content-Security-Policy" content="{_CSP}"><title>Serving report</title>'
              "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
              "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}th{background:#f3f3f3}"
              ".best{background:#eef8ee}</style></head><body>"),
             f"<h1>Serving report</h1><p>From {esc(', '.join(s.name for s in data.sources))}.</p>",
             "<h2>Best configuration per scenario</h2>"]
    if best:
        parts.append("<table><tr><th>scenario</th><th>variant</th><th>batch policy</th><th>result</th><th>cost</th></tr>")
        parts += [f"<tr><td>{esc(s)}</td><td>{esc(r.variant)}</td><td>{esc(r.policy_label)}</td>"
                  f"<td>{esc(_result_text(r))}</td><td>{esc(_cost(r))}</td></tr>" for s, r in best.items()]
        parts.append("</table>")
    else:
        parts.append("<p>No scenario has a VALID result.</p>")
    for scenario, text in data.outcomes.items():
        parts.append(f"<p><b>{esc(scenario)} search:</b> {esc(text)}</p>")
    if chart is not None:
        uri = "data:image/png;base64," + base64.b64encode(chart.read_bytes()).decode("ascii")
        parts.append(f'<figure><img src="{uri}" alt="p99 latency vs QPS with the bound drawn" style="max-width:100%">'
                     "<figcaption>Server trials: p99 latency against the QPS LoadGen completed; the dashed line is "
                     "the bound; filled markers VALID, hollow INVALID; the star is the best configuration."
                     "</figcaption></figure>")
    parts.append("<h2>All rows</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _TABLE) + "</tr>")
    best_ids = {r.row_id for r in best.values()}
    for r in data.rows:
        cls = ' class="best"' if r.row_id in best_ids else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in _table_cells(r)) + "</tr>")
    parts.append("</table>")
    logs = sorted({r.loadgen_logs for r in data.rows if r.loadgen_logs})
    if logs:
        parts.append("<h2>LoadGen logs</h2><ul>" + "".join(f"<li>{esc(p)}</li>" for p in logs) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
