"""A tiny convolutional classifier for tests and quick tries: ``--model infertune.testing:tiny_convnet``.

It has the layers the real ladder optimizes (conv, batch norm, ReLU, pooling, linear) so every
backend's conversion path is exercised in a fraction of a second.
"""

from __future__ import annotations

from typing import Any


def tiny_convnet(num_classes: int = 10) -> Any:
    """Conv-BN-ReLU ×2, global average pool, linear; expects 3×32×32 inputs."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
    return model.eval()
