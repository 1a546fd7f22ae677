"""Accuracy mode: top-1/top-5 accuracy on a labelled set, for the reference and every variant, and
the MLPerf-style gate: a variant must keep at least ``accuracy_ratio_min`` (0.99 by default) of the
FP32 reference's top-1 accuracy.

Accuracy needs trained weights: random weights score chance, and a gate on chance proves nothing,
so ``require_trained_weights`` refuses them with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infertune.errors import ConfigError


@dataclass(frozen=True)
class Accuracy:
    """Top-1 and top-5 accuracy (fractions) of logits against labels."""

    top1: float
    top5: float
    samples: int


def accuracy(logits: np.ndarray, labels: np.ndarray) -> Accuracy:
    """Accuracy of (N, classes) ``logits``; top-5 means the label is among the 5 highest (k <= classes)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    labels = np.asarray(labels, dtype=np.int64)
    k = min(5, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return Accuracy(
        top1=float((logits.argmax(axis=1) == labels).mean()),
        top5=float((top == labels[:, None]).any(axis=1).mean()),
        samples=len(labels),
    )


def gate(variant: Accuracy, reference: Accuracy, ratio_min: float | None) -> str:
    """The failure text when ``variant`` keeps less than ``ratio_min`` of the reference's top-1, else ''."""
    if ratio_min is None or variant.top1 >= ratio_min * reference.top1 - 1e-12:
        return ""
    return (f"top1_acc {variant.top1:.1%} < {ratio_min:.0%} of the FP32 reference's {reference.top1:.1%} "
            f"(on {variant.samples} labelled images)")


def require_trained_weights(weights: str, dataset: str) -> None:
    """Accuracy mode refuses random weights: their accuracy is chance and the gate would be meaningless."""
    if weights == "random" or weights.startswith("random"):
        raise ConfigError(
            f"accuracy mode (verify.dataset: {dataset}) needs trained weights, but the model has random weights "
            "(pretrained weights were off or could not be downloaded). Set model.pretrained: true while online, "
            "give model.weights: <state_dict.pt>, use a model that ships its weights (e.g. efficientnet_lite0), or have "
            "your package.module:factory set `infertune_weights = '<name>'` on the module it returns when it loads "
            "trained weights itself; or drop verify.dataset to check agreement only"
        )
