"""The one way kboot runs an external command (installers, interpreters, probes)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrap import interrupts
from bootstrap.errors import CommandError
from bootstrap.redaction import redact

log = logging.getLogger("kboot")

TAIL_LINES = 25


@dataclass(frozen=True)
class CommandResult:
    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output_tail(self) -> str:
        return tail(joined(self.stdout, self.stderr))  # the error comes last


def joined(stdout: str, stderr: str) -> str:
    return "\n".join(part.strip() for part in (stdout, stderr) if part.strip())


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
    what: str | None = None,
    hint: str | None = None,
) -> CommandResult:
    """Run `cmd` (a list, never a shell string), capture its output, raise CommandError.

    `what` names the step for the error message ("installing packages");
    on Ctrl-C the child is stopped before KeyboardInterrupt goes on up, and a cancelled
    run (SIGTERM to a batch) kills the children of every thread at once.
    """
    argv = tuple(os.fspath(part) for part in cmd)
    shown = redact(shlex.join(argv))
    log.debug("run: %s", shown)
    interrupts.check()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=interrupts.child_environ(None if env is None else dict(env)),
            cwd=cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            # its own process group, so a cancel stops what it started too
            start_new_session=os.name == "posix",
        )
    except OSError as exc:
        raise CommandError(
            f"{what or 'running ' + argv[0]} failed: cannot start {argv[0]}: {exc.strerror}",
            cmd=argv,
            returncode=-1,
            output_tail="",
            hint=hint,
        ) from None
    interrupts.register(proc)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        interrupts.kill_tree(proc)
        stdout, stderr = proc.communicate()
        raise CommandError(
            f"{what or shown} did not finish within {timeout:g} s",
            cmd=argv,
            returncode=-1,
            output_tail=redact(tail(joined(stdout, stderr))),
            hint=hint,
        ) from None
    except BaseException:  # Ctrl-C: never leave the child running behind us
        interrupts.kill_tree(proc)
        proc.wait()
        raise
    finally:
        interrupts.unregister(proc)
    interrupts.check()  # killed by a cancellation: an interrupt, not a failed command
    result = CommandResult(argv, proc.returncode, stdout, stderr, time.monotonic() - started)
    log.debug("exit %s after %.2f s", proc.returncode, result.seconds)
    if check and proc.returncode != 0:
        raise CommandError(
            f"{what or shown} failed (exit code {proc.returncode})",
            cmd=argv,
            returncode=proc.returncode,
            output_tail=redact(result.output_tail),
            hint=hint,
        )
    return result


def isolation_flags(
    version: tuple[int, int] | None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Flags that keep a Python from importing the working folder, user site or PYTHON* code.

    `-I` from 3.4 on; older (or unknown) interpreters get its parts, `-E -s`, and the
    caller's private working folder keeps the script folder harmless. `-E` also drops
    PYTHONDONTWRITEBYTECODE: a user who set it still gets no bytecode written (`-B`).
    """
    environ = os.environ if environ is None else environ
    flags = ["-I"] if version is not None and version >= (3, 4) else ["-E", "-s"]
    if environ.get("PYTHONDONTWRITEBYTECODE"):
        flags.append("-B")
    return flags


def run_python(
    python: Path,
    args: Sequence[str | os.PathLike[str]],
    *,
    version: tuple[int, int] | None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    what: str | None = None,
    hint: str | None = None,
) -> CommandResult:
    """Run an interpreter kboot did not write, isolated, from a private temporary folder.

    Nothing in the caller's folder (a planted `json.py` in /tmp), the user site or
    PYTHONPATH can run as the user this way.
    """
    with tempfile.TemporaryDirectory(prefix="kboot-run-") as private:
        return run(
            [python, *isolation_flags(version, env), *args],
            env=env,
            cwd=Path(private),
            timeout=timeout,
            check=check,
            what=what,
            hint=hint,
        )


#: Shell conventions for a command that cannot be started.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


@dataclass(frozen=True)
class Finished:
    """A user's command run to its end (`run_logged`)."""

    cmd: tuple[str, ...]
    returncode: int  # as subprocess reports it: -N when signal N ended it
    seconds: float
    max_rss: int | None  # peak resident memory in bytes; None where the OS does not say


def run_logged(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    output: Path,
    env: Mapping[str, str],
    executable: str | None = None,
    cwd: Path | None = None,
    echo: Callable[[bytes], None] | None = None,
) -> Finished:
    """Run a user's command to its end, its stdout and stderr into the file `output` as
    they interleave, and measure it: exit status, wall time and peak memory.

    Unlike `run`, nothing is held in memory and a non-zero exit is a result, not an error.
    `echo` gets the output too, as it comes (a live view). Peak memory is the child's
    `wait4` rusage (ru_maxrss, which covers the processes it waited for). A command that
    cannot be started raises CommandError with the shell's codes (127 not found, 126 not
    executable); Ctrl-C or a cancel stops it and everything it started.
    """
    argv = tuple(os.fspath(part) for part in cmd)
    log.debug("run: %s > %s", redact(shlex.join(argv)), output)
    interrupts.check()
    started = time.monotonic()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(output, flags, 0o644), "wb") as sink:  # never through a link
        try:
            proc = subprocess.Popen(
                argv,
                executable=executable,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=interrupts.child_environ(dict(env)),
                cwd=cwd,
                text=True,  # no pipes: only the type of the handle
                start_new_session=os.name == "posix",
            )
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError)
            raise CommandError(
                f"cannot start {argv[0]}: {exc.strerror}",
                cmd=argv,
                returncode=EXIT_NOT_FOUND if missing else EXIT_NOT_EXECUTABLE,
                output_tail="",
            ) from None
        interrupts.register(proc)
        follower = _Follower(output, echo) if echo is not None else None
        try:
            returncode, max_rss = _wait(proc)
        except BaseException:  # Ctrl-C: never leave the command running behind us
            interrupts.kill_tree(proc)
            proc.wait()
            raise
        finally:
            interrupts.unregister(proc)
            if follower is not None:
                follower.stop()
    interrupts.check()  # killed by a cancellation: an interrupt, not a failed command
    seconds = time.monotonic() - started
    log.debug("exit %s after %.2f s, peak memory %s bytes", returncode, seconds, max_rss)
    return Finished(argv, returncode, seconds, max_rss)


def _wait(proc: subprocess.Popen[str]) -> tuple[int, int | None]:
    """Reap the child with its resource usage, where the OS gives it (not on Windows)."""
    if not hasattr(os, "wait4"):  # pragma: no cover - no Windows runner here
        return proc.wait(), None
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
    kib = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, usage.ru_maxrss * kib


class _Follower:
    """Hands what a child writes into a file on to `echo` while it runs (a `tail -f`).

    Following the file rather than a pipe means a grandchild that keeps the output open
    cannot hold kboot up: at `stop()` the follower reads what is there and ends.
    """

    def __init__(self, path: Path, echo: Callable[[bytes], None]) -> None:
        self._path = path
        self._echo = echo
        self._done = threading.Event()
        self._end = 0
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with self._path.open("rb") as source:
            try:
                while not self._done.is_set():
                    chunk = source.read(65536)
                    if chunk:
                        self._echo(chunk)
                    else:
                        self._done.wait(0.05)
                while source.tell() < self._end:  # what was there when the command ended
                    chunk = source.read(min(65536, self._end - source.tell()))
                    if not chunk:
                        break
                    self._echo(chunk)
            except OSError:  # the terminal went away: the log still has everything
                return

    def stop(self) -> None:
        try:
            self._end = self._path.stat().st_size
        except OSError:
            self._end = 0
        self._done.set()
        self._thread.join(timeout=10)
