"""Reading, validating, merging and writing keras.json safely.

Keras itself treats a malformed keras.json as `{}` and silently applies its
defaults, so kboot never writes a broken file and refuses to merge into one.
Writes go to a temporary file that is renamed over the target, after the previous
content was written the same way to `keras.json.bak`.

On a shared machine the other users are the threat: a keras.json is never read through a
symlink another user made (a link to root's secrets would copy them into the file and
its backup), and a change is made only where no other user could plant or swap a file
(`keras_json_to_change`).
"""

from __future__ import annotations

import difflib
import errno
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.profiles.model import (
    FLOATX_VALUES,
    IMAGE_DATA_FORMATS,
    KERAS2_BACKENDS,
    KERAS3_BACKENDS,
    is_module_path,
    near_known_backend,
)
from bootstrap.system.errors import ConfigError, KbootError, UntrustedPathError, UsageError
from bootstrap.system.files import (
    atomic_write,
    file_mode,
    file_owner_differs,
    foreign_link,
    own_symlink_target,
    read_no_follow,
    trusted_dir,
)

KERAS_JSON = "keras.json"
BACKUP_SUFFIX = ".bak"
#: What Keras 3 uses when keras.json does not say.
KERAS_DEFAULTS: Mapping[str, Any] = {
    "floatx": "float32",
    "epsilon": 1e-07,
    "backend": "tensorflow",
    "image_data_format": "channels_last",
}
KNOWN_BACKENDS = tuple(dict.fromkeys((*KERAS3_BACKENDS, *KERAS2_BACKENDS)))
SETTABLE_KEYS = ("backend", "floatx", "image_data_format", "epsilon", "nnx_enabled")
#: the values a settable key takes, where they are few (shell completion offers them)
VALUES_OF: Mapping[str, tuple[str, ...]] = {
    "backend": KNOWN_BACKENDS,
    "floatx": FLOATX_VALUES,
    "image_data_format": IMAGE_DATA_FORMATS,
    "nnx_enabled": ("true", "false"),
}


def read_keras_json(path: Path) -> dict[str, Any] | None:
    """The parsed file, None when it does not exist; a malformed file is an error.

    Your own symlink (dotfiles) is read where it points; one another user made is refused
    (UntrustedPathError), never read through.
    """
    data = _read_bytes(path)
    return None if data is None else parse_keras_json(path, data)


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes (None: no file), read once, through no link but your own."""
    found = foreign_link(path)  # at any part of the path: a Keras home that is bob's link
    if found is not None and found[0] != path:
        raise UntrustedPathError(
            f"{path} goes through {found[0]}, a symlink that another user made "
            f"({found[1]}): kboot neither reads nor writes through it",
            hint="set KERAS_HOME (or --keras-home) to a real folder of your own",
        )
    target = own_symlink_target(path)
    try:
        return read_no_follow(target)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a keras.json file") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # EMLINK: O_NOFOLLOW on the BSDs
            raise _planted_link(path) from None
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _planted_link(path: Path) -> UntrustedPathError:
    return UntrustedPathError(
        f"{path} is a symlink that another user made: kboot neither reads nor writes "
        "through it (it could point at any file you can read)",
        hint=f"delete {path} if you did not make it, or set KERAS_HOME (or --keras-home) "
        "to a folder of your own",
    )


def parse_keras_json(path: Path, data: bytes) -> dict[str, Any]:
    """The keras.json object in `data` (read from `path`); anything else is a ConfigError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(
            f"{path} is nested too deeply to be a keras.json; Keras would ignore it",
            hint=f"fix or delete {path}; kboot left it unchanged",
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "Keras would silently ignore the whole file",
            hint=f"fix or delete {path}; kboot left it unchanged",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} holds a JSON {type(data).__name__}, not an object; Keras would ignore it",
            hint=f"fix or delete {path}; kboot left it unchanged",
        )
    return data


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings from the command line, validated and typed."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise UsageError(f"'{pair}' is not KEY=VALUE", hint="for example: floatx=float64")
        if key in values:
            raise UsageError(f"{key} is given more than once")
        values[key] = validate_value(key, raw)
    if not values:
        raise UsageError("nothing to set", hint="give KEY=VALUE pairs, e.g. backend=jax")
    return values


def validate_value(key: str, raw: str) -> Any:
    if key == "floatx":
        return _choice(key, raw, FLOATX_VALUES)
    if key == "image_data_format":
        return _choice(key, raw, IMAGE_DATA_FORMATS)
    if key == "backend":
        near = near_known_backend(raw)
        if raw in KNOWN_BACKENDS or (is_module_path(raw) and near is None):
            return raw
        raise UsageError(
            f"backend={raw!r} is not a Keras backend; expected one of "
            f"{', '.join(KNOWN_BACKENDS)} or a module name (Keras 2 external backend)",
            hint=f"did you mean backend={near}?" if near else None,
        )
    if key == "epsilon":
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise UsageError(f"epsilon={raw!r} is not a positive number; e.g. epsilon=1e-07")
        return number  # a JSON float: Keras rejects an integer epsilon
    if key == "nnx_enabled":
        return _choice(key, raw.lower(), ("true", "false")) == "true"
    close = difflib.get_close_matches(key, SETTABLE_KEYS, n=1)
    raise UsageError(
        f"unknown keras.json key '{key}'; kboot sets: {', '.join(SETTABLE_KEYS)}",
        hint=f"did you mean '{close[0]}'?" if close else None,
    )


def _choice(key: str, raw: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if raw not in allowed:
        close = difflib.get_close_matches(raw.lower(), allowed, n=1)
        raise UsageError(
            f"{key}={raw!r} is not allowed; expected one of {', '.join(allowed)}",
            hint=f"did you mean {key}={close[0]}?" if close else None,
        )
    return raw


def backend_warnings(backend: str) -> list[str]:
    """A backend only Keras 2 understands: Keras 3 fails to import with it."""
    if backend in KERAS3_BACKENDS:
        return []
    kind = "an external module" if is_module_path(backend) else "a Keras 2 backend"
    return [
        f"backend={backend} is {kind}: only multi-backend Keras 2 can use it; "
        "Keras 3 will fail at `import keras` with this keras.json"
    ]


def render(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), indent=4) + "\n"


#: Called before kboot writes a file: (path, its bytes before or None, the bytes to write).
BeforeWrite = Callable[[Path, "bytes | None", bytes], None]


@dataclass(frozen=True)
class WriteResult:
    path: Path
    changed: bool
    backup: Path | None
    previous: bytes | None  # the exact bytes before


def merge_keras_json(
    path: Path,
    updates: Mapping[str, Any],
    *,
    backup: bool = True,
    before_write: BeforeWrite | None = None,
) -> WriteResult:
    """Set `updates` in the keras.json at `path`, keeping every key kboot does not own.

    A keras.json that is a symlink of the user's own (dotfiles) is updated where it
    points, and stays a link; anything another user could have planted or could swap is
    refused first (`keras_json_to_change`). The file is read once, never through a link,
    and the backup gets the bytes read and the file's own permissions (a private
    keras.json keeps a private backup). `before_write` hears of each write first (for a
    journal).
    """
    path = keras_json_to_change(path)
    previous = _read_bytes(path)
    # a malformed file stops us here, left as it is
    existing = None if previous is None else parse_keras_json(path, previous)
    merged = {**(existing or {}), **updates}
    text = render(merged).encode("utf-8")
    # compare the rendered text: 1 == 1.0 in Python, but Keras rejects an integer epsilon
    if existing is not None and render(existing).encode("utf-8") == text:
        return WriteResult(path, changed=False, backup=None, previous=previous)
    backup_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if backup and previous is not None:
            backup_path = path.with_name(path.name + BACKUP_SUFFIX)
            if before_write is not None:
                before_write(backup_path, _regular_file_bytes(backup_path), previous)
            atomic_write(backup_path, previous, mode=file_mode(path))
        if before_write is not None:
            before_write(path, previous, text)
        atomic_write(path, text)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}",
            hint="make the Keras home writable, or point KERAS_HOME (or --keras-home) elsewhere",
        ) from None
    return WriteResult(path, changed=True, backup=backup_path, previous=previous)


def _regular_file_bytes(path: Path) -> bytes | None:
    """The content of a regular file at `path`; None for nothing, or a link (never followed)."""
    try:
        return read_no_follow(path)
    except OSError:
        return None


def keras_json_to_change(path: Path) -> Path:
    """The file a change to the keras.json at `path` goes to, once it is safe to change.

    Your own symlink (dotfiles) leads to where it points. Refused (UntrustedPathError,
    exit 2), before anything is read: a symlink another user made at the file or at its
    `.bak`; a file or `.bak` that belongs to another user (root aside); and a Keras home
    that another user could change or swap (`trusted_dir`: it and every folder above it
    yours or root's, writable by nobody else, a sticky /tmp only above it).
    """
    target = own_symlink_target(path)
    me = os.geteuid() if hasattr(os, "geteuid") else None
    for file in (target, target.with_name(target.name + BACKUP_SUFFIX)):
        try:
            info = file.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
        if me is None:  # pragma: no cover - no owners on Windows
            continue
        if stat.S_ISLNK(info.st_mode) and info.st_uid != me:
            raise _planted_link(file)
        if info.st_uid not in (me, 0):
            raise UntrustedPathError(
                f"{file} belongs to another user: kboot does not change (or copy) another "
                "user's keras.json",
                hint="let its owner change it, or set KERAS_HOME (or --keras-home) to a "
                "folder of your own",
            )
    trusted_dir(target.parent, what="the Keras home")
    return target


def other_users_home(keras_home: Path) -> str | None:
    """A warning when another user owns the Keras home (the shared /tmp/.keras fallback)."""
    if file_owner_differs(keras_home):
        return (
            f"{keras_home} belongs to another user, who can change the keras.json you read: "
            "set KERAS_HOME to a folder of your own"
        )
    return None


@dataclass(frozen=True)
class ConfigView:
    """What `kboot config show` reports: the file, its values, and what overrides them."""

    keras_home: Path
    keras_home_source: str  # "--keras-home", "KERAS_HOME", or "default"
    path: Path
    exists: bool
    file_values: Mapping[str, Any]
    effective: Mapping[str, Any]
    overrides: tuple[str, ...]
    problems: Mapping[str, str] = field(default_factory=dict)  # key -> what Keras does
    invalid: str | None = None  # why the whole file is not a keras.json Keras reads

    def to_dict(self) -> dict[str, Any]:
        return {
            "keras_home": str(self.keras_home),
            "keras_home_source": self.keras_home_source,
            "path": str(self.path),
            "exists": self.exists,
            "file_values": dict(self.file_values),
            "effective": dict(self.effective),
            "overrides": list(self.overrides),
            "problems": dict(self.problems),
            "invalid": self.invalid,
        }


def value_problem(key: str, value: Any) -> str | None:  # noqa: PLR0911  # one per rule
    """What is wrong with one keras.json value, as Keras would take it; None if fine."""
    if key == "epsilon":
        if isinstance(value, bool) or not isinstance(value, float):
            return f"{value!r} is not a float: `import keras` fails (write 1e-07, not 1)"
        if not math.isfinite(value) or value <= 0:
            return f"{value!r} is not a positive number"
        return None
    if key == "nnx_enabled":
        return None if isinstance(value, bool) else f"{value!r} is not true or false"
    if key not in ("floatx", "image_data_format", "backend"):
        return None
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    try:
        validate_value(key, value)
    except UsageError as exc:
        return exc.message + (f" ({exc.hint})" if exc.hint else "")
    return None


def describe_config(keras_home: Path, source: str, environ: Mapping[str, str]) -> ConfigView:
    path = keras_home / KERAS_JSON
    invalid = None
    try:
        values = read_keras_json(path)
    except ConfigError as exc:  # shown, not refused: Keras ignores it, so say what applies
        values, invalid = None, exc.message
    effective = {**KERAS_DEFAULTS, **(values or {})}
    overrides = []
    if environ.get("KERAS_BACKEND"):
        overrides.append(
            f"KERAS_BACKEND={environ['KERAS_BACKEND']} in the environment overrides "
            f"backend={effective['backend']!r} from the file"
        )
        effective["backend"] = environ["KERAS_BACKEND"]
    return ConfigView(
        keras_home=keras_home,
        keras_home_source=source,
        path=path,
        exists=values is not None or invalid is not None,
        file_values=values or {},
        effective=effective,
        overrides=tuple(overrides),
        problems={
            key: problem
            for key, value in (values or {}).items()
            if (problem := value_problem(key, value)) is not None
        },
        invalid=invalid,
    )


def shell_overrides(
    backend: str, scope: str, keras_home: str | Path, environ: Mapping[str, str]
) -> list[str]:
    """What in the caller's shell would make an environment behave differently."""
    warnings = []
    shell_backend = environ.get("KERAS_BACKEND")
    if shell_backend and shell_backend != backend:
        warnings.append(
            f"your shell sets KERAS_BACKEND={shell_backend}, which overrides backend={backend!r} "
            "of this environment: unset it (`unset KERAS_BACKEND`) or it wins"
        )
    home = environ.get("KERAS_HOME")
    if scope == "env" and home and Path(home) != Path(keras_home):
        warnings.append(
            f"your shell sets KERAS_HOME={home}, so this environment's keras.json "
            f"({keras_home}) is not used: unset KERAS_HOME"
        )
    if environ.get("PYTHONPATH"):
        warnings.append(
            f"your shell sets PYTHONPATH={environ['PYTHONPATH']}: the environment's Python "
            "imports from there first (another keras or backend can shadow its own; the smoke "
            "test ran without it): unset PYTHONPATH"
        )
    return warnings


def config_drift(keras_home: Path, wanted: Mapping[str, Any]) -> str | None:
    """The first keras.json key in `keras_home` that no longer says what `wanted` (a
    profile's values) does; without importing Keras."""
    path = keras_home / KERAS_JSON
    try:
        values = read_keras_json(path) or {}
    except KbootError as exc:
        return exc.message
    for key in ("backend", "floatx", "image_data_format", "epsilon"):
        found, value = values.get(key), wanted.get(key)
        if found != value:
            return f"{key} is {found!r} in {path}, the profile says {value!r}"
    return None
