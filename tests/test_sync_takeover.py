"""An environment made from another profile is replaced only with --force, by sync as
by create (issue 14, item 4). Real environments: numpy, then the same name as jax-cpu."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import created, kboot

pytestmark = pytest.mark.integration

EXIT_USAGE = 2


def record_of(tmp_path: Path, name: str) -> dict[str, object]:
    path = tmp_path / "kboot-home" / "envs" / name / "kboot-env.json"
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def hand_install(tmp_path: Path, name: str) -> Path:
    """A package the user put into the environment themselves (a file kboot did not make)."""
    site = next((tmp_path / "kboot-home" / "envs" / name).glob("lib/python3.*/site-packages"))
    (site / "mine.py").write_text("MINE = 1\n", encoding="utf-8")
    return site / "mine.py"


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout + proc.stderr


def test_sync_refuses_to_turn_numpy_into_jax_without_force(tmp_path: Path) -> None:
    created(kboot("create", "numpy", "--json"))
    mine = hand_install(tmp_path, "numpy")
    manifest = tmp_path / "lab.toml"
    manifest.write_text('[[env]]\nname = "numpy"\nprofile = "jax-cpu"\n', encoding="utf-8")

    # create refuses the same change, with the same exit code
    said = refused(kboot("create", "jax-cpu", "--name", "numpy"))
    assert "'numpy'" in said and "'jax-cpu'" in said and "--force" in said

    sync = kboot("sync", str(manifest), "--json")
    refused(sync)
    (entry,) = json.loads(sync.stdout)["environments"]
    assert entry["status"] == "failed" and entry["exit_code"] == EXIT_USAGE
    assert "numpy" in entry["error"] and "'jax-cpu'" in entry["error"]
    assert "--force" in entry["error"]
    assert record_of(tmp_path, "numpy")["profile"]["name"] == "numpy"  # type: ignore[index]
    assert mine.is_file()

    check = kboot("sync", str(manifest), "--check", "--json")
    assert check.returncode == 1, check.stderr
    (entry,) = json.loads(check.stdout)["environments"]
    assert entry["status"] == "needs-force"
    assert "'numpy'" in entry["detail"] and "'jax-cpu'" in entry["detail"]

    forced = kboot("sync", str(manifest), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    (entry,) = json.loads(forced.stdout)["environments"]
    assert entry["status"] == "rebuilt"
    assert record_of(tmp_path, "numpy")["profile"]["name"] == "jax-cpu"  # type: ignore[index]

    again = kboot("sync", str(manifest), "--check", "--json")
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout)["environments"][0]["status"] == "ok"
