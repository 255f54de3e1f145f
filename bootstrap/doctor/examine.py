"""`kboot doctor`: what `import keras` will do in any Python environment, and why.

The inspection probe (`bootstrap/envs/_inspect.py`) runs in the target Python with the
caller's own variables (as the user's `import keras` would see them), reads package
metadata, startup files, conda activation scripts, keras.json and the CUDA libraries, and
imports nothing unless asked (`--import`). `diagnose` (bootstrap/envs/diagnosis.py) turns
that report into findings; the smoke test of create, check and list runs the same
diagnosis and fails on the same errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from bootstrap.envs.diagnosis import PROBE_SOURCE, diagnose, read_report
from bootstrap.envs.findings import Finding, errors, severity_rank
from bootstrap.install.accelerators import HostAccelerators, read_host
from bootstrap.system.errors import EXIT_FAILED, EXIT_OK, KbootError, UsageError
from bootstrap.system.runner import run

__all__ = ["DoctorResult", "Finding", "diagnose", "examine", "severity_rank", "target_python"]


@dataclass(frozen=True)
class DoctorResult:
    python: Path
    version: str
    findings: tuple[Finding, ...]
    report: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return not errors(self.findings)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "python": str(self.python),
            "python_version": self.version,
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "keras_json": self.report.get("keras_json"),
            "imported": self.report.get("imported"),
        }


def target_python(ref: str | None, python: str | None, environ: Mapping[str, str]) -> Path:
    """ENV (a kboot environment), --python (an interpreter or an environment's folder), or
    the `python3` on PATH: the Python the user runs."""
    if ref and python:
        raise UsageError("give ENV or --python, not both")
    if ref:
        from bootstrap.envs.lifecycle import open_to_run
        from bootstrap.envs.names import resolve

        return open_to_run(resolve(ref, environ).path).python
    if python:
        path = Path(python).expanduser()
        if path.is_dir():  # a venv or conda prefix
            for name in ("bin/python", "bin/python3", "Scripts/python.exe", "python.exe"):
                if (path / name).exists():
                    return (path / name).absolute()
            raise UsageError(f"--python {path}: a folder with no bin/python in it")
        if path.exists():
            return path.absolute()
        if os.sep not in python:  # a name on PATH, or a version, as `create --python` takes
            on_path = shutil.which(python, path=environ.get("PATH"))
            if on_path:
                return Path(on_path)
            from packaging.specifiers import SpecifierSet

            from bootstrap.install.interpreters import find_interpreter

            return find_interpreter(SpecifierSet(), requested=python, environ=environ).path
        raise UsageError(
            f"--python {path}: no such file",
            hint="give an interpreter's path, its name on PATH, or a version such as 3.12",
        )
    found = shutil.which("python3", path=environ.get("PATH")) or shutil.which(
        "python", path=environ.get("PATH")
    )
    if not found:
        raise UsageError("no python3 on PATH", hint="name one: kboot doctor --python PATH")
    return Path(found)


def examine(
    python: Path,
    environ: Mapping[str, str],
    *,
    do_import: bool = False,
    host: HostAccelerators | None = None,
) -> DoctorResult:
    report = probe(python, environ, do_import=do_import)
    version = _version(str(report.get("python")))
    if version is None or version < Version("3.5"):
        raise UsageError(
            f"{python} is Python {report.get('python')}: kboot doctor examines Python 3.5 and "
            "newer",
            hint="run it on the Python 3 environment that runs keras",
        )
    findings = diagnose(report, environ, host or read_host())
    return DoctorResult(python, str(report.get("python")), tuple(findings), report)


_PYTHON_ERROR = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt): ")


def probe(python: Path, environ: Mapping[str, str], *, do_import: bool) -> dict[str, Any]:
    """Run the doctor's probe in `python`, from a private folder, with the user's variables."""
    import tempfile

    if not os.access(python, os.X_OK) or python.is_dir():
        raise UsageError(f"{python} is not a Python interpreter (not an executable file)")
    with tempfile.TemporaryDirectory(prefix="kboot-doctor-") as private:
        try:
            result = run(
                [python, "-c", PROBE_SOURCE, json.dumps({"import": do_import})],
                env=dict(environ),
                cwd=Path(private),
                check=False,
                timeout=600 if do_import else 60,
                what=f"examining {python}",
            )
        except KbootError as exc:
            raise UsageError(f"{python} cannot be run: {exc.message}") from None
    data = read_report(result.stdout)
    if data is not None:
        return data
    said = (result.stderr or result.stdout).strip().splitlines()
    if any(  # Python 2 fails on the probe's syntax, or on a module it lacks (unquoted name)
        "SyntaxError" in line
        or "print " in line
        or (line.startswith("ImportError: No module named ") and "'" not in line)
        for line in said[-5:]
    ):
        raise UsageError(
            f"{python} is a Python too old for kboot doctor (3.5 or newer is needed)",
            hint="run it on the Python 3 environment that runs keras",
        )
    # what it said, only where that is a Python's error (`ModuleNotFoundError: ...`): another
    # program's words are about the probe it was handed (`ls: cannot access '-c'`), ours
    reason = said[-1] if said else ""
    if not _PYTHON_ERROR.match(reason) or len(reason) > 200:
        reason = f"exit code {result.returncode}; it did not run Python code"
    raise UsageError(
        f"{python} is not a working Python interpreter ({reason})",
        hint="give the Python you run keras with: a path, a name on PATH, or a version",
    )


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None
