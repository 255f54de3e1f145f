"""Interpreter discovery, with fake interpreters (shell scripts) and once with the real ones."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REAL_HOME
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bootstrap.install.interpreters import (
    Interpreter,
    discover,
    find_interpreter,
    parse_python_option,
    query,
    running_interpreter,
)
from bootstrap.system.errors import InterpreterError, UsageError

RUNNING = Version(".".join(map(str, sys.version_info[:3])))


def fake_python(path: Path, output: str = "", *, code: int = 0) -> Path:
    """An executable that answers kboot's version query like an interpreter would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = f'echo "{output}"\n' if output else ""
    path.write_text(f"#!/bin/sh\n{body}exit {code}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, object]:
    """A fake PATH folder with python3.12 / python3.13, and a fake pyenv with 3.9.1."""
    bin_dir = tmp_path / "fakebin"
    fake_python(bin_dir / "python3.12", "3.12.4 CPython")
    fake_python(bin_dir / "python3.13", "3.13.1 CPython")
    fake_python(bin_dir / "python3-config", "not a python")  # not a candidate name
    pyenv = tmp_path / "pyenv"
    fake_python(pyenv / "versions" / "3.9.1" / "bin" / "python3", "3.9.1 CPython")
    uv = tmp_path / "uv-python"
    uv.mkdir()
    environ = {
        "PATH": str(bin_dir),
        "PYENV_ROOT": str(pyenv),
        "UV_PYTHON_INSTALL_DIR": str(uv),
        "HOME": str(tmp_path / "home"),
    }
    return {"environ": environ, "bin": bin_dir, "pyenv": pyenv, "uv": uv}


# --- parse_python_option ---------------------------------------------------------------------


def test_parse_path() -> None:
    assert parse_python_option("/usr/bin/python3.12") == (Path("/usr/bin/python3.12"), None)


def test_parse_existing_file_without_separator(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fake_python(tmp_path / "mypython")
    monkeypatch.chdir(tmp_path)
    assert parse_python_option("mypython") == (Path("mypython"), None)


def test_parse_home_path(isolated: Path) -> None:
    path, spec = parse_python_option("~/bin/python")
    assert spec is None
    assert path == isolated / "bin" / "python"


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("3.12", "==3.12.*"),
        (" 3.12 ", "==3.12.*"),
        ("python3.12", "==3.12.*"),
        ("3", "==3.*"),
        ("3.12.1", "==3.12.1"),
        (">=3.11", ">=3.11"),
        (">=3.11,<3.13", ">=3.11,<3.13"),
    ],
)
def test_parse_version(value: str, spec: str) -> None:
    assert parse_python_option(value) == (None, SpecifierSet(spec))


@pytest.mark.parametrize("value", ["garbage", "py3.12", "3.x", "python"])
def test_parse_garbage(value: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_python_option(value)
    assert repr(value) in info.value.message
    assert info.value.hint is not None


# --- query / running -------------------------------------------------------------------------


def test_query_fake(tmp_path: Path) -> None:
    found = query(fake_python(tmp_path / "py", "3.10.2 PyPy"), "pyenv")
    assert found.version == Version("3.10.2")
    assert found.implementation == "PyPy"
    assert found.source == "pyenv"
    assert found.major_minor == (3, 10)


@pytest.mark.parametrize(("output", "code"), [("3.12.1 CPython", 1), ("nonsense", 0), ("", 0)])
def test_query_broken(tmp_path: Path, output: str, code: int) -> None:
    with pytest.raises(InterpreterError, match="not a working Python"):
        query(fake_python(tmp_path / "py", output, code=code))


def test_query_real_running_interpreter() -> None:
    found = query(Path(sys.executable))
    assert found.version == RUNNING
    assert running_interpreter().version == RUNNING
    assert running_interpreter().source == "running"


# --- discovery with fakes --------------------------------------------------------------------


def test_discover_lists_path_and_pyenv(fakes) -> None:  # type: ignore[no-untyped-def]
    found = {(c.path.name, c.source, str(c.claimed)) for c in discover(fakes["environ"])}
    assert found == {
        ("python3.12", "PATH", "3.12"),
        ("python3.13", "PATH", "3.13"),
        ("python3", "pyenv", "3.9.1"),
    }


def test_discover_skips_shims_and_duplicates(fakes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shims = tmp_path / "pyenv" / "shims"
    fake_python(shims / "python3.14", "3.14.0 CPython")
    env = dict(fakes["environ"])
    env["PATH"] = os.pathsep.join([str(shims), str(fakes["bin"]), str(fakes["bin"]), ""])
    names = [c.path.name for c in discover(env)]
    assert "python3.14" not in names
    assert sorted(names) == ["python3", "python3.12", "python3.13"]


def test_discover_uv_managed(fakes) -> None:  # type: ignore[no-untyped-def]
    fake_python(
        fakes["uv"] / "cpython-3.11.9-linux-x86_64-gnu" / "bin" / "python3", "3.11.9 CPython"
    )
    uv = [c for c in discover(fakes["environ"]) if c.source == "uv"]
    assert len(uv) == 1
    assert uv[0].claimed == Version("3.11.9")


def test_newest_match_is_preferred(fakes) -> None:  # type: ignore[no-untyped-def]
    found = find_interpreter(SpecifierSet(">=3.9"), environ=fakes["environ"], prefer_running=False)
    assert found.version == Version("3.13.1")
    assert found.path == fakes["bin"] / "python3.13"
    assert found.source == "PATH"


def test_newest_within_the_specifier(fakes) -> None:  # type: ignore[no-untyped-def]
    found = find_interpreter(SpecifierSet("<3.13"), environ=fakes["environ"], prefer_running=False)
    assert found.version == Version("3.12.4")


def test_pyenv_interpreter_is_found(fakes) -> None:  # type: ignore[no-untyped-def]
    found = find_interpreter(SpecifierSet("<3.10"), environ=fakes["environ"], prefer_running=False)
    assert found.version == Version("3.9.1")
    assert found.source == "pyenv"
    assert found.path == fakes["pyenv"] / "versions" / "3.9.1" / "bin" / "python3"


def test_a_name_that_lies_is_checked(fakes) -> None:  # type: ignore[no-untyped-def]
    fake_python(fakes["bin"] / "python3.11", "3.10.0 CPython")  # claims 3.11, is 3.10
    with pytest.raises(InterpreterError) as info:
        find_interpreter(SpecifierSet("==3.11.*"), environ=fakes["environ"], prefer_running=False)
    assert "3.10.0 (PATH)" in info.value.message


def test_broken_candidate_is_skipped(fakes) -> None:  # type: ignore[no-untyped-def]
    fake_python(fakes["bin"] / "python3.14", "3.14.0 CPython", code=1)
    found = find_interpreter(SpecifierSet(">=3.9"), environ=fakes["environ"], prefer_running=False)
    assert found.version == Version("3.13.1")


def test_running_interpreter_is_preferred_when_it_fits(fakes) -> None:  # type: ignore[no-untyped-def]
    spec = SpecifierSet(f"=={RUNNING.major}.{RUNNING.minor}.*")
    found = find_interpreter(spec, environ=fakes["environ"])
    assert found.source == "running"
    assert found.path == Path(sys.executable)
    assert found.version == RUNNING


def test_prefer_running_false_searches(fakes) -> None:  # type: ignore[no-untyped-def]
    spec = SpecifierSet(">=3.9")
    assert RUNNING in spec
    found = find_interpreter(spec, environ=fakes["environ"], prefer_running=False)
    assert found.source == "PATH"
    assert found.path.parent == fakes["bin"]


def test_no_match_lists_what_was_found(fakes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InterpreterError) as info:
        find_interpreter(SpecifierSet("==3.7.*"), environ=fakes["environ"], prefer_running=False)
    message = info.value.message
    assert "no Python interpreter satisfies python ==3.7.*" in message
    assert "3.12 (PATH)" in message
    assert "3.13 (PATH)" in message
    assert "3.9.1 (pyenv)" in message
    assert info.value.hint is not None and "uv python install" in info.value.hint


def test_no_interpreters_at_all(tmp_path: Path) -> None:
    environ = {
        "PATH": str(tmp_path / "empty"),
        "PYENV_ROOT": str(tmp_path / "none"),
        "UV_PYTHON_INSTALL_DIR": str(tmp_path / "none"),
    }
    with pytest.raises(InterpreterError, match="found: none"):
        find_interpreter(SpecifierSet("==3.7.*"), environ=environ, prefer_running=False)


def test_requested_version_narrows_the_search(fakes) -> None:  # type: ignore[no-untyped-def]
    found = find_interpreter(
        SpecifierSet(">=3.9"), requested="3.12", environ=fakes["environ"], prefer_running=False
    )
    assert found.version == Version("3.12.4")


def test_requested_version_outside_the_profile(fakes) -> None:  # type: ignore[no-untyped-def]
    """A --python version the profile excludes is a usage error, found before any search."""
    expected = r"asks for Python ==3\.9\.\*, but the profile needs"
    with pytest.raises(UsageError, match=expected) as info:
        find_interpreter(
            SpecifierSet(">=3.10"), requested="3.9", environ=fakes["environ"], prefer_running=False
        )
    assert info.value.exit_code == 2


def test_requested_version_inside_the_profile_but_missing(fakes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InterpreterError, match="no Python interpreter satisfies"):
        find_interpreter(
            SpecifierSet(">=3.10"), requested="3.11", environ=fakes["environ"], prefer_running=False
        )


def test_requested_path_is_used(fakes) -> None:  # type: ignore[no-untyped-def]
    path = fakes["bin"] / "python3.12"
    found = find_interpreter(SpecifierSet(">=3.10"), requested=str(path), environ=fakes["environ"])
    assert found.path == path
    assert found.source == "--python"
    assert found.version == Version("3.12.4")


def test_requested_path_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "python3"
    with pytest.raises(UsageError) as info:
        find_interpreter(SpecifierSet(">=3.10"), requested=str(missing), environ={})
    assert "no such file" in info.value.message
    assert str(missing) in info.value.message


def test_requested_path_with_the_wrong_version(fakes) -> None:  # type: ignore[no-untyped-def]
    path = fakes["pyenv"] / "versions" / "3.9.1" / "bin" / "python3"
    with pytest.raises(UsageError) as info:
        find_interpreter(SpecifierSet(">=3.10"), requested=str(path), environ=fakes["environ"])
    assert "is Python 3.9.1" in info.value.message
    assert ">=3.10" in info.value.message


def test_requested_path_not_a_python(tmp_path: Path) -> None:
    path = fake_python(tmp_path / "python", "hello")
    with pytest.raises(UsageError, match="not a working Python") as info:
        find_interpreter(SpecifierSet(">=3.10"), requested=str(path), environ={})
    assert info.value.exit_code == 2


# --- the real interpreters of this machine ---------------------------------------------------


@pytest.mark.integration  # pyenv interpreters: not in the fast tier
@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("==3.12.*", marks=pytest.mark.needs("pyenv-3.12")),
        pytest.param("==3.6.*", marks=pytest.mark.needs("pyenv-3.6")),
    ],
)
def test_real_discovery_finds_pyenv_versions(spec: str) -> None:
    """These interpreters are installed with pyenv on dev machines and in CI."""
    environ = dict(os.environ)
    environ["PYENV_ROOT"] = str(REAL_HOME / ".pyenv")
    environ["HOME"] = str(REAL_HOME)
    found = find_interpreter(SpecifierSet(spec), environ=environ)
    assert found.version in SpecifierSet(spec)
    assert found.path.is_file()
    # Ask the interpreter itself, independently of kboot's query.
    out = subprocess.run(
        [str(found.path), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert Version(out) == found.version


def test_a_venv_python_and_its_base_are_the_same_interpreter(tmp_path: Path) -> None:
    """Reinstalling kboot in another venv must not look like another Python."""
    base = tmp_path / "base" / "python3.11"
    base.parent.mkdir()
    base.write_text("#!/bin/sh\n")
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(base)
    a = Interpreter(link, Version("3.11.7"))
    b = Interpreter(base, Version("3.11.7"))
    assert a.real_path == b.real_path == str(base.resolve())
    assert a.to_dict()["real_path"] == str(base.resolve())
