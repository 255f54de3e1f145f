"""What kboot writes into each environment it builds, for list, check and re-runs.

The record says what was built; it does not prove who built it (anyone can write a
file): `lifecycle` checks its `owner_token` against kboot's own ledger for that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bootstrap.profiles.model import Profile
from bootstrap.system.errors import EnvironmentStateError, ProfileError
from bootstrap.system.files import atomic_write
from bootstrap.system.paths import RECORD_FILE

RECORD_FORMAT = 2


@dataclass(frozen=True)
class EnvRecord:
    name: str
    profile: dict[str, Any]
    profile_digest: str
    scope: str
    keras_home: str
    installer: str
    python: dict[str, str]
    system_site_packages: bool
    created_at: str
    kboot_version: str
    packages: dict[str, str] = field(default_factory=dict)
    smoke: dict[str, Any] | None = None
    startup_env: dict[str, str] = field(default_factory=dict)
    state_digest: str = ""
    lock: dict[str, Any] | None = None
    owner_token: str = ""  # repeats kboot's ledger entry for this path
    owned: list[str] = field(default_factory=list)  # the entries kboot's build made
    allow_cpu: bool = False
    accelerator: dict[str, Any] | None = None  # the build chosen for the machine, and why
    kernel: dict[str, Any] | None = None  # the Jupyter kernel it should have (kernels.py)
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_path(root: Path) -> Path:
    return root / RECORD_FILE


def write_record(root: Path, record: EnvRecord) -> None:
    atomic_write(record_path(root), json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")


#: Field name -> the JSON types it may hold (None: any JSON object key may be missing).
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "profile": (dict,),
    "profile_digest": (str,),
    "scope": (str,),
    "keras_home": (str,),
    "installer": (str,),
    "python": (dict,),
    "system_site_packages": (bool,),
    "created_at": (str,),
    "kboot_version": (str,),
    "packages": (dict,),
    "smoke": (dict, type(None)),
    "startup_env": (dict,),
    "state_digest": (str,),
    "lock": (dict, type(None)),
    "owner_token": (str,),
    "owned": (list,),
    "allow_cpu": (bool,),
    "accelerator": (dict, type(None)),
    "kernel": (dict, type(None)),
    "format": (int,),
}


def parse_record(data: object, path: Path) -> EnvRecord:
    """A record from its JSON, or an EnvironmentStateError naming the file and key."""
    hint = "rebuild the environment: kboot create PROFILE --force"
    if not isinstance(data, dict):
        raise EnvironmentStateError(
            f"{path} is damaged (a JSON {type(data).__name__}, not an object)", hint=hint
        )
    values: dict[str, Any] = {}
    for spec in fields(EnvRecord):
        if spec.name not in data:
            continue
        value = data[spec.name]
        if not isinstance(value, _TYPES[spec.name]) or (
            isinstance(value, bool) and bool not in _TYPES[spec.name]
        ):
            raise EnvironmentStateError(
                f"{path} is damaged: '{spec.name}' is {type(value).__name__}", hint=hint
            )
        values[spec.name] = value
    if not all(isinstance(v, str) for v in values.get("packages", {}).values()):
        raise EnvironmentStateError(f"{path} is damaged: 'packages' holds non-strings", hint=hint)
    if not all(isinstance(v, str) for v in values.get("owned", [])):
        raise EnvironmentStateError(f"{path} is damaged: 'owned' holds non-strings", hint=hint)
    for key in ("python", "startup_env"):
        if not all(isinstance(v, str) for v in values.get(key, {}).values()):
            raise EnvironmentStateError(f"{path} is damaged: '{key}' holds non-strings", hint=hint)
    _check_nested(values, path, hint)
    try:
        return EnvRecord(**values)
    except TypeError as exc:
        missing = str(exc).rpartition(":")[2].strip() or str(exc)
        raise EnvironmentStateError(
            f"{path} is incomplete (missing {missing})", hint=hint
        ) from None


def _check_nested(values: dict[str, Any], path: Path, hint: str) -> None:
    """The tables inside a record hold what kboot wrote there, so nothing downstream meets a
    value of another type: the profile parses back (`Profile.from_dict`), and the smoke
    report has `SmokeReport.to_dict`'s shape (checked here: `envs` sits above this layer)."""
    if "profile" in values:
        try:
            Profile.from_dict(values["profile"], where=f"{path}: 'profile'")
        except ProfileError as exc:
            raise EnvironmentStateError(f"{exc.message} (the file is damaged)", hint=hint) from None
    smoke = values.get("smoke")
    if smoke is not None:
        problem = _smoke_problem(smoke)
        if problem:
            raise EnvironmentStateError(f"{path} is damaged: 'smoke': {problem}", hint=hint)


def _smoke_problem(smoke: dict[str, Any]) -> str | None:
    """What in a recorded smoke report is not of the type `SmokeReport.to_dict` writes."""
    seconds = smoke.get("seconds", 0.0)
    devices = smoke.get("devices", [])
    checks = {
        "ok": isinstance(smoke.get("ok"), bool),
        "reported": isinstance(smoke.get("reported", {}), dict),
        "devices": isinstance(devices, list)
        and all(
            isinstance(d, dict) and all(isinstance(v, str) for v in d.values()) for d in devices
        ),
        "seconds": isinstance(seconds, (int, float))
        and not isinstance(seconds, bool)
        and (isinstance(seconds, float) or abs(seconds) < 2**1023),
        "problems": _texts(smoke.get("problems", [])),
        "warnings": _texts(smoke.get("warnings", [])),
        "keras_version": smoke.get("keras_version") is None
        or isinstance(smoke.get("keras_version"), str),
        "backend_version": smoke.get("backend_version") is None
        or isinstance(smoke.get("backend_version"), str),
    }
    wrong = [key for key, fine in checks.items() if not fine]
    return f"'{wrong[0]}' is of the wrong type" if wrong else None


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def read_record(root: Path) -> EnvRecord | None:
    """The record, None when `root` holds none; an unreadable one is an error."""
    path = record_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise EnvironmentStateError(
            f"{path} is damaged ({exc})",
            hint="rebuild the environment: kboot create PROFILE --force",
        ) from None
    return parse_record(data, path)
