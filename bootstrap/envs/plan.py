"""What a create is about, decided before the disk is touched: the request, where it
goes, what is there already, and what differs from it.

Planning reads no ledger and builds nothing: what the ledger and the folder say is
read by the caller and handed in (an `Existing`, whether its interpreter runs). `diff`
is the one answer to "is it up to date?", for create, sync, sync --check, check and list.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from bootstrap.envs.installed import PackageDrift, describe_drift, lock_drift
from bootstrap.envs.lifecycle import Existing, protected_reason
from bootstrap.install.accelerators import Choice
from bootstrap.install.interpreters import Interpreter
from bootstrap.locks.model import LockFile
from bootstrap.profiles.keras_json import (
    KERAS_JSON,
)
from bootstrap.profiles.model import Profile, Sources
from bootstrap.state.record import EnvRecord, read_record
from bootstrap.system.errors import (
    ConfigError,
    KbootError,
    UsageError,
)
from bootstrap.system.files import foreign_link, trusted_dir, user_name
from bootstrap.system.paths import SYSTEM_FOLDERS, envs_dir, kboot_home

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
    # rebuild one made from another profile (create --force, sync --force; never by default)
    replace_other_profile: bool = False
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

    def __post_init__(self) -> None:
        """Options that contradict each other are refused before anything is read."""
        given = self.sources
        if given is None or self.wheelhouse is None:
            return
        flags = [
            flag
            for flag, value in (
                ("--index-url", given.index_url),
                ("--extra-index-url", given.extra_index_urls),
                ("--find-links", given.find_links),
            )
            if value
        ]
        if flags:
            raise UsageError(
                f"--wheelhouse {self.wheelhouse} and {', '.join(flags)} both say where to "
                "install from: a wheelhouse is the only source of what it installs",
                hint=f"drop {' and '.join(flags)}, or --wheelhouse",
            )


#: an environment's name becomes a folder, a lock file and a kernelspec name (kboot-NAME),
#: each with a short prefix or suffix: well under the 255 bytes a file name may have
MAX_NAME = 100


NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'"


def validate_name(name: str, *, hint: str | None = None) -> str:
    """`name` if it can name an environment (a folder, a lock file, a kernelspec name);
    else a UsageError whose hint is `hint`, or the rule and where to build instead."""
    if len(name) > MAX_NAME:
        raise UsageError(
            f"environment name {name[:20]}... is {len(name)} characters long: at most "
            f"{MAX_NAME} are allowed",
            hint=hint or "give a shorter --name",
        )
    if not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"environment name {name!r} is not allowed",
            hint=hint
            or f"use {NAME_RULE}; to build in another folder, give its path with --dest PATH",
        )
    return name


def name_for_folder(folder: str) -> str:
    """The name of an environment built with `--dest FOLDER` and no --name: the folder's
    own name, or, where that holds what a name cannot (a space: "env x"), the name with
    each run of such characters made one '-' ("env-x"). The folder keeps its own name:
    any path works; only kboot's name for it (kernels, `kboot check NAME`) is derived."""
    if _NAME.fullmatch(folder) and ".." not in folder:
        return validate_name(folder, hint="give it a shorter name with --name NAME")
    derived = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", folder)).strip("-._")
    hint = f"name the environment with --name NAME ({NAME_RULE}); the folder keeps its own"
    if not derived:
        raise UsageError(
            f"the folder name {folder!r} has nothing kboot can name an environment by",
            hint=hint,
        )
    return validate_name(derived, hint=hint)


def resolve_target(request: CreateRequest, environ: Mapping[str, str]) -> tuple[str, Path]:
    """The environment's name and its resolved path (symlinks followed: one folder, one
    identity), refusing paths kboot must never build in."""
    if request.dest is not None:
        given = request.dest.expanduser().absolute()
        check_link(given)
        dest = Path(os.path.realpath(given))
        check_dest(dest, kboot_home(environ))
        name = name_for_folder(dest.name) if request.name is None else validate_name(request.name)
        return name, dest
    name = validate_name(request.profile.default_env_name if request.name is None else request.name)
    return name, Path(os.path.realpath(envs_dir(environ))) / name


def check_link(given: Path) -> None:
    """A --dest reached through someone else's symlink (at any component, not only the last)
    would put the environment where they chose."""
    found = foreign_link(given)
    if found is not None:
        link, owner = found
        where = f"--dest {given} is" if link == given else f"--dest {given} goes through {link},"
        raise UsageError(
            f"{where} a symlink that another user made ({owner}, to {link.readlink()}); "
            "kboot does not build where someone else's link points",
            hint="give the real folder you mean, or one of your own",
        )


def check_dest(dest: Path, home: Path) -> None:
    """Home folders (anyone's), filesystem roots, system folders, mount points and kboot's
    own folders are never environments; and a --dest must be trusted (`trusted_dir`: it
    and every folder above it yours or root's, writable by nobody else)."""
    reason = protected_reason(dest, home, allow_cwd=True) or never_an_environment(dest)
    real_home = Path(os.path.realpath(home))
    if reason is None and dest.is_relative_to(real_home) and dest.parent != real_home / "envs":
        reason = "inside kboot's own home (only <kboot home>/envs/<name> holds environments)"
    if reason:
        raise UsageError(
            f"--dest {dest} is {reason}: kboot never builds there",
            hint="choose a folder of its own, e.g. --dest ./keras-env or --dest PROJECT/.venv",
        )
    trusted_dir(dest, what="--dest")


def never_an_environment(path: Path) -> str | None:
    """Why `path` is a folder that kboot never builds in, moves or replaces, whatever the
    flags: a filesystem root, a system folder, a mount point, or the home folder of any
    user in the passwd database."""
    real = Path(os.path.realpath(path))
    if real.parent == real:
        return "a filesystem root"
    if PurePosixPath(real.as_posix()) in SYSTEM_FOLDERS or (
        PurePosixPath(path.as_posix()) in SYSTEM_FOLDERS
    ):
        return "a system folder"
    if os.path.ismount(real):
        return "a mount point"
    return _home_reason(real)


def _home_reason(real: Path) -> str | None:
    """`real` is, or holds, the home folder of an account in the passwd database (anyone's,
    not only yours): renaming it aside would take that user's files away."""
    try:
        import pwd

        accounts = pwd.getpwall()
    except ImportError:  # pragma: no cover - Windows: no passwd database
        return None
    for account in accounts:
        if not account.pw_dir or not Path(account.pw_dir).is_absolute():
            continue
        home = Path(os.path.realpath(account.pw_dir))
        if home == real:
            return f"the home folder of {account.pw_name}"
        if home.is_relative_to(real):
            return f"a folder that holds the home folder of {account.pw_name} ({home})"
    return None


def check_replace_foreign(path: Path, home: Path) -> None:
    """What `--replace-foreign` may rename aside: a folder of the caller's own, that is
    nothing `never_an_environment` names. root is refused another user's folder too (the
    flag is for your own project folders, not for taking over someone else's)."""
    reason = protected_reason(path, home) or never_an_environment(path)
    if reason is None:
        try:
            info = path.lstat()
        except OSError as exc:
            reason = f"a folder kboot cannot check ({exc.strerror})"
        else:
            if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
                reason = f"a folder that belongs to another user ({user_name(info.st_uid)})"
    if reason:
        raise UsageError(
            f"--replace-foreign never moves {path} aside: it is {reason}; kboot left it untouched",
            hint="choose another --dest (a folder of your own, or one that does not exist yet)",
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


#: What a request finds at its path, in one word: what `create` does about it, and what
#: `sync --check`, `check` and `list` say. (`diff` decides; nothing else compares.)
MISSING = "missing"  # nothing there, or only the user's files a removal left: build it
UP_TO_DATE = "up-to-date"  # nothing to do (with `recheck`: smoke-test it again first)
UPDATE = "update"  # keras.json-level settings only: rewritten in place, packages kept
REBUILD = "rebuild"  # anything else: built again, the old one aside until the new one works
NEEDS_FORCE = "needs-force"  # made from another profile: replaced only with --force
FOREIGN = "foreign"  # a folder kboot did not make: only --replace-foreign moves it aside


@dataclass(frozen=True)
class Difference:
    """What differs between an environment and a request, and so what a create does."""

    verdict: str  # MISSING | UP_TO_DATE | UPDATE | REBUILD | NEEDS_FORCE | FOREIGN
    changes: tuple[str, ...] = ()  # one line each (for UP_TO_DATE with recheck: why)
    recheck: bool = False  # up to date on paper, but its last smoke test failed
    made_from: str = ""  # NEEDS_FORCE: the profile (or project file) it was made from
    # installed packages that are not what kboot installed from the lock (a REBUILD)
    lock_drift: tuple[PackageDrift, ...] = ()

    @property
    def status(self) -> str:
        """`sync --check`'s word for it: ok | missing | differs | needs-force."""
        if self.verdict == UP_TO_DATE and not self.recheck:
            return "ok"
        if self.verdict in (MISSING, NEEDS_FORCE):
            return self.verdict
        return "differs"


def diff(  # noqa: PLR0911  # one verdict per line, in the order they win
    existing: Existing,
    target: Target,
    request: CreateRequest,
    *,
    runnable: bool,
    interrupted: bool = False,
    kernel: str | None = None,
    drift: str | None = None,
    installed: Mapping[str, str] | None = None,
) -> Difference:
    """The one answer to "is it up to date?". The caller reads the ledger and the folder
    (`existing`; `runnable`: its interpreter is there; `interrupted`: the ledger shows a
    kboot that did not finish; `kernel`: what is wrong with its Jupyter kernel, which
    every create repairs without a rebuild; `drift`: the first keras.json key that no longer
    says what the record does; `installed`: the packages its site-packages holds, from
    `installed.read_installed`, None when not read); this reads nothing."""
    if interrupted:
        return Difference(REBUILD, ("an interrupted kboot left it half-done",))
    if existing.kind in ("absent", "empty", "kept"):
        return Difference(MISSING)
    if existing.kind == "foreign":
        return Difference(
            FOREIGN, (f"a folder kboot did not make is in the way ({existing.reason})",)
        )
    record = existing.record
    if record is None:  # damaged, in a folder the ledger proves kboot's
        return Difference(REBUILD, (f"kboot's record of it is damaged: {existing.reason}",))
    made_from = other_origin(record, target.profile)
    if made_from is not None:
        if not (request.force or request.replace_other_profile):
            return Difference(NEEDS_FORCE, (f"made from {made_from}",), made_from=made_from)
        return Difference(REBUILD, (f"made from {made_from}: --force replaces it",))
    if request.force:
        return Difference(REBUILD, ("--force: rebuild as asked",))
    changes = describe_changes(record, target, request)
    own = standing(record, runnable=runnable, drift=drift, smoke=request.smoke, installed=installed)
    if own.verdict == REBUILD:
        return replace(own, changes=(*changes, *own.changes))
    if changes:  # they include keras.json: an update rewrites it
        verdict = UPDATE if in_place_ok(record, target, request) else REBUILD
        return Difference(verdict, tuple(changes))
    if kernel:
        return Difference(UPDATE, (kernel,))
    return own


def standing(
    record: EnvRecord,
    *,
    runnable: bool,
    drift: str | None,
    smoke: bool = True,
    installed: Mapping[str, str] | None = None,
) -> Difference:
    """An environment against its own record: what `check` and `list` ask, and `diff`
    asks too once the request matches the record. Packages installed by hand into an
    environment built from a lock are a rebuild: that makes it exactly the lock again
    (`installed` is what the caller read from its site-packages)."""
    if not runnable:
        return Difference(REBUILD, ("the environment's interpreter is missing",))
    packages = lock_drift(record, installed) if installed is not None else ()
    if packages:
        line = f"installed packages differ from its lock: {describe_drift(packages)}"
        return Difference(REBUILD, (line,), lock_drift=packages)
    if drift:  # e.g. another --scope user environment took keras.json
        return Difference(UPDATE, (f"keras.json: {drift}",))
    if smoke and record.smoke is not None and not record.smoke.get("ok"):
        return Difference(UP_TO_DATE, ("its last smoke test failed",), recheck=True)
    return Difference(UP_TO_DATE)


def other_origin(record: EnvRecord, profile: Profile) -> str | None:
    """What the environment was made from, when that is not `profile`: `--name jax-cpu` on
    a numpy profile must not silently turn jax-cpu into numpy. A project's profile must be
    the same project's (two checkouts of one course repository both make <project>-dev)."""
    made_from = record.profile.get("name")
    if made_from != profile.name:
        return f"profile {made_from!r}, not {profile.name!r}"
    made_in = record.profile.get("table") and record.profile.get("path")
    wanted = profile.table and str(profile.path)
    if made_in and wanted and made_in != wanted:
        return f"{made_in} [{record.profile.get('table')}], not {wanted}"
    return None


def takeover_refused(name: str, path: Path, difference: Difference, profile: Profile) -> UsageError:
    """The refusal of NEEDS_FORCE: the environment, both profiles, and the way out (the
    same exit code for every command that builds)."""
    return UsageError(
        f"environment {name} was made from {difference.made_from}; only --force replaces "
        f"it, so kboot left {path} as it is",
        hint=f"give this one its own name (--name NAME, or another 'name' in a manifest), or "
        f"pass --force to rebuild it from {profile.name!r} (kboot create ... --force, kboot "
        "sync MANIFEST --force; packages you installed into it yourself are not kept)",
    )


def shared_user_config(target: Target, others: Iterable[Path]) -> list[str]:
    """Other --scope user environments read the same keras.json: say whom this changes.
    `others` are the environments kboot's ledger knows (the caller reads it)."""
    warnings = []
    for other in sorted(others):
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
