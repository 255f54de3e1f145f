"""`kboot export`: a container image's build context (Containerfile, Apptainer definition)
for a kboot environment."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    AcceleratorOpt,
    Command,
    JsonOpt,
    app,
    complete_choices,
    complete_profiles,
    emit_json,
)


@app.command(cls=Command)
def export(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE",
            autocompletion=complete_profiles,
            help="Profile name or .toml path (a built-in profile, or a file that stands alone).",
        ),
    ],
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="oci|apptainer",
            autocompletion=complete_choices("oci", "apptainer"),
            help="oci: a Containerfile (podman, buildah, docker); apptainer: an Apptainer "
            "definition. Repeatable; default: both.",
        ),
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="The lock the image installs (from `kboot lock`)."),
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Copy this wheelhouse (from `kboot download`) into the context: the image "
            "then builds offline. Its own lock is used when --lock is not given.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", metavar="DIR", help="The export folder (default: ./export-PROFILE)."
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            metavar="IMAGE",
            help="The base image: any with Python X.Y and its venv module "
            "(default: python:X.Y-slim).",
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            metavar="X.Y", help="The image's Python, the lock's (default: the one kboot picks)."
        ),
    ] = None,
    accelerator: AcceleratorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a container image's build context for PROFILE: a Containerfile and/or an
    Apptainer definition that install the lock hash-checked (offline from --wheelhouse),
    write the environment's keras.json, compile bytecode, run kboot's smoke test as a build
    step and kboot check as the last one (%test in the definition), and label the image
    with the lock's sha256 and kboot's version.

    kboot never overwrites what it did not write: DIR must be new, empty, or an earlier
    export left unchanged.

    Example: kboot export numpy --lock pylock.numpy.toml --wheelhouse wheelhouse -o export-numpy
    """
    import sys

    from bootstrap.cli.render import ConsoleReporter
    from bootstrap.fleet.export import export_profile

    # the command as typed, for the files' first line (the test's CliRunner has no argv)
    typed = sys.argv[1:] if sys.argv[1:2] == ["export"] else ["export", ref]
    result = export_profile(
        ref,
        formats=to or [],
        lock=lock.expanduser().absolute() if lock else None,
        wheelhouse=wheelhouse.expanduser().absolute() if wheelhouse else None,
        output=output,
        base=base,
        python=python,
        accelerator=accelerator,
        command=shlex.join(["kboot", *typed]),
        reporter=ConsoleReporter(),
    )
    if as_json:
        emit_json(result.to_dict())
        return
    offline = "offline, from its wheelhouse" if result.offline else "from the package index"
    typer.echo(
        f"exported {result.profile} to {result.folder}: {', '.join(result.files)} "
        f"(lock {result.lock} sha256 {result.lock_sha256[:12]}, base {result.base}, builds "
        f"{offline})"
    )
    for line in result.build_commands():
        typer.echo(f"build: {line}")
