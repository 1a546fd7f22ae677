"""One serving instance: a prepared runner per bucket size, fed padded batches, its outputs trimmed.

A formed batch of n samples runs on the smallest prepared bucket >= n (``BatchPolicy.buckets``): its
inputs are gathered from the sample library into that bucket's own host buffer, the rows past n keep
real samples from earlier batches (finite, in-range values; never read back), and only the first n
output rows are returned, row i for sample i. Every runtime, static shapes or not, thus sees only
shapes it was prepared for and answers each sample with its own output.

On a GPU each instance issues its work on its own CUDA stream, so instances overlap copies and kernels.
Where the runner takes device tensors (torch runners) the sample library is copied to the device once,
before any traffic, and a batch is gathered there by index (``scenario.samples_on_device``, the default:
MLPerf's QSL likewise loads the samples before the timed run): a query then moves its indices, not
~0.6 MB of float32 pixels per image through one host thread, which capped a ResNet50 server on an H200
at a seventh of its tight-loop throughput (docs/results/serving.md). Otherwise the host buffers are
pinned (page-locked), so the copy to the device is a direct DMA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import numpy as np

from infertune.backends.base import Runner


class BucketedInstance:
    """``__call__(indices) -> outputs``: the ``InferBatch`` of one executor thread.

    Args:
        runners: bucket size -> a runner prepared for exactly that batch size (owned by this instance).
        samples: the sample library, shape (N, *sample_shape), float32.
        device: ``cpu`` or ``cuda``: on cuda, pinned host buffers and a CUDA stream of its own.
    """

    def __init__(self, runners: dict[int, Runner], samples: np.ndarray, device: str = "cpu",
                 samples_on_device: bool = True) -> None:
        self.runners = dict(sorted(runners.items()))
        self.samples = samples
        self._stream: Callable[[], ContextManager[Any]] = contextlib.nullcontext
        allocate: Callable[[tuple[int, ...]], np.ndarray] = lambda shape: np.empty(shape, np.float32)
        self.buffers: dict[int, np.ndarray] = {}
        #: the sample library in device memory (a torch tensor), when batches are gathered there.
        self.device_samples: Any = None
        if device == "cuda":
            allocate, self._stream = _cuda_stream_and_pinned()
            if samples_on_device and all(r.accepts_device_tensors for r in self.runners.values()):
                import torch

                self.device_samples = torch.from_numpy(np.ascontiguousarray(samples)).to("cuda")
                return
        for size in self.runners:
            buf = allocate((size, *samples.shape[1:]))
            buf[:] = samples[np.arange(size) % len(samples)]
            self.buffers[size] = buf

    def bucket_for(self, n: int) -> int:
        for size in self.runners:
            if size >= n:
                return size
        raise ValueError(f"a batch of {n} samples exceeds the largest prepared bucket ({max(self.runners)})")

    def __call__(self, indices: list[int]) -> np.ndarray:
        n = len(indices)
        size = self.bucket_for(n)
        runner = self.runners[size]
        with self._stream():
            if self.device_samples is not None:  # pad with the batch's own samples: rows past n are never read
                import torch

                rows = torch.as_tensor([indices[i % n] for i in range(size)], device=self.device_samples.device)
                batch: Any = self.device_samples.index_select(0, rows)
            else:
                batch = self.buffers[size]
                np.take(self.samples, indices, axis=0, out=batch[:n])
            out = runner.to_numpy(runner(runner.to_native(batch)))
        return per_sample_rows(out, n)

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()


def per_sample_rows(outputs: Any, n: int) -> np.ndarray:
    """The first ``n`` rows of a model's output(s) as one float32 (n, k) array; several output tensors
    are flattened per sample and concatenated (sample i's outputs are row i)."""
    from infertune.verify import output_list

    named = output_list(outputs)
    if len(named) == 1:
        return np.ascontiguousarray(named[0][1][:n], dtype=np.float32)
    return np.concatenate([arr[:n].reshape(n, -1) for _, arr in named], axis=1).astype(np.float32, copy=False)


def _cuda_stream_and_pinned() -> tuple[Callable[[tuple[int, ...]], np.ndarray], Callable[[], ContextManager[Any]]]:
    """A pinned host allocator and a ``with`` context that makes this instance's CUDA stream current."""
    import torch

    stream = torch.cuda.Stream()

    def pinned(shape: tuple[int, ...]) -> np.ndarray:
        # the array holds a reference to its tensor, so the pinned memory lives as long as the view
        return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()

    return pinned, lambda: torch.cuda.stream(stream)
