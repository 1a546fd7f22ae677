"""Helpers shared by the torch-based backends: dtype mapping and a runner over a torch callable."""

from __future__ import annotations

from typing import Any

import numpy as np

from infertune.backends.base import Runner

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(precision: str) -> Any:
    import torch

    return getattr(torch, TORCH_DTYPES[precision])


class TorchRunner(Runner):
    """Runs a torch callable under ``inference_mode`` on CPU or CUDA.

    On CUDA the input is placed on the device by ``to_native`` (outside the timed region), so the
    latency is device latency, synchronised with ``torch.cuda.synchronize`` and timed with CUDA events.
    """

    def __init__(self, fn: Any, device: str, dtype: Any, channels_last: bool = False) -> None:
        import torch

        self._torch = torch
        self.fn = fn
        self.device = torch.device(device)
        self.dtype = dtype
        self.channels_last = channels_last
        self.is_cuda = self.device.type == "cuda"

    @property
    def latency_scope(self) -> str:  # type: ignore[override]
        return "device" if self.is_cuda else "end_to_end"

    def to_native(self, batch: np.ndarray) -> Any:
        t = self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
        if self.channels_last:
            t = t.contiguous(memory_format=self._torch.channels_last)
        return t

    def __call__(self, inputs: Any) -> Any:
        with self._torch.inference_mode():
            return self.fn(inputs)

    def to_numpy(self, outputs: Any) -> Any:
        """One float32 array, or a {name: array} dict when the model returns several tensors."""
        from infertune.verify import output_list

        named = output_list(outputs)
        return named[0][1] if len(named) == 1 else dict(named)

    def synchronize(self) -> None:
        if self.is_cuda:
            self._torch.cuda.synchronize(self.device)

    def cuda_event_pair(self) -> tuple[Any, Any] | None:
        if not self.is_cuda:
            return None
        ev = self._torch.cuda.Event
        return ev(enable_timing=True), ev(enable_timing=True)

    def close(self) -> None:
        self.fn = None
        if self.is_cuda:
            self._torch.cuda.empty_cache()


def model_copy(model: Any, device: str, precision: str, channels_last: bool = False) -> Any:
    """A deep copy of the FP32 model moved to ``device`` and cast to ``precision`` (the original stays FP32)."""
    import copy

    m = copy.deepcopy(model).eval().to(device=device, dtype=torch_dtype(precision))
    if channels_last:
        import torch

        m = m.to(memory_format=torch.channels_last)
    return m
