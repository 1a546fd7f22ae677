"""Models that misbehave on purpose, to test that failure becomes data and never takes the run down.

The ``_Trap`` models fail at one batch size; the FP32 reference runs the model at every batch size
(in its own worker), so it trips them first. ``segfaults_in_forward`` and friends fail in every
forward, the way a broken native extension does. ``branches_on_input`` computes something else
depending on its input's mean: the verdicts on it are only right if the reference sees the very
batches the variant sees.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn

from infertune.testing import tiny_convnet


class _Trap(nn.Module):
    def __init__(self, batch: int, action: str) -> None:
        super().__init__()
        self.inner = tiny_convnet()
        self.batch = batch
        self.action = action

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == self.batch:
            if self.action == "raise":
                raise RuntimeError(f"deliberate failure at batch {self.batch}")
            if self.action == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.action == "hang":
                time.sleep(3600)
        return self.inner(x)


def raises_at_batch_2() -> nn.Module:
    return _Trap(2, "raise").eval()


def crashes_at_batch_3() -> nn.Module:
    return _Trap(3, "crash").eval()


def hangs_at_batch_3() -> nn.Module:
    return _Trap(3, "hang").eval()


def tiny_declared_trained() -> nn.Module:
    """The tiny model, declaring trained weights so accuracy mode accepts it. Its weights are random:
    tests label their images with its own FP32 predictions, so the reference scores 100% by construction."""
    model = tiny_convnet()
    model.infertune_weights = "test:labels-are-its-own-predictions"
    return model


class _TwoHeads(nn.Module):
    """Logits and pooled features: a model with two outputs, each verified on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_convnet()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.inner[:-1](x)
        return self.inner[-1](features), features


def two_outputs() -> nn.Module:
    return _TwoHeads().eval()


def broken_factory() -> nn.Module:
    raise TypeError("build() missing 1 required positional argument: 'depth'")


class _TwoHeadsDict(_TwoHeads):
    """The same two heads returned as a dict: outputs are matched by their keys."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        logits, features = super().forward(x)
        return {"logits": logits, "features": features}


def two_outputs_dict() -> nn.Module:
    return _TwoHeadsDict().eval()


class _FixedBatch(nn.Module):
    """Right at every batch size in eager, but reads the batch as a Python int, which an exporter
    cannot keep symbolic: the ONNX export of it has a static batch."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_convnet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.inner[:-2](x)
        return self.inner[-1](features.reshape(int(x.shape[0]), -1))


def fixed_batch() -> nn.Module:
    return _FixedBatch().eval()


class _Broken(nn.Module):
    """The tiny model whose forward does ``action`` first (``crash_once``: only while a marker file is absent)."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.inner = tiny_convnet()
        self.action = action

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.action == "segfault":
            ctypes.string_at(0)  # read address 0: SIGSEGV, as a native extension's bug does
        elif self.action == "abort":
            os.abort()
        elif self.action == "hang":
            time.sleep(3600)
        elif self.action == "allocate":
            torch.empty(1 << 50, dtype=torch.uint8)  # a petabyte: the allocator refuses
        elif self.action == "crash_once":
            marker = Path(os.environ["INFERTUNE_TEST_MARKERS"]) / "crashed_once"
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                ctypes.string_at(0)
        return self.inner(x)


def segfaults_in_forward() -> nn.Module:
    return _Broken("segfault").eval()


def aborts_in_forward() -> nn.Module:
    return _Broken("abort").eval()


def hangs_in_forward() -> nn.Module:
    return _Broken("hang").eval()


def allocates_in_forward() -> nn.Module:
    return _Broken("allocate").eval()


def segfaults_once() -> nn.Module:
    """Segfaults in the first forward of a test (a marker in ``$INFERTUNE_TEST_MARKERS`` remembers), then works."""
    return _Broken("crash_once").eval()


class _Branches(nn.Module):
    """``if x.mean() > 0`` on the whole batch: the outputs depend on which samples share a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_convnet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return self.inner(x)
        return -self.inner(x)


def branches_on_input() -> nn.Module:
    return _Branches().eval()


class _Scaled(nn.Module):
    """The tiny model's logits times ``scale``: 1e-13 is what random-init EfficientNet-B0 gives."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.inner = tiny_convnet()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


def near_zero_logits() -> nn.Module:
    return _Scaled(1e-13).eval()


def tiny_vit() -> nn.Module:
    """torchvision's VisionTransformer at toy size (32×32 inputs): class token expanded by the batch."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                              mlp_dim=32, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises the head: logits all 0
    return model.eval()


class _ScaledByBuffer(nn.Module):
    """A non-persistent buffer: not in the weights file, so a rebuild on the meta device would lose it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_convnet()
        self.register_buffer("scale", torch.full((1,), 3.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


def non_persistent_buffer() -> nn.Module:
    return _ScaledByBuffer()


def needs_real_tensors() -> nn.Module:
    """A factory that reads a tensor's value while building (impossible on the meta device)."""
    model = tiny_convnet()
    if float(torch.ones(1).sum()) != 1.0:
        raise AssertionError("unreachable")
    return model


class _BranchyConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if x.sum() > 0 else -y


def untraceable_conv_bn() -> nn.Module:
    """A conv+BatchNorm pair behind data-dependent control flow: torch.fx cannot trace it, so no FX pass may
    fold it (8 input channels)."""
    return _BranchyConvBn().eval()
