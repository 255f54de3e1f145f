"""Every location kboot reads or writes, in one module.

Paths come from platformdirs and virtualenv's conventions, never hard-coded
`bin/`; each function takes the environment mapping (and where it matters the
platform) as an argument so tests can ask for any layout without patching.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

import platformdirs

from bootstrap.system.errors import UsageError
from bootstrap.system.files import trusted_dir

#: Name of the record kboot writes into every environment it builds.
RECORD_FILE = "kboot-env.json"
#: Keras home kept inside an environment built with `--scope env`.
ENV_KERAS_HOME = "keras-home"
#: Present in an environment while kboot builds it; a leftover means a killed build.
BUILDING_MARKER = "kboot-building"
#: The startup file that points the environment's interpreter at its Keras home.
PTH_FILE = "_kboot_keras_home.pth"
#: Names the folder where the processes of a `kboot run` command report the backend Keras
#: used (the startup file's code, install/venv.py, writes there); kboot's own, not an
#: interface: set only for the commands `kboot run` starts.
KERAS_REPORT_VARIABLE = "_KBOOT_KERAS_REPORT"


#: Folders of the system that are never a kboot home (kboot makes envs/, owned/ and locks/
#: in it): the top-level ones of Linux and macOS, and a few well-known ones below them.
SYSTEM_FOLDERS = frozenset(
    PurePosixPath(p)
    for p in (
        "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
        "/lost+found", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/snap",
        "/srv", "/sys", "/tmp", "/usr", "/var", "/nix", "/Applications", "/Library",
        "/System", "/Users", "/Volumes", "/cores", "/private", "/private/tmp",
        "/private/var", "/usr/bin", "/usr/lib", "/usr/local", "/usr/sbin", "/usr/share",
        "/var/lib", "/var/log", "/var/tmp", "/dev/shm", "/run/user",
    )
)  # fmt: skip


def kboot_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where kboot keeps environments and locks: $KBOOT_HOME, else the user data dir.

    Checked at each use (`check_kboot_home`): a home that is no place for kboot's folders,
    or that another user could change, is refused (exit 2).
    """
    environ = os.environ if environ is None else environ
    if environ.get("KBOOT_HOME"):
        return check_kboot_home(Path(environ["KBOOT_HOME"]).expanduser(), "KBOOT_HOME")
    return check_kboot_home(platformdirs.user_data_path("kboot", appauthor=False), None)


def check_kboot_home(path: Path, variable: str | None) -> Path:
    """`path`, unless it is `/`, a system folder, a user's home folder itself, or a folder
    another user could change (`trusted_dir`): kboot's ledger there decides what it may
    delete."""
    named = f"{variable}={path}" if variable else f"kboot's home {path}"
    hint = (
        "set KBOOT_HOME to a folder of its own, e.g. ~/.local/share/kboot"
        if variable
        else "set KBOOT_HOME to a folder of your own that only you can write"
    )
    real = Path(os.path.realpath(path))
    reason = None
    if real.parent == real:
        reason = "a filesystem root"
    elif PurePosixPath(real.as_posix()) in SYSTEM_FOLDERS or (
        PurePosixPath(path.as_posix()) in SYSTEM_FOLDERS
    ):
        reason = "a system folder"
    elif _is_home_folder(real):
        reason = "a home folder itself"
    if reason is not None:
        raise UsageError(
            f"{named} is {reason}: kboot makes its envs/, owned/ and locks/ folders in its "
            "home, so it never uses one there",
            hint=hint,
        )
    trusted_dir(path, what=variable or "kboot's home")
    return path


def _is_home_folder(real: Path) -> bool:
    """A user's home folder itself: yours ($HOME), or the one of the folder's owner."""
    homes = []
    if os.environ.get("HOME"):
        homes.append(Path(os.environ["HOME"]))
    try:
        import pwd

        homes.append(Path.home())
        homes.append(Path(pwd.getpwuid(real.stat().st_uid).pw_dir))
    except (ImportError, KeyError, OSError, RuntimeError):  # RuntimeError: no home at all
        pass
    return any(real == Path(os.path.realpath(home)) for home in homes)


def envs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """<kboot home>/envs: refused when another user could change it (kboot_home checks
    the folders above), since kboot runs the Pythons it holds."""
    return _kboot_folder(kboot_home(environ) / "envs", "kboot's environments folder")


def locks_dir(environ: Mapping[str, str] | None = None) -> Path:
    return _kboot_folder(kboot_home(environ) / "locks", "kboot's lock folder")


def _kboot_folder(path: Path, what: str) -> Path:
    if path.exists() or path.is_symlink():  # one kboot has not made yet is made by you
        trusted_dir(path, what=what)
    return path


def run_logs_dir() -> Path:
    """Where `kboot run` keeps its runs' logs: <user log dir>/runs (on Linux
    `$XDG_STATE_HOME/kboot/log/runs`, `~/.local/state/kboot/log/runs`); a private folder,
    see run/logs.py."""
    return platformdirs.user_log_path("kboot", appauthor=False) / "runs"


def user_profiles_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's own profiles: $KBOOT_PROFILES, else <user config dir>/kboot/profiles."""
    environ = os.environ if environ is None else environ
    if environ.get("KBOOT_PROFILES"):
        return Path(environ["KBOOT_PROFILES"]).expanduser()
    return platformdirs.user_config_path("kboot", appauthor=False) / "profiles"


def builtin_profiles_dir() -> Path:
    """Profiles shipped with kboot: inside the wheel, or `profiles/` in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "profiles" / "builtin"
    if packaged.is_dir():
        return packaged
    return package.parent / "profiles"


def user_keras_home(
    environ: Mapping[str, str] | None = None,
    *,
    platform: str = sys.platform,
    home: PurePath | None = None,
) -> PurePath:
    """The Keras home that Keras itself would use for this user.

    Mirrors keras/src/backend/config.py: $KERAS_HOME when set, else `~/.keras`
    (`%USERPROFILE%\\.keras` on Windows), else `/tmp/.keras` when the home
    directory is not writable.
    """
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_HOME"):
        return _pure(platform)(environ["KERAS_HOME"])
    if home is None:
        if platform == "win32" and environ.get("USERPROFILE"):
            home = _pure(platform)(environ["USERPROFILE"])
        elif environ.get("HOME"):
            home = _pure(platform)(environ["HOME"])
        else:
            home = Path.home()
    if platform != "win32" and isinstance(home, Path) and not os.access(home, os.W_OK):
        home = PurePosixPath("/tmp")  # what Keras does, see the docstring
    return _pure(platform)(home) / ".keras"


def _pure(platform: str) -> type[PurePath]:
    if platform == sys.platform:
        return Path
    return PureWindowsPath if platform == "win32" else PurePosixPath


def jupyter_data_dir(
    environ: Mapping[str, str] | None = None,
    *,
    platform: str = sys.platform,
    home: PurePath | None = None,
) -> PurePath:
    """Jupyter's user data folder, as jupyter_core.paths.jupyter_data_dir computes it.

    (kboot does not depend on jupyter_core; the tests compare the two.) $JUPYTER_DATA_DIR
    when set; with $JUPYTER_PLATFORM_DIRS on, platformdirs' user data folder; else
    `~/Library/Jupyter` on macOS, `%APPDATA%\\jupyter` on Windows (without APPDATA:
    `$JUPYTER_CONFIG_DIR\\data` or `~\\.jupyter\\data`), and `$XDG_DATA_HOME/jupyter` or
    `~/.local/share/jupyter` elsewhere. Like Jupyter, the home folder's symlinks are
    resolved (on this machine's own platform).
    """
    environ = os.environ if environ is None else environ
    pure = _pure(platform)
    if environ.get("JUPYTER_DATA_DIR"):
        return pure(environ["JUPYTER_DATA_DIR"])
    if home is None:
        variable = "USERPROFILE" if platform == "win32" else "HOME"
        home = pure(environ[variable]) if environ.get(variable) else Path.home()
        if platform == sys.platform:
            home = Path(os.path.realpath(home))
    home = pure(home)
    if environ.get("JUPYTER_PLATFORM_DIRS", "").lower() not in ("", *_FALSE):
        return _platformdirs_data(environ, platform, home) / "jupyter"
    if platform == "darwin":
        return home / "Library" / "Jupyter"
    if platform == "win32":
        if environ.get("APPDATA"):
            appdata = pure(environ["APPDATA"]) / "jupyter"
            # jupyter resolves this one
            return Path(os.path.realpath(appdata)) if platform == sys.platform else appdata
        config = environ.get("JUPYTER_CONFIG_DIR")
        return (pure(config) if config else home / ".jupyter") / "data"
    return pure(environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "jupyter"


#: Values of a Jupyter boolean variable that mean off (jupyter_core's `envset`).
_FALSE = ("no", "n", "false", "off", "0", "0.0")


def _platformdirs_data(environ: Mapping[str, str], platform: str, home: PurePath) -> PurePath:
    """platformdirs' user data folder (what $JUPYTER_PLATFORM_DIRS asks Jupyter to use)."""
    pure = _pure(platform)
    if platform == "darwin":
        return home / "Library" / "Application Support"
    if platform == "win32":
        local = environ.get("LOCALAPPDATA")
        return pure(local) if local else home / "AppData" / "Local"
    return pure((environ.get("XDG_DATA_HOME") or "").strip() or home / ".local" / "share")


def jupyter_kernels_dir(
    environ: Mapping[str, str] | None = None, *, platform: str = sys.platform
) -> PurePath:
    """Where Jupyter looks for the user's kernelspecs: `<data dir>/kernels/<name>`."""
    return jupyter_data_dir(environ, platform=platform) / "kernels"


@dataclass(frozen=True)
class EnvLayout:
    """Where things live inside a virtual environment, for one platform.

    virtualenv tells us these for an environment it creates; for an
    environment found on disk we derive them the same way virtualenv does.
    """

    root: PurePath
    bin_dir: PurePath
    python: PurePath
    site_packages: PurePath

    @classmethod
    def for_platform(
        cls,
        root: PurePath,
        *,
        python_version: tuple[int, int],
        platform: str = sys.platform,
        implementation: str = "cpython",
    ) -> EnvLayout:
        if platform == "win32":
            win_root = Path(root) if sys.platform == "win32" else PureWindowsPath(root)
            scripts = win_root / "Scripts"
            return cls(
                win_root, scripts, scripts / "python.exe", win_root / "Lib" / "site-packages"
            )
        posix_root = Path(root) if platform == sys.platform else PurePosixPath(root)
        bin_dir = posix_root / "bin"
        major, minor = python_version
        lib = f"pypy{major}.{minor}" if implementation == "pypy" else f"python{major}.{minor}"
        return cls(
            posix_root, bin_dir, bin_dir / "python", posix_root / "lib" / lib / "site-packages"
        )

    def keras_home(self) -> PurePath:
        return self.root / ENV_KERAS_HOME

    def record(self) -> PurePath:
        return self.root / RECORD_FILE


def read_pyvenv_cfg(root: Path) -> dict[str, str]:
    """The key = value pairs of an environment's pyvenv.cfg ({} when there is none)."""
    cfg = root / "pyvenv.cfg"
    values: dict[str, str] = {}
    try:
        text = cfg.read_text(encoding="utf-8", errors="replace")  # damaged: parsed, not a crash
    except OSError:
        return values
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values
