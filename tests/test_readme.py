"""The README's commands, run as written: install from the checkout into a fresh
virtualenv, then every shell block in order, in a scratch folder, with kboot's default
locations (an empty HOME: nothing of the developer's is touched). The README cannot drift
from the tool. (The test command itself is what CI runs; the fast command runs below,
offline; the Ansible block runs in test_fleet.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import README, readme_blocks
from machine import STRICT_VARIABLE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "pip install . && kboot create numpy"
TESTS = "python3 -m pip install -e '.[test]' && python3 -m pytest"
FAST = 'python3 -m pytest -m "not integration"'


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    assert TESTS in readme_blocks("sh")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TESTS in ci
    assert f"export {STRICT_VARIABLE}=1" in ci  # every test runs on CI's machine: no skips


@pytest.mark.needs("unshare")
def test_the_fast_command_runs_offline_as_written(tmp_path: Path) -> None:
    """The README's fast tier needs no package index, no installs and no pyenv: it passes in
    a network namespace with no network at all. Not strict here: root in that namespace
    cannot give a file to another user, so the `needs("root")` tests skip in it (this
    session runs them)."""
    assert FAST in readme_blocks("sh")
    env = {k: v for k, v in os.environ.items() if k != STRICT_VARIABLE}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # python3: this one
    env["PYTEST_ADDOPTS"] = f"-p no:cacheprovider --basetemp={tmp_path / 'fast'}"
    out = run(FAST, ROOT, env, offline=True)  # exit 0: every test passed or was skipped
    assert " passed" in out.splitlines()[-1], out[-3000:]


def test_the_profile_example_is_a_valid_profile(tmp_path: Path) -> None:
    from bootstrap.profiles.catalog import load_profile

    (example,) = [b for b in readme_blocks("toml") if b.startswith("description = ")]
    path = tmp_path / "example.toml"
    path.write_text(example, encoding="utf-8")
    profile = load_profile(path)
    assert profile.backend == "jax" and profile.sources.index_url


def run(command: str, cwd: Path, env: dict[str, str], *, offline: bool = False) -> str:
    argv = ["bash", "-c", command]
    if offline:  # "on the one without": a network namespace with no network at all
        argv = ["unshare", "-rn", *argv]
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    assert proc.returncode == 0, f"$ {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.mark.needs("unshare")  # the offline block runs with no network at all
def test_every_shell_block_works_as_written(tmp_path: Path) -> None:
    commands = readme_blocks("sh")
    assert commands[0] == INSTALL
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    home = tmp_path / "readme-home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KERAS_", "KBOOT_", "XDG_", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    run(INSTALL, ROOT, env)  # `pip install .` needs the checkout as its folder
    assert (home / ".local" / "share" / "kboot" / "envs" / "numpy" / "kboot-env.json").is_file()

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for block in readme_blocks("toml"):  # files the reader writes: `# lab.toml` first
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".toml"):
            (scratch / first[2:].strip()).write_text(block, encoding="utf-8")
    assert (scratch / "lab.toml").is_file()

    skip = {INSTALL, TESTS, FAST}
    for command in commands:
        if command in skip or command.startswith("ansible-playbook"):
            continue
        if command.startswith(("ruff ", "kboot create numpy --offline")):
            continue  # below: from the checkout / on another machine
        out = run(command, scratch, env)
        if command.startswith("kboot sync lab.toml --check"):
            assert "in sync" in out

    offline = next(c for c in commands if "--offline" in c)
    other_machine = {
        **env,
        "HOME": str(tmp_path / "offline-home"),
        "UV_CACHE_DIR": str(tmp_path / "no-cache"),
    }
    Path(other_machine["HOME"]).mkdir()
    run(offline, scratch, other_machine, offline=True)

    lint = next(c for c in commands if c.startswith("ruff "))
    tools = Path(sys.executable).parent  # the test extra installs ruff and mypy here
    run(lint, ROOT, {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})
    assert README.is_file()
