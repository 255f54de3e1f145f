"""PEP 751 lock files (`pylock.toml`, `pylock.<name>.toml`): reading and writing.

The standard format, so that uv (`uv pip sync`, `uv pip install -r`) and pip (`pip install
-r`, 26.1 and newer) install a kboot lock as they are, and kboot reads the ones they and
other tools write. What kboot knows beyond the packages (the profile, its requirements,
the targets, the keras.json values, the accelerator choice) goes under `[tool.kboot]`,
which the specification leaves to tools as long as it changes nothing that is installed.

    lock-version = "1.0"
    environments = ['python_version == "3.11" and sys_platform == "linux" and ...']
    requires-python = "==3.11.*"
    created-by = "kboot"

    [[packages]]
    name = "numpy"
    version = "2.1.3"
    wheels = [
      { name = "numpy-2.1.3-cp311-...whl", url = "https://...", size = 16344718,
        hashes = { sha256 = "..." } },
    ]

    [tool.kboot]
    profile = "numpy"
    ...

Reading gives the same `LockFile` the older kboot format gives (lockfile.py), so every
command checks and installs both the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.install.platforms import Target
from bootstrap.locks.model import (
    HINT,
    LockedFile,
    LockFile,
    LockFileError,
    Pin,
    check_meta,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The file names PEP 751 allows: pylock.toml, or pylock.<name>.toml with no dot in name.
FILE_NAME = re.compile(r"^pylock\.([^.]+)\.toml$|^pylock\.toml$")
LOCK_VERSION = "1.0"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_name_for(profile: str, variant: str | None = None) -> str:
    """`pylock.<profile>.toml` (`pylock.<profile>-<variant>.toml` for a CPU or CUDA build):
    a name uv and pip take as a lock, and that tells a reader which build it holds."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", profile) or "env"
    if variant:
        stem += f"-{variant}"
    return f"pylock.{stem}.toml"


def is_standard_name(path: Path) -> bool:
    return FILE_NAME.match(path.name) is not None


def looks_like_pylock(raw: bytes) -> bool:
    """A TOML document with a `lock-version` key: worth reading as PEP 751."""
    return re.search(rb"(?m)^\s*[\"']?lock-version[\"']?\s*=", raw) is not None


# --- reading -------------------------------------------------------------------------------


def parse_pylock(raw: bytes, path: Path) -> LockFile:
    """A PEP 751 document from disk: a `LockFile`, or a LockFileError naming the key."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise LockFileError(f"{path} is not a lock (not UTF-8 text)") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise LockFileError(f"{path} is not valid TOML: {exc}", hint=HINT) from None

    def fail(what: str) -> LockFileError:
        return LockFileError(f"{path}: {what}", hint=HINT)

    version = data.get("lock-version")
    if not isinstance(version, str):
        raise fail('lacks lock-version (a PEP 751 pylock.toml has lock-version = "1.0")')
    if version.split(".")[0] != "1":
        raise LockFileError(
            f"{path}: lock-version {version!r} is not one kboot reads (1.x)",
            hint="make the lock again with this kboot, uv or pip",
        )
    environments = _markers(data.get("environments", []), "environments", fail)
    requires_python = data.get("requires-python")
    if requires_python is not None:
        if not isinstance(requires_python, str):
            raise fail("requires-python is not a string")
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise fail(f"requires-python {requires_python!r} is not a version range") from None
    packages = data.get("packages")
    if not isinstance(packages, list) or not packages:
        raise fail("lists no [[packages]]")
    entries = tuple(_package(item, number, fail) for number, item in enumerate(packages, 1))
    tool = data.get("tool", {})
    kboot = tool.get("kboot") if isinstance(tool, dict) else None
    if not isinstance(tool, dict):
        raise fail("[tool] is not a table")
    meta: dict[str, Any]
    if kboot is None:
        created_by = data.get("created-by")
        meta = {"profile": "", "created_by": created_by if isinstance(created_by, str) else ""}
    else:
        if not isinstance(kboot, dict):
            raise fail("[tool.kboot] is not a table")
        meta = _meta_from_tool(kboot, fail)
        check_meta(meta, path)
    meta["format"] = "pylock"
    meta["environments"] = list(environments)
    if requires_python is not None:
        meta["requires_python"] = requires_python
    digest = hashlib.sha256(raw).hexdigest()
    lock = LockFile(path, meta, {}, digest, entries)
    first = lock.targets[0] if lock.targets else None
    pins = {p.name: p.version for p in entries if first is None or p.applies_to(first)}
    return LockFile(path, meta, pins, digest, entries)


def _markers(value: object, key: str, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise fail(f"{key} is not a list of markers")
    for marker in value:
        try:
            Marker(marker)
        except InvalidMarker:
            raise fail(f"{key}: {marker!r} is not a valid environment marker") from None
    return tuple(value)


def _package(item: object, number: int, fail: Any) -> Pin:
    where = f"[[packages]] #{number}"
    if not isinstance(item, dict):
        raise fail(f"{where} is not a table")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise fail(f"{where} has no name")
    where = f"package {name!r}"
    version = item.get("version")
    if not isinstance(version, str):
        raise fail(f"{where} has no version: kboot installs only packages pinned to one")
    try:
        Version(version)
    except InvalidVersion:
        raise fail(f"{where}: bad version {version!r}") from None
    marker = item.get("marker")
    if marker is not None:
        (marker,) = _markers([marker], f"{where}: marker", fail)
    for kind in ("vcs", "directory", "archive"):
        if kind in item:
            raise fail(
                f"{where} is a {kind} entry: kboot installs only wheels and sdists, "
                "hash-checked, from a lock"
            )
    files: list[LockedFile] = []
    wheels = item.get("wheels", [])
    if not isinstance(wheels, list):
        raise fail(f"{where}: wheels is not a list")
    for wheel in wheels:
        files.append(_file(wheel, "wheel", where, fail))
    sdist = item.get("sdist")
    if sdist is not None:
        files.append(_file(sdist, "sdist", where, fail))
    if not files:
        raise fail(f"{where} has neither wheels nor an sdist")
    hashes = tuple(dict.fromkeys(f"sha256:{f.sha256}" for f in files))
    return Pin(canonicalize_name(name), version, hashes, marker, tuple(files))


def _file(item: object, kind: str, where: str, fail: Any) -> LockedFile:
    if not isinstance(item, dict):
        raise fail(f"{where}: a {kind} entry is not a table")
    url, path, name = item.get("url"), item.get("path"), item.get("name")
    for key, value in (("url", url), ("path", path), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise fail(f"{where}: a {kind}'s {key} is not a string")
    if url is None and path is None:
        raise fail(f"{where}: a {kind} has neither url nor path")
    if name is None:
        name = str(url or path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    size = item.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise fail(f"{where}: {name}'s size is not a number of bytes")
    hashes = item.get("hashes")
    if not isinstance(hashes, dict) or not hashes:
        raise fail(f"{where}: {name} has no hashes")
    sha256 = hashes.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise fail(f"{where}: {name} has no sha256 hash (kboot checks every file by its sha256)")
    return LockedFile(name, sha256.lower(), kind, url, path, size)


def _meta_from_tool(tool: Mapping[str, Any], fail: Any) -> dict[str, Any]:
    """[tool.kboot] (dashed keys, as TOML writes them) as the lock's meta (underscored)."""
    meta = {str(key).replace("-", "_"): value for key, value in tool.items()}
    if "targets" not in meta:
        raise fail("[tool.kboot] lacks targets")
    return meta


# --- writing -------------------------------------------------------------------------------


def render_pylock(pins: Sequence[Pin], meta: Mapping[str, Any], targets: Sequence[Any]) -> str:
    """The PEP 751 text of `pins` for `targets`, with `meta` under [tool.kboot]."""
    pythons = sorted({t.python for t in targets}, key=lambda v: tuple(map(int, v.split("."))))
    lines = [
        f"# kboot lock of profile {meta['profile']}. Install it with kboot create "
        f"{meta['profile']} --lock FILE,",
        "# uv pip sync FILE, or pip install -r FILE (pip 26.1 or newer).",
        f"lock-version = {_value(LOCK_VERSION)}",
        f"environments = {_value([t.marker() for t in targets])}",
        f"requires-python = {_value(_requires_python(pythons))}",
        'created-by = "kboot"',
    ]
    for pin in pins:
        lines += [
            "",
            "[[packages]]",
            f"name = {_value(pin.name)}",
            f"version = {_value(pin.version)}",
        ]
        if pin.marker:
            lines.append(f"marker = {_value(pin.marker)}")
        wheels = [f for f in pin.files if f.kind == "wheel"]
        sdists = [f for f in pin.files if f.kind == "sdist"]
        if wheels:
            lines.append("wheels = [")
            lines += [f"  {_value(f.to_toml())}," for f in wheels]
            lines.append("]")
        if sdists:
            lines.append(f"sdist = {_value(sdists[0].to_toml())}")
    lines += ["", "[tool.kboot]"]
    for key, value in meta.items():
        if value is not None:
            lines.append(f"{_key(key.replace('_', '-'))} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _requires_python(pythons: Sequence[str]) -> str:
    if len(pythons) == 1:
        return f"=={pythons[0]}.*"
    major, minor = pythons[-1].split(".")
    return f">={pythons[0]},<{major}.{int(minor) + 1}"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(text: str) -> str:
    # a JSON string is a TOML basic string, but for DEL and lone surrogates
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_key(str(k))} = {_value(v)}" for k, v in value.items() if v is not None
        )
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"no TOML for {value!r}")


# --- a wheelhouse's own lock ---------------------------------------------------------------

#: What a lock records of kboot's, kept when it is converted or narrowed.
_NOT_KBOOTS = frozenset(
    {
        "format",
        "environments",
        "requires_python",
        "created_by",
        "python",
        "platform",
        "requirements_digest",
    }
)


def tool_meta(lock: LockFile, targets: Sequence[Target]) -> dict[str, Any]:
    """[tool.kboot] for a lock made from `lock` (either format) for `targets`."""
    meta: dict[str, Any] = {"profile": lock.profile, "targets": [t.to_dict() for t in targets]}
    meta.update((k, v) for k, v in lock.meta.items() if k not in _NOT_KBOOTS and k not in meta)
    meta["requirements_digests"] = {t.python: lock.digest_for(t.python) for t in targets}
    return meta


def pins_digest(lock: LockFile) -> str:
    """What a lock installs (names, versions, markers, hashes), whatever its format or text:
    two locks with the same digest install the same files."""
    data = sorted([p.name, p.version, p.marker or "", sorted(p.hashes)] for p in lock.entries)
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def wheelhouse_pylock(
    lock: LockFile, files: Mapping[str, tuple[str, int]], targets: Sequence[Target]
) -> str:
    """The lock a wheelhouse holds: `lock`'s pins for `targets`, each naming its files in
    the wheelhouse by a path relative to it, so that `uv pip sync` and `pip install -r`
    install it offline as they are. `files`: file name -> (sha256, size)."""
    by_hash = {sha: (name, size) for name, (sha, size) in files.items()}
    pins = []
    for pin in lock.entries:
        if not any(pin.applies_to(t) for t in targets):
            continue
        held = [
            LockedFile(name, sha, _kind(name), None, name, size)
            for sha in (h.removeprefix("sha256:") for h in pin.hashes)
            if sha in by_hash
            for name, size in [by_hash[sha]]
        ]
        if not held:
            raise LockFileError(
                f"the wheelhouse holds no file of {pin.name}=={pin.version} from {lock.path}"
            )
        pins.append(Pin(pin.name, pin.version, pin.hashes, pin.marker, tuple(held)))
    meta = tool_meta(lock, targets)
    meta["lock_digest"] = pins_digest(lock)
    return render_pylock(pins, meta, targets)


def _kind(name: str) -> str:
    return "wheel" if name.endswith(".whl") else "sdist"
