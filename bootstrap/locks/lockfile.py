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
from pathlib import Path

from packaging.markers import InvalidMarker, Marker, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.install.installers import (
    legacy_pip,
)
from bootstrap.install.platforms import Target
from bootstrap.locks.model import (
    HINT,
    LockFile,
    LockFileError,
    Pin,
    check_meta,
)
from bootstrap.locks.pylock import looks_like_pylock, parse_pylock
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import UsageError

HEADER = "# kboot-lock: "
#: The lock `kboot download` leaves in a wheelhouse; `create --wheelhouse` enforces it.
WHEELHOUSE_LOCK = "pylock.toml"
#: ... and where older kboots left it (still read).
OLD_WHEELHOUSE_LOCK = "kboot-lock.txt"
LOCK_FORMAT = 1  # one target
MULTI_FORMAT = 2  # several targets, with markers
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
PYTORCH_INDEX = "download.pytorch.org/whl"
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "pytorch-triton"})


def lock_requirements(profile: Profile, python_version: str) -> tuple[str, ...]:
    """What a lock resolves: the profile's requirements, plus pip for old Pythons."""
    old_pip = legacy_pip(Version(python_version))
    return (*profile.requirements(), *([old_pip] if old_pip else []))


def requirements_digest(profile: Profile, python_version: str) -> str:
    # sources stay out: the hashes pin the files, wherever they are fetched from
    data = {"requirements": list(lock_requirements(profile, python_version))}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def wheelhouse_lock(folder: Path) -> Path | None:
    """The lock a wheelhouse holds (its pylock.toml, or an older kboot's kboot-lock.txt)."""
    for name in (WHEELHOUSE_LOCK, OLD_WHEELHOUSE_LOCK):
        if (folder / name).is_file():
            return folder / name
    return None


def read_lock(path: Path) -> LockFile:
    """A lock from disk, in either format: PEP 751 (pylock.toml) or kboot's first one."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LockFileError(f"lock file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise LockFileError(f"cannot read lock file {path}: {reason}") from None
    return parse_any(raw, path)


def parse_any(raw: bytes, path: Path) -> LockFile:
    if not raw.startswith(HEADER.encode()) and looks_like_pylock(raw):
        return parse_pylock(raw, path)
    return parse_lock(raw, path)


def parse_lock(raw: bytes, path: Path) -> LockFile:
    """kboot's first lock format: a `# kboot-lock: {json}` line over hashed pins."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LockFileError(f"{path} is not a kboot lock (not UTF-8 text)") from None
    first, _, body = text.partition("\n")
    if not first.startswith(HEADER):
        raise LockFileError(
            f"{path} is not a lock: neither a PEP 751 pylock.toml (no lock-version) nor "
            f"kboot's older format (its first line is not '{HEADER}...')",
            hint=HINT,
        )
    try:
        meta = json.loads(first[len(HEADER) :])
    except (ValueError, RecursionError) as exc:
        raise LockFileError(
            f"{path}: the kboot-lock header is not valid JSON ({exc})", hint=HINT
        ) from None
    check_meta(meta, path)
    entries = tuple(
        parse_pin(line, f"{path}, line {number}") for number, line in logical_lines(body, 2)
    )
    if not entries:
        raise LockFileError(f"{path} pins no packages", hint=HINT)
    lock = LockFile(path, meta, {}, hashlib.sha256(raw).hexdigest(), entries)
    first_target = lock.targets[0]
    pins = {p.name: p.version for p in entries if p.applies_to(first_target)}
    return LockFile(path, meta, pins, lock.digest, entries)


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
    if lock.foreign:
        _check_foreign(lock, profile, python_version, platform)
        return
    here = Target(wanted, platform)
    if here not in lock.targets:
        pythons = sorted({t.python for t in lock.targets})
        if not any(t.python == wanted for t in lock.targets):
            raise LockFileError(
                f"{lock.path} was made for {lock.describe_targets()}, but this environment "
                f"uses Python {python_version}",
                hint=f"build with the lock's Python (--python {pythons[0]}), or lock for this "
                f"one too: kboot lock {profile.name} --python-version {wanted} -o "
                f"pylock.{profile.name}-py{wanted.replace('.', '')}.toml",
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
            hint=f"make a lock for this profile: kboot lock {profile.name}",
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


def _check_foreign(
    lock: LockFile, profile: Profile, python_version: Version, platform: str
) -> None:
    """A pylock.toml another tool wrote records no profile: it must be for this Python and
    machine (its requires-python and environments) and pin what the profile asks for."""
    wanted = f"{python_version.major}.{python_version.minor}"
    here = Target(wanted, platform)
    environment = {**here.environment(), "python_full_version": str(python_version)}
    requires = lock.meta.get("requires_python")
    if requires and not SpecifierSet(requires).contains(python_version, prereleases=True):
        raise LockFileError(
            f"{lock.path} is for Python {requires}; this environment uses Python {python_version}",
            hint=f"build with a Python it is for (--python X.Y), or lock {profile.name} for "
            f"this one: kboot lock {profile.name} --python-version {wanted}",
        )
    environments = lock.meta.get("environments") or []
    if environments and not any(_holds(m, environment) for m in environments):
        raise LockFileError(
            f"{lock.path} is for {' or '.join(environments)}; this machine is {here}",
            hint=f"lock {profile.name} for it: kboot lock {profile.name} --platform {platform}",
        )
    pinned = {p.name: p.version for p in lock.entries if p.applies_to(here)}
    problems = []
    for text in lock_requirements(profile, wanted):
        requirement = Requirement(text)
        if requirement.marker is not None and not _holds(str(requirement.marker), environment):
            continue
        name = canonicalize_name(requirement.name)
        version = pinned.get(name)
        if version is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{name} {version} is not {requirement.specifier}")
    if problems:
        raise LockFileError(
            f"{lock.path} does not fit profile {profile.name}: " + "; ".join(problems),
            hint=f"lock the profile itself: kboot lock {profile.name}",
        )


def _holds(marker: str, environment: dict[str, str]) -> bool:
    try:
        return Marker(marker).evaluate(environment)
    except (UndefinedEnvironmentName, InvalidMarker, TypeError):  # extras, groups...
        return False
