"""Locks: a profile resolved to exact versions with hashes, for one or several targets
(a Python X.Y on a platform).

A lock is a pip `--require-hashes` requirements file (the common currency: uv and pip
both install it) whose first line carries what it was made for as JSON:

    # kboot-lock: {"profile": "numpy", "python": "3.11", "platform": "x86_64-unknown-linux-gnu"}

A lock for several targets (a lab with Linux and macOS machines, Python 3.11 and 3.12)
resolves each target on its own and writes one file: a pin every target shares is one
line; a pin only some targets use carries an environment marker naming them, so the
installer on each machine takes exactly its own set.

    # kboot-lock: {"format": 2, "targets": [{"python": "3.11", "platform": ...}, ...], ...}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.install.installers import (
    legacy_pip,
)
from bootstrap.install.platforms import Target, platform_markers
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import KbootError, UsageError

HEADER = "# kboot-lock: "
#: The lock `kboot download` leaves in a wheelhouse; `create --wheelhouse` enforces it.
WHEELHOUSE_LOCK = "kboot-lock.txt"
LOCK_FORMAT = 1  # one target
MULTI_FORMAT = 2  # several targets, with markers
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
PYTORCH_INDEX = "download.pytorch.org/whl"
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "pytorch-triton"})
PYTHON_VERSION = re.compile(r"\d+\.\d+")
HINT = "make one with `kboot lock PROFILE -o FILE`"


class LockFileError(KbootError):
    """A lock file that is malformed or made for something else."""

    exit_code = 2


def lock_requirements(profile: Profile, python_version: str) -> tuple[str, ...]:
    """What a lock resolves: the profile's requirements, plus pip for old Pythons."""
    old_pip = legacy_pip(Version(python_version))
    return (*profile.requirements(), *([old_pip] if old_pip else []))


def requirements_digest(profile: Profile, python_version: str) -> str:
    # sources stay out: the hashes pin the files, wherever they are fetched from
    data = {"requirements": list(lock_requirements(profile, python_version))}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Pin:
    """One locked file set: name==version, the targets it is for (a marker), its hashes."""

    name: str
    version: str
    hashes: tuple[str, ...]
    marker: str | None = None

    def applies_to(self, target: Target) -> bool:
        return self.marker is None or Marker(self.marker).evaluate(target.environment())

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
        if "targets" in self.meta:
            return tuple(Target(t["python"], t["platform"]) for t in self.meta["targets"])
        return (Target(str(self.meta["python"]), str(self.meta["platform"])),)

    @property
    def profile(self) -> str:
        return str(self.meta.get("profile", ""))

    @property
    def python(self) -> str:
        return self.targets[0].python

    @property
    def platform(self) -> str:
        return self.targets[0].platform

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


def read_lock(path: Path) -> LockFile:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LockFileError(f"lock file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise LockFileError(f"cannot read lock file {path}: {reason}") from None
    return parse_lock(raw, path)


def parse_lock(raw: bytes, path: Path) -> LockFile:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LockFileError(f"{path} is not a kboot lock (not UTF-8 text)") from None
    first, _, body = text.partition("\n")
    if not first.startswith(HEADER):
        raise LockFileError(
            f"{path} is not a kboot lock: its first line is not '{HEADER}...'", hint=HINT
        )
    try:
        meta = json.loads(first[len(HEADER) :])
    except (ValueError, RecursionError) as exc:
        raise LockFileError(
            f"{path}: the kboot-lock header is not valid JSON ({exc})", hint=HINT
        ) from None
    _check_meta(meta, path)
    entries = tuple(
        parse_pin(line, f"{path}, line {number}") for number, line in logical_lines(body, 2)
    )
    if not entries:
        raise LockFileError(f"{path} pins no packages", hint=HINT)
    lock = LockFile(path, meta, {}, hashlib.sha256(raw).hexdigest(), entries)
    first_target = lock.targets[0]
    pins = {p.name: p.version for p in entries if p.applies_to(first_target)}
    return LockFile(path, meta, pins, lock.digest, entries)


def _check_meta(meta: object, path: Path) -> None:
    """The header's keys and their types: a lock from disk becomes a value or this error."""

    def fail(what: str) -> LockFileError:
        return LockFileError(f"{path}: the kboot-lock header {what}", hint=HINT)

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
        return
    missing = [k for k in ("python", "platform", "requirements_digest") if k not in meta]
    if missing:
        raise fail(f"lacks {', '.join(missing)}")
    for key in ("python", "platform", "requirements_digest"):
        if not isinstance(meta[key], str):
            raise fail(f"has a '{key}' that is not a string")
    base = meta.get("base")
    if base is not None and (
        not isinstance(base, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in base.items())
    ):
        raise fail("has a 'base' that is not a table of versions")


def logical_lines(body: str, first_line: int) -> list[tuple[int, str]]:
    """Requirement lines with their `\\` continuations joined, comments and blanks left out."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = first_line
    for number, raw in enumerate(body.splitlines(), start=first_line):
        stripped = raw.strip()
        if not current:
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        continued = stripped.endswith("\\")
        current.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            lines.append((start, " ".join(current)))
            current = []
    if current:
        lines.append((start, " ".join(current)))
    return lines


def parse_pin(line: str, where: str) -> Pin:
    """One `name==version [; marker] --hash=sha256:... ...` entry, exactly as `kboot lock`
    writes it: any other option (`--index-url`, `-e`, `-r`...) is refused."""
    requirement_text, sep, hashes = line.partition(" --hash=")
    if not sep:
        raise LockFileError(f"{where}: {line!r} carries no hashes (--hash=sha256:...)", hint=HINT)
    tokens = ("--hash=" + hashes).split()
    for token in tokens:
        if not _HASH.fullmatch(token):
            raise LockFileError(
                f"{where}: {token!r} is not a --hash=sha256:<64 hex digits> entry", hint=HINT
            )
    if requirement_text.lstrip().startswith("-"):
        raise LockFileError(
            f"{where}: option {requirement_text.split()[0]!r} is not allowed in a lock", hint=HINT
        )
    pinned = re.search(r"==\s*([^\s;]+)", requirement_text)
    if pinned:
        try:
            Version(pinned.group(1))
        except InvalidVersion:
            raise LockFileError(f"{where}: bad version {pinned.group(1)!r}", hint=HINT) from None
    try:
        requirement = Requirement(requirement_text)
    except (InvalidRequirement, InvalidMarker):
        raise LockFileError(
            f"{where}: {requirement_text!r} is not an exact pin (name==version)", hint=HINT
        ) from None
    specs = list(requirement.specifier)
    if requirement.url or len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise LockFileError(
            f"{where}: {requirement_text!r} is not an exact pin (name==version)", hint=HINT
        )
    try:
        Version(specs[0].version)
    except InvalidVersion:
        raise LockFileError(f"{where}: bad version {specs[0].version!r}", hint=HINT) from None
    return Pin(
        canonicalize_name(requirement.name),
        specs[0].version,
        tuple(token.removeprefix("--hash=") for token in tokens),
        str(requirement.marker) if requirement.marker else None,
    )


def check_lock(lock: LockFile, profile: Profile, python_version: Version, platform: str) -> None:
    """Refuse a lock made for another Python, platform or set of requirements."""
    wanted = f"{python_version.major}.{python_version.minor}"
    here = Target(wanted, platform)
    if here not in lock.targets:
        pythons = sorted({t.python for t in lock.targets})
        if not any(t.python == wanted for t in lock.targets):
            raise LockFileError(
                f"{lock.path} was made for {lock.describe_targets()}, but this environment "
                f"uses Python {python_version}",
                hint=f"build with the lock's Python (--python {pythons[0]}), or lock for this "
                f"one too: kboot lock {profile.name} --python-version {wanted} -o "
                f"{profile.name}-py{wanted}.lock",
            )
        raise LockFileError(
            f"{lock.path} was made for {lock.describe_targets()}; this machine is {platform}",
            hint=f"lock for it too: kboot lock {profile.name} --platform {platform} "
            "(repeat --platform and --python-version for every target of your lab)",
        )
    if lock.digest_for(wanted) != requirements_digest(profile, wanted):
        locked = set(lock.meta.get("requirements") or ())
        needed = set(lock_requirements(profile, wanted))
        differs = ", ".join(
            [f"+{r}" for r in sorted(needed - locked)] + [f"-{r}" for r in sorted(locked - needed)]
        )
        raise LockFileError(
            f"{lock.path} was made from other requirements than profile {profile.name}'s "
            f"(made from profile {lock.meta['profile']!r}; differences: {differs or 'unknown'})",
            hint=f"make a lock for this profile: kboot lock {profile.name} -o {profile.name}.lock",
        )


def parse_freeze(text: str, where: Path) -> dict[str, str]:
    """`pip freeze` / `pip list --format=freeze` output: canonical name -> version. Lines
    that pin nothing exactly (editable installs, URLs) are left out; anything else that is
    not `name==version` is an error naming the line."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-e ") or " @ " in line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not match:
            raise UsageError(
                f"{where}, line {number}: {line!r} is not name==version (pip freeze output)",
                hint="make it on the base Python with: python -m pip list --format=freeze",
            )
        try:
            Version(match.group(2))
        except InvalidVersion:
            raise UsageError(f"{where}, line {number}: bad version {match.group(2)!r}") from None
        found[canonicalize_name(match.group(1))] = match.group(2)
    if not found:
        raise UsageError(f"{where} lists no packages (pip freeze output expected)")
    return found


def base_mismatches(lock: LockFile, actual: Mapping[str, str]) -> list[str]:
    """How the base Python differs from the one the lock was made over."""
    recorded = lock.meta.get("base") or {}
    return [
        f"{name} {version} (now {actual.get(name, 'missing')})"
        for name, version in sorted(recorded.items())
        if not _same_version(actual.get(name), version)
    ]


def _same_version(found: str | None, wanted: str) -> bool:
    if found is None:
        return False
    try:
        return Version(found) == Version(wanted)  # 1.0 == 1.0.0
    except InvalidVersion:
        return found == wanted
