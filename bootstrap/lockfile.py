"""Locks: a profile resolved to exact versions with hashes, for one Python and platform.

A lock is a pip `--require-hashes` requirements file (the common currency: uv and
pip both install it) whose first line carries what it was made for as JSON:

    # kboot-lock: {"profile": "numpy", "python": "3.11", "platform": "x86_64-unknown-linux-gnu"}
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as host
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap import __version__
from bootstrap.errors import CommandError, InstallError, KbootError, UsageError
from bootstrap.files import atomic_write
from bootstrap.installers import legacy_pip, source_args, source_environ
from bootstrap.profiles import Profile
from bootstrap.runner import run

HEADER = "# kboot-lock: "
#: The lock `kboot download` leaves in a wheelhouse; `create --offline` uses it by default.
WHEELHOUSE_LOCK = "kboot-lock.txt"
LOCK_FORMAT = 1
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


class LockFileError(KbootError):
    """A lock file that is malformed or made for something else."""

    exit_code = 2


def host_platform() -> str:
    """This machine as uv names target platforms (`--python-platform`)."""
    machine = host.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform == "darwin":
        return f"{arch}-apple-darwin"
    if sys.platform == "win32":
        return f"{arch}-pc-windows-msvc"
    return f"{arch}-unknown-linux-gnu"


def lock_requirements(profile: Profile, python_version: str) -> tuple[str, ...]:
    """What a lock resolves: the profile's requirements, plus pip for old Pythons."""
    old_pip = legacy_pip(Version(python_version))
    return (*profile.requirements(), *([old_pip] if old_pip else []))


def requirements_digest(profile: Profile, python_version: str) -> str:
    # sources stay out: the hashes pin the files, wherever they are fetched from
    data = {"requirements": list(lock_requirements(profile, python_version))}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LockFile:
    path: Path
    meta: dict[str, Any]
    pins: dict[str, str]  # canonical name -> version
    digest: str  # sha256 of the file

    @property
    def python(self) -> str:
        return str(self.meta["python"])

    @property
    def platform(self) -> str:
        return str(self.meta["platform"])

    def summary(self) -> dict[str, str]:
        return {"path": str(self.path), "digest": self.digest}

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "digest": self.digest, **self.meta, "pins": self.pins}


def read_lock(path: Path) -> LockFile:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LockFileError(f"lock file {path} does not exist") from None
    except OSError as exc:
        raise LockFileError(f"cannot read lock file {path}: {exc.strerror}") from None
    return parse_lock(raw, path)


def parse_lock(raw: bytes, path: Path) -> LockFile:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LockFileError(f"{path} is not a kboot lock (not UTF-8 text)") from None
    first, _, body = text.partition("\n")
    hint = "make one with `kboot lock PROFILE -o FILE`"
    if not first.startswith(HEADER):
        raise LockFileError(
            f"{path} is not a kboot lock: its first line is not '{HEADER}...'", hint=hint
        )
    try:
        meta = json.loads(first[len(HEADER) :])
    except ValueError as exc:
        raise LockFileError(
            f"{path}: the kboot-lock header is not valid JSON ({exc})", hint=hint
        ) from None
    if not isinstance(meta, dict):
        raise LockFileError(f"{path}: the kboot-lock header is not a JSON object", hint=hint)
    missing = [k for k in ("profile", "python", "platform", "requirements_digest") if k not in meta]
    if missing:
        raise LockFileError(f"{path}: the kboot-lock header lacks {', '.join(missing)}", hint=hint)
    pins: dict[str, str] = {}
    for number, line in _logical_lines(body, first_line=2):
        name, version = _parse_pin(line, f"{path}, line {number}", hint)
        pins[name] = version
    if not pins:
        raise LockFileError(f"{path} pins no packages", hint=hint)
    return LockFile(path, meta, pins, hashlib.sha256(raw).hexdigest())


def _logical_lines(body: str, *, first_line: int) -> list[tuple[int, str]]:
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


def _parse_pin(line: str, where: str, hint: str) -> tuple[str, str]:
    """One `name==version [; marker] --hash=sha256:... ...` entry, exactly as `kboot lock`
    writes it: any other option (`--index-url`, `-e`, `-r`...) is refused."""
    requirement_text, sep, hashes = line.partition(" --hash=")
    if not sep:
        raise LockFileError(f"{where}: {line!r} carries no hashes (--hash=sha256:...)", hint=hint)
    for token in ("--hash=" + hashes).split():
        if not _HASH.fullmatch(token):
            raise LockFileError(
                f"{where}: {token!r} is not a --hash=sha256:<64 hex digits> entry", hint=hint
            )
    if requirement_text.lstrip().startswith("-"):
        raise LockFileError(
            f"{where}: option {requirement_text.split()[0]!r} is not allowed in a lock", hint=hint
        )
    pinned = re.search(r"==\s*([^\s;]+)", requirement_text)
    if pinned:
        try:
            Version(pinned.group(1))
        except InvalidVersion:
            raise LockFileError(f"{where}: bad version {pinned.group(1)!r}", hint=hint) from None
    try:
        requirement = Requirement(requirement_text)
    except InvalidRequirement:
        raise LockFileError(
            f"{where}: {requirement_text!r} is not an exact pin (name==version)", hint=hint
        ) from None
    specs = list(requirement.specifier)
    if requirement.url or len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise LockFileError(
            f"{where}: {requirement_text!r} is not an exact pin (name==version)", hint=hint
        )
    try:
        Version(specs[0].version)
    except InvalidVersion:
        raise LockFileError(f"{where}: bad version {specs[0].version!r}", hint=hint) from None
    return canonicalize_name(requirement.name), specs[0].version


def check_lock(lock: LockFile, profile: Profile, python_version: Version, platform: str) -> None:
    """Refuse a lock made for another Python, platform or set of requirements."""
    wanted = f"{python_version.major}.{python_version.minor}"
    if lock.python != wanted:
        raise LockFileError(
            f"{lock.path} was made for Python {lock.python}, but this environment uses "
            f"Python {python_version}",
            hint=f"build with the lock's Python (--python {lock.python}), or make a lock for "
            f"this one: kboot lock {profile.name} --python-version {wanted} -o {profile.name}-"
            f"py{wanted}.lock",
        )
    if lock.platform != platform:
        raise LockFileError(
            f"{lock.path} was made for platform {lock.platform}, this machine is {platform}",
            hint=f"make a lock for it: kboot lock {profile.name} --platform {platform}",
        )
    if lock.meta["requirements_digest"] != requirements_digest(profile, wanted):
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


def _check_replaceable(output: Path) -> None:
    """-o FILE replaces an older lock, never a file that is something else."""
    try:
        with output.open("rb") as handle:
            first = handle.read(len(HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LockFileError(f"cannot write {output}: {exc.strerror}") from None
    if first != HEADER.encode():
        raise UsageError(
            f"-o {output}: that file exists and is not a kboot lock; kboot left it alone",
            hint="choose another file name for the lock",
        )


@dataclass(frozen=True)
class LockResult:
    path: Path | None
    text: str
    lock: LockFile

    def to_dict(self) -> dict[str, Any]:
        data = self.lock.to_dict()
        if self.path is None:  # printed, not written: the JSON must carry the lock itself
            data["path"] = None
            data["text"] = self.text
        return data


def make_lock(
    profile: Profile,
    *,
    python_version: str,
    platform: str,
    output: Path | None,
) -> LockResult:
    """Resolve with uv for the target Python and platform, with hashes of every file."""
    from uv import find_uv_bin

    if not re.fullmatch(r"\d+\.\d+", python_version):
        raise UsageError(f"--python-version {python_version!r}: expected X.Y, e.g. 3.11")
    if not any(
        profile.python_specifier.contains(f"{python_version}.{micro}") for micro in (0, 5, 30)
    ):
        raise UsageError(
            f"--python-version {python_version}: profile {profile.name} needs python "
            f"{profile.python}"
        )
    if output is not None:
        _check_replaceable(output)  # before the resolution: refuse at once
    requirements = lock_requirements(profile, python_version)
    with tempfile.TemporaryDirectory(prefix="kboot-lock-") as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        try:
            result = run(
                [
                    find_uv_bin(),
                    "pip",
                    "compile",
                    "--no-config",
                    # an explicit interpreter, from a private folder: uv never runs a
                    # `.venv/bin/python` it finds in the working folder or above
                    "--python",
                    sys.executable,
                    str(source),
                    "--generate-hashes",
                    "--python-version",
                    python_version,
                    "--python-platform",
                    platform,
                    "--no-header",
                    "--no-annotate",
                    "--quiet",
                    *source_args(profile.sources),
                ],
                cwd=Path(tmp),
                env={**os.environ, **source_environ(profile.sources, "uv")},
                what=f"resolving {profile.name} for Python {python_version} on {platform}",
            )
        except CommandError as exc:
            if "invalid value" in exc.output_tail and "--python-platform" in exc.output_tail:
                raise UsageError(
                    f"--platform {platform!r} is not a platform uv knows",
                    hint="e.g. x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, "
                    "aarch64-apple-darwin, x86_64-pc-windows-msvc",
                ) from None
            raise InstallError(
                f"cannot lock {profile.name} for Python {python_version} on {platform}: "
                "no set of versions satisfies it",
                hint="check the profile's versions and that wheels exist for that target",
                details=exc.output_tail,
            ) from None
    meta = {
        "format": LOCK_FORMAT,
        "profile": profile.name,
        "python": python_version,
        "platform": platform,
        "requirements": list(requirements),
        "requirements_digest": requirements_digest(profile, python_version),
        "kboot_version": __version__,
    }
    text = HEADER + json.dumps(meta, sort_keys=True) + "\n" + result.stdout
    lock = parse_lock(text.encode("utf-8"), output or Path("<stdout>"))
    if output is not None:
        try:
            atomic_write(output, text)
        except OSError as exc:
            raise KbootError(f"cannot write {output}: {exc.strerror}") from None
    return LockResult(output, text, lock)
