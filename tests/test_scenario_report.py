"""The serving report from scenario files: best configuration per scenario, the latency-vs-QPS chart with
the bound, escaped text, and ``infertune report`` dispatching scenario files to it."""

from __future__ import annotations

from pathlib import Path

from infertune.report.build import build_report
from infertune.report.serving import best_rows
from infertune.scenario.rows import (
    RowDetails,
    ScenarioFiles,
    ScenarioRow,
    TrialPoint,
    is_scenario_file,
    read_scenario_file,
)


def _row(scenario: str, variant: str, max_batch: int, **kw) -> ScenarioRow:
    return ScenarioRow(model="resnet50", variant=variant, backend=variant.split(":")[0], precision="int8",
                       device="cpu", scenario=scenario, max_batch=max_batch, max_delay_ms=2.0, instances=1, **kw)


def write_files(tmp_path: Path) -> Path:
    files = ScenarioFiles(tmp_path / "scenario_results_1.csv", tmp_path / "scenario_results_1.json")
    files.add(_row("offline", "openvino:int8", 8, verdict="VALID", qps=120.0))
    trials = [TrialPoint(50.0, 49.8, 40.0, 40.0, "VALID"), TrialPoint(100.0, 99.0, 95.0, 95.0, "VALID"),
              TrialPoint(110.0, 104.0, 180.0, 180.0, "INVALID")]
    files.add(_row("server", "openvino:int8", 8, verdict="VALID", target_qps=100.0, qps=99.0, latency_p99_ms=95.0,
                   latency_bound_ms=100.0, cost_per_million=2.5),
              RowDetails({1: 3, 8: 40}, trials))
    files.add(_row("server", "onnxruntime:int8", 1, verdict="INVALID", target_qps=60.0, qps=55.0,
                   latency_p99_ms=400.0, latency_bound_ms=100.0, reasons="<script>alert(1)</script>"),
              RowDetails({1: 100}, [TrialPoint(60.0, 55.0, 400.0, 400.0, "INVALID")]))
    server = next(r for r in files.rows if r.scenario == "server" and r.variant == "openvino:int8")
    files.mark_best("server", server.row_id, "best server configuration: b8 d2ms x1 serves 100.0 QPS")
    return files.csv_path


def test_files_round_trip_and_are_recognised(tmp_path):
    csv_path = write_files(tmp_path)
    assert is_scenario_file(csv_path) and is_scenario_file(csv_path.with_suffix(".json"))
    rows, details, doc = read_scenario_file(csv_path)
    assert [r.scenario for r in rows] == ["offline", "server", "server"]
    assert rows[1].best and not rows[2].best
    assert details[rows[1].row_id].batch_histogram == {1: 3, 8: 40}
    assert doc["outcomes"]["server"].startswith("best server configuration")


def test_best_rows_per_scenario(tmp_path):
    rows, _, _ = read_scenario_file(write_files(tmp_path))
    best = best_rows(rows)
    assert best["server"].variant == "openvino:int8" and best["offline"].qps == 120.0
    assert "single-stream" not in best  # nothing ran: no best claimed


def test_report_has_chart_best_configuration_and_escapes_text(tmp_path):
    paths = build_report(write_files(tmp_path), tmp_path / "out")
    assert paths["latency_vs_qps"].stat().st_size > 1000
    md = paths["markdown"].read_text()
    assert "| server | openvino:int8 | b8 d2ms x1 | 100.0 QPS at p99 95.0 ms (bound 100.0 ms) | 2.5 per 1M |" in md
    assert "latency_vs_qps.png" in md
    page = paths["html"].read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "data:image/png;base64," in page and "default-src 'none'" in page


def test_cli_report_on_a_scenario_file(tmp_path, capsys):
    from infertune.cli import main

    csv_path = write_files(tmp_path)
    assert main(["report", str(csv_path), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert "html:" in capsys.readouterr().out
