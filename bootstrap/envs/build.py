"""One create's build, its stages in order on one screen, and what it returns.

`create` decides (`plan.diff`) whether to build, update in place or do nothing; a
`Builder` does it: a fresh build runs the stages of `stages` (venv -> install ->
configure -> verify) inside `lifecycle.Build`, the folder's transaction, then
registers the Jupyter kernel. On any failure (Ctrl-C and SIGTERM included) the
transaction puts the environment and the user's keras.json back as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bootstrap import __version__
from bootstrap.envs import kernel_setup, lifecycle, stages
from bootstrap.envs.lifecycle import Existing, Ledger, checkpoint
from bootstrap.envs.plan import CreateRequest, Target
from bootstrap.envs.smoke import SmokeReport, host_gpu_info, installed_packages
from bootstrap.envs.verify import expectation, run_smoke
from bootstrap.install import accelerators
from bootstrap.install.installers import get_installer
from bootstrap.install.interpreters import Interpreter
from bootstrap.install.venv import VirtualEnv
from bootstrap.jupyter.registry import Kernel
from bootstrap.locks.model import LockFile
from bootstrap.profiles.keras_json import KERAS_JSON, BeforeWrite
from bootstrap.profiles.model import Profile
from bootstrap.state.record import EnvRecord, read_record, record_path
from bootstrap.system import interrupts
from bootstrap.system.errors import (
    AcceleratorError,
    EnvironmentStateError,
    Interrupted,
    KbootError,
    KernelError,
    UsageError,
    os_error_hint,
    os_error_reason,
)
from bootstrap.system.paths import PTH_FILE
from bootstrap.system.progress import Reporter


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


@dataclass(frozen=True)
class Built:
    """What the stages made."""

    env: VirtualEnv
    keras_json: Path
    startup_env: dict[str, str]
    packages: dict[str, str]
    smoke: SmokeReport | None


def build_stages(job: stages.Job, journal_edit: BeforeWrite) -> Built:
    """A fresh environment, stage by stage. Each checkpoint is a place the kill tests
    (tests/test_safety.py) stop kboot at, to prove the next command recovers."""
    installer = get_installer(job.request.installer)
    env = stages.make_venv(job, installer)
    checkpoint("build-venv-created")
    stages.install_packages(job, env, installer)
    checkpoint("build-installed")
    stages.check_backend(job, env)
    with job.reporter.step("write keras.json"):
        keras_json, startup_env = stages.configure(job, env, journal_edit)
    checkpoint("build-config-written")
    smoke = stages.verify(job, env)
    checkpoint("build-smoke-done")
    packages = (
        dict(smoke.packages) if smoke else installed_packages(env.python, version=env.version)
    )
    return Built(env, keras_json, startup_env, packages, smoke)


def open_existing(path: Path) -> VirtualEnv | None:
    """The environment at `path`, if its interpreter is there."""
    try:
        env = VirtualEnv.open(path)
    except EnvironmentStateError:
        return None
    return env if env.python.exists() else None


class Builder:
    """One create, rebuild, update or no-op, as `create` decided; `lifecycle.Build` (the
    folder's transaction) undoes it if it fails."""

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
                built = build_stages(self.job(), tx.journal_edit)
                record = self._record(
                    built.startup_env, built.keras_json, built.packages, built.smoke
                )
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
        return self._result(built.env, built.keras_json, built.packages, built.smoke, action=action)

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
        env = open_existing(self.path)
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

    def unchanged(
        self, existing: Existing, record: EnvRecord, env: VirtualEnv, *, recheck: bool
    ) -> CreateResult:
        """Nothing differs: say so, quickly. --verify re-runs the smoke test, and so does an
        environment whose last smoke test (e.g. `kboot check`) failed (`recheck`)."""
        smoke = SmokeReport.from_dict(record.smoke) if record.smoke else None
        verify = self.request.verify or recheck
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
                keras_json, startup_env = stages.configure(
                    self.job(), env, tx.journal_edit, fresh=False
                )
            checkpoint("update-config-written")
            smoke = stages.verify(self.job(), env)
            packages = dict(smoke.packages) if smoke else dict(record.packages)
            tx.commit(self._record(startup_env, keras_json, packages, smoke))
        except BaseException as exc:
            for note in tx.rollback():
                self.reporter.info(note)
            raise _failure(exc, self.path, rebuilding=True) from exc
        return self._result(env, keras_json, packages, smoke, action="updated")

    def job(self) -> stages.Job:
        return stages.Job(
            self.request,
            self.target,
            self.reporter,
            self.environ,
            self.warn,
            with_kernel=self.kernel is not None,
        )

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

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)


class _StepFailed(Exception):
    """Marks a reported step as failed without being an error of its own."""


def _failure(exc: BaseException, path: Path, *, rebuilding: bool) -> KbootError:
    """The error to raise after a rollback."""
    if isinstance(exc, KeyboardInterrupt):
        before = "as it was before" if rebuilding else "without a half-built environment"
        return Interrupted(f"interrupted; {path} was left {before}")
    if isinstance(exc, KbootError):
        return exc
    if isinstance(exc, OSError):  # the machine said no: its words, and a hint for them
        return EnvironmentStateError(
            f"creating {path} failed: {os_error_reason(exc)}; everything was rolled back",
            hint=os_error_hint(exc, writes=True),
        )
    return EnvironmentStateError(
        f"creating {path} failed: {type(exc).__name__}: {exc}; everything was rolled back",
        hint="rerun with --debug to see where",
    )
