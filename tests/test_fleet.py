"""The Ansible example, for real: ansible-core from the index, localhost. The README's
command runs exactly as written, twice; check mode and a failing host show kboot's own
answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

from helpers import readme_blocks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ansible"


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ansible-core (with pip, which the playbook builds kboot's wheel with); its bin folder."""
    venv = tmp_path_factory.mktemp("ansible") / "venv"
    subprocess.run(
        [find_uv_bin(), "venv", "-q", "--seed", "--python", sys.executable, str(venv)], check=True
    )
    subprocess.run(
        [find_uv_bin(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
         "ansible-core"],
        check=True,
    )  # fmt: skip
    return venv / "bin"


def recap(output: str) -> dict[str, int]:
    line = re.search(r"^localhost\s+:\s+(.*)$", output, re.MULTILINE)
    assert line, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def shell(command: str, ansible: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{ansible}{os.pathsep}{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, env=env,
        stdin=subprocess.DEVNULL,  # ansible refuses a non-blocking stdin (as CI's can be)
        timeout=1800, check=False,
    )  # fmt: skip


def test_the_readme_command_as_written_syncs_then_reports_ok(ansible: Path) -> None:
    (command,) = [c for c in readme_blocks("sh") if c.startswith("ansible-playbook")]
    first = shell(command, ansible)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap(first.stdout)["changed"] >= 1
    assert "keras-numpy: created" in first.stdout and "keras-jax: created" in first.stdout
    built = Path(os.environ["KBOOT_HOME"]) / "envs" / "keras-jax"
    assert (built / "kboot-env.json").is_file()

    second = shell(command, ansible)
    assert second.returncode == 0, second.stdout[-4000:]
    counts = recap(second.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, second.stdout
    assert "keras-numpy: unchanged" in second.stdout

    checked = shell(command + " --check", ansible)  # Ansible's check mode: kboot sync --check
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert recap(checked.stdout)["changed"] == 0


def test_check_mode_changes_nothing_and_a_failure_shows_kboots_error(
    ansible: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = bundle / "lab.toml"
    manifest.write_text(
        '[[env]]\nname = "lab-bad"\n'
        'profile = { backend = "numpy", packages = ["numpy", "kboot-no-such-package-x"] }\n'
    )
    base = (
        f"ansible-playbook -i examples/ansible/inventory.ini examples/ansible/playbook.yml "
        f"-e kboot_manifest={manifest} -e kboot_home={tmp_path / 'shared-kboot'}"
    )
    checked = shell(base + " --check", ansible)
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert recap(checked.stdout)["changed"] >= 1  # would create lab-bad
    assert not (tmp_path / "shared-kboot" / "envs" / "lab-bad").exists()

    failed = shell(base, ansible)
    assert failed.returncode != 0
    assert "lab-bad: installing" in failed.stdout and "kboot-no-such-package-x" in failed.stdout
    assert (tmp_path / "shared-kboot").stat().st_mode & 0o777 == 0o755
