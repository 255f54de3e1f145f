"""What kboot writes into each environment it builds, for list, check and re-runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.errors import EnvironmentStateError, KbootError
from bootstrap.keras_config import KERAS_JSON, atomic_write, read_keras_json
from bootstrap.paths import RECORD_FILE

RECORD_FORMAT = 1


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
    format: int = RECORD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config_drift(self) -> str | None:
        """The first keras.json key that no longer says what the profile does (no import)."""
        path = Path(self.keras_home) / KERAS_JSON
        try:
            values = read_keras_json(path) or {}
        except KbootError as exc:
            return exc.message
        for key in ("backend", "floatx", "image_data_format", "epsilon"):
            found, wanted = values.get(key), self.profile.get(key)
            if found != wanted:
                return f"{key} is {found!r} in {path}, the profile says {wanted!r}"
        return None


def record_path(root: Path) -> Path:
    return root / RECORD_FILE


def write_record(root: Path, record: EnvRecord) -> None:
    atomic_write(record_path(root), json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")


def read_record(root: Path) -> EnvRecord | None:
    """The record, None when `root` holds none; an unreadable one is an error."""
    path = record_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EnvironmentStateError(
            f"{path} is damaged ({exc})",
            hint="recreate the environment with `kboot create --force`",
        ) from None
    known = set(EnvRecord.__dataclass_fields__)
    try:
        return EnvRecord(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise EnvironmentStateError(
            f"{path} is incomplete ({exc})", hint="recreate it with `kboot create --force`"
        ) from None
