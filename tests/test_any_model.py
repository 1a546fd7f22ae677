"""Any model: inputs of any rank and dtype, several inputs, ONNX files and Hugging Face transformers.

Every model here is built in the test (a 64-feature MLP, a two-input model, a 2-layer BERT from a small
config, an ONNX file exported in the test), so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infertune.config import validate_config
from infertune.errors import ConfigError
from infertune.inputs import (
    InputSource,
    InputSpec,
    batch_size,
    concat,
    resolve_source,
    take,
)
from infertune.models import input_specs
from infertune.pipeline import run

REPO = Path(__file__).resolve().parents[1]
MLP = {"name": "infertune.testing:tiny_mlp", "input_shape": [1, 64], "pretrained": False}
TWO_INPUTS = {"name": "infertune.testing:tiny_two_input", "pretrained": False, "inputs": [
    {"name": "image", "shape": [1, 3, 16, 16]},
    {"name": "tokens", "shape": [1, 8], "dtype": "int64", "range": [0, 50]},
]}


def _cfg(tmp_path, model, variants=("pytorch:fp32",), batches=(1, 2), isolation="none", **verify):
    return validate_config({
        "model": model,
        "benchmark": {"batch_sizes": list(batches), "warmup_iterations": 1, "benchmark_iterations": 2,
                      "min_time_s": 0.0, "isolation": isolation, "device": "cpu"},
        "optimization": {"variants": list(variants)},
        "verify": {"samples": 4, **verify},
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })


# ---------------------------------------------------------------- input specs


def test_synthetic_inputs_have_the_dtype_and_range_of_their_spec():
    specs = (InputSpec("ids", (16,), "int64", 0, 30522), InputSpec("mask", (16,), "int64", 1, 2),
             InputSpec("flag", (4,), "bool"), InputSpec("x", (2, 3), "float16", -1, 1))
    batch = InputSource(specs=specs, kind="synthetic", seed=3).verification(5)
    assert list(batch) == ["ids", "mask", "flag", "x"]
    assert batch["ids"].dtype == np.int64 and batch["ids"].shape == (5, 16)
    assert batch["ids"].min() >= 0 and batch["ids"].max() < 30522 and len(np.unique(batch["ids"])) > 40
    assert (batch["mask"] == 1).all()
    assert batch["flag"].dtype == np.bool_ and batch["x"].dtype == np.float16
    assert -1 <= batch["x"].min() and batch["x"].max() < 1
    again = InputSource(specs=specs, kind="synthetic", seed=3).verification(5)
    assert all(np.array_equal(batch[k], again[k]) for k in batch)  # seeded
    calib = InputSource(specs=specs, kind="synthetic", seed=3).calibration(5)
    assert not np.array_equal(calib["ids"], batch["ids"])  # calibration never repeats verification data


def test_rows_record_what_synthetic_inputs_were():
    source, note = resolve_source(specs=(InputSpec("input_ids", (128,), "int64", 0, 30522),
                                         InputSpec("attention_mask", (128,), "int64", 1, 2)))
    assert note == "" and source.source_kind == "synthetic"  # not images: synthetic, without a warning
    text = source.describe_verification(8)
    assert text == "synthetic, seed 0: input_ids int64[128] in [0, 30522); attention_mask int64[128] = 1"


def test_a_single_float_input_keeps_todays_draw():
    """One float input of any rank: one array, the same seeded N(0, 1) draw as before specs existed."""
    source = InputSource(shape=(64,), kind="synthetic", seed=0)
    batch = source.verification(3)
    assert isinstance(batch, np.ndarray) and batch.shape == (3, 64) and batch.dtype == np.float32
    assert np.array_equal(batch, np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32))


def test_batches_of_several_inputs_are_taken_and_joined_per_input():
    batch = {"a": np.arange(6).reshape(3, 2), "b": np.arange(3)}
    assert batch_size(batch) == 3
    part = take(batch, [2, 0])
    assert part["a"].tolist() == [[4, 5], [0, 1]] and part["b"].tolist() == [2, 0]
    joined = concat([take(batch, slice(0, 1)), take(batch, slice(1, 3))])
    assert all(np.array_equal(joined[k], batch[k]) for k in batch)


def test_images_need_a_single_image_input(tmp_path):
    with pytest.raises(ConfigError, match="verify.images: images feed a model with one 1- or 3-channel"):
        resolve_source(images=str(tmp_path), specs=(InputSpec("x", (64,)),))


def test_input_specs_from_the_config():
    cfg = validate_config({"model": MLP})
    assert input_specs(cfg.model) == (InputSpec("input", (64,)),)
    cfg = validate_config({"model": TWO_INPUTS})
    assert input_specs(cfg.model) == (InputSpec("image", (3, 16, 16)), InputSpec("tokens", (8,), "int64", 0, 50))


# ---------------------------------------------------------------- models of any shape, through the pipeline


def test_an_mlp_with_a_two_number_input_shape_runs_and_verifies(tmp_path):
    result = run(_cfg(tmp_path, MLP, variants=("pytorch:fp32", "onnxruntime:fp32")), log=lambda m: None)
    assert [(r.variant, r.status) for r in result.rows] == [
        ("pytorch:fp32", "ok"), ("pytorch:fp32", "ok"), ("onnxruntime:fp32", "ok"), ("onnxruntime:fp32", "ok")]
    assert all(r.fidelity_ok and r.cosine_min > 0.9999 for r in result.rows)
    assert result.rows[0].verify_inputs == "synthetic, seed 0: input float32[64] ~ N(0,1)"
    assert result.rows[0].reference == "pytorch:fp32 eager cpu"


def test_a_model_that_cannot_take_its_inputs_says_which_inputs(tmp_path):
    from infertune.errors import ModelError

    model = {**TWO_INPUTS, "inputs": [TWO_INPUTS["inputs"][0]]}  # the tokens input is missing
    with pytest.raises(ModelError, match=r"cannot take its inputs \(image float32\[3,16,16\] ~ N\(0,1\)\)"):
        run(_cfg(tmp_path, model), log=lambda m: None)
