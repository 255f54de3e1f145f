"""`kboot create`: profile -> virtualenv -> packages -> keras.json -> smoke test -> record.

Everything that can be checked is checked before the disk is touched. The build
is a transaction: an environment being replaced is moved aside and put back on
any failure (Ctrl-C included), a new one is removed, and the user's keras.json
is restored byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from packaging.version import Version

from bootstrap import __version__
from bootstrap.environment import VirtualEnv
from bootstrap.errors import (
    BackendModuleError,
    ConfigError,
    EnvironmentStateError,
    Interrupted,
    KbootError,
    SmokeError,
    UsageError,
)
from bootstrap.installers import Installer, UvInstaller, get_installer, install, plan_install
from bootstrap.interpreters import Interpreter, find_interpreter
from bootstrap.keras_config import (
    KERAS_JSON,
    WriteResult,
    atomic_write,
    merge_keras_json,
    read_keras_json,
    shell_overrides,
)
from bootstrap.lockfile import WHEELHOUSE_LOCK, LockFile, check_lock, host_platform, read_lock
from bootstrap.locking import env_lock
from bootstrap.paths import (
    BUILDING_MARKER,
    ENV_KERAS_HOME,
    PTH_FILE,
    envs_dir,
    locks_dir,
    user_keras_home,
)
from bootstrap.profiles import Profile, Sources
from bootstrap.progress import RecordingReporter, Reporter
from bootstrap.record import EnvRecord, read_record, record_path, write_record
from bootstrap.registry import register
from bootstrap.smoke import (
    REQUIRED_ENTRIES,
    Expectation,
    SmokeReport,
    check_backend_module,
    evaluate,
    host_gpu_info,
    installed_packages,
    probe_environ,
    probe_environment,
)

SCOPES = ("env", "user")
#: Keras keeps its download caches in its home; environments share the user's.
SHARED_CACHES = ("datasets", "models")
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
    force: bool = False
    smoke: bool = True
    allow_cpu: bool = False
    sources: Sources | None = None  # replaces the profile's sources when given
    lock: Path | None = None  # install exactly this lock, hash-checked
    wheelhouse: Path | None = None  # a folder of wheels (from `kboot download`)
    offline: bool = False  # no network at all: only the wheelhouse
    verify: bool = False  # run the smoke test even when nothing changed


@dataclass(frozen=True)
class CreateResult:
    name: str
    path: Path
    profile: Profile
    scope: str
    keras_json: Path
    interpreter: Interpreter
    installer: str
    packages: Mapping[str, str]
    smoke: SmokeReport | None
    changed: bool
    replaced: bool
    steps: tuple[tuple[str, float], ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    action: str = "created"  # created | rebuilt | updated | unchanged
    changes: tuple[str, ...] = ()
    lock: LockFile | None = None
    verified: bool = False  # an unchanged environment whose smoke test ran again (--verify)

    @property
    def keras_version(self) -> str | None:
        return self.packages.get(self.profile.keras_package)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "profile": self.profile.name,
            "profile_path": str(self.profile.path),
            "backend": self.profile.backend,
            "floatx": self.profile.floatx,
            "image_data_format": self.profile.image_data_format,
            "epsilon": self.profile.epsilon,
            "scope": self.scope,
            "keras_json": str(self.keras_json),
            "python": self.interpreter.to_dict(),
            "python_version": str(self.interpreter.version),
            "installer": self.installer,
            "keras_version": self.keras_version,
            "packages": dict(sorted(self.packages.items())),
            "smoke": self.smoke.to_dict() if self.smoke else None,
            "changed": self.changed,
            "action": self.action,
            "verified": self.verified,
            "changes": list(self.changes),
            "replaced": self.replaced,
            "lock": {"path": str(self.lock.path), "digest": self.lock.digest}
            if self.lock
            else None,
            "steps": [{"step": label, "seconds": round(s, 3)} for label, s in self.steps],
            "warnings": list(self.warnings),
        }


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"environment name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' and '-' (no path separators or '..'); "
            "to build somewhere else use --dest PATH",
        )
    return name


def resolve_target(request: CreateRequest, environ: Mapping[str, str]) -> tuple[str, Path]:
    if request.dest is not None:
        dest = request.dest.expanduser().absolute()
        return validate_name(dest.name if request.name is None else request.name), dest
    name = validate_name(request.profile.name if request.name is None else request.name)
    return name, envs_dir(environ) / name


@dataclass(frozen=True)
class _Target:
    """Everything decided before the disk is touched."""

    name: str
    path: Path
    profile: Profile
    interpreter: Interpreter
    user_home: Path
    lock: LockFile | None
    state_digest: str


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
        early += _shared_user_config(target, environ)
    with env_lock(locks_dir(environ), target.path):
        for note in recover_leftovers(target.path):
            reporter.info(note)
        existing = _inspect_dest(target.path, force=request.force)
        build = _Build(request, target, reporter, environ)
        for warning in early:
            build.warn(warning)
        if existing != "kboot" or request.force:
            return build.run(replacing=existing)
        record = read_record(target.path)
        assert record is not None
        changes = describe_changes(record, target, request)
        drift = record.config_drift()
        if drift and not changes:  # e.g. another --scope user environment took keras.json
            changes = [f"keras.json: {drift}"]
        env = _open_existing(target.path)
        if not changes and env is not None:
            return build.unchanged(record, env)
        if env is not None and changes and in_place_ok(record, target, request):
            return build.update_in_place(record, env, changes)
        build.changes = tuple(changes) or ("the environment's interpreter is missing",)
        return build.run(replacing=existing)


@dataclass(frozen=True)
class Plan:
    """What `create` would do, without doing it (for `sync --check`)."""

    name: str
    path: Path
    status: str  # missing | ok | differs
    changes: tuple[str, ...]


def plan_create(request: CreateRequest, *, environ: Mapping[str, str] | None = None) -> Plan:
    environ = dict(os.environ if environ is None else environ)
    target = _prepare(request, RecordingReporter(), environ)
    if (target.path / BUILDING_MARKER).exists() or any(
        target.path.parent.glob(f".{target.path.name}.kboot-old-*")
    ):
        return Plan(
            target.name, target.path, "differs", ("an interrupted kboot left it half-done",)
        )
    existing = _inspect_dest(target.path, force=request.force)
    if existing != "kboot":
        return Plan(target.name, target.path, "missing", ())
    record = read_record(target.path)
    assert record is not None
    changes = describe_changes(record, target, request)
    if _open_existing(target.path) is None:
        changes = [*changes, "the environment's interpreter is missing"]
    return Plan(target.name, target.path, "differs" if changes else "ok", tuple(changes))


def _prepare(request: CreateRequest, reporter: Reporter, environ: Mapping[str, str]) -> _Target:
    """Validate and resolve the request; reads only, so a failure leaves the disk untouched."""
    profile = request.profile
    if request.scope not in SCOPES:
        raise UsageError(f"--scope {request.scope!r}: expected one of {', '.join(SCOPES)}")
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
    if lock_path is None and request.offline and request.wheelhouse is not None:
        candidate = request.wheelhouse / WHEELHOUSE_LOCK
        lock_path = candidate if candidate.is_file() else None
    lock = None
    if lock_path is not None:
        lock = read_lock(lock_path)
        check_lock(lock, profile, interpreter.version, host_platform())
    user_home = Path(user_keras_home(environ))
    if request.scope == "user":
        read_keras_json(user_home / KERAS_JSON)  # malformed: refuse before building
        _check_writable(user_home)
    return _Target(
        name,
        path,
        profile,
        interpreter,
        user_home,
        lock,
        state_digest(profile, interpreter, request, lock),
    )


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


def describe_changes(record: EnvRecord, target: _Target, request: CreateRequest) -> list[str]:
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


def in_place_ok(record: EnvRecord, target: _Target, request: CreateRequest) -> bool:
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


def _open_existing(path: Path) -> VirtualEnv | None:
    try:
        env = VirtualEnv.open(path)
    except EnvironmentStateError:
        return None
    return env if env.python.exists() else None


def _shared_user_config(target: _Target, environ: Mapping[str, str]) -> list[str]:
    """Other --scope user environments read the same keras.json: say whom this changes."""
    folder = envs_dir(environ)
    others = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
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


def recover_leftovers(path: Path) -> list[str]:
    """Finish what a kboot killed half-way left behind (SIGKILL, power loss).

    Call it holding the environment's lock: the OS released the dead process's lock, so
    anything found here is a leftover, never a build in progress.
    """
    notes = []
    backups = sorted(path.parent.glob(f".{path.name}.kboot-old-*"))
    if (path / BUILDING_MARKER).exists():
        shutil.rmtree(path, ignore_errors=True)
        notes.append(f"removed {path}, left half-built by an interrupted kboot")
    if backups and not path.exists():
        os.replace(backups.pop(), path)
        notes.append(f"restored {path} from before an interrupted rebuild")
    for leftover in [*backups, *path.parent.glob(f".{path.name}.kboot-removing-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    return notes


def _inspect_dest(path: Path, *, force: bool) -> str:
    """'absent', 'empty', 'kboot' or 'foreign'; refuses what must not be replaced."""
    if not path.exists():
        return "absent"
    if not path.is_dir():
        raise UsageError(f"{path} exists and is not a folder", hint="choose another --dest")
    if not any(path.iterdir()):
        return "empty"
    if read_record(path) is not None:
        return "kboot"
    if _precious(path):
        raise UsageError(
            f"{path} is a home folder, a filesystem root or holds the current folder: "
            "kboot never replaces it, --force or not",
            hint="choose another --dest",
        )
    if not force:
        raise UsageError(
            f"{path} exists and is not a kboot environment; kboot left it untouched",
            hint="choose another --dest or --name, or pass --force to replace it",
        )
    return "foreign"


def _precious(path: Path) -> bool:
    resolved = path.resolve()
    return (
        resolved == Path.home().resolve()
        or resolved.parent == resolved
        or Path.cwd().resolve().is_relative_to(resolved)
    )


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    target = folder / KERAS_JSON if (folder / KERAS_JSON).exists() else probe
    if not os.access(target, os.W_OK):
        raise ConfigError(
            f"the Keras home {folder} is not writable ({target})",
            hint="fix its permissions, set KERAS_HOME to a writable folder, or use --scope env",
        )


class _Build:
    """One create, update or no-op, with what it must undo if it fails."""

    def __init__(
        self,
        request: CreateRequest,
        target: _Target,
        reporter: Reporter,
        environ: dict[str, str],
    ) -> None:
        self.request, self.target = request, target
        self.profile, self.name, self.path = target.profile, target.name, target.path
        self.interpreter, self.user_home = target.interpreter, target.user_home
        self.reporter, self.environ = reporter, environ
        self.warnings: list[str] = []
        self.changes: tuple[str, ...] = ()
        self.backup: Path | None = None
        self.keras_write: WriteResult | None = None

    def run(self, *, replacing: str) -> CreateResult:
        """Build from scratch; an existing environment is moved aside until we succeed."""
        if replacing == "foreign":
            self.warn(f"--force: replacing {self.path}, which was not a kboot environment")
        if replacing in ("kboot", "foreign"):
            self.backup = self.path.with_name(f".{self.path.name}.kboot-old-{os.getpid()}")
            shutil.rmtree(self.backup, ignore_errors=True)
            os.replace(self.path, self.backup)
        try:
            result = self._build()
        except BaseException as exc:
            self._rollback(recreate_empty=replacing == "empty")
            raise _failure(exc, self.path) from exc
        if self.backup is not None:
            shutil.rmtree(self.backup, ignore_errors=True)
        return result

    def unchanged(self, record: EnvRecord, env: VirtualEnv) -> CreateResult:
        """Nothing differs: say so, quickly; --verify also re-runs the smoke test."""
        smoke = SmokeReport.from_dict(record.smoke) if record.smoke else None
        if self.request.verify:
            with self.reporter.step("verify: smoke test"):
                report = run_smoke(
                    env,
                    expectation(self.profile, allow_cpu=self.request.allow_cpu),
                    scope=self.request.scope,
                    environ=self.environ,
                )
            if not report.ok:
                self.changes = ("the smoke test failed: " + "; ".join(report.problems),)
                self.reporter.info(f"{self.name}: rebuilding, {self.changes[0]}")
                return self.run(replacing="kboot")
            smoke = report
        result = self._result(
            env,
            Path(record.keras_home) / KERAS_JSON,
            dict(record.packages),
            smoke,
            action="unchanged",
        )
        return replace(result, verified=self.request.verify)

    def update_in_place(
        self, record: EnvRecord, env: VirtualEnv, changes: list[str]
    ) -> CreateResult:
        """Only keras.json-level settings changed: rewrite them, smoke-test, keep the packages."""
        self.changes = tuple(changes)
        saved = {
            path: path.read_bytes() if path.exists() else None
            for path in (
                Path(record.keras_home) / KERAS_JSON,
                env.site_packages / PTH_FILE,
                record_path(self.path),
            )
        }
        try:
            with self.reporter.step("update keras.json"):
                keras_json, startup_env = self._write_config(env, fresh=False)
            smoke = self._maybe_smoke(env)
            packages = dict(smoke.packages) if smoke else dict(record.packages)
            self._record(startup_env, keras_json, packages, smoke)
        except BaseException as exc:
            for path, content in saved.items():
                if content is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write(path, content)
            if self.keras_write is not None:
                self.keras_write.restore()
            raise _failure(exc, self.path) from exc
        return self._result(env, keras_json, packages, smoke, action="updated")

    def _rollback(self, *, recreate_empty: bool) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.backup is not None:
            os.replace(self.backup, self.path)
        elif recreate_empty:
            self.path.mkdir(parents=True, exist_ok=True)
        if self.keras_write is not None:
            self.keras_write.restore()

    def _build(self) -> CreateResult:
        profile, reporter = self.profile, self.reporter
        installer = get_installer(self.request.installer)
        env = self._create_env()
        self._install(env, installer)
        if profile.external_backend:
            with reporter.step(f"check backend module {profile.backend}"):
                self._check_backend_module(env)
        with reporter.step("write keras.json"):
            keras_json, startup_env = self._write_config(env)
        smoke = self._maybe_smoke(env)
        packages = dict(smoke.packages) if smoke else installed_packages(env.python, cwd=env.root)
        self._record(startup_env, keras_json, packages, smoke)
        (self.path / BUILDING_MARKER).unlink()
        if self.request.dest is not None:
            register(self.environ, self.path)
        action = "rebuilt" if self.backup is not None else "created"
        return self._result(env, keras_json, packages, smoke, action=action)

    def _maybe_smoke(self, env: VirtualEnv) -> SmokeReport | None:
        if not self.request.smoke:
            return None
        profile = self.profile
        with self.reporter.step(f"smoke test: import keras, {profile.backend}, {profile.floatx}"):
            return self._smoke(env)

    def _record(
        self,
        startup_env: dict[str, str],
        keras_json: Path,
        packages: dict[str, str],
        smoke: SmokeReport | None,
    ) -> None:
        lock = self.target.lock
        write_record(
            self.path,
            EnvRecord(
                name=self.name,
                profile=self.profile.to_dict(),
                profile_digest=self.profile.digest(),
                scope=self.request.scope,
                keras_home=str(keras_json.parent),
                installer=self.request.installer,
                python=self.interpreter.to_dict(),
                system_site_packages=self.request.system_site_packages,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                kboot_version=__version__,
                packages=packages,
                smoke=smoke.to_dict() if smoke else None,
                startup_env=startup_env,
                state_digest=self.target.state_digest,
                lock=lock.summary() if lock else None,
            ),
        )

    def _result(
        self,
        env: VirtualEnv,
        keras_json: Path,
        packages: dict[str, str],
        smoke: SmokeReport | None,
        *,
        action: str,
    ) -> CreateResult:
        return CreateResult(
            name=self.name,
            path=self.path,
            profile=self.profile,
            scope=self.request.scope,
            keras_json=keras_json,
            interpreter=self.interpreter,
            installer=self.request.installer,
            packages=packages,
            smoke=smoke,
            changed=action != "unchanged",
            replaced=self.backup is not None,
            steps=tuple(getattr(self.reporter, "steps", ())),
            warnings=tuple(self.warnings),
            action=action,
            changes=self.changes,
            lock=self.target.lock,
        )

    def _create_env(self) -> VirtualEnv:
        version = self.interpreter.version
        with self.reporter.step(f"create virtualenv (Python {version})"):
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / BUILDING_MARKER).write_text(f"{os.getpid()}\n", encoding="utf-8")
            env = VirtualEnv.create(
                self.path,
                self.interpreter,
                system_site_packages=self.request.system_site_packages,
                # virtualenv's bundled pip no longer supports Pythons < 3.9
                seed_pip=legacy_pip(version) is None,
            )
            if (version.major, version.minor) < (3, 8):
                env.drop_virtualenv_patch()
        return env

    def _install(self, env: VirtualEnv, installer: Installer) -> None:
        profile, reporter = self.profile, self.reporter
        version = str(self.interpreter.version)
        lock = self.target.lock
        if lock is not None:
            if installer.needs_pip and legacy_pip(self.interpreter.version):
                self._install_legacy_pip(env)
            label = f"{len(lock.pins)} locked packages from {lock.path.name}"
            with reporter.step(f"install {label}, hash-checked ({installer.name})"):
                install(
                    installer,
                    env,
                    ["-r", str(lock.path)],
                    profile.sources,
                    python_version=version,
                    require_hashes=True,
                )
            return
        base = None
        if self.request.system_site_packages:
            base = installed_packages(env.python, cwd=env.root)
        plan = plan_install(installer, profile.requirements(), base)
        for requirement, found in plan.reused.items():
            reporter.info(f"reusing {requirement} from the base Python ({found})")
        requirements = plan.requirements
        old_pip = legacy_pip(self.interpreter.version)
        if old_pip is not None:
            if installer.needs_pip:  # pip must exist before it can install anything
                self._install_legacy_pip(env)
            else:
                requirements = (old_pip, *requirements)
        label = ", ".join(requirements) or "nothing new"
        with reporter.step(f"install {label} ({installer.name})"):
            install(
                installer,
                env,
                requirements,
                profile.sources,
                python_version=version,
                constraints=plan.constraints,
            )

    def _install_legacy_pip(self, env: VirtualEnv) -> None:
        old_pip = legacy_pip(self.interpreter.version)
        assert old_pip is not None
        version = str(self.interpreter.version)
        with self.reporter.step(f"install {old_pip} (the last pip for Python {version})"):
            install(UvInstaller(), env, [old_pip], self.profile.sources, python_version=version)

    def _check_backend_module(self, env: VirtualEnv) -> None:
        module = self.profile.backend
        report = check_backend_module(env.python, module, environ=self.environ, cwd=env.root)
        if not report.ok:
            raise BackendModuleError(
                f"{self.profile.path}: backend {module!r}: {report.problem()}",
                hint=f"an external Keras 2 backend must define {', '.join(REQUIRED_ENTRIES)}; "
                "fix the module or the profile's 'backend' and 'packages'",
                details=report.details,
            )

    def _write_config(self, env: VirtualEnv, *, fresh: bool = True) -> tuple[Path, dict[str, str]]:
        values = self.profile.keras_config()
        startup_env = {**self.profile.env, **backend_env(self.profile)}
        if self.request.scope == "user":
            self.keras_write = merge_keras_json(self.user_home / KERAS_JSON, values)
            if self.keras_write.backup:
                self.warn(f"kept the previous {KERAS_JSON} as {self.keras_write.backup}")
            keras_json = self.user_home / KERAS_JSON
        else:
            home = self.path / ENV_KERAS_HOME
            home.mkdir(exist_ok=not fresh)
            merge_keras_json(home / KERAS_JSON, values, backup=False)
            if fresh:
                self._share_caches(home)
            startup_env["KERAS_HOME"] = str(home)
            keras_json = home / KERAS_JSON
        if startup_env:
            env.write_startup_env(startup_env)
        else:
            (env.site_packages / PTH_FILE).unlink(missing_ok=True)
        return keras_json, startup_env

    def _share_caches(self, home: Path) -> None:
        for cache in SHARED_CACHES:
            shared = self.user_home / cache
            try:
                shared.mkdir(parents=True, exist_ok=True)
                (home / cache).symlink_to(shared, target_is_directory=True)
            except OSError as exc:  # read-only home, or Windows without symlink rights
                (home / cache).mkdir(exist_ok=True)
                self.warn(f"not sharing Keras {cache}/ with {shared}: {exc.strerror}")

    def _smoke(self, env: VirtualEnv) -> SmokeReport:
        profile = self.profile
        expected = expectation(profile, allow_cpu=self.request.allow_cpu)
        report = run_smoke(env, expected, scope=self.request.scope, environ=self.environ)
        for warning in report.warnings:
            self.warn(warning)
        if not report.ok:
            raise smoke_error(self.name, report, profile)
        return report

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)


def expectation(profile: Profile, *, allow_cpu: bool) -> Expectation:
    return Expectation(
        backend=profile.backend,
        floatx=profile.floatx,
        image_data_format=profile.image_data_format,
        epsilon=profile.epsilon,
        gpu=profile.gpu,
        allow_cpu=allow_cpu,
        keras_module=profile.keras_module,
        mode=profile.smoke,
    )


#: The newest pip that still runs on each Python that virtualenv can no longer seed.
LEGACY_PIP: Mapping[tuple[int, int], str] = {
    (3, 5): "pip<21",
    (3, 6): "pip<22",
    (3, 7): "pip<24.1",
    (3, 8): "pip<25.1",
}


def legacy_pip(version: Version) -> str | None:
    """The pip requirement for a Python older than 3.9 (None: virtualenv seeds pip)."""
    return LEGACY_PIP.get((version.major, version.minor))


def backend_env(profile: Profile) -> dict[str, str]:
    """Variables the backend needs to honour the profile (set at interpreter start-up)."""
    if profile.backend == "jax" and profile.floatx == "float64":
        return {"JAX_ENABLE_X64": "1"}  # else JAX silently computes in float32
    return {}


def _failure(exc: BaseException, path: Path) -> KbootError:
    """The error to raise after a rollback."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted; {path} was left as it was before")
    if isinstance(exc, KbootError):
        return exc
    return EnvironmentStateError(
        f"creating {path} failed: {type(exc).__name__}: {exc}; everything was rolled back",
        hint="rerun with --debug to see where",
    )


def run_smoke(
    env: VirtualEnv, expected: Expectation, *, scope: str, environ: Mapping[str, str]
) -> SmokeReport:
    report, tail, seconds = probe_environment(
        env.python,
        expected,
        environ=probe_environ(environ, keep_keras_home=scope == "user"),
        cwd=env.root,
    )
    return evaluate(
        report, expected, host=host_gpu_info(environ), output_tail=tail, seconds=seconds
    )


def smoke_error(name: str, report: SmokeReport, profile: Profile) -> SmokeError:
    hint = None
    details = report.details
    for problem in report.problems:
        missing = re.search(r"No module named '([\w.]+)'", problem)
        if missing:
            module = missing.group(1).split(".")[0]
            hint = f"add {module} to 'packages' in {profile.path}"
            break
        if "shared library" in problem:
            details = None  # diagnosed: the traceback adds nothing (--debug logs the command)
            hint = "install that library, or use another backend's profile"
            if profile.backend == "cntk":
                hint += " (theano or tensorflow for Keras 2)"
            break
    return SmokeError(
        f"smoke test failed for {name}: " + "; ".join(report.problems),
        hint=hint
        or "fix what the line above names, then run it again (nothing half-built was left behind)",
        details=details,
    )
