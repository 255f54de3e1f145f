"""One small class for a virtual environment kboot builds or finds on disk."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import EnvironmentStateError
from bootstrap.interpreters import Interpreter
from bootstrap.paths import PTH_FILE, EnvLayout, read_pyvenv_cfg
from bootstrap.runner import CommandResult, run


@dataclass(frozen=True)
class VirtualEnv:
    root: Path
    python: Path
    bin_dir: Path
    site_packages: Path

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
            session = cli_run(args, setup_logging=False)
        except (RuntimeError, OSError, SystemExit) as exc:
            raise EnvironmentStateError(
                f"virtualenv could not create {root} with {interpreter.path}: {exc}"
            ) from None
        creator = session.creator
        return cls(root, Path(creator.exe), Path(creator.bin_dir), Path(creator.purelib))

    @classmethod
    def open(cls, root: Path, *, platform: str = sys.platform) -> VirtualEnv:
        """An environment on disk, its layout derived from pyvenv.cfg."""
        cfg = read_pyvenv_cfg(root)
        version = cfg.get("version_info") or cfg.get("version") or cfg.get("python-version")
        if not version:
            raise EnvironmentStateError(f"{root} is not a virtual environment (no pyvenv.cfg)")
        major, minor = (int(part) for part in version.split(".")[:2])
        implementation = cfg.get("implementation", "CPython").lower()
        layout = EnvLayout.for_platform(
            root, python_version=(major, minor), platform=platform, implementation=implementation
        )
        return cls(root, Path(layout.python), Path(layout.bin_dir), Path(layout.site_packages))

    @property
    def system_site_packages(self) -> bool:
        cfg = read_pyvenv_cfg(self.root)
        return cfg.get("include-system-site-packages", "false").lower() == "true"

    def run(
        self, args: Sequence[str], *, env: Mapping[str, str] | None = None, what: str | None = None
    ) -> CommandResult:
        return run([self.python, *args], env=env, cwd=self.root, what=what)

    def drop_virtualenv_patch(self) -> None:
        """Remove virtualenv's distutils patch: it is Python 3.8+ code (`:=`), and older
        interpreters print a SyntaxError for it at every start. Their stdlib venv has none."""
        for name in ("_virtualenv.pth", "_virtualenv.py"):
            (self.site_packages / name).unlink(missing_ok=True)

    def write_startup_env(self, variables: Mapping[str, str]) -> Path:
        """Set variables at every start of this interpreter, unless the user set them.

        A `.pth` line that starts with `import` is executed by `site` at start-up,
        with or without activation.
        """
        body = "; ".join(
            f"os.environ.get({key!r}) or os.environ.__setitem__({key!r}, {value!r})"
            for key, value in sorted(variables.items())
        )
        path = self.site_packages / PTH_FILE
        path.write_text(f"import os; {body}\n", encoding="utf-8")
        return path
