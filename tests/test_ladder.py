"""The ladder: defaults from the registry, the seed's switches, explicit lists, extras and skips."""

from __future__ import annotations

import pytest

from infertune.config import validate_config
from infertune.errors import ConfigError
from infertune.ladder import build_ladder


def _names(opt: dict, device: str = "cpu") -> list[str]:
    return [v.name for v in build_ladder(validate_config({"optimization": opt}), device)]


def test_default_cpu_ladder_starts_with_the_baseline_and_has_the_seed_rungs():
    names = _names({"enable_tensorrt": True})  # as the shipped config.yaml has it
    assert names[:2] == ["null:fp32", "pytorch:fp32"]
    for rung in ("torchscript:fp32", "onnxruntime:fp32", "tensorrt:fp16"):
        assert rung in names
    assert len(names) == len(set(names))


def test_seed_switches_turn_rungs_off():
    names = _names({"enable_torchscript": False, "enable_onnx": False, "enable_tensorrt": False})
    assert not any(n.startswith(("torchscript", "onnxruntime", "tensorrt")) for n in names)
    assert "pytorch:fp32" in names


def test_explicit_variants_win_and_keep_the_baseline_first():
    assert _names({"variants": ["onnxruntime:int8", "pytorch:fp32"], "enable_onnx": False}) == [
        "pytorch:fp32", "onnxruntime:int8"]


def test_extra_and_skip_variants():
    names = _names({"extra_variants": ["torch_compile:fp32:max-autotune"], "skip_variants": ["null:fp32"]})
    assert "torch_compile:fp32:max-autotune" in names and "null:fp32" not in names


def test_skipping_a_variant_that_is_not_in_the_ladder_is_an_error():
    with pytest.raises(ConfigError, match="skip_variants names openvino:bf16"):
        _names({"variants": ["pytorch:fp32"], "skip_variants": ["openvino:bf16"]})


def test_cuda_ladder_differs_from_cpu():
    cuda = _names({}, "cuda")
    assert "torch_compile:fp16:channels_last" in cuda and "torch_compile:fp32" not in cuda


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("onnxruntime:int8:bogus", "allowed: minmax"),
        ("pytorch:fp32:channels_lst", "allowed: channels_last"),
        ("torch_compile:fp32:reduce-overhead", "only exists on CUDA"),
        ("openvino:int8:hint=fast", "'latency', 'throughput'"),
        ("tensorrt:fp16:x", "it takes none"),
    ],
)
def test_bad_options_stop_the_run_before_any_conversion(variant, expected):
    with pytest.raises(ConfigError, match=expected):
        _names({"variants": ["pytorch:fp32", variant]})
