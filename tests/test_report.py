"""Reports read only result files: tables, charts, HTML, markdown and run comparison on synthetic rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from infertune.errors import InfertuneError
from infertune.report import best_variants, build_report, markdown_table, seed_table
from infertune.report.table import HEADERS
from infertune.report.view import md_escape
from infertune.results import FIELD_NAMES, ResultFiles, ResultRow, read_rows
from tests.report_fixtures import (
    ENVIRONMENT,
    FAILED_REASON,
    LADDER,
    PNG_MAGIC,
    UNAVAILABLE_REASON,
    make_rows,
    write_run,
)
from tests.report_fixtures import p50_of as _p50


def _text(rows: list[ResultRow]) -> str:
    console = Console(record=True, width=260)
    seed_table(rows, console=console)
    return console.export_text()


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
    assert "✗ fidelity [1,2]" in text
    assert "[1] onnxruntime:int8: fidelity failed: cosine 0.9100 < 0.98" in text


def test_noisy_marker_footnote_and_note():
    rows, _ = make_rows(batches=(1,))
    text = _text(rows)
    assert "†" in text and "† noisy: IQR/median above 10%" in text and "torchscript:fp32 IQR/median" in text
    assert "] onnxruntime:int8: INT8 slower than FP32: CPU lacks VNNI" in text


def test_best_variants_picks_fastest_ok_row_per_batch():
    rows, _ = make_rows()
    best = best_variants(rows)
    assert set(best) == {("resnet50", "cpu", 1, ""), ("resnet50", "cpu", 8, "")}  # "": no pinned node
    assert {r.variant for r in best.values()} == {"onnxruntime:fp32"}


def test_best_variants_ignores_null_backend_and_groups_without_passing_rows():
    rows, _ = make_rows(batches=(1,))
    null = ResultRow(model="resnet50", variant="null:fp32", backend="null", precision="fp32", options="",
                     batch_size=1, device="cpu", latency_p50_ms=0.001, throughput_ips=1e6)
    lonely = ResultRow(model="resnet50", variant="onnxruntime:int8", backend="onnxruntime", precision="int8",
                       options="", batch_size=4, device="cpu", status="fidelity_failed", latency_p50_ms=1.0)
    best = best_variants([*rows, null, lonely])
    assert best[("resnet50", "cpu", 1, "")].variant == "onnxruntime:fp32"
    assert ("resnet50", "cpu", 4, "") not in best
    assert "fastest that keeps predictions: none" in _text([lonely])


def test_seed_table_without_baseline_says_so():
    rows, _ = make_rows(batches=(1,))
    text = _text([r for r in rows if r.variant != "pytorch:fp32"])
    assert "fastest that keeps predictions: onnxruntime:fp32 (no pytorch:fp32 row to compare with)" in text


# ---------------------------------------------------------------- markdown


def test_markdown_table_parses():
    rows, _ = make_rows()
    md = markdown_table(rows)
    tables = re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.MULTILINE)
    assert len(tables) == 2
    for table in tables:
        lines = table.strip().splitlines()
        # unescaped pipes split cells; escaped ones (\|) do not
        counts = {len(re.split(r"(?<!\\)\|", ln)) - 2 for ln in lines}
        assert counts == {len(HEADERS)}, lines
        assert re.fullmatch(r"\|(---:?\|)+", lines[1])
        assert len(lines) == 2 + len(LADDER)
    assert "**onnxruntime:fp32 ★**" in md
    assert md_escape(UNAVAILABLE_REASON) == "pip install infertune\\[openvino\\]" and md_escape(UNAVAILABLE_REASON) in md


# ---------------------------------------------------------------- build_report


def test_build_report_writes_pngs_html_and_markdown(tmp_path):
    csv_path = write_run(tmp_path)
    paths = build_report(csv_path)
    out = tmp_path / csv_path.stem  # default: a folder named after the CSV, next to it
    assert paths["html"] == out / "report.html" and paths["markdown"] == out / "report.md"
    charts = [p for k, p in paths.items() if k not in ("html", "markdown")]
    kinds = {p.stem.removeprefix("resnet50_cpu_") for p in charts}
    assert kinds == {"latency", "throughput", "speedup", "distribution", "pareto"}
    for png in charts:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    html = paths["html"].read_text()
    for variant, *_ in LADDER:
        assert variant in html
    assert ENVIRONMENT["cpu_model"] in html and "onnxruntime" in html and "2.14.1" in html
    assert re.search(r'badge yes">AVX2<', html) and re.search(r'badge no">VNNI<', html)
    assert html.count("data:image/png;base64,") == len(charts)  # self-contained
    assert re.search(r'<div class="card" data-batch="1">\s*<div class="batch">batch 1</div>\s*'
                     r'<div class="variant">onnxruntime:<wbr>fp32</div>', html)  # breaks at colons only
    assert html.count('<td data-key="samples" data-sort="40"') == len(make_rows()[1])  # raw samples per cell
    assert "pip install infertune[openvino]" in html and FAILED_REASON in html
    assert "&#34;batch_sizes&#34;: [" in html  # the resolved config, JSON-escaped for HTML
    md = paths["markdown"].read_text()
    assert "| Format | Latency (ms) | Throughput (img/sec) | Speedup |" in md
    assert "resnet50_cpu_latency.png" in md


def test_markdown_summary_has_fastest_verified_per_batch_and_failures_with_reasons(tmp_path):
    rows, _ = make_rows()
    md = build_report(write_run(tmp_path))["markdown"].read_text()
    fastest = md.split("## Fastest variant that kept the predictions", 1)[1].split("## Failures", 1)[0]
    for batch in (1, 8):
        speedup = _p50(rows, "pytorch:fp32", batch) / _p50(rows, "onnxruntime:fp32", batch)
        assert f"| resnet50 · cpu | {batch} | **onnxruntime:fp32** |" in fastest and f"{speedup:.2f}×" in fastest
    failures = md.split("## Failures", 1)[1].split("## Results per batch size", 1)[0]
    assert "| openvino:int8 | resnet50 · cpu | 1, 8 | unavailable | pip install infertune\\[openvino\\] |" in failures
    assert "| torch\\_compile:fp32 |" not in failures and "| torch_compile:fp32 | resnet50 · cpu | 1, 8 | failed |" in failures
    assert "| onnxruntime:int8 | resnet50 · cpu | 1, 8 | fidelity_failed | cosine 0.9100 &lt; 0.98 |" in failures


MALICIOUS = "<script>alert(1)</script>|x"
MALICIOUS_IMG = '<img src=x onerror="window.__xss=1">'


def write_malicious_run(folder: Path) -> Path:
    """A results file whose every free-text field tries to inject markup."""
    rows, samples = make_rows(batches=(1,), model=MALICIOUS)
    for row in rows:
        row.label = MALICIOUS_IMG
        if row.status != "ok":
            row.error = f"{MALICIOUS_IMG} [link](javascript:alert(1)) *bold* `code`"
    rows[0].note = MALICIOUS
    files = ResultFiles(folder / "r.csv", folder / "r.json", config={"model": {"name": MALICIOUS}},
                        environment={**ENVIRONMENT, "cpu_model": MALICIOUS_IMG})
    for row in rows:
        files.add(row, samples.get(row.cell_id))
    return files.csv_path


def test_html_and_markdown_escape_every_text_from_result_files(tmp_path):
    paths = build_report(write_malicious_run(tmp_path), tmp_path / "out")
    html = paths["html"].read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert html.count("<script") == 1  # the page's own sorting script, nothing else
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|x" in html and "&lt;img src=x onerror=" in html
    md = paths["markdown"].read_text()
    assert "<script" not in md and "<img" not in md
    assert "\\[link\\](javascript:" in md and not re.search(r"(?<!\\)\[link(?<!\\)\]\(", md)  # no live link
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in md
    # the escaped pipe does not split a table: every row of the fastest-variant table has its 7 cells
    table = md.split("## Fastest variant that kept the predictions", 1)[1].split("## Failures", 1)[0]
    for line in (ln for ln in table.splitlines() if ln.startswith("|")):
        assert len(re.split(r"(?<!\\)\|", line)) - 2 == 7, line
    assert (tmp_path / "out" / "script-alert-1-script-x_cpu_latency.png").is_file()  # a safe file name


def test_html_allows_no_network_and_runs_only_its_own_script(tmp_path):
    import base64
    import hashlib

    html = build_report(write_run(tmp_path))["html"].read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    script = re.search(r"<script>(.*)</script>", html, flags=re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # an injected script would not match the hash
    assert not re.search(r'(src|href)="(https?:)?//', html) and "url(" not in html and "@import" not in html


def test_several_result_files_merge_into_one_report(tmp_path):
    cpu = write_run(tmp_path, name="cpu_run", batches=(1,))
    gpu = write_run(tmp_path, name="gpu_run", batches=(1, 8), device="cuda", seed=1)
    again = write_run(tmp_path, name="cpu_again", batches=(1,), seed=2)  # the same CPU cells: the later file wins
    paths = build_report([cpu, gpu.with_suffix(".json"), gpu, again], tmp_path / "merged")
    assert {"resnet50_cpu_latency", "resnet50_cuda_latency"} <= set(paths)
    html = paths["html"].read_text()
    assert len(re.findall(r'class="card( none)?" data-batch', html)) == 3  # cpu batch 1, cuda batches 1 and 8
    assert f"6 cell(s) are in both {cpu} and {again}: showing the later file" in html
    rows_again, _ = make_rows(batches=(1,), seed=2)
    assert f'data-sort="{_p50(rows_again, "pytorch:fp32", 1)}"' in html
    md = paths["markdown"].read_text()
    assert md.count(gpu.name) == 0 and gpu.with_suffix(".json").name in md  # the CSV beside its JSON is read once


def test_default_out_dir_for_merged_files(tmp_path):
    a = write_run(tmp_path, name="a", batches=(1,))
    b = write_run(tmp_path, name="b", batches=(1,), device="cuda")
    paths = build_report([a, b])
    assert paths["html"] == tmp_path / "a_and_1_more" / "report.html"


def test_unknown_status_and_extra_columns_from_newer_files_are_tolerated(tmp_path):
    rows, samples = make_rows(batches=(1,))
    rows[1].status = "interrupted"
    rows[1].error = "stopped by Ctrl-C after 3 of 10 iterations"
    csv_path = write_run(tmp_path, batches=(1,))
    csv_path.unlink()
    from infertune.results import ResultFiles as Files

    files = Files(csv_path, csv_path.with_suffix(".json"), environment=ENVIRONMENT)
    for row in rows:
        files.add(row, samples.get(row.cell_id))
    text = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([text[0] + ",top5_overlap,weights_note"]
                                   + [line + ",0.98,random" for line in text[1:]]) + "\n")
    doc = json.loads(csv_path.with_suffix(".json").read_text())
    doc["rows"][0]["accuracy_top5"] = 0.9
    csv_path.with_suffix(".json").write_text(json.dumps(doc))
    for source in (csv_path, csv_path.with_suffix(".json")):
        paths = build_report(source, tmp_path / source.suffix[1:])
        html = paths["html"].read_text()
        assert "stopped by Ctrl-C after 3 of 10 iterations" in html and "interrupted" in html
        assert "resnet50_cpu_latency" in paths
        assert "| torchscript:fp32 | resnet50 · cpu | 1 | interrupted |" in paths["markdown"].read_text()


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
    html = paths["html"].read_text()
    assert "no variant both ran and passed its fidelity check" in html and "No charts" in html


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


# ---------------------------------------------------------------- no torch


def test_importing_report_does_not_import_torch():
    code = ("import sys, infertune.report, infertune.report.build; "
            "bad = [m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'matplotlib', 'jinja2') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


#: a meta-path hook that makes every model runtime unimportable, as on a machine without them.
NO_RUNTIMES = """
import sys
BLOCKED = {"torch", "torchvision", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "timm"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this machine (blocked by the test)")
sys.meta_path.insert(0, Block())
from infertune.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
sys.exit(code)
"""


def test_report_and_compare_commands_work_where_no_runtime_can_be_imported(tmp_path):
    csv_path = write_run(tmp_path)
    other = write_run(tmp_path / "b", seed=1)
    report = subprocess.run([sys.executable, "-c", NO_RUNTIMES, "report", str(csv_path), "--out", str(tmp_path / "o")],
                            check=False, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    assert (tmp_path / "o" / "report.html").is_file() and len(list((tmp_path / "o").glob("*.png"))) == 5
    compare = subprocess.run([sys.executable, "-c", NO_RUNTIMES, "compare", str(csv_path), str(other)],
                             check=False, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert "Mann-Whitney U" in compare.stdout


def test_gpu_rows_get_an_end_to_end_column_in_every_table(tmp_path):
    rows, _ = make_rows()
    assert "E2E p50 (ms)" not in markdown_table(rows)  # CPU rows: latency is already end to end
    for r in rows:
        if r.latency_p50_ms is not None:
            r.latency_scope, r.e2e_latency_p50_ms, r.e2e_latency_p99_ms = "device", r.latency_p50_ms + 4.25, 9.0
    md = markdown_table(rows)
    header = next(ln for ln in md.splitlines() if ln.startswith("| Format"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[cells.index("p95 (ms)") + 1] == "E2E p50 (ms)"
    from infertune.report.view import fmt_ms

    baseline = next(ln for ln in md.splitlines() if ln.startswith("| pytorch:fp32"))
    assert f"| {fmt_ms(_p50(rows, 'pytorch:fp32', 1) + 4.25)} | cos" in baseline
    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json")
    for r in rows:
        files.add(r)
    build_report(files.csv_path, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "E2E p50 (ms)" in html and "GPU mem (MB)" in html


def test_the_harness_row_cannot_win_a_naive_idxmax_and_is_labelled_in_the_csv(tmp_path):
    """null:fp32 measures the tool's own cost: no speedup in the files, role "harness", no chart or winner."""
    from infertune.results import load_results
    from tests.report_fixtures import DEFAULT_CPU_LADDER

    csv_path = write_run(tmp_path, ladder=DEFAULT_CPU_LADDER)
    df = load_results(csv_path)
    null = df[df.variant == "null:fp32"]
    assert len(null) == 2 and set(null.role) == {"harness"} and null.speedup_vs_pytorch.isna().all()
    assert set(df[df.variant != "null:fp32"].role) == {"variant"}
    assert df.loc[df.speedup_vs_pytorch.idxmax(), "variant"] == "openvino:int8"
    assert "null:fp32" not in {r.variant for r in best_variants(read_rows(csv_path)).values()}
    paths = build_report(csv_path)
    assert "null:fp32" not in paths["markdown"].read_text().split("### ")[0]  # not in the summary's winners
