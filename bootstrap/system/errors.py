"""The one error hierarchy: every failure a user can provoke is a KbootError.

Each subclass carries its exit code; the CLI catches KbootError in one place,
prints the message (and the hint) on stderr and exits with that code.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed: install, smoke test, I/O
EXIT_USAGE = 2  # bad usage or a bad profile
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


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
    ):
        super().__init__(message, hint=hint, details=output_tail)
        self.cmd = list(cmd)
        self.returncode = returncode
        self.output_tail = output_tail


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
