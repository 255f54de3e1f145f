"""Environments built with --dest outside kboot's home, remembered for `kboot list`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bootstrap.keras_config import atomic_write
from bootstrap.paths import kboot_home


def _registry_file(environ: Mapping[str, str]) -> Path:
    return kboot_home(environ) / "external-envs.txt"


def registered(environ: Mapping[str, str]) -> list[Path]:
    try:
        lines = _registry_file(environ).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [Path(line) for line in dict.fromkeys(lines) if line.strip()]


def _save(environ: Mapping[str, str], paths: list[Path]) -> None:
    target = _registry_file(environ)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, "".join(f"{p}\n" for p in dict.fromkeys(paths)))


def register(environ: Mapping[str, str], path: Path) -> None:
    paths = registered(environ)
    if path not in paths:
        _save(environ, [*paths, path])


def unregister(environ: Mapping[str, str], path: Path) -> None:
    paths = registered(environ)
    if path in paths:
        _save(environ, [p for p in paths if p != path])
