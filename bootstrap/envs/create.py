"""`kboot create`: resolve the request, look at what is there, decide, then build.

Everything that can be checked is checked before the disk is touched (`_prepare`).
What to do is `plan.diff`'s one verdict; doing it is `build.Builder`'s (its stages in
`stages`), and the folder's life (claim, move the old environment aside, commit, roll
back, recover after a kill) belongs to `lifecycle`. On any failure (Ctrl-C and
SIGTERM included) the environment is as it was before, and the user's keras.json is
restored byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bootstrap.envs import lifecycle
from bootstrap.envs.build import Builder, CreateResult, open_existing
from bootstrap.envs.installed import read_installed
from bootstrap.envs.lifecycle import Entry, Existing, Ledger, open_ledger
from bootstrap.envs.plan import (
    FOREIGN,
    MISSING,
    NEEDS_FORCE,
    REBUILD,
    SCOPES,
    UPDATE,
    CreateRequest,
    Difference,
    Target,
    check_replace_foreign,
    check_writable,
    diff,
    resolve_target,
    shared_user_config,
    state_digest,
    takeover_refused,
)
from bootstrap.envs.smoke import (
    installed_packages,
)
from bootstrap.install import accelerators
from bootstrap.install.interpreters import Interpreter, find_interpreter
from bootstrap.install.platforms import host_platform
from bootstrap.jupyter.registry import KernelLedger, kernel_problem
from bootstrap.locks.lockfile import (
    WHEELHOUSE_LOCK,
    base_mismatches,
    check_lock,
    read_lock,
    wheelhouse_lock,
)
from bootstrap.locks.model import LockFile
from bootstrap.profiles.keras_json import (
    KERAS_JSON,
    config_drift,
    keras_json_to_change,
    other_users_home,
    read_keras_json,
    shell_overrides,
)
from bootstrap.profiles.model import Sources
from bootstrap.system.errors import (
    UsageError,
)
from bootstrap.system.paths import (
    ENV_KERAS_HOME,
    envs_dir,
    kboot_home,
    locks_dir,
    user_keras_home,
)
from bootstrap.system.process_lock import env_lock
from bootstrap.system.progress import RecordingReporter, Reporter

# CreateResult is built in `build`, and found here by those who create
__all__ = ["CreateResult", "Plan", "create_environment", "plan_create"]


def create_environment(
    request: CreateRequest,
    *,
    reporter: Reporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> CreateResult:
    environ = dict(os.environ if environ is None else environ)
    reporter = reporter or RecordingReporter()
    target = _prepare(request, reporter, environ)

    keras_home = target.user_home if request.scope == "user" else target.path / ENV_KERAS_HOME
    early = shell_overrides(target.profile.backend, request.scope, keras_home, environ)
    if request.scope == "user":
        foreign_home = other_users_home(target.user_home)
        if foreign_home:
            early.append(foreign_home)
    ledger = open_ledger(kboot_home(environ), envs_dir(environ))
    if request.scope == "user":
        early += shared_user_config(target, _known_paths(ledger))

    def waiting(holder: str) -> None:
        reporter.info(f"waiting up to {request.wait:g} s for kboot pid {holder} on {target.path}")

    with env_lock(locks_dir(environ), target.path, wait=request.wait, on_wait=waiting):
        for note in lifecycle.recover(ledger, target.path):
            reporter.info(note)
        existing = lifecycle.inspect(ledger, target.path)
        if existing.kind == "kboot":  # as check, run and list judge it: nothing is read there
            lifecycle.check_trusted_to_run(target.path)
        target = _keep_editable(existing, target, request)
        build = Builder(request, target, reporter, environ, ledger)
        build.plan_kernel(existing)
        for warning in early:
            build.warn(warning)
        env = open_existing(target.path)
        difference = diff(
            existing,
            target,
            request,
            runnable=env is not None,
            drift=drift_of(existing),
            installed=installed_of(existing),
        )
        verdict = difference.verdict
        if verdict == FOREIGN:
            _refuse_foreign(existing, request, ledger.home)
        if verdict == NEEDS_FORCE:
            assert existing.record is not None
            raise takeover_refused(existing.record.name, target.path, difference, target.profile)
        if verdict in (MISSING, FOREIGN):
            return build.run(existing)
        build.changes = difference.changes
        if verdict == REBUILD:
            return build.run(existing)
        assert existing.record is not None and env is not None
        if verdict == UPDATE:
            return build.update_in_place(existing, existing.record, env, list(difference.changes))
        build.changes = ()
        return build.unchanged(existing, existing.record, env, recheck=difference.recheck)


def _known_paths(ledger: Ledger) -> list[Path]:
    return [e.path for e in ledger.entries() if isinstance(e, Entry)]


def _keep_editable(existing: Existing, target: Target, request: CreateRequest) -> Target:
    """An environment made with --editable keeps its project, as one made with --kernel
    keeps its kernel (its build files read again: a new dependency is a change)."""
    from bootstrap.profiles.catalog import with_editable

    record = existing.record if existing.kind == "kboot" else None
    if record is None or target.profile.editable is not None or not request.keep_editable:
        return target
    kept = record.profile.get("editable")
    if not isinstance(kept, str) or not Path(kept).is_dir():
        return target
    profile = with_editable(target.profile, Path(kept))
    digest = state_digest(profile, target.interpreter, request, target.lock)
    return replace(target, profile=profile, state_digest=digest)


def _refuse_foreign(existing: Existing, request: CreateRequest, home: Path) -> None:
    if request.replace_foreign:
        check_replace_foreign(existing.path, home)  # never a home, a system folder, another's
        return
    path = existing.path
    hint = (
        "choose another --dest or --name (for a project folder: --dest PROJECT/.venv), or pass "
        f"--replace-foreign to move it aside to {path.name}.kboot-backup-<time> and build there "
        "(nothing is deleted)"
    )
    if request.force:
        hint = "--force rebuilds kboot's own environments only; " + hint
    raise UsageError(
        f"{path} exists and is not a kboot environment ({existing.reason}); "
        "kboot left it untouched",
        hint=hint,
    )


@dataclass(frozen=True)
class Plan:
    """What `create` would do, without doing it (for `sync --check`)."""

    name: str
    path: Path
    status: str  # missing | ok | differs | needs-force
    changes: tuple[str, ...]
    difference: Difference | None = None


def plan_create(request: CreateRequest, *, environ: Mapping[str, str] | None = None) -> Plan:
    environ = dict(os.environ if environ is None else environ)
    target = _prepare(request, RecordingReporter(), environ)
    ledger = Ledger(kboot_home(environ))
    entry = ledger.get(target.path)
    existing = lifecycle.inspect(ledger, target.path)
    if existing.kind == "kboot":  # refused as create refuses it
        lifecycle.check_trusted_to_run(target.path)
    target = _keep_editable(existing, target, request)  # as create keeps it
    kernel = None
    record = existing.record if existing.kind == "kboot" else None
    if record is not None and (request.kernel or record.kernel):
        kernel = kernel_problem(KernelLedger(kboot_home(environ)), target.path, record, wanted=True)
    difference = diff(
        existing,
        target,
        request,
        runnable=open_existing(target.path) is not None,
        interrupted=entry is not None and entry.state != lifecycle.READY,
        kernel=kernel,
        drift=drift_of(existing),
        installed=installed_of(existing),
    )
    return Plan(target.name, target.path, difference.status, difference.changes, difference)


def _prepare(request: CreateRequest, reporter: Reporter, environ: Mapping[str, str]) -> Target:
    """Validate and resolve the request; reads only, so a failure leaves the disk untouched."""
    if request.scope not in SCOPES:
        raise UsageError(f"--scope {request.scope!r}: expected one of {', '.join(SCOPES)}")
    # which build of the backend this machine gets (before sources: an override of them
    # replaces the build's index too, and the smoke test then says what was installed)
    profile, choice = accelerators.resolve(request.profile, request.accelerator)
    if request.offline and request.wheelhouse is None:
        raise UsageError("--offline needs --wheelhouse DIR (made by `kboot download`)")
    if request.wheelhouse is not None:
        if not request.wheelhouse.is_dir():
            raise UsageError(f"--wheelhouse {request.wheelhouse}: no such folder")
        profile = profile.with_sources(
            Sources(find_links=(str(request.wheelhouse.absolute()),), offline=request.offline)
        )
    elif request.sources is not None:
        profile = profile.with_sources(request.sources)
    name, path = resolve_target(request, environ)
    with reporter.step("find a Python that satisfies " + (profile.python or "any")):
        interpreter = find_interpreter(
            profile.python_specifier, requested=request.python, environ=environ
        )
    lock_path = request.lock
    if lock_path is None and request.wheelhouse is not None:
        # a wheelhouse means hashes, online or offline: its wheels are installed only as
        # its lock (or --lock) pins them, so a wheel planted there is refused
        lock_path = wheelhouse_lock(request.wheelhouse)
        if lock_path is None:
            raise UsageError(
                f"--wheelhouse {request.wheelhouse} holds no {WHEELHOUSE_LOCK}, so nothing "
                "could check its wheels",
                hint="make it with `kboot download PROFILE --dest DIR` (which writes the lock), "
                "or name the lock to check them against with --lock FILE",
            )
    lock = None
    if lock_path is not None:
        lock = read_lock(lock_path)
        if lock.note:
            reporter.info(lock.note)
        check_lock(lock, profile, interpreter.version, host_platform())
        if lock.over_base:
            _check_base(lock, interpreter, request)
    user_home = Path(user_keras_home(environ))
    if request.scope == "user":
        # another user's file or folder, or a malformed file: refuse before building
        read_keras_json(keras_json_to_change(user_home / KERAS_JSON))
        check_writable(user_home)
    return Target(
        name,
        path,
        profile,
        interpreter,
        user_home,
        lock,
        state_digest(profile, interpreter, request, lock),
        choice,
    )


def _check_base(lock: LockFile, interpreter: Interpreter, request: CreateRequest) -> None:
    """A lock over a base Python fits only that base, seen through --system-site-packages."""
    if not request.system_site_packages:
        raise UsageError(
            f"{lock.path} was made over a base Python's packages (it holds only what that "
            "base lacks): create with --system-site-packages on that Python",
            hint=f"kboot create {request.profile.name} --system-site-packages --python "
            "BASE_PYTHON ...",
        )
    version = (interpreter.version.major, interpreter.version.minor)
    differs = base_mismatches(lock, installed_packages(interpreter.path, version=version))
    if differs:
        shown = ", ".join(differs[:6]) + (
            f" and {len(differs) - 6} more" if len(differs) > 6 else ""
        )
        raise UsageError(
            f"{interpreter.path} is not the base {lock.path} was made over: {shown}",
            hint="make the lock again over this base: python -m pip list --format=freeze "
            "> base.txt there, then kboot lock PROFILE --base-packages base.txt",
        )


def drift_of(existing: Existing) -> str | None:
    """What the environment's keras.json says against its record (read for `diff`)."""
    record = existing.record if existing.kind == "kboot" else None
    return config_drift(Path(record.keras_home), record.profile) if record else None


def installed_of(existing: Existing) -> dict[str, str] | None:
    """What a kboot environment holds, from its dist-info folders (read for `diff`)."""
    return read_installed(existing.path) if existing.kind == "kboot" else None
