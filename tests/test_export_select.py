"""Which row an export picks, and which it refuses: the selection rules on hand-made rows (no run, no runtime)."""

from __future__ import annotations

import pytest

from infertune.export.handover import no_artifact
from infertune.export.select import SelectionError, choose
from infertune.results import ResultRow


def _row(variant: str, batch: int, p50: float | None, status: str = "ok", fidelity_ok: bool | None = True,
         artifact: str = "m/x/k/model") -> ResultRow:
    backend, precision = variant.split(":")[:2]
    return ResultRow(model="m", variant=variant, backend=backend, precision=precision, options="", batch_size=batch,
                     device="cpu", status=status, latency_p50_ms=p50, fidelity_ok=fidelity_ok,
                     artifact="" if backend in ("pytorch", "torch_compile", "null") else artifact,
                     error="cosine_min 0.9 < 0.98" if status == "fidelity_failed" else "")


ROWS = [
    _row("pytorch:fp32", 1, 50.0), _row("onnxruntime:fp32", 1, 20.0), _row("openvino:int8", 1, 15.0),
    _row("pytorch:fp32", 8, 400.0), _row("onnxruntime:fp32", 8, 150.0), _row("openvino:int8", 8, 90.0),
    _row("onnxruntime:int8", 8, 60.0, status="fidelity_failed", fidelity_ok=False), _row("null:fp32", 8, 0.01),
]


def test_default_is_the_fastest_passing_variant_at_the_largest_batch_and_says_so():
    choice = choose(ROWS, no_artifact)
    assert (choice.row.variant, choice.row.batch_size) == ("openvino:int8", 8)
    assert "batch 8" in choice.selection and "largest batch size measured" in choice.selection
    assert choice.forced == ""  # the faster onnxruntime:int8 failed fidelity and the null backend runs nothing


def test_batch_size_picks_another_group():
    choice = choose(ROWS, no_artifact, batch_size=1)
    assert (choice.row.variant, choice.row.batch_size) == ("openvino:int8", 1)
    with pytest.raises(SelectionError, match="no rows at batch size 4; it has 1, 8"):
        choose(ROWS, no_artifact, batch_size=4)


def test_a_faster_variant_without_artifact_is_passed_over_by_name():
    rows = [_row("torch_compile:fp32", 8, 10.0), _row("onnxruntime:fp32", 8, 30.0), _row("pytorch:fp32", 8, 40.0)]
    choice = choose(rows, no_artifact)
    assert choice.row.variant == "onnxruntime:fp32"
    assert "torch_compile:fp32 was faster" in choice.selection and "aoti" in choice.selection


def test_eager_pytorch_is_refused_with_the_reason():
    with pytest.raises(SelectionError, match="eager PyTorch converts nothing"):
        choose(ROWS, no_artifact, variant="pytorch:fp32", force=True)


def test_a_failed_fidelity_variant_is_refused_unless_forced():
    with pytest.raises(SelectionError, match=r"refusing to export onnxruntime:int8 .*fidelity_failed.*--force"):
        choose(ROWS, no_artifact, variant="onnxruntime:int8")
    choice = choose(ROWS, no_artifact, variant="onnxruntime:int8", force=True)
    assert choice.row.variant == "onnxruntime:int8"
    assert "fidelity_failed" in choice.forced and "cosine_min 0.9" in choice.forced


def test_failed_and_unmeasured_variants_are_refused_unless_forced():
    rows = [_row("onnxruntime:fp32", 2, None, status="failed", fidelity_ok=None),
            _row("openvino:fp32", 2, None), _row("torchscript:fp32", 2, 5.0)]
    with pytest.raises(SelectionError, match="status is failed"):
        choose(rows, no_artifact, variant="onnxruntime:fp32")
    with pytest.raises(SelectionError, match="not measured"):
        choose(rows, no_artifact, variant="openvino:fp32")
    assert "not measured" in choose(rows, no_artifact, variant="openvino:fp32", force=True).forced


def test_a_run_without_timings_has_no_fastest_variant():
    rows = [_row("onnxruntime:fp32", 1, None), _row("openvino:fp32", 1, None)]
    with pytest.raises(SelectionError, match="no variant of this run was measured.*--variant V --force"):
        choose(rows, no_artifact)
    assert choose(rows, no_artifact, variant="openvino:fp32", force=True).row.variant == "openvino:fp32"


def test_nothing_exportable_lists_what_each_variant_was():
    rows = [_row("pytorch:fp32", 1, 5.0), _row("onnxruntime:int8", 1, 1.0, status="fidelity_failed", fidelity_ok=False)]
    with pytest.raises(SelectionError, match=r"pytorch:fp32: no artifact; onnxruntime:int8: its status is fidelity_failed"):
        choose(rows, no_artifact)


def test_a_row_from_before_artifact_paths_says_to_run_again():
    row = _row("onnxruntime:fp32", 1, 5.0)
    row.artifact = ""
    assert "run the variant again" in no_artifact(row)
    assert "no hand-over is defined for backend 'mine'" in no_artifact(_row("mine:fp32", 1, 5.0))
