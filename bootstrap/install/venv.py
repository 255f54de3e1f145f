"""One small class for a virtual environment kboot builds or finds on disk."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrap.install.interpreters import Interpreter
from bootstrap.system.errors import EnvironmentStateError, os_error_hint
from bootstrap.system.files import atomic_write
from bootstrap.system.paths import PTH_FILE, EnvLayout, read_pyvenv_cfg
from bootstrap.system.runner import CommandResult, run_python

#: Adds a virtualenv base's site folders to an environment made over it.
BASE_SITE_PTH = "_kboot_base_site.pth"
_VENV_SITE = (
    "import json, site, sys\n"
    "venv = sys.prefix != getattr(sys, 'base_prefix', sys.prefix)\n"
    "print(json.dumps(site.getsitepackages() if venv else []))"
)


def venv_site_folders(interpreter: Interpreter) -> list[str]:
    """The site folders of `interpreter` when it runs in a virtualenv (else none)."""
    import json

    version = (interpreter.version.major, interpreter.version.minor)
    result = run_python(
        interpreter.path, ["-c", _VENV_SITE], version=version, what="asking the base Python"
    )
    folders = json.loads(result.stdout.strip().splitlines()[-1])
    return [str(f) for f in folders if isinstance(f, str)]


#: What the startup file runs, in a namespace of its own, at every start of the interpreter.
#: A variable the user set wins. One that another kboot environment's startup set (a
#: Jupyter server of one environment starting a kernel of another inherits it) does not:
#: `_KBOOT_STARTUP` says which values a startup file put there, and the next one replaces
#: them, or removes those it does not set itself.
#:
#: In a process that `kboot run` started (and its children: they inherit the variable),
#: `$_KBOOT_KERAS_REPORT` names a private folder of kboot's; at exit, only if the program
#: imported keras (the hook never imports it), the backend Keras used there is written to
#: a file of its own in that folder (`<pid>-<random>.json`, by an atomic rename): several
#: processes report side by side. Once per process: site may run a `.pth` twice (seen with
#: a virtualenv made from a venv's Python). Never raises, never prints; Python 3.6 syntax
#: (Keras 2 environments), ASCII.
_STARTUP_CODE = """\
import os, json
mine = json.loads(%s)
try:
    inherited = json.loads(os.environ.get('_KBOOT_STARTUP') or '{}')
except (ValueError, RecursionError):
    inherited = {}
if not isinstance(inherited, dict):
    inherited = {}
for key, value in inherited.items():
    if key not in mine and os.environ.get(key) == value:
        del os.environ[key]
done = {}
for key, value in mine.items():
    current = os.environ.get(key)
    if not current or current == inherited.get(key):
        os.environ[key] = value
        done[key] = value
if done:
    os.environ['_KBOOT_STARTUP'] = json.dumps(done)
else:
    os.environ.pop('_KBOOT_STARTUP', None)
import sys
folder = os.environ.get('_KBOOT_KERAS_REPORT')
if folder and not getattr(sys, '_kboot_keras_report', False):
    sys._kboot_keras_report = True
    import atexit

    def kboot_keras_report(folder=folder):
        try:
            keras = sys.modules.get('keras')
            if keras is None:
                return
            config = getattr(keras, 'config', None)
            if not hasattr(config, 'backend'):
                config = keras.backend
            found = {'pid': os.getpid(), 'prefix': sys.prefix,
                     'keras': str(getattr(keras, '__version__', ''))}
            for key in ('backend', 'floatx', 'image_data_format'):
                try:
                    found[key] = str(getattr(config, key)())
                except Exception:
                    found[key] = None
            name = str(os.getpid()) + '-' + os.urandom(4).hex() + '.json'
            temp = os.path.join(folder, '.' + name)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0)
            fd = os.open(temp, flags, 0o600)
            try:
                os.write(fd, json.dumps(found).encode('ascii'))
            finally:
                os.close(fd)
            os.replace(temp, os.path.join(folder, name))
        except BaseException:
            pass

    atexit.register(kboot_keras_report)
"""


def bundled_pip(version: tuple[int, int]) -> Path | None:
    """The pip wheel virtualenv carries for a Python X.Y (the one `--installer pip`
    environments are seeded with), if this virtualenv has one: uv installs it from there,
    so an environment gets pip from no index at all (a private mirror holding only what
    `kboot download` fetched has none)."""
    from virtualenv.seed.wheels.embed import get_embed_wheel

    try:
        wheel = get_embed_wheel("pip", f"{version[0]}.{version[1]}")
    except (LookupError, ValueError, OSError):  # a repackaged virtualenv without them
        return None
    if wheel is None or not Path(wheel.path).is_file():
        return None
    return Path(wheel.path)


def virtualenv_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment virtualenv runs with: only the profile may shape an environment.

    virtualenv reads every option from a `VIRTUALENV_<OPTION>` variable and from its
    `virtualenv.ini` (the user's, or the one `VIRTUALENV_CONFIG_FILE` names): a
    `VIRTUALENV_SYSTEM_SITE_PACKAGES=1` in the shell would give an environment that sees
    the system's packages while its record says it does not. So none of them reach it,
    and the config file is the null device (an empty value would mean the default file).
    """
    env = {k: v for k, v in environ.items() if not k.upper().startswith("VIRTUALENV_")}
    env["VIRTUALENV_CONFIG_FILE"] = os.devnull
    # virtualenv >= 21 writes a `.venv` redirect into the parent of an environment
    # beside a pyproject.toml: a file outside the environment, so not kboot's to write
    env["VIRTUALENV_NO_VENV_REDIRECT"] = "1"
    return env


_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})(?:[.+\-a-z].*)?", re.ASCII | re.IGNORECASE)


def pyvenv_python_version(cfg: Mapping[str, str], root: Path) -> tuple[int, int]:
    """The X.Y of the Python an environment's pyvenv.cfg names, or kboot's error naming
    the file (a damaged version is no reason for an internal error)."""
    version = cfg.get("version_info") or cfg.get("version") or cfg.get("python-version")
    if not version:
        raise EnvironmentStateError(f"{root} is not a virtual environment (no pyvenv.cfg)")
    found = _VERSION.fullmatch(version)
    if found is None:
        raise EnvironmentStateError(
            f"{root / 'pyvenv.cfg'} is damaged: the Python version {version[:40]!r} is not X.Y",
            hint="rebuild the environment: kboot create PROFILE --force",
        )
    return int(found.group(1)), int(found.group(2))


@dataclass(frozen=True)
class VirtualEnv:
    root: Path
    python: Path
    bin_dir: Path
    site_packages: Path
    version: tuple[int, int] | None = None  # the interpreter's X.Y, when known

    @classmethod
    def create(
        cls,
        root: Path,
        interpreter: Interpreter,
        *,
        system_site_packages: bool = False,
        seed_pip: bool = False,
    ) -> VirtualEnv:
        """Create it with virtualenv's Python API; pip only when the installer needs it."""
        from virtualenv import cli_run  # slow to import; only create needs it

        # no periodic update: it would go to the network behind our back, offline too
        args = [str(root), "--python", str(interpreter.path), "--quiet", "--no-periodic-update"]
        args += ["--no-setuptools"] if seed_pip else ["--no-seed"]
        if system_site_packages:
            args.append("--system-site-packages")
        try:
            session = cli_run(args, setup_logging=False, env=virtualenv_environ(os.environ))
        except (RuntimeError, OSError, SystemExit) as exc:
            # virtualenv may embed a whole traceback in its message: its last line says why
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise EnvironmentStateError(
                f"virtualenv could not create {root} with {interpreter.path}: "
                f"{lines[-1] if lines else type(exc).__name__}",
                hint=os_error_hint(exc, writes=True)
                if isinstance(exc, OSError)
                else "free some space or fix the folder's permissions"
                if "No space left" in str(exc) or "ermission" in str(exc)
                else None,
            ) from None
        creator = session.creator
        version = (interpreter.version.major, interpreter.version.minor)
        return cls(root, Path(creator.exe), Path(creator.bin_dir), Path(creator.purelib), version)

    @classmethod
    def open(cls, root: Path, *, platform: str = sys.platform) -> VirtualEnv:
        """An environment on disk, its layout derived from pyvenv.cfg."""
        cfg = read_pyvenv_cfg(root)
        major, minor = pyvenv_python_version(cfg, root)
        implementation = cfg.get("implementation", "CPython").lower()
        layout = EnvLayout.for_platform(
            root, python_version=(major, minor), platform=platform, implementation=implementation
        )
        return cls(
            root,
            Path(layout.python),
            Path(layout.bin_dir),
            Path(layout.site_packages),
            (major, minor),
        )

    @property
    def system_site_packages(self) -> bool:
        cfg = read_pyvenv_cfg(self.root)
        return cfg.get("include-system-site-packages", "false").lower() == "true"

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        what: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run the environment's Python isolated (`-I`), from a private folder."""
        return run_python(
            self.python,
            args,
            version=self.version,
            env=env,
            what=what,
            check=check,
            timeout=timeout,
        )

    def add_base_site(self, folders: Sequence[str]) -> Path | None:
        """Let the environment see a venv base's packages (`--system-site-packages` over a
        Python that is itself a virtualenv sees the system's, not the venv's, otherwise):
        each folder is added as a site folder, its own .pth files included."""
        if not folders:
            return None
        lines = "".join(f"import site; site.addsitedir({folder!a})\n" for folder in folders)
        path = self.site_packages / BASE_SITE_PTH
        atomic_write(path, lines.encode("ascii"))
        return path

    def drop_virtualenv_patch(self) -> None:
        """Remove virtualenv's distutils patch: it is Python 3.8+ code (`:=`), and older
        interpreters print a SyntaxError for it at every start. Their stdlib venv has none."""
        for name in ("_virtualenv.pth", "_virtualenv.py"):
            (self.site_packages / name).unlink(missing_ok=True)

    def write_startup_env(self, variables: Mapping[str, str]) -> Path:
        """Set variables at every start of this interpreter, unless the user set them.

        A `.pth` line that starts with `import` is executed by `site` at start-up, with
        or without activation. site reads `.pth` files in the locale's encoding on
        Python <= 3.12, so the line is pure ASCII (`ascii()` escapes any other
        character): an environment at `/data/café/env` starts under `LC_ALL=C` too.
        """
        code = _STARTUP_CODE % ascii(json.dumps(dict(sorted(variables.items()))))
        path = self.site_packages / PTH_FILE
        atomic_write(path, f"import os; exec({code!a}, {{}})\n".encode("ascii"))
        return path
