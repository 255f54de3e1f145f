"""The typer CLI: parse options, call one core function, render its result.

No business logic here. Errors are KbootError subclasses, caught once in
`main()`, printed as one message on stderr with the documented exit code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core

from bootstrap import __version__
from bootstrap.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, KbootError, UsageError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the operation failed (install, smoke test, I/O); "
    "2 bad usage or a bad profile; 130 interrupted (Ctrl-C), everything rolled back."
)

# typer's help shows the Python type after each argument (`PROFILE <str>`), braces
# around required ones in the usage line (`{PROFILE}`) and click's ranges (`[x>=1]`):
# noise to a reader. The help text is cleaned of them once it is formatted.
_TYPE_AFTER_NAME = re.compile(r" <(?:str|int|float|path|bool|list\[(?:str|path|int)\])>")
_BRACED_METAVAR = re.compile(r"\{([A-Z][A-Z0-9_|=.\[\]]*)\}")
_RANGE = re.compile(r"\s*\[(?:x[<>]=?-?[\d.]+|-?[\d.]+<=?x(?:<=?-?[\d.]+)?)\]")


def clean_help(text: str) -> str:
    lines = []
    for line in text.splitlines():
        # the type gives way to spaces: the help column stays where click put it
        typeless = _TYPE_AFTER_NAME.sub(lambda found: " " * len(found.group()), line)
        cleaned = _RANGE.sub("", _BRACED_METAVAR.sub(r"\1", typeless))
        if cleaned.strip() or not line.strip():  # drop a line that held only a range
            lines.append(cleaned.rstrip())
    return "\n".join(lines)


class _Command(typer.core.TyperCommand):
    def get_help(self, ctx: Any) -> str:  # click's Context (typer >= 0.28 vendors click)
        return clean_help(super().get_help(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """An optional argument that takes several values is `[PROFILE]...`, whichever
        typer renders it (0.28 drops the dots)."""
        several = {
            f"[{param.metavar}]"
            for param in self.get_params(ctx)
            if getattr(param, "nargs", 1) == -1 and not param.required and param.metavar
        }
        return [f"{piece}..." if piece in several else piece
                for piece in super().collect_usage_pieces(ctx)]  # fmt: skip


class _Group(typer.core.TyperGroup):
    def get_help(self, ctx: Any) -> str:  # click's Context (typer >= 0.28 vendors click)
        return clean_help(super().get_help(ctx))


app = typer.Typer(
    name="kboot",
    cls=_Group,
    help="Create verified Keras environments from declarative profiles.\n\n"
    "Example: kboot create numpy   (virtualenv + backend + keras.json + smoke test)\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    cls=_Group,
    help="Show or safely edit a keras.json (validate, merge, atomic write, backup).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


def _complete_profiles(incomplete: str) -> list[str]:
    """Shell completion: the profile names this folder sees."""
    from bootstrap.project import catalog

    try:
        return [name for name in catalog().names() if name.startswith(incomplete)]
    except KbootError:
        return []


def _complete_envs(incomplete: str) -> list[str]:
    """Shell completion: the environments in kboot's home."""
    from bootstrap.paths import envs_dir

    try:
        found = sorted(p.name for p in envs_dir().iterdir() if (p / "kboot-env.json").is_file())
    except OSError:
        return []
    return [name for name in found if name.startswith(incomplete)]


ExtraIndexUrlOpt = Annotated[
    list[str] | None, typer.Option(metavar="URL", help="Extra package index (repeatable).")
]
FindLinksOpt = Annotated[
    list[str] | None,
    typer.Option(metavar="PATH|URL", help="Local wheel folder or URL (repeatable)."),
]
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


@app.command(cls=_Command)
def create(
    profiles: Annotated[
        list[str] | None,
        typer.Argument(
            help="One or more profiles: names (the project's, yours, the built-ins) or .toml "
            "paths; several are built concurrently. None: the project's default.",
            metavar="PROFILE",
            show_default=False,
            autocompletion=_complete_profiles,
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
    from bootstrap.batch import create_many, exit_code
    from bootstrap.create import create_environment
    from bootstrap.installers import INSTALLERS
    from bootstrap.profiles import Sources, local_or_url
    from bootstrap.project import catalog, editable_root, with_editable
    from bootstrap.render import ConsoleReporter, render_batch, render_create
    from bootstrap.target import CreateRequest

    profiles_here = catalog()
    if not profiles:
        profiles = [profiles_here.default()]
    project_root = editable_root(profiles_here.project, Path.cwd()) if editable else None

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
        profile = profiles_here.resolve(ref)
        if project_root is not None:
            profile = with_editable(profile, project_root)
        return CreateRequest(
            profile=profile,
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
            kernel=kernel,
            keep_editable=editable is None,
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


@app.command("lock", cls=_Command)
def lock_cmd(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE|MANIFEST",
            autocompletion=_complete_profiles,
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
    from bootstrap.project import catalog
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
    loaded = catalog().resolve(ref)
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


@app.command(cls=_Command)
def download(
    profile: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE", autocompletion=_complete_profiles, help="Profile name or .toml path."
        ),
    ],
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

    Example: kboot download numpy --lock numpy.lock --dest wheelhouse
    """
    from bootstrap.lockfile import read_lock
    from bootstrap.project import catalog
    from bootstrap.render import ConsoleReporter
    from bootstrap.targets import targets_for, with_accelerator
    from bootstrap.wheelhouse import download as download_wheels

    loaded = catalog().resolve(profile)
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


@app.command(cls=_Command)
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

    Example: kboot sync lab.toml --check   (exit 1 when the machine differs)
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


class _RunCommand(_Command):
    """`kboot run PROFILE... -- COMMAND`: what follows the first `--` is the command, as given."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta["kboot_command"] = args[split + 1 :]
            args = args[:split]
        elif not {"-h", "--help"} & set(args):
            from bootstrap.run import EXAMPLE

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
            autocompletion=_complete_profiles,
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
            help="How many environments to build and run in at once (default: up to 4). "
            "With 1 the output is shown live; runs that share the CPU take longer.",
        ),
    ] = None,
    logs: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Keep each run's output (ENV.log) here; a folder that holds anything "
            "already gets a new subfolder (default: a new temporary folder; printed).",
        ),
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option(
            "--markdown", help="Print the table as markdown, e.g. >> $GITHUB_STEP_SUMMARY."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run one command in several environments, side by side: Keras 3's "one script on
    every backend", checked in one call.

    Missing environments are created (as kboot create does); existing ones are used as
    they are. COMMAND runs in the current folder with the environment's bin first on PATH
    and VIRTUAL_ENV set, as `uv run` does, and with the environment's own Keras config:
    KERAS_BACKEND is set to its backend even when your shell sets another (a warning says
    so). stdin is empty; the output goes to a log file per run. One table follows:
    environment, backend, exit status, wall time, peak memory, and the metrics the
    command reported: it may write one JSON object of scalar values, such as
    {"loss": 0.12}, to the file named by $KBOOT_METRICS; each key becomes a column. A
    failed run's last lines of output are shown under the table.

    Exit code: the worst run's, i.e. the highest: 0 when every run exited 0; else the
    command's own exit code, 128+N for a run killed by signal N, 127 when COMMAND was not
    found in an environment, 126 when it is not executable, 1 (or 2 for a bad profile)
    when an environment could not be created. 2 also for bad usage, 130 when interrupted:
    Ctrl-C reaches each COMMAND as in a shell; what still runs 10 s later, or at a second
    Ctrl-C, is killed.

    Examples:

    \b
      kboot run numpy jax-cpu tf-cpu torch-cpu -- python train.py
      kboot run jax-cpu torch-cpu --jobs 1 -- python -m pytest
      kboot run jax-cpu torch-cpu --markdown -- python -m pytest >> $GITHUB_STEP_SUMMARY
    """
    from bootstrap.run import run_command
    from bootstrap.run_table import RunProgress, render_run, run_markdown

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
    )
    if not (as_json or markdown):
        render_run(report)  # the table, failures under it, warnings on stderr
    else:
        if as_json:
            _emit_json(report.to_dict())
        else:
            sys.stdout.write(run_markdown(report))
        for warning in report.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command("profiles", cls=_Command)
def profiles_cmd(as_json: JsonOpt = False) -> None:
    """List the profiles a name can mean here: the project's (in a folder with a
    pyproject.toml [tool.kboot] or a kboot.toml), yours, and the built-ins, each with
    where it comes from and what it shadows.

    Example: kboot profiles --json
    """
    from bootstrap.project import catalog
    from bootstrap.render import render_profiles

    found = catalog()
    entries = found.entries()
    if as_json:
        _emit_json([e.to_dict() for e in entries])
    else:
        render_profiles(entries, found)


@app.command(cls=_Command)
def show(
    profile: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE", autocompletion=_complete_profiles, help="Profile name or .toml path."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Show one profile's validated values and where it comes from (every field of
    --json; the text is a valid profile to start your own from).

    Example: kboot show jax-cpu > ~/.config/kboot/profiles/mine.toml
    """
    from bootstrap.project import catalog
    from bootstrap.render import render_profile

    loaded = catalog().resolve(profile)
    if as_json:
        _emit_json(loaded.to_dict())
    else:
        render_profile(loaded)


@app.command("list", cls=_Command)
def list_cmd(as_json: JsonOpt = False) -> None:
    """List the environments kboot made, with backend and health.

    Example: kboot list --json
    """
    from bootstrap.envs import list_envs
    from bootstrap.render import render_envs

    envs = list_envs(os.environ)
    if as_json:
        _emit_json([e.to_dict() for e in envs])
    else:
        render_envs(envs)


@app.command(cls=_Command)
def check(
    env: Annotated[
        str,
        typer.Argument(
            metavar="ENV", autocompletion=_complete_envs, help="Environment name or path."
        ),
    ],
    allow_cpu: AllowCpuOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-run the smoke test of an environment; exit 1 when it no longer matches its profile.

    Example: kboot check jax-cpu
    """
    from bootstrap.envs import check_env
    from bootstrap.render import render_check

    result = check_env(env, os.environ, allow_cpu=allow_cpu)
    if as_json:
        _emit_json(result.to_dict())
    else:
        render_check(result)
    if not result.smoke.ok:
        raise typer.Exit(EXIT_FAILED)


@app.command(cls=_Command)
def remove(
    env: Annotated[
        str,
        typer.Argument(
            metavar="ENV", autocompletion=_complete_envs, help="Environment name or path."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Delete an environment kboot made (anything else is refused); files you added to its
    folder stay where they are.

    Example: kboot remove jax-cpu
    """
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
    if result.kernel is not None:
        from bootstrap.render import render_unregistered

        render_unregistered(result.kernel)


@app.command(cls=_Command)
def kernel(
    env: Annotated[
        str,
        typer.Argument(
            metavar="ENV", autocompletion=_complete_envs, help="Environment name or path."
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
            metavar="uv|pip", help="Install ipykernel with uv (default) or the environment's pip."
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
    from bootstrap.installers import INSTALLERS
    from bootstrap.kernel_setup import InstallOptions, kernel_env
    from bootstrap.profiles import Sources, local_or_url
    from bootstrap.render import ConsoleReporter, render_kernel

    if installer not in INSTALLERS:
        raise UsageError(f"--installer {installer!r}: expected one of {', '.join(INSTALLERS)}")
    sources = None
    if index_url or extra_index_url or find_links or offline:
        if offline and (index_url or extra_index_url):
            raise UsageError("--offline uses no index: give --find-links DIR only")
        if offline and not find_links:
            raise UsageError(
                "--offline needs --find-links DIR: a folder with wheels of ipykernel and its "
                "dependencies (pip download ipykernel -d DIR, where there is a network)"
            )
        links = tuple(local_or_url(link, Path.cwd()) for link in find_links or ())
        sources = Sources(index_url, tuple(extra_index_url or ()), links, offline=offline)
    result = kernel_env(
        env,
        os.environ,
        remove=remove,
        source=InstallOptions(installer, sources),
        wait=wait,
        reporter=ConsoleReporter(),
    )
    if as_json:
        _emit_json(result.to_dict())
    else:
        render_kernel(result)


@app.command(cls=_Command)
def doctor(
    env: Annotated[
        str | None,
        typer.Argument(
            metavar="[ENV]",
            autocompletion=_complete_envs,
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


@config_app.command("show", cls=_Command)
def config_show(keras_home: KerasHomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the effective keras.json, its values, and what overrides them; a value Keras
    would reject is flagged.

    Example: kboot config show --keras-home ~/.keras
    """
    from bootstrap.keras_config import describe_config
    from bootstrap.render import render_config

    home, source = _keras_home(keras_home)
    view = describe_config(home, source, os.environ)
    if as_json:
        _emit_json(view.to_dict())
    else:
        render_config(view)


@config_app.command("set", cls=_Command)
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
    """Set keys in keras.json: validated, merged (other keys kept), atomic, with a .bak backup.

    Example: kboot config set backend=jax floatx=float32
    """
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
    args = _debug_first(sys.argv[1:] if argv is None else argv)
    own = args[: args.index("--")] if "--" in args else args  # not a command's own args
    debug = "--debug" in own or os.environ.get("KBOOT_DEBUG") == "1"
    usage_errors, aborts = _cli_exception_types()
    from bootstrap import interrupts

    # SIGINT, SIGTERM (kill, CI cancel, timeouts) and SIGHUP (a closed terminal) stop every
    # child at once and roll back like Ctrl-C
    interrupts.install_handlers()
    command = typer.main.get_command(app)
    as_json = "--json" in own

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


def _debug_first(args: list[str]) -> list[str]:
    """`kboot create numpy --debug` as `kboot --debug create numpy`: the flag belongs to
    kboot itself, wherever it is typed (but not after `--`, where it is a command's)."""
    own = args[: args.index("--")] if "--" in args else args
    if "--debug" not in own[1:]:
        return list(args)
    where = own.index("--debug", 1) if own[0] != "--debug" else None
    if where is None:
        return list(args)
    return ["--debug", *args[:where], *args[where + 1 :]]


def _error_document(message: str, kind: str, hint: str | None, exit_code: int) -> dict[str, Any]:
    return {"ok": False, "error": message, "kind": kind, "hint": hint, "exit_code": exit_code}


def _print_error(exc: KbootError, *, debug: bool) -> None:
    from bootstrap.consoles import error_console
    from bootstrap.errors import CommandError, InstallError
    from bootstrap.redaction import redact

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
