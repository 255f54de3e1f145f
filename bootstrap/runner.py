"""The one way kboot runs an external command (installers, interpreters, probes)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
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
