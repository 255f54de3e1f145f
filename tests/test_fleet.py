"""The Ansible example, for real: ansible-core from the index, localhost, run twice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ansible"


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ansible-core in a throwaway environment; returns its bin folder."""
    venv = tmp_path_factory.mktemp("ansible") / "venv"
    subprocess.run([find_uv_bin(), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [
            find_uv_bin(),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "ansible-core",
        ],
        check=True,
    )
    return venv / "bin"


def recap(output: str) -> dict[str, int]:
    line = re.search(r"^localhost\s+:\s+(.*)$", output, re.MULTILINE)
    assert line, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def test_playbook_syncs_then_reports_ok(ansible: Path, tmp_path: Path, isolated: Path) -> None:
    wheels = tmp_path / "wheels"  # as a lab would serve kboot: a pinned version from a folder
    subprocess.run(
        [find_uv_bin(), "build", "-q", "--wheel", "--out-dir", str(wheels), str(ROOT)], check=True
    )
    version = re.search(r"kboot-([^-]+)-", next(wheels.glob("kboot-*.whl")).name)
    assert version
    manifest = tmp_path / "lab.toml"
    manifest.write_text('[[env]]\nname = "lab-numpy"\nprofile = "numpy"\n')
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={ansible / 'python'}\n"
    )
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    command = [
        str(ansible / "ansible-playbook"),
        "-i",
        str(inventory),
        str(EXAMPLE / "playbook.yml"),
        "-e",
        json.dumps(
            {
                "kboot_package": f"kboot=={version.group(1)}",
                "kboot_pip_extra_args": f"--find-links {wheels}",
                "kboot_manifest": str(manifest),
                "kboot_python": sys.executable,
            }
        ),
    ]
    first = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=1200, check=False
    )
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap(first.stdout)["changed"] >= 1
    assert "lab-numpy: created" in first.stdout
    built = Path(os.environ["KBOOT_HOME"]) / "envs" / "lab-numpy"
    assert (built / "kboot-env.json").is_file()

    second = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert second.returncode == 0, second.stdout[-4000:]
    counts = recap(second.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, second.stdout
    assert "lab-numpy: unchanged" in second.stdout
