"""`kboot config show|set`: a keras.json, read or safely edited."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    Command,
    JsonOpt,
    complete_assignments,
    config_app,
    emit_json,
)

KerasHomeOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Keras home to use instead of $KERAS_HOME or ~/.keras."),
]


def _keras_home(option: Path | None) -> tuple[Path, str]:
    from bootstrap.system.paths import user_keras_home

    if option is not None:
        return option.expanduser().absolute(), "--keras-home"
    source = "KERAS_HOME" if os.environ.get("KERAS_HOME") else "default"
    return Path(user_keras_home()), source


@config_app.command("show", cls=Command)
def config_show(keras_home: KerasHomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the effective keras.json, its values, and what overrides them; a value Keras
    would reject is flagged.

    Example: kboot config show --keras-home ~/.keras
    """
    from bootstrap.cli.render import render_config
    from bootstrap.profiles.keras_json import describe_config

    home, source = _keras_home(keras_home)
    view = describe_config(home, source, os.environ)
    if as_json:
        emit_json(view.to_dict())
    else:
        render_config(view)


@config_app.command("set", cls=Command)
def config_set(
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE",
            autocompletion=complete_assignments,
            help="KEY=VALUE pairs: backend, floatx, image_data_format, epsilon, nnx_enabled.",
        ),
    ],
    keras_home: KerasHomeOpt = None,
    python: Annotated[
        str | None,
        typer.Option(
            metavar="PATH|ENV",
            help="Interpreter or kboot environment in which to check an external backend "
            "module (backend=my_pkg.my_backend).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set keys in keras.json: validated, merged (other keys kept), atomic, with a .bak backup.

    Example: kboot config set backend=jax floatx=float32
    """
    from bootstrap.envs.config_set import set_keras_config

    home, _ = _keras_home(keras_home)
    result = set_keras_config(home, assignments, python=python)
    if as_json:
        emit_json(result.to_dict())
        return
    state = "updated" if result.changed else "already set, unchanged:"
    typer.echo(f"{state} {result.path}: " + ", ".join(f"{k}={v}" for k, v in result.values.items()))
    if result.backup:
        typer.echo(f"previous version kept as {result.backup}")
    if result.backend_checked_with:
        typer.echo(f"backend module checked with {result.backend_checked_with}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
