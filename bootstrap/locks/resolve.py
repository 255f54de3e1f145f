"""Making a lock: uv resolves a profile for each target, with the hash of every file.

The lock format itself (reading, checking) is `lockfile.py`; this module is the only one
that runs the resolver.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bootstrap import __version__
from bootstrap.install.installers import install_error, source_args, source_environ
from bootstrap.install.platforms import Target, host_platform, platform_markers
from bootstrap.locks.lockfile import (
    HEADER,
    LOCK_FORMAT,
    MULTI_FORMAT,
    PYTHON_VERSION,
    PYTORCH_INDEX,
    TORCH_FAMILY,
    LockFile,
    LockFileError,
    Pin,
    lock_requirements,
    logical_lines,
    parse_lock,
    parse_pin,
    requirements_digest,
)
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import CommandError, KbootError, UsageError
from bootstrap.system.files import atomic_write
from bootstrap.system.runner import run


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


def check_target(profile: Profile, target: Target) -> None:
    if not PYTHON_VERSION.fullmatch(target.python):
        raise UsageError(f"--python-version {target.python!r}: expected X.Y, e.g. 3.11")
    if not any(
        profile.python_specifier.contains(f"{target.python}.{micro}") for micro in (0, 5, 30)
    ):
        raise UsageError(
            f"--python-version {target.python}: profile {profile.name} needs python "
            f"{profile.python}"
        )
    platform_markers(target.platform)


def make_lock(
    profile: Profile,
    *,
    python_version: str | None = None,
    platform: str | None = None,
    targets: Sequence[Target] = (),
    output: Path | None,
    base: Mapping[str, str] | None = None,
) -> LockResult:
    """Resolve with uv for each target, with hashes of every file, into one lock.

    `base`: the packages of a Python the environment will sit on (`pip freeze` of a GPU
    node's preinstalled CUDA stack): the lock then holds only what that base lacks,
    resolved to fit the base's versions, and records the base to check it on the node.
    """
    chosen = list(dict.fromkeys(targets)) or [
        Target(python_version or "", platform or host_platform())
    ]
    for target in chosen:
        check_target(profile, target)
    if base is not None and len(chosen) != 1:
        raise UsageError("a lock over a base Python is for that one Python: give one target")
    if output is not None:
        _check_replaceable(output)  # before the resolution: refuse at once
    resolved = {target: _resolve(profile, target, base) for target in chosen}
    requirements = sorted({r for t in chosen for r in lock_requirements(profile, t.python)})
    if len(chosen) == 1:
        (target,) = chosen
        meta: dict[str, Any] = {
            "format": LOCK_FORMAT,
            "profile": profile.name,
            "python": target.python,
            "platform": target.platform,
            "requirements": list(lock_requirements(profile, target.python)),
            "requirements_digest": requirements_digest(profile, target.python),
            "kboot_version": __version__,
        }
        body = resolved[target]
        if base is not None:
            meta["base"] = dict(sorted(base.items()))
    else:
        meta = {
            "format": MULTI_FORMAT,
            "profile": profile.name,
            "targets": [t.to_dict() for t in chosen],
            "requirements": requirements,
            "requirements_digests": {
                t.python: requirements_digest(profile, t.python) for t in chosen
            },
            "kboot_version": __version__,
        }
        body = "".join(pin.text() for pin in _merge(resolved, chosen))
    text = HEADER + json.dumps(meta, sort_keys=True) + "\n" + body
    lock = parse_lock(text.encode("utf-8"), output or Path("<stdout>"))
    if output is not None:
        try:
            atomic_write(output, text)
        except OSError as exc:
            raise KbootError(f"cannot write {output}: {exc.strerror}") from None
    return LockResult(output, text, lock)


def _merge(resolved: dict[Target, str], targets: list[Target]) -> list[Pin]:
    """One pin per name==version; a marker names the targets when not all of them use it."""
    users: dict[tuple[str, str], list[Target]] = {}
    hashes: dict[tuple[str, str], set[str]] = {}
    for target in targets:
        for number, line in logical_lines(resolved[target], 1):
            pin = parse_pin(line, f"uv's resolution for {target}, line {number}")
            key = (pin.name, pin.version)
            users.setdefault(key, []).append(target)
            hashes.setdefault(key, set()).update(pin.hashes)
    pins = []
    for (name, version), using in sorted(users.items()):
        marker = None
        if len(using) != len(targets):
            marker = " or ".join(f"({t.marker()})" for t in using)
        pins.append(Pin(name, version, tuple(sorted(hashes[(name, version)])), marker))
    return pins


def _resolve(profile: Profile, target: Target, base: Mapping[str, str] | None = None) -> str:
    from uv import find_uv_bin

    requirements = lock_requirements(profile, target.python)
    if base is not None:  # what the base already meets is not locked again
        requirements = tuple(r for r in requirements if not _met_by(r, base))
        if not requirements:
            raise UsageError(
                f"the base packages already meet everything {profile.name} needs: "
                "nothing to lock (create it with --system-site-packages alone)"
            )
    sources = profile.sources
    if not any(canonicalize_name(Requirement(r).name) in TORCH_FAMILY for r in requirements):
        # a PyTorch wheel index serves torch alone: a resolution without torch (a lock over
        # a base that has it) does not need it, nor to reach it
        sources = replace(
            sources,
            extra_index_urls=tuple(u for u in sources.extra_index_urls if PYTORCH_INDEX not in u),
        )
    with tempfile.TemporaryDirectory(prefix="kboot-lock-") as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        constraint_args: list[str] = []
        if base:
            constraints = Path(tmp) / "base.txt"
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(base.items())))
            constraint_args = ["--constraint", str(constraints)]
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
                    target.python,
                    "--python-platform",
                    target.platform,
                    "--no-header",
                    "--no-annotate",
                    "--quiet",
                    *constraint_args,
                    *source_args(sources),
                ],
                cwd=Path(tmp),
                env={**os.environ, **source_environ(sources, "uv")},
                what=f"resolving {profile.name} for {target}",
            )
        except CommandError as exc:
            if "invalid value" in exc.output_tail and "--python-platform" in exc.output_tail:
                raise UsageError(
                    f"--platform {target.platform!r} is not a platform uv knows",
                    hint="e.g. x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, "
                    "aarch64-apple-darwin, x86_64-pc-windows-msvc",
                ) from None
            raise install_error(
                exc,
                f"cannot lock {profile.name} for {target}",
                target=str(target),
                sources=sources,
                unknown="no set of versions satisfies it",
            ) from None
    if base is None:
        return result.stdout
    # the base's own packages are there already: keep what it lacks
    kept = [
        pin.text()
        for number, line in logical_lines(result.stdout, 1)
        if base.get((pin := parse_pin(line, f"uv's resolution, line {number}")).name)
        != pin.version
    ]
    return "".join(kept)


def _met_by(requirement: str, base: Mapping[str, str]) -> bool:
    parsed = Requirement(requirement)
    found = base.get(canonicalize_name(parsed.name))
    return found is not None and parsed.specifier.contains(found, prereleases=True)


def _check_replaceable(output: Path) -> None:
    """-o FILE replaces an older lock, never a file that is something else; its folder must
    be there (checked before resolving: a typo costs nothing)."""
    if not output.parent.is_dir():
        raise UsageError(
            f"-o {output}: no folder {output.parent}",
            hint=f"make it first (mkdir -p {output.parent}), or write the lock elsewhere",
        )
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
