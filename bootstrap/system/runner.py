"""The one way kboot runs an external command (installers, interpreters, probes)."""

from __future__ import annotations

import json
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
from typing import Any

from bootstrap.system import interrupts
from bootstrap.system.errors import CommandError
from bootstrap.system.redaction import redact

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
    child_env = interrupts.child_environ(None if env is None else dict(env))
    try:
        proc = interrupts.start(  # registered before any signal can act: see its docstring
            lambda: subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env,
                cwd=cwd,
                text=True,
                encoding="utf-8",
                errors="replace",
                # its own process group, so a cancel stops what it started too
                start_new_session=os.name == "posix",
            )
        )
    except OSError as exc:
        raise CommandError(
            f"{what or 'running ' + argv[0]} failed: cannot start {argv[0]}: {exc.strerror}",
            cmd=argv,
            returncode=-1,
            output_tail="",
            hint=hint,
        ) from None
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
            output=redact(joined(stdout, stderr)),
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
    executable). Ctrl-C, SIGTERM or SIGHUP reach the command as they would in a shell, and
    it is killed with everything it started GRACE_SECONDS later or at a second signal; a
    cancel without a signal kills it at once.
    """
    argv = tuple(os.fspath(part) for part in cmd)
    log.debug("run: %s > %s", redact(shlex.join(argv)), output)
    interrupts.check()
    started = time.monotonic()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    spawner = hasattr(os, "posix_spawn") and hasattr(os, "wait4")
    report_r, report_w = os.pipe() if spawner else (-1, -1)
    # a small Python starts the command and measures it: a child of kboot itself would
    # count kboot's own memory in its peak (Linux keeps the high-water mark of the image a
    # child replaces when it execs)
    spawn = [sys.executable, "-I", "-S", "-c", _SPAWNER, str(report_w), executable or ""]
    with os.fdopen(os.open(output, flags, 0o644), "wb") as sink:  # never through a link
        child_env = interrupts.child_environ(dict(env))
        try:
            proc = interrupts.start(  # registered before any signal can act
                lambda: subprocess.Popen(
                    [*spawn, *argv] if spawner else argv,
                    executable=None if spawner else executable,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    cwd=cwd,
                    text=True,  # no pipes: only the type of the handle
                    start_new_session=os.name == "posix",
                    pass_fds=(report_w,) if spawner else (),
                ),
                gentle=True,
            )
        except BaseException as exc:
            if spawner:
                os.close(report_r)
                os.close(report_w)
            if not isinstance(exc, OSError):
                raise
            missing = isinstance(exc, FileNotFoundError)
            raise CommandError(
                f"cannot start {argv[0]}: {exc.strerror}",
                cmd=argv,
                returncode=EXIT_NOT_FOUND if missing else EXIT_NOT_EXECUTABLE,
                output_tail="",
            ) from None
        if spawner:
            os.close(report_w)
        follower = _Follower(output, echo) if echo is not None else None
        try:
            returncode, max_rss = _wait(proc)
        except BaseException:  # Ctrl-C: never leave the command running behind us
            if not interrupts.in_grace(proc):  # else it got the signal, and ends or is killed
                interrupts.kill_tree(proc)
            proc.wait()
            raise
        finally:
            if interrupts.cancelled():  # what the command left running goes with it
                interrupts.kill_tree(proc)
            interrupts.unregister(proc)
            if follower is not None:
                follower.stop()
            report = _read_report(report_r) if spawner else {}
    interrupts.check()  # killed by a cancellation: an interrupt, not a failed command
    if spawner:
        if "error" in report:
            code = EXIT_NOT_FOUND if report["error"] == "not found" else EXIT_NOT_EXECUTABLE
            raise CommandError(
                f"cannot start {argv[0]}: {report.get('reason', report['error'])}",
                cmd=argv,
                returncode=code,
                output_tail="",
            )
        rss = report.get("maxrss")
        max_rss = rss * (1 if sys.platform == "darwin" else 1024) if isinstance(rss, int) else None
    seconds = time.monotonic() - started
    log.debug("exit %s after %.2f s, peak memory %s bytes", returncode, seconds, max_rss)
    return Finished(argv, returncode, seconds, max_rss)


#: Runs as `python -I -S -c _SPAWNER FD EXECUTABLE ARGV...`: starts ARGV (posix_spawn,
#: from this small process), reaps it with its rusage, writes {"maxrss": ...} (or
#: {"error": ...}) to FD and ends as the command ended (its exit code, or its signal).
_SPAWNER = """
import json, os, signal, sys
fd, executable, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
os.set_inheritable(fd, False)  # the command and what it leaves behind must not hold it
stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
for number in stops:
    signal.signal(number, signal.SIG_IGN)  # the command decides; its end is ours
try:
    if executable:
        pid = os.posix_spawn(executable, argv, os.environ, setsigdef=stops)
    else:
        pid = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=stops)
except OSError as exc:
    kind = "not found" if isinstance(exc, FileNotFoundError) else "not executable"
    os.write(fd, json.dumps({"error": kind, "reason": exc.strerror}).encode())
    os._exit(127 if kind == "not found" else 126)
_, status, usage = os.wait4(pid, 0)
os.write(fd, json.dumps({"maxrss": usage.ru_maxrss}).encode())
if os.WIFSIGNALED(status):
    if os.WTERMSIG(status) not in (signal.SIGKILL, signal.SIGSTOP):  # not catchable anyway
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""


def _read_report(fd: int) -> dict[str, Any]:
    """What the spawner wrote: its command's peak memory, or why it could not start it."""
    try:
        with os.fdopen(fd, "rb") as pipe:
            data = json.loads(pipe.read(4096) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
