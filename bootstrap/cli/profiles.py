"""`kboot profiles` and `kboot show`: the profiles this folder sees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    Command,
    JsonOpt,
    app,
    complete_profiles,
    emit_json,
)


@app.command("profiles", cls=Command)
def profiles_cmd(as_json: JsonOpt = False) -> None:
    """List the profiles a name can mean here: the project's (in a folder with a
    pyproject.toml [tool.kboot] or a kboot.toml), yours, and the built-ins, each with
    where it comes from and what it shadows.

    Example: kboot profiles --json
    """
    from bootstrap.cli.render import render_profiles
    from bootstrap.profiles.catalog import catalog

    found = catalog()
    entries = found.entries()
    if as_json:
        emit_json([e.to_dict() for e in entries])
    else:
        render_profiles(entries, found)


@app.command(cls=Command)
def show(
    profile: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE", autocompletion=complete_profiles, help="Profile name or .toml path."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Show what `kboot create PROFILE` would build here: the profile's validated values
    with its accelerator's build of the backend applied, where it comes from and what it
    extends (every field of --json; the text is a valid profile to start your own from).

    Example: kboot show jax-cpu > ~/.config/kboot/profiles/mine.toml
    """
    from bootstrap.cli.render import render_profile
    from bootstrap.envs.names import profile_for
    from bootstrap.install import accelerators

    loaded = profile_for(profile, os.environ, Path.cwd())
    built, build = accelerators.resolve(loaded, None)  # as create resolves it
    if as_json:
        emit_json({**built.to_dict(), **({"build": build.to_dict()} if build else {})})
    else:
        render_profile(loaded, built, build)
