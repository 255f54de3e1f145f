"""`kboot doctor`: what `import keras` will do in any Python."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    Command,
    JsonOpt,
    app,
    complete_envs,
    emit_json,
)


@app.command(cls=Command)
def doctor(
    env: Annotated[
        str | None,
        typer.Argument(
            metavar="[ENV]",
            autocompletion=complete_envs,
            help="A kboot environment (name or path).",
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="Any Python, or an environment's folder (venv, conda): kboot-made or not. "
            "Default: the python3 on PATH.",
        ),
    ] = None,
    do_import: Annotated[
        bool,
        typer.Option("--import", help="Also import keras there: the devices it sees."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Explain what `import keras` will do in a Python environment, and why: which Keras,
    which backend and where that comes from, which keras.json, package conflicts, CUDA
    builds and drivers, numeric traps. Each finding has its evidence and a fix.

    Exit code 0 when no finding is an error, 1 otherwise (2: not a Python).

    Example: kboot doctor --python ~/miniconda3/envs/ml
    """
    from bootstrap.cli.render import render_doctor
    from bootstrap.doctor.examine import examine, target_python

    result = examine(target_python(env, python, os.environ), os.environ, do_import=do_import)
    if as_json:
        emit_json(result.to_dict())
    else:
        render_doctor(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
