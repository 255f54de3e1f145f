"""Finding a Python interpreter that satisfies a profile's `python` specifier.

Order of preference: `--python` (a path, or a version such as 3.12), the
interpreter running kboot when it fits, then the newest match among PATH
(`python3.X`), pyenv's versions folder and uv-managed interpreters.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from bootstrap.system.errors import CommandError, InterpreterError, UsageError
from bootstrap.system.runner import run_python

_QUERY = (
    "import sys, platform; "
    "print('%d.%d.%d %s' % (sys.version_info[:3] + (platform.python_implementation(),)))"
)
_VERSION_IN_NAME = re.compile(r"(?:python|cpython-|^)(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: Version
    implementation: str = "CPython"
    source: str = "path"  # where discovery found it

    @property
    def major_minor(self) -> tuple[int, int]:
        return (self.version.major, self.version.minor)

    @property
    def real_path(self) -> str:
        """The interpreter behind links: a venv's python and its base are the same one."""
        return os.path.realpath(self.path)

    def to_dict(self) -> dict[str, str]:
        return {
            "path": str(self.path),
            "real_path": self.real_path,
            "version": str(self.version),
            "implementation": self.implementation,
            "source": self.source,
        }


@dataclass(frozen=True)
class Candidate:
    path: Path
    source: str
    claimed: Version | None  # the version its name or folder promises, checked later


def query(path: Path, source: str = "path") -> Interpreter:
    """Ask an interpreter for its version; an error when it is not a working Python."""
    try:
        result = run_python(
            path, ["-c", _QUERY], version=None, timeout=30, what=f"asking {path} for its version"
        )
        number, implementation = result.stdout.split()
        return Interpreter(path, Version(number), implementation, source)
    except (CommandError, ValueError, InvalidVersion):
        raise InterpreterError(f"{path} is not a working Python interpreter") from None


def running_interpreter() -> Interpreter:
    """The interpreter running kboot, known without a subprocess."""
    version = Version(".".join(map(str, sys.version_info[:3])))
    implementation = {"cpython": "CPython", "pypy": "PyPy"}.get(
        sys.implementation.name, sys.implementation.name
    )
    return Interpreter(Path(sys.executable), version, implementation, "running")


def parse_python_option(value: str) -> tuple[Path | None, SpecifierSet | None]:
    """`--python` is a path to an interpreter or a version (3.12, >=3.11, python3.12)."""
    text = value.strip()
    if os.sep in text or (os.altsep and os.altsep in text) or Path(text).is_file():
        return Path(text).expanduser(), None
    bare = text.removeprefix("python")
    if re.fullmatch(r"\d+(\.\d+){0,2}", bare):
        parts = bare.split(".")
        return None, SpecifierSet(f"=={bare}.*" if len(parts) < 3 else f"=={bare}")
    try:
        return None, SpecifierSet(text)
    except InvalidSpecifier:
        raise UsageError(
            f"--python {value!r} is neither an interpreter path nor a version",
            hint="give a path such as /usr/bin/python3.12, or a version such as 3.12 or '>=3.11'",
        ) from None


def find_interpreter(
    spec: SpecifierSet,
    *,
    requested: str | None = None,
    environ: Mapping[str, str] | None = None,
    prefer_running: bool = True,
) -> Interpreter:
    environ = os.environ if environ is None else environ
    wanted = spec
    if requested:
        path, extra = parse_python_option(requested)
        if path is not None:
            if not path.exists():
                raise UsageError(
                    f"--python {path}: no such file",
                    hint="give the path of a Python interpreter, or a version such as 3.12",
                )
            try:
                found = query(path, "--python")
            except InterpreterError as exc:
                raise UsageError(
                    f"--python {path}: {exc.message}",
                    hint="give the path of a Python interpreter, or a version such as 3.12",
                ) from None
            if found.version not in spec:
                raise UsageError(
                    f"--python {path} is Python {found.version}, but the profile needs "
                    f"python {spec}",
                    hint="pick an interpreter that fits, or a profile whose 'python' allows it",
                )
            return found
        assert extra is not None
        wanted = spec & extra
        candidates = [
            f"{major}.{minor}.{micro}"
            for major in (2, 3)
            for minor in range(20)
            for micro in (0, 5, 99)
        ]
        if not any(v in wanted for v in candidates):
            raise UsageError(
                f"--python {requested} asks for Python {extra}, but the profile needs "
                f"python {spec}",
                hint="leave --python out, or pick a profile whose 'python' allows it",
            )

    running = running_interpreter()
    if prefer_running and running.version in wanted:
        return running

    seen: list[Interpreter] = []
    for candidate in sorted(
        discover(environ),
        key=lambda c: (c.claimed is not None, c.claimed or Version("0")),
        reverse=True,
    ):
        if candidate.claimed is not None and candidate.claimed not in wanted:
            seen.append(Interpreter(candidate.path, candidate.claimed, source=candidate.source))
            continue
        try:
            found = query(candidate.path, candidate.source)
        except InterpreterError:
            continue
        if found.version in wanted:
            return found
        seen.append(found)
    unique = {(i.version, i.source) for i in seen}
    listing = ", ".join(f"{v} ({src})" for v, src in sorted(unique)) or "none"
    raise InterpreterError(
        f"no Python interpreter satisfies python {wanted}; found: {listing}",
        hint=f"install one with `{uv_python_install(wanted)}` (kboot finds it there) or "
        "`pyenv install <version>`, or pass --python /path/to/python",
    )


def uv_python_install(wanted: SpecifierSet) -> str:
    """A command that installs a matching Python with the uv kboot itself uses (it lives in
    kboot's own environment, seldom on PATH)."""
    try:
        from uv import find_uv_bin

        uv = find_uv_bin()
    except (ImportError, FileNotFoundError):
        uv = "uv"
    minors = [f"3.{minor}" for minor in range(14, 4, -1)]
    version = next((v for v in minors if wanted.contains(f"{v}.0") or wanted.contains(f"{v}.99")),
                   str(wanted))  # fmt: skip
    return f"{shlex.quote(uv)} python install {shlex.quote(version)}"


def discover(environ: Mapping[str, str]) -> Iterator[Candidate]:
    """Every interpreter we can see, once each, with the version its name promises."""
    seen: set[Path] = set()
    for candidate in _candidates(environ):
        try:
            key = candidate.path.resolve()
        except OSError:
            continue
        if key in seen or not candidate.path.is_file():
            continue
        seen.add(key)
        yield candidate


def _candidates(environ: Mapping[str, str]) -> Iterator[Candidate]:
    exe = ".exe" if sys.platform == "win32" else ""
    for folder in environ.get("PATH", "").split(os.pathsep):
        if not folder or "shims" in Path(folder).parts:  # pyenv shims fail outside a version
            continue
        try:
            entries = sorted(Path(folder).iterdir())
        except OSError:
            continue
        for entry in entries:
            name = entry.name.removesuffix(exe)
            if re.fullmatch(r"python3(\.\d+)?", name):
                yield Candidate(entry, "PATH", _claimed(name))
    pyenv_root = Path(environ.get("PYENV_ROOT") or Path(environ.get("HOME", "~")) / ".pyenv")
    yield from _versions_folder(pyenv_root.expanduser() / "versions", "pyenv")
    uv_dir = environ.get("UV_PYTHON_INSTALL_DIR")
    uv_root = Path(uv_dir) if uv_dir else platformdirs.user_data_path("uv") / "python"
    yield from _versions_folder(uv_root, "uv")


def _versions_folder(root: Path, source: str) -> Iterator[Candidate]:
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return
    for folder in folders:
        for rel in ("bin/python3", "bin/python", "python.exe", "install/bin/python3"):
            path = folder / rel
            if path.is_file():
                yield Candidate(path, source, _claimed(folder.name))
                break


def _claimed(name: str) -> Version | None:
    match = _VERSION_IN_NAME.search(name)
    if not match or "." not in match.group(1):
        return None
    try:
        return Version(match.group(1))
    except InvalidVersion:
        return None
