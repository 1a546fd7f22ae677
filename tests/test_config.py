"""Config validation is table-driven: good files load, bad ones name the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infertune.config import load_config, validate_config
from infertune.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

SEED_CONFIG = {
    "model": {"name": "resnet50", "pretrained": True, "input_shape": [1, 3, 224, 224]},
    "benchmark": {"warmup_iterations": 10, "benchmark_iterations": 100, "batch_sizes": [1, 4, 8, 16],
                  "device": "cuda"},
    "optimization": {"enable_torchscript": True, "enable_onnx": True, "enable_tensorrt": False},
}


def test_the_seed_readme_config_is_valid():
    cfg = validate_config(SEED_CONFIG)
    assert cfg.benchmark.batch_sizes == [1, 4, 8, 16]
    assert cfg.benchmark.device == "cuda"
    assert cfg.optimization.enable_tensorrt is False


def test_the_shipped_default_config_is_valid():
    cfg = load_config(REPO / "config.yaml")
    assert cfg.model.name == "resnet50"
    assert cfg.optimization.enable_tensorrt is True


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ({"benchmark": {"warmup_iteration": 3}}, ["unknown key 'benchmark.warmup_iteration'", "warmup_iterations"]),
        ({"modle": {}}, ["unknown key 'modle'", "Did you mean 'model'"]),
        ({"optimization": {"enable_onxx": True}}, ["enable_onxx", "enable_onnx"]),
        ({"benchmark": {"batch_sizes": [0, 4]}}, ["benchmark.batch_sizes", ">= 1"]),
        ({"benchmark": {"batch_sizes": []}}, ["batch_sizes is empty"]),
        ({"benchmark": {"benchmark_iterations": -5}}, ["benchmark.benchmark_iterations", "greater than or equal to 1"]),
        ({"benchmark": {"warmup_iterations": -1}}, ["benchmark.warmup_iterations", "greater than or equal to 0"]),
        ({"model": {"input_shape": []}}, ["input_shape is empty", "the batch first"]),
        ({"model": {"input_shape": [1, 0]}}, ["model.input_shape", ">= 1"]),
        ({"model": {"inputs": [{"name": "ids", "shape": [1, 8], "dtype": "int8"}]}},
         ["model.inputs.0.dtype", "'float32', 'float16', 'int64', 'int32' or 'bool'"]),
        ({"model": {"inputs": [{"name": "ids", "shape": [1, 8], "range": [5, 5]}]}}, ["range", "high > low"]),
        ({"model": {"inputs": [{"name": "a", "shape": [1, 8]}, {"name": "a", "shape": [1, 2]}]}},
         ["input names must be unique", "repeated: a"]),
        ({"model": {"inputs": [{"name": "m", "shape": [1, 8], "dtype": "bool", "range": [0, 5]}]}},
         ["bool input's range"]),
        ({"model": {"inputs": [{"name": "a", "shap": [1, 8]}]}}, ["unknown key 'model.inputs.0.shap'", "shape"]),
        ({"benchmark": {"device": "gpu"}}, ["benchmark.device", "'auto', 'cpu' or 'cuda'"]),
        ({"optimization": {"int8": {"calibration_method": "kl"}}}, ["calibration_method", "minmax"]),
        ({"verify": {"tolerances": {"fp32": {"cosine_min": 2}}}}, ["cosine_min", "less than or equal to 1"]),
    ],
)
def test_bad_configs_name_the_problem_and_the_fix(fragment, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(fragment, "my_config.yaml")
    message = str(info.value)
    assert "my_config.yaml" in message
    for text in expected:
        assert text in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate_config({"benchmark": {"batch_sizes": [0], "benchmark_iterations": 0}})
    assert str(info.value).count("\n  - ") == 2


def test_cli_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SEED_CONFIG))
    cfg = load_config(path, {"benchmark": {"batch_sizes": [2], "device": None}})
    assert cfg.benchmark.batch_sizes == [2]
    assert cfg.benchmark.device == "cuda"  # None does not override


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)
