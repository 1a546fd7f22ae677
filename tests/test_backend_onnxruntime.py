"""onnxruntime: fp32 and INT8 (static, every calibration method, dynamic) on the tiny model; caching; options."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from infertune.backends.base import PrepareContext
from infertune.backends.onnx_export import export_onnx
from infertune.backends.ort_quantize import (
    Int8Recipe,
    default_types,
    quantize_cached,
    resolve_recipe,
    tensorrt_recipe,
)
from infertune.backends.registry import get_backend
from infertune.cache import ArtifactCache
from infertune.errors import ConfigError
from tests.conftest import TINY_SHAPE, reference_outputs, smoke_cell

VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2_ONLY = frozenset({"avx2", "fma"})


@pytest.fixture(scope="module")
def export_template(tmp_path_factory, tiny_model) -> Path:
    """One ONNX export of the tiny model for the whole module (the dynamo export is the slow part)."""
    root = tmp_path_factory.mktemp("export-template")
    ctx = PrepareContext(tiny_model, np.zeros((1, *TINY_SHAPE), np.float32), "fp32", {}, "cpu", 1,
                         ArtifactCache(root, "tiny"), lambda n: np.zeros((n, *TINY_SHAPE), np.float32))
    export_onnx(ctx)
    return root / "tiny" / "onnx"


@pytest.fixture(autouse=True)
def _warm_export(export_template, tmp_path):
    """Seed each test's fresh cache (make_ctx's default root) with the export; everything else starts cold."""
    shutil.copytree(export_template, tmp_path / "models" / "tiny" / "onnx")


@pytest.fixture
def ort():
    return get_backend("onnxruntime")


def _run(runner, batch: np.ndarray) -> np.ndarray:
    return runner.to_numpy(runner(runner.to_native(batch)))


def _op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_fp32_reproduces_reference_and_saves_optimized_model(ort, make_ctx):
    runner, fid, samples = smoke_cell("onnxruntime", make_ctx("fp32", batch=2))
    assert fid.ok, fid.failures
    assert fid.max_abs_err < 1e-4
    assert runner.artifact_path.name == "model.optimized.onnx" and runner.artifact_path.stat().st_size > 0
    assert runner.cache_hit is False and runner.latency_scope == "end_to_end"
    assert len(samples) >= 3 and all(s > 0 for s in samples)


def test_int8_is_quantized_and_close_to_reference(ort, make_ctx):
    ctx = make_ctx("int8", batch=4)
    runner, fid, _ = smoke_cell("onnxruntime", ctx)
    assert fid.ok, fid.failures
    assert fid.cosine_min >= 0.98
    # quantization really happened: outputs move, and the model holds Q/DQ pairs
    assert fid.max_abs_err > 1e-5
    ops = _op_types(runner.source_path)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    verify_in = np.random.default_rng(3).standard_normal((4, *TINY_SHAPE)).astype(np.float32)
    assert not np.array_equal(_run(runner, verify_in), reference_outputs(ctx.model, verify_in))


def test_second_prepare_is_cache_hit_with_same_outputs(ort, make_ctx):
    first = ort.prepare(make_ctx("int8"))
    second = ort.prepare(make_ctx("int8"))
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.artifact_path == first.artifact_path
    x = make_ctx().example_input
    np.testing.assert_array_equal(_run(first, x), _run(second, x))


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_calibration_methods_verify_and_change_the_cache_key(ort, make_ctx, method):
    minmax = ort.prepare(make_ctx("int8"))
    runner, fid, _ = smoke_cell("onnxruntime", make_ctx("int8", {method: ""}))
    assert fid.ok and fid.cosine_min >= 0.98, fid.failures
    assert runner.cache_hit is False
    assert runner.artifact_path != minmax.artifact_path


def test_method_from_settings_is_the_same_artifact_as_the_option(ort, make_ctx):
    by_option = ort.prepare(make_ctx("int8", {"percentile": ""}))
    by_setting = ort.prepare(make_ctx("int8", settings={"int8": {"calibration_method": "percentile"}}))
    assert by_setting.cache_hit is True
    assert by_setting.artifact_path == by_option.artifact_path


def test_calibration_size_changes_the_cache_key(ort, make_ctx):
    n32 = ort.prepare(make_ctx("int8"))
    n8 = ort.prepare(make_ctx("int8", settings={"int8": {"calibration_samples": 8}}))
    assert n8.cache_hit is False and n8.artifact_path != n32.artifact_path


@pytest.mark.parametrize(("options", "zero_point_type"), [({"u8s8": ""}, onnx.TensorProto.UINT8),
                                                          ({"s8s8": ""}, onnx.TensorProto.INT8)])
def test_type_options_reach_the_quantized_model(ort, make_ctx, options, zero_point_type):
    runner = ort.prepare(make_ctx("int8", options))
    model = onnx.load(str(runner.source_path))
    inits = {i.name: i for i in model.graph.initializer}
    first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert inits[first_q.input[2]].data_type == zero_point_type


def test_dynamic_quantization(ort, make_ctx):
    runner, fid, _ = smoke_cell("onnxruntime", make_ctx("int8", {"dynamic": ""}))
    assert fid.ok and fid.cosine_min >= 0.98, fid.failures
    assert fid.max_abs_err > 1e-5
    assert "DynamicQuantizeLinear" in _op_types(runner.source_path)


def test_session_options_are_accepted_everywhere(ort, make_ctx):
    fp32 = ort.prepare(make_ctx("fp32", {"spin": ""}))
    int8 = ort.prepare(make_ctx("int8", {"nospin": "", "minmax": ""}))
    x = make_ctx().example_input
    assert _run(fp32, x).shape == _run(int8, x).shape == (2, 10)


@pytest.mark.parametrize(("precision", "options", "pattern"), [
    ("int8", {"bogus": ""}, r"'bogus'.*allowed: minmax, percentile, entropy, u8s8, s8s8"),
    ("int8", {"minmax": "", "entropy": ""}, r"minmax and entropy conflict"),
    ("int8", {"dynamic": "", "percentile": ""}, r"dynamic.*no calibration method"),
    ("fp32", {"percentile": ""}, r"onnxruntime:fp32: unknown option\(s\) percentile"),
    ("fp32", {"spin": "", "nospin": ""}, r"spin and nospin conflict"),
])
def test_bad_options_raise_config_error(ort, make_ctx, precision, options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ort.prepare(make_ctx(precision, options))


@pytest.mark.parametrize(("int8", "pattern"), [
    ({"calibration_method": "kl"}, r"int8.calibration_method: 'kl'"),
    ({"calibration_samples": 0}, r"calibration_samples must be a positive integer"),
])
def test_bad_int8_settings_raise_config_error(int8, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve_recipe({}, {"int8": int8}, VNNI, "x86_64")


def test_default_types_follow_the_cpu():
    assert default_types(VNNI, "x86_64")[:2] == ("u8", False)
    assert default_types(frozenset({"avx_vnni"}), "x86_64")[:2] == ("u8", False)
    assert default_types(AVX2_ONLY, "x86_64")[:2] == ("u8", True)
    assert default_types(frozenset(), "aarch64")[:2] == ("s8", False)


def test_options_override_the_cpu_defaults():
    recipe = resolve_recipe({"s8s8": "", "reduce_range": "", "entropy": ""}, {}, VNNI, "x86_64")
    assert (recipe.activations, recipe.reduce_range, recipe.method) == ("s8", True, "entropy")
    assert resolve_recipe({"no_reduce_range": ""}, {}, AVX2_ONLY, "x86_64").reduce_range is False
    assert resolve_recipe({}, {}, AVX2_ONLY, "x86_64").key() == "static-minmax-u8s8-rr-qdq-n32"


def test_dynamic_key_ignores_calibration_settings():
    a = resolve_recipe({"dynamic": ""}, {"int8": {"calibration_samples": 8}}, VNNI, "x86_64")
    b = resolve_recipe({"dynamic": ""}, {}, VNNI, "x86_64")
    assert a.key_parts() == b.key_parts()


def test_tensorrt_recipe_gives_symmetric_signed_qdq(make_ctx):
    """TensorRT's explicit quantization needs s8 activations with zero points of 0; built on the CPU."""
    ctx = make_ctx("int8")
    export = export_onnx(ctx)
    recipe = tensorrt_recipe({})
    assert isinstance(recipe, Int8Recipe) and recipe.symmetric_activations
    path = quantize_cached(ctx, export.path, export.path.parent.name, recipe)
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)


def test_availability_reasons(ort):
    assert ort.availability("cpu", "fp32").ok
    fp16 = ort.availability("cpu", "fp16")
    assert not fp16.ok and "CUDA execution provider" in fp16.reason
    cuda = ort.availability("cuda", "fp32")
    if not torch.cuda.is_available():
        assert not cuda.ok and "no CUDA GPU" in cuda.reason


def test_default_variants(ort):
    assert ort.default_variants("cpu") == ["onnxruntime:fp32", "onnxruntime:int8"]
    assert ort.default_variants("cuda")[0] == "onnxruntime:fp32"


# ---------------------------------------------------------------- every output; damaged artifacts


def _model_ctx(model, root: Path, precision: str, batch: int = 3) -> PrepareContext:
    return PrepareContext(model, np.random.default_rng(batch).standard_normal((batch, *TINY_SHAPE)).astype(np.float32),
                          precision, {}, "cpu", 1, ArtifactCache(root, type(model).__name__),
                          lambda n: np.random.default_rng(2).standard_normal((n, *TINY_SHAPE)).astype(np.float32),
                          settings={"int8": {"calibration_samples": 8}})


@pytest.mark.parametrize("factory", ["two_outputs", "two_outputs_dict"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_every_output_of_a_two_head_model_is_returned_and_compared(ort, tmp_path, factory, precision):
    from infertune.verify import DEFAULT_TOLERANCES, compare
    from tests import fixture_models

    model = getattr(fixture_models, factory)()
    ctx = _model_ctx(model, tmp_path / "cache", precision)
    runner = ort.prepare(ctx)
    x = np.random.default_rng(9).standard_normal((3, *TINY_SHAPE)).astype(np.float32)
    out = runner.to_numpy(runner(runner.to_native(x)))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    names = ["logits", "features"] if factory == "two_outputs_dict" else ["output0", "output1"]
    assert list(out) == names and runner.output_names == names  # the reference's names, in its order
    fid = compare(out, ref, DEFAULT_TOLERANCES[precision])
    assert fid.ok, fid.failures
    assert [o.name for o in fid.outputs] == names
    broken = {**dict(zip(names, out.values())), names[1]: -out[names[1]]}  # the second head alone is wrong
    assert not compare(broken, ref, DEFAULT_TOLERANCES[precision]).ok


def test_an_onnx_file_with_200_bytes_overwritten_is_rebuilt_not_reused(ort, make_ctx, caplog):
    """The damaged INT8 session model used to be reused, and even passed (cosine 0.9985 instead of 0.99999)."""
    first = ort.prepare(make_ctx("int8"))
    x = make_ctx().example_input
    good = _run(first, x)
    for damaged in (first.artifact_path, first.source_path):  # the optimized session model, then the INT8 model
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2: len(data) // 2 + 200] = bytes(200)
        damaged.write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level("WARNING", logger="infertune.cache"):
            again = ort.prepare(make_ctx("int8"))
        # the session model is rebuilt when it is the damaged one; it is intact when its source was
        assert again.cache_hit == (damaged != first.artifact_path)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1 and f"{damaged.name} does not match its recorded SHA-256" in warnings[0]
        np.testing.assert_array_equal(_run(again, x), good)
    assert ort.prepare(make_ctx("int8")).cache_hit
