"""Environments kboot made: find them, list them, re-check them, remove them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bootstrap import kernels, lifecycle
from bootstrap.environment import VirtualEnv
from bootstrap.errors import EnvironmentStateError, KbootError, UsageError
from bootstrap.keras_config import shell_overrides
from bootstrap.lifecycle import DamagedEntry, Entry, Ledger, open_ledger
from bootstrap.locking import env_lock, is_locked
from bootstrap.paths import envs_dir, kboot_home, locks_dir
from bootstrap.profiles import Profile
from bootstrap.record import EnvRecord, read_record, write_record
from bootstrap.smoke import SmokeReport
from bootstrap.verify import expectation, run_smoke


@dataclass(frozen=True)
class EnvSummary:
    name: str
    path: Path
    record: EnvRecord | None
    health: str  # "ok", or what is wrong
    kboot: bool = True  # False: a folder in kboot's envs folder that kboot did not make
    kernel: kernels.KernelStatus | None = None  # its Jupyter kernel, if it has one

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
            "keras_version": self.record.packages.get(profile.get("keras_package", "keras"))
            if self.record
            else None,
            "created_at": self.record.created_at if self.record else None,
            "health": self.health,
            "kernel": self.kernel.to_dict() if self.kernel else None,
        }


def _ledger(environ: Mapping[str, str]) -> Ledger:
    return open_ledger(kboot_home(environ), envs_dir(environ))


def resolve_env(ref: str, environ: Mapping[str, str], *, ledger: Ledger | None = None) -> Path:
    """ENV on the command line: a path, or the name of an environment kboot made.

    The result is the environment's real path, and kboot's ledger knows it. A symlink
    given as a path is refused rather than half-handled: name the folder it points to.
    """
    ledger = ledger or _ledger(environ)
    if os.sep in ref or (os.altsep and os.altsep in ref) or ref in (".", ".."):
        given = Path(ref).expanduser().absolute()
        if given.is_symlink():
            raise UsageError(
                f"{given} is a symlink (to {os.path.realpath(given)}); kboot acts on "
                "environments by their own path only",
                hint=f"name the environment itself: {os.path.realpath(given)} "
                "(or delete the link with rm, which leaves the environment alone)",
            )
        path = Path(os.path.realpath(given))
    else:
        path = Path(os.path.realpath(envs_dir(environ))) / ref
        if ledger.get(path) is None:  # a --dest environment, known by its name
            named = [
                e.path
                for e in ledger.entries()
                if isinstance(e, Entry) and e.token is not None and ref in (e.name, e.path.name)
            ]
            if len(named) == 1:
                path = named[0]
            elif len(named) > 1:
                raise UsageError(
                    f"{ref!r} names {len(named)} environments: " + ", ".join(str(p) for p in named),
                    hint="give the path of the one you mean",
                )
    entry = ledger.get(path)
    if entry is not None and entry.token is None and entry.state == lifecycle.READY:
        raise UsageError(
            f"{path} was removed already; only your own files remain there, and kboot leaves "
            "them alone",
            hint=f"kboot create PROFILE --dest {path} builds there again, around your files",
        )
    if entry is None:
        if not os.path.lexists(path):
            known = [s.name for s in list_envs(environ) if s.kboot]
            raise UsageError(
                f"no environment {ref!r} at {path}",
                hint=f"known environments: {', '.join(known)}" if known else "create one first",
            )
        raise UsageError(
            f"{path} is not an environment kboot made (kboot's ledger has no record of it)",
            hint="kboot acts only on what it made; a kboot-env.json in a folder proves nothing",
        )
    return path


def _health(path: Path, entry: Entry, environ: Mapping[str, str]) -> tuple[EnvRecord | None, str]:  # noqa: PLR0911  # one verdict per line
    state = lifecycle.describe_state(entry)
    if state is not None:
        if is_locked(locks_dir(environ), path):
            return None, f"busy: {state.removesuffix(', or interrupted')}"
        return None, "broken: an interrupted kboot (run kboot create again to repair it)"
    if not os.path.lexists(path):
        return None, "missing: the folder was deleted (kboot remove forgets it)"
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
    if record.smoke is None:
        return record, "unchecked (built with --no-smoke)"
    if not record.smoke.get("ok"):
        return record, "failed its last smoke test (kboot create --verify rebuilds it)"
    drift = record.config_drift()
    if drift:
        return record, f"config changed: {drift} (kboot create repairs it)"
    return record, "ok"


def summarize(entry: Entry, environ: Mapping[str, str]) -> EnvSummary:
    record, health = _health(entry.path, entry, environ)
    kernel = kernels.kernel_status(kernels.KernelLedger(kboot_home(environ)), entry.path, record)
    name = record.name if record else entry.path.name
    return EnvSummary(name, entry.path, record, health, kernel=kernel)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "ok": self.smoke.ok,
            "smoke": self.smoke.to_dict(),
            "warnings": list(self.warnings),
        }


def check_env(ref: str, environ: Mapping[str, str], *, allow_cpu: bool = False) -> CheckResult:
    ledger = _ledger(environ)
    path = resolve_env(ref, environ, ledger=ledger)
    entry = ledger.get(path)
    assert entry is not None  # resolve_env checked it
    record, health = _health(path, entry, environ)
    if record is None or health.startswith("broken"):
        name = record.profile.get("name") if record else "PROFILE"
        raise EnvironmentStateError(
            f"{path} cannot be checked: {health}",
            hint=f"repair it with kboot create {name} --dest {path} --force"
            if record
            else "run the kboot create that made it again, or kboot remove it",
        )
    env = VirtualEnv.open(path)
    accepted_cpu = allow_cpu or record.allow_cpu
    expected = expectation(Profile.from_dict(record.profile), allow_cpu=accepted_cpu)
    smoke = run_smoke(env, expected, scope=record.scope, environ=environ)
    try:
        with env_lock(locks_dir(environ), path):  # `list` shows the latest verdict
            write_record(path, replace(record, smoke=smoke.to_dict()))
    except (OSError, KbootError):
        pass  # a read-only kboot home or environment: the verdict is still reported
    warnings = shell_overrides(record.profile["backend"], record.scope, record.keras_home, environ)
    kernel = kernels.kernel_problem(kernels.KernelLedger(kboot_home(environ)), path, record)
    if kernel:
        warnings.append(kernel)
    return CheckResult(record.name, path, smoke, tuple(warnings))


@dataclass(frozen=True)
class RemoveResult:
    name: str
    path: Path
    scope: str
    keras_json_kept: str | None
    kept: tuple[str, ...] = ()  # the user's files, left in place
    folder_removed: bool = True
    kernel: kernels.Unregistered | None = None  # the Jupyter kernel that went with it

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "removed": True,
            "folder_removed": self.folder_removed,
            "kept": list(self.kept),
            "keras_json_kept": self.keras_json_kept,
            "kernel": self.kernel.to_dict() if self.kernel else None,
        }


def remove_env(ref: str, environ: Mapping[str, str]) -> RemoveResult:
    """Delete kboot's part of an environment; what the user put there stays."""
    ledger = _ledger(environ)
    path = resolve_env(ref, environ, ledger=ledger)
    with env_lock(locks_dir(environ), path):
        lifecycle.recover(ledger, path)
        entry = ledger.get(path)
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
            raise EnvironmentStateError(
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


def _unregister_kernel(path: Path, environ: Mapping[str, str]) -> kernels.Unregistered | None:
    """The environment is gone, and so goes the Jupyter kernel kboot registered for it. The
    removal is done either way: a kernel that cannot be unregistered is said, not raised."""
    ledger = kernels.KernelLedger(kboot_home(environ))
    try:
        return kernels.unregister(ledger, path)
    except KbootError as exc:
        return kernels.Unregistered("", None, False, f"could not unregister it: {exc.message}")
