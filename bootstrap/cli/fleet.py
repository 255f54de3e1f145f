"""`kboot sync`: a machine brought to what a manifest lists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    Command,
    JobsOpt,
    JsonOpt,
    app,
    emit_json,
)


@app.command(cls=Command)
def sync(
    manifest: Annotated[
        Path, typer.Argument(metavar="MANIFEST", help="The machine manifest (TOML).")
    ],
    check_only: Annotated[
        bool,
        typer.Option("--check", help="Only report: exit 0 when in sync, 1 when not."),
    ] = False,
    prune: Annotated[
        bool, typer.Option(help="Remove environments kboot manages that the manifest omits.")
    ] = False,
    verify: Annotated[
        bool, typer.Option(help="Smoke-test environments that are already in sync too.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Rebuild an environment made from another profile.")
    ] = False,
    jobs: JobsOpt = None,
    wait: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="Wait this long for another kboot working on an environment (default 600: "
            "a cron job and an Ansible run may overlap).",
        ),
    ] = 600,
    as_json: JsonOpt = False,
) -> None:
    """Bring this machine to match MANIFEST: create what is missing, update what differs,
    leave what matches, and report (or --prune) environments it does not list.

    Safe to run again and again: an interrupted sync leaves each environment either as
    it was or fully updated, and the next sync finishes the job.

    Example: kboot sync lab.toml --check   (exit 1 when the machine differs)
    """
    from bootstrap.cli.render import ConsoleReporter, render_sync
    from bootstrap.fleet.sync import sync_manifest

    result = sync_manifest(
        manifest,
        check_only=check_only,
        prune=prune,
        verify=verify,
        workers=jobs,
        reporter_for=lambda label: ConsoleReporter(prefix=label),
        wait=wait,
        force=force,
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        render_sync(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)
