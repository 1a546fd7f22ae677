"""One self-contained HTML page per report: charts inlined as base64 PNG, so the file can be mailed or attached.

Rendering uses jinja2 with autoescaping on: error messages, model names and config values come from
result files and are shown as text, never interpreted as markup. The page also carries a
Content-Security-Policy that allows no network access and runs only its own script (by hash), so
even a string that slipped through could neither run nor fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from infertune.report import environment
from infertune.report.charts import caption_for
from infertune.report.data import ReportData
from infertune.report.nodes import side_by_side
from infertune.report.view import (
    DRIFT_THRESHOLD,
    NOISE_THRESHOLD,
    GroupView,
    LineView,
    build_views,
    fmt_ips,
    fmt_ms,
    fmt_pct,
    fmt_speedup,
    is_measured,
    node_title,
    noise_reason,
    status_word,
)
from infertune.results import ResultRow

__all__ = ["render_html"]

_TEMPLATES = Path(__file__).parent / "templates"

#: statuses in the order a sorted Status column shows them: working first, then the ways of not working.
_STATUS_RANK = {"ok": 0, "fidelity_failed": 1, "unavailable": 2, "failed": 3, "crashed": 4, "timeout": 5}


@dataclass(frozen=True)
class _Chart:
    caption: str
    data_uri: str
    width: int
    height: int
    name: str


@dataclass(frozen=True)
class _Column:
    key: str
    label: str
    numeric: bool  # sorts by number
    tip: str = ""
    text: bool = False  # reads as text (left-aligned) even though it sorts by number


def render_html(data: ReportData, charts: list[Path]) -> str:
    """The report page as one HTML string (write it anywhere: it references no other file)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    script = (_TEMPLATES / "report.js").read_text(encoding="utf-8")
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return env.get_template("report.html").render(script=script, script_hash=script_hash,
                                                  **_context(data, charts))


def _context(data: ReportData, charts: list[Path]) -> dict[str, Any]:
    views = build_views(data.rows, data.samples)
    models = list(dict.fromkeys(r.model for r in data.rows))
    devices = list(dict.fromkeys(r.device for r in data.rows))
    nodes = list(dict.fromkeys(r.pinned_node for r in data.rows if r.pinned_node))
    columns = _columns(many_models=len(models) > 1, many_devices=len(devices) > 1,
                       gpu=any(r.e2e_latency_p50_ms is not None for r in data.rows), many_nodes=len(nodes) > 1)
    lines = [(view, line) for view in views for line in view.lines]
    return {
        "title": f"{', '.join(models)} on {', '.join(devices)}",
        "sources": [str(p) for p in data.sources],
        "run_ids": sorted({r.run_id for r in data.rows if r.run_id}),
        "random_weights": sorted({r.model for r in data.rows if r.weights == "random"}),
        "notes": data.notes,
        "winners": _winners(views),
        "per_node": side_by_side(data.rows),
        "columns": columns,
        "table": [_table_row(view, line, columns) for view, line in lines],
        "groups": [v.title for v in views],
        "footnotes": _footnotes(views),
        "charts": [_chart(p) for p in charts],
        "problems": _problems(data.rows),
        "has_samples": data.has_samples,
        "environments": _environments(data),
        "config_json": json.dumps(data.config, indent=2, default=str) if data.config else "",
        "settings": _settings(data.config),
        "noise_threshold": fmt_pct(NOISE_THRESHOLD),
        "drift_threshold": fmt_pct(DRIFT_THRESHOLD),
    }


# ---------------------------------------------------------------- the fastest variant per batch size


def _winners(views: list[GroupView]) -> list[dict[str, Any]]:
    """Cards per (model, device, node): one per batch size with the fastest variant that kept the predictions."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for view in views:
        model, device, batch, node = view.key
        where = f" · {node_title(node, [ln.row for ln in view.lines])}" if node else ""
        section = out.setdefault((model, device, node), {"title": f"{model} on {device}{where}", "cards": []})
        best = view.best
        section["cards"].append({
            "batch": batch,
            "variant": best.variant if best else None,
            # long names break at their colons only (escaped first; <wbr> is the one markup added)
            "variant_wrapped": escape(best.variant).replace(":", Markup(":<wbr>")) if best else "",
            "p50": fmt_ms(best.latency_p50_ms) if best else "—",
            "p99": fmt_ms(best.latency_p99_ms) if best else "—",
            "throughput": fmt_ips(best.throughput_ips) if best else "—",
            "speedup": fmt_speedup(view.best_speedup, "×") if best and view.best_speedup else "",
            "scope": best.latency_scope.replace("_", "-") if best and best.latency_scope else view.scope,
            "why_none": "" if best else "no variant both ran and passed its fidelity check",
        })
    return list(out.values())


# ---------------------------------------------------------------- the sortable results table


def _columns(many_models: bool, many_devices: bool, gpu: bool = False, many_nodes: bool = False) -> list[_Column]:
    cols = []
    if many_models:
        cols.append(_Column("model", "Model", False))
    if many_devices:
        cols.append(_Column("device", "Device", False))
    if many_nodes:
        cols.append(_Column("node", "Node", False, "the Ray node the cell was pinned to (--per-node), and its CPU / GPU"))
    cols += [
        _Column("batch", "Batch", True, "images per call"),
        _Column("variant", "Variant", False, "backend:precision[:option]"),
        _Column("status", "Status", False, "ok, failed fidelity, or why it has no timing"),
        _Column("p50", "p50 (ms)", True, "median latency of one batch; † = noisy (IQR/median above the threshold)"),
        _Column("p99", "p99 (ms)", True, "99th percentile latency of one batch: the slow tail"),
        _Column("throughput", "Throughput (img/s)", True, "batch size × 1000 / p50"),
        *([_Column("e2e", "E2E p50 (ms)", True, "GPU runners: a second loop timed from host input to host output "
                                                "(both copies included); p50/p99 are device latency (CUDA events)"),
           _Column("device_mem", "GPU mem (MB)", True, "peak device memory (torch.cuda.max_memory_allocated)")]
          if gpu else []),
        _Column("speedup", "Speedup", True, "pytorch:fp32's p50 over this variant's p50 at the same batch size"),
        _Column("fidelity", "Fidelity", True, "lowest per-sample cosine vs the FP32 eager reference", text=True),
        _Column("top1", "Top-1 agree", True, "share of verification inputs whose top-1 class matches FP32 eager"),
        _Column("convert", "Convert (s)", True, "one-off conversion time; (cached) = artifact reused"),
        _Column("size", "Size (MB)", True, "converted artifact on disk"),
        _Column("memory", "Peak mem (MB)", True, "peak host memory of the worker"),
        _Column("samples", "Samples", True, "timed iterations kept as raw samples"),
    ]
    return cols


def _table_row(view: GroupView, line: LineView, columns: list[_Column]) -> dict[str, Any]:
    """Display text, sort key and tooltip per column, plus the row's styling class."""
    row = line.row
    measured = is_measured(row)
    cells: dict[str, tuple[str, Any, str]] = {  # key -> (text, sort value, tooltip)
        "model": (row.model, row.model, ""),
        "device": (row.device, row.device, ""),
        "node": (row.pinned_node, row.pinned_node, node_title(row.pinned_node, [row])),
        "batch": (str(row.batch_size), row.batch_size, ""),
        "variant": (line.variant + (" ★" if line.kind == "best" else ""), line.variant, row.label),
        "status": (_status_cell(row), _STATUS_RANK.get(row.status, len(_STATUS_RANK)), row.error),
        "p50": (line.latency + (" †" if line.noisy else ""), _num(row.latency_p50_ms, measured),
                noise_reason(row) if line.noisy else ""),
        "p99": (line.p99, _num(row.latency_p99_ms, measured), ""),
        "throughput": (line.throughput, _num(row.throughput_ips, measured), ""),
        "e2e": (fmt_ms(row.e2e_latency_p50_ms), _num(row.e2e_latency_p50_ms, measured), ""),
        "device_mem": (fmt_ms(row.peak_device_mb), _num(row.peak_device_mb, True), ""),
        "speedup": (line.speedup, _num(row.speedup_vs_pytorch, measured) if line.speedup != "—" else "",
                    row.speedup_flag),
        "fidelity": (line.fidelity, _num(row.cosine_min, True), row.error if "FAILED" in line.fidelity else ""),
        "top1": (fmt_pct(row.top1_agreement), _num(row.top1_agreement, True), ""),
        "convert": (line.convert, _num(row.convert_s, True), ""),
        "size": (line.size, _num(row.artifact_mb, True), ""),
        "memory": (line.memory, _num(row.peak_host_mb, True), ""),
        "samples": (str(line.samples) if line.samples is not None else "—", line.samples or "", ""),
    }
    return {
        "kind": line.kind,
        "group": view.title,
        "cells": [{"text": cells[c.key][0], "sort": cells[c.key][1], "tip": cells[c.key][2],
                   "right": c.numeric and not c.text, "key": c.key} for c in columns],
    }


def _status_cell(row: ResultRow) -> str:
    """A short word, as in the terminal: the full reason is the cell's tooltip and is under Failures."""
    return status_word(row)


def _num(value: float | None, keep: bool) -> Any:
    """A number to sort by; empty (sorted last either way) when there is none."""
    return value if keep and isinstance(value, (int, float)) and math.isfinite(value) else ""


def _footnotes(views: list[GroupView]) -> list[tuple[str, str]]:
    """(where, text) under the table: noise and untrusted speedups per group, and each run note once with
    every group it is in."""
    out = [(v.title, v.noise_footnote()) for v in views if v.noisy_lines]
    out += [(v.title, v.flag_footnote()) for v in views if v.flagged_lines]
    notes: dict[str, list[str]] = {}
    for view in views:
        for note in view.notes:
            notes.setdefault(note, []).append(view.title)
    out += [(", ".join(groups), f"note: {note}") for note, groups in notes.items()]
    return out


#: the settings a reviewer asks about first, as (label, dotted key in the resolved config).
_SETTINGS = (
    ("model", "model.name"), ("input shape", "model.input_shape"), ("device", "benchmark.device"),
    ("batch sizes", "benchmark.batch_sizes"), ("warmup", "benchmark.warmup_iterations"),
    ("timed iterations (min)", "benchmark.benchmark_iterations"), ("min time per cell (s)", "benchmark.min_time_s"),
    ("rounds", "benchmark.rounds"), ("threads", "benchmark.threads"), ("isolation", "benchmark.isolation"),
    ("verification samples", "verify.samples"),
)


def _settings(config: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for label, key in _SETTINGS:
        value = environment.lookup(config, key)
        if value is not None:
            out.append((label, environment.flatten({"v": value})[0][1]))
    return out


# ---------------------------------------------------------------- failures, environment, charts


def _problems(rows: list[ResultRow]) -> list[dict[str, str]]:
    """Cells that did not simply pass, one entry per distinct (model, variant, device, status, error).

    A missing runtime fails the same way at every batch size: listing it once with its batch sizes
    keeps the section readable.
    """
    merged: dict[tuple[str, str, str, str, str], list[int]] = {}
    for r in rows:
        if r.status != "ok" or r.error:
            where = f"{r.model} · {r.device}" + (f" · {r.pinned_node}" if r.pinned_node else "")
            merged.setdefault((where, r.variant, r.status, r.error), []).append(r.batch_size)
    return [
        {"variant": variant, "where": where, "batches": ", ".join(map(str, sorted(set(batches)))),
         "status": status, "error": error or "—"}
        for (where, variant, status, error), batches in merged.items()
    ]


def _environments(data: ReportData) -> list[dict[str, Any]]:
    """The environment of each file; one entry when the files agree (or there is one file)."""
    runs = data.runs or [data]
    distinct: list[ReportData] = []
    for run in runs:
        if not any(run.environment == d.environment for d in distinct):
            distinct.append(run)
    return [
        {
            "source": run.source.name if len(distinct) > 1 else "",
            "machine": _machine_line(environment.summary(run.environment)),
            "summary": environment.summary(run.environment),
            "isa": environment.isa_features(run.environment),
            "versions": environment.versions(run.environment),
            "all": environment.flatten(run.environment),
        }
        for run in distinct if run.environment
    ]


#: the facts shown in one line under the title: what the numbers most depend on.
_MACHINE_FACTS = ("CPU", "Physical cores", "Threads used", "GPU")


def _machine_line(facts: list[tuple[str, str]]) -> list[str]:
    found = dict(facts)
    return [found[k] if k in ("CPU", "GPU") else f"{k.lower()}: {found[k]}" for k in _MACHINE_FACTS
            if k in found and found[k] != "none recorded"]


def _chart(path: Path) -> _Chart:
    raw = path.read_bytes()
    width, height = png_size(raw)
    encoded = base64.b64encode(raw).decode("ascii")
    return _Chart(caption_for(path), f"data:image/png;base64,{encoded}", width, height, path.name)


def png_size(raw: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, so the page reserves each chart's space before it decodes."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", raw[16:24])
