"""Environment capture: CPU model and ISA flags, cores, GPU, driver, OS and library versions.

Saved beside every run's results, because a number without the machine that made it is not a result.
The ISA flags matter for INT8: without VNNI (or AMX), INT8 convolutions run on slower instructions,
and the report uses these flags to explain an INT8 variant that is not faster than FP32.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

#: flag name in /proc/cpuinfo -> the name reports use.
ISA_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
}

LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "openvino",
             "nncf", "tensorrt", "timm", "transformers", "numpy", "infertune")


def cpu_flags() -> set[str]:
    """Raw CPU flags from /proc/cpuinfo (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_int8_dot_product(flags: set[str] | None = None) -> bool:
    """VNNI or AMX: the instructions that make INT8 convolutions fast on x86."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware): the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def gpu_info() -> dict[str, Any]:
    """GPU name, memory, driver and CUDA version via nvidia-smi and torch (when present)."""
    info: dict[str, Any] = {}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        if out:
            name, mem, driver = (x.strip() for x in out.splitlines()[0].split(","))
            info.update(gpu_name=name, gpu_memory=mem, driver_version=driver, gpu_count=len(out.splitlines()))
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            info.setdefault("gpu_name", torch.cuda.get_device_name(0))
            info["cuda_version"] = torch.version.cuda
            info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return info


@functools.lru_cache(maxsize=1)
def gpu_memory_gb() -> float | None:
    """The first GPU's memory in GB, from nvidia-smi (the parent never initialises CUDA); None when it cannot say."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.split()
        return float(out[0]) * 2**20 / 1e9 if out else None  # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def host_memory_gb() -> float | None:
    """This machine's memory in GB; None when the OS cannot say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def capture(threads: int | None = None) -> dict[str, Any]:
    """Everything worth knowing about where the numbers came from."""
    flags = cpu_flags()
    env = {
        "cpu_model": cpu_model(),
        "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags],
        "int8_dot_product": has_int8_dot_product(flags),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "libraries": library_versions(),
    }
    try:
        import psutil

        env["physical_cores"] = psutil.cpu_count(logical=False)
        env["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:
        pass
    env.update(gpu_info())
    return env
