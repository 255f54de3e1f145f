"""The typer app: parses options, calls one core function per command, renders its result as
text or JSON.
"""

from __future__ import annotations


def main() -> None:
    """The `kboot` console script."""
    from bootstrap.cli.app import main as run_app

    run_app()
