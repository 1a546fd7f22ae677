"""Variant names: ``backend:precision[:option...]``, e.g. ``onnxruntime:int8:percentile``.

An option is either a bare word (``max-autotune``, ``channels_last``) or ``key=value``
(``hint=throughput``). Parsing is strict and names the fix when a name is wrong.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from infertune.backends.base import PRECISIONS
from infertune.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One recipe for running a model: a backend, a precision and options."""

    backend: str
    precision: str = "fp32"
    options: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return ":".join((self.backend, self.precision, *self.options))

    @property
    def option_dict(self) -> dict[str, str]:
        """Options as a dict; a bare word maps to ``""``."""
        out: dict[str, str] = {}
        for opt in self.options:
            key, _, value = opt.partition("=")
            out[key] = value
        return out

    def __str__(self) -> str:
        return self.name


def parse_variant(text: str) -> Variant:
    """Parse ``backend:precision[:option...]``; the backend must be registered."""
    from infertune.backends.registry import get_backend

    parts = [p.strip() for p in str(text).strip().split(":")]
    if not parts or not parts[0]:
        raise ConfigError(f"empty variant {text!r}: write backend:precision[:option], e.g. onnxruntime:fp32")
    backend = get_backend(parts[0])  # raises with suggestions
    precision = parts[1] if len(parts) > 1 and parts[1] else "fp32"
    if precision not in PRECISIONS:
        close = difflib.get_close_matches(precision, PRECISIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"variant {text!r}: unknown precision {precision!r}.{hint} Allowed: {', '.join(PRECISIONS)}."
        )
    if precision not in backend.precisions:
        raise ConfigError(
            f"variant {text!r}: backend {backend.name!r} has no {precision} path "
            f"(it supports {', '.join(sorted(backend.precisions))})."
        )
    options = tuple(p for p in parts[2:] if p)
    return Variant(backend.name, precision, options)
