"""An environment's Jupyter kernel: ipykernel installed, the kernelspec registered
(`kernels`), and the environment's record saying so; `kboot kernel ENV [--remove]`.

ipykernel goes into a finished environment pinned to what it has, so the packages its
smoke test verified stay as they are; what the install makes at the environment's top
(its `share/`) becomes kboot's part of it (`lifecycle.claim_installed`). An environment
built from a lock gets ipykernel only from that lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bootstrap.envs import lifecycle
from bootstrap.envs.smoke import installed_packages
from bootstrap.install.installers import Installer, check_installer, get_installer, install
from bootstrap.install.venv import VirtualEnv
from bootstrap.jupyter.kernelspec import (
    IPYKERNEL,
    KERNEL_JSON,
    build_spec,
    display_name,
    env_python,
    kernel_name,
)
from bootstrap.jupyter.registry import (
    Kernel,
    KernelLedger,
    Unregistered,
    check_folder,
    kernelspec_folder,
    open_kernel_ledger,
    register,
    unregister,
)
from bootstrap.locks.model import LockFile
from bootstrap.profiles.model import Sources
from bootstrap.state.ledger import Ledger, entries_of
from bootstrap.state.record import EnvRecord, write_record
from bootstrap.system.errors import EnvironmentStateError, InstallError, KbootError, UsageError
from bootstrap.system.paths import envs_dir, kboot_home, locks_dir
from bootstrap.system.process_lock import env_lock
from bootstrap.system.progress import RecordingReporter, Reporter
from bootstrap.system.redaction import MASK

#: What `create` installs with the rest into an environment that gets a kernel.
REQUIREMENT = IPYKERNEL


@dataclass(frozen=True)
class KernelPlan:
    """Where an environment's kernelspec goes: checked before anything is built."""

    ledger: KernelLedger
    folder: Path


def plan_kernel(environment: Path, env_name: str, environ: Mapping[str, str]) -> KernelPlan:
    """The kernelspec folder for the environment; a UsageError unless it is free or
    kboot's for this environment (a folder someone else made is left untouched)."""
    ledger = open_kernel_ledger(kboot_home(environ))
    folder = kernelspec_folder(ledger, environment, env_name, environ)
    check_folder(ledger, environment, folder, str(env_python(environment)))
    return KernelPlan(ledger, folder)


def check_lock(lock: LockFile | None, profile: str) -> None:
    """A lock pins every package: a kernel over one needs ipykernel in it. (A lock over a
    base Python may find ipykernel in the base: that shows once it is built.)"""
    if lock is None or lock.over_base:
        return
    if IPYKERNEL not in {pin.name for pin in lock.entries} | set(lock.pins):
        raise lock_lacks_ipykernel(lock.path, profile)


def planned_entry(env_name: str, profile_name: str, floatx: str, folder: Path) -> dict[str, Any]:
    """What an environment's record says of the kernel it should have (`Kernel.record_entry`)."""
    return {
        "name": kernel_name(env_name),
        "display_name": display_name(env_name, profile_name, floatx),
        "kernelspec": str(folder),
    }


# --- ipykernel --------------------------------------------------------------------------


def lock_lacks_ipykernel(lock_path: str | Path, profile: str) -> UsageError:
    return UsageError(
        f"the environment is installed from the lock {lock_path}, which pins every package, "
        "and ipykernel is not in it",
        hint=f'add "ipykernel" to the packages of profile {profile}, make the lock again '
        "(kboot lock; for a wheelhouse, kboot download), then kboot create PROFILE --lock "
        "FILE --kernel",
    )


def recorded_sources(record: EnvRecord) -> Sources:
    """The package sources the environment was built from, as its record keeps them."""
    raw = record.profile.get("sources")
    raw = raw if isinstance(raw, dict) else {}
    index = raw.get("index_url")
    extra, links = raw.get("extra_index_urls") or [], raw.get("find_links") or []
    sources = Sources(
        index if isinstance(index, str) else None,
        tuple(u for u in extra if isinstance(u, str)),
        tuple(u for u in links if isinstance(u, str)),
    )
    if any(MASK in url for url in (sources.index_url or "", *extra, *links)):
        raise UsageError(
            f"{record.name}'s package sources carry credentials, which kboot does not keep",
            hint="give the sources again: --index-url URL (and --extra-index-url, "
            "--find-links as the environment was built)",
        )
    return sources


def install_ipykernel(
    env: VirtualEnv,
    installer: Installer,
    sources: Sources,
    *,
    installed: Mapping[str, str],
    python_version: str,
    reporter: Reporter,
) -> None:
    """ipykernel into a working environment, fitting what it has: every installed version
    is pinned, so the packages the smoke test verified stay as they are."""
    with reporter.step(f"install ipykernel ({installer.name})"):
        try:
            install(
                installer,
                env,
                [IPYKERNEL],
                sources,
                python_version=python_version,
                constraints=installed,
                added=[IPYKERNEL],
            )
        except InstallError as exc:
            hint = exc.hint
            if sources.offline:
                hint = (
                    "put wheels of ipykernel and its dependencies into the --find-links folder "
                    "(pip download ipykernel -d DIR, on a machine with a network), or leave "
                    "out --offline"
                )
            raise InstallError(  # the installer's cause last: the line a user reads
                f"installing ipykernel into {env.root} failed (the environment was kept as "
                f"it was): {exc.message}",
                hint=hint,
                details=exc.details,
            ) from None


@dataclass(frozen=True)
class InstallOptions:
    """How to install ipykernel when an environment lacks it."""

    installer: str = "uv"
    sources: Sources | None = None  # None: the sources the environment was built from

    @classmethod
    def from_options(
        cls,
        installer: str,
        index_url: str | None,
        extra_index_urls: Sequence[str] | None,
        find_links: Sequence[str] | None,
        *,
        offline: bool,
        cwd: Path,
    ) -> InstallOptions:
        """`kboot kernel`'s options, refused before anything is touched."""
        sources = Sources.from_options(
            index_url, extra_index_urls, find_links, cwd=cwd, offline=offline
        )
        if offline and not find_links:
            raise UsageError(
                "--offline needs --find-links DIR: a folder with wheels of ipykernel and its "
                "dependencies (pip download ipykernel -d DIR, where there is a network)"
            )
        return cls(check_installer(installer), sources)


def ensure_kernel(
    env: VirtualEnv,
    record: EnvRecord,
    ledger: KernelLedger,
    folder: Path,
    *,
    env_ledger: Ledger,
    source: InstallOptions,
    reporter: Reporter,
    probe: bool = True,
) -> tuple[Kernel, EnvRecord, dict[str, str]]:
    """ipykernel installed (if missing), the kernelspec registered or brought up to date,
    and the environment's record saying so. Returns the kernel, the record, and what the
    install added. `probe=False` trusts the record's package list. Call it holding the
    environment's lock."""
    path, python = env.root, str(env.python)
    check_folder(ledger, path, folder, python)  # before anything is installed
    packages, added = dict(record.packages), {}
    if probe or IPYKERNEL not in packages:
        packages = installed_packages(env.python, version=env.version)
    if IPYKERNEL not in packages:
        if record.lock is not None:
            raise lock_lacks_ipykernel(
                str(record.lock.get("path", "?")), str(record.profile.get("name", "PROFILE"))
            )
        sources = source.sources if source.sources is not None else recorded_sources(record)
        version = record.python.get("version", "")
        before = entries_of(path)
        install_ipykernel(
            env,
            get_installer(source.installer),
            sources,
            installed=packages,
            python_version=version,
            reporter=reporter,
        )
        # what the install made at the top (ipykernel's share/) is kboot's, as a build's is,
        # and what it installed is recorded at once: should registering fail, a later
        # rebuild knows ipykernel was kboot's doing, not packages installed by hand
        now = installed_packages(env.python, version=env.version)
        added = {n: v for n, v in now.items() if packages.get(n) != v}
        packages = now
        owned = list(lifecycle.claim_installed(env_ledger, path, before))
        record = replace(record, owned=owned, packages=packages)
        write_record(path, record)
    spec = build_spec(path, env.python, replace(record, packages=packages))
    try:
        with reporter.step(f"register Jupyter kernel {spec.name} ({spec.display_name})"):
            kernel = register(ledger, spec, folder)
    except KbootError as exc:
        if added:
            exc.message = (
                f"ipykernel {added.get(IPYKERNEL, '')} was installed into {path}, but "
                f"registering the kernel failed: {exc.message}"
            )
        raise
    updated = replace(record, packages=packages, kernel=kernel.record_entry())
    if updated != record:
        write_record(path, updated)
    return kernel, updated, added


# --- `kboot kernel ENV` -------------------------------------------------------------------


@dataclass(frozen=True)
class KernelResult:
    name: str  # the environment's
    path: Path
    action: str  # registered | updated | unchanged | kept | unregistered | absent
    kernel: Kernel | None = None
    removed: Unregistered | None = None
    installed: Mapping[str, str] = field(default_factory=dict)  # what the install added
    steps: tuple[tuple[str, float], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.action in ("registered", "updated") or bool(
            self.removed and self.removed.removed
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "action": self.action,
            "changed": self.changed,
            "kernel": self.kernel.to_dict() if self.kernel else None,
            "removed": self.removed.to_dict() if self.removed else None,
            "installed": dict(sorted(self.installed.items())),
            "steps": [{"step": label, "seconds": round(s, 3)} for label, s in self.steps],
            "warnings": list(self.warnings),
        }


def kernel_env(
    ref: str,
    environ: Mapping[str, str],
    *,
    remove: bool = False,
    source: InstallOptions | None = None,
    wait: float = 0.0,
    reporter: Reporter | None = None,
) -> KernelResult:
    """`kboot kernel ENV [--remove]`: register (or unregister) a kboot environment's kernel."""
    from bootstrap.envs.names import resolve

    reporter = reporter or RecordingReporter()
    ledger = lifecycle.open_ledger(kboot_home(environ), envs_dir(environ))
    path = resolve(ref, environ, ledger=ledger).path
    kernel_ledger = open_kernel_ledger(kboot_home(environ))

    def waiting(holder: str) -> None:
        reporter.info(f"waiting up to {wait:g} s for kboot pid {holder} on {path}")

    with env_lock(locks_dir(environ), path, wait=wait, on_wait=waiting):
        for note in lifecycle.recover(ledger, path):
            reporter.info(note)
        existing = lifecycle.inspect(ledger, path)
        record = existing.record
        if existing.kind != "kboot" or record is None:
            raise EnvironmentStateError(
                f"{path} is not a complete kboot environment ({existing.reason or existing.kind})",
                hint="run the kboot create that made it again (or kboot remove it)",
            )
        name = record.name
        if remove:
            if record.kernel is not None:  # first: a re-create must not bring it back
                write_record(path, replace(record, kernel=None))
            removed = unregister(kernel_ledger, path)
            action = "unregistered" if removed is not None else "absent"
            return KernelResult(name, path, action, removed=removed, steps=_steps(reporter))
        env = lifecycle.open_to_run(path)
        if not env.python.exists():
            raise EnvironmentStateError(
                f"{env.python} is missing (was its base Python removed?)",
                hint=f"rebuild it: kboot create {record.profile.get('name')} --force",
            )
        folder = kernelspec_folder(kernel_ledger, path, name, environ)
        kernel, _, added = ensure_kernel(
            env,
            record,
            kernel_ledger,
            folder,
            env_ledger=ledger,
            source=source or InstallOptions(),
            reporter=reporter,
        )
        warnings: tuple[str, ...] = ()
        if kernel.action == "kept":
            warnings = (kept_warning(kernel, ref),)
            reporter.warn(warnings[0])
        return KernelResult(
            name,
            path,
            kernel.action,
            kernel=kernel,
            installed=added,
            steps=_steps(reporter),
            warnings=warnings,
        )


def _steps(reporter: Reporter) -> tuple[tuple[str, float], ...]:
    return tuple(getattr(reporter, "steps", ()))


def kept_warning(kernel: Kernel, ref: str) -> str:
    return (
        f"{kernel.kernelspec / KERNEL_JSON} was changed by someone after kboot wrote it; kboot "
        f"left it as it is (kboot kernel {ref} --remove, then kboot kernel {ref}, writes it "
        "afresh)"
    )
