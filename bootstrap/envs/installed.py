"""What an environment holds, and how that differs from what its lock installed.

Read from the `name-version.dist-info` (and `.egg-info`) folder names in the
environment's own site-packages, found from its pyvenv.cfg: no Python is started and no
METADATA is read, so `list`, `check` and `sync --check` stay fast, and nothing in the
environment runs. The names are read as the smoke test's probe reads them (`_probe.py`),
so they compare one to one with the record's `packages`.

What counts as lock drift (an environment built from a lock only; one built from a
profile's ranges is yours to add to):
- a package whose installed version is not the one kboot installed;
- a package kboot installed that is gone;
- a package kboot did not install (`pip install six` by hand).
What kboot installed is its record's `packages`: the lock's pins for this machine, plus
what kboot itself adds beyond the lock (pip, seeded for `--installer pip`; the project of
`--editable`), so those never count. With `--system-site-packages` the base Python's
packages are not read (that would need the base's own Python), so a package that is gone
is not told there; a changed or an added one still is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.install.venv import VirtualEnv
from bootstrap.state.record import EnvRecord
from bootstrap.system.errors import EnvironmentStateError

_SUFFIXES = (".dist-info", ".egg-info")


def scan_dist_info(folders: Iterable[Path]) -> dict[str, str]:
    """Canonical name -> version, from the folder names (the first folder wins, as on
    sys.path)."""
    found: dict[str, str] = {}
    for folder in folders:
        try:
            names = sorted(item.name for item in folder.iterdir())
        except OSError:
            continue
        for item in names:
            for suffix in _SUFFIXES:
                if item.endswith(suffix):
                    name, _, version = item[: -len(suffix)].partition("-")
                    if name and version:
                        found.setdefault(canonicalize_name(name), version.split("-")[0])
    return found


def read_installed(root: Path) -> dict[str, str] | None:
    """What the environment at `root` has installed in its own site-packages; None when
    it is no virtual environment kboot can read."""
    try:
        env = VirtualEnv.open(root)
    except (EnvironmentStateError, OSError):
        return None
    if not env.site_packages.is_dir():
        return None
    return scan_dist_info([env.site_packages])


@dataclass(frozen=True)
class PackageDrift:
    """One package that is not as kboot installed it from the lock."""

    name: str
    locked: str | None  # what kboot installed (None: it did not install it)
    installed: str | None  # what is there now (None: gone)

    def describe(self) -> str:
        if self.locked is None:
            return f"{self.name} {self.installed} is installed but not in the lock"
        if self.installed is None:
            return f"{self.name} {self.locked} (locked) is gone"
        return f"{self.name} is {self.installed}, the lock says {self.locked}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "locked": self.locked, "installed": self.installed}


def _same_version(one: str, other: str) -> bool:
    try:
        return Version(one) == Version(other)
    except InvalidVersion:
        return one == other


def lock_drift(record: EnvRecord, installed: Mapping[str, str]) -> tuple[PackageDrift, ...]:
    """How what is installed differs from what kboot installed from the lock (none for an
    environment built without a lock)."""
    if record.lock is None or not record.packages:  # no lock, or nothing recorded to compare
        return ()
    expected = record.packages
    drift = []
    for name in sorted(set(expected) | set(installed)):
        locked, now = expected.get(name), installed.get(name)
        if now is None:
            if locked is not None and not record.system_site_packages:
                drift.append(PackageDrift(name, locked, None))
        elif locked is None or not _same_version(locked, now):
            drift.append(PackageDrift(name, locked, now))
    return tuple(drift)


def describe_drift(drift: Iterable[PackageDrift], *, most: int = 6) -> str:
    """One line: the first few, and how many more."""
    items = [d.describe() for d in drift]
    shown = "; ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")
