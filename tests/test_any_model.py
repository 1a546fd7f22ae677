"""Any model: inputs of any rank and dtype, several inputs, ONNX files and Hugging Face transformers.

Every model here is built in the test (a 64-feature MLP, a two-input model, a 2-layer BERT from a small
config, an ONNX file exported in the test), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_a_two_input_model_runs_onnx_and_int8_rungs(tmp_path):
    """Two inputs (an image and int64 token ids): exported with both names, fed by name and dtype, calibrated."""
    result = run(_cfg(tmp_path, TWO_INPUTS, variants=("pytorch:fp32", "onnxruntime:fp32", "onnxruntime:int8")),
                 log=lambda m: None)
    assert {(r.variant, r.status) for r in result.rows} == {
        ("pytorch:fp32", "ok"), ("onnxruntime:fp32", "ok"), ("onnxruntime:int8", "ok")}
    fp32 = next(r for r in result.rows if r.variant == "onnxruntime:fp32")
    assert fp32.cosine_min > 0.9999 and json.loads(fp32.fidelity_outputs)[1]["name"] == "output1"
    int8 = next(r for r in result.rows if r.variant == "onnxruntime:int8")
    assert "tokens int64[8] in [0, 50)" in int8.calibration_inputs


# ---------------------------------------------------------------- an ONNX file as the model


@pytest.fixture(scope="module")
def two_input_onnx(tmp_path_factory) -> Path:
    """The two-input model exported to ONNX here, with a dynamic batch on both inputs."""
    torch = pytest.importorskip("torch")
    from infertune.testing import tiny_two_input

    path = tmp_path_factory.mktemp("onnx") / "two.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(tiny_two_input(), (torch.randn(2, 3, 16, 16), torch.randint(0, 50, (2, 8))), str(path),
                      dynamo=True, dynamic_shapes=({0: batch}, {0: batch}), input_names=["image", "tokens"],
                      output_names=["logits", "words"], external_data=False)
    return path


def test_an_onnx_file_is_the_model_and_torch_rungs_say_why_not(tmp_path, two_input_onnx):
    model = {"name": str(two_input_onnx), "inputs": [
        {"name": "image", "shape": [1, 3, 16, 16]},
        {"name": "tokens", "shape": [1, 8], "dtype": "int64", "range": [0, 50]}]}
    variants = ("pytorch:fp32", "onnxruntime:fp32", "openvino:fp32")
    result = run(_cfg(tmp_path, model, variants=variants), log=lambda m: None)
    rows = {(r.variant, r.batch_size): r for r in result.rows}
    eager = rows[("pytorch:fp32", 1)]
    assert eager.status == "unavailable" and "this model is an ONNX file" in eager.error
    assert eager.model == "two.onnx" and eager.weights.startswith("file:")
    ort = rows[("onnxruntime:fp32", 2)]
    assert ort.status == "ok" and ort.cosine_min > 0.9999
    assert ort.reference == "onnxruntime:fp32 cpu, graph optimizations off"
    assert [o["name"] for o in json.loads(ort.fidelity_outputs)] == ["logits", "words"]  # the file's names
    assert "tokens int64[8] in [0, 50)" in ort.verify_inputs
    ov = rows[("openvino:fp32", 1)]
    assert ov.status in ("ok", "unavailable") and (ov.status == "unavailable" or ov.cosine_min > 0.9999)


def test_onnx_inputs_come_from_the_file(two_input_onnx):
    lines: list[str] = []
    cfg = validate_config({"model": {"name": str(two_input_onnx)}})
    specs = input_specs(cfg.model, [1, 4], lines.append)
    assert specs == (InputSpec("image", (3, 16, 16)), InputSpec("tokens", (8,), "int64"))
    assert any("input 'tokens' (int64) gets synthetic values 0 or 1" in line for line in lines)
    bad = validate_config({"model": {"name": str(two_input_onnx), "inputs": [{"name": "image", "shape": [1, 3, 16, 16]}]}})
    with pytest.raises(ConfigError, match="but two.onnx takes image, tokens"):
        input_specs(bad.model)


def test_free_and_fixed_onnx_dimensions(tmp_path):
    torch = pytest.importorskip("torch")
    from infertune.testing import tiny_mlp

    free = tmp_path / "free.onnx"  # batch and features both free: --input-shape sizes the features
    torch.onnx.export(tiny_mlp(), (torch.randn(2, 64),), str(free), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "features"}})
    with pytest.raises(ConfigError, match=r"free.onnx: input 'x' \[batch, features\] has 'features' at position 1"):
        input_specs(validate_config({"model": {"name": str(free)}}).model)
    assert input_specs(validate_config({"model": {"name": str(free), "input_shape": [1, 64]}}).model) == (
        InputSpec("x", (64,)),)
    fixed = tmp_path / "fixed.onnx"  # a batch fixed at 1 cannot run batch 4
    torch.onnx.export(tiny_mlp(), (torch.randn(1, 64),), str(fixed), dynamo=False, input_names=["x"])
    with pytest.raises(ConfigError, match=r"fixed.onnx fixes the batch of input 'x' at 1 .*--batch-size 1"):
        input_specs(validate_config({"model": {"name": str(fixed)}}).model, [1, 4])


# ---------------------------------------------------------------- Hugging Face transformers


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT from a small config, saved as save_pretrained writes it (config.json + safetensors)."""
    pytest.importorskip("transformers", reason="Hugging Face models need: pip install 'infertune[transformers]'")
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def test_a_tiny_bert_folder_runs_up_the_ladder(tmp_path, tiny_bert):
    model = {"name": f"hf:{tiny_bert}", "sequence_length": 16}
    variants = ("pytorch:fp32", "torchscript:fp32", "onnxruntime:fp32", "onnxruntime:int8")
    result = run(_cfg(tmp_path, model, variants=variants, batches=(2,)), log=lambda m: None)
    rows = {r.variant: r for r in result.rows}
    assert {v: r.status for v, r in rows.items()} == dict.fromkeys(variants, "ok")
    eager = rows["pytorch:fp32"]
    assert eager.model == "tiny-bert" and eager.weights.startswith("folder:")
    assert eager.verify_inputs == ("synthetic, seed 0: input_ids int64[16] in [0, 100); attention_mask int64[16] = 1; "
                                   "token_type_ids int64[16] = 0")
    # hidden states and the pooled output are both compared, by every rung
    assert [o["name"] for o in json.loads(rows["onnxruntime:fp32"].fidelity_outputs)] == ["output0", "output1"]
    assert rows["onnxruntime:fp32"].cosine_min > 0.9999 and rows["torchscript:fp32"].cosine_min > 0.9999


def test_known_hub_names_build_offline_with_random_weights(monkeypatch):
    pytest.importorskip("transformers", reason="Hugging Face models need: pip install 'infertune[transformers]'")
    import socket

    from infertune.models import load_model
    from infertune.models_hf import input_specs as hf_specs

    def refuse(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert [s.name for s in hf_specs("hf:bert-base-uncased", 128)] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [s.name for s in hf_specs("hf:distilbert-base-uncased", 128)] == ["input_ids", "attention_mask"]
    assert hf_specs("hf:google/vit-base-patch16-224", 128) == (InputSpec("pixel_values", (3, 224, 224)),)
    assert hf_specs("hf:bert-base-uncased", 128)[0] == InputSpec("input_ids", (128,), "int64", 0, 30522)
    warnings: list[str] = []
    loaded = load_model("hf:distilbert-base-uncased", pretrained=True, warn=warnings.append)
    assert loaded.weights == "random" and len(warnings) == 1 and "random weights" in warnings[0]
    assert sum(p.numel() for p in loaded.module.parameters()) == 66_362_880  # DistilBERT-base's size
    with pytest.raises(ConfigError, match="exceeds hf:bert-base-uncased's 512 positions"):
        hf_specs("hf:bert-base-uncased", 1024)


# ---------------------------------------------------------------- bad input specs: one clear message


@pytest.mark.parametrize(("model", "expected"), [
    ({"inputs": [{"name": "ids", "shape": [1, 8], "dtype": "int8"}]}, "model.inputs.0.dtype"),
    ({"inputs": [{"name": "ids", "shape": [1, 8], "range": [3, 1]}]}, "range must be two numbers"),
    ({"input_shape": []}, "input_shape is empty"),
    ({"name": "hf:./no-such-folder"}, "folder ./no-such-folder does not exist"),
    ({"name": "missing.onnx"}, "model file missing.onnx does not exist"),
])
def test_a_bad_input_spec_is_one_clear_message(tmp_path, model, expected):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"model": {**MLP, **model}, "output": {"dir": str(tmp_path / "r")}}))
    proc = subprocess.run([sys.executable, "-m", "infertune", "run", "-c", str(config), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
