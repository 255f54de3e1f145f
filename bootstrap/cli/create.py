"""`kboot create`, `kboot lock` and `kboot download`: building environments, and the locks
and wheelhouses they install from."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core

from bootstrap.cli.base import (
    AcceleratorOpt,
    AllowCpuOpt,
    Command,
    ExtraIndexUrlOpt,
    FindLinksOpt,
    JobsOpt,
    JsonOpt,
    WaitOpt,
    app,
    complete_choices,
    complete_profiles,
    emit_json,
)
from bootstrap.system.errors import UsageError

if TYPE_CHECKING:
    from bootstrap.locks.wheelhouse import DownloadResult


@app.command(cls=Command)
def create(
    profiles: Annotated[
        list[str] | None,
        typer.Argument(
            help="One or more profiles: names (the project's, yours, the built-ins) or .toml "
            "paths; several are built concurrently. None: the project's default.",
            metavar="PROFILE",
            show_default=False,
            autocompletion=complete_profiles,
        ),
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH", help="Build the environment here instead of <kboot home>/envs/<name>."
        ),
    ] = None,
    name: Annotated[
        str | None,
        # explicit: typer 0.27 names a parameter called `name` --NAME otherwise
        typer.Option(
            "--name", metavar="NAME", help="Environment name (default: the profile's name)."
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            metavar="PATH|VERSION",
            help="Interpreter path, or a version such as 3.12 (default: discovered).",
        ),
    ] = None,
    installer: Annotated[
        str,
        typer.Option(
            metavar="uv|pip",
            autocompletion=complete_choices("uv", "pip"),
            help="uv (fast, default) or pip (the environment's own pip).",
        ),
    ] = "uv",
    scope: Annotated[
        str,
        typer.Option(
            metavar="env|user",
            autocompletion=complete_choices("env", "user"),
            help="env: keras.json inside the environment (default); "
            "user: merge into your own keras.json, with a backup.",
        ),
    ] = "env",
    index_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Package index to use instead of the profile's sources."),
    ] = None,
    extra_index_url: ExtraIndexUrlOpt = None,
    find_links: FindLinksOpt = None,
    lock: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Install exactly this lock (from `kboot lock`), hash-checked."
        ),
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Install from this folder of wheels (from `kboot download`)."
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(help="No network: only --wheelhouse (and its pylock.toml) is used."),
    ] = False,
    system_site_packages: Annotated[
        bool,
        typer.Option(help="See the base Python's packages (reuse a preinstalled CUDA build)."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Rebuild a kboot environment even when nothing changed, or when it was made "
            "from another profile (kboot's own environments only; your files in it stay)."
        ),
    ] = False,
    replace_foreign: Annotated[
        bool,
        typer.Option(
            "--replace-foreign",
            help="A --dest folder that kboot did not make is moved aside to "
            "DEST.kboot-backup-<time> (printed; kboot never deletes it) and the environment "
            "is built there. Only a folder of your own; never a home, a system folder or a "
            "mount point.",
        ),
    ] = False,
    verify: Annotated[
        bool, typer.Option(help="Run the smoke test even when the environment is unchanged.")
    ] = False,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Skip the smoke test.")] = False,
    editable: Annotated[
        bool | None,
        typer.Option(
            "--editable/--no-editable",
            "-e",
            help="Also install the project (the nearest folder with a pyproject.toml) into "
            "the environment, editable, as `pip install -e .` would; later creates keep it "
            "(--no-editable drops it).",
            show_default=False,
        ),
    ] = None,
    kernel: Annotated[
        bool,
        typer.Option(
            "--kernel",
            help="Also install ipykernel and register the environment as a Jupyter kernel "
            "(\"Keras · NAME · FLOATX\" in JupyterLab's launcher) that keeps the environment's "
            "own Keras config whatever the shell or ~/.keras say. Kept by later creates; "
            "`kboot kernel ENV --remove` drops it. Example: kboot create jax-cpu --kernel",
        ),
    ] = False,
    allow_cpu: AllowCpuOpt = False,
    accelerator: AcceleratorOpt = None,
    jobs: JobsOpt = None,
    wait: WaitOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Create (or bring up to date) environments from profiles: virtualenv, keras + backend,
    keras.json, smoke test.

    Running it again for an environment that already matches its profile changes nothing
    (`changed: false`); a changed profile updates it in place when only keras.json
    settings differ, else rebuilds it (files you added to the folder stay). An environment
    made from another profile, or a folder kboot did not make, is refused unless you say
    --force or --replace-foreign. Any of --index-url/--extra-index-url/--find-links
    replaces all the profile's own package sources. On any failure nothing half-built is
    left: a new environment is removed, one being replaced is restored, and your
    keras.json is put back.

    In a project folder (a pyproject.toml with [tool.kboot], or a kboot.toml), names are
    looked up in the project first, and no PROFILE builds the project's default.

    Examples: kboot create jax-cpu;  kboot create numpy jax-cpu --jobs 2;  kboot create -e
    """
    from bootstrap.cli.render import ConsoleReporter, render_batch, render_create
    from bootstrap.envs.create import create_environment
    from bootstrap.fleet.batch import create_many, exit_code, plan_jobs
    from bootstrap.profiles.model import Sources

    cwd = Path.cwd()
    jobs_planned = plan_jobs(
        profiles or [],
        {
            "dest": dest,
            "name": name,
            "python": python,
            "installer": installer,
            "scope": scope,
            "system_site_packages": system_site_packages,
            "force": force,
            "replace_other_profile": force,
            "replace_foreign": replace_foreign,
            "smoke": not no_smoke,
            "allow_cpu": allow_cpu,
            "sources": Sources.from_options(index_url, extra_index_url, find_links, cwd=cwd),
            # paths on the command line are relative to the current folder
            "lock": lock.expanduser().absolute() if lock else None,
            "wheelhouse": wheelhouse.expanduser().absolute() if wheelhouse else None,
            "offline": offline,
            "verify": verify,
            "wait": wait,
            "accelerator": accelerator,
            "kernel": kernel,
        },
        editable=editable,
        cwd=cwd,
        environ=os.environ,
    )
    if len(jobs_planned) == 1:
        ((_, make_request),) = jobs_planned
        result = create_environment(make_request(), reporter=ConsoleReporter())
        if as_json:
            emit_json(result.to_dict())
        else:
            render_create(result)
        return
    items = create_many(
        jobs_planned,
        reporter_for=lambda label: ConsoleReporter(prefix=label),
        workers=jobs,
    )
    if as_json:
        emit_json([item.to_dict() for item in items])
    else:
        render_batch(items)
    code = exit_code(items)
    if code:
        raise typer.Exit(code)


PythonVersionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--python-version",
        metavar="X.Y",
        help="Target Python X.Y; repeat it for several (default: the one kboot picks).",
    ),
]
PlatformsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--platform",
        metavar="PLATFORM",
        help="Target platform as uv names it, e.g. x86_64-unknown-linux-gnu or "
        "aarch64-apple-darwin; repeat it for several (default: this machine).",
    ),
]


@app.command("lock", cls=Command)
def lock_cmd(
    ref: Annotated[
        str | None,
        typer.Argument(
            metavar="PROFILE|MANIFEST",
            autocompletion=complete_profiles,
            help="Profile name or .toml path, or a sync manifest (locks every entry).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE|DIR|-",
            help="Write the lock here (default: pylock.PROFILE.toml in this folder; - for "
            "stdout). For a manifest: the folder for entries without a 'lock' key (default: "
            "locks/ beside the manifest).",
        ),
    ] = None,
    python_version: PythonVersionsOpt = None,
    platform: PlatformsOpt = None,
    accelerator: AcceleratorOpt = None,
    base_packages: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="`pip freeze` of the base Python the environment will sit on "
            "(--system-site-packages, e.g. a GPU node's CUDA stack): lock only what it lacks.",
        ),
    ] = None,
    convert: Annotated[
        Path | None,
        typer.Option(
            metavar="OLD",
            help="Make an older kboot lock (`# kboot-lock:` first line) a pylock.toml with "
            "the same pins, beside it (or at -o FILE).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve to exact versions with hashes, into a standard pylock.toml (PEP 751).

    Writes pylock.PROFILE.toml (a CPU or CUDA build of a profile with an accelerator
    choice is named in it: pylock.jax-cuda12.toml). `kboot create PROFILE --lock FILE`
    installs exactly it and refuses a lock that was not made for its Python and platform;
    uv (`uv pip sync FILE`) and pip 26.1 or newer (`pip install -r FILE`) install it as
    well. Several --python-version/--platform give one lock for a mixed lab (every
    combination); each machine installs its own share of it.

    Example: kboot lock numpy --platform x86_64-unknown-linux-gnu --platform
    aarch64-apple-darwin
    """
    from bootstrap.fleet.targets import convert as convert_lock
    from bootstrap.fleet.targets import is_manifest, lock_manifest, lock_profile

    if convert is not None:
        if ref is not None or python_version or platform or accelerator or base_packages:
            raise UsageError(
                "--convert takes the old lock alone: its profile, targets and pins are kept",
                hint=f"kboot lock --convert {convert}",
            )
        written = output.expanduser().absolute() if output else None
        result = convert_lock(convert.expanduser().absolute(), written)
        if as_json:
            emit_json(result.to_dict())
        else:
            typer.echo(
                f"converted {convert}: {len(result.lock.pins)} packages for "
                f"{result.lock.describe_targets()} -> {result.path}"
            )
        return
    if ref is None:
        raise UsageError(
            "kboot lock needs a PROFILE or MANIFEST (or --convert OLD)",
            hint="kboot lock numpy",
        )
    if is_manifest(ref):
        manifest = Path(ref).expanduser().absolute()
        folder = output.expanduser().absolute() if output else None
        locked = lock_manifest(manifest, pythons=python_version, platforms=platform, folder=folder)
        if as_json:
            emit_json([item.to_dict() for item in locked])
            return
        for item in locked:
            lock = item.result.lock
            typer.echo(
                f"locked {item.name}: {len(lock.pins)} packages for {lock.describe_targets()} "
                f"-> {item.result.path}"
            )
            if not item.named_in_manifest:
                relative = os.path.relpath(item.result.path or "", manifest.parent)
                typer.echo(f'  add to its [[env]] so that sync uses it: lock = "{relative}"')
        return
    to_stdout = output == Path("-")
    result = lock_profile(
        ref,
        pythons=python_version,
        platforms=platform,
        accelerator=accelerator,
        base_packages=base_packages.expanduser().absolute() if base_packages else None,
        output=output if to_stdout or output is None else output.expanduser().absolute(),
    )
    if as_json:
        emit_json(result.to_dict())
    elif to_stdout:
        sys.stdout.write(result.text)
    else:
        shown = os.path.relpath(result.path) if output is None and result.path else output
        typer.echo(
            f"locked {result.lock.profile}: {len(result.lock.pins)} packages for "
            f"{result.lock.describe_targets()} -> {shown}"
        )


@app.command(cls=Command)
def download(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE|MANIFEST",
            autocompletion=complete_profiles,
            help="Profile name or .toml path, or a sync manifest (fills every entry's wheelhouse).",
        ),
    ],
    dest: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="The wheelhouse folder to fill (for a profile)."),
    ] = None,
    lock: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Download exactly this lock (default: resolve now)."),
    ] = None,
    python_version: PythonVersionsOpt = None,
    platform: PlatformsOpt = None,
    accelerator: AcceleratorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch every wheel PROFILE needs into DEST, with its pylock.toml, for offline machines.

    With --lock, for each of the lock's targets (or those you name). Then, with no
    network: kboot create PROFILE --offline --wheelhouse DEST. For a MANIFEST, each
    entry's `wheelhouse` from the lock its `lock` names (made by kboot lock MANIFEST);
    then, with no network: kboot sync MANIFEST

    The wheelhouse's pylock.toml names its files by path: `uv pip sync DEST/pylock.toml`
    and `pip install -r DEST/pylock.toml` install it offline too.

    Example: kboot download numpy --lock pylock.numpy.toml --dest wheelhouse
    """
    from bootstrap.cli.render import ConsoleReporter
    from bootstrap.fleet.targets import download_manifest, download_profile, is_manifest

    if is_manifest(ref):
        options = (("--dest", dest), ("--lock", lock), ("--accelerator", accelerator))
        given = [flag for flag, value in options if value]
        if given:
            raise UsageError(
                f"{' and '.join(given)} cannot go with a manifest: its entries name their "
                "wheelhouse, lock and accelerator",
                hint=f"kboot download {ref}",
            )
        manifest = Path(ref).expanduser().absolute()
        done = download_manifest(
            manifest,
            pythons=python_version,
            platforms=platform,
            reporter_for=lambda label: ConsoleReporter(prefix=label),
        )
        if as_json:
            emit_json([item.to_dict() for item in done])
            return
        for item in done:
            if item.result is None:
                typer.echo(f"{item.name}: no wheelhouse in the manifest, nothing to download")
            elif item.shared_with is not None:
                typer.echo(f"{item.name}: shares {item.result.wheelhouse} with {item.shared_with}")
            else:
                source = f"the lock {item.lock}" if item.lock else "a lock resolved now"
                typer.echo(f"{item.name}: {_downloaded(item.result)}, from {source}")
        typer.echo(f"offline: kboot sync {manifest}")
        return
    if dest is None:
        raise UsageError(
            "kboot download PROFILE needs --dest DIR, the wheelhouse folder to fill",
            hint=f"kboot download {ref} --dest wheelhouse",
        )
    result = download_profile(
        ref,
        dest=dest.expanduser().absolute(),
        pythons=python_version,
        platforms=platform,
        lock=lock.expanduser().absolute() if lock else None,
        accelerator=accelerator,
        reporter=ConsoleReporter(),
    )
    if as_json:
        emit_json(result.to_dict())
        return
    typer.echo(_downloaded(result))
    pythons = sorted({t.python for t in result.targets})
    python = f" --python {pythons[0]}" if len(pythons) == 1 else " --python X.Y"
    typer.echo(
        f"offline: kboot create {result.profile}{python} --offline --wheelhouse {result.wheelhouse}"
    )


def _downloaded(result: DownloadResult) -> str:
    targets = ", ".join(str(t) for t in result.targets)
    return (
        f"{len(result.files)} wheels ({result.bytes / 1e6:.1f} MB) for {targets} in "
        f"{result.wheelhouse}"
    )
