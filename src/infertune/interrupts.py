"""Ctrl-C and SIGTERM stop a run cleanly: the signal becomes an exception the pipeline can handle.

While ``catch_signals()`` is active, SIGINT and SIGTERM raise ``RunInterrupted`` in the main thread
(wherever it is waiting: on a worker, in a conversion, in the model download). Code that must not be
cut in half (appending a row to the journal and rewriting the result files, starting a worker)
runs inside ``deferred()``: a signal arriving there is held and raised when the block ends. Once the
run is stopping, further signals are ignored so that the cleanup (kill the worker, write the files)
always finishes. ``repair_signal_stack`` works around a runtime that leaves a dangling alternate
signal stack behind, which would turn a Ctrl-C into a segfault.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: the signals that stop a run, and the exit codes the CLI returns for them (128 + signal number).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal. ``exit_code`` is the shell convention, 128 + the signal number.

    A ``KeyboardInterrupt`` so that code which already treats Ctrl-C specially keeps doing so and
    ``except Exception`` blocks (a cell's failure handling) never swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(self.signal_name)
        #: filled in by the pipeline once the files are written: what the user needs to know next.
        self.summary: str = ""

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    active = False
    stopping = False
    defer_depth = 0
    pending: int | None = None


_state = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.stopping:
        return  # already stopping: let the cleanup finish
    if _state.defer_depth:
        _state.pending = _state.pending or signum
        return
    _state.stopping = True
    raise RunInterrupted(signum)


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_DISABLE = 2


def repair_signal_stack() -> bool:
    """Disable this thread's alternate signal stack when it points at freed memory; True if it did.

    OpenVINO's CPU plugin (seen with 2026.4) installs an alternate signal stack on the thread that
    compiles a model and, when compiled models are destroyed out of order, frees it without
    uninstalling it. Python runs every signal handler on the alternate stack, so the next Ctrl-C on
    that thread crashes the process with SIGSEGV instead of stopping the run cleanly. Only in-process
    runs (``isolation: none``) compile in this process; Linux only, a no-op when the stack is sound.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = _StackT()
        if libc.sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & _SS_DISABLE or not current.ss_sp:
            return False
        if _mapped(current.ss_sp, current.ss_size):
            return False
        off = _StackT(None, _SS_DISABLE, 0)
        return libc.sigaltstack(ctypes.byref(off), None) == 0
    except (OSError, AttributeError):
        return False


def _mapped(start: int, size: int) -> bool:
    """Whether [start, start + size) lies inside one mapping of this process."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            low, high = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if low <= start and start + size <= high:
                return True
    return False


@contextlib.contextmanager
def catch_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``RunInterrupted`` for the duration of the block (main thread only).

    Outside the main thread (signal handlers cannot be installed there) the block runs unchanged
    and Ctrl-C keeps Python's default behaviour.
    """
    if threading.current_thread() is not threading.main_thread() or _state.active:
        yield
        return
    repair_signal_stack()
    previous: dict[int, Any] = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _state.active, _state.stopping, _state.defer_depth, _state.pending = True, False, 0, None
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.active, _state.stopping, _state.defer_depth, _state.pending = False, False, 0, None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop signal until the block ends, so the block is never cut in half."""
    _state.defer_depth += 1
    try:
        yield
    finally:
        _state.defer_depth -= 1
        if not _state.defer_depth and _state.pending is not None and not _state.stopping:
            signum, _state.pending = _state.pending, None
            _state.stopping = True
            raise RunInterrupted(signum)
