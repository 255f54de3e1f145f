"""The one error hierarchy: every failure a user can provoke is a KbootError.

Each subclass carries its exit code; the CLI catches KbootError in one place,
prints the message (and the hint) on stderr and exits with that code.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed: install, smoke test, I/O
EXIT_USAGE = 2  # bad usage or a bad profile
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_SIGPIPE = 141  # stdout's reader went away (`| head`): killed by SIGPIPE, as ls and git


class KbootError(Exception):
    """Base of every error kboot reports to the user."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return self.message


class UsageError(KbootError):
    """A bad option or argument on the command line."""

    exit_code = EXIT_USAGE


class NoSuchEnvironment(UsageError):
    """A name or path that means no environment kboot made (`remove` takes it as done)."""


class ProfileError(KbootError):
    """A profile that cannot be found, parsed or validated."""

    exit_code = EXIT_USAGE


class InterpreterError(KbootError):
    """No Python interpreter satisfies what the profile or --python asks for."""

    exit_code = EXIT_FAILED


class ConfigError(KbootError):
    """A keras.json that cannot be read, validated or written."""

    exit_code = EXIT_FAILED


class UntrustedPathError(KbootError):
    """A file or folder that another user could change or swap (a shared machine)."""

    exit_code = EXIT_USAGE


class EnvironmentStateError(KbootError):
    """An environment path that kboot must not or cannot use as asked."""

    exit_code = EXIT_FAILED


class LockedError(KbootError):
    """Another kboot process works on the same environment right now."""

    exit_code = EXIT_FAILED


class CommandError(KbootError):
    """An external command (installer, interpreter) failed."""

    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        cmd: Sequence[str],
        returncode: int,
        output_tail: str,
        hint: str | None = None,
        output: str | None = None,
    ):
        super().__init__(message, hint=hint, details=output_tail)
        self.cmd = list(cmd)
        self.returncode = returncode
        self.output_tail = output_tail
        #: all it printed (redacted): the cause may be far above the tail (a hash mismatch
        #: before a hundred expected hashes)
        self.output = output_tail if output is None else output


class InstallError(KbootError):
    """Installing the profile's packages failed."""

    exit_code = EXIT_FAILED


class SmokeError(KbootError):
    """The environment does not report the configuration the profile asks for."""

    exit_code = EXIT_FAILED


class BackendModuleError(KbootError):
    """An external Keras 2 backend module that does not import or lacks required entries."""

    exit_code = EXIT_FAILED


class AcceleratorError(KbootError):
    """The machine lacks the accelerator (or driver) that a profile needs."""

    exit_code = EXIT_FAILED


class MetricsError(KbootError):
    """A metrics file (`kboot run`, $KBOOT_METRICS) that is not one JSON object of scalars."""

    exit_code = EXIT_FAILED


class KernelError(KbootError):
    """A Jupyter kernel kboot cannot register or unregister (the environment itself is fine)."""

    exit_code = EXIT_FAILED


class Interrupted(KbootError):
    """The user pressed Ctrl-C; everything was rolled back."""

    exit_code = EXIT_INTERRUPTED


#: what the machine said, as one phrase, and what to do about it (for a command that writes,
#: and for one that only reads): chosen by errno, so a read-only command is never told to
#: free space and a read-only file system is never blamed on a symlink
_OS_ERRORS: dict[int, tuple[str, str, str]] = {
    errno.ENOSPC: (
        "no space left on the device",
        "free some space (or point TMPDIR and the installer's cache elsewhere)",
        "free some space",
    ),
    errno.EACCES: (
        "permission denied",
        "you lack the permissions this needs there: choose a folder of your own (--dest, "
        "KBOOT_HOME) or fix its permissions (ls -ld shows them)",
        "you may not read it: fix its permissions (ls -ld shows them), or point KBOOT_HOME "
        "at a folder of your own",
    ),
    errno.EROFS: (
        "read-only file system",
        "that folder is on a file system mounted read-only: choose one on a writable file "
        "system (--dest, KBOOT_HOME, TMPDIR)",
        "that folder is on a file system mounted read-only, which kboot only reads",
    ),
    errno.ENAMETOOLONG: (
        "file name too long",
        "choose a shorter path (--dest, --name, KBOOT_HOME)",
        "give a shorter path",
    ),
    errno.ELOOP: (
        "a symlink where kboot follows none, or links that loop",
        "replace the link with the real file or folder (ls -l shows where it points)",
        "replace the link with the real file or folder (ls -l shows where it points)",
    ),
    errno.ENOENT: (
        "no such file or folder",
        "something was moved or removed while kboot ran, or a folder on the way is missing: "
        "check the path and run it again",
        "check the path (a folder on the way may be missing) and run it again",
    ),
    errno.EMFILE: (
        "too many open files",
        "raise the limit (ulimit -n) and run it again",
        "raise the limit (ulimit -n) and run it again",
    ),
    errno.EIO: (
        "input/output error",
        "the disk or network file system failed: check it (dmesg), then run it again",
        "the disk or network file system failed: check it (dmesg), then run it again",
    ),
}
_OS_ERRORS[errno.EPERM] = _OS_ERRORS[errno.EACCES]
_OS_ERRORS[errno.ENOTDIR] = _OS_ERRORS[errno.ENOENT]
_OS_ERRORS[errno.ENFILE] = _OS_ERRORS[errno.EMFILE]
if hasattr(errno, "EDQUOT"):  # a full quota is a full disk to the user
    _OS_ERRORS[errno.EDQUOT] = ("disk quota exceeded", *_OS_ERRORS[errno.ENOSPC][1:])


def os_error_reason(exc: OSError) -> str:
    """What the machine said, in words, with the path it said it of: never a Python repr."""
    known = _OS_ERRORS.get(exc.errno or 0)
    said = known[0] if known else (exc.strerror or str(exc) or type(exc).__name__)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{said}{where}"


def os_error_hint(exc: OSError, *, writes: bool) -> str:
    """What to do about `exc`, for a command that writes or one that only reads (which
    has no space to free and nothing to roll back)."""
    known = _OS_ERRORS.get(exc.errno or 0)
    if known is None:
        hint = "fix what the message names and run it again; --debug shows where it happened"
    else:
        hint = known[1] if writes else known[2]
    return hint


def from_os_error(exc: OSError, *, writes: bool) -> KbootError:
    """The KbootError for an OSError that reached the entry point, nothing closer to it
    having explained it: a command that writes has rolled back what it had started."""
    hint = os_error_hint(exc, writes=writes)
    return KbootError(
        os_error_reason(exc),
        hint=hint + ("; kboot rolled back what it had started" if writes else ""),
    )
