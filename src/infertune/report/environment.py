"""The recorded environment, summarised for a reader: CPU, ISA extensions that change the winner, GPU, versions.

The environment dict is written by the run (``infertune.env``); its keys may grow or move, so the
summary looks each fact up under a few likely names and the report also shows the whole dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: ISA extensions that decide which variant wins on a CPU, and the cpuinfo flag names that mean them.
ISA_FEATURES: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f", "avx512"),
    "VNNI": ("avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni", "vnni"),  # fast INT8 dot products
    "AMX": ("amx_tile", "amx_int8", "amx_bf16", "amx"),
}

# where each summary fact may live in the environment dict ("a.b" = nested key)
_FACTS: list[tuple[str, tuple[str, ...]]] = [
    ("CPU", ("cpu_model", "cpu.model", "cpu.brand", "cpu.brand_raw", "cpu_brand", "processor", "cpu")),
    ("Cores", ("physical_cores", "cpu.physical_cores", "cores", "cpu.cores", "cpu_count", "cpu.count")),
    ("Logical CPUs", ("logical_cores", "cpu.logical_cores", "logical_cpus")),
    ("Threads used", ("threads", "torch_threads", "num_threads", "intra_op_threads")),
    ("GPU", ("gpu", "gpus", "gpu.name", "cuda.device_name", "gpu_name")),
    ("OS", ("os", "platform", "system")),
    ("Python", ("python", "python_version")),
    ("Host", ("hostname", "host")),
]
_FLAG_KEYS = ("isa_flags", "cpu.flags", "cpu_flags", "flags", "isa", "cpu.isa")
_VERSION_KEYS = ("versions", "library_versions", "libraries", "packages")


def lookup(env: dict[str, Any], dotted: str) -> Any:
    """``env["a"]["b"]`` for ``"a.b"``; None when any step is missing."""
    node: Any = env
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def summary(env: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs of the facts that were recorded, in reading order."""
    out: list[tuple[str, str]] = []
    for label, keys in _FACTS:
        value = _first(env, keys)
        if value is not None and not isinstance(value, dict):
            out.append((label, _text(value)))
    if env and not any(label == "GPU" for label, _ in out):
        out.append(("GPU", "none recorded"))
    return out


def isa_features(env: dict[str, Any]) -> dict[str, bool] | None:
    """Which of AVX2 / AVX-512 / VNNI / AMX the CPU has; None when the run recorded no flags."""
    flags = _flags(_first(env, _FLAG_KEYS))
    if not flags:
        return None
    return {name: any(f in flags for f in names) for name, names in ISA_FEATURES.items()}


def versions(env: dict[str, Any]) -> list[tuple[str, str]]:
    """(library, version) pairs, sorted by library name."""
    found = _first(env, _VERSION_KEYS)
    if not isinstance(found, dict):
        return []
    return sorted((str(k), _text(v)) for k, v in found.items())


def flatten(env: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Every recorded key as ``a.b = value``: nothing the run wrote is hidden by the summary."""
    out: list[tuple[str, str]] = []
    for key, value in env.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(flatten(value, name + "."))
        else:
            out.append((name, _text(value)))
    return out


def _first(env: dict[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = lookup(env, key)
        if value not in (None, "", [], {}):
            return value
    return None


def _flags(raw: Any) -> set[str]:
    if isinstance(raw, str):
        items: Iterable[Any] = raw.replace(",", " ").split()
    elif isinstance(raw, dict):
        items = [k for k, v in raw.items() if v]
    elif isinstance(raw, (list, tuple, set)):
        items = raw
    else:
        return set()
    return {str(f).strip().lower().replace("-", "_") for f in items}


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)
