"""`kboot create`: profile -> virtualenv -> packages -> keras.json -> smoke test -> record.

Everything that can be checked is checked before the disk is touched. The folder's
life (claim, move the old environment aside, commit, roll back, recover after a kill)
belongs to `lifecycle`; this module decides what to build and builds it. On any
failure (Ctrl-C and SIGTERM included) the environment is as it was before, and the
user's keras.json is restored byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bootstrap import __version__, accelerators, interrupts, kernel_setup, lifecycle
from bootstrap.environment import VirtualEnv, venv_site_folders
from bootstrap.errors import (
    AcceleratorError,
    BackendModuleError,
    ConfigError,
    EnvironmentStateError,
    Interrupted,
    KbootError,
    KernelError,
    UsageError,
)
from bootstrap.files import atomic_write
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
    BeforeWrite,
    merge_keras_json,
    other_users_home,
    read_keras_json,
    shell_overrides,
)
from bootstrap.keras_config import render as render_keras_json
from bootstrap.kernels import Kernel, KernelLedger, kernel_problem
from bootstrap.lifecycle import Existing, Ledger, checkpoint, open_ledger
from bootstrap.lockfile import (
    WHEELHOUSE_LOCK,
    LockFile,
    base_mismatches,
    check_lock,
    host_platform,
    read_lock,
)
from bootstrap.locking import env_lock
from bootstrap.paths import (
    ENV_KERAS_HOME,
    PTH_FILE,
    envs_dir,
    kboot_home,
    locks_dir,
    user_keras_home,
)
from bootstrap.profiles import Profile, Sources
from bootstrap.progress import RecordingReporter, Reporter
from bootstrap.record import EnvRecord, read_record, record_path
from bootstrap.smoke import (
    REQUIRED_ENTRIES,
    SmokeReport,
    check_backend_module,
    host_gpu_info,
    installed_packages,
)
from bootstrap.target import (
    SCOPES,
    CreateRequest,
    Target,
    check_writable,
    describe_changes,
    in_place_ok,
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
    accelerator: accelerators.Choice | None = None
    kernel: Kernel | None = None  # --kernel: the Jupyter kernel registered

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
            "accelerator": self.accelerator.to_dict() if self.accelerator else None,
            "kernel": self.kernel.to_dict() if self.kernel else None,
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
        foreign_home = other_users_home(target.user_home)
        if foreign_home:
            early.append(foreign_home)
    ledger = open_ledger(kboot_home(environ), envs_dir(environ))

    def waiting(holder: str) -> None:
        reporter.info(f"waiting up to {request.wait:g} s for kboot pid {holder} on {target.path}")

    with env_lock(locks_dir(environ), target.path, wait=request.wait, on_wait=waiting):
        for note in lifecycle.recover(ledger, target.path):
            reporter.info(note)
        existing = lifecycle.inspect(ledger, target.path)
        target = _keep_editable(existing, target, request)
        build = _Build(request, target, reporter, environ, ledger)
        build.plan_kernel(existing)
        for warning in early:
            build.warn(warning)
        if existing.kind == "foreign":
            _refuse_foreign(existing, request)
        if existing.kind != "kboot":
            return build.run(existing)
        record = existing.record
        if record is None:  # damaged, in a folder the ledger proves kboot's
            build.changes = (f"kboot's record of it is damaged: {existing.reason}",)
            return build.run(existing)
        _refuse_other_profile(record, target, request)
        if request.force:
            build.changes = ("--force: rebuild as asked",)
            return build.run(existing)
        changes = describe_changes(record, target, request)
        drift = record.config_drift()
        if drift and not changes:  # e.g. another --scope user environment took keras.json
            changes = [f"keras.json: {drift}"]
        env = _open_existing(target.path)
        if not changes and env is not None:
            return build.unchanged(existing, record, env)
        if env is not None and changes and in_place_ok(record, target, request):
            return build.update_in_place(existing, record, env, changes)
        build.changes = tuple(changes) or ("the environment's interpreter is missing",)
        return build.run(existing)


def _keep_editable(existing: Existing, target: Target, request: CreateRequest) -> Target:
    """An environment made with --editable keeps its project, as one made with --kernel
    keeps its kernel (its build files read again: a new dependency is a change)."""
    from bootstrap.project import with_editable

    record = existing.record if existing.kind == "kboot" else None
    if record is None or target.profile.editable is not None or not request.keep_editable:
        return target
    kept = record.profile.get("editable")
    if not isinstance(kept, str) or not Path(kept).is_dir():
        return target
    profile = with_editable(target.profile, Path(kept))
    digest = state_digest(profile, target.interpreter, request, target.lock)
    return replace(target, profile=profile, state_digest=digest)


def _refuse_foreign(existing: Existing, request: CreateRequest) -> None:
    if request.replace_foreign:
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


def _refuse_other_profile(record: EnvRecord, target: Target, request: CreateRequest) -> None:
    """`--name jax-cpu` on a numpy profile must not silently turn jax-cpu into numpy."""
    made_from = record.profile.get("name")
    if request.force or request.replace_other_profile:
        return
    if made_from == target.profile.name:
        # a project's profile: the same project's (two checkouts of one course repository
        # both make <project>-dev, and must not rebuild each other's)
        made_in = record.profile.get("table") and record.profile.get("path")
        wanted = target.profile.table and str(target.profile.path)
        if not (made_in and wanted) or made_in == wanted:
            return
        raise UsageError(
            f"environment {record.name} ({target.path}) was made from {made_in} "
            f"[{record.profile.get('table')}], not {wanted}; kboot left it as it is",
            hint="give this one its own name (--name NAME), or pass --force to rebuild it "
            "from this project",
        )
    raise UsageError(
        f"environment {record.name} ({target.path}) was made from profile {made_from!r}, "
        f"not {target.profile.name!r}; kboot left it as it is",
        hint=f"choose another --name or --dest, or pass --force to rebuild it from "
        f"{target.profile.name!r} (packages you installed into it yourself are not kept)",
    )


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
    ledger = Ledger(kboot_home(environ))
    entry = ledger.get(target.path)
    if entry is not None and entry.state != lifecycle.READY:
        return Plan(
            target.name, target.path, "differs", ("an interrupted kboot left it half-done",)
        )
    existing = lifecycle.inspect(ledger, target.path)
    if existing.kind in ("absent", "empty"):
        return Plan(target.name, target.path, "missing", ())
    if existing.kind == "foreign":
        return Plan(
            target.name,
            target.path,
            "differs",
            (f"a folder kboot did not make is in the way ({existing.reason})",),
        )
    record = existing.record
    if record is None:
        return Plan(target.name, target.path, "differs", (existing.reason,))
    changes = describe_changes(record, target, request)
    drift = record.config_drift()
    if drift and not changes:
        changes = [f"keras.json: {drift}"]
    if record.smoke is not None and not record.smoke.get("ok") and not changes:
        changes = ["its last smoke test failed"]
    if _open_existing(target.path) is None:
        changes = [*changes, "the environment's interpreter is missing"]
    if request.kernel or record.kernel:
        kernel = kernel_problem(KernelLedger(kboot_home(environ)), target.path, record, wanted=True)
        if kernel:
            changes = [*changes, kernel]
    return Plan(target.name, target.path, "differs" if changes else "ok", tuple(changes))


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
        lock_path = request.wheelhouse / WHEELHOUSE_LOCK
        if not lock_path.is_file():
            raise UsageError(
                f"--wheelhouse {request.wheelhouse} holds no {WHEELHOUSE_LOCK}, so nothing "
                "could check its wheels",
                hint="make it with `kboot download PROFILE --dest DIR` (which writes the lock), "
                "or name the lock to check them against with --lock FILE",
            )
    lock = None
    if lock_path is not None:
        lock = read_lock(lock_path)
        check_lock(lock, profile, interpreter.version, host_platform())
        if lock.over_base:
            _check_base(lock, interpreter, request)
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


def _open_existing(path: Path) -> VirtualEnv | None:
    try:
        env = VirtualEnv.open(path)
    except EnvironmentStateError:
        return None
    return env if env.python.exists() else None


class _Build:
    """One create, rebuild, update or no-op; `lifecycle` undoes it if it fails."""

    def __init__(
        self,
        request: CreateRequest,
        target: Target,
        reporter: Reporter,
        environ: dict[str, str],
        ledger: Ledger,
    ) -> None:
        self.request, self.target, self.ledger = request, target, ledger
        self.profile, self.name, self.path = target.profile, target.name, target.path
        self.interpreter, self.user_home = target.interpreter, target.user_home
        self.reporter, self.environ = reporter, environ
        self.warnings: list[str] = []
        self.changes: tuple[str, ...] = ()
        self.rebuilt = False
        self.kernel: kernel_setup.KernelPlan | None = None  # set by plan_kernel

    def run(self, existing: Existing) -> CreateResult:
        """Build from scratch; a kboot environment's old entries wait aside until we succeed."""
        self._check_accelerator(existing.record)
        if existing.kind in ("kboot", "kept"):
            lifecycle.check_build_room(existing)  # (a kept keras-home is set aside, not a clash)
        if existing.kind == "kboot":
            self._say_what_is_not_kept(existing)
        tx = lifecycle.Build(self.ledger, existing, replace_foreign=self.request.replace_foreign)
        self.rebuilt = tx.rebuilding
        try:
            tx.begin()
            with interrupts.operation(tx.token):  # children are marked, orphans findable
                env, keras_json, packages, smoke, record = self._build(tx.journal_edit)
            committed = tx.commit(record)
        except BaseException as exc:
            if tx.committed:  # a signal that waited for the commit: the new one is complete
                raise Interrupted(f"interrupted; {self.path} was finished first") from exc
            for note in tx.rollback():
                self.reporter.info(note)
            raise _failure(exc, self.path, rebuilding=tx.rebuilding) from exc
        for note in committed.notes:
            if committed.aside:  # the user's folder moved: a warning, so nobody misses it
                self.warn(note)
            else:
                self.reporter.info(note)
        if existing.user_entries:
            self.reporter.info(
                f"kept your files in {self.path}: " + ", ".join(existing.user_entries)
            )
        action = "rebuilt" if self.rebuilt else "created"
        return self._result(env, keras_json, packages, smoke, action=action)

    def _check_accelerator(self, record: EnvRecord | None) -> None:
        """A GPU profile on a machine with no NVIDIA driver: say so before gigabytes of CUDA
        wheels are downloaded, unless the CPU fallback is accepted."""
        if not self.profile.gpu or self.allow_cpu(record):
            return
        host = host_gpu_info(self.environ)
        if host.driver_version is None:
            raise AcceleratorError(
                f"profile {self.profile.name} needs an NVIDIA GPU, but {host.describe()}; "
                "nothing was downloaded",
                hint="on this machine use a CPU profile (e.g. tf-cpu, jax-cpu, torch-cpu), or "
                "pass --allow-cpu to build it anyway and run on the CPU",
            )

    def _say_what_is_not_kept(self, existing: Existing) -> None:
        """Packages installed by hand into an environment do not survive its rebuild: say so."""
        env = _open_existing(self.path)
        record = existing.record
        if env is None or record is None:
            return
        try:
            now = installed_packages(env.python, version=env.version)
        except KbootError:
            return
        added = sorted(set(now) - set(record.packages))
        if added:
            self.warn(
                "the rebuild does not keep packages installed into it by hand: "
                + ", ".join(f"{name} {now[name]}" for name in added)
                + " (add them to the profile's 'packages' to keep them)"
            )

    def unchanged(self, existing: Existing, record: EnvRecord, env: VirtualEnv) -> CreateResult:
        """Nothing differs: say so, quickly. --verify re-runs the smoke test, and so does an
        environment whose last smoke test (e.g. `kboot check`) failed: it is not up to date."""
        smoke = SmokeReport.from_dict(record.smoke) if record.smoke else None
        last_failed = smoke is not None and not smoke.ok and self.request.smoke
        verify = self.request.verify or last_failed
        if verify:
            report: SmokeReport | None = None
            try:
                with self.reporter.step("verify: smoke test"):
                    report = run_smoke(
                        env,
                        expectation(self.profile, allow_cpu=self.allow_cpu(record)),
                        scope=self.request.scope,
                        environ=self.environ,
                    )
                    if not report.ok:
                        raise _StepFailed  # the step shows as failed, not with a tick
            except _StepFailed:
                assert report is not None
                self.changes = ("the smoke test failed: " + "; ".join(report.problems),)
                self.reporter.info(f"{self.name}: rebuilding, {self.changes[0]}")
                return self.run(existing)
            smoke = report
        result = self._result(
            env,
            Path(record.keras_home) / KERAS_JSON,
            dict(record.packages),
            smoke,
            action="unchanged",
        )
        return replace(result, verified=verify)

    def allow_cpu(self, record: EnvRecord | None = None) -> bool:
        """--allow-cpu now, or remembered from the build that accepted the CPU fallback."""
        return self.request.allow_cpu or bool(record and record.allow_cpu)

    def plan_kernel(self, existing: Existing) -> None:
        """--kernel, or an environment that has a kernel: before anything is built, refuse a
        kernelspec folder that is not kboot's, and a lock that lacks ipykernel."""
        record = existing.record if existing.kind == "kboot" else None
        if not (self.request.kernel or (record is not None and record.kernel)):
            return
        try:
            kernel_setup.check_lock(self.target.lock, self.profile.name)
            self.kernel = kernel_setup.plan_kernel(self.path, self.name, self.environ)
        except UsageError as exc:
            if self.request.kernel:
                raise
            # kept from an earlier --kernel, and now a lock without ipykernel, or someone
            # made the folder theirs: a re-create (a sync) goes on without it
            self.warn(f"not keeping its Jupyter kernel: {exc.message}")

    def _kernel_entry(self) -> dict[str, Any] | None:
        if self.kernel is None:
            return None
        return kernel_setup.planned_entry(
            self.name, self.profile.name, self.profile.floatx, self.kernel.folder
        )

    def _register_kernel(self, env: VirtualEnv) -> tuple[Kernel, dict[str, str]]:
        assert self.kernel is not None
        record = read_record(self.path)  # as committed, or as it was when unchanged
        assert record is not None
        options = kernel_setup.InstallOptions(self.request.installer, self.profile.sources)
        try:
            kernel, record, _ = kernel_setup.ensure_kernel(
                env,
                record,
                self.kernel.ledger,
                self.kernel.folder,
                env_ledger=self.ledger,
                source=options,
                reporter=self.reporter,
                probe=False,
            )
        except KbootError as exc:
            raise KernelError(
                f"{self.name} is ready at {self.path}, but its Jupyter kernel is not: "
                f"{exc.message}",
                hint=exc.hint or f"fix that, then: kboot kernel {self.name}",
                details=exc.details,
            ) from None
        if kernel.action == "kept":
            self.warn(kernel_setup.kept_warning(kernel, self.name))
        return kernel, dict(record.packages)

    def update_in_place(
        self, existing: Existing, record: EnvRecord, env: VirtualEnv, changes: list[str]
    ) -> CreateResult:
        """Only keras.json-level settings changed: rewrite them, smoke-test, keep the packages."""
        self.changes = tuple(changes)
        files = [
            Path(record.keras_home) / KERAS_JSON,
            env.site_packages / PTH_FILE,
            record_path(self.path),
        ]
        tx = lifecycle.Update(self.ledger, existing, files)
        try:
            tx.begin()
            with self.reporter.step("update keras.json"):
                keras_json, startup_env = self._write_config(env, tx.journal_edit, fresh=False)
            checkpoint("update-config-written")
            smoke = self._maybe_smoke(env)
            packages = dict(smoke.packages) if smoke else dict(record.packages)
            tx.commit(self._record(startup_env, keras_json, packages, smoke))
        except BaseException as exc:
            for note in tx.rollback():
                self.reporter.info(note)
            raise _failure(exc, self.path, rebuilding=True) from exc
        return self._result(env, keras_json, packages, smoke, action="updated")

    def _build(
        self, journal_edit: BeforeWrite
    ) -> tuple[VirtualEnv, Path, dict[str, str], SmokeReport | None, EnvRecord]:
        profile, reporter = self.profile, self.reporter
        installer = get_installer(self.request.installer)
        env = self._create_env(installer)
        checkpoint("build-venv-created")
        self._install(env, installer)
        checkpoint("build-installed")
        if profile.external_backend:
            with reporter.step(f"check backend module {profile.backend}"):
                self._check_backend_module(env)
        with reporter.step("write keras.json"):
            keras_json, startup_env = self._write_config(env, journal_edit)
        checkpoint("build-config-written")
        smoke = self._maybe_smoke(env)
        checkpoint("build-smoke-done")
        packages = (
            dict(smoke.packages) if smoke else installed_packages(env.python, version=env.version)
        )
        record = self._record(startup_env, keras_json, packages, smoke)
        return env, keras_json, packages, smoke, record

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
    ) -> EnvRecord:
        """What the environment's record will say (the lifecycle adds ownership and writes it)."""
        lock = self.target.lock
        return EnvRecord(
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
            allow_cpu=self.request.allow_cpu,
            accelerator=self.target.choice.to_dict() if self.target.choice else None,
            kernel=self._kernel_entry(),
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
        """The finished create. The Jupyter kernel, when there is one, is registered here:
        once the environment is complete."""
        kernel = None
        if self.kernel is not None:
            kernel, packages = self._register_kernel(env)
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
            changed=action != "unchanged" or bool(kernel and kernel.changed),
            replaced=self.rebuilt,
            steps=tuple(getattr(self.reporter, "steps", ())),
            warnings=tuple(self.warnings),
            action=action,
            changes=self.changes,
            lock=self.target.lock,
            accelerator=self.target.choice,
            kernel=kernel,
        )

    def _create_env(self, installer: Installer) -> VirtualEnv:
        version = self.interpreter.version
        with self.reporter.step(f"create virtualenv (Python {version})"):
            env = VirtualEnv.create(
                self.path,
                self.interpreter,
                system_site_packages=self.request.system_site_packages,
                # pip needs itself to install; uv installs pip with the rest, in the same
                # step (faster than virtualenv's seeder), and virtualenv's bundled pip no
                # longer supports Pythons < 3.9 anyway
                seed_pip=installer.needs_pip and legacy_pip(version) is None,
            )
            if (version.major, version.minor) < (3, 8):
                env.drop_virtualenv_patch()
            if self.request.system_site_packages:
                base = venv_site_folders(self.interpreter)  # a base that is a venv itself
                if env.add_base_site(base):
                    self.reporter.info("the base Python is a virtualenv: its packages too")
        return env

    def _install(self, env: VirtualEnv, installer: Installer) -> None:
        profile, reporter = self.profile, self.reporter
        version = str(self.interpreter.version)
        lock = self.target.lock
        if lock is not None:
            if installer.needs_pip and legacy_pip(self.interpreter.version):
                self._install_legacy_pip(env)
            label = f"{len(lock.pins)} locked packages from {lock.path.name}"
            if lock.over_base:
                label += " (the base Python has the rest)"
            with reporter.step(f"install {label}, hash-checked ({installer.name})"):
                install(
                    installer,
                    env,
                    ["-r", str(lock.path)],
                    profile.sources,
                    python_version=version,
                    require_hashes=True,
                    no_deps=lock.over_base,
                )
            self._install_project(env, installer)
            return
        base = None
        if self.request.system_site_packages:
            base = installed_packages(env.python, version=env.version)
        wanted = profile.requirements()
        if self.kernel is not None:
            wanted = (*wanted, kernel_setup.REQUIREMENT)
        if not installer.needs_pip and legacy_pip(self.interpreter.version) is None:
            wanted = (*wanted, "pip")  # a normal virtualenv has pip (a lock has none)
        plan = plan_install(installer, wanted, base)
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
        self._install_project(env, installer)

    def _install_project(self, env: VirtualEnv, installer: Installer) -> None:
        """`create --editable`: the project itself, as `pip install -e ROOT` would. Over a
        lock, without dependencies: the lock is the whole truth (list the project's
        dependencies in the profile's packages, and lock them)."""
        root = self.profile.editable
        if root is None:
            return
        locked = self.target.lock is not None
        with self.reporter.step(f"install the project {root} (editable, {installer.name})"):
            install(
                installer,
                env,
                ["-e", root],
                self.profile.sources,
                python_version=str(self.interpreter.version),
                no_deps=locked,
            )

    def _install_legacy_pip(self, env: VirtualEnv) -> None:
        old_pip = legacy_pip(self.interpreter.version)
        assert old_pip is not None
        version = str(self.interpreter.version)
        with self.reporter.step(f"install {old_pip} (the last pip for Python {version})"):
            install(UvInstaller(), env, [old_pip], self.profile.sources, python_version=version)

    def _check_backend_module(self, env: VirtualEnv) -> None:
        module = self.profile.backend
        report = check_backend_module(env.python, module, environ=self.environ, version=env.version)
        if not report.ok:
            raise BackendModuleError(
                f"{self.profile.path}: backend {module!r}: {report.problem()}",
                hint=f"an external Keras 2 backend must define {', '.join(REQUIRED_ENTRIES)}; "
                "fix the module or the profile's 'backend' and 'packages'",
                details=report.details,
            )

    def _write_config(
        self, env: VirtualEnv, journal_edit: BeforeWrite, *, fresh: bool = True
    ) -> tuple[Path, dict[str, str]]:
        values = self.profile.keras_config()
        startup_env = {**self.profile.env, **backend_env(self.profile)}
        if self.request.scope == "user":  # the user's file: journaled, restored on failure
            written = merge_keras_json(
                self.user_home / KERAS_JSON, values, before_write=journal_edit
            )
            if written.backup:
                self.warn(f"kept the previous {KERAS_JSON} as {written.backup}")
            keras_json = self.user_home / KERAS_JSON
        else:
            home = self.path / ENV_KERAS_HOME
            home.mkdir(exist_ok=not fresh)
            try:
                merge_keras_json(home / KERAS_JSON, values, backup=False)
            except ConfigError:
                if not (home / KERAS_JSON).is_file():
                    raise
                # kboot's own file, and Keras would silently ignore it: write it afresh
                atomic_write(home / KERAS_JSON, render_keras_json(values))
                self.reporter.info(f"replaced the damaged {home / KERAS_JSON} (kboot's own)")
            if fresh:
                self._share_caches(home)
            startup_env["KERAS_HOME"] = str(home)
            keras_json = home / KERAS_JSON
        # always written: with no variables of its own it still clears those a parent
        # process inherited from another kboot environment's startup file
        env.write_startup_env(startup_env)
        return keras_json, startup_env

    def _share_caches(self, home: Path) -> None:
        """datasets/ and models/ linked to the user's own, where those exist (kboot creates
        nothing in the user's home: else the environment keeps its own)."""
        for cache in SHARED_CACHES:
            shared = self.user_home / cache
            if not shared.is_dir():
                (home / cache).mkdir(exist_ok=True)
                continue
            try:
                (home / cache).symlink_to(shared, target_is_directory=True)
            except OSError as exc:  # Windows without symlink rights
                (home / cache).mkdir(exist_ok=True)
                self.warn(f"not sharing Keras {cache}/ with {shared}: {exc.strerror}")

    def _smoke(self, env: VirtualEnv) -> SmokeReport:
        profile = self.profile
        expected = expectation(profile, allow_cpu=self.allow_cpu())
        report = run_smoke(env, expected, scope=self.request.scope, environ=self.environ)
        for warning in report.warnings:
            self.warn(warning)
        if not report.ok:
            raise smoke_error(self.name, report, profile)
        return report

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)


class _StepFailed(Exception):
    """Marks a reported step as failed without being an error of its own."""


def backend_env(profile: Profile) -> dict[str, str]:
    """Variables the backend needs to honour the profile (set at interpreter start-up)."""
    if profile.backend == "jax" and profile.floatx == "float64":
        return {"JAX_ENABLE_X64": "1"}  # else JAX silently computes in float32
    return {}


def _failure(exc: BaseException, path: Path, *, rebuilding: bool) -> KbootError:
    """The error to raise after a rollback."""
    if isinstance(exc, KeyboardInterrupt):
        before = "as it was before" if rebuilding else "without a half-built environment"
        return Interrupted(f"interrupted; {path} was left {before}")
    if isinstance(exc, KbootError):
        return exc
    return EnvironmentStateError(
        f"creating {path} failed: {type(exc).__name__}: {exc}; everything was rolled back",
        hint="rerun with --debug to see where",
    )
