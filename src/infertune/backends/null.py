"""The null backend: does no work, so its latency is the harness's own overhead per iteration."""

from __future__ import annotations

from typing import Any

import numpy as np

from infertune.backends.base import Backend, PrepareContext, Runner
from infertune.backends.registry import register_backend


class NullRunner(Runner):
    """Returns its input untouched; timing it measures the timer loop and the call itself."""

    def __call__(self, inputs: Any) -> Any:
        return inputs

    def to_numpy(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs, dtype=np.float32)


@register_backend
class NullBackend(Backend):
    name = "null"
    label = "Null (harness overhead)"
    sources = frozenset({"torch", "onnx"})
    description = "Does nothing: measures the harness's own per-iteration overhead."
    devices = frozenset({"cpu", "cuda"})
    writes_artifacts = False
    precisions = frozenset({"fp32"})
    produces_outputs = False

    def availability(self, device: str, precision: str):  # type: ignore[override]
        # The null backend needs no runtime and no GPU: it never touches a device.
        from infertune.backends.base import Availability

        if precision not in self.precisions:
            return Availability.no("null only has fp32")
        return Availability.yes()

    def version(self) -> str:
        return "0"

    def default_variants(self, device: str) -> list[str]:
        return ["null:fp32"]

    def prepare(self, ctx: PrepareContext) -> Runner:
        return NullRunner()
