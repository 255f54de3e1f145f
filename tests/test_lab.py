"""Lab-ready: every state has a way out, every failure is a plain error (with --json a
JSON document), and sync tells the truth. Real environments, a small fast profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import created, kboot

pytestmark = pytest.mark.integration

LAB = 'backend = "numpy"\npackages = ["numpy", "scipy", "jax"]\n'


@pytest.fixture(autouse=True)
def profiles(tmp_path: Path) -> Path:
    folder = tmp_path / "user-profiles"
    folder.mkdir(exist_ok=True)
    (folder / "lab.toml").write_text(LAB, encoding="utf-8")
    return folder


def plain(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """One clean error: the code, `kboot: error:`, no traceback, no internal error."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert "kboot: error: " in proc.stderr
    return proc.stderr


def in_namespace(
    script: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A shell script in a new user and mount namespace (read-only binds, small tmpfs)."""
    return subprocess.run(
        ["unshare", "-rm", "bash", "-euc", script],
        capture_output=True, text=True, env=env or dict(os.environ), timeout=900, check=False,
    )  # fmt: skip


@pytest.mark.needs("unshare")
def test_a_read_only_kboot_home_still_lists_and_checks(tmp_path: Path) -> None:
    """Lab item 4: a read-only kboot home (a shared, mounted one): list and check work,
    every change is a plain error naming the folder."""
    created(kboot("create", "lab", "--json"))
    home = tmp_path / "kboot-home"
    py = sys.executable
    script = f"""
mount --bind -o ro {home} {home}
{py} -m bootstrap list --json > {tmp_path}/list.json
{py} -m bootstrap check lab --json > {tmp_path}/check.json || echo "check exit $?"
{py} -m bootstrap create lab --force 2> {tmp_path}/create.err || echo "create exit $?"
{py} -m bootstrap remove lab 2> {tmp_path}/remove.err || echo "remove exit $?"
"""
    proc = in_namespace(script)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "list.json").read_text())[0]["health"] == "ok"
    assert json.loads((tmp_path / "check.json").read_text())["ok"] is True
    assert "check exit" not in proc.stdout
    for name in ("create", "remove"):
        err = (tmp_path / f"{name}.err").read_text()
        assert f"{name} exit 1" in proc.stdout, proc.stdout
        assert "Read-only file system" in err and "kboot: error:" in err, err
        assert "Traceback" not in err and "internal error" not in err
    assert (home / "envs" / "lab" / "kboot-env.json").is_file()


@pytest.mark.needs("unshare")
def test_a_full_disk_is_a_plain_error_and_nothing_is_left(tmp_path: Path) -> None:
    """Lab item 5: no space left on the device, during a build and for a download."""
    small = tmp_path / "small"
    small.mkdir()
    py = sys.executable
    script = f"""
mount -t tmpfs -o size=2m tmpfs {small}
{py} -m bootstrap create lab --dest {small}/env 2> {tmp_path}/create.err || echo "create $?"
ls -A {small} > {tmp_path}/left.txt
{py} -m bootstrap download lab --dest {small}/wh 2> {tmp_path}/download.err || echo "dl $?"
"""
    proc = in_namespace(script)
    assert proc.returncode == 0, proc.stderr
    assert "create 1" in proc.stdout and "dl 1" in proc.stdout, proc.stdout
    for name in ("create", "download"):
        err = (tmp_path / f"{name}.err").read_text()
        assert "o space left" in err.split("kboot: error:")[-1], err
        assert "Traceback" not in err and "internal error" not in err
    assert (tmp_path / "left.txt").read_text().split() in ([], ["wh"]), "a half-built env"


def test_check_of_an_interrupted_build_says_how_to_repair_it(tmp_path: Path) -> None:
    """Lab item 6: `kboot check` on an environment left by a killed build."""
    proc = kboot("create", "lab", env={**os.environ, "KBOOT_TEST_KILL_AT": "build-installed"})
    assert proc.returncode == -9
    err = plain(kboot("check", "lab"), 1)
    assert "interrupted" in err and "kboot create" in err
    repaired = kboot("create", "lab", "--json")
    assert created(repaired)["action"] == "created"
    assert kboot("check", "lab").returncode == 0


@pytest.mark.parametrize("damage", ["null", "{", '{"name": 5}'])
def test_a_damaged_record_has_a_way_out(tmp_path: Path, damage: str) -> None:
    """Lab items 7 and 10: list and sync go on; create repairs it, remove removes it."""
    created(kboot("create", "lab", "--no-smoke", "--json"))
    created(kboot("create", "lab", "--name", "other", "--no-smoke", "--json"))
    record = tmp_path / "kboot-home" / "envs" / "lab" / "kboot-env.json"
    record.write_text(damage, encoding="utf-8")
    listed = {e["name"]: e["health"] for e in json.loads(kboot("list", "--json").stdout)}
    assert listed["other"].startswith("unchecked")
    assert listed["lab"].startswith("broken")
    repaired = kboot("create", "lab", "--no-smoke", "--json")
    assert created(repaired)["action"] == "rebuilt"
    record.write_text(damage, encoding="utf-8")
    removed = kboot("remove", "lab")
    assert removed.returncode == 0, removed.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "lab").exists()


def test_kboots_own_broken_keras_json_is_repaired(tmp_path: Path) -> None:
    """Lab item 11: kboot owns the environment's keras.json: create puts it right."""
    data = created(kboot("create", "lab", "--json"))
    keras_json = Path(data["keras_json"])
    keras_json.write_text('{"backend": "jax",,', encoding="utf-8")
    listed = json.loads(kboot("list", "--json").stdout)[0]["health"]
    assert listed.startswith("config changed") and "not valid JSON" in listed
    repaired = created(kboot("create", "lab", "--json"))
    assert repaired["action"] == "updated"
    assert json.loads(keras_json.read_text())["backend"] == "numpy"


def test_sync_check_tells_drift_and_a_failed_smoke_test(tmp_path: Path) -> None:
    """Lab items 12 and 16: `sync --check` and `create` after a drifted config or a
    failed `check`; --verify shows a failed smoke test as failed."""
    manifest = tmp_path / "lab-manifest.toml"
    manifest.write_text('[[env]]\nname = "lab"\nprofile = "lab"\n', encoding="utf-8")
    assert kboot("sync", str(manifest)).returncode == 0
    assert kboot("sync", str(manifest), "--check").returncode == 0
    keras_json = tmp_path / "kboot-home" / "envs" / "lab" / "keras-home" / "keras.json"
    original = keras_json.read_text()
    keras_json.write_text(original.replace('"float32"', '"float16"'))
    drifted = kboot("sync", str(manifest), "--check", "--json")
    assert drifted.returncode == 1
    (entry,) = json.loads(drifted.stdout)["environments"]
    assert entry["status"] == "differs" and "floatx" in entry["detail"]
    keras_json.write_text(original)

    # a smoke test that fails: the environment's jax is broken behind kboot's back
    site = next((tmp_path / "kboot-home" / "envs" / "lab").glob("lib/python3.*/site-packages"))
    broken = site / "jax" / "__init__.py"
    broken.unlink()  # a new file, not a write into it: uv hard-links files from its cache
    broken.write_text("raise ImportError('broken on purpose')\n")
    assert kboot("check", "lab").returncode == 1
    failed = kboot("sync", str(manifest), "--check", "--json")
    assert failed.returncode == 1 and "smoke test failed" in failed.stdout
    verified = kboot("create", "lab", "--verify")
    assert "✓ verify: smoke test" not in verified.stderr
    assert "✗ verify: smoke test" in verified.stderr
    assert verified.returncode == 0, verified.stderr  # rebuilt, and now it passes
    assert "rebuilding" in verified.stderr
    assert kboot("check", "lab").returncode == 0


def test_one_line_reasons_for_failures_in_a_batch(tmp_path: Path, profiles: Path) -> None:
    """Lab item 17: with several profiles at once, each failure keeps its reason."""
    (profiles / "bad.toml").write_text(
        'backend = "numpy"\npackages = ["numpy", "kboot-no-such-package-x"]\n'
    )
    proc = kboot("create", "lab", "bad", "--no-smoke", "--json")
    assert proc.returncode == 1
    items = {item["name"]: item for item in json.loads(proc.stdout)}
    assert items["lab"]["ok"] is True
    assert "kboot-no-such-package-x was not found on the package index" in items["bad"]["error"]
    table = kboot("create", "lab", "bad", "--no-smoke")
    assert "kboot-no-such-package-x was not found" in table.stdout


def test_json_is_a_document_for_every_outcome(tmp_path: Path) -> None:
    """Lab item 9: usage errors too."""
    for args, code in (
        (("create", "--no-such-option", "--json"), 2),
        (("create", "nonexistent-profile", "--json"), 2),
        (("check", "nothing-here", "--json"), 2),
    ):
        proc = kboot(*args)
        assert proc.returncode == code
        doc = json.loads(proc.stdout)
        assert doc["ok"] is False and doc["exit_code"] == code and doc["error"]


def test_overlapping_runs_wait_their_turn(tmp_path: Path) -> None:
    """Lab item 22: cron and Ansible overlapping wait (bounded) instead of failing."""
    import threading
    import time

    from bootstrap.system.process_lock import env_lock

    target = (tmp_path / "kboot-home" / "envs").resolve() / "lab"
    locks = tmp_path / "kboot-home" / "locks"
    with env_lock(locks, target):
        started = time.monotonic()
        gave_up = kboot("create", "lab", "--no-smoke", "--wait", "1")
        assert time.monotonic() - started >= 1
    assert "waited 1 s" in plain(gave_up, 1)

    # held until kboot says it waits (no fixed sleeps: a loaded machine starts kboot slowly)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with env_lock(locks, target):
            holding.set()
            release.wait(600)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(60)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bootstrap", "create", "lab", "--no-smoke", "--wait", "60",
             "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        said = []
        for line in proc.stderr:
            said.append(line)
            if "waiting up to 60 s for kboot pid" in line:
                break
    finally:
        release.set()
        holder.join()
    out, err = proc.communicate(timeout=900)
    waited = subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(said) + err)
    assert "waiting up to 60 s for kboot pid" in waited.stderr
    assert created(waited)["action"] == "created"
