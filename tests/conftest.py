"""Shared fixtures. Every test runs with HOME, KERAS_HOME, KERAS_BACKEND and kboot's own
folders isolated, so no test can read or write the developer's real ~/.keras.

Two tiers: `pytest -m "not integration"` runs offline, with no installs and no pyenv
interpreters; `integration` tests build real environments. What a test needs of the
machine it declares with `@pytest.mark.needs(...)` (tests/machine.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ("machine",)  # @pytest.mark.needs and KBOOT_TEST_STRICT

# No per-example deadline: on a loaded CI machine a slow example is not a failure.
settings.register_profile("kboot", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kboot")

# Resolved once, before any test moves HOME: the installers' caches stay warm and shared.
_REAL_UV_CACHE = os.environ.get("UV_CACHE_DIR") or str(platformdirs.user_cache_path("uv"))
_REAL_PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(platformdirs.user_cache_path("pip"))
_REAL_UV_PYTHON = os.environ.get("UV_PYTHON_INSTALL_DIR") or str(
    platformdirs.user_data_path("uv") / "python"
)
REAL_HOME = Path.home()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty HOME and kboot home for each test; KERAS_* removed."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))  # kboot run's logs
    monkeypatch.setenv("KBOOT_HOME", str(tmp_path / "kboot-home"))
    monkeypatch.setenv("KBOOT_PROFILES", str(tmp_path / "user-profiles"))
    monkeypatch.setenv("UV_CACHE_DIR", _REAL_UV_CACHE)
    monkeypatch.setenv("PIP_CACHE_DIR", _REAL_PIP_CACHE)
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", _REAL_UV_PYTHON)
    for name in ("KERAS_HOME", "KERAS_BACKEND", "KBOOT_DEBUG", "TF_USE_LEGACY_KERAS"):
        monkeypatch.delenv(name, raising=False)
    yield home


@pytest.fixture
def keras_home(isolated: Path) -> Path:
    """The user's Keras home inside the isolated HOME."""
    return isolated / ".keras"


@pytest.fixture
def write_profile(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a profile file: write_profile("name", 'backend = "jax"\\n...') -> Path."""

    def write(name: str, text: str, folder: Path | None = None) -> Path:
        target = (folder or tmp_path / "profiles") / f"{name}.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    return write


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder other users can reach, in /tmp itself (pytest's tmp_path is 0700 under
    root): for the tests that act as a second user."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kboot-test-shared-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
