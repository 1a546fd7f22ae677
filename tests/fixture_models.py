"""Models that misbehave on purpose at one batch size, to test that failure becomes data.

The reference is computed at the verification batch (8 samples), so the parent never trips them;
the worker does, at the batch size each one names.
"""

from __future__ import annotations

import os
import signal
import time

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
