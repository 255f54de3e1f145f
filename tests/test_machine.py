"""The `needs` marker and KBOOT_TEST_STRICT (tests/machine.py): a missing requirement is a
skip with its reason, and a failure in strict mode, as is any other skip there. Runs
pytest on a tiny generated test file, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import machine
from machine import STRICT_VARIABLE

TESTS = Path(__file__).resolve().parent

CONFTEST = """\
pytest_plugins = ("machine",)


def pytest_configure(config):
    import machine

    machine.REQUIREMENTS["never-here"] = lambda: "no machine has it"
    machine.REQUIREMENTS["always-here"] = lambda: None
"""
TEST_FILE = """\
import pytest

@pytest.mark.needs("never-here")
def test_needs_what_is_missing():
    pass

@pytest.mark.needs("always-here")
def test_needs_what_is_here():
    pass

def test_skips_by_itself():
    pytest.skip("skipped on purpose")
"""


def pytest_in(folder: Path, *, strict: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (STRICT_VARIABLE, "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(TESTS)
    if strict:
        env[STRICT_VARIABLE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", str(folder)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (folder / "test_generated.py").write_text(TEST_FILE, encoding="utf-8")
    return folder


def test_a_missing_requirement_is_a_skip_with_its_reason(suite: Path) -> None:
    proc = pytest_in(suite, strict=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "needs never-here: no machine has it" in proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout
    assert "warning" not in proc.stdout


def test_strict_turns_every_skip_into_a_failure(suite: Path) -> None:
    proc = pytest_in(suite, strict=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"needs never-here: no machine has it ({STRICT_VARIABLE}=1)" in proc.stdout
    assert f"skipped on purpose ({STRICT_VARIABLE}=1: a skip is a failure here)" in proc.stdout
    # the requirement fails the setup (an error), the skip the test itself
    assert "1 failed, 1 passed, 1 error" in proc.stdout
    assert "warning" not in proc.stdout


def test_an_unknown_requirement_is_an_error_before_anything_runs(suite: Path) -> None:
    (suite / "test_typo.py").write_text(
        'import pytest\n\n@pytest.mark.needs("pyenv3.6")\ndef test_typo():\n    pass\n'
    )
    proc = pytest_in(suite, strict=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # a usage error
    assert "test_typo.py::test_typo: needs 'pyenv3.6'" in proc.stderr


def test_the_requirement_names() -> None:
    assert machine.requirement("pyenv-3.6") is not None
    assert machine.requirement("pyenv-3") is None
    assert machine.requirement("root") is not None and machine.requirement("gpu") is None
    assert machine.missing("posix") is None
