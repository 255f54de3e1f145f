"""What a lock is once read, whatever its format: its pins, their files and what kboot
recorded with it (the header of kboot's first format, [tool.kboot] of a pylock.toml)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker, UndefinedEnvironmentName

from bootstrap.install.platforms import Target, platform_markers
from bootstrap.system.errors import KbootError

PYTHON_VERSION = re.compile(r"\d+\.\d+")
HINT = "make one with `kboot lock PROFILE` (it writes pylock.PROFILE.toml)"


class LockFileError(KbootError):
    """A lock file that is malformed or made for something else."""

    exit_code = 2


@dataclass(frozen=True)
class LockedFile:
    """One file a PEP 751 lock names for a package: a wheel or an sdist, with its hash."""

    name: str  # the file name
    sha256: str
    kind: str = "wheel"  # "wheel" | "sdist"
    url: str | None = None
    path: str | None = None  # relative to the lock's folder (a wheelhouse's own lock)
    size: int | None = None

    def to_toml(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "path": self.path,
            "size": self.size,
            "hashes": {"sha256": self.sha256},
        }


@dataclass(frozen=True)
class Pin:
    """One locked file set: name==version, the targets it is for (a marker), its hashes
    (and, from a PEP 751 lock, its files)."""

    name: str
    version: str
    hashes: tuple[str, ...]
    marker: str | None = None
    files: tuple[LockedFile, ...] = ()

    def applies_to(self, target: Target) -> bool:
        if self.marker is None:
            return True
        try:
            return Marker(self.marker).evaluate(target.environment())
        except (UndefinedEnvironmentName, InvalidMarker, TypeError):  # extras, groups...
            return False

    def text(self, *, with_marker: bool = True) -> str:
        head = f"{self.name}=={self.version}"
        if with_marker and self.marker:
            head += f" ; {self.marker}"
        return " \\\n".join([head, *(f"    --hash={h}" for h in self.hashes)]) + "\n"


@dataclass(frozen=True)
class LockFile:
    path: Path
    meta: dict[str, Any]
    pins: dict[str, str]  # canonical name -> version (of the first target, for a summary)
    digest: str  # sha256 of the file
    entries: tuple[Pin, ...] = ()

    @property
    def targets(self) -> tuple[Target, ...]:
        """What the lock was made for; () for a PEP 751 lock another tool wrote."""
        if "targets" in self.meta:
            return tuple(Target(t["python"], t["platform"]) for t in self.meta["targets"])
        if "python" not in self.meta:
            return ()
        return (Target(str(self.meta["python"]), str(self.meta["platform"])),)

    @property
    def standard(self) -> bool:
        """A PEP 751 pylock.toml (False: kboot's first format, `# kboot-lock:`)."""
        return self.meta.get("format") == "pylock"

    @property
    def foreign(self) -> bool:
        """Written by another tool (uv, pip, PDM...): no [tool.kboot] to check it by."""
        return self.standard and not self.targets

    @property
    def note(self) -> str | None:
        """The one line to print where an older kboot lock is read."""
        if self.standard:
            return None
        return (
            f"{self.path} is in kboot's older lock format; make it a standard pylock.toml "
            f"(uv and pip install it too): kboot lock --convert {self.path}"
        )

    @property
    def profile(self) -> str:
        return str(self.meta.get("profile", ""))

    @property
    def python(self) -> str:
        return self.targets[0].python if self.targets else ""

    @property
    def platform(self) -> str:
        return self.targets[0].platform if self.targets else ""

    def digest_for(self, python: str) -> str | None:
        digests = self.meta.get("requirements_digests")
        if isinstance(digests, dict):
            found = digests.get(python)
            return found if isinstance(found, str) else None
        return str(self.meta["requirements_digest"])

    def requirements_for(self, target: Target) -> str:
        """The pins one target installs, without markers (for `pip download --platform`,
        which evaluates markers for the machine it runs on, not the target)."""
        return "".join(p.text(with_marker=False) for p in self.entries if p.applies_to(target))

    @property
    def over_base(self) -> bool:
        """Made over a base Python's packages: holds only what that base lacks."""
        return bool(self.meta.get("base"))

    def describe_targets(self) -> str:
        if not self.targets:
            shown = " or ".join(self.meta.get("environments") or []) or "any environment"
            return f"{shown} (written by {self.meta.get('created_by') or 'another tool'})"
        return ", ".join(str(t) for t in self.targets)

    def summary(self) -> dict[str, str]:
        return {"path": str(self.path), "digest": self.digest}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "digest": self.digest,
            **self.meta,
            "targets": [t.to_dict() for t in self.targets],
            "pins": self.pins,
        }


def check_meta(meta: object, path: Path) -> None:
    """The keys kboot records with a lock (the header of the older format, [tool.kboot] of
    a pylock.toml) and their types: a lock from disk becomes a value or this error."""

    def fail(what: str) -> LockFileError:
        return LockFileError(f"{path}: kboot's record in the lock {what}", hint=HINT)

    if not isinstance(meta, dict):
        raise fail("is not a JSON object")
    if not isinstance(meta.get("profile"), str):
        raise fail("lacks profile")
    requirements = meta.get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise fail("has 'requirements' that are not a list of strings")
    if "targets" in meta:
        targets = meta["targets"]
        if (
            not isinstance(targets, list)
            or not targets
            or not all(
                isinstance(t, dict)
                and isinstance(t.get("python"), str)
                and PYTHON_VERSION.fullmatch(t["python"])
                and isinstance(t.get("platform"), str)
                for t in targets
            )
        ):
            raise fail("has 'targets' that are not a list of {python, platform}")
        digests = meta.get("requirements_digests")  # (a base is for one target only)
        if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
            raise fail("lacks requirements_digests")
        for target in targets:
            platform_markers(target["platform"])
        _check_base_meta(meta.get("base"), fail)
        return
    missing = [k for k in ("python", "platform", "requirements_digest") if k not in meta]
    if missing:
        raise fail(f"lacks {', '.join(missing)}")
    for key in ("python", "platform", "requirements_digest"):
        if not isinstance(meta[key], str):
            raise fail(f"has a '{key}' that is not a string")
    _check_base_meta(meta.get("base"), fail)


def _check_base_meta(base: object, fail: Callable[[str], LockFileError]) -> None:
    if base is not None and (
        not isinstance(base, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in base.items())
    ):
        raise fail("has a 'base' that is not a table of versions")
