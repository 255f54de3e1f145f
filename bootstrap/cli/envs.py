"""`kboot list`, `check`, `remove` and `kernel`: the environments kboot made."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    AllowCpuOpt,
    Command,
    ExtraIndexUrlOpt,
    FindLinksOpt,
    JsonOpt,
    WaitOpt,
    app,
    complete_choices,
    complete_envs,
    emit_json,
)


@app.command("list", cls=Command)
def list_cmd(as_json: JsonOpt = False) -> None:
    """List the environments kboot made, with backend and health.

    Example: kboot list --json
    """
    from bootstrap.cli.render import render_envs
    from bootstrap.envs.manage import list_envs

    envs = list_envs(os.environ)
    if as_json:
        emit_json([e.to_dict() for e in envs])
    else:
        render_envs(envs)


@app.command(cls=Command)
def check(
    envs: Annotated[
        list[str],
        typer.Argument(
            metavar="ENV",
            autocompletion=complete_envs,
            help="Environment names or paths; several are checked in turn.",
            show_default=False,
        ),
    ],
    allow_cpu: AllowCpuOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the smoke test of environments; exit 1 when one no longer matches its profile
    (or, built from a lock, holds other packages than the lock's); with several, every one
    is checked and the exit code is the worst.

    Examples: kboot check jax-cpu;  kboot check numpy jax-cpu --json
    """
    from bootstrap.cli.render import render_check, render_error
    from bootstrap.envs.manage import check_envs

    items = check_envs(envs, os.environ, allow_cpu=allow_cpu)
    if len(items) == 1 and items[0].error is not None:
        raise items[0].error  # one ENV: its error, as every command reports one
    if as_json:
        emit_json(items[0].to_dict() if len(items) == 1 else [i.to_dict() for i in items])
    else:
        for item in items:
            if item.result is not None:
                render_check(item.result)
            else:
                assert item.error is not None
                render_error(item.ref, item.error)
    code = max(item.exit_code for item in items)
    if code:
        raise typer.Exit(code)


@app.command(cls=Command)
def remove(
    env: Annotated[
        str,
        typer.Argument(
            metavar="ENV", autocompletion=complete_envs, help="Environment name or path."
        ),
    ],
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Delete an environment kboot made (anything else is refused); files you added to its
    folder stay where they are.

    Removing what is not there is not an error: it says "nothing to remove" and exits 0,
    so scripts can run it twice.

    Example: kboot remove jax-cpu
    """
    from bootstrap.cli.render import ConsoleReporter
    from bootstrap.envs.manage import remove_env

    result = remove_env(env, os.environ, wait=wait, reporter=ConsoleReporter())
    if as_json:
        emit_json(result.to_dict())
        return
    if result.nothing is not None:
        typer.echo(f"nothing to remove: {result.nothing}")
        return
    typer.echo(f"removed {result.name} ({result.path})")
    if result.kept:
        typer.echo(f"kept your files in {result.path}: {', '.join(result.kept)}")
    if result.keras_json_kept:
        typer.echo(f"left {result.keras_json_kept} as it is (it is your user-wide config)")
    if result.kernel is not None:
        from bootstrap.cli.render import render_unregistered

        render_unregistered(result.kernel)


@app.command(cls=Command)
def kernel(
    env: Annotated[
        str,
        typer.Argument(
            metavar="ENV", autocompletion=complete_envs, help="Environment name or path."
        ),
    ],
    remove: Annotated[
        bool,
        typer.Option(
            "--remove",
            help="Unregister the kernel only (ipykernel stays installed; later creates no "
            "longer register it).",
        ),
    ] = False,
    installer: Annotated[
        str,
        typer.Option(
            metavar="uv|pip",
            autocompletion=complete_choices("uv", "pip"),
            help="Install ipykernel with uv (default) or the environment's pip.",
        ),
    ] = "uv",
    index_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Package index for ipykernel (default: the sources the environment was "
            "built from).",
        ),
    ] = None,
    extra_index_url: ExtraIndexUrlOpt = None,
    find_links: FindLinksOpt = None,
    offline: Annotated[
        bool,
        typer.Option(help="No network: ipykernel and its dependencies come from --find-links."),
    ] = False,
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Make a kboot environment a Jupyter kernel: install ipykernel into it (if missing) and
    register a user kernelspec kboot-ENV, shown as "Keras · ENV · FLOATX".

    The kernel runs the environment's python with its Keras config pinned (backend,
    Keras home, the profile's variables), so a KERAS_BACKEND in the shell that starts
    Jupyter, or your ~/.keras/keras.json, cannot change it. ipykernel is installed so that
    the environment's packages stay as they are. The kernelspec goes to Jupyter's data
    folder ($JUPYTER_DATA_DIR, else e.g. ~/.local/share/jupyter/kernels); a folder there
    that kboot did not make for this environment is refused and left untouched. kboot
    remove ENV unregisters it too.

    Examples: kboot kernel jax-cpu;  kboot kernel jax-cpu --remove;  kboot create numpy
    --kernel
    """
    from bootstrap.cli.render import ConsoleReporter, render_kernel
    from bootstrap.envs.kernel_setup import InstallOptions, kernel_env

    result = kernel_env(
        env,
        os.environ,
        remove=remove,
        source=InstallOptions.from_options(
            installer, index_url, extra_index_url, find_links, offline=offline, cwd=Path.cwd()
        ),
        wait=wait,
        reporter=ConsoleReporter(),
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        render_kernel(result)
