"""Locations: environment layouts per platform, Keras home, kboot home, pyvenv.cfg."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import platformdirs
import pytest

from bootstrap.system.paths import (
    EnvLayout,
    builtin_profiles_dir,
    envs_dir,
    kboot_home,
    locks_dir,
    read_pyvenv_cfg,
    user_keras_home,
    user_profiles_dir,
)

# --- EnvLayout -------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_posix_layout(platform: str) -> None:
    layout = EnvLayout.for_platform(
        PurePosixPath("/envs/e"), python_version=(3, 12), platform=platform
    )
    assert str(layout.root) == "/envs/e"
    assert str(layout.bin_dir) == "/envs/e/bin"
    assert str(layout.python) == "/envs/e/bin/python"
    assert str(layout.site_packages) == "/envs/e/lib/python3.12/site-packages"
    assert str(layout.keras_home()) == "/envs/e/keras-home"
    assert str(layout.record()) == "/envs/e/kboot-env.json"
    if platform == sys.platform:
        assert isinstance(layout.python, Path)  # a concrete path on the running platform
    else:
        assert isinstance(layout.python, PurePosixPath)


def test_pypy_layout() -> None:
    layout = EnvLayout.for_platform(
        PurePosixPath("/envs/p"), python_version=(3, 10), platform="linux", implementation="pypy"
    )
    assert str(layout.site_packages) == "/envs/p/lib/pypy3.10/site-packages"


def test_windows_layout() -> None:
    layout = EnvLayout.for_platform(
        PureWindowsPath(r"C:\envs\e"), python_version=(3, 12), platform="win32"
    )
    assert isinstance(layout.python, PureWindowsPath)
    assert str(layout.bin_dir) == r"C:\envs\e\Scripts"
    assert str(layout.python) == r"C:\envs\e\Scripts\python.exe"
    assert str(layout.site_packages) == r"C:\envs\e\Lib\site-packages"
    assert str(layout.keras_home()) == r"C:\envs\e\keras-home"
    assert str(layout.record()) == r"C:\envs\e\kboot-env.json"


def test_windows_layout_has_no_version_in_site_packages() -> None:
    a = EnvLayout.for_platform(PureWindowsPath("D:/x"), python_version=(3, 10), platform="win32")
    b = EnvLayout.for_platform(PureWindowsPath("D:/x"), python_version=(3, 13), platform="win32")
    assert a == b


# --- user_keras_home -------------------------------------------------------------------------


def test_keras_home_from_keras_home_variable(tmp_path: Path) -> None:
    home = user_keras_home({"KERAS_HOME": str(tmp_path / "kh"), "HOME": str(tmp_path)})
    assert home == tmp_path / "kh"


def test_keras_home_default_is_dot_keras_in_home(tmp_path: Path) -> None:
    assert user_keras_home({"HOME": str(tmp_path)}) == tmp_path / ".keras"


def test_keras_home_default_uses_the_process_environment(isolated: Path) -> None:
    assert user_keras_home() == isolated / ".keras"


def test_keras_home_falls_back_to_tmp_when_home_is_not_writable(tmp_path: Path) -> None:
    # As root every existing folder is writable; a home that does not exist is not.
    missing = tmp_path / "no-such-home"
    assert user_keras_home({"HOME": str(missing)}) == Path("/tmp/.keras")


def test_keras_home_on_windows_uses_userprofile() -> None:
    home = user_keras_home({"USERPROFILE": r"C:\Users\ada", "HOME": "/home/ada"}, platform="win32")
    assert isinstance(home, PureWindowsPath)
    assert str(home) == r"C:\Users\ada\.keras"


def test_keras_home_on_windows_with_keras_home() -> None:
    env = {"KERAS_HOME": r"D:\kh", "USERPROFILE": r"C:\Users\ada"}
    home = user_keras_home(env, platform="win32")
    assert str(home) == r"D:\kh"


def test_keras_home_explicit_home_argument(tmp_path: Path) -> None:
    assert user_keras_home({}, home=tmp_path) == tmp_path / ".keras"


# --- kboot's own folders ---------------------------------------------------------------------


def test_kboot_home_override(tmp_path: Path) -> None:
    env = {"KBOOT_HOME": str(tmp_path / "kb")}
    assert kboot_home(env) == tmp_path / "kb"
    assert envs_dir(env) == tmp_path / "kb" / "envs"
    assert locks_dir(env) == tmp_path / "kb" / "locks"


def test_kboot_home_expands_user(isolated: Path) -> None:
    assert kboot_home({"KBOOT_HOME": "~/kb"}) == isolated / "kb"


def test_kboot_home_default_is_the_user_data_dir(isolated: Path) -> None:
    default = kboot_home({})
    assert default == platformdirs.user_data_path("kboot", appauthor=False)
    if sys.platform.startswith("linux"):
        assert default == isolated / ".local" / "share" / "kboot"  # XDG_DATA_HOME from conftest


def test_kboot_home_uses_the_process_environment(tmp_path: Path) -> None:
    assert kboot_home() == tmp_path / "kboot-home"  # conftest's KBOOT_HOME


def test_user_profiles_dir(tmp_path: Path, isolated: Path) -> None:
    assert user_profiles_dir({"KBOOT_PROFILES": str(tmp_path / "p")}) == tmp_path / "p"
    config = platformdirs.user_config_path("kboot", appauthor=False)
    assert user_profiles_dir({}) == config / "profiles"
    if sys.platform.startswith("linux"):
        assert user_profiles_dir({}) == isolated / ".config" / "kboot" / "profiles"


def test_builtin_profiles_dir_holds_profiles() -> None:
    assert (builtin_profiles_dir() / "numpy.toml").is_file()


# --- pyvenv.cfg ------------------------------------------------------------------------------


def test_read_pyvenv_cfg(tmp_path: Path) -> None:
    (tmp_path / "pyvenv.cfg").write_text(
        "home = /usr/bin\n"
        "implementation = CPython\n"
        "version_info = 3.12.1.final.0\n"
        "include-system-site-packages = false\n"
        "no equals sign here\n"
        "prompt = a=b\n",
        encoding="utf-8",
    )
    assert read_pyvenv_cfg(tmp_path) == {
        "home": "/usr/bin",
        "implementation": "CPython",
        "version_info": "3.12.1.final.0",
        "include-system-site-packages": "false",
        "prompt": "a=b",
    }


def test_read_pyvenv_cfg_missing(tmp_path: Path) -> None:
    assert read_pyvenv_cfg(tmp_path) == {}
    assert read_pyvenv_cfg(tmp_path / "nope") == {}
