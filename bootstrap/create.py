"""`kboot create`: profile -> virtualenv -> packages -> keras.json -> smoke test -> record.

Everything that can be checked is checked before the disk is touched. The build
is a transaction: an environment being replaced is moved aside and put back on
any failure (Ctrl-C included), a new one is removed, and the user's keras.json
is restored byte for byte.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bootstrap import __version__
from bootstrap.environment import VirtualEnv
from bootstrap.errors import (
    BackendModuleError,
    EnvironmentStateError,
    Interrupted,
    KbootError,
    UsageError,
)
from bootstrap.installers import (
    Installer,
    UvInstaller,
    get_installer,
    install,
    legacy_pip,
    plan_install,
)
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
    locks_dir,
    user_keras_home,
)
from bootstrap.profiles import Profile, Sources
from bootstrap.progress import RecordingReporter, Reporter
from bootstrap.record import EnvRecord, read_record, record_path, write_record
from bootstrap.registry import register
from bootstrap.smoke import (
    REQUIRED_ENTRIES,
    SmokeReport,
    check_backend_module,
    installed_packages,
)
from bootstrap.target import (
    SCOPES,
    CreateRequest,
    Target,
    check_writable,
    describe_changes,
    in_place_ok,
    inspect_dest,
    recover_leftovers,
    resolve_target,
    shared_user_config,
    state_digest,
)
from bootstrap.verify import expectation, run_smoke, smoke_error

#: Keras keeps its download caches in its home; environments share the user's.
SHARED_CACHES = ("datasets", "models")


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
        early += shared_user_config(target, environ)
    with env_lock(locks_dir(environ), target.path):
        for note in recover_leftovers(target.path):
            reporter.info(note)
        existing = inspect_dest(target.path, force=request.force)
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
    existing = inspect_dest(target.path, force=request.force)
    if existing != "kboot":
        return Plan(target.name, target.path, "missing", ())
    record = read_record(target.path)
    assert record is not None
    changes = describe_changes(record, target, request)
    if _open_existing(target.path) is None:
        changes = [*changes, "the environment's interpreter is missing"]
    return Plan(target.name, target.path, "differs" if changes else "ok", tuple(changes))


def _prepare(request: CreateRequest, reporter: Reporter, environ: Mapping[str, str]) -> Target:
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
        check_writable(user_home)
    return Target(
        name,
        path,
        profile,
        interpreter,
        user_home,
        lock,
        state_digest(profile, interpreter, request, lock),
    )


def _open_existing(path: Path) -> VirtualEnv | None:
    try:
        env = VirtualEnv.open(path)
    except EnvironmentStateError:
        return None
    return env if env.python.exists() else None


class _Build:
    """One create, update or no-op, with what it must undo if it fails."""

    def __init__(
        self,
        request: CreateRequest,
        target: Target,
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
