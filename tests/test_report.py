"""Reports read only result files: tables, charts, HTML, markdown and run comparison on synthetic rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from infertune.errors import InfertuneError
from infertune.report import best_variants, build_report, compare_runs, markdown_table, seed_table
from infertune.report.table import HEADERS
from infertune.results import FIELD_NAMES, ResultFiles, ResultRow, read_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNAVAILABLE_REASON = "pip install infertune[openvino]"
FAILED_REASON = "RuntimeError: export failed at aten::foo"
ENVIRONMENT = {  # the keys infertune.env.capture() writes
    "cpu_model": "AMD EPYC 7B13 (test)",
    "isa": ["AVX2", "FMA", "F16C"],
    "int8_dot_product": False,
    "logical_cores": 2,
    "usable_cores": 2,
    "threads": 2,
    "os": "Linux-6.1-x86_64",
    "python": "3.11.2",
    "machine": "x86_64",
    "libraries": {"torch": "2.14.1", "onnxruntime": "1.32.0"},
    "physical_cores": 1,
}

# (variant, backend, precision, p50 ms at batch 1, cosine, status, error, noisy)
LADDER = [
    ("pytorch:fp32", "pytorch", "fp32", 118.0, 1.0, "ok", "", False),
    ("torchscript:fp32", "torchscript", "fp32", 92.0, 0.99999, "ok", "", True),
    ("onnxruntime:fp32", "onnxruntime", "fp32", 61.0, 0.99998, "ok", "", False),
    # faster than everything, but its predictions drift: must never be "the fastest that keeps predictions"
    ("onnxruntime:int8", "onnxruntime", "int8", 25.0, 0.91, "fidelity_failed", "cosine 0.9100 < 0.98", False),
    ("openvino:int8", "openvino", "int8", None, None, "unavailable", UNAVAILABLE_REASON, False),
    ("torch_compile:fp32", "torch_compile", "fp32", None, None, "failed", FAILED_REASON, False),
]


def make_rows(batches: tuple[int, ...] = (1, 8), model: str = "resnet50",
              seed: int = 0) -> tuple[list[ResultRow], dict[str, list[float]]]:
    """Realistic rows for a ladder (one unavailable, one failed, one fidelity_failed, one noisy) and samples."""
    rng = np.random.default_rng(seed)
    rows: list[ResultRow] = []
    samples: dict[str, list[float]] = {}
    for batch in batches:
        for variant, backend, precision, p50_b1, cos, status, error, noisy in LADDER:
            row = ResultRow(model=model, variant=variant, backend=backend, precision=precision, options="",
                            batch_size=batch, device="cpu", status=status, error=error, run_id="t1",
                            latency_scope="end_to_end" if p50_b1 else "")
            if p50_b1 is not None:
                spread = 0.2 if noisy else 0.03
                # per-image cost drops a little with batch size, as on a real CPU
                s = p50_b1 * batch * 0.9 ** np.log2(batch) * (1 + spread * rng.standard_normal(40))
                s = np.abs(s)
                p5, p25, p50, p75, p95 = np.percentile(s, [5, 25, 50, 75, 95])
                row.latency_p50_ms = float(p50)
                row.latency_p95_ms = float(p95)
                row.latency_min_ms = float(s.min())
                row.latency_max_ms = float(s.max())
                row.latency_mean_ms = float(s.mean())
                row.throughput_ips = batch * 1000.0 / float(p50)
                row.iqr_over_median = float((p75 - p25) / p50)
                row.noisy = noisy
                row.iterations = len(s)
                row.cosine_min = cos
                row.sqnr_db = 40.0 if cos > 0.99 else 12.0
                row.fidelity_ok = status == "ok"
                samples[row.cell_id] = [float(x) for x in s]
            if variant == "onnxruntime:int8":
                row.note = "INT8 slower than FP32: CPU lacks VNNI"
            rows.append(row)
    return rows, samples


def write_run(tmp_path: Path, name: str = "benchmark_results_20260101_000000", **kw) -> Path:
    rows, samples = make_rows(**kw)
    files = ResultFiles(tmp_path / f"{name}.csv", tmp_path / f"{name}.json",
                        config={"model": {"name": "resnet50"}, "benchmark": {"batch_sizes": [1, 8]}},
                        environment=ENVIRONMENT)
    for row in rows:
        files.add(row, samples.get(row.cell_id))
    return files.csv_path


def _text(rows: list[ResultRow]) -> str:
    console = Console(record=True, width=260)
    seed_table(rows, console=console)
    return console.export_text()


def _p50(rows: list[ResultRow], variant: str, batch: int) -> float:
    return next(r.latency_p50_ms for r in rows if r.variant == variant and r.batch_size == batch)


# ---------------------------------------------------------------- the terminal table


def test_seed_table_shows_every_variant_reasons_and_computed_speedups():
    rows, _ = make_rows()
    text = _text(rows)
    for header in ("Format", "Latency (ms)", "Throughput (img/sec)", "Speedup"):
        assert header in text
    for variant, *_ in LADDER:
        assert variant in text
    assert UNAVAILABLE_REASON in text  # printed literally, not eaten as rich markup
    assert FAILED_REASON in text
    for batch in (1, 8):
        base = _p50(rows, "pytorch:fp32", batch)
        for variant in ("torchscript:fp32", "onnxruntime:fp32", "onnxruntime:int8"):
            assert f"{base / _p50(rows, variant, batch):.2f}x" in text
    assert "1.00x" in text


def test_fastest_line_skips_faster_row_that_failed_fidelity():
    rows, _ = make_rows()
    text = _text(rows)
    lines = [ln for ln in text.splitlines() if ln.startswith("fastest that keeps predictions")]
    assert len(lines) == 2  # one per batch size
    for batch, line in zip((1, 8), lines):
        expected = _p50(rows, "pytorch:fp32", batch) / _p50(rows, "onnxruntime:fp32", batch)
        assert line == f"fastest that keeps predictions: onnxruntime:fp32 ({expected:.2f}× vs PyTorch)"
    assert "✗ fidelity" in text
    assert "FAILED: cosine 0.9100 < 0.98" in text


def test_noisy_marker_footnote_and_note():
    rows, _ = make_rows(batches=(1,))
    text = _text(rows)
    assert "†" in text and "† noisy: IQR/median above 10%" in text and "torchscript:fp32" in text
    assert "note: onnxruntime:int8: INT8 slower than FP32: CPU lacks VNNI" in text


def test_best_variants_picks_fastest_ok_row_per_batch():
    rows, _ = make_rows()
    best = best_variants(rows)
    assert set(best) == {("resnet50", "cpu", 1), ("resnet50", "cpu", 8)}
    assert {r.variant for r in best.values()} == {"onnxruntime:fp32"}


def test_best_variants_ignores_null_backend_and_groups_without_passing_rows():
    rows, _ = make_rows(batches=(1,))
    null = ResultRow(model="resnet50", variant="null:fp32", backend="null", precision="fp32", options="",
                     batch_size=1, device="cpu", latency_p50_ms=0.001, throughput_ips=1e6)
    lonely = ResultRow(model="resnet50", variant="onnxruntime:int8", backend="onnxruntime", precision="int8",
                       options="", batch_size=4, device="cpu", status="fidelity_failed", latency_p50_ms=1.0)
    best = best_variants([*rows, null, lonely])
    assert best[("resnet50", "cpu", 1)].variant == "onnxruntime:fp32"
    assert ("resnet50", "cpu", 4) not in best
    assert "fastest that keeps predictions: none" in _text([lonely])


def test_seed_table_without_baseline_says_so():
    rows, _ = make_rows(batches=(1,))
    text = _text([r for r in rows if r.variant != "pytorch:fp32"])
    assert "fastest that keeps predictions: onnxruntime:fp32 (no pytorch:fp32 row to compare with)" in text


# ---------------------------------------------------------------- markdown


def test_markdown_table_parses():
    rows, _ = make_rows()
    md = markdown_table(rows)
    tables = re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M)
    assert len(tables) == 2
    for table in tables:
        lines = table.strip().splitlines()
        # unescaped pipes split cells; escaped ones (\|) do not
        counts = {len(re.split(r"(?<!\\)\|", ln)) - 2 for ln in lines}
        assert counts == {len(HEADERS)}, lines
        assert re.fullmatch(r"\|(---:?\|)+", lines[1])
        assert len(lines) == 2 + len(LADDER)
    assert "**onnxruntime:fp32 ★**" in md
    assert UNAVAILABLE_REASON in md


# ---------------------------------------------------------------- build_report


def test_build_report_writes_pngs_html_and_markdown(tmp_path):
    csv_path = write_run(tmp_path)
    paths = build_report(csv_path)
    out = tmp_path / csv_path.stem  # default: a folder named after the CSV, next to it
    assert paths["html"] == out / "report.html" and paths["markdown"] == out / "report.md"
    charts = [p for k, p in paths.items() if k not in ("html", "markdown")]
    kinds = {p.stem.removeprefix("resnet50_cpu_") for p in charts}
    assert kinds == {"latency", "throughput", "speedup", "distribution", "speed_vs_fidelity"}
    for png in charts:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    html = paths["html"].read_text()
    for variant, *_ in LADDER:
        assert variant in html
    assert ENVIRONMENT["cpu_model"] in html and "onnxruntime" in html and "2.14.1" in html
    assert re.search(r'badge yes">AVX2<', html) and re.search(r'badge no">VNNI<', html)
    assert html.count("data:image/png;base64,") == len(charts)  # self-contained
    assert "fastest that keeps predictions: onnxruntime:fp32" in html
    assert "resnet50|pytorch:fp32|8|cpu" in html  # raw-sample counts per cell
    assert "pip install infertune[openvino]" in html and FAILED_REASON in html
    assert "&#34;batch_sizes&#34;: [" in html  # the resolved config, JSON-escaped for HTML
    md = paths["markdown"].read_text()
    assert "| Format | Latency (ms) | Throughput (img/sec) | Speedup |" in md
    assert "resnet50_cpu_latency.png" in md


def test_build_report_escapes_html_from_result_files(tmp_path):
    rows, _ = make_rows(batches=(1,))
    rows[4].error = "<script>alert(1)</script>"
    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json")
    for row in rows:
        files.add(row)
    html = build_report(files.csv_path, tmp_path / "out")["html"].read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_build_report_from_json_and_custom_out_dir(tmp_path):
    csv_path = write_run(tmp_path)
    paths = build_report(csv_path.with_suffix(".json"), tmp_path / "elsewhere")
    assert paths["html"].parent == tmp_path / "elsewhere"
    assert "AMD EPYC" in paths["html"].read_text()


def test_build_report_csv_only_still_works_and_says_what_is_missing(tmp_path):
    csv_path = write_run(tmp_path)
    csv_path.with_suffix(".json").unlink()
    paths = build_report(csv_path)
    html = paths["html"].read_text()
    assert "onnxruntime:fp32" in html and f"No {csv_path.stem}.json beside" in html
    assert "distribution" not in {p.stem.rsplit("_", 1)[-1] for p in paths.values()}  # needs raw samples
    assert paths["resnet50_cpu_latency"].read_bytes().startswith(PNG_MAGIC)
    assert rows_equal(read_rows(csv_path), make_rows()[0])


def rows_equal(a: list[ResultRow], b: list[ResultRow]) -> bool:
    return [(r.variant, r.batch_size, r.status) for r in a] == [(r.variant, r.batch_size, r.status) for r in b]


def test_build_report_when_nothing_ran(tmp_path):
    row = ResultRow(model="m", variant="openvino:int8", backend="openvino", precision="int8", options="",
                    batch_size=1, device="cpu", status="unavailable", error=UNAVAILABLE_REASON)
    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json")
    files.add(row)
    paths = build_report(files.csv_path)
    assert set(paths) == {"html", "markdown"}  # no chart drawn empty
    assert "none passed fidelity" in paths["html"].read_text()


@pytest.mark.parametrize("content, expected", [
    (None, "no results file at"),
    ("", "is empty"),
    ("format,latency_ms,throughput,speedup\nPyTorch,15.2,65,1.0\n", "has no 'variant' column (nor model, backend"),
    (",".join(FIELD_NAMES) + "\n", "has no result rows"),
])
def test_bad_csv_gives_helpful_error(tmp_path, content, expected):
    path = tmp_path / "x.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InfertuneError) as info:
        build_report(path)
    message = str(info.value)
    assert expected in message and str(path) in message
    assert "pass a CSV" in message and "infertune run" in message


def test_bad_inputs_of_other_kinds(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InfertuneError, match="not a .csv or .json"):
        build_report(tmp_path / "notes.txt")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InfertuneError, match="not valid JSON"):
        build_report(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InfertuneError, match="no 'rows' list"):
        build_report(tmp_path / "y.json")
    csv_path = write_run(tmp_path / "run")
    with pytest.raises(InfertuneError, match="is a folder: pass one results file inside it .newest here"):
        build_report(tmp_path / "run")
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_path.read_text().replace(",1,cpu,", ",one,cpu,", 1))
    with pytest.raises(InfertuneError, match="has a row that is not an infertune result"):
        build_report(bad)


def test_broken_json_beside_csv_is_a_note_not_a_failure(tmp_path):
    csv_path = write_run(tmp_path)
    csv_path.with_suffix(".json").write_text("{truncated")
    html = build_report(csv_path)["html"].read_text()
    assert "is not valid JSON" in html and "onnxruntime:fp32" in html


@pytest.mark.parametrize("env, expected", [
    ({"isa": ["AVX2", "FMA", "AVX-512", "AVX-512 VNNI", "AMX", "AMX-INT8"]},  # infertune.env display names
     {"AVX2": True, "AVX-512": True, "VNNI": True, "AMX": True}),
    ({"cpu": {"flags": "fpu sse4_2 avx2 avx_vnni"}}, {"AVX2": True, "AVX-512": False, "VNNI": True, "AMX": False}),
    ({"isa": []}, None),  # nothing recorded is unknown, not "absent"
    ({}, None),
])
def test_isa_features_from_recorded_flags(env, expected):
    from infertune.report.environment import isa_features

    assert isa_features(env) == expected


# ---------------------------------------------------------------- compare


def test_compare_runs_ratio_per_common_cell(tmp_path):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", seed=1, batches=(1, 8, 16))
    md = compare_runs(a, b)
    rows_a, rows_b = read_rows(a), read_rows(b)
    ratio = _p50(rows_b, "onnxruntime:fp32", 8) / _p50(rows_a, "onnxruntime:fp32", 8)
    line = next(ln for ln in md.splitlines() if "| onnxruntime:fp32 | 8 |" in ln)
    assert f"| {ratio:.2f} |" in line
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 2 * 4  # header, separator, 4 measured variants x 2 common batches
    assert "Measured only in B: pytorch:fp32 batch 16" in md


def test_compare_runs_with_nothing_in_common(tmp_path):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", model="resnet18")
    with pytest.raises(InfertuneError, match="no measured .* in common"):
        compare_runs(a, b)


# ---------------------------------------------------------------- no torch


def test_importing_report_does_not_import_torch():
    code = ("import sys, infertune.report, infertune.report.build; "
            "bad = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'matplotlib', 'jinja2') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_build_report_works_where_torch_cannot_be_imported(tmp_path):
    csv_path = write_run(tmp_path)
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnxruntime'] = None; "  # import now fails
            "from infertune.report import build_report; "
            f"paths = build_report({str(csv_path)!r}); print(len(paths))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "7"  # html, markdown and five charts
