"""Is the GPU at its full clock? The timer's warm-up on a GPU stops as soon as it is.

A GPU left idle may clock down, so the warm-up on CUDA lasts ``benchmark.warmup_time_s`` (0.5 s); but some
GPUs hold their clock while idle, and there that half second buys nothing, for every cell
(docs/results/h200.md: one H200 idled at 345 MHz, another held its maximum). So the warm-up asks NVML
(nvidia-ml-py, the library ``torch.cuda.clock_rate`` uses too) for the SM clock and stops at 95% of the
maximum. Without NVML, or when a read fails, the clock counts as not known and the warm-up runs its whole time.
"""

from __future__ import annotations

import functools
from typing import Any

#: at or above this share of its maximum SM clock the GPU counts as warmed up.
FULL_CLOCK_SHARE = 0.95


class SmClock:
    """The SM clock of one GPU, through NVML."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle
        self.max_mhz = nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)

    def mhz(self) -> int:
        return int(self._nvml.nvmlDeviceGetClockInfo(self._handle, self._nvml.NVML_CLOCK_SM))

    def at_full_speed(self) -> bool:
        """Whether the SM clock is at least ``FULL_CLOCK_SHARE`` of its maximum (False when the read fails)."""
        try:
            return self.max_mhz > 0 and self.mhz() >= FULL_CLOCK_SHARE * self.max_mhz
        except Exception:  # noqa: BLE001 - any NVML error: not known, keep warming up by time
            return False


@functools.cache
def current_gpu_clock() -> SmClock | None:
    """The SM clock of this process's current CUDA device, or None without NVML (or without a GPU it knows).

    NVML numbers GPUs physically, CUDA after ``CUDA_VISIBLE_DEVICES``: the device is found by its UUID.
    """
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        return SmClock(pynvml, handle)
    except Exception:  # noqa: BLE001 - no NVML library, no driver, an unknown device: warm up by time
        return None


def gpu_warmed_up() -> bool:
    """Whether the current CUDA device is known to be at its full clock."""
    clock = current_gpu_clock()
    return clock is not None and clock.at_full_speed()
