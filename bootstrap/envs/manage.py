"""Environments kboot made: list them, re-check them, remove them (what a name means is
`bootstrap.envs.names`'s question)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bootstrap.envs import lifecycle
from bootstrap.envs.installed import PackageDrift, read_installed
from bootstrap.envs.lifecycle import DamagedEntry, Entry, Ledger, open_ledger
from bootstrap.envs.names import resolve
from bootstrap.envs.plan import UPDATE, Difference, standing
from bootstrap.envs.smoke import SmokeReport
from bootstrap.envs.verify import expectation, run_smoke
from bootstrap.install.venv import VirtualEnv
from bootstrap.jupyter import registry
from bootstrap.profiles.keras_json import config_drift, shell_overrides
from bootstrap.profiles.model import Profile
from bootstrap.state.ledger import same_folder
from bootstrap.state.record import EnvRecord, read_record, write_record
from bootstrap.system.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EnvironmentStateError,
    KbootError,
    NoSuchEnvironment,
    UntrustedPathError,
    UsageError,
)
from bootstrap.system.paths import envs_dir, kboot_home, locks_dir
from bootstrap.system.process_lock import env_lock, is_locked
from bootstrap.system.progress import Reporter

#: The health of an environment whose folder was replaced since kboot built it.
REPLACED = "replaced"


@dataclass(frozen=True)
class EnvSummary:
    name: str
    path: Path
    record: EnvRecord | None
    health: str  # "ok", or what is wrong
    kboot: bool = True  # False: a folder in kboot's envs folder that kboot did not make
    kernel: registry.KernelStatus | None = None  # its Jupyter kernel, if it has one
    # what its site-packages holds (None: not read), and how that differs from its lock
    installed: Mapping[str, str] | None = None
    lock_drift: tuple[PackageDrift, ...] = ()

    @property
    def keras_version(self) -> str | None:
        """The keras installed now (from its dist-info), else the one recorded at build
        (not read, or from the base Python of a --system-site-packages environment)."""
        if self.record is None:
            return None
        package = canonicalize_name(str(self.record.profile.get("keras_package", "keras")))
        now = self.installed.get(package) if self.installed is not None else None
        if now is None and (self.installed is None or self.record.system_site_packages):
            return self.record.packages.get(package)
        return now

    def to_dict(self) -> dict[str, Any]:
        profile = self.record.profile if self.record else {}
        return {
            "name": self.name,
            "path": str(self.path),
            "kboot": self.kboot,
            "profile": profile.get("name"),
            "backend": profile.get("backend"),
            "floatx": profile.get("floatx"),
            "scope": self.record.scope if self.record else None,
            "python": self.record.python.get("version") if self.record else None,
            "keras_version": self.keras_version,
            "created_at": self.record.created_at if self.record else None,
            "health": self.health,
            "kernel": self.kernel.to_dict() if self.kernel else None,
            "lock_drift": [d.to_dict() for d in self.lock_drift],
        }


def _ledger(environ: Mapping[str, str]) -> Ledger:
    return open_ledger(kboot_home(environ), envs_dir(environ))


def _health(
    path: Path, entry: Entry, environ: Mapping[str, str], installed: Mapping[str, str] | None
) -> tuple[EnvRecord | None, str, Difference | None]:
    """The record, a word on its health, and `standing`'s verdict (when it got that far)."""
    record, health = _record_health(path, entry, environ)
    if record is None or health != "ok":
        return record, health, None
    drift = config_drift(Path(record.keras_home), record.profile)
    own = standing(record, runnable=True, drift=drift, installed=installed)  # as create, sync
    if own.lock_drift:
        return record, f"{own.changes[0]} (kboot create or sync with its lock rebuilds it)", own
    if record.smoke is None:
        return record, "unchecked (built with --no-smoke)", own
    if own.verdict == UPDATE:
        changed = own.changes[0].removeprefix("keras.json: ")
        return record, f"config changed: {changed} (kboot create repairs it)", own
    if own.recheck:
        return record, "failed its last smoke test (kboot create --verify rebuilds it)", own
    return record, "ok", own


def _record_health(  # noqa: PLR0911  # one verdict per line
    path: Path, entry: Entry, environ: Mapping[str, str]
) -> tuple[EnvRecord | None, str]:
    state = lifecycle.describe_state(entry)
    if state is not None:
        if is_locked(locks_dir(environ), path):
            return None, f"busy: {state.removesuffix(', or interrupted')}"
        return None, "broken: an interrupted kboot (run kboot create again to repair it)"
    if not os.path.lexists(path):
        return None, "missing: the folder was deleted (kboot remove forgets it)"
    try:  # another user's link, or a folder they can write: nothing in it is read or run
        lifecycle.check_trusted_to_run(path)
    except UntrustedPathError as exc:
        return None, f"refused: {exc.message}"
    if not same_folder(path, entry.folder_id):
        return None, f"{REPLACED}: it is not the folder kboot built (kboot leaves it alone)"
    try:
        record = read_record(path)
    except KbootError as exc:
        return None, f"broken: {exc.message} (kboot create --force rebuilds it)"
    if record is None or record.owner_token != entry.token:
        return record, "broken: its kboot-env.json is not the one kboot wrote"
    try:
        env = VirtualEnv.open(path)
    except EnvironmentStateError as exc:
        return record, f"broken: {exc.message}"
    if not env.python.exists():
        return record, f"broken: {env.python} is missing (was its base Python removed?)"
    return record, "ok"


def summarize(entry: Entry, environ: Mapping[str, str]) -> EnvSummary:
    installed = read_installed(entry.path) if os.path.lexists(entry.path) else None
    record, health, own = _health(entry.path, entry, environ, installed)
    kernel = registry.kernel_status(registry.KernelLedger(kboot_home(environ)), entry.path, record)
    name = record.name if record else entry.path.name
    drift = own.lock_drift if own else ()
    return EnvSummary(name, entry.path, record, health, kernel=kernel, installed=installed,
                      lock_drift=drift)  # fmt: skip


def list_envs(environ: Mapping[str, str]) -> list[EnvSummary]:
    """kboot's environments (from its ledger), and folders in its envs folder it did not make."""
    ledger = _ledger(environ)
    summaries = []
    known = set()
    for entry in ledger.entries():
        if isinstance(entry, DamagedEntry):
            summaries.append(
                EnvSummary(entry.file.stem, entry.file, None, f"broken: {entry.problem}")
            )
            continue
        known.add(entry.path)
        if entry.token is None and entry.state == lifecycle.READY:
            continue  # removed; only the user's files remain there
        summaries.append(summarize(entry, environ))
    root = Path(os.path.realpath(envs_dir(environ)))
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(".") or folder in known:
                continue
            summaries.append(
                EnvSummary(
                    folder.name,
                    folder,
                    None,
                    "not made by kboot: left alone (remove it yourself if it is not needed)",
                    kboot=False,
                )
            )
    return sorted(summaries, key=lambda s: (not s.kboot, str(s.path)))


@dataclass(frozen=True)
class CheckResult:
    name: str
    path: Path
    smoke: SmokeReport
    warnings: tuple[str, ...]
    lock_drift: tuple[PackageDrift, ...] = ()  # installed packages that differ from its lock

    @property
    def ok(self) -> bool:
        """It passes its smoke test and holds what its lock installed."""
        return self.smoke.ok and not self.lock_drift

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "ok": self.ok,
            "smoke": self.smoke.to_dict(),
            "lock_drift": [d.to_dict() for d in self.lock_drift],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class CheckItem:
    """One ENV of `kboot check A B ...`: its result, or why it could not be checked."""

    ref: str
    result: CheckResult | None
    error: KbootError | None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        assert self.result is not None
        return EXIT_OK if self.result.ok else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        if self.result is not None:
            return self.result.to_dict()
        assert self.error is not None
        return {"name": self.ref, "ok": False, "error": self.error.message,
                "hint": self.error.hint, "exit_code": self.error.exit_code}  # fmt: skip


def check_envs(
    refs: Sequence[str], environ: Mapping[str, str], *, allow_cpu: bool = False
) -> list[CheckItem]:
    """Each environment in turn (a lab gate checks them all): one that cannot be checked
    does not stop the others; the exit code is the worst."""
    items = []
    for ref in refs:
        try:
            items.append(CheckItem(ref, check_env(ref, environ, allow_cpu=allow_cpu), None))
        except KbootError as exc:
            items.append(CheckItem(ref, None, exc))
    return items


def check_env(ref: str, environ: Mapping[str, str], *, allow_cpu: bool = False) -> CheckResult:
    ledger = _ledger(environ)
    path = resolve(ref, environ, ledger=ledger).path
    entry = ledger.get(path)
    assert entry is not None  # resolve checked it
    lifecycle.check_trusted_to_run(path)  # the refusal itself (exit 2), not list's word for it
    record, health, own = _health(path, entry, environ, read_installed(path))
    if health.startswith(REPLACED):  # not kboot's: the same refusal as create and remove
        raise UsageError(f"{path} cannot be checked: {health}")
    if record is None or health.startswith("broken"):
        name = record.profile.get("name") if record else "PROFILE"
        raise EnvironmentStateError(
            f"{path} cannot be checked: {health}",
            hint=f"repair it with kboot create {name} --dest {path} --force"
            if record
            else "run the kboot create that made it again, or kboot remove it",
        )
    env = lifecycle.open_to_run(path)
    accepted_cpu = allow_cpu or record.allow_cpu
    expected = expectation(Profile.from_dict(record.profile), allow_cpu=accepted_cpu)
    smoke = run_smoke(env, expected, scope=record.scope, environ=environ)
    try:
        with env_lock(locks_dir(environ), path):  # `list` shows the latest verdict
            write_record(path, replace(record, smoke=smoke.to_dict()))
    except (OSError, KbootError):
        pass  # a read-only kboot home or environment: the verdict is still reported
    warnings = shell_overrides(record.profile["backend"], record.scope, record.keras_home, environ)
    kernel = registry.kernel_problem(registry.KernelLedger(kboot_home(environ)), path, record)
    if kernel:
        warnings.append(kernel)
    drift = own.lock_drift if own else ()
    return CheckResult(record.name, path, smoke, tuple(warnings), drift)


@dataclass(frozen=True)
class RemoveResult:
    name: str
    path: Path
    scope: str
    keras_json_kept: str | None
    kept: tuple[str, ...] = ()  # the user's files, left in place
    folder_removed: bool = True
    kernel: registry.Unregistered | None = None  # the Jupyter kernel that went with it
    #: None: something was removed; else why there was nothing to remove (exit 0 still:
    #: `remove` twice, as scripts and Ansible run it, is not an error)
    nothing: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "removed": self.nothing is None,
            "nothing_to_remove": self.nothing,
            "folder_removed": self.folder_removed,
            "kept": list(self.kept),
            "keras_json_kept": self.keras_json_kept,
            "kernel": self.kernel.to_dict() if self.kernel else None,
        }


def remove_env(
    ref: str,
    environ: Mapping[str, str],
    *,
    wait: float = 0.0,
    reporter: Reporter | None = None,
) -> RemoveResult:
    """Delete kboot's part of an environment; what the user put there stays. No such
    environment is nothing to remove (a second `remove` succeeds); another kboot working on
    it is waited for up to `wait` seconds."""
    ledger = _ledger(environ)
    try:
        path = resolve(ref, environ, ledger=ledger).path
    except NoSuchEnvironment as exc:
        where = Path(ref) if os.sep in ref else envs_dir(environ) / ref
        return RemoveResult(ref, where, "env", None, folder_removed=False, nothing=exc.message)

    def waiting(holder: str) -> None:
        if reporter is not None:
            reporter.info(f"waiting up to {wait:g} s for kboot pid {holder} on {path}")

    with env_lock(locks_dir(environ), path, wait=wait, on_wait=waiting):
        notes = lifecycle.recover(ledger, path)
        entry = ledger.get(path)
        if entry is None and lifecycle.inspect(ledger, path).kind == "foreign":
            raise UsageError(  # recovery found another folder there, and left it
                f"{path} is not an environment kboot made: " + "; ".join(notes),
                hint="check what is in it and delete it yourself if it is not needed",
            )
        if entry is None or entry.token is None:  # recovery finished a killed removal (or
            kept = entry.kept if entry else ()  # undid a killed first build): nothing is left
            gone = not os.path.lexists(path)
            kernel = _unregister_kernel(path, environ)
            return RemoveResult(path.name, path, "env", None, kept, gone, kernel=kernel)
        existing = lifecycle.inspect(ledger, path)
        if existing.kind != "kboot":
            if not os.path.lexists(path):
                ledger.drop(path)  # deleted by hand: forget it
                kernel = _unregister_kernel(path, environ)
                return RemoveResult(path.name, path, "env", None, (), True, kernel=kernel)
            raise UsageError(
                f"{path} is no longer the environment kboot made ({existing.reason}); "
                "kboot left it untouched",
                hint="check what is in it and delete it yourself if it is not needed",
            )
        record = existing.record
        removed = lifecycle.remove(ledger, existing)
        kernel = _unregister_kernel(path, environ)
    if record is None:
        return RemoveResult(
            path.name, path, "env", None, removed.kept, removed.folder_removed, kernel=kernel
        )
    kept_json = str(Path(record.keras_home) / "keras.json") if record.scope == "user" else None
    return RemoveResult(
        record.name, path, record.scope, kept_json, removed.kept, removed.folder_removed, kernel
    )


def _unregister_kernel(path: Path, environ: Mapping[str, str]) -> registry.Unregistered | None:
    """The environment is gone, and so goes the Jupyter kernel kboot registered for it. The
    removal is done either way: a kernel that cannot be unregistered is said, not raised."""
    ledger = registry.KernelLedger(kboot_home(environ))
    try:
        return registry.unregister(ledger, path)
    except KbootError as exc:
        return registry.Unregistered("", None, False, f"could not unregister it: {exc.message}")
