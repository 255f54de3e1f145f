"""Which targets a lock or a download is for: `kboot lock PROFILE|MANIFEST` and
`kboot download PROFILE|MANIFEST`.

Targets are every combination of the `--python-version` and `--platform` options given
(default: the Python kboot would pick for the profile, on this machine). A manifest is
locked entry by entry, each into the file its `lock` key names (relative to the
manifest), or `locks/pylock.<name>.toml` beside it. A manifest is downloaded entry by entry too:
each entry with a `wheelhouse` gets the wheels of the lock its `lock` key names (or of one
resolved now, as `kboot download PROFILE` without --lock), so that `kboot sync` installs
it offline from there.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bootstrap.fleet.sync import ManifestEntry, load_manifest
from bootstrap.install.interpreters import find_interpreter
from bootstrap.install.platforms import Target, host_platform
from bootstrap.locks.lockfile import parse_freeze, read_lock, requirements_digest
from bootstrap.locks.model import LockFileError
from bootstrap.locks.pylock import file_name_for
from bootstrap.locks.resolve import LockResult, convert_lock, make_lock
from bootstrap.locks.wheelhouse import DownloadResult, download
from bootstrap.profiles.catalog import catalog
from bootstrap.profiles.model import ACCELERATORS, Profile
from bootstrap.system.errors import KbootError, UsageError
from bootstrap.system.progress import Reporter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def default_python(profile: Profile, requested: str | None = None) -> str:
    """The Python X.Y kboot would build `profile` with here."""
    if requested and re.fullmatch(r"\d+\.\d+", requested):
        return requested
    found = find_interpreter(profile.python_specifier, requested=requested)
    return f"{found.version.major}.{found.version.minor}"


def targets_for(
    profile: Profile,
    pythons: Sequence[str] | None,
    platforms: Sequence[str] | None,
    *,
    python: str | None = None,
) -> list[Target]:
    versions = list(dict.fromkeys(pythons or [default_python(profile, python)]))
    places = list(dict.fromkeys(platforms or [host_platform()]))
    return [Target(v, p) for v in versions for p in places]


def with_accelerator(
    profile: Profile, requested: str | None, targets: Sequence[Target]
) -> tuple[Profile, str | None]:
    """The profile with its accelerator's build for the lock's targets, and that build's
    label (cpu, cuda-12...; None for a profile without a choice). This machine's driver is
    read for a target of its own platform; another platform gets the CPU build on `auto`,
    or the CUDA build asked for (`--accelerator cuda`: lock for GPU nodes from anywhere).
    Targets that need different builds go in separate locks."""
    from bootstrap.install import accelerators

    if not (requested or profile.accelerator):
        return profile, None
    resolved = []
    for target in targets:
        host = None
        if target.platform != host_platform():
            host = accelerators.HostAccelerators(target.platform, read=False)
        applied, choice = accelerators.resolve(
            profile, requested, host=host, platform=target.platform
        )
        resolved.append((applied, choice))
    first, choice = resolved[0]
    differ = [
        c
        for p, c in resolved
        if (p.requirements(), p.sources) != (first.requirements(), first.sources)
    ]
    if differ:
        labels = ", ".join(
            f"{t}: {c.label if c else '-'}" for t, (_, c) in zip(targets, resolved, strict=True)
        )
        raise UsageError(
            f"these targets need different builds of {profile.backend} ({labels})",
            hint="lock them separately, one -o FILE each, or name the build with --accelerator",
        )
    return first, choice.label if choice else None


def lock_name(profile: str, accelerator: str | None) -> str:
    """The default file of a profile's lock: pylock.<profile>.toml, with the build in the
    name where the profile's name does not say it (pylock.jax-cuda12.toml): a CPU and a
    CUDA lock of one profile are different files, and a reader sees which is which."""
    variant = (accelerator or "").replace("-", "")
    if not variant or profile.endswith(("-" + variant, "-" + (accelerator or ""))):
        return file_name_for(profile)
    return file_name_for(profile, variant)


def is_manifest(ref: str) -> bool:
    """A path to a TOML file of [[env]] tables (a profile file has a `backend`)."""
    path = Path(ref).expanduser()
    if not ref.endswith(".toml") or not path.is_file():
        return False
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return False
    return isinstance(data.get("env"), list) and "backend" not in data


@dataclass(frozen=True)
class EntryLock:
    name: str
    result: LockResult
    named_in_manifest: bool  # the entry's `lock` key names this file (sync will use it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lock": str(self.result.path),
            "used_by_sync": self.named_in_manifest,
            "targets": [t.to_dict() for t in self.result.lock.targets],
            "packages": len(self.result.lock.pins),
        }


def lock_manifest(
    manifest: Path,
    *,
    pythons: Sequence[str] | None,
    platforms: Sequence[str] | None,
    folder: Path | None = None,
) -> list[EntryLock]:
    """Lock every entry of a manifest, inline profiles too."""
    entries = load_manifest(manifest, stage="lock")
    folder = folder or manifest.parent / "locks"
    locked = []
    for entry in entries:
        output = entry.lock or folder / file_name_for(entry.name)  # (as manifest_lock)
        output.parent.mkdir(parents=True, exist_ok=True)
        targets = targets_for(entry.profile, pythons, platforms, python=entry.python)
        profile, label = with_accelerator(_with_sources(entry), entry.accelerator, targets)
        result = make_lock(profile, targets=targets, output=output, accelerator=label)
        locked.append(EntryLock(entry.name, result, entry.lock is not None))
    return locked


def _with_sources(entry: ManifestEntry) -> Profile:
    return entry.profile.with_sources(entry.sources) if entry.sources else entry.profile


def lock_profile(
    ref: str,
    *,
    pythons: Sequence[str] | None,
    platforms: Sequence[str] | None,
    accelerator: str | None,
    base_packages: Path | None,
    output: Path | None,
) -> LockResult:
    """`kboot lock PROFILE`: the profile as this folder names it, for each target."""
    loaded = catalog().resolve(ref)
    targets = targets_for(loaded, pythons, platforms)
    base = None
    if base_packages is not None:
        try:
            base = parse_freeze(base_packages.read_text(encoding="utf-8"), base_packages)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --base-packages {base_packages}: {exc}") from None
    profile, label = with_accelerator(loaded, accelerator, targets)
    if output is None:
        output = Path.cwd() / lock_name(loaded.name, label)
        _not_another_profiles(output, loaded.name)
    elif output == Path("-"):
        output = None  # to stdout
    return make_lock(profile, targets=targets, output=output, base=base, accelerator=label)


def _not_another_profiles(default: Path, profile: str) -> None:
    """The default file name is shared by `jax` on a CPU machine and `jax-cpu`: a lock of
    another profile there is not replaced unasked."""
    try:
        found = read_lock(default) if default.is_file() else None
    except LockFileError:
        return  # not kboot's: make_lock refuses it, with its reason
    if found is not None and found.profile and found.profile != profile:
        raise UsageError(
            f"{default.name} holds profile {found.profile}'s lock; kboot lock {profile} "
            "left it alone",
            hint=f"give it another file: kboot lock {profile} -o pylock.{profile}-2.toml",
        )


def convert(old_path: Path, output: Path | None) -> LockResult:
    """`kboot lock --convert OLD`: an older kboot lock as pylock.<profile>.toml beside it
    (or at `output`), with the same pins. The profile it names gives the package sources
    and the build (the one whose requirements the old lock was made from)."""
    old = read_lock(old_path)
    if old.standard:
        raise UsageError(f"{old_path} is a pylock.toml already: nothing to convert")
    try:
        loaded = catalog().resolve(old.profile)
    except KbootError as exc:
        raise UsageError(
            f"{old_path} was made from profile {old.profile!r}, which kboot cannot load here "
            f"({exc.message}); the profile gives the package sources",
            hint=f"run kboot lock --convert {old_path} where that profile is, or lock anew",
        ) from None
    targets = list(old.targets)
    profile, label = loaded, None
    for requested in (None, *(a for a in ACCELERATORS if a != "auto")):
        try:
            candidate, candidate_label = with_accelerator(loaded, requested, targets)
        except UsageError:
            continue
        if all(
            old.digest_for(t.python) == requirements_digest(candidate, t.python) for t in targets
        ):
            profile, label = candidate, candidate_label
            break
    target = output or old_path.parent / lock_name(loaded.name, label)
    return convert_lock(old, profile, target, label)


def download_profile(
    ref: str,
    *,
    dest: Path,
    pythons: Sequence[str] | None,
    platforms: Sequence[str] | None,
    lock: Path | None,
    accelerator: str | None,
    reporter: Reporter,
) -> DownloadResult:
    """`kboot download PROFILE`: every wheel for the targets asked (with --lock: those of
    the lock, narrowed to the --python-version/--platform given)."""
    loaded = catalog().resolve(ref)
    if lock is None:
        wanted = targets_for(loaded, pythons, platforms)
    else:
        wanted = _lock_targets(lock, pythons, platforms)
    return download(
        with_accelerator(loaded, accelerator, wanted)[0],
        dest=dest,
        targets=wanted,
        lock_path=lock,
        reporter=reporter,
    )


@dataclass(frozen=True)
class EntryDownload:
    name: str
    result: DownloadResult | None  # None: the entry names no wheelhouse
    lock: Path | None = None  # the lock it was downloaded from (None: resolved now)
    shared_with: str | None = None  # an entry before it filled the same wheelhouse

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lock": None if self.lock is None else str(self.lock),
            "shared_with": self.shared_with,
            "download": None if self.result is None else self.result.to_dict(),
        }


def manifest_lock(manifest: Path, entry: ManifestEntry) -> Path:
    """Where `kboot lock MANIFEST` writes an entry's lock: its `lock`, or
    `locks/pylock.<name>.toml` beside the manifest."""
    return entry.lock or manifest.parent / "locks" / file_name_for(entry.name)


@dataclass(frozen=True)
class _Planned:
    entry: ManifestEntry
    wheelhouse: Path
    profile: Profile
    targets: list[Target]
    lock: Path | None


def download_manifest(
    manifest: Path,
    *,
    pythons: Sequence[str] | None,
    platforms: Sequence[str] | None,
    reporter_for: Callable[[str], Reporter],
) -> list[EntryDownload]:
    """`kboot download MANIFEST`: every entry's wheelhouse filled from the lock `kboot lock
    MANIFEST` made for it (its `lock`, or locks/pylock.<name>.toml; none there: one resolved now),
    inline profiles too, each folder made if missing (its parent must exist). Everything
    is checked before the first download: a lock made from other requirements than its
    entry's profile, and entries that share a wheelhouse but not its lock, are refused."""
    entries = load_manifest(manifest, stage="download")
    plans: dict[str, _Planned] = {}
    owners: dict[Path, _Planned] = {}
    for entry in entries:
        if entry.wheelhouse is None:
            continue
        lock: Path | None = manifest_lock(manifest, entry)
        if entry.lock is None and not (lock is not None and lock.is_file()):
            lock = None
        plan = _plan(manifest, entry, entry.wheelhouse, lock, pythons, platforms)
        owner = owners.setdefault(entry.wheelhouse, plan)
        if owner is not plan and (lock is None or lock != owner.lock):
            raise UsageError(
                f"{manifest}: entries '{owner.entry.name}' and '{entry.name}' both name the "
                f"wheelhouse {entry.wheelhouse}, but not the same lock: a wheelhouse holds "
                "the files of one lock",
                hint="give each its own wheelhouse, or the same 'lock' to both",
            )
        plans[entry.name] = plan
    if not plans:
        raise UsageError(
            f"no entry of {manifest} names a wheelhouse, so there is nothing to download",
            hint='add wheelhouse = "DIR" (relative to the manifest) to the entries that '
            "machines without a network install",
        )
    done: dict[str, EntryDownload] = {}
    for entry in entries:
        if entry.name not in plans:
            done[entry.name] = EntryDownload(entry.name, None)
            continue
        plan = plans[entry.name]
        owner = owners[plan.wheelhouse]
        if owner is not plan:
            shared = done[owner.entry.name]
            done[entry.name] = replace(shared, name=entry.name, shared_with=owner.entry.name)
            continue
        result = download(
            plan.profile,
            dest=plan.wheelhouse,
            targets=plan.targets,
            lock_path=plan.lock,
            reporter=reporter_for(entry.name),
            make_parents=False,  # the folder the manifest names, never the ones above it
        )
        done[entry.name] = EntryDownload(entry.name, result, plan.lock)
    return list(done.values())


def _plan(
    manifest: Path,
    entry: ManifestEntry,
    wheelhouse: Path,
    lock: Path | None,
    pythons: Sequence[str] | None,
    platforms: Sequence[str] | None,
) -> _Planned:
    if lock is None:
        targets = targets_for(entry.profile, pythons, platforms, python=entry.python)
    else:
        targets = _lock_targets(lock, pythons, platforms)
    profile, _ = with_accelerator(_with_sources(entry), entry.accelerator, targets)
    if lock is not None:
        made = read_lock(lock)
        stale = [t for t in targets if made.digest_for(t.python) != requirements_digest(
            profile, t.python)]  # fmt: skip
        if stale:
            raise LockFileError(
                f"{lock} was made from other requirements than entry '{entry.name}' asks "
                f"for {stale[0]}: its wheelhouse would not install",
                hint=f"lock the manifest again (kboot lock {manifest}), then download",
            )
    return _Planned(entry, wheelhouse, profile, targets, lock)


def _lock_targets(
    lock: Path, pythons: Sequence[str] | None, platforms: Sequence[str] | None
) -> list[Target]:
    """The lock's targets that --python-version/--platform name (all, without them)."""
    wanted = [
        target
        for target in read_lock(lock).targets
        if (not pythons or target.python in pythons)
        and (not platforms or target.platform in platforms)
    ]
    if not wanted:
        raise UsageError(
            f"the lock {lock} has no target for the --python-version/--platform given",
            hint="leave them out to download for every target of the lock",
        )
    return wanted
