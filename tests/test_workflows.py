"""The hosted CI workflow parses and follows GitHub's workflow schema: checked here,
offline, by check-jsonschema with the schema it carries (a pinned `test` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOWS = sorted((Path(__file__).resolve().parent.parent / ".github" / "workflows").glob("*.yml"))


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_there_is_a_workflow_for_the_three_systems() -> None:
    text = (WORKFLOWS[0].parent / "ci.yml").read_text(encoding="utf-8")
    for runner in ("ubuntu-latest", "macos-14", "windows-latest"):
        assert runner in text
    assert 'pytest -m "not integration"' in text


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_the_workflow_passes_the_linter(workflow: Path) -> None:
    proc = lint(workflow)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (("runs-on: ${{ matrix.os }}", "runs_on: ${{ matrix.os }}"), "runs_on"),  # a typo
        (("runs-on: ${{ matrix.os }}", "runs-on: 42"), "42 is not of type 'string'"),
        (("jobs:\n", "jobs:\n  broken: [\n"), "Failed to parse"),  # not YAML
    ],
)
def test_a_broken_workflow_fails_the_linter(
    tmp_path: Path, change: tuple[str, str], said: str
) -> None:
    text = (WORKFLOWS[0].parent / "ci.yml").read_text(encoding="utf-8")
    assert change[0] in text
    bad = tmp_path / "ci.yml"
    bad.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    proc = lint(bad)
    assert proc.returncode != 0
    assert said in proc.stdout + proc.stderr
