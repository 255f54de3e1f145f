"""Where kboot prints: rich consoles for stdout and stderr, and tables without trailing
blanks when piped. Small on purpose: `kboot run` imports it without every command's
results."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich would exit 1 (a failure to `set -o pipefail`); the entry point ends kboot
        as a closed pipe ends ls and git instead."""
        raise BrokenPipeError


def out_console() -> Console:
    # piped output is read by scripts and pasted into issues: never cut or fold it
    width = None if sys.stdout.isatty() else 4096
    return _Console(highlight=False, soft_wrap=True, width=width)


def error_console() -> Console:
    return _Console(stderr=True, highlight=False, soft_wrap=True)


def print_table(console: Console, table: Table) -> None:
    """A table; piped, without the padding rich puts at the end of short rows."""
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
