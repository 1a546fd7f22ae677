"""The backend registry: one dict filled by ``@register_backend``; the CLI, the ladder and the tests read it.

Backend modules are imported lazily by ``load_all`` (they import no runtime at module level), so the
registry is complete without torch or onnxruntime being importable.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TypeVar

from infertune.backends.base import Backend
from infertune.errors import ConfigError

_REGISTRY: dict[str, Backend] = {}

#: every module under infertune.backends that defines a backend; order = default ladder order.
BACKEND_MODULES = (
    "null",
    "pytorch",
    "torchscript",
    "torch_compile",
    "cudnn_fused",
    "aoti",
    "onnxruntime",
    "openvino",
    "tensorrt",
)

B = TypeVar("B", bound=type[Backend])


def register_backend(cls: B) -> B:
    """Class decorator: instantiate and register a backend under ``cls.name`` (duplicates rejected)."""
    name = cls.name
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(f"backend {name!r} is registered twice ({type(_REGISTRY[name]).__name__}, {cls.__name__})")
    _REGISTRY[name] = cls()
    return cls


def load_all() -> None:
    """Import every backend module so that each registers itself."""
    for mod in BACKEND_MODULES:
        importlib.import_module(f"infertune.backends.{mod}")


def list_backends() -> list[str]:
    """Names of all registered backends, in ladder order."""
    load_all()
    order = {name: i for i, name in enumerate(BACKEND_MODULES)}
    return sorted(_REGISTRY, key=lambda n: order.get(n, len(order)))


def get_backend(name: str) -> Backend:
    """Return the backend called ``name`` or raise ConfigError suggesting the closest names."""
    load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown backend {name!r}.{hint} Known backends: {', '.join(list_backends())}."
        ) from None
