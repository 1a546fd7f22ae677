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


def tiny_mlp(features: int = 64, num_classes: int = 10) -> Any:
    """Linear-ReLU-Linear over ``features`` inputs: ``--model infertune.testing:tiny_mlp --input-shape 1 64``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, num_classes)).eval()


def tiny_two_input() -> Any:
    """Two inputs, an image and token ids, and two outputs (``infertune.testing:tiny_two_input``).

    Inputs, in order: ``image`` float32 (3, 16, 16) and ``tokens`` int64 (8,) in [0, 50). Outputs: class
    logits of the image and token features together, and the token embeddings' mean.
    """
    import torch
    from torch import nn

    class TwoInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.embed = nn.Embedding(50, 8)
            self.head = nn.Linear(16, 5)

        def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            words = self.embed(tokens).mean(dim=1)
            return self.head(torch.cat([self.conv(image), words], dim=1)), words

    torch.manual_seed(0)
    return TwoInput().eval()
