"""The one way kboot runs an external command (installers, interpreters, probes)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import CommandError

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
        return tail(self.stderr + self.stdout)


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
    on Ctrl-C the child is stopped before KeyboardInterrupt goes on up.
    """
    argv = tuple(os.fspath(part) for part in cmd)
    log.debug("run: %s", shlex.join(argv))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            cwd=cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
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
        proc.kill()
        stdout, stderr = proc.communicate()
        raise CommandError(
            f"{what or shlex.join(argv)} did not finish within {timeout:g} s",
            cmd=argv,
            returncode=-1,
            output_tail=tail(stderr + stdout),
            hint=hint,
        ) from None
    except BaseException:  # Ctrl-C: never leave the child running behind us
        proc.kill()
        proc.wait()
        raise
    result = CommandResult(argv, proc.returncode, stdout, stderr, time.monotonic() - started)
    log.debug("exit %s after %.2f s", proc.returncode, result.seconds)
    if check and proc.returncode != 0:
        raise CommandError(
            f"{what or shlex.join(argv)} failed (exit code {proc.returncode})",
            cmd=argv,
            returncode=proc.returncode,
            output_tail=result.output_tail,
            hint=hint,
        )
    return result
