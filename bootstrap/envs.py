"""Environments kboot made: find them, list them, re-check them, remove them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bootstrap.environment import VirtualEnv
from bootstrap.errors import EnvironmentStateError, UsageError
from bootstrap.keras_config import shell_overrides
from bootstrap.locking import env_lock
from bootstrap.paths import BUILDING_MARKER, envs_dir, locks_dir
from bootstrap.profiles import Profile
from bootstrap.record import EnvRecord, read_record, write_record
from bootstrap.registry import registered, unregister
from bootstrap.smoke import SmokeReport
from bootstrap.verify import expectation, run_smoke


@dataclass(frozen=True)
class EnvSummary:
    name: str
    path: Path
    record: EnvRecord | None
    health: str  # "ok", or what is wrong

    def to_dict(self) -> dict[str, Any]:
        profile = self.record.profile if self.record else {}
        return {
            "name": self.name,
            "path": str(self.path),
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
        }


def resolve_env(ref: str, environ: Mapping[str, str]) -> Path:
    """ENV on the command line: a path, or the name of an environment kboot made."""
    if os.sep in ref or (os.altsep and os.altsep in ref) or ref in (".", ".."):
        path = Path(ref).expanduser().absolute()
    else:
        path = envs_dir(environ) / ref
        if not path.exists():  # a --dest environment, known by its name
            named = [p for p in registered(environ) if p.name == ref and p.is_dir()]
            path = named[0] if len(named) == 1 else path
    if not path.exists():
        known = [s.name for s in list_envs(environ)]
        raise UsageError(
            f"no environment {ref!r} at {path}",
            hint=f"known environments: {', '.join(known)}" if known else "create one first",
        )
    if read_record(path) is None and not (path / BUILDING_MARKER).exists():
        raise UsageError(f"{path} is not an environment kboot made (no kboot-env.json)")
    return path


def _health(path: Path, record: EnvRecord | None) -> str:  # noqa: PLR0911  # one verdict per line
    if (path / BUILDING_MARKER).exists():
        return "broken: an interrupted build (run kboot create again to repair it)"
    if record is None:
        return "broken: no kboot-env.json"
    try:
        env = VirtualEnv.open(path)
    except EnvironmentStateError as exc:
        return f"broken: {exc.message}"
    if not env.python.exists():
        return f"broken: {env.python} is missing (was its base Python removed?)"
    if record.smoke is None:
        return "unchecked (built with --no-smoke)"
    if not record.smoke.get("ok"):
        return "failed its last smoke test"
    drift = record.config_drift()
    if drift:
        return f"config changed: {drift} (kboot create repairs it)"
    return "ok"


def summarize(path: Path) -> EnvSummary:
    try:
        record = read_record(path)
    except EnvironmentStateError as exc:
        return EnvSummary(path.name, path, None, f"broken: {exc.message}")
    return EnvSummary(record.name if record else path.name, path, record, _health(path, record))


def list_envs(environ: Mapping[str, str]) -> list[EnvSummary]:
    root = envs_dir(environ)
    paths = (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    paths += [p for p in registered(environ) if p.is_dir() and p not in paths]
    return [summarize(p) for p in paths]


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
    path = resolve_env(ref, environ)
    record = read_record(path)
    assert record is not None  # resolve_env checked it
    env = VirtualEnv.open(path)
    if not env.python.exists():
        raise EnvironmentStateError(
            f"{env.python} is missing; the environment is broken",
            hint=f"recreate it: kboot create {record.profile.get('name')} --force",
        )
    expected = expectation(Profile.from_dict(record.profile), allow_cpu=allow_cpu)
    smoke = run_smoke(env, expected, scope=record.scope, environ=environ)
    with env_lock(locks_dir(environ), path):  # `list` shows the latest verdict
        write_record(path, replace(record, smoke=smoke.to_dict()))
    return CheckResult(
        record.name,
        path,
        smoke,
        tuple(shell_overrides(record.profile["backend"], record.scope, record.keras_home, environ)),
    )


@dataclass(frozen=True)
class RemoveResult:
    name: str
    path: Path
    scope: str
    keras_json_kept: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "removed": True,
            "keras_json_kept": self.keras_json_kept,
        }


def remove_env(ref: str, environ: Mapping[str, str]) -> RemoveResult:
    path = resolve_env(ref, environ)
    with env_lock(locks_dir(environ), path):
        record = read_record(path)
        # Rename first so a failure half-way never leaves a half-deleted environment in place.
        doomed = path.with_name(f".{path.name}.kboot-removing-{os.getpid()}")
        try:
            os.replace(path, doomed)
        except OSError as exc:
            raise EnvironmentStateError(f"cannot remove {path}: {exc.strerror}") from None
        shutil.rmtree(doomed, ignore_errors=True)
    unregister(environ, path)
    if record is None:  # a half-built leftover
        return RemoveResult(path.name, path, "env", None)
    kept = str(Path(record.keras_home) / "keras.json") if record.scope == "user" else None
    return RemoveResult(record.name, path, record.scope, kept)
