"""Stopping cleanly: SIGINT, SIGTERM and SIGHUP stop every running child at once, and
every build rolls itself back.

The signal handler (main thread) marks the run as cancelled and kills the children that
`runner.run` registered, in every thread, so a batch of builds waiting on a dead index
stops in a moment instead of after the installers' own timeouts. It then raises
KeyboardInterrupt in the main thread, unless that thread is inside a `critical()`
section (a journal write, a rollback), where the interrupt waits for the section's end.
Worker threads notice the cancellation at their next command or `check()`.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_cancelled = threading.Event()
_children: set[subprocess.Popen[str]] = set()
_children_lock = threading.Lock()
_pending: list[int] = []


class _Depth:
    """How deep the main thread is in critical sections."""

    value = 0


def install_handlers() -> None:
    """SIGINT (Ctrl-C), SIGTERM (kill, CI cancel, timeouts) and SIGHUP (a closed terminal)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handler)


def _handler(signum: int, frame: object) -> None:
    cancel()
    if _Depth.value:
        _pending.append(signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cancel() -> None:
    """Stop everything: kill every registered child; later commands refuse to start."""
    _cancelled.set()
    with _children_lock:
        children = list(_children)
    for child in children:
        with contextlib.suppress(OSError):  # already gone
            child.kill()


def cancelled() -> bool:
    return _cancelled.is_set()


def check() -> None:
    """Raise KeyboardInterrupt in a worker thread once the run was cancelled."""
    if _cancelled.is_set():
        raise KeyboardInterrupt("cancelled")


def reset() -> None:
    """For tests that cancel in-process: start afresh."""
    _cancelled.clear()


def register(child: subprocess.Popen[str]) -> None:
    with _children_lock:
        _children.add(child)
    if _cancelled.is_set():
        child.kill()


def unregister(child: subprocess.Popen[str]) -> None:
    with _children_lock:
        _children.discard(child)


@contextmanager
def critical() -> Iterator[None]:
    """Let a signal wait until this block is done (a journal step must not stop half-way)."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        _Depth.value += 1
    try:
        yield
    finally:
        if main:
            _Depth.value -= 1
            if not _Depth.value and _pending:
                signum = _pending.pop()
                _pending.clear()
                raise KeyboardInterrupt(signal.Signals(signum).name)
