"""`kboot config set`: the seed's manual keras.json edit, done safely."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrap.envs.lifecycle import open_to_run
from bootstrap.envs.names import resolve
from bootstrap.envs.smoke import REQUIRED_ENTRIES, check_backend_module
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.keras_json import (
    KERAS_JSON,
    backend_warnings,
    keras_json_to_change,
    merge_keras_json,
    parse_assignments,
    read_keras_json,
)
from bootstrap.profiles.model import is_module_path, looks_like_path
from bootstrap.state.record import read_record
from bootstrap.system.errors import UsageError


@dataclass(frozen=True)
class ConfigSetResult:
    path: Path
    changed: bool
    backup: Path | None
    values: Mapping[str, Any]
    backend_checked_with: Path | None
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "changed": self.changed,
            "backup": str(self.backup) if self.backup else None,
            "set": dict(self.values),
            "backend_checked_with": str(self.backend_checked_with)
            if self.backend_checked_with
            else None,
            "warnings": list(self.warnings),
        }


def interpreter_for_check(ref: str, environ: Mapping[str, str]) -> Path:
    """`--python`: an interpreter path, or a kboot environment (name or path)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if read_record(path) is not None:
            return VirtualEnv.open(path).python
    elif not looks_like_path(ref):  # a name: what it means everywhere
        return open_to_run(resolve(ref, environ).path).python
    raise UsageError(
        f"--python {ref!r} is neither an interpreter nor a kboot environment",
        hint="give the path of the Python that will run keras, or an environment name",
    )


def set_keras_config(
    keras_home: Path,
    assignments: Sequence[str],
    *,
    python: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConfigSetResult:
    environ = os.environ if environ is None else environ
    values = parse_assignments(assignments)
    path = keras_home / KERAS_JSON
    _check_keras_home(keras_home)
    # another user's file or folder, or a malformed file, stops us before any check runs
    read_keras_json(keras_json_to_change(path))
    warnings = []
    checked = None
    backend = values.get("backend")
    if isinstance(backend, str) and is_module_path(backend):
        if python is None:
            warnings.append(
                f"could not check that {backend} imports and defines "
                f"{', '.join(REQUIRED_ENTRIES)}: pass --python (an interpreter or environment)"
            )
        else:
            checked = interpreter_for_check(python, environ)
            report = check_backend_module(checked, backend, environ=environ, version=None)
            if not report.ok:
                raise UsageError(
                    f"backend={backend}: {report.problem()} (checked with {checked}); "
                    f"{path} was left unchanged",
                    details=report.details,
                )
    if isinstance(backend, str):
        warnings.extend(backend_warnings(backend))
    result = merge_keras_json(path, values)
    if environ.get("KERAS_BACKEND") and "backend" in values:
        warnings.append(
            f"KERAS_BACKEND={environ['KERAS_BACKEND']} in your shell overrides the file's backend"
        )
    return ConfigSetResult(
        result.path, result.changed, result.backup, values, checked, tuple(warnings)
    )


def _check_keras_home(keras_home: Path) -> None:
    """A Keras home is made only as Keras makes one: the folder itself (`~/.keras`), in a
    folder that exists. A path with several missing levels is a typo, not a wish."""
    if keras_home.is_dir():
        return
    if keras_home.exists() or keras_home.is_symlink():
        raise UsageError(f"Keras home {keras_home} is not a folder")
    if not keras_home.parent.is_dir():
        missing = keras_home.parent
        while not missing.parent.is_dir() and missing.parent != missing:
            missing = missing.parent
        raise UsageError(
            f"Keras home {keras_home} does not exist, nor does {missing}",
            hint=f"check the path; if it is the one you meant, `mkdir -p {keras_home}` first",
        )
