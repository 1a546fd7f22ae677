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


def broken_factory() -> nn.Module:
    raise TypeError("build() missing 1 required positional argument: 'depth'")
