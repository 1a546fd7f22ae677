"""``infertune compare``: a real slowdown is flagged, run-to-run noise is not, and CI gets the right exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.console import Console

from infertune.cli import main
from infertune.errors import InfertuneError
from infertune.report.compare import compare_runs, comparison_markdown, print_comparison
from infertune.results import read_rows
from tests.report_fixtures import ENVIRONMENT, make_rows, p50_of, write_rows, write_run

SLOWER = "onnxruntime:fp32"


def _cell(comparison, variant: str, batch: int):
    return next(c for c in comparison.cells if c.variant == variant and c.batch_size == batch)


def test_a_real_slowdown_is_significant_and_fails_the_build(tmp_path):
    base = write_run(tmp_path / "a", seed=0)
    cand = write_run(tmp_path / "b", seed=1, scale={SLOWER: 1.15})
    comparison = compare_runs(base, cand)
    for batch in (1, 8):
        cell = _cell(comparison, SLOWER, batch)
        assert cell.significant and cell.p_value < 0.001
        assert 0.10 < cell.p50_change < 0.20 and cell.p50_ci[0] > 0.05  # the CI excludes no change
        assert cell.throughput_change == pytest.approx(1 / (1 + cell.p50_change) - 1)
        assert cell.verdict() == "slower" and cell.is_regression(5) and not cell.is_regression(25)
    assert main(["compare", str(base), str(cand), "--fail-on-regression", "5"]) == 1
    assert main(["compare", str(base), str(cand), "--fail-on-regression", "25"]) == 0
    assert main(["compare", str(base), str(cand)]) == 0  # without the flag it only reports


def test_run_to_run_noise_is_not_a_regression_even_when_the_point_change_is_large(tmp_path):
    """Same distributions, other random draws: the noisy variant's p50 moves by more than 5%, yet
    nothing is significant, so --fail-on-regression 5 passes."""
    seeds = (0, 3)
    base = write_run(tmp_path / "a", seed=seeds[0])
    cand = write_run(tmp_path / "b", seed=seeds[1])
    comparison = compare_runs(base, cand)
    noisy = _cell(comparison, "torchscript:fp32", 1)
    assert abs(noisy.p50_change) > 0.05  # a naive threshold on point values would fail this build
    assert not noisy.significant and noisy.verdict() == "no significant change"
    assert not any(c.significant for c in comparison.shared)
    assert comparison.regressions(5) == []
    assert main(["compare", str(base), str(cand), "--fail-on-regression", "5"]) == 0


def test_p_values_are_adjusted_across_cells(tmp_path):
    from scipy.stats import mannwhitneyu

    base_rows, base_samples = make_rows(seed=0)
    cand_rows, cand_samples = make_rows(seed=1, scale={SLOWER: 1.03})
    comparison = compare_runs(write_rows(tmp_path / "a", base_rows, base_samples),
                              write_rows(tmp_path / "b", cand_rows, cand_samples))
    raw = {c.variant + str(c.batch_size): mannwhitneyu(base_samples[c.baseline.cell_id],
                                                       cand_samples[c.candidate.cell_id]).pvalue
           for c in comparison.shared}
    for c in comparison.shared:
        assert c.p_value >= raw[c.variant + str(c.batch_size)] - 1e-12  # Benjamini-Hochberg only raises them
    assert len(comparison.shared) == 8 and all(c.n_baseline == c.n_candidate == 40 for c in comparison.shared)


def test_a_cell_that_passed_and_now_fails_is_a_regression(tmp_path):
    base = write_run(tmp_path / "a")
    rows, samples = make_rows(seed=1)
    for row in rows:
        if row.variant == SLOWER and row.batch_size == 8:
            row.status, row.error, row.latency_p50_ms = "crashed", "worker killed by SIGSEGV", None
    cand = write_rows(tmp_path / "b", rows, samples)
    cell = _cell(compare_runs(base, cand), SLOWER, 8)
    assert cell.newly_failing and cell.verdict() == "status ok → crashed" and cell.is_regression(50)
    assert main(["compare", str(base), str(cand), "--fail-on-regression", "50"]) == 1


def test_csv_only_inputs_compare_point_values_and_still_gate(tmp_path, capsys):
    base = write_run(tmp_path / "a")
    cand = write_run(tmp_path / "b", seed=1, scale={SLOWER: 1.15})
    base.with_suffix(".json").unlink()
    comparison = compare_runs(base, cand)
    assert not comparison.tested and "no raw samples in" in comparison.untested_reason
    cell = _cell(comparison, SLOWER, 1)
    assert cell.significant is None and cell.p_value is None and cell.p50_ci is None
    assert cell.verdict() == "slower (not tested: no raw samples)" and cell.is_regression(5)
    assert main(["compare", str(base), str(cand), "--fail-on-regression", "5"]) == 1
    out = capsys.readouterr().out
    assert "significance cannot be tested, so the changes below are point values" in out
    assert "p50 slower by more than 5% (point values: no samples to test)" in out


def test_output_table_markdown_and_what_differs_between_runs(tmp_path):
    base_rows, base_samples = make_rows(seed=0)
    cand_rows, cand_samples = make_rows(seed=1, scale={SLOWER: 1.15})
    base = write_rows(tmp_path / "a", base_rows, base_samples)
    env = {**ENVIRONMENT, "libraries": {"torch": "2.14.1", "onnxruntime": "1.33.0"}}
    cand = write_rows(tmp_path / "b", cand_rows, cand_samples, environment=env)
    comparison = compare_runs(base, cand)
    assert ("libraries.onnxruntime", "1.32.0", "1.33.0") in comparison.differences
    console = Console(record=True, width=250)
    print_comparison(comparison, 5, console)
    text = console.export_text()
    ratio = p50_of(read_rows(cand), SLOWER, 1) / p50_of(read_rows(base), SLOWER, 1) - 1
    line = next(ln for ln in text.splitlines() if SLOWER in ln and "│     1 │" in ln)
    assert f"{100 * ratio:+.1f}%" in line and "slower ✗ REGRESSION" in line
    assert "the runs differ in: libraries.onnxruntime: 1.32.0 → 1.33.0" in text
    assert "REGRESSION in 2 cell(s)" in text
    md = comparison_markdown(comparison, 5)
    assert f"| resnet50 · cpu | {SLOWER} | 1 |" in md and f"**{100 * ratio:+.1f}%" in md


def test_markdown_flag_writes_a_file(tmp_path):
    base = write_run(tmp_path / "a")
    cand = write_run(tmp_path / "b", seed=1)
    assert main(["compare", str(base), str(cand), "--markdown", str(tmp_path / "cmp.md")]) == 0
    assert (tmp_path / "cmp.md").read_text().startswith("## infertune compare")


def test_bad_input_exits_2_with_one_line(tmp_path):
    base = write_run(tmp_path / "a")
    other_model = write_run(tmp_path / "b", model="resnet18")
    for args, expected in (
        ([str(base), str(tmp_path / "missing.json")], "no results file at"),
        ([str(base), str(other_model)], "no measured (model, variant, batch size, device) in common"),
        ([str(base), str(base), "--alpha", "2"], "alpha must be between 0 and 1"),
    ):
        proc = subprocess.run([sys.executable, "-m", "infertune", "compare", *args], check=False, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "infertune", "compare", str(base), str(base),
                           "--fail-on-regression", "-3"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "PCT must be >= 0" in proc.stderr


def test_compare_rejects_nothing_in_common_in_the_api(tmp_path):
    with pytest.raises(InfertuneError, match="in common"):
        compare_runs(write_run(tmp_path / "a"), write_run(tmp_path / "b", device="cuda"))
