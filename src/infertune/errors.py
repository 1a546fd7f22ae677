"""Errors a user can fix: the CLI prints their message (problem + fix) instead of a traceback."""

from __future__ import annotations


class InfertuneError(Exception):
    """Base of every error whose message is meant for the user, not a developer."""


class ConfigError(InfertuneError):
    """The config file or a CLI flag is invalid; the message names the key and what is allowed."""


class ModelError(InfertuneError):
    """The model could not be found or built; the message suggests close names or the fix."""


class UnavailableError(InfertuneError):
    """A backend cannot run here (runtime missing, no GPU); the message says how to install it."""


class FidelityError(InfertuneError):
    """A variant's outputs differ from the FP32 reference beyond tolerance."""
