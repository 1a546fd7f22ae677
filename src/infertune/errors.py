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


class RunFailed(Exception):
    """A stage every cell depends on (the FP32 reference) crashed, hung or ran out of memory.

    Not an ``InfertuneError``: the input may be fine. The result files hold a row for every planned cell
    saying why, ``result`` is the run's ``RunResult``, and the CLI exits with ``EXIT_RUN_FAILED`` (3).
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
