"""Peak memory of one cell: host RSS high-water mark (reset per cell on Linux) and CUDA peak.

Linux lets a process reset its own RSS high-water mark (``echo 5 > /proc/self/clear_refs``), so the
peak of each cell is read from ``VmHWM`` without a sampling thread disturbing the timing. Where that
is not possible the process-wide ``ru_maxrss`` is used, which over-reports later cells; the
``exact`` flag says which.
"""

from __future__ import annotations

import contextlib
import importlib.util
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


@dataclass
class PeakMemory:
    """Peaks observed between ``start`` and ``stop``, in MB (10^6 bytes)."""

    host_mb: float | None = None
    device_mb: float | None = None
    exact: bool = False


class MemoryProbe:
    """Reset peaks at ``start()``; ``stop()`` returns the peaks since then."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._exact = False

    def start(self) -> None:
        self._exact = _reset_hwm()
        if self.device == "cuda" and "torch" in sys.modules:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> PeakMemory:
        host = _read_hwm_mb() if self._exact else None
        if host is None:
            self._exact = False
            host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
        dev = None
        if self.device == "cuda" and importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                dev = torch.cuda.max_memory_allocated() / 1e6
        return PeakMemory(host_mb=host, device_mb=dev, exact=self._exact)


def _reset_hwm() -> bool:
    with contextlib.suppress(OSError):
        _CLEAR.write_text("5")
        return True
    return False


def _read_hwm_mb() -> float | None:
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return None
