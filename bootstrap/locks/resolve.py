"""Making a lock: uv resolves a profile for each target, with the hash of every file.

The lock format itself (reading, checking) is `lockfile.py`; this module is the only one
that runs the resolver.
"""

from __future__ import annotations

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
from bootstrap.install.availability import check_buildable
from bootstrap.install.installers import install_error, source_args, source_environ
from bootstrap.install.platforms import Target, host_platform, platform_markers
from bootstrap.locks.lockfile import (
    HEADER,
    PYTORCH_INDEX,
    TORCH_FAMILY,
    lock_requirements,
    requirements_digest,
)
from bootstrap.locks.model import PYTHON_VERSION, LockedFile, LockFile, LockFileError, Pin
from bootstrap.locks.pylock import looks_like_pylock, parse_pylock, render_pylock, tool_meta
from bootstrap.profiles.model import Profile, Sources
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
    check_buildable(profile, target)  # says why there is no build, before resolving


def make_lock(
    profile: Profile,
    *,
    python_version: str | None = None,
    platform: str | None = None,
    targets: Sequence[Target] = (),
    output: Path | None,
    base: Mapping[str, str] | None = None,
    accelerator: str | None = None,
) -> LockResult:
    """Resolve with uv for each target, with the URL, size and hash of every file, into
    one PEP 751 lock (pylock.toml).

    `base`: the packages of a Python the environment will sit on (`pip freeze` of a GPU
    node's preinstalled CUDA stack): the lock then holds only what that base lacks,
    resolved to fit the base's versions, and records the base to check it on the node.
    `accelerator`: the build chosen (cpu, cuda-12...), recorded with the lock.
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
    meta: dict[str, Any] = {
        "profile": profile.name,
        "targets": [t.to_dict() for t in chosen],
        "accelerator": accelerator,
        "keras": profile.keras_config(),
        "requirements": requirements,
        "requirements_digests": {t.python: requirements_digest(profile, t.python) for t in chosen},
        "profile_digest": profile.digest(),
        "kboot_version": __version__,
    }
    if base is not None:
        meta["base"] = dict(sorted(base.items()))
    text = render_pylock(_merge(resolved, chosen), meta, chosen)
    lock = parse_pylock(text.encode("utf-8"), output or Path("<stdout>"))
    if output is not None:
        try:
            atomic_write(output, text)
        except OSError as exc:
            raise KbootError(f"cannot write {output}: {exc.strerror}") from None
    return LockResult(output, text, lock)


def _merge(resolved: dict[Target, list[Pin]], targets: list[Target]) -> list[Pin]:
    """One pin per name==version, with the files of every target; a marker names the
    targets when not all of them use it."""
    users: dict[tuple[str, str], list[Target]] = {}
    files: dict[tuple[str, str], dict[str, LockedFile]] = {}
    for target in targets:
        for pin in resolved[target]:
            key = (pin.name, pin.version)
            users.setdefault(key, []).append(target)
            for item in pin.files:
                files.setdefault(key, {}).setdefault(item.name, item)
    pins = []
    for (name, version), using in sorted(users.items()):
        marker = None
        if len(using) != len(targets):
            marker = " or ".join(f"({t.marker()})" for t in using)
        kept = tuple(sorted(files.get((name, version), {}).values(), key=lambda f: f.name))
        hashes = tuple(dict.fromkeys(f"sha256:{f.sha256}" for f in kept))
        pins.append(Pin(name, version, hashes, marker, kept))
    return pins


def _resolve(profile: Profile, target: Target, base: Mapping[str, str] | None = None) -> list[Pin]:
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
    found = _compile(
        requirements,
        target,
        sources,
        base=base,
        what=f"resolving {profile.name} for {target}",
        failed=f"cannot lock {profile.name} for {target}",
    )
    # markers uv kept are for this target alone: each target's pins are its own
    pins = [replace(pin, marker=None) for pin in found]
    if base is None:
        return pins
    # the base's own packages are there already: keep what it lacks
    return [pin for pin in pins if base.get(pin.name) != pin.version]


def _compile(
    requirements: Sequence[str],
    target: Target,
    sources: Sources,
    *,
    base: Mapping[str, str] | None = None,
    no_deps: bool = False,
    what: str,
    failed: str,
) -> tuple[Pin, ...]:
    """uv's resolution of `requirements` for `target`, as pins with their files."""
    from uv import find_uv_bin

    with tempfile.TemporaryDirectory(prefix="kboot-lock-") as tmp:
        source = Path(tmp) / "requirements.in"
        source.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        output = Path(tmp) / "pylock.toml"
        constraint_args: list[str] = []
        if base:
            constraints = Path(tmp) / "base.txt"
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(base.items())))
            constraint_args = ["--constraint", str(constraints)]
        try:
            run(
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
                    "--format",
                    "pylock.toml",
                    "--output-file",
                    str(output),
                    "--python-version",
                    target.python,
                    "--python-platform",
                    target.platform,
                    "--no-header",
                    "--quiet",
                    *constraint_args,
                    *(["--no-deps"] if no_deps else []),
                    *source_args(sources),
                ],
                cwd=Path(tmp),
                env={**os.environ, **source_environ(sources, "uv")},
                what=what,
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
                failed,
                target=str(target),
                sources=sources,
                unknown="no set of versions satisfies it",
            ) from None
        try:
            found = parse_pylock(output.read_bytes(), output).entries
        except (OSError, LockFileError) as exc:
            raise KbootError(f"uv's resolution for {target} could not be read: {exc}") from None
    return found


def convert_lock(
    old: LockFile, profile: Profile, output: Path, accelerator: str | None
) -> LockResult:
    """An older kboot lock as a PEP 751 one: the same pins, each with its files (their URLs,
    sizes and hashes asked of the index again, by exact version and without dependencies),
    refused if the index now serves a file the old lock did not hash. `profile` gives the
    package sources."""
    if old.standard:
        raise UsageError(f"{old.path} is a pylock.toml already: nothing to convert")
    _check_replaceable(output)
    resolved: dict[Target, list[Pin]] = {}
    for target in old.targets:
        mine = [p for p in old.entries if p.applies_to(target)]
        found = _compile(
            [f"{p.name}=={p.version}" for p in mine],
            target,
            profile.sources,
            no_deps=True,
            what=f"finding the files of {old.path.name} for {target}",
            failed=f"cannot convert {old.path} for {target}",
        )
        hashes = {p.name: set(p.hashes) for p in mine}
        for pin in found:
            kept = tuple(f for f in pin.files if f"sha256:{f.sha256}" in hashes.get(pin.name, ()))
            if not kept:
                raise LockFileError(
                    f"the index serves no file of {pin.name}=={pin.version} with a hash "
                    f"{old.path} lists: kboot did not convert it",
                    hint=f"make a new lock: kboot lock {old.profile}",
                )
            resolved.setdefault(target, []).append(
                replace(
                    pin, marker=None, files=kept, hashes=tuple(f"sha256:{f.sha256}" for f in kept)
                )
            )
    meta = tool_meta(old, old.targets)
    meta.update(accelerator=accelerator, kboot_version=__version__, converted_from=old.digest)
    text = render_pylock(_merge(resolved, list(old.targets)), meta, old.targets)
    lock = parse_pylock(text.encode("utf-8"), output)
    try:
        atomic_write(output, text)
    except OSError as exc:
        raise KbootError(f"cannot write {output}: {exc.strerror}") from None
    return LockResult(output, text, lock)


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
            raw = handle.read(_MOST)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LockFileError(f"cannot write {output}: {exc.strerror}") from None
    if raw.startswith(HEADER.encode()) or _kboots_pylock(raw, output):
        return
    raise UsageError(
        f"-o {output}: that file exists and is not a lock kboot wrote; kboot left it alone",
        hint="choose another file name for the lock",
    )


_MOST = 64 << 20  # no lock is this big: a bigger file is not one to replace


def _kboots_pylock(raw: bytes, path: Path) -> bool:
    if not looks_like_pylock(raw):
        return False
    try:
        return not parse_pylock(raw, path).foreign
    except LockFileError:
        return False
