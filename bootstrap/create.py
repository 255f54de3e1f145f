"""`kboot create`: profile -> virtualenv -> packages -> keras.json -> smoke test -> record.

Everything that can be checked is checked before the disk is touched. The build
is a transaction: an environment being replaced is moved aside and put back on
any failure (Ctrl-C included), a new one is removed, and the user's keras.json
is restored byte for byte.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
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
from bootstrap.keras_config import KERAS_JSON, WriteResult, merge_keras_json, read_keras_json
from bootstrap.locking import env_lock
from bootstrap.paths import ENV_KERAS_HOME, envs_dir, locks_dir, user_keras_home
from bootstrap.profiles import Profile, Sources
from bootstrap.progress import RecordingReporter, Reporter
from bootstrap.record import EnvRecord, read_record, write_record
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

    @property
    def keras_version(self) -> str | None:
        return self.packages.get("keras")

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
            "replaced": self.replaced,
            "steps": [{"step": label, "seconds": round(s, 3)} for label, s in self.steps],
            "warnings": list(self.warnings),
        }


def validate_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise UsageError(
            f"environment name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' and '-' (no path separators or '..'); "
            "to build somewhere else use --dest PATH",
        )
    return name


def resolve_target(request: CreateRequest, environ: Mapping[str, str]) -> tuple[str, Path]:
    if request.dest is not None:
        dest = request.dest.expanduser().absolute()
        return validate_name(request.name or dest.name), dest
    name = validate_name(request.name or request.profile.name)
    return name, envs_dir(environ) / name


def create_environment(
    request: CreateRequest,
    *,
    reporter: Reporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> CreateResult:
    environ = dict(os.environ if environ is None else environ)
    reporter = reporter or RecordingReporter()
    profile = request.profile
    if request.sources is not None:
        profile = profile.with_sources(request.sources)
    if request.scope not in SCOPES:
        raise UsageError(f"--scope {request.scope!r}: expected one of {', '.join(SCOPES)}")
    name, path = resolve_target(request, environ)

    # Everything below until the lock only reads: a failure leaves the disk untouched.
    with reporter.step("find a Python that satisfies " + (profile.python or "any")):
        interpreter = find_interpreter(
            profile.python_specifier, requested=request.python, environ=environ
        )
    user_home = Path(user_keras_home(environ))
    if request.scope == "user":
        read_keras_json(user_home / KERAS_JSON)  # malformed: refuse before building
        _check_writable(user_home)
    existing = _inspect_dest(path, force=request.force)

    with env_lock(locks_dir(environ), path):
        steps = _Build(request, profile, name, path, interpreter, user_home, reporter, environ)
        return steps.run(replacing=existing)


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
    if not force:
        raise UsageError(
            f"{path} exists and is not a kboot environment; kboot left it untouched",
            hint="choose another --dest or --name, or pass --force to replace it",
        )
    return "foreign"


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
    """One create, with what it must undo if it fails."""

    def __init__(
        self,
        request: CreateRequest,
        profile: Profile,
        name: str,
        path: Path,
        interpreter: Interpreter,
        user_home: Path,
        reporter: Reporter,
        environ: dict[str, str],
    ) -> None:
        self.request, self.profile, self.name, self.path = request, profile, name, path
        self.interpreter, self.user_home = interpreter, user_home
        self.reporter, self.environ = reporter, environ
        self.warnings: list[str] = []
        self.backup: Path | None = None
        self.keras_write: WriteResult | None = None

    def run(self, *, replacing: str) -> CreateResult:
        if replacing in ("kboot", "foreign"):
            self.backup = self.path.with_name(f".{self.path.name}.kboot-old-{os.getpid()}")
            shutil.rmtree(self.backup, ignore_errors=True)
            os.replace(self.path, self.backup)
        try:
            result = self._build()
        except BaseException as exc:
            self._rollback(recreate_empty=replacing == "empty")
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(
                    f"interrupted; {self.path} was left as it was before", hint=None
                ) from None
            if isinstance(exc, KbootError):
                raise
            raise EnvironmentStateError(
                f"creating {self.path} failed: {type(exc).__name__}: {exc}; "
                "everything was rolled back",
                hint="rerun with --debug to see where",
            ) from exc
        if self.backup is not None:
            shutil.rmtree(self.backup, ignore_errors=True)
        return result

    def _rollback(self, *, recreate_empty: bool) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.backup is not None:
            os.replace(self.backup, self.path)
        elif recreate_empty:
            self.path.mkdir(parents=True, exist_ok=True)
        if self.keras_write is not None:
            self.keras_write.restore()

    def _build(self) -> CreateResult:
        request, profile, reporter = self.request, self.profile, self.reporter
        installer = get_installer(request.installer)
        env = self._create_env()
        self._install(env, installer)
        if profile.external_backend:
            with reporter.step(f"check backend module {profile.backend}"):
                self._check_backend_module(env)
        with reporter.step("write keras.json"):
            keras_json, startup_env = self._write_config(env)
        smoke = None
        if request.smoke:
            with reporter.step(f"smoke test: import keras, {profile.backend}, {profile.floatx}"):
                smoke = self._smoke(env)
            packages = dict(smoke.packages)
        else:
            packages = installed_packages(env.python, cwd=env.root)
        record = EnvRecord(
            name=self.name,
            profile=profile.to_dict(),
            profile_digest=profile.digest(),
            scope=request.scope,
            keras_home=str(keras_json.parent),
            installer=installer.name,
            python=self.interpreter.to_dict(),
            system_site_packages=request.system_site_packages,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            kboot_version=__version__,
            packages=packages,
            smoke=smoke.to_dict() if smoke else None,
            startup_env=startup_env,
        )
        write_record(self.path, record)
        if request.dest is not None:
            register(self.environ, self.path)
        return CreateResult(
            name=self.name,
            path=self.path,
            profile=profile,
            scope=request.scope,
            keras_json=keras_json,
            interpreter=self.interpreter,
            installer=installer.name,
            packages=packages,
            smoke=smoke,
            changed=True,
            replaced=self.backup is not None,
            steps=tuple(getattr(reporter, "steps", ())),
            warnings=tuple(self.warnings),
        )

    def _create_env(self) -> VirtualEnv:
        version = self.interpreter.version
        with self.reporter.step(f"create virtualenv (Python {version})"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
                with reporter.step(f"install {old_pip} (the last pip for Python {version})"):
                    install(UvInstaller(), env, [old_pip], profile.sources, python_version=version)
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

    def _write_config(self, env: VirtualEnv) -> tuple[Path, dict[str, str]]:
        values = self.profile.keras_config()
        startup_env = {**self.profile.env, **backend_env(self.profile)}
        if self.request.scope == "user":
            self.keras_write = merge_keras_json(self.user_home / KERAS_JSON, values)
            if self.keras_write.backup:
                self.warn(f"kept the previous {KERAS_JSON} as {self.keras_write.backup}")
            keras_json = self.user_home / KERAS_JSON
        else:
            home = self.path / ENV_KERAS_HOME
            home.mkdir()
            merge_keras_json(home / KERAS_JSON, values, backup=False)
            self._share_caches(home)
            startup_env["KERAS_HOME"] = str(home)
            keras_json = home / KERAS_JSON
        if startup_env:
            env.write_startup_env(startup_env)
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
            hint = "nothing was kept; install that library, or use another backend's profile"
            if profile.backend == "cntk":
                hint += " (theano or tensorflow for Keras 2)"
            break
    return SmokeError(
        f"smoke test failed for {name}: " + "; ".join(report.problems),
        hint=hint or "nothing was kept; fix what the lines above name, then run it again",
        details=details,
    )
