"""One self-contained HTML page per run: charts inlined as base64 PNG, so the file can be mailed or attached.

Rendering uses jinja2 with autoescaping on: error messages and model names come from result files
and are shown as text, never interpreted as markup.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infertune.report import environment
from infertune.report.charts import caption_for
from infertune.report.data import ReportData
from infertune.report.table import HEADERS, RANDOM_WEIGHTS_NOTE
from infertune.report.view import NOISE_THRESHOLD, build_views, fmt_ips, fmt_ms, fmt_pct, fmt_speedup
from infertune.results import ResultRow

__all__ = ["render_html"]

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class _Chart:
    caption: str
    data_uri: str


def render_html(data: ReportData, charts: list[Path]) -> str:
    """The report page as one HTML string (write it anywhere: it references no other file)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html").render(**_context(data, charts))


def _context(data: ReportData, charts: list[Path]) -> dict[str, Any]:
    views = build_views(data.rows, data.samples)
    facts = environment.summary(data.environment)
    models = list(dict.fromkeys(r.model for r in data.rows))
    devices = list(dict.fromkeys(r.device for r in data.rows))
    return {
        "title": f"infertune report: {', '.join(models)} on {', '.join(devices)}",
        "source": str(data.source),
        "run_ids": sorted({r.run_id for r in data.rows if r.run_id}),
        "notes": data.notes + ([RANDOM_WEIGHTS_NOTE] if _all_random(data.rows) else []),
        "views": views,
        "headers": HEADERS,
        "summary": [_summary_line(v) for v in views],
        "charts": [_chart(p) for p in charts],
        "problems": _problems(data.rows),
        "sample_counts": [(r.cell_id, len(data.samples.get(r.cell_id, [])), r.iterations, r.status)
                          for r in data.rows],
        "has_samples": bool(data.samples),
        "env_summary": facts,
        "machine": _machine_line(facts),
        "isa": environment.isa_features(data.environment),
        "versions": environment.versions(data.environment),
        "env_all": environment.flatten(data.environment),
        "config_json": json.dumps(data.config, indent=2, sort_keys=False, default=str) if data.config else "",
        "noise_threshold": fmt_pct(NOISE_THRESHOLD),
    }


def _all_random(rows: list[ResultRow]) -> bool:
    """Every row ran with random weights: the fidelity column is agreement, not correctness."""
    return bool(rows) and all(r.weights.startswith("random") for r in rows)


#: the facts shown in one line under the title: what the numbers most depend on.
_MACHINE_FACTS = ("CPU", "Physical cores", "Threads used", "GPU")


def _machine_line(facts: list[tuple[str, str]]) -> list[str]:
    found = dict(facts)
    return [found[k] if k in ("CPU", "GPU") else f"{k.lower()}: {found[k]}" for k in _MACHINE_FACTS
            if k in found and found[k] != "none recorded"]


def _problems(rows: list[ResultRow]) -> list[dict[str, str]]:
    """Cells that did not simply pass, one entry per distinct (model, variant, device, status, error).

    A missing runtime fails the same way at every batch size: listing it once with its batch sizes
    keeps the section readable.
    """
    merged: dict[tuple[str, str, str, str, str], list[int]] = {}
    for r in rows:
        if r.status != "ok" or r.error:
            merged.setdefault((r.model, r.variant, r.device, r.status, r.error), []).append(r.batch_size)
    return [
        {"cell": f"{model} · {variant} · {device}", "batches": ", ".join(map(str, sorted(set(batches)))),
         "status": status, "error": error or "—"}
        for (model, variant, device, status, error), batches in merged.items()
    ]


def _summary_line(view: Any) -> dict[str, str]:
    best = view.best
    return {
        "group": view.title,
        "variant": best.variant if best else "none passed fidelity",
        "latency": fmt_ms(best.latency_p50_ms) if best else "—",
        "throughput": fmt_ips(best.throughput_ips) if best else "—",
        "speedup": fmt_speedup(view.best_speedup, "×") if best else "—",
        "scope": view.scope,
    }


def _chart(path: Path) -> _Chart:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return _Chart(caption_for(path), f"data:image/png;base64,{encoded}")
