"""`kboot run`: one command on several environments."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from bootstrap.cli.base import (
    Command,
    JsonOpt,
    app,
    complete_profiles,
    emit_json,
)
from bootstrap.system.errors import (
    UsageError,
)


class _RunCommand(Command):
    """`kboot run PROFILE... -- COMMAND`: what follows the first `--` is the command, as given."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta["kboot_command"] = args[split + 1 :]
            args = args[:split]
        elif not ctx.resilient_parsing and not {"-h", "--help"} & set(args):  # <TAB> parses
            from bootstrap.run.execute import EXAMPLE

            raise UsageError("kboot run needs `-- COMMAND` after the profiles", hint=EXAMPLE)
        return list(super().parse_args(ctx, args))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # PROFILE is optional to typer only so that its absence gets the example
        pieces = super().collect_usage_pieces(ctx)
        return [*(p.replace("[PROFILE]...", "PROFILE...") for p in pieces), "-- COMMAND [ARGS]..."]


@app.command("run", cls=_RunCommand)
def run_cmd(
    ctx: typer.Context,
    profiles: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PROFILE",
            autocompletion=complete_profiles,
            help="Environments to run in: a kboot environment's name, or a profile (its "
            "environment is created first when missing).",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="How many environments to build and run in at once (default: build up to "
            "4, run one at a time, with the output shown live). Runs at once share the "
            "current folder, its files included, and the CPU.",
        ),
    ] = None,
    logs: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Keep each run's output (ENV.log) here; a folder that holds anything "
            "already gets a new subfolder (default: a new folder in kboot's log folder, "
            "which keeps the newest 20 runs; printed).",
        ),
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown", help="Print the table as markdown, e.g. >> $GITHUB_STEP_SUMMARY."
        ),
    ] = False,
    as_json: JsonOpt = False,
    strict_backend: Annotated[
        bool, typer.Option(help="Fail a run whose Keras used another backend than its env's.")
    ] = False,
) -> None:
    """Run one command in several environments, side by side: Keras 3's "one script on
    every backend", checked in one call.

    Missing environments are created (as kboot create does); existing ones are used as
    they are. COMMAND runs in the current folder with the environment's bin first on PATH
    and VIRTUAL_ENV set, as `uv run` does, and with the environment's own Keras config:
    KERAS_BACKEND is set to its backend even when your shell sets another (a warning says
    so). stdin is empty; the output goes to a log file per run. One table follows:
    environment, backend (the one Keras really used; flagged when it is not the
    environment's), exit status, wall time, peak memory, and the metrics the command
    reported: it may write one JSON object of scalar values, such as {"loss": 0.12}, to
    the file named by $KBOOT_METRICS; each key becomes a column. A failed run's last lines
    of output are shown under the table.

    Exit code: the worst run's, i.e. the highest: 0 when every run exited 0; else the
    command's own exit code, 128+N for a run killed by signal N, 127 when COMMAND was not
    found in an environment, 126 when it is not executable, 1 (or 2 for a bad profile)
    when an environment could not be created. 2 also for bad usage, 130 when interrupted:
    Ctrl-C reaches each COMMAND as in a shell; what still runs 10 s later, or at a second
    Ctrl-C, is killed; the table (or --json) then shows what finished, what was
    interrupted and what did not start.

    Examples:

    \b
      kboot run numpy jax-cpu tf-cpu torch-cpu -- python train.py
      kboot run jax-cpu torch-cpu --jobs 2 -- python -m pytest
      kboot run jax-cpu torch-cpu --markdown -- python -m pytest >> summary.md
    """
    from bootstrap.cli.run_table import RunProgress, render_run, run_markdown
    from bootstrap.run.execute import run_command

    if as_json and markdown:
        raise UsageError("--json and --markdown: choose one")

    def echo(chunk: bytes) -> None:  # the output of a single run, live, beside the table
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()

    report = run_command(
        profiles or [],
        ctx.meta.get("kboot_command") or [],
        os.environ,
        jobs=jobs,
        logs=logs,
        reporter_for=RunProgress,
        echo=echo,
        strict_backend=strict_backend,
    )
    if not (as_json or markdown):
        render_run(report)  # the table, failures under it, warnings on stderr
    else:
        if as_json:
            emit_json(report.to_dict())
        else:
            sys.stdout.write(run_markdown(report))
        for warning in report.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if report.interrupted:  # the report above has what finished; the rest was stopped
        typer.echo("kboot: interrupted: the runs still going were stopped, the rest not "
                   "started", err=True)  # fmt: skip
    if report.exit_code:
        raise typer.Exit(report.exit_code)
