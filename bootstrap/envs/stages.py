"""The stages of a build, in order: venv -> install -> configure -> verify.

Each stage is one function over a `Job` (what the build is for, and who hears about
it) and the environment the stages before it made. They change only the folder being
built; claiming it, moving the old one aside and undoing a failure belong to
`lifecycle`, and the order they run in to `build`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bootstrap.envs import kernel_setup
from bootstrap.envs.plan import CreateRequest, Target
from bootstrap.envs.smoke import (
    REQUIRED_ENTRIES,
    SmokeReport,
    check_backend_module,
    installed_packages,
)
from bootstrap.envs.verify import expectation, run_smoke, smoke_error
from bootstrap.install import platforms
from bootstrap.install.installers import (
    Installer,
    UvInstaller,
    install,
    legacy_pip,
    plan_install,
)
from bootstrap.install.platforms import host_platform, platform_markers
from bootstrap.install.venv import VirtualEnv, bundled_pip, venv_site_folders
from bootstrap.locks.wheelhouse import check_wheelhouse
from bootstrap.profiles.keras_json import KERAS_JSON, BeforeWrite, merge_keras_json
from bootstrap.profiles.keras_json import render as render_keras_json
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import BackendModuleError, ConfigError
from bootstrap.system.files import atomic_write
from bootstrap.system.paths import ENV_KERAS_HOME
from bootstrap.system.progress import Reporter

#: Keras keeps its download caches in its home; environments share the user's.
SHARED_CACHES = ("datasets", "models")


@dataclass(frozen=True)
class Job:
    """What every stage reads: the request, where it goes, and who hears about it."""

    request: CreateRequest
    target: Target
    reporter: Reporter
    environ: Mapping[str, str]
    warn: Callable[[str], None]
    with_kernel: bool = False  # ipykernel is installed with the rest

    @property
    def profile(self) -> Profile:
        return self.target.profile

    @property
    def python_version(self) -> str:
        return str(self.target.interpreter.version)


def make_venv(job: Job, installer: Installer) -> VirtualEnv:
    """Stage 1: an empty virtualenv on the interpreter the plan chose."""
    interpreter, request = job.target.interpreter, job.request
    version = interpreter.version
    with job.reporter.step(f"create virtualenv (Python {version})"):
        env = VirtualEnv.create(
            job.target.path,
            interpreter,
            system_site_packages=request.system_site_packages,
            # pip needs itself to install; uv installs pip with the rest, in the same
            # step (faster than virtualenv's seeder; from virtualenv's own pip wheel, see
            # _install_requirements), and virtualenv's bundled pip no longer supports
            # Pythons < 3.9 anyway
            seed_pip=installer.needs_pip and legacy_pip(version) is None,
        )
        if (version.major, version.minor) < (3, 8):
            env.drop_virtualenv_patch()
        if request.system_site_packages:
            base = venv_site_folders(interpreter)  # a base that is a venv itself
            if env.add_base_site(base):
                job.reporter.info("the base Python is a virtualenv: its packages too")
    return env


def install_packages(job: Job, env: VirtualEnv, installer: Installer) -> None:
    """Stage 2: the profile's packages (or the lock's, hash-checked), then the project
    of `create --editable`."""
    lock = job.target.lock
    if lock is not None:
        _install_locked(job, env, installer)
    else:
        _install_requirements(job, env, installer)
    _install_project(job, env, installer)


def _install_locked(job: Job, env: VirtualEnv, installer: Installer) -> None:
    lock = job.target.lock
    assert lock is not None
    if job.request.wheelhouse is not None:  # online too: the installer alone would skip them
        with job.reporter.step(f"check the wheelhouse's files against {lock.path.name}"):
            check_wheelhouse(job.request.wheelhouse, lock)
    if installer.needs_pip and legacy_pip(job.target.interpreter.version):
        _install_legacy_pip(job, env)
    label = f"{len(lock.pins)} locked packages from {lock.path.name}"
    if lock.over_base:
        label += " (the base Python has the rest)"
    version = job.target.interpreter.version
    here = platforms.Target(f"{version.major}.{version.minor}", platforms.host_platform())
    with (
        job.reporter.step(f"install {label}, hash-checked ({installer.name})"),
        tempfile.TemporaryDirectory(prefix="kboot-lock-") as private,
    ):
        # the pins of this machine, as the requirements file every installer reads (a
        # pylock.toml too, and old pips): the same install for both lock formats
        pinned = Path(private) / "locked.txt"
        pinned.write_text(lock.requirements_for(here), encoding="utf-8")
        install(
            installer,
            env,
            ["-r", str(pinned)],
            job.profile.sources,
            python_version=job.python_version,
            require_hashes=True,
            no_deps=lock.over_base,
        )


def _install_requirements(job: Job, env: VirtualEnv, installer: Installer) -> None:
    base = None
    if job.request.system_site_packages:
        base = installed_packages(env.python, version=env.version)
    wanted = job.profile.requirements()
    if job.with_kernel:
        wanted = (*wanted, kernel_setup.REQUIREMENT)
    old_pip = legacy_pip(job.target.interpreter.version)
    added = [kernel_setup.REQUIREMENT] if job.with_kernel else []  # kboot's, not the profile's
    if not installer.needs_pip and old_pip is None:
        wanted = (*wanted, "pip")  # a normal virtualenv has pip (a lock has none)
    plan = plan_install(installer, wanted, base)
    for requirement, found in plan.reused.items():
        job.reporter.info(f"reusing {requirement} from the base Python ({found})")
    requirements = plan.requirements
    label = ", ".join(requirements) or "nothing new"
    if "pip" in requirements:
        # virtualenv's own pip wheel, as `--installer pip` is seeded: from no index, so a
        # mirror of what the profile needs is enough
        wheel = bundled_pip(job.target.interpreter.major_minor)
        if wheel is not None:
            requirements = tuple(str(wheel) if r == "pip" else r for r in requirements)
        else:
            added.append("pip")
    if old_pip is not None:
        added.append("pip")
        if installer.needs_pip:  # pip must exist before it can install anything
            _install_legacy_pip(job, env)
        else:
            requirements = (old_pip, *requirements)
            label = f"{old_pip}, {label}"
    with job.reporter.step(f"install {label} ({installer.name})"):
        install(
            installer,
            env,
            requirements,
            job.profile.sources,
            python_version=job.python_version,
            constraints=plan.constraints,
            added=added,
        )


def _install_project(job: Job, env: VirtualEnv, installer: Installer) -> None:
    """`create --editable`: the project itself, as `pip install -e ROOT` would. Over a
    lock, without dependencies: the lock is the whole truth (list the project's
    dependencies in the profile's packages, and lock them)."""
    root = job.profile.editable
    if root is None:
        return
    with job.reporter.step(f"install the project {root} (editable, {installer.name})"):
        install(
            installer,
            env,
            ["-e", root],
            job.profile.sources,
            python_version=job.python_version,
            no_deps=job.target.lock is not None,
        )


def _install_legacy_pip(job: Job, env: VirtualEnv) -> None:
    old_pip = legacy_pip(job.target.interpreter.version)
    assert old_pip is not None
    version = job.python_version
    with job.reporter.step(f"install {old_pip} (the last pip for Python {version})"):
        install(UvInstaller(), env, [old_pip], job.profile.sources, python_version=version)


def check_backend(job: Job, env: VirtualEnv) -> None:
    """Stage 2b: an external Keras 2 backend's module defines what Keras needs."""
    profile = job.profile
    if not profile.external_backend:
        return
    with job.reporter.step(f"check backend module {profile.backend}"):
        module = profile.backend
        report = check_backend_module(env.python, module, environ=job.environ, version=env.version)
        if not report.ok:
            raise BackendModuleError(
                f"{profile.path}: backend {module!r}: {report.problem()}",
                hint=f"an external Keras 2 backend must define {', '.join(REQUIRED_ENTRIES)}; "
                "fix the module or the profile's 'backend' and 'packages'",
                details=report.details,
            )


def configure(
    job: Job, env: VirtualEnv, journal_edit: BeforeWrite, *, fresh: bool = True
) -> tuple[Path, dict[str, str]]:
    """Stage 3: keras.json and the startup file (the variables set when Python starts).
    The user's keras.json (--scope user) is journaled, so a failure restores it."""
    profile, path = job.profile, job.target.path
    values = profile.keras_config()
    startup_env = {**profile.env, **backend_env(profile)}
    if "KERAS_TORCH_DEVICE" in backend_env(profile):
        job.warn(MPS_FLOAT64_NOTE)
    if job.request.scope == "user":
        user_json = job.target.user_home / KERAS_JSON
        written = merge_keras_json(user_json, values, before_write=journal_edit)
        if written.backup:
            job.warn(f"kept the previous {KERAS_JSON} as {written.backup}")
        keras_json = user_json
    else:
        home = path / ENV_KERAS_HOME
        home.mkdir(exist_ok=not fresh)
        try:
            merge_keras_json(home / KERAS_JSON, values, backup=False)
        except ConfigError:
            if not (home / KERAS_JSON).is_file():
                raise
            # kboot's own file, and Keras would silently ignore it: write it afresh
            atomic_write(home / KERAS_JSON, render_keras_json(values))
            job.reporter.info(f"replaced the damaged {home / KERAS_JSON} (kboot's own)")
        if fresh:
            _share_caches(job, home)
        startup_env["KERAS_HOME"] = str(home)
        keras_json = home / KERAS_JSON
    # always written: with no variables of its own it still clears those a parent
    # process inherited from another kboot environment's startup file
    env.write_startup_env(startup_env)
    return keras_json, startup_env


def _share_caches(job: Job, home: Path) -> None:
    """datasets/ and models/ linked to the user's own, where those exist (kboot creates
    nothing in the user's home: else the environment keeps its own)."""
    for cache in SHARED_CACHES:
        shared = job.target.user_home / cache
        if not shared.is_dir():
            (home / cache).mkdir(exist_ok=True)
            continue
        try:
            (home / cache).symlink_to(shared, target_is_directory=True)
        except OSError as exc:  # Windows without symlink rights
            (home / cache).mkdir(exist_ok=True)
            job.warn(f"not sharing Keras {cache}/ with {shared}: {exc.strerror}")


def verify(job: Job, env: VirtualEnv) -> SmokeReport | None:
    """Stage 4: the smoke test (none with --no-smoke); a failure is an error."""
    if not job.request.smoke:
        return None
    profile = job.profile
    with job.reporter.step(f"smoke test: import keras, {profile.backend}, {profile.floatx}"):
        expected = expectation(profile, allow_cpu=job.request.allow_cpu)
        report = run_smoke(env, expected, scope=job.request.scope, environ=job.environ)
        for warning in report.warnings:
            job.warn(warning)
        if not report.ok:
            raise smoke_error(job.target.name, report, profile)
        return report


#: Keras 3's torch backend picks its device at import: KERAS_TORCH_DEVICE if set, else MPS
#: where torch has it (keras/src/backend/torch/core.py); MPS has no float64.
MPS_FLOAT64_NOTE = (
    "floatx float64 on torch on macOS: Apple's MPS has no float64, so Keras computes on "
    "the CPU here (the environment sets KERAS_TORCH_DEVICE=cpu; float32 profiles use MPS)"
)


def backend_env(profile: Profile, platform: str | None = None) -> dict[str, str]:
    """Variables the backend needs to honour the profile (set at interpreter start-up) on
    `platform` (uv's name; this machine's by default: an environment runs where made)."""
    if profile.backend == "jax" and profile.floatx == "float64":
        return {"JAX_ENABLE_X64": "1"}  # else JAX silently computes in float32
    if (
        profile.backend == "torch"
        and profile.floatx == "float64"
        and platform_markers(platform or host_platform())[0] == "darwin"
        and "KERAS_TORCH_DEVICE" not in profile.env  # the profile chose a device itself
    ):
        return {"KERAS_TORCH_DEVICE": "cpu"}  # else every float64 tensor fails on MPS
    return {}
