"""`kboot download`: every wheel an environment needs, for machines without a network."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from bootstrap.install.installers import install_error, source_args, source_environ
from bootstrap.install.platforms import Target, host_platform
from bootstrap.locks.lockfile import WHEELHOUSE_LOCK, read_lock, wheelhouse_lock
from bootstrap.locks.model import LockFile, LockFileError
from bootstrap.locks.pylock import pins_digest, wheelhouse_pylock
from bootstrap.locks.resolve import make_lock
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import CommandError, InstallError, UsageError
from bootstrap.system.files import trusted_dir
from bootstrap.system.progress import Reporter
from bootstrap.system.runner import run_python

_MANYLINUX = [f"manylinux_2_{minor}" for minor in range(28, 16, -1)] + ["manylinux2014"]


def pip_platform_tags(platform: str) -> list[str]:
    """pip's --platform values for a uv target triple (this machine's own tags for itself)."""
    if platform == host_platform():
        return list(dict.fromkeys(tag.platform for tag in sys_tags()))
    arch = platform.split("-", maxsplit=1)[0]
    if platform.endswith("linux-gnu"):
        return [f"{base}_{arch}" for base in _MANYLINUX] + [f"manylinux1_{arch}"]
    if platform.endswith("apple-darwin"):
        mac_arch = "arm64" if arch == "aarch64" else arch
        return [f"macosx_{v}_0_{mac_arch}" for v in (14, 13, 12, 11)] + [
            f"macosx_10_{m}_{mac_arch}" for m in (15, 13, 9)
        ]
    if platform.endswith("windows-msvc"):
        return ["win_amd64" if arch == "x86_64" else f"win_{arch}"]
    raise UsageError(f"--platform {platform!r} is not a target kboot knows how to download for")


def _check_same_lock(dest: Path, lock: LockFile) -> None:
    """A wheelhouse is for one lock: adding another's wheels and lock would change its meaning."""
    found = wheelhouse_lock(dest)
    if found is None:
        return
    try:
        existing = read_lock(found)
    except LockFileError:
        return  # replaced by the new one, as an unreadable lock never checks anything
    recorded = existing.meta.get("lock_digest") or pins_digest(existing)
    if recorded != pins_digest(lock):
        raise UsageError(
            f"{dest} already holds a wheelhouse for another lock ({found})",
            hint="download into another --dest, or delete that wheelhouse first",
        )


@dataclass(frozen=True)
class DownloadResult:
    wheelhouse: Path
    lock: LockFile
    files: tuple[str, ...]
    bytes: int
    targets: tuple[Target, ...] = ()
    profile: str = ""  # the profile's name, for the create line that uses it

    def to_dict(self) -> dict[str, Any]:
        return {
            "wheelhouse": str(self.wheelhouse),
            "lock": str(self.wheelhouse / WHEELHOUSE_LOCK),
            "python": self.lock.python,
            "platform": self.lock.platform,
            "targets": [t.to_dict() for t in self.targets],
            "files": list(self.files),
            "bytes": self.bytes,
        }


def download(
    profile: Profile,
    *,
    dest: Path,
    targets: Sequence[Target],
    lock_path: Path | None,
    reporter: Reporter,
    make_parents: bool = True,
) -> DownloadResult:
    """Every wheel of the lock (made now for `targets`, or read from `lock_path`) for each
    of its targets, hash-checked, into `dest`, with its own pylock.toml naming them. `dest` is
    made if missing (with the folders above it unless `make_parents` is false), and must be
    a folder no other user can change: the wheels and the lock there are what an offline
    machine trusts."""
    # a file there is refused below, by name
    trusted_dir(dest.parent if dest.is_file() else dest, what="the wheelhouse")
    if lock_path is not None:
        lock = read_lock(lock_path)
        wanted = tuple(dict.fromkeys(targets)) or lock.targets
        missing = [t for t in wanted if t not in lock.targets]
        if missing:
            raise UsageError(
                f"{lock_path} is for {lock.describe_targets()}, not "
                + ", ".join(str(t) for t in missing),
                hint="leave out --python-version/--platform to download for all the lock's "
                "targets, or lock for the others too (kboot lock ... --platform P)",
            )
    else:
        label = ", ".join(str(t) for t in targets)
        with reporter.step(f"resolve {profile.name} for {label}"):
            made = make_lock(profile, targets=targets, output=None)
        lock, wanted = made.lock, made.lock.targets
    _check_same_lock(dest, lock)
    try:
        dest.mkdir(parents=make_parents, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".kboot-download-", dir=dest))
    except FileExistsError:
        raise UsageError(f"--dest {dest} is a file, not a folder") from None
    except FileNotFoundError:
        raise UsageError(
            f"cannot make the wheelhouse {dest}: no folder {dest.parent}",
            hint=f"make that folder first (mkdir -p {dest.parent})",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot write the wheelhouse {dest}: {exc.strerror}",
            hint="choose a folder you can write (it is created if missing)",
        ) from None
    try:
        for target in wanted:
            _download_for(profile, lock, target, partial, reporter)
        held = {
            item.name: (_sha256(item), item.stat().st_size)
            for item in partial.iterdir()
            if not item.name.startswith(".requirements-")
        }
        # the wheelhouse's own lock names these files by path: uv and pip install it offline
        text = wheelhouse_pylock(lock, held, wanted)
        (partial / WHEELHOUSE_LOCK).write_text(text, encoding="utf-8")
        files = []
        for item in sorted(partial.iterdir()):
            if item.name.startswith(".requirements-"):
                continue
            shutil.move(str(item), dest / item.name)  # over an older copy of the same file
            files.append(item.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # kboot's own temporary folder
    wheels = tuple(f for f in files if f != WHEELHOUSE_LOCK)
    size = sum((dest / f).stat().st_size for f in wheels)
    lock = read_lock(dest / WHEELHOUSE_LOCK)
    return DownloadResult(dest, lock, wheels, size, tuple(wanted), profile.name)


def _download_for(
    profile: Profile, lock: LockFile, target: Target, partial: Path, reporter: Reporter
) -> None:
    # pip download evaluates markers for the machine it runs on, not the target: give it
    # the target's own pins, without markers
    requirements = partial / f".requirements-{target.python}-{target.platform}.txt"
    requirements.write_text(lock.requirements_for(target), encoding="utf-8")
    platforms = [arg for tag in pip_platform_tags(target.platform) for arg in ("--platform", tag)]
    count = sum(1 for pin in lock.entries if pin.applies_to(target))
    with reporter.step(f"download {count} wheels for {target} (pip, hash-checked)"):
        try:
            run_python(  # isolated, from a private folder: no pip.py of the user's runs
                Path(sys.executable),
                [
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--require-hashes",
                    "--python-version",
                    target.python,
                    "--implementation",
                    "cp",
                    *platforms,
                    *source_args(profile.sources),
                    "-r",
                    str(requirements),
                    "-d",
                    str(partial),
                ],
                version=sys.version_info[:2],
                env={**os.environ, **source_environ(profile.sources, "pip")},
                what="downloading wheels",
            )
        except CommandError as exc:
            raise install_error(
                exc,
                f"downloading the wheels of {profile.name} for {target} failed",
                target=str(target),
                sources=profile.sources,
                other_hint="a package without a wheel for that Python and platform cannot go "
                "into a wheelhouse; the output above names it",
            ) from None


#: The files an installer takes from a --find-links folder.
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


def check_wheelhouse(folder: Path, lock: LockFile) -> None:
    """Every package file in a wheelhouse is one the lock pins, with a hash it lists: a
    changed wheel and an extra one are refused, naming the file, before any is installed.
    (The installer alone would skip them, online fetching the locked file from the index
    instead, so a tampered wheelhouse would go unnoticed.)"""
    hashes = {h.removeprefix("sha256:") for pin in lock.entries for h in pin.hashes}
    pinned = {(canonicalize_name(pin.name), str(Version(pin.version))) for pin in lock.entries}
    try:
        files = sorted(folder.iterdir())
    except OSError as exc:
        raise UsageError(f"cannot read the wheelhouse {folder}: {exc.strerror}") from None
    for item in files:
        if not item.name.endswith(_ARCHIVES) or item.name.startswith("."):
            continue
        if _sha256(item) in hashes:
            continue
        named = _pin_of(item.name)
        hint = (
            f"delete {item.name}, or download the wheelhouse again: kboot download PROFILE "
            f"--lock {lock.path} --dest {folder}"
        )
        if named in pinned:
            raise InstallError(
                f"hash mismatch for {named[0]}=={named[1]}: {item} does not match the lock's "
                "hashes, so the wheelhouse was refused (tampered with, or replaced)",
                hint=hint,
            )
        raise InstallError(
            f"{item} is not in the lock {lock.path}: a wheelhouse holds only the lock's "
            "files, so it was refused",
            hint=hint,
        )


def _pin_of(filename: str) -> tuple[str, str] | None:
    try:
        name, version, _, _ = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    return canonicalize_name(name), str(version)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InstallError(f"cannot read {path} in the wheelhouse: {exc.strerror}") from None
    return digest.hexdigest()
