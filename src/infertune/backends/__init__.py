"""Backends: one file each, registered in ``registry``; the contracts are in ``base``."""

from infertune.backends.base import Availability, Backend, PrepareContext, Runner
from infertune.backends.registry import get_backend, list_backends, register_backend

__all__ = ["Availability", "Backend", "PrepareContext", "Runner", "get_backend", "list_backends", "register_backend"]
