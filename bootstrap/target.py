"""What a create is about, decided before the disk is touched: the request, where it
goes, what is there already, and what differs from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrap.accelerators import Choice
from bootstrap.errors import (
    ConfigError,
    KbootError,
    UsageError,
)
from bootstrap.interpreters import Interpreter
from bootstrap.keras_config import (
    KERAS_JSON,
)
from bootstrap.lifecycle import Entry, Ledger, protected_reason
from bootstrap.lockfile import LockFile
from bootstrap.paths import envs_dir, kboot_home
from bootstrap.profiles import Profile, Sources
from bootstrap.record import EnvRecord, read_record

SCOPES = ("env", "user")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CreateRequest:
    profile: Profile
    dest: Path | None = None
    name: str | None = None
    python: str | None = None
    installer: str = "uv"
    scope: str = "env"
    system_site_packages: bool = False
    force: bool = False  # rebuild kboot's environment even when nothing changed
    replace_other_profile: bool = False  # rebuild one made from another profile (sync: yes)
    replace_foreign: bool = False  # move a folder that is not kboot's aside, never delete it
    smoke: bool = True
    allow_cpu: bool = False
    sources: Sources | None = None  # replaces the profile's sources when given
    lock: Path | None = None  # install exactly this lock, hash-checked
    wheelhouse: Path | None = None  # a folder of wheels (from `kboot download`)
    offline: bool = False  # no network at all: only the wheelhouse
    verify: bool = False  # run the smoke test even when nothing changed
    accelerator: str | None = None  # auto | cpu | cuda | cuda-12 | cuda-13 (else the profile's)
    wait: float = 0.0  # seconds to wait for another kboot working on the same environment
    kernel: bool = False  # also install ipykernel and register a Jupyter kernel
    keep_editable: bool = True  # made with --editable: keep it (unless --no-editable)


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"environment name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' and '-' (no path separators or '..'); "
            "to build somewhere else use --dest PATH",
        )
    return name


def resolve_target(request: CreateRequest, environ: Mapping[str, str]) -> tuple[str, Path]:
    """The environment's name and its resolved path (symlinks followed: one folder, one
    identity), refusing paths kboot must never build in."""
    if request.dest is not None:
        given = request.dest.expanduser().absolute()
        check_link(given)
        dest = Path(os.path.realpath(given))
        check_dest(dest, kboot_home(environ))
        name = validate_name(dest.name if request.name is None else request.name)
        return name, dest
    name = validate_name(request.profile.default_env_name if request.name is None else request.name)
    return name, Path(os.path.realpath(envs_dir(environ))) / name


def check_link(given: Path) -> None:
    """A --dest that is someone else's symlink would put the environment where they chose."""
    try:
        info = given.lstat()
    except OSError:
        return
    if (
        stat.S_ISLNK(info.st_mode)
        and hasattr(os, "geteuid")
        and info.st_uid
        not in (
            os.geteuid(),
            0,
        )
    ):
        raise UsageError(
            f"--dest {given} is a symlink that another user made (to {os.path.realpath(given)}); "
            "kboot does not build where someone else's link points",
            hint="give the real folder you mean, or one of your own",
        )


def check_dest(dest: Path, home: Path) -> None:
    """Home folders, filesystem roots and kboot's own folders are never environments."""
    reason = protected_reason(dest, home, allow_cwd=True)
    real_home = Path(os.path.realpath(home))
    if reason is None and dest.is_relative_to(real_home) and dest.parent != real_home / "envs":
        reason = "inside kboot's own home (only <kboot home>/envs/<name> holds environments)"
    if reason is None and _writable_by_others(dest.parent):
        reason = (
            f"in {dest.parent}, which every user can write without the sticky bit (they could "
            "swap the environment out from under you)"
        )
    if reason:
        raise UsageError(
            f"--dest {dest} is {reason}: kboot never builds there",
            hint="choose a folder of its own, e.g. --dest ./keras-env or --dest PROJECT/.venv",
        )


@dataclass(frozen=True)
class Target:
    """Everything decided before the disk is touched."""

    name: str
    path: Path
    profile: Profile
    interpreter: Interpreter
    user_home: Path
    lock: LockFile | None
    state_digest: str
    choice: Choice | None = None  # the accelerator build picked for this machine


def state_digest(
    profile: Profile, interpreter: Interpreter, request: CreateRequest, lock: LockFile | None
) -> str:
    """What decides an environment's content; equal digests mean there is nothing to do."""
    content = profile.content()
    if lock is not None:
        del content["sources"]  # the lock pins every file: where it came from does not matter
    state = {
        "profile": content,
        "python": [interpreter.real_path, str(interpreter.version)],
        "scope": request.scope,
        "system_site_packages": request.system_site_packages,
        "lock": lock.digest if lock else None,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


#: Profile keys whose change only needs keras.json, the startup file and a smoke test.
IN_PLACE_KEYS = frozenset(
    {"description", "backend", "floatx", "image_data_format", "epsilon", "gpu", "env", "smoke"}
)


def describe_changes(record: EnvRecord, target: Target, request: CreateRequest) -> list[str]:
    """What differs between the recorded environment and the request, one line each."""
    if record.state_digest == target.state_digest:
        return []
    changes = []
    old, new = record.profile, _as_recorded(target.profile)
    for key in sorted(set(old) | set(new)):
        if key in ("name", "path") or (key == "sources" and target.lock is not None):
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    if not _same_python(record, target.interpreter):
        changes.append(
            f"python: {record.python.get('version')} ({record.python.get('path')}) -> "
            f"{target.interpreter.version} ({target.interpreter.path})"
        )
    if record.scope != request.scope:
        changes.append(f"scope: {record.scope} -> {request.scope}")
    if record.system_site_packages != request.system_site_packages:
        changes.append(
            f"system_site_packages: {record.system_site_packages} -> {request.system_site_packages}"
        )
    old_lock = (record.lock or {}).get("digest")
    new_lock = target.lock.digest if target.lock else None
    if old_lock != new_lock:
        changes.append(f"lock: {old_lock or 'none'} -> {new_lock or 'none'}")
    return changes or ["kboot's record of it is from another kboot version"]


def _same_python(record: EnvRecord, interpreter: Interpreter) -> bool:
    real = record.python.get("real_path") or record.python.get("path")
    return real == interpreter.real_path and record.python.get("version") == str(
        interpreter.version
    )


def _as_recorded(profile: Profile) -> dict[str, Any]:
    """The profile as the record holds it (JSON: tuples become lists)."""
    data: dict[str, Any] = json.loads(json.dumps(profile.to_dict()))
    return data


def in_place_ok(record: EnvRecord, target: Target, request: CreateRequest) -> bool:
    """True when only keras.json-level settings changed: no package or interpreter change."""
    old, new = record.profile, _as_recorded(target.profile)
    changed = {
        k for k in set(old) | set(new) if k not in ("name", "path") and old.get(k) != new.get(k)
    }
    if target.lock is not None:
        changed.discard("sources")
    return (
        changed <= IN_PLACE_KEYS
        and not (target.profile.external_backend and "backend" in changed)
        and _same_python(record, target.interpreter)
        and record.scope == request.scope
        and record.system_site_packages == request.system_site_packages
        and (record.lock or {}).get("digest") == (target.lock.digest if target.lock else None)
    )


def shared_user_config(target: Target, environ: Mapping[str, str]) -> list[str]:
    """Other --scope user environments read the same keras.json: say whom this changes."""
    ledger = Ledger(kboot_home(environ))
    others = sorted(e.path for e in ledger.entries() if isinstance(e, Entry))
    warnings = []
    for other in others:
        try:
            record = read_record(other)
        except KbootError:
            continue
        if record is None or other == target.path or record.scope != "user":
            continue
        if Path(record.keras_home) != target.user_home:
            continue
        mine, theirs = target.profile.keras_config(), record.profile
        differs = [k for k in mine if mine[k] != theirs.get(k)]
        if differs:
            warnings.append(
                f"{record.name} (--scope user) reads the same {target.user_home / KERAS_JSON}: "
                f"its {', '.join(differs)} will change too (--scope env keeps them apart)"
            )
    return warnings


def _writable_by_others(folder: Path) -> bool:
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IWOTH) and not mode & stat.S_ISVTX


def check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    target = folder / KERAS_JSON if (folder / KERAS_JSON).exists() else probe
    if not os.access(target, os.W_OK):
        raise ConfigError(
            f"the Keras home {folder} is not writable ({target})",
            hint="fix its permissions, set KERAS_HOME to a writable folder, or use --scope env",
        )
