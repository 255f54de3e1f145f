"""The typer CLI: parse options, call one core function, render its result.

No business logic here. Errors are KbootError subclasses, caught once in
`main()`, printed as one message on stderr with the documented exit code.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bootstrap import __version__
from bootstrap.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, KbootError, UsageError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the operation failed (install, smoke test, I/O); "
    "2 bad usage or a bad profile; 130 interrupted (Ctrl-C), everything rolled back."
)

app = typer.Typer(
    name="kboot",
    help="Create verified Keras environments from declarative profiles.\n\n"
    "Example: kboot create numpy   (virtualenv + backend + keras.json + smoke test)\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    help="Show or safely edit a keras.json (validate, merge, atomic write, backup).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
AllowCpuOpt = Annotated[
    bool, typer.Option(help="Let a GPU profile pass when the backend sees no GPU.")
]
AcceleratorOpt = Annotated[
    str | None,
    typer.Option(
        metavar="auto|cpu|cuda|cuda-12|cuda-13",
        help="Which build of TensorFlow, JAX or PyTorch: auto reads the NVIDIA driver "
        "(default for the tf, jax and torch profiles); cuda picks the newest CUDA the driver "
        "runs. Default: the profile's accelerator.",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        min=0,
        help="Wait this long for another kboot working on the same environment "
        "(cron and Ansible overlapping) instead of failing at once.",
    ),
]
JobsOpt = Annotated[
    int | None, typer.Option(min=1, metavar="N", help="How many environments to build at once.")
]


def _emit_json(data: Any) -> None:
    from bootstrap.redaction import redact

    # kboot's results carry no credentials; this catches any that an error message quotes
    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kboot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Log every command run; tracebacks on errors.")
    ] = False,
) -> None:
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="kboot: %(message)s", stream=sys.stderr)


@app.command()
def create(
    profiles: Annotated[
        list[str],
        typer.Argument(
            help="One or more profiles: built-in names, names in your profile folder, "
            "or .toml paths. Several are built concurrently.",
            metavar="PROFILE",
        ),
    ],
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
            metavar="uv|pip", help="uv (fast, default) or pip (the environment's own pip)."
        ),
    ] = "uv",
    scope: Annotated[
        str,
        typer.Option(
            metavar="env|user",
            help="env: keras.json inside the environment (default); "
            "user: merge into your own keras.json, with a backup.",
        ),
    ] = "env",
    index_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Package index to use instead of the profile's sources."),
    ] = None,
    extra_index_url: Annotated[
        list[str] | None, typer.Option(metavar="URL", help="Extra package index (repeatable).")
    ] = None,
    find_links: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH|URL", help="Local wheel folder or URL (repeatable)."),
    ] = None,
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
        typer.Option(help="No network: only --wheelhouse (and its kboot-lock.txt) is used."),
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
            "is built there.",
        ),
    ] = False,
    verify: Annotated[
        bool, typer.Option(help="Run the smoke test even when the environment is unchanged.")
    ] = False,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Skip the smoke test.")] = False,
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
    """
    from bootstrap.batch import create_many, exit_code
    from bootstrap.create import create_environment
    from bootstrap.installers import INSTALLERS
    from bootstrap.paths import builtin_profiles_dir, user_profiles_dir
    from bootstrap.profiles import Sources, local_or_url, resolve_profile
    from bootstrap.render import ConsoleReporter, render_batch, render_create
    from bootstrap.target import CreateRequest

    if installer not in INSTALLERS:
        raise UsageError(f"--installer {installer!r}: expected one of {', '.join(INSTALLERS)}")
    repeated = sorted({ref for ref in profiles if profiles.count(ref) > 1})
    if repeated:
        raise UsageError(f"profile {', '.join(repeated)} given more than once")
    if len(profiles) > 1 and (dest or name):
        raise UsageError("--dest and --name name one environment: give one profile with them")
    sources = None
    if index_url or extra_index_url or find_links:
        links = tuple(local_or_url(link, Path.cwd()) for link in find_links or ())
        sources = Sources(index_url, tuple(extra_index_url or ()), links)

    def request_for(ref: str) -> CreateRequest:
        return CreateRequest(
            profile=resolve_profile(ref, user_profiles_dir(), builtin_profiles_dir()),
            dest=dest,
            name=name,
            python=python,
            installer=installer,
            scope=scope,
            system_site_packages=system_site_packages,
            force=force,
            replace_other_profile=force,
            replace_foreign=replace_foreign,
            smoke=not no_smoke,
            allow_cpu=allow_cpu,
            sources=sources,
            # paths on the command line are relative to the current folder
            lock=lock.expanduser().absolute() if lock else None,
            wheelhouse=wheelhouse.expanduser().absolute() if wheelhouse else None,
            offline=offline,
            verify=verify,
            wait=wait,
            accelerator=accelerator,
        )

    if len(profiles) == 1:
        result = create_environment(request_for(profiles[0]), reporter=ConsoleReporter())
        if as_json:
            _emit_json(result.to_dict())
        else:
            render_create(result)
        return
    items = create_many(
        [(ref, lambda ref=ref: request_for(ref)) for ref in profiles],  # type: ignore[misc]
        reporter_for=lambda label: ConsoleReporter(prefix=label),
        workers=jobs,
    )
    if as_json:
        _emit_json([item.to_dict() for item in items])
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


@app.command("lock")
def lock_cmd(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE|MANIFEST",
            help="Profile name or .toml path, or a sync manifest (locks every entry).",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE|DIR",
            help="Write the lock here (default: stdout). For a manifest: the folder for "
            "entries without a 'lock' key (default: locks/ beside the manifest).",
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
    as_json: JsonOpt = False,
) -> None:
    """Resolve to exact versions with hashes, for one or several Pythons and platforms.

    The lock is a pip `--require-hashes` requirements file; `kboot create PROFILE --lock
    FILE` installs exactly it and refuses a lock that was not made for its Python and
    platform. Several --python-version/--platform give one lock for a mixed lab (every
    combination); each machine installs its own share of it.

    Example: kboot lock numpy --platform x86_64-unknown-linux-gnu --platform
    aarch64-apple-darwin -o numpy.lock
    """
    from bootstrap.lockfile import make_lock, parse_freeze
    from bootstrap.paths import builtin_profiles_dir, user_profiles_dir
    from bootstrap.profiles import resolve_profile
    from bootstrap.targets import is_manifest, lock_manifest, targets_for, with_accelerator

    if is_manifest(ref):
        manifest = Path(ref).expanduser().absolute()
        folder = output.expanduser().absolute() if output else None
        locked = lock_manifest(manifest, pythons=python_version, platforms=platform, folder=folder)
        if as_json:
            _emit_json([item.to_dict() for item in locked])
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
    loaded = resolve_profile(ref, user_profiles_dir(), builtin_profiles_dir())
    targets = targets_for(loaded, python_version, platform)
    base = None
    if base_packages is not None:
        path = base_packages.expanduser().absolute()
        try:
            base = parse_freeze(path.read_text(encoding="utf-8"), path)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --base-packages {path}: {exc}") from None
    result = make_lock(
        with_accelerator(loaded, accelerator, targets),
        targets=targets,
        output=output.expanduser().absolute() if output else None,
        base=base,
    )
    if as_json:
        _emit_json(result.to_dict())
    elif output is None:
        sys.stdout.write(result.text)
    else:
        typer.echo(
            f"locked {loaded.name}: {len(result.lock.pins)} packages for "
            f"{result.lock.describe_targets()} -> {output}"
        )


@app.command()
def download(
    profile: Annotated[str, typer.Argument(metavar="PROFILE", help="Profile name or .toml path.")],
    dest: Annotated[Path, typer.Option(metavar="DIR", help="The wheelhouse folder to fill.")],
    lock: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Download exactly this lock (default: resolve now)."),
    ] = None,
    python_version: PythonVersionsOpt = None,
    platform: PlatformsOpt = None,
    accelerator: AcceleratorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch every wheel PROFILE needs into DEST, with a kboot-lock.txt, for offline machines.

    With --lock, for each of the lock's targets (or those you name). Then, with no
    network: kboot create PROFILE --offline --wheelhouse DEST
    """
    from bootstrap.lockfile import read_lock
    from bootstrap.paths import builtin_profiles_dir, user_profiles_dir
    from bootstrap.profiles import resolve_profile
    from bootstrap.render import ConsoleReporter
    from bootstrap.targets import targets_for, with_accelerator
    from bootstrap.wheelhouse import download as download_wheels

    loaded = resolve_profile(profile, user_profiles_dir(), builtin_profiles_dir())
    if lock is None:
        wanted = targets_for(loaded, python_version, platform)
    else:  # the lock's targets, or those of them that the options name
        wanted = [
            target
            for target in read_lock(lock.expanduser().absolute()).targets
            if (not python_version or target.python in python_version)
            and (not platform or target.platform in platform)
        ]
        if not wanted:
            raise UsageError(
                f"--lock {lock} has no target for the --python-version/--platform given",
                hint="leave them out to download for every target of the lock",
            )
    result = download_wheels(
        with_accelerator(loaded, accelerator, wanted),
        dest=dest.expanduser().absolute(),
        targets=wanted,
        lock_path=lock.expanduser().absolute() if lock else None,
        reporter=ConsoleReporter(),
    )
    if as_json:
        _emit_json(result.to_dict())
        return
    targets = ", ".join(str(t) for t in result.targets)
    typer.echo(f"{len(result.files)} wheels ({result.bytes / 1e6:.1f} MB) for {targets} in "
               f"{result.wheelhouse}")  # fmt: skip
    pythons = sorted({t.python for t in result.targets})
    python = f" --python {pythons[0]}" if len(pythons) == 1 else " --python X.Y"
    typer.echo(
        f"offline: kboot create {loaded.name}{python} --offline --wheelhouse {result.wheelhouse}"
    )


@app.command()
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
    """
    from bootstrap.render import ConsoleReporter, render_sync
    from bootstrap.sync import sync_manifest

    result = sync_manifest(
        manifest,
        check_only=check_only,
        prune=prune,
        verify=verify,
        workers=jobs,
        reporter_for=lambda label: ConsoleReporter(prefix=label),
        wait=wait,
    )
    if as_json:
        _emit_json(result.to_dict())
    else:
        render_sync(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("profiles")
def profiles_cmd(as_json: JsonOpt = False) -> None:
    """List the built-in profiles and yours (yours shadow built-ins of the same name)."""
    from bootstrap.paths import builtin_profiles_dir, user_profiles_dir
    from bootstrap.profiles import list_profiles
    from bootstrap.render import render_profiles

    user_dir = user_profiles_dir()
    entries = list_profiles(user_dir, builtin_profiles_dir())
    if as_json:
        _emit_json([e.to_dict() for e in entries])
    else:
        render_profiles(entries, user_dir)


@app.command()
def show(
    profile: Annotated[str, typer.Argument(metavar="PROFILE", help="Profile name or .toml path.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one profile's validated values and where it comes from."""
    from bootstrap.paths import builtin_profiles_dir, user_profiles_dir
    from bootstrap.profiles import resolve_profile
    from bootstrap.render import render_profile

    loaded = resolve_profile(profile, user_profiles_dir(), builtin_profiles_dir())
    if as_json:
        _emit_json(loaded.to_dict())
    else:
        render_profile(loaded)


@app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """List the environments kboot made, with backend and health."""
    from bootstrap.envs import list_envs
    from bootstrap.render import render_envs

    envs = list_envs(os.environ)
    if as_json:
        _emit_json([e.to_dict() for e in envs])
    else:
        render_envs(envs)


@app.command()
def check(
    env: Annotated[str, typer.Argument(metavar="ENV", help="Environment name or path.")],
    allow_cpu: AllowCpuOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the smoke test of an environment; exit 1 when it no longer matches its profile."""
    from bootstrap.envs import check_env
    from bootstrap.render import render_check

    result = check_env(env, os.environ, allow_cpu=allow_cpu)
    if as_json:
        _emit_json(result.to_dict())
    else:
        render_check(result)
    if not result.smoke.ok:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def remove(
    env: Annotated[str, typer.Argument(metavar="ENV", help="Environment name or path.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete an environment kboot made (anything else is refused); files you added to its
    folder stay where they are."""
    from bootstrap.envs import remove_env

    result = remove_env(env, os.environ)
    if as_json:
        _emit_json(result.to_dict())
        return
    typer.echo(f"removed {result.name} ({result.path})")
    if result.kept:
        typer.echo(f"kept your files in {result.path}: {', '.join(result.kept)}")
    if result.keras_json_kept:
        typer.echo(f"left {result.keras_json_kept} as it is (it is your user-wide config)")


@app.command()
def doctor(
    env: Annotated[
        str | None,
        typer.Argument(metavar="[ENV]", help="A kboot environment (name or path)."),
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
    from bootstrap.doctor import examine, target_python
    from bootstrap.render import render_doctor

    result = examine(target_python(env, python, os.environ), os.environ, do_import=do_import)
    if as_json:
        _emit_json(result.to_dict())
    else:
        render_doctor(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


KerasHomeOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Keras home to use instead of $KERAS_HOME or ~/.keras."),
]


def _keras_home(option: Path | None) -> tuple[Path, str]:
    from bootstrap.paths import user_keras_home

    if option is not None:
        return option.expanduser().absolute(), "--keras-home"
    source = "KERAS_HOME" if os.environ.get("KERAS_HOME") else "default"
    return Path(user_keras_home()), source


@config_app.command("show")
def config_show(keras_home: KerasHomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the effective keras.json, its values, and what overrides them."""
    from bootstrap.keras_config import describe_config
    from bootstrap.render import render_config

    home, source = _keras_home(keras_home)
    view = describe_config(home, source, os.environ)
    if as_json:
        _emit_json(view.to_dict())
    else:
        render_config(view)


@config_app.command("set")
def config_set(
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE",
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
    """Set keys in keras.json: validated, merged (other keys kept), atomic, with a .bak backup."""
    from bootstrap.configure import set_keras_config

    home, _ = _keras_home(keras_home)
    result = set_keras_config(home, assignments, python=python)
    if as_json:
        _emit_json(result.to_dict())
        return
    state = "updated" if result.changed else "already set, unchanged:"
    typer.echo(f"{state} {result.path}: " + ", ".join(f"{k}={v}" for k, v in result.values.items()))
    if result.backup:
        typer.echo(f"previous version kept as {result.backup}")
    if result.backend_checked_with:
        typer.echo(f"backend module checked with {result.backend_checked_with}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


def _cli_exception_types() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """Usage-error and abort classes: recent typer bundles its own click, older typer uses click."""
    usage: list[type[Exception]] = []
    aborts: list[type[BaseException]] = [typer.Abort, KeyboardInterrupt]
    try:
        from typer._click import exceptions as bundled
    except ImportError:
        pass
    else:
        usage.append(bundled.ClickException)
    try:
        import click
    except ImportError:  # typer with its bundled click does not install click
        pass
    else:
        usage.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(usage), tuple(aborts)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turn every KbootError into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("KBOOT_DEBUG") == "1"
    usage_errors, aborts = _cli_exception_types()
    from bootstrap import interrupts

    # SIGINT, SIGTERM (kill, CI cancel, timeouts) and SIGHUP (a closed terminal) stop every
    # child at once and roll back like Ctrl-C
    interrupts.install_handlers()
    command = typer.main.get_command(app)
    as_json = "--json" in args

    def fail(exc: KbootError) -> NoReturn:
        if debug:
            import traceback

            traceback.print_exc()
        _print_error(exc, debug=debug)
        if as_json:  # scripts parsing stdout get a document, not silence
            _emit_json(_error_document(exc.message, type(exc).__name__, exc.hint, exc.exit_code))
        sys.exit(exc.exit_code)

    try:
        code = command.main(args=args, prog_name="kboot", standalone_mode=False)
    except KbootError as exc:
        fail(exc)
    except usage_errors as exc:
        exc.show()  # type: ignore[attr-defined]  # both ClickException flavours have it
        exit_code = getattr(exc, "exit_code", EXIT_USAGE)
        exit_code = (
            EXIT_USAGE if exit_code in (0, 2) and type(exc).__name__ != "FileError" else exit_code
        )
        if as_json:
            message = exc.format_message()  # type: ignore[attr-defined]
            _emit_json(_error_document(message, "UsageError", "see --help", exit_code))
        sys.exit(exit_code)
    except aborts:
        sys.stderr.write("kboot: interrupted\n")
        if as_json:
            _emit_json(_error_document("interrupted", "Interrupted", None, EXIT_INTERRUPTED))
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:  # the machine said no: a full disk, a read-only folder, permissions
        where = f" ({exc.filename})" if exc.filename else ""
        fail(
            KbootError(
                f"{exc.strerror or exc}{where}",
                hint="free some space or fix the permissions, then run it again; kboot rolled "
                "back what it had started",
            )
        )
    except Exception as exc:  # a bug in kboot: one line, and the traceback with --debug
        if debug:
            raise
        from bootstrap.redaction import redact

        sys.stderr.write(
            f"kboot: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
            "  hint: rerun with --debug for the traceback, and please report it\n"
        )
        if as_json:
            kind = f"internal error: {type(exc).__name__}"
            _emit_json(_error_document(str(exc), kind, "please report it", EXIT_FAILED))
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else 0)


def _error_document(message: str, kind: str, hint: str | None, exit_code: int) -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind, "hint": hint, "exit_code": exit_code}


def _print_error(exc: KbootError, *, debug: bool) -> None:
    from bootstrap.errors import CommandError, InstallError
    from bootstrap.redaction import redact
    from bootstrap.render import error_console

    exc.message = redact(exc.message)
    exc.hint = redact(exc.hint) if exc.hint else exc.hint
    exc.details = redact(exc.details) if exc.details else exc.details
    console = error_console()
    # an installer's output tail always helps; a Python traceback only when asked for
    if exc.details and (debug or isinstance(exc, InstallError | CommandError)):
        console.print(exc.details, markup=False, highlight=False, style="dim")
    elif exc.details:
        exc.hint = (exc.hint + "; " if exc.hint else "") + "--debug shows the traceback"
    console.print(f"kboot: error: {exc.message}", markup=False, highlight=False, style="bold red")
    if exc.hint:
        console.print(f"  hint: {exc.hint}", markup=False, highlight=False)
