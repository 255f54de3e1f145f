"""The typer CLI: parse options, call one core function, render its result.

No business logic here: each command module (create, fleet, run, profiles, envs, doctor,
config) parses its options, calls one core function and renders the result. Errors are
KbootError subclasses, caught once in `main()`, printed as one message on stderr with the
documented exit code.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Annotated, Any, NoReturn

import typer
import typer.core

from bootstrap import __version__
from bootstrap.cli.base import (
    app,
    clean_help,
    emit_json,
)
from bootstrap.system.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_SIGPIPE,
    EXIT_USAGE,
    KbootError,
    from_os_error,
)
from bootstrap.system.redaction import debug_logging

# importing a command module registers its commands, in the order `kboot --help` lists them
# isort: off
from bootstrap.cli import create  # noqa: F401
from bootstrap.cli import fleet  # noqa: F401
from bootstrap.cli import export  # noqa: F401
from bootstrap.cli import run  # noqa: F401
from bootstrap.cli import profiles  # noqa: F401
from bootstrap.cli import envs  # noqa: F401
from bootstrap.cli import doctor  # noqa: F401
from bootstrap.cli import config  # noqa: F401
# isort: on


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kboot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Log every command run; tracebacks on errors.")
    ] = False,
) -> None:
    if debug:
        debug_logging(sys.stderr)  # kboot's lines only, each redacted


def _cli_exception_types() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """Usage-error and abort classes: recent typer bundles its own click, older typer uses click."""
    usage: list[type[Exception]] = []
    aborts: list[type[BaseException]] = [typer.Abort, KeyboardInterrupt]
    try:
        from typer._click import exceptions as bundled
    except ImportError:
        pass
    else:
        usage.append(bundled.ClickException)
    try:
        import click
    except ImportError:  # typer with its bundled click does not install click
        pass
    else:
        usage.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(usage), tuple(aborts)


class _Gathered(io.TextIOBase):
    """stdout that is not a terminal: what kboot prints is gathered and written at once at
    the end, as ls writes a short listing. A reader that stops after its first lines
    (`kboot list | head -1`) has had all of it, so kboot ends 0, also under `set -o
    pipefail`. Past 64 KiB it streams (and a reader that stops then ends kboot by
    SIGPIPE, as it ends ls). Every command's children write into pipes kboot reads, never
    into this stdout, so nothing overtakes what is gathered."""

    LIMIT = 64 * 1024

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
        self._parts: list[str] = []
        self._size = 0
        self._streaming = False

    @property
    def encoding(self) -> str:  # type: ignore[override]  # rich and click ask for it
        return str(getattr(self.target, "encoding", "utf-8"))

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.target, "errors", None)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return int(self.target.fileno())

    def write(self, text: str | bytes) -> int:
        if isinstance(text, bytes):  # click writes bytes where a stream has no binary side
            text = text.decode(self.encoding, "replace")
        if self._streaming:
            return int(self.target.write(text))
        self._parts.append(text)
        self._size += len(text)
        if self._size > self.LIMIT:
            self._streaming = True
            self.release()
        return len(text)

    def flush(self) -> None:
        if self._streaming:
            self.target.flush()

    def release(self) -> None:
        """Write what was gathered, in one write."""
        text, self._parts = "".join(self._parts), []
        if text:
            self.target.write(text)
        self.target.flush()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turn every KbootError into one line and an exit code;
    a reader that stops reading (`kboot list | head`) ends kboot as it ends ls and git."""
    gathered = None
    if not sys.stdout.isatty():
        gathered = sys.stdout = _Gathered(sys.stdout)
    try:
        try:
            _main(sys.argv[1:] if argv is None else argv)
        finally:  # here, not at exit, where a closed pipe is only a warning
            if gathered is not None:
                sys.stdout = gathered.target
                gathered.release()
            elif not _typer_met_a_closed_pipe():
                sys.stdout.flush()
    except BrokenPipeError:
        _pipe_closed()
    except SystemExit:
        if _typer_met_a_closed_pipe():  # it says so by exiting 1
            _pipe_closed()
        raise


def _usage_failure(exc: Exception, *, as_json: bool) -> NoReturn:
    """click's usage error (either flavour): its message and usage line, or with --json
    the document and one line."""
    exit_code = getattr(exc, "exit_code", EXIT_USAGE)
    exit_code = (
        EXIT_USAGE if exit_code in (0, 2) and type(exc).__name__ != "FileError" else exit_code
    )
    if as_json:
        message = exc.format_message()  # type: ignore[attr-defined]
        sys.stderr.write(f"kboot: error: {_one_line(message)}\n")
        emit_json(_error_document(message, "UsageError", "see --help", exit_code))
    else:
        shown = io.StringIO()  # the usage line as --help shows it: ENV, not {ENV}
        exc.show(file=shown)  # type: ignore[attr-defined]  # both ClickException flavours
        sys.stderr.write(clean_help(shown.getvalue()) + "\n")
    sys.exit(exit_code)


def _typer_met_a_closed_pipe() -> bool:
    return type(sys.stdout).__name__ == "PacifyFlushWrapper"


def _pipe_closed() -> NoReturn:
    """stdout's reader went away: end quietly, killed by SIGPIPE as ls and git are (a shell
    says 141; `set -o pipefail` sees it as it sees theirs). Nothing is half-done: kboot
    writes its results to stdout after the work, and a failure has rolled back already."""
    import signal

    with contextlib.suppress(OSError):  # the interpreter's last flush finds /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(EXIT_SIGPIPE)  # no SIGPIPE (Windows): the code a shell would show


def _main(argv: list[str]) -> None:
    args = _debug_first(argv)
    own = args[: args.index("--")] if "--" in args else args  # not a command's own args
    debug = "--debug" in own or os.environ.get("KBOOT_DEBUG") == "1"
    usage_errors, aborts = _cli_exception_types()
    from bootstrap.system import interrupts

    # SIGINT, SIGTERM (kill, CI cancel, timeouts) and SIGHUP (a closed terminal) stop every
    # child at once and roll back like Ctrl-C
    interrupts.install_handlers()
    command = typer.main.get_command(app)
    as_json = "--json" in own

    def fail(exc: KbootError) -> NoReturn:
        if debug:
            import traceback

            traceback.print_exc()
        if as_json:  # the document says it all; stderr one line, for the person watching
            _print_error_line(exc)
            document = _error_document(exc.message, type(exc).__name__, exc.hint, exc.exit_code)
            emit_json({**document, "details": exc.details} if exc.details else document)
        else:
            _print_error(exc, debug=debug)
        sys.exit(exc.exit_code)

    try:
        code = command.main(args=args, prog_name="kboot", standalone_mode=False)
    except KbootError as exc:
        fail(exc)
    except usage_errors as exc:
        _usage_failure(exc, as_json=as_json)
    except aborts:
        sys.stderr.write("kboot: interrupted\n")
        if as_json:
            emit_json(_error_document("interrupted", "Interrupted", None, EXIT_INTERRUPTED))
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # stdout's reader went away: main() ends kboot as ls ends
        raise
    except OSError as exc:  # the machine said no: a full disk, a read-only folder, permissions
        fail(from_os_error(exc, writes=writes(own)))
    except Exception as exc:  # a bug in kboot: one line, and the traceback with --debug
        if debug:
            raise
        from bootstrap.system.redaction import redact

        sys.stderr.write(
            f"kboot: internal error: {type(exc).__name__}: {_one_line(redact(str(exc)))}\n"
            + ("" if as_json else "  hint: rerun with --debug for the traceback, and report it\n")
        )
        if as_json:
            kind = f"internal error: {type(exc).__name__}"
            emit_json(_error_document(str(exc), kind, "please report it", EXIT_FAILED))
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


#: the commands that only read: an error there has nothing to roll back, and no space to free
READ_ONLY = frozenset({"list", "show", "profiles", "doctor", "check", "config show"})


def writes(args: list[str]) -> bool:
    """Whether the command in `args` (kboot's own, before any `--`) may write: all but the
    read-only ones, and `sync --check`."""
    words = [arg for arg in args if not arg.startswith("-")]
    command = " ".join(words[:2]) if words[:1] == ["config"] else " ".join(words[:1])
    return not (command in READ_ONLY or (command == "sync" and "--check" in args))


def _debug_first(args: list[str]) -> list[str]:
    """`kboot create numpy --debug` as `kboot --debug create numpy`: the flag belongs to
    kboot itself, wherever it is typed (but not after `--`, where it is a command's)."""
    own = args[: args.index("--")] if "--" in args else args
    if "--debug" not in own[1:]:
        return list(args)
    where = own.index("--debug", 1) if own[0] != "--debug" else None
    if where is None:
        return list(args)
    return ["--debug", *args[:where], *args[where + 1 :]]


def _error_document(message: str, kind: str, hint: str | None, exit_code: int) -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind, "hint": hint, "exit_code": exit_code}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _print_error_line(exc: KbootError) -> None:
    """With --json: the message alone, on one line (the document has the hint and details)."""
    from bootstrap.system.redaction import redact

    sys.stderr.write(f"kboot: error: {_one_line(redact(exc.message))}\n")


def _print_error(exc: KbootError, *, debug: bool) -> None:
    from bootstrap.cli.consoles import error_console
    from bootstrap.system.errors import CommandError, InstallError
    from bootstrap.system.redaction import redact

    exc.message = redact(exc.message)
    exc.hint = redact(exc.hint) if exc.hint else exc.hint
    exc.details = redact(exc.details) if exc.details else exc.details
    console = error_console()
    # an installer's output tail always helps; a Python traceback only when asked for
    if exc.details and (debug or isinstance(exc, InstallError | CommandError)):
        console.print(exc.details, markup=False, highlight=False, style="dim")
    elif exc.details:
        exc.hint = (exc.hint + "; " if exc.hint else "") + "--debug shows the traceback"
    console.print(f"kboot: error: {exc.message}", markup=False, highlight=False, style="bold red")
    if exc.hint:
        console.print(f"  hint: {exc.hint}", markup=False, highlight=False)
