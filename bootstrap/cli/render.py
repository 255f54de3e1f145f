"""Text rendering of core results (the CLI's only printing besides --json)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bootstrap.cli.consoles import error_console, out_console, print_table
from bootstrap.doctor.examine import DoctorResult, severity_rank
from bootstrap.envs.create import CreateResult
from bootstrap.envs.kernel_setup import KernelResult
from bootstrap.envs.manage import CheckResult, EnvSummary
from bootstrap.envs.smoke import SmokeReport
from bootstrap.fleet.batch import BatchItem
from bootstrap.fleet.sync import SyncResult
from bootstrap.install.accelerators import Choice
from bootstrap.jupyter.registry import Kernel, KernelStatus, Unregistered
from bootstrap.profiles.catalog import Catalog, ProfileEntry
from bootstrap.profiles.keras_json import ConfigView
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import KbootError
from bootstrap.system.progress import RecordingReporter


class ConsoleReporter(RecordingReporter):
    """Each step on stderr with its elapsed time: a spinner while it runs on a terminal.

    With a prefix (several builds at once) every line starts with it and there is no
    spinner, since several would fight over one line.
    """

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__()
        self.console = error_console()
        self.prefix = f"[bold]{_escape(prefix)}[/] " if prefix else ""

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        ok = False
        try:
            if self.prefix:
                with super().step(label):
                    yield
            elif self.console.is_terminal:  # a spinner and the time so far, then one line
                with _live_step(self.console, label), super().step(label):
                    yield
            else:  # piped (a log, CI): one line per step, once it is done
                with super().step(label):
                    yield
            ok = True
        finally:
            elapsed = time.monotonic() - started
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self.console.print(f"{self.prefix}{mark} {_escape(label)} [dim]({elapsed:.1f} s)[/]")

    def info(self, message: str) -> None:
        super().info(message)
        self.console.print(f"{self.prefix}[dim]{_escape(message)}[/]")

    def warn(self, message: str) -> None:
        super().warn(message)
        self.console.print(f"{self.prefix}[yellow]warning:[/] {_escape(message)}")


@contextmanager
def _live_step(console: Console, label: str) -> Iterator[None]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(_escape(label), total=None)
        yield


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _smoke_lines(smoke: SmokeReport) -> list[str]:
    devices = ", ".join(d.get("name", "?") for d in smoke.devices) or "none reported"
    reported = smoke.reported
    return [
        f"  keras {smoke.keras_version}, {reported.get('backend')} {smoke.backend_version or ''}",
        f"  floatx={reported.get('floatx')} image_data_format={reported.get('image_data_format')}"
        f" epsilon={reported.get('epsilon')} (matmul result: {reported.get('compute_dtype')})",
        f"  devices: {devices}",
    ]


def render_create(result: CreateResult) -> None:
    console = out_console()
    if result.action == "unchanged":
        state = "smoke test passed again" if result.verified else "nothing to do"
        if result.kernel is not None and result.kernel.changed:
            state = f"only its Jupyter kernel was {result.kernel.action}"
        console.print(f"{result.name} is up to date at {result.path} ({state})", markup=False)
        _kernel_lines(console, result.kernel)
        return
    console.print(f"{result.action} {result.name} at {result.path}", markup=False)
    for change in result.changes:
        console.print(f"  changed: {change}", markup=False)
    console.print(
        f"  profile {result.profile.name}, Python {result.interpreter.version}, "
        f"keras.json: {result.keras_json} (scope {result.scope})",
        markup=False,
    )
    if result.accelerator:
        choice = result.accelerator
        console.print(
            f"  build: {choice.label} ({result.profile.packages[0]}): {choice.reason}",
            markup=False,
        )
        for note in choice.notes:
            console.print(f"  note: {note}", markup=False)
    if result.smoke:
        console.print("smoke test passed:", markup=False)
        for line in _smoke_lines(result.smoke):
            console.print(line, markup=False)
    else:
        console.print("smoke test skipped (--no-smoke)", markup=False)
    bin_dir = "Scripts" if sys.platform == "win32" else "bin"
    python = shell_word(str(Path(result.path) / bin_dir / "python"))
    console.print(f"use it: {python} your_script.py", markup=False)
    _kernel_lines(console, result.kernel)


def shell_word(text: str) -> str:
    """`text` as one word a shell reads back as it is: a path with a space is pasted whole."""
    if sys.platform == "win32":
        import subprocess

        return subprocess.list2cmdline([text])
    import shlex

    return shlex.quote(text)


def _kernel_lines(console: Console, kernel: Kernel | None) -> None:
    if kernel is None:
        return
    state = {"unchanged": "up to date", "kept": "left as someone changed it"}.get(
        kernel.action, kernel.action
    )
    console.print(
        f'Jupyter kernel {kernel.name} ({state}): pick "{kernel.display_name}" in Jupyter; '
        f"kernelspec {kernel.kernelspec}",
        markup=False,
    )


def render_kernel(result: KernelResult) -> None:
    """`kboot kernel ENV [--remove]`."""
    console = out_console()
    if result.removed is not None:
        render_unregistered(result.removed)
        console.print(f"ipykernel stays installed in {result.name} ({result.path})", markup=False)
        return
    if result.kernel is None:
        console.print(f"{result.name} has no Jupyter kernel that kboot registered", markup=False)
        return
    if result.installed:
        added = ", ".join(f"{name} {version}" for name, version in sorted(result.installed.items()))
        console.print(f"installed into {result.name}: {added}", markup=False)
    _kernel_lines(console, result.kernel)
    if result.kernel.action == "kept":
        return  # what kboot would write is not what is there
    console.print(f"  runs: {' '.join(result.kernel.spec.argv)}", markup=False)
    pinned = ", ".join(f"{k}={v}" for k, v in sorted(result.kernel.spec.env.items()))
    console.print(f"  pinned: {pinned}", markup=False)


def render_unregistered(removed: Unregistered) -> None:
    """What became of an environment's kernel when it was unregistered (or why not)."""
    console = out_console()
    if removed.removed:
        console.print(
            f"unregistered the Jupyter kernel {removed.name} ({removed.kernelspec})", markup=False
        )
    if removed.note:
        name = removed.name or "of the environment"
        console.print(f"Jupyter kernel {name}: {removed.note}", markup=False)


def render_profiles(entries: Sequence[ProfileEntry], found: Catalog) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "BACKEND", "ORIGIN", "DESCRIPTION"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        origin = entry.origin + (f" (shadows {', '.join(entry.shadows)})" if entry.shadows else "")
        if entry.profile is None:
            table.add_row(entry.name, "-", origin, f"[red]invalid:[/] {_escape(entry.error or '')}")
        else:
            table.add_row(
                _escape(entry.name),
                entry.profile.backend,
                origin,
                _escape(entry.profile.description),
            )
    console = out_console()
    print_table(console, table)
    if found.project is not None:
        console.print(
            f"\nproject profiles: {found.project.file} (its environments: "
            f"{found.project.name}-<profile>"
            + (f"; default {found.project.default}" if found.project.default else "")
            + ")",
            markup=False,
        )
    missing = "" if found.user_dir.is_dir() else " (does not exist: no profiles of yours)"
    console.print(
        f"{'' if found.project else chr(10)}your profiles: {found.user_dir}{missing} "
        "(a profile there shadows a built-in of that name)",
        markup=False,
    )


def render_profile(declared: Profile, built: Profile, build: Choice | None) -> None:
    """What `create` here would build from the profile, as TOML (so `kboot show X >
    mine.toml` is a valid start), with comments saying where it comes from: its file, the
    profiles it extends, and the values its accelerator picks on this machine."""
    profile = built
    where = f"{profile.path} [{profile.table}]" if profile.table else str(profile.path)
    head = [f"# {profile.name}: {where}"]
    if declared.extends:
        head.append(f"# extends: {' -> '.join(declared.extends)}")
    if build is not None:
        head.append(f"# accelerator {build.requested}: the {build.label} build ({build.reason})")
    sys.stdout.write("\n".join(head) + "\n" + profile_toml(built, declared))


def profile_toml(profile: Profile, declared: Profile | None = None) -> str:
    data = profile.content()
    data.update(data.pop("sources"))
    said = {} if declared is None else declared.content()
    said.update(said.pop("sources", {}))
    lines = []
    for key, value in data.items():  # every field `show --json` has, in the same order
        if key == "gpu" and profile.accelerator is not None:
            lines.append(f"# gpu = {_toml_value(value)}  (follows from the accelerator)")
        elif value is None:
            lines.append(f"# {key}: not set")
        elif key in said and said[key] != value:  # the accelerator's build, on this machine
            lines.append(
                f"{key} = {_toml_value(value)}  # with the accelerator's build; the profile "
                f"says {_toml_value(said[key])}"
            )
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def render_envs(envs: Sequence[EnvSummary]) -> None:
    console = out_console()
    if not envs:
        console.print("no environments yet; try: kboot create numpy", markup=False)
        return
    with_kernels = any(env.kernel for env in envs)  # a column only where there are kernels
    kernel_column = ("KERNEL",) if with_kernels else ()
    columns = ("NAME", "BACKEND", "FLOATX", "PYTHON", "KERAS", "HEALTH", *kernel_column, "PATH")
    rows = [_env_row(env, with_kernels) for env in envs]
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    wide = console.options.update_width(1 << 20)  # the width it wants, not the terminal's
    if console.is_terminal and console.measure(table, options=wide).maximum > console.width:
        _print_narrow(console, columns, rows)
        return
    print_table(console, table)


def _print_narrow(console: Console, columns: Sequence[str], rows: Sequence[Sequence[Text]]) -> None:
    """The table for a terminal too narrow for it, where rich would fold names mid-word and
    paths in pieces: the columns but the last, each row's last cell (the path) whole on a
    line of its own below it; a line longer than the terminal wraps as it is."""
    widths = [max(len(c), *(len(row[i].plain) for row in rows)) for i, c in enumerate(columns)]
    header = Text("  ".join(c.ljust(w) for c, w in zip(columns[:-1], widths, strict=False)))
    header.rstrip()
    console.print(header, style="bold", soft_wrap=True)
    for row in rows:
        line = Text("  ").join(
            cell + " " * (w - len(cell.plain)) for cell, w in zip(row[:-1], widths, strict=False)
        )
        line.rstrip()
        console.print(line, soft_wrap=True)
        console.print(Text("  ") + row[-1], soft_wrap=True)


def _env_row(env: EnvSummary, with_kernels: bool) -> tuple[Text, ...]:
    data = env.to_dict()
    health = data["health"]
    bad = health.startswith(("broken", "failed"))
    style = "green" if health == "ok" else "red" if bad else "yellow"
    return (
        Text(env.name),
        Text(data["backend"] or "-"),
        Text(data["floatx"] or "-"),
        Text(data["python"] or "-"),
        Text(data["keras_version"] or "-"),
        Text(health, style=style),
        *((_kernel_cell(env.kernel),) if with_kernels else ()),
        Text(str(env.path)),
    )


def _kernel_cell(kernel: KernelStatus | None) -> Text:
    if kernel is None:
        return Text("-")
    if kernel.state == "ok":
        return Text(kernel.name)
    return Text(kernel.name) + Text(f" {kernel.state}", style="yellow")


def render_check(result: CheckResult) -> None:
    console = out_console()
    smoke = result.smoke
    if result.ok:
        console.print(f"{result.name}: ok ({smoke.seconds:.1f} s)", markup=False)
    elif smoke.ok:  # what is installed is not what the lock installed
        console.print(
            f"{result.name}: FAILED: its packages differ from its lock (smoke test passed, "
            f"{smoke.seconds:.1f} s)",
            markup=False,
        )
    else:
        console.print(f"{result.name}: FAILED", markup=False)
        for problem in smoke.problems:
            console.print(f"  - {problem}", markup=False)
    for drift in result.lock_drift:
        console.print(f"  - {drift.describe()}", markup=False)
    if smoke.ok:
        for line in _smoke_lines(smoke):
            console.print(line, markup=False)
    errors = error_console()
    for warning in (*smoke.warnings, *result.warnings):
        errors.print(f"[yellow]warning:[/] {_escape(warning)}")


def render_error(label: str, error: KbootError) -> None:
    """One item of several that failed (the others go on): its label, message and hint."""
    console = error_console()
    console.print(f"[red]{_escape(label)}: error:[/] {_escape(error.message)}")
    if error.hint:
        console.print(f"  hint: {_escape(error.hint)}")


def render_config(view: ConfigView) -> None:
    console = out_console()
    state = "" if view.exists else " (does not exist: Keras uses its defaults)"
    if view.invalid:
        state = " INVALID: Keras ignores the whole file and uses its defaults"
    console.print(f"{view.path}{state}", markup=False)
    if view.invalid:
        console.print(f"  {view.invalid}", markup=False)
    console.print(f"  Keras home from: {view.keras_home_source}", markup=False)
    for key, value in view.effective.items():
        origin = "file" if key in view.file_values else "default"
        if any(o.startswith("KERAS_BACKEND=") for o in view.overrides) and key == "backend":
            origin = "KERAS_BACKEND"
        problem = view.problems.get(key) if origin == "file" else None
        flag = f"  INVALID: {problem}" if problem else ""
        console.print(f"  {key} = {value!r}  [{origin}]{flag}", markup=False)
    for override in view.overrides:
        console.print(f"  note: {override}", markup=False)
    if view.invalid:
        console.print(f"  fix: correct or delete {view.path}", markup=False)
    elif view.problems:
        console.print(
            "  fix: kboot config set KEY=VALUE writes a valid value (the rest is kept)",
            markup=False,
        )


_STATUS_STYLE = {
    "created": "green",
    "rebuilt": "green",
    "updated": "green",
    "unchanged": "dim",
    "ok": "dim",
    "failed": "red",
    "missing": "yellow",
    "differs": "yellow",
    "extra": "yellow",
    "removed": "green",
}


def _status_table(rows: Sequence[tuple[str, str, str, str]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATUS", "SECONDS", "DETAIL"):
        table.add_column(column, overflow="fold")
    for name, status, seconds, detail in rows:
        style = _STATUS_STYLE.get(status, "")
        table.add_row(name, f"[{style}]{status}[/]" if style else status, seconds, _escape(detail))
    return table


def render_batch(items: Sequence[BatchItem]) -> None:
    rows = []
    for item in items:
        if item.result is not None:
            detail = "; ".join(item.result.changes) or str(item.result.path)
            rows.append((item.result.name, item.status, f"{item.seconds:.1f}", detail))
        else:
            assert item.error is not None
            rows.append((item.label, "failed", f"{item.seconds:.1f}", item.error.message))
    console = out_console()
    print_table(console, _status_table(rows))
    failed = sum(1 for item in items if not item.ok)
    console.print(f"{len(items) - failed} ok, {failed} failed", markup=False)


def render_sync(result: SyncResult) -> None:
    rows = [
        (entry.name, entry.status, f"{entry.seconds:.1f}" if entry.seconds else "-", entry.detail)
        for entry in result.entries
    ]
    console = out_console()
    print_table(console, _status_table(rows))
    if result.check_only:
        verdict = "in sync" if result.in_sync else "NOT in sync"
    elif result.failed:
        verdict = f"{result.failed} of {len(result.entries)} FAILED" + (
            " (the others were brought in line)" if result.changed else ""
        )
    else:
        verdict = "changed" if result.changed else "nothing to do"
    console.print(f"{result.manifest}: {verdict}", markup=False)


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def render_doctor(result: DoctorResult) -> None:
    console = out_console()
    console.print(f"{result.python} (Python {result.version})", markup=False)
    for finding in severity_rank(result.findings):
        style = _SEVERITY_STYLE[finding.severity]
        console.print(f"[{style}]{finding.severity:7}[/] {_escape(finding.title)}")
        if finding.evidence:
            console.print(f"          evidence: {finding.evidence}", markup=False)
        if finding.fix:
            console.print(f"          fix: {finding.fix}", markup=False)
    errors = sum(1 for f in result.findings if f.severity == "error")
    warnings = sum(1 for f in result.findings if f.severity == "warning")
    console.print(f"{errors} error(s), {warnings} warning(s)", markup=False)
