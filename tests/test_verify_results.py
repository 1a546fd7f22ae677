"""Fidelity metrics and the result files' round trip."""

from __future__ import annotations

import numpy as np
import pytest

from infertune.results import ResultFiles, ResultRow, load_results, read_rows
from infertune.verify import DEFAULT_TOLERANCES, Tolerance, compare


def test_identical_outputs_pass_everything():
    ref = np.random.default_rng(0).standard_normal((4, 10))
    fid = compare(ref.copy(), ref, DEFAULT_TOLERANCES["fp32"])
    assert fid.ok and fid.max_abs_err == 0 and fid.cosine_min == pytest.approx(1.0) and fid.top1_agreement == 1.0


def test_small_fp16_like_noise_fails_fp32_but_passes_fp16():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 100)) * 5
    noisy = ref + rng.standard_normal(ref.shape) * 5e-3
    assert not compare(noisy, ref, DEFAULT_TOLERANCES["fp32"]).ok
    assert compare(noisy, ref, DEFAULT_TOLERANCES["fp16"]).ok


def test_flipped_predictions_fail_int8_on_top1():
    ref = np.eye(10)[:8] * 10 + 0.1
    out = ref[:, ::-1].copy()
    fid = compare(out, ref, DEFAULT_TOLERANCES["int8"])
    assert not fid.ok and fid.top1_agreement == 0.0
    assert "top1_agreement" in fid.failed_metrics
    assert any(f.startswith("top1_agreement 0.0% < 80.0%") for f in fid.failures)


def test_nan_and_shape_mismatch_always_fail():
    ref = np.ones((2, 3))
    assert not compare(np.full((2, 3), np.nan), ref, Tolerance()).ok
    assert "shape" in compare(np.ones((2, 4)), ref, Tolerance()).failures[0]


def _row(variant: str, batch: int, p50: float | None, status: str = "ok") -> ResultRow:
    return ResultRow(model="m", variant=variant, backend=variant.split(":")[0], precision="fp32", options="",
                     batch_size=batch, device="cpu", status=status, latency_p50_ms=p50)


def test_files_round_trip_and_speedups(tmp_path):
    files = ResultFiles(tmp_path / "r.csv", tmp_path / "r.json", config={"a": 1}, environment={"cpu": "x"})
    files.add(_row("pytorch:fp32", 1, 10.0), [10.0, 10.5])
    files.add(_row("onnxruntime:fp32", 1, 4.0), [4.0])
    files.add(_row("tensorrt:fp16", 1, None, status="unavailable"))
    rows = read_rows(tmp_path / "r.csv")
    assert [r.variant for r in rows] == ["pytorch:fp32", "onnxruntime:fp32", "tensorrt:fp16"]
    assert rows[1].speedup_vs_pytorch == pytest.approx(2.5)
    assert rows[2].latency_p50_ms is None and rows[2].status == "unavailable"
    assert [r.variant for r in read_rows(tmp_path / "r.json")] == [r.variant for r in rows]
    df = load_results(tmp_path / "r.csv")
    assert list(df["variant"]) == [r.variant for r in rows]
    assert df.loc[1, "speedup_vs_pytorch"] == pytest.approx(2.5)


def test_load_results_on_a_missing_file_is_a_clear_error(tmp_path):
    from infertune.errors import InfertuneError

    with pytest.raises(InfertuneError, match="no results file"):
        load_results(tmp_path / "nope.csv")
