"""Stopping cleanly: SIGINT, SIGTERM and SIGHUP stop every running child at once, and
every build rolls itself back.

The signal handler (main thread) marks the run as cancelled and kills the children that
`runner.run` registered, in every thread, so a batch of builds waiting on a dead index
stops in a moment instead of after the installers' own timeouts. A user's command
(`kboot run`) gets the signal itself first, as it would in a shell, so a training script
can save its work: it is killed GRACE_SECONDS later, or at a second signal. It then raises
KeyboardInterrupt in the main thread, unless that thread is inside a `critical()`
section (a journal write, a rollback), where the interrupt waits for the section's end.
Worker threads notice the cancellation at their next command or `check()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

#: Every child started during a build carries the build's token in this variable, so the
#: next kboot can find and stop the orphans of a build that was killed (SIGKILL does not
#: reach children): they would go on writing into the environment being recovered.
OPERATION_VARIABLE = "KBOOT_OPERATION"
_operation: ContextVar[str | None] = ContextVar("kboot_operation", default=None)

_cancelled = threading.Event()
_children: set[subprocess.Popen[str]] = set()
#: Reentrant: the signal handler runs in the main thread, which may hold it at that moment.
_children_lock = threading.RLock()
_pending: list[int] = []
#: Children that get the signal itself before SIGKILL (the commands of `kboot run`).
_gentle: set[subprocess.Popen[str]] = set()
#: The timer of the grace period that runs after the first signal reached a command.
_grace: list[threading.Timer] = []
#: How long a command has to end after the signal, before kboot kills it.
GRACE_SECONDS = 10.0


class _Depth:
    """How deep the main thread is in critical sections."""

    value = 0


def install_handlers() -> None:
    """SIGINT (Ctrl-C), SIGTERM (kill, CI cancel, timeouts) and SIGHUP (a closed terminal)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _handler)


def _handler(signum: int, frame: object) -> None:
    cancel(signum)
    if _Depth.value:
        _pending.append(signum)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cancel(signum: int | None = None) -> None:
    """Stop everything; later commands refuse to start. Every registered child is killed,
    except at a first signal, when a user's command gets that signal and GRACE_SECONDS
    to end (a second signal, or the end of that time, kills it)."""
    _cancelled.set()
    with _children_lock:
        children = list(_children)
        if signum is None and _grace:
            return  # a grace period runs: its timer ends it
        gentle = [c for c in children if c in _gentle] if signum is not None and not _grace else []
        if gentle:
            timer = threading.Timer(GRACE_SECONDS, _kill_all)
            timer.daemon = True
            _grace.append(timer)
    for child in children:
        if child in gentle:
            _signal_tree(child, signum or signal.SIGTERM)
        else:
            kill_tree(child)
    if gentle:
        _grace[-1].start()


def _kill_all() -> None:
    with _children_lock:
        children = list(_children)
    for child in children:
        kill_tree(child)


def in_grace(child: subprocess.Popen[str]) -> bool:
    """True when `child` got a signal and has its grace period to end (kill it not yet)."""
    with _children_lock:
        return bool(_grace) and child in _gentle


def cancelled() -> bool:
    return _cancelled.is_set()


def check() -> None:
    """Raise KeyboardInterrupt in a worker thread once the run was cancelled."""
    if _cancelled.is_set():
        raise KeyboardInterrupt("cancelled")


def reset() -> None:
    """For tests that cancel in-process: start afresh."""
    _cancelled.clear()
    with _children_lock:
        for timer in _grace:
            timer.cancel()
        _grace.clear()


def kill_tree(child: subprocess.Popen[str]) -> None:
    """Kill a child and everything it started (it leads its own process group)."""
    _signal_tree(child, getattr(signal, "SIGKILL", signal.SIGTERM))  # none on Windows


def _signal_tree(child: subprocess.Popen[str], signum: int) -> None:
    with contextlib.suppress(OSError):  # already gone
        if sys.platform == "win32":  # no process groups: TerminateProcess on the child
            child.kill()
        else:
            os.killpg(child.pid, signum)


def register(child: subprocess.Popen[str], *, gentle: bool = False) -> None:
    """Count `child` among those a cancel stops; a `gentle` one (a user's command) gets
    the signal itself first."""
    with _children_lock:
        _children.add(child)
        if gentle:
            _gentle.add(child)
    if _cancelled.is_set():
        kill_tree(child)


def start(
    spawn: Callable[[], subprocess.Popen[str]], *, gentle: bool = False
) -> subprocess.Popen[str]:
    """Start a child with `spawn` and `register` it, with no moment in between where a
    signal could leave it running unregistered (in its own process group, out of reach of
    Ctrl-C, while a rollback deletes the folder it writes into).

    The two happen in a `critical` section: a signal that comes meanwhile cancels at once
    (so `register` kills the new child), and its KeyboardInterrupt waits for the child to
    be registered; then the child is killed and waited for here. A signal therefore lands
    either before the child exists or after it is registered. (Blocking the signals with
    pthread_sigmask instead would hand the blocked mask on to the installer through exec:
    subprocess cannot reset it without a preexec_fn, which is unsafe with threads.)
    """
    child: subprocess.Popen[str] | None = None
    try:
        with critical():
            child = spawn()
            register(child, gentle=gentle)
    except BaseException:
        if child is not None:
            kill_tree(child)
            child.wait()
            unregister(child)
        raise
    return child


def unregister(child: subprocess.Popen[str]) -> None:
    with _children_lock:
        _children.discard(child)
        _gentle.discard(child)


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


@contextmanager
def finishing() -> Iterator[None]:
    """After an interrupt, while kboot gathers and reports what was done: a signal in this
    block still cancels (kills what still runs, at once) but raises nothing, neither here
    nor after it, so the report is not lost half-way."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        _Depth.value += 1
    try:
        yield
    finally:
        if main:
            _Depth.value -= 1
            if not _Depth.value:
                _pending.clear()


@contextmanager
def operation(token: str) -> Iterator[None]:
    """Mark the children this thread starts as part of the build `token`."""
    reset = _operation.set(token)
    try:
        yield
    finally:
        _operation.reset(reset)


def child_environ(env: dict[str, str] | None) -> dict[str, str] | None:
    """The environment for a child: the caller's, marked with the current build if any."""
    token = _operation.get()
    if token is None:
        return env
    return {**(os.environ if env is None else env), OPERATION_VARIABLE: token}


def stop_orphans(token: str, *, proc: Path = Path("/proc"), wait: float = 10.0) -> int:
    """SIGKILL the processes left by the killed build `token` and wait until they are gone.

    Only processes whose environment carries exactly that token are touched (Linux /proc;
    elsewhere there is nothing to read, and nothing is killed).
    """
    marker = f"{OPERATION_VARIABLE}={token}".encode()
    found = []
    if not proc.is_dir():
        return 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while found and time.monotonic() < deadline:
        found = [pid for pid in found if (proc / str(pid)).exists() and not _zombie(proc, pid)]
        time.sleep(0.05)
    return len(found)


def _zombie(proc: Path, pid: int) -> bool:
    try:
        return ") Z " in (proc / str(pid) / "stat").read_text()
    except OSError:
        return True
