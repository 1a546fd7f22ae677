"""The shared ONNX export: a batch dimension that really stays dynamic, a per-batch fallback that says
so, and exporter errors a user can read (no colour codes, the root cause kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infertune.backends import onnx_export
from infertune.backends.base import PrepareContext
from infertune.backends.onnx_export import export_error_text, export_onnx, graph_inputs
from infertune.backends.registry import get_backend
from infertune.cache import ArtifactCache
from infertune.errors import ModelError
from infertune.verify import DEFAULT_TOLERANCES, compare
from tests import fixture_models

pytest.importorskip("onnxruntime")
SHAPE = (3, 32, 32)


def _ctx(model, root: Path, batch: int, precision: str = "fp32", logs: list[str] | None = None) -> PrepareContext:
    return PrepareContext(
        model=model, example_input=np.random.default_rng(batch).standard_normal((batch, *SHAPE)).astype(np.float32),
        precision=precision, options={}, device="cpu", threads=1, cache=ArtifactCache(root, type(model).__name__),
        calibration=lambda n: np.random.default_rng(7).standard_normal((n, *SHAPE)).astype(np.float32),
        settings={"int8": {"calibration_samples": 10}}, log=(logs.append if logs is not None else lambda m: None))


def _verify(runner, ctx: PrepareContext, batch: int):
    x = np.random.default_rng(100 + batch).standard_normal((batch, *SHAPE)).astype(np.float32)
    with torch.inference_mode():
        reference = ctx.model(torch.from_numpy(x))
    return compare(runner.to_numpy(runner(runner.to_native(x))), reference, DEFAULT_TOLERANCES[ctx.precision])


def test_a_vit_exports_with_a_dynamic_batch_that_serves_every_batch_size(tmp_path):
    """torchvision's vit_b_16 came out with a static batch of 1 when traced on one sample."""
    model = fixture_models.tiny_vit()
    export = export_onnx(_ctx(model, tmp_path, batch=1))
    ((_, shape),) = graph_inputs(export.path)
    assert export.dynamic_batch and export.note == "" and isinstance(shape[0], str) and shape[1:] == list(SHAPE)
    for batch in (1, 2, 5):
        ctx = _ctx(model, tmp_path, batch)
        runner = get_backend("onnxruntime").prepare(ctx)
        fid = _verify(runner, ctx, batch)
        assert fid.ok, (batch, fid.failures)
        assert runner.notes == ()
    assert export_onnx(_ctx(model, tmp_path, batch=5)).path == export.path  # one export for all


def test_a_model_that_fixes_its_batch_is_exported_per_batch_size_and_the_row_says_why(tmp_path, monkeypatch):
    model = fixture_models.fixed_batch()
    attempts = []
    real = onnx_export._export_dynamic
    monkeypatch.setattr(onnx_export, "_export_dynamic", lambda *a: attempts.append(1) or real(*a))
    logs: list[str] = []
    paths = {}
    for batch in (1, 3):
        ctx = _ctx(model, tmp_path, batch, logs=logs)
        export = export_onnx(ctx)
        assert not export.dynamic_batch and graph_inputs(export.path)[0][1] == [batch, *SHAPE]
        assert "Constraints violated (batch)" in export.note and "specialized it to be a constant" in export.note
        assert f"exported for batch {batch} only" in export.note and "\x1b" not in export.note
        paths[batch] = export.path
        runner = get_backend("onnxruntime").prepare(ctx)
        assert runner.notes == (export.note,)
        assert _verify(runner, ctx, batch).ok
    assert paths[1] != paths[3]  # the batch is in the cache key
    assert len(attempts) == 1  # the failed dynamic attempt is remembered, not repeated per batch size
    assert any("cannot stay dynamic" in m for m in logs)


def test_int8_calibrates_a_static_batch_export_in_batches_of_its_size(tmp_path):
    """INT8 calibration fed 8 samples at once to a batch-1 export ("Got: 8 Expected: 1")."""
    model = fixture_models.fixed_batch()
    for batch in (1, 3):  # 10 calibration samples: 4 batches of 3, the last one wrapping around
        ctx = _ctx(model, tmp_path, batch, precision="int8")
        runner = get_backend("onnxruntime").prepare(ctx)
        fid = _verify(runner, ctx, batch)
        assert fid.cosine_min > 0.9, fid.failures
        assert "exported for batch" in runner.notes[0]


def test_an_exported_graph_that_came_out_static_is_caught(tmp_path, monkeypatch):
    """Whatever the exporter does, the graph's input shape is read back before it is trusted."""
    def static_export(model, example, path, opset, dynamic_shapes):
        real_export(model, example, path, opset, dynamic_shapes=None)  # as if the batch were quietly specialised

    real_export = onnx_export._torch_export
    monkeypatch.setattr(onnx_export, "_torch_export", static_export)
    export = export_onnx(_ctx(fixture_models.two_outputs(), tmp_path, batch=4))
    assert not export.dynamic_batch
    assert "the exported graph's input is static: input [2, 3, 32, 32]" in export.note
    assert graph_inputs(export.path)[0][1] == [4, *SHAPE]


def test_a_model_that_cannot_be_exported_fails_with_the_root_cause_and_no_colour_codes(tmp_path):
    with pytest.raises(ModelError) as caught:
        export_onnx(_ctx(fixture_models.branches_on_input(), tmp_path, batch=2))
    text = str(caught.value)
    assert "\x1b" not in text and "This is step 1/3" not in text
    assert text.startswith("the model cannot be exported to ONNX")
    assert "Could not guard on data-dependent expression" in text
    assert "fixture_models.py" in text and "if x.mean() > 0:" in text  # where, in the user's code


def test_error_text_puts_the_cause_first_and_strips_terminal_codes():
    wrapped = RuntimeError(
        "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting the model "
        "to ONNX. Next steps:\n- Modify the model code for `torch.export.export` to succeed.\n" + "- advice\n" * 80
        + "\n## Exception summary\n\n<class 'torch._dynamo.exc.UserError'>: \x1b[1mConstraints violated "
        "(batch)!\x1b[0m For more information, run with TORCH_LOGS=\"+dynamic\".\n  - Not all values of batch "
        "satisfy the generated guard batch <= 2\n\n(Refer to the full stack trace above for more information.)")
    text = export_error_text(wrapped)
    assert text.startswith("Constraints violated (batch)! - Not all values of batch satisfy the generated guard")
    assert "\x1b" not in text and "TORCH_LOGS" not in text and "advice" not in text
    plain = export_error_text(ValueError("\x1b[31mshape mismatch\x1b[0m\nmore detail"))
    assert plain == "ValueError: shape mismatch"
