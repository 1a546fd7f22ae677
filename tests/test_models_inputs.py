"""Model sources, weights tags, and the input sets (verification and calibration never overlap)."""

from __future__ import annotations

import numpy as np
import pytest

from infertune.errors import ConfigError, ModelError
from infertune.inputs import InputSource
from infertune.models import load_model


def test_factory_model_and_random_weights_tag():
    loaded = load_model("infertune.testing:tiny_convnet", pretrained=False)
    assert loaded.weights == "random" and loaded.source == "factory"
    assert loaded.digest() == load_model("infertune.testing:tiny_convnet", pretrained=False).digest()


def test_unknown_torchvision_name_suggests_close_names():
    with pytest.raises(ModelError) as info:
        load_model("resnet5O", pretrained=False)
    assert "resnet50" in str(info.value)


def test_bad_factory_specs_say_what_is_wrong():
    with pytest.raises(ModelError, match="cannot import"):
        load_model("no_such_pkg.mod:build", pretrained=False)
    with pytest.raises(ModelError, match="Did you mean tiny_convnet"):
        load_model("infertune.testing:tiny_convnt", pretrained=False)


def test_local_weights_are_loaded_and_tagged_by_hash(tmp_path):
    import torch

    from infertune.testing import tiny_convnet

    model = tiny_convnet()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model("infertune.testing:tiny_convnet", weights=str(path))
    assert loaded.weights.startswith("file:") and len(loaded.weights) == len("file:") + 12
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.module(x), model(x))


def test_bad_weights_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model("infertune.testing:tiny_convnet", weights=str(tmp_path / "missing.pt"))
    wrong = tmp_path / "wrong.pt"
    import torch

    torch.save({"fc.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ModelError, match="does not fit the model"):
        load_model("infertune.testing:tiny_convnet", weights=str(wrong))


def test_offline_pretrained_falls_back_with_one_warning(monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise OSError("Name or service not known")

    real_get_model = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model",
                        lambda name, weights=None: offline() if weights is not None else real_get_model(name))
    warnings: list[str] = []
    loaded = load_model("resnet18", pretrained=True, warn=warnings.append)
    assert loaded.weights == "random"
    assert len(warnings) == 1 and "random weights" in warnings[0]


def test_synthetic_sets_are_seeded_and_disjoint():
    src = InputSource(shape=(3, 8, 8), seed=5)
    a, b = src.verification(4), src.verification(4)
    assert np.array_equal(a, b)
    calib = src.calibration(4)
    assert not np.isclose(calib[:, None], a[None]).all(axis=(2, 3, 4)).any()
    assert src.timed_batch(2).shape == (2, 3, 8, 8)


def test_image_folder_splits_verification_and_calibration(tmp_path):
    from PIL import Image

    for i in range(5):
        Image.fromarray(np.full((40, 50, 3), i * 40, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    src = InputSource(shape=(3, 32, 32), images=str(tmp_path), verify_count=3)
    verify = src.verification(3)
    calib = src.calibration(4)
    assert verify.shape == (3, 3, 32, 32) and calib.shape == (4, 3, 32, 32)
    # calibration uses images 3 and 4 only: its first sample is image 3 (value 120), normalised
    assert np.allclose(calib[0, 0], (120 / 255 - 0.485) / 0.229, atol=1e-5)
    assert not any(np.allclose(c, v) for c in calib for v in verify)


def test_image_folder_problems_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        InputSource(shape=(3, 8, 8), images=str(tmp_path / "nope")).verification(1)
    with pytest.raises(ConfigError, match="holds no images"):
        InputSource(shape=(3, 8, 8), images=str(tmp_path)).verification(1)


def test_timm_models_by_prefix_and_by_bare_name():
    pytest.importorskip("timm", reason="timm is an optional extra (pip install 'infertune[timm]')")
    loaded = load_model("timm:resnet18d", pretrained=False)
    assert loaded.source == "timm" and loaded.weights == "random"
    assert load_model("resnet18d", pretrained=False).source == "timm"  # not a torchvision name
    assert load_model("resnet18", pretrained=False).source == "torchvision"  # both have it: torchvision wins
    with pytest.raises(ModelError, match="Did you mean"):
        load_model("timm:resnet18q", pretrained=False)


def test_offline_check_is_quick_and_warns_once(monkeypatch):
    import socket

    from infertune import models

    def refuse(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(models, "_cached_locally", lambda name: False)
    warnings: list[str] = []
    loaded = load_model("resnet18", pretrained=True, warn=warnings.append)
    assert loaded.weights == "random"
    assert len(warnings) == 1 and "cannot reach download.pytorch.org" in warnings[0]
