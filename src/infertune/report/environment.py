"""The recorded environment, summarised for a reader: CPU, ISA extensions that change the winner, GPU, versions.

The environment dict is written by the run (``infertune.env``); its keys may grow or move, so the
summary looks each fact up under a few likely names and the report also shows the whole dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: ISA extensions that decide which variant wins on a CPU, and the names that mean them once lowercased
#: and stripped of separators: cpuinfo's ("avx512_vnni") and infertune.env's display names ("AVX-512 VNNI").
ISA_FEATURES: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f", "avx512"),
    "VNNI": ("avx512vnni", "avxvnni", "vnni"),  # fast INT8 dot products
    "AMX": ("amxtile", "amxint8", "amxbf16", "amx"),
}

# where each summary fact may live in the environment dict ("a.b" = nested key); the first name is
# what infertune.env writes, the others keep older or hand-written files readable.
_FACTS: list[tuple[str, tuple[str, ...]]] = [
    ("CPU", ("cpu_model", "cpu.model", "cpu.brand_raw", "processor")),
    ("Physical cores", ("physical_cores", "cpu.physical_cores", "cores")),
    ("Logical CPUs", ("logical_cores", "cpu.logical_cores", "cpu_count")),
    ("Usable cores", ("usable_cores",)),
    ("Threads used", ("threads", "num_threads", "intra_op_threads")),
    ("INT8 dot product (VNNI/AMX)", ("int8_dot_product",)),
    ("Memory (GB)", ("memory_gb",)),
    ("GPU", ("gpu_name", "gpu", "gpus", "gpu.name")),
    ("GPU count", ("gpu_count",)),
    ("GPU memory", ("gpu_memory",)),
    ("GPU capability", ("gpu_capability",)),
    ("Driver", ("driver_version",)),
    ("CUDA", ("cuda_version",)),
    ("OS", ("os", "platform")),
    ("Machine", ("machine",)),
    ("Python", ("python", "python_version")),
]
_FLAG_KEYS = ("isa", "isa_flags", "cpu_flags", "cpu.flags", "flags")
_VERSION_KEYS = ("libraries", "versions", "library_versions")


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
    flags = _first(env, _FLAG_KEYS)
    if isinstance(flags, list) and len(flags) <= 24:  # a curated list, not all of /proc/cpuinfo
        out.append(("ISA extensions recorded", _text(flags)))
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


def text_lines(env: dict[str, Any]) -> list[str]:
    """The environment as aligned ``label  value`` lines, then the library versions: ``infertune env``."""
    facts = summary(env)
    width = max((len(label) for label, _ in facts), default=0)
    lines = [f"{label:<{width}}  {value}" for label, value in facts]
    libraries = versions(env)
    if libraries:
        name_width = max(len(name) for name, _ in libraries)
        lines += ["", "Libraries", *(f"  {name:<{name_width}}  {version}" for name, version in libraries)]
    return lines


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
    return {"".join(ch for ch in str(f).lower() if ch.isalnum()) for f in items}


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)
