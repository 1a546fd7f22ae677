"""OpenVINO backend: fp32/bf16/int8 on the tiny model, cached IRs, option validation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from infertune.backends.registry import get_backend
from infertune.errors import ConfigError
from infertune.verify import DEFAULT_TOLERANCES, compare
from tests.conftest import reference_outputs, smoke_cell

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)


def test_fp32_matches_reference_and_is_cached(make_ctx, tmp_path):
    root = tmp_path / "cache"
    runner, fid, samples = smoke_cell("openvino", make_ctx("fp32", batch=2, cache_root=root))
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-4
    assert len(samples) >= 3 and all(s > 0 for s in samples)
    assert not runner.cache_hit
    assert runner.artifact_path is not None and (runner.artifact_path / "model.xml").is_file()
    # a second prepare with another batch size reuses the same IR (dynamic batch, reshaped at compile)
    again = get_backend("openvino").prepare(make_ctx("fp32", batch=3, cache_root=root))
    assert again.cache_hit
    assert again.artifact_path == runner.artifact_path


def test_outputs_survive_the_next_call(make_ctx):
    """infer() returns a view that the next call overwrites; to_numpy must hand back a copy."""
    ctx = make_ctx("fp32", batch=2)
    runner = get_backend("openvino").prepare(ctx)
    a = np.random.default_rng(5).standard_normal(ctx.input_shape).astype(np.float32)
    b = np.random.default_rng(6).standard_normal(ctx.input_shape).astype(np.float32)
    first = runner.to_numpy(runner(runner.to_native(a)))
    runner(runner.to_native(b))
    np.testing.assert_allclose(first, reference_outputs(ctx.model, a), atol=1e-4)


def test_from_onnx_matches_reference(make_ctx):
    runner, fid, _ = smoke_cell("openvino", make_ctx("fp32", {"from_onnx": ""}, batch=2))
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-4


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")
def test_int8_quantizes_within_tolerance_and_is_cached(make_ctx, tmp_path):
    root = tmp_path / "cache"
    settings = {"int8": {"calibration_samples": 8}}
    ctx = make_ctx("int8", batch=4, settings=settings, cache_root=root)
    runner, fid, samples = smoke_cell("openvino", ctx)
    assert fid.cosine_min >= DEFAULT_TOLERANCES["int8"].cosine_min, fid
    assert len(samples) >= 3
    # quantization really happened: outputs are close to fp32 but not equal to it
    x = np.random.default_rng(7).standard_normal(ctx.input_shape).astype(np.float32)
    int8_out = runner.to_numpy(runner(runner.to_native(x)))
    ref = reference_outputs(ctx.model, x)
    assert np.abs(int8_out - ref).max() > 1e-3
    assert compare(int8_out, ref, DEFAULT_TOLERANCES["int8"]).cosine_min >= 0.98
    assert "FakeQuantize" in (runner.artifact_path / "model.xml").read_text()
    again = get_backend("openvino").prepare(make_ctx("int8", batch=4, settings=settings, cache_root=root))
    assert again.cache_hit and again.artifact_path == runner.artifact_path


def test_bf16_runs_in_bf16_or_says_why(make_ctx):
    backend = get_backend("openvino")
    avail = backend.availability("cpu", "bf16")
    if not avail.ok:
        assert "bf16" in avail.reason
        pytest.skip(avail.reason)
    runner, fid, _ = smoke_cell("openvino", make_ctx("bf16", batch=2))
    assert fid.ok, fid.failures
    assert "bfloat16" in str(runner.compiled.get_property("INFERENCE_PRECISION_HINT"))


def test_fp32_is_compiled_as_f32_and_throughput_hint_is_applied(make_ctx):
    runner = get_backend("openvino").prepare(make_ctx("fp32", {"hint": "throughput"}, batch=2))
    assert "float32" in str(runner.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert "THROUGHPUT" in str(runner.compiled.get_property("PERFORMANCE_HINT"))


@pytest.mark.parametrize(
    ("precision", "options", "match"),
    [
        ("fp32", {"turbo": ""}, "unknown option 'turbo'.*from_onnx"),
        ("fp32", {"hint": "fast"}, "'hint' got 'fast'.*'latency', 'throughput'"),
        ("fp32", {"preset": "mixed"}, "only applies to int8"),
        ("int8", {"bias_correction": "maybe"}, "'fast', 'full'"),
        ("fp32", {"latency": "", "throughput": ""}, "exclude each other"),
    ],
)
def test_bad_options_raise_config_error(make_ctx, precision, options, match):
    with pytest.raises(ConfigError, match=match):
        get_backend("openvino").prepare(make_ctx(precision, options))


def test_availability_and_defaults():
    backend = get_backend("openvino")
    assert not backend.availability("cuda", "fp32").ok
    assert not backend.availability("cpu", "fp16").ok
    defaults = backend.default_variants("cpu")
    assert defaults[0] == "openvino:fp32" and "openvino:int8" in defaults
    assert backend.default_variants("cuda") == []


@pytest.mark.parametrize("factory", ["two_outputs", "two_outputs_dict"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_output_of_a_two_head_model_is_returned_and_compared(tmp_path, factory, precision):
    if precision == "int8" and importlib.util.find_spec("nncf") is None:
        pytest.skip("nncf is not installed")
    import torch

    from tests import fixture_models
    from tests.test_backend_onnxruntime import _model_ctx

    model = getattr(fixture_models, factory)()
    runner = get_backend("openvino").prepare(_model_ctx(model, tmp_path / "cache", precision))
    x = np.random.default_rng(9).standard_normal((3, 3, 32, 32)).astype(np.float32)
    out = runner.to_numpy(runner(runner.to_native(x)))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    names = ["logits", "features"] if factory == "two_outputs_dict" else ["output0", "output1"]
    assert list(out) == names  # the IR's outputs carry the reference's names
    fid = compare(out, ref, DEFAULT_TOLERANCES[precision])
    assert fid.ok, fid.failures
    assert [o.name for o in fid.outputs] == names


def test_a_zeroed_weights_file_of_the_same_size_is_rebuilt(make_ctx, tmp_path, caplog):
    root = tmp_path / "cache"
    ctx = make_ctx("fp32", batch=2, cache_root=root)
    first = get_backend("openvino").prepare(ctx)
    good = first.to_numpy(first(first.to_native(ctx.example_input)))
    weights = first.artifact_path / "model.bin"
    weights.write_bytes(bytes(weights.stat().st_size))
    with caplog.at_level("WARNING", logger="infertune.cache"):
        again = get_backend("openvino").prepare(make_ctx("fp32", batch=2, cache_root=root))
    assert not again.cache_hit
    assert [r.getMessage() for r in caplog.records if "model.bin does not match" in r.getMessage()] != []
    out = again.to_numpy(again(again.to_native(ctx.example_input)))
    np.testing.assert_array_equal(out, good)
    assert compare(out, reference_outputs(ctx.model, ctx.example_input), DEFAULT_TOLERANCES["fp32"]).ok


def test_a_model_that_fixes_its_batch_gets_an_ir_per_batch_size_from_onnx(tmp_path):
    from tests import fixture_models
    from tests.test_backend_onnxruntime import _model_ctx

    model = fixture_models.fixed_batch()
    paths = set()
    for batch in (1, 3):
        ctx = _model_ctx(model, tmp_path / "cache", "fp32", batch=batch)
        ctx.options = {"from_onnx": ""}
        runner = get_backend("openvino").prepare(ctx)
        assert "Constraints violated (batch)" in runner.notes[0] and f"for batch {batch} only" in runner.notes[0]
        out = runner.to_numpy(runner(runner.to_native(ctx.example_input)))
        assert compare(out, reference_outputs(model, ctx.example_input), DEFAULT_TOLERANCES["fp32"]).ok
        paths.add(runner.artifact_path)
    assert len(paths) == 2
