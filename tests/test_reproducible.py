"""Locks, offline wheelhouses, idempotent create, several at once, and sync, for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bootstrap.locks.lockfile import read_lock
from bootstrap.locks.pylock import pins_digest
from helpers import created, kboot, kboot_offline, report_from_fresh_shell, start_kboot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The numpy profile's lock and wheels, made once for this module."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    env = {**os.environ, "HOME": str(folder.parent / "home"), "KBOOT_HOME": str(folder / "kb")}
    lock = folder / "pylock.numpy.toml"
    made = kboot("lock", "numpy", "-o", str(lock), env=env)
    assert made.returncode == 0, made.stderr
    fetched = kboot(
        "download", "numpy", "--lock", str(lock), "--dest", str(folder / "wh"), "--json", env=env
    )
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["files"]
    return folder


def test_lock_then_create_installs_exactly_the_lock(wheelhouse: Path, tmp_path: Path) -> None:
    lock = wheelhouse / "pylock.numpy.toml"
    made = read_lock(lock)
    assert made.standard and made.profile == "numpy" and made.python == "3.11"
    data = created(kboot("create", "numpy", "--lock", str(lock), "--json"))
    assert data["lock"]["path"] == str(lock)
    pins = made.pins
    assert pins["keras"] == data["packages"]["keras"]
    assert all(data["packages"][name] == version for name, version in pins.items())
    record = json.loads((Path(data["path"]) / "kboot-env.json").read_text())
    assert record["lock"]["digest"] == data["lock"]["digest"]


def test_lock_for_another_python_or_malformed_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "pylock.py312.toml"
    assert kboot("lock", "numpy", "--python-version", "3.12", "-o", str(other)).returncode == 0
    refused = kboot("create", "numpy", "--lock", str(other))
    assert refused.returncode == 2
    assert "made for Python 3.12" in refused.stderr and "--python-version 3.11" in refused.stderr
    broken = tmp_path / "broken.lock"
    broken.write_text("numpy>=1\n")
    bad = kboot("create", "numpy", "--lock", str(broken))
    assert bad.returncode == 2 and "is not a lock" in bad.stderr
    assert "Traceback" not in bad.stderr + refused.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()


def test_offline_create_from_a_wheelhouse_without_network(wheelhouse: Path, tmp_path: Path) -> None:
    proc = kboot_offline(
        tmp_path, "create", "numpy", "--offline", "--wheelhouse", str(wheelhouse / "wh"), "--json"
    )
    data = created(proc)
    assert data["lock"]["path"] == str(wheelhouse / "wh" / "pylock.toml")
    assert data["smoke"]["ok"]
    assert report_from_fresh_shell(Path(data["path"]), tmp_path)["backend"] == "numpy"


def test_offline_refuses_tampered_and_names_missing_wheels(
    wheelhouse: Path, tmp_path: Path
) -> None:
    house = tmp_path / "wh"
    shutil.copytree(wheelhouse / "wh", house)
    wheel = next(house.glob("namex-*.whl"))
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("namex/injected.py", "print('not what was locked')\n")
    command = ("create", "numpy", "--offline", "--wheelhouse", str(house))
    tampered = kboot_offline(tmp_path, *command)
    assert tampered.returncode == 1
    assert "hash mismatch for namex==" in tampered.stderr
    wheel.unlink()
    missing = kboot_offline(tmp_path, *command)
    assert missing.returncode == 1
    assert "namex==" in missing.stderr and "is not in the wheelhouse" in missing.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()


@pytest.mark.needs("unshare")
def test_a_wheelhouse_online_is_still_hash_checked(wheelhouse: Path, tmp_path: Path) -> None:
    """Defect 8: --wheelhouse without --offline ignored kboot-lock.txt, so a planted wheel of
    a higher version was installed, and its .pth ran during kboot's own smoke test. Issue 15,
    item 14: the planted wheel, and a tampered one, were then skipped, not refused."""
    house = tmp_path / "wh"
    shutil.copytree(wheelhouse / "wh", house)
    sprung = tmp_path / "SPRUNG"
    planted = house / "namex-99.0.0-py3-none-any.whl"
    with zipfile.ZipFile(planted, "w") as archive:
        archive.writestr("namex/__init__.py", "")
        archive.writestr("namex-payload.pth", f"import os; open({str(sprung)!r}, 'w')\n")
        archive.writestr(
            "namex-99.0.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: namex\nVersion: 99.0.0\n",
        )
        archive.writestr("namex-99.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        archive.writestr("namex-99.0.0.dist-info/RECORD", "")
    locked = read_lock(house / "pylock.toml")
    assert locked.pins["namex"] != "99.0.0"
    # issue 15, item 14: was quietly skipped (the installer took the locked namex)
    extra = kboot("create", "numpy", "--wheelhouse", str(house))
    assert extra.returncode == 1, extra.stderr
    assert f"{planted} is not in the lock" in extra.stderr
    assert not sprung.exists(), "the planted wheel's code ran"
    offline = kboot_offline(tmp_path, "create", "numpy", "--offline", "--wheelhouse", str(house))
    assert offline.returncode == 1 and f"{planted} is not in the lock" in offline.stderr
    planted.unlink()

    wheel = next(house.glob("namex-*.whl"))  # was skipped too: online, namex came from the index
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("namex/injected.py", "print('not what was locked')\n")
    tampered = kboot("create", "numpy", "--wheelhouse", str(house))
    assert tampered.returncode == 1, tampered.stderr
    assert "hash mismatch for namex==" in tampered.stderr and wheel.name in tampered.stderr
    assert "Traceback" not in extra.stderr + tampered.stderr + offline.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()

    (house / "pylock.toml").unlink()  # a wheelhouse nothing can check is refused
    refused = kboot("create", "numpy", "--name", "other", "--wheelhouse", str(house))
    assert refused.returncode == 2
    assert "holds no pylock.toml" in refused.stderr
    assert not sprung.exists()


def test_packages_installed_by_hand_are_lock_drift_until_sync(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """Issue 15, item 7: in an environment built from a lock, another keras and an extra
    package installed by hand were invisible to sync --check, check, sync and list."""
    from uv import find_uv_bin

    lock = wheelhouse / "pylock.numpy.toml"
    locked = read_lock(lock).pins["keras"]
    other = "3.8.0" if locked != "3.8.0" else "3.9.0"
    lab = tmp_path / "lab.toml"
    lab.write_text(f'[[env]]\nname = "lab"\nprofile = "numpy"\nlock = "{lock}"\n')
    assert kboot("sync", str(lab)).returncode == 0
    assert kboot("sync", str(lab), "--check").returncode == 0
    (env,) = json.loads(kboot("list", "--json").stdout)
    python = Path(env["path"]) / "bin" / "python"
    by_hand = subprocess.run(
        [find_uv_bin(), "pip", "install", "--python", str(python), "six", f"keras=={other}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert by_hand.returncode == 0, by_hand.stderr

    checked = kboot("sync", str(lab), "--check", "--json")
    assert checked.returncode == 1, checked.stderr
    (entry,) = json.loads(checked.stdout)["environments"]
    assert entry["status"] == "differs" and "six" in entry["detail"]
    drift = {d["name"]: d for d in entry["lock_drift"]}
    assert drift["six"]["locked"] is None and drift["six"]["installed"]
    assert drift["keras"] == {"name": "keras", "locked": locked, "installed": other}
    check = kboot("check", "lab", "--json")
    assert check.returncode == 1, check.stderr
    assert {d["name"] for d in json.loads(check.stdout)["lock_drift"]} == {"keras", "six"}
    (listed,) = json.loads(kboot("list", "--json").stdout)
    assert listed["keras_version"] == other  # what is installed, not what the record says

    repaired = kboot("sync", str(lab), "--json")
    assert repaired.returncode == 0, repaired.stderr
    (entry,) = json.loads(repaired.stdout)["environments"]
    assert entry["status"] == "rebuilt" and entry["changed"]
    assert kboot("sync", str(lab), "--check").returncode == 0
    (listed,) = json.loads(kboot("list", "--json").stdout)
    assert listed["keras_version"] == locked and listed["lock_drift"] == []
    assert not list((Path(env["path"]) / "lib").glob("python*/site-packages/six-*.dist-info"))


def test_create_is_idempotent_and_updates_what_changed(tmp_path: Path, write_profile: Any) -> None:
    text = (Path(__file__).parent.parent / "profiles" / "numpy.toml").read_text()
    profile = write_profile("lab", text)
    first = created(kboot("create", str(profile), "--json"))
    assert first["action"] == "created" and first["changed"] is True

    again = created(kboot("create", str(profile), "--json"))
    assert again["changed"] is False and again["action"] == "unchanged"
    assert again["smoke"]["ok"] and again["verified"] is False
    verified = created(kboot("create", str(profile), "--verify", "--json"))
    assert verified["changed"] is False and verified["verified"] is True

    profile.write_text(text.replace('backend = "numpy"', 'backend = "numpy"\nfloatx = "float16"'))
    updated = created(kboot("create", str(profile), "--json"))
    assert updated["action"] == "updated"
    assert updated["changes"] == ["floatx: 'float32' -> 'float16'"]
    assert report_from_fresh_shell(Path(updated["path"]), tmp_path)["floatx"] == "float16"

    profile.write_text(text.replace('"jax>=0.4.30"', '"jax>=0.4.30", "namex"'))
    rebuilt = created(kboot("create", str(profile), "--json"))
    assert rebuilt["action"] == "rebuilt"
    assert any(change.startswith("packages:") for change in rebuilt["changes"])
    assert any(change.startswith("floatx:") for change in rebuilt["changes"])


def test_several_profiles_at_once_one_failing(tmp_path: Path) -> None:
    proc = kboot("create", "numpy", "jax-cpu", "no-such-profile", "--json")
    assert proc.returncode == 2  # the worst outcome: a bad profile
    items = {item["name"]: item for item in json.loads(proc.stdout)}
    assert items["numpy"]["ok"] and items["numpy"]["action"] == "created"
    assert items["jax-cpu"]["ok"] and items["jax-cpu"]["smoke"]["reported"]["backend"] == "jax"
    assert not items["no-such-profile"]["ok"]
    assert "unknown profile" in items["no-such-profile"]["error"]
    table = kboot("create", "numpy", "jax-cpu")
    assert table.returncode == 0
    assert "unchanged" in table.stdout and "2 ok, 0 failed" in table.stdout


MANIFEST = """
[[env]]
name = "lab-np"
profile = "numpy"

[[env]]
name = "lab-jax"
profile = { backend = "jax", packages = ["jax"], image_data_format = "channels_first" }
"""


def sync(manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return kboot("sync", str(manifest), "--json", *args)


def test_sync_creates_leaves_reports_and_prunes(tmp_path: Path) -> None:
    manifest = tmp_path / "lab.toml"
    manifest.write_text(MANIFEST)
    check = sync(manifest, "--check")
    assert check.returncode == 1
    assert {e["status"] for e in json.loads(check.stdout)["environments"]} == {"missing"}

    first = sync(manifest)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["changed"] is True
    assert {e["name"]: e["status"] for e in result["environments"]} == {
        "lab-np": "created",
        "lab-jax": "created",
    }
    second = json.loads(sync(manifest).stdout)
    assert second["changed"] is False
    assert {e["status"] for e in second["environments"]} == {"unchanged"}
    assert sync(manifest, "--check").returncode == 0

    assert kboot("create", "numpy", "--no-smoke").returncode == 0  # not in the manifest
    extra = json.loads(sync(manifest, "--check").stdout)
    assert [e["name"] for e in extra["extra"]] == ["numpy"] and extra["in_sync"] is True
    assert sync(manifest, "--check", "--prune").returncode == 1
    pruned = json.loads(sync(manifest, "--prune").stdout)
    assert pruned["extra"][0]["status"] == "removed"
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()

    manifest.write_text(MANIFEST.replace("channels_first", "channels_last"))
    changed = json.loads(sync(manifest, "--check").stdout)
    assert {e["name"]: e["status"] for e in changed["environments"]}["lab-jax"] == "differs"
    updated = json.loads(sync(manifest).stdout)
    assert {e["name"]: e["status"] for e in updated["environments"]}["lab-jax"] == "updated"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[env]]\nname = "a"\nprofile = "numpy"\n[[env]]\nname = "a"\nprofile = "jax-cpu"\n',
            "appears twice",
        ),
        ('[[env]]\nname = "a"\nprofil = "numpy"\n', "did you mean 'profile'"),
        ('[[env]]\nname = "a"\nprofile = "no-such-profile"\n', "unknown profile"),
        ('[[env]]\nname = "a"\n', "missing required key 'profile'"),
        ('[[env]]\nname = "../a"\nprofile = "numpy"\n', "not allowed"),
        ("[[env]\n", "invalid TOML"),
    ],
)
def test_bad_manifests_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    manifest = tmp_path / "lab.toml"
    manifest.write_text(text)
    proc = kboot("sync", str(manifest))
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_interrupted_sync_leaves_each_env_whole_and_the_next_finishes(tmp_path: Path) -> None:
    manifest = tmp_path / "lab.toml"
    manifest.write_text(MANIFEST.replace('profile = "numpy"', 'profile = "tf-cpu"'))
    # --jobs 1: the first environment is done, the second is on its way
    proc = start_kboot("sync", str(manifest), "--jobs", "1", until="lab-np ✓ write keras.json")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=300)
    assert proc.returncode == 130
    envs = tmp_path / "kboot-home" / "envs"
    for name in ("lab-np", "lab-jax"):
        path = envs / name
        assert not path.exists() or (path / "kboot-env.json").is_file(), f"{name} half-built"
    assert not list(envs.glob("*/.kboot-old-*")) and not list(envs.glob(".*kboot-old-*"))
    finished = json.loads(sync(manifest).stdout)
    assert {e["status"] for e in finished["environments"]} <= {"created", "unchanged"}
    assert sync(manifest, "--check").returncode == 0


@pytest.mark.needs("unshare")
def test_a_mirror_of_what_download_fetched_serves_a_create(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """Issue 16, item 10: kboot adds pip to an environment; a private mirror holding exactly
    what `kboot download numpy` fetched has no pip, and the create failed ("pip was not
    found on the package index", blaming the profile's names). pip now comes from
    virtualenv's own wheel, as `--installer pip` environments are seeded."""
    from virtualenv.seed.wheels.embed import get_embed_wheel

    empty_index = tmp_path / "empty-index"
    empty_index.mkdir()
    proc = kboot_offline(  # no network at all: the mirror is the only source
        tmp_path,
        "create", "numpy", "--index-url", empty_index.as_uri(),
        "--find-links", str(wheelhouse / "wh"), "--json",
    )  # fmt: skip
    data = created(proc)
    assert data["smoke"]["ok"]
    bundled = get_embed_wheel("pip", "3.11")
    assert bundled is not None
    version = Path(bundled.path).name.split("-")[1]
    assert data["packages"].get("pip") == version
    pip = subprocess.run(
        [str(Path(data["path"]) / "bin" / "python"), "-m", "pip", "--version"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert pip.returncode == 0 and f"pip {version} " in pip.stdout


def test_a_tampered_lock_names_the_package_in_its_last_line(
    wheelhouse: Path, tmp_path: Path
) -> None:
    """Issue 16, item 11: every hash of numpy's entry changed; uv names numpy only above
    the hundred hashes it lists, so kboot's error said "exit code 1". Its error line now
    ends with the cause uv states."""
    lock = tmp_path / "pylock.tampered.toml"
    blocks = (wheelhouse / "pylock.numpy.toml").read_text().split("\n[[packages]]\n")
    lock.write_text(
        "\n[[packages]]\n".join(
            re.sub(r'sha256 = "[0-9a-f]{64}"', 'sha256 = "' + "0" * 64 + '"', block)
            if block.startswith('name = "numpy"\n')
            else block
            for block in blocks
        )
    )
    numpy = read_lock(wheelhouse / "pylock.numpy.toml").pins["numpy"]
    for installer in ("uv", "pip"):
        proc = kboot("create", "numpy", "--lock", str(lock), "--installer", installer)
        assert proc.returncode == 1, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("kboot: error:")]
        assert len(errors) == 1 and errors[0].endswith(f": hash mismatch for numpy=={numpy}")
        assert "kboot download" in proc.stderr.splitlines()[-1]  # the hint, under it
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()


@pytest.mark.needs("unshare")
def test_one_manifest_drives_lock_download_and_offline_sync(tmp_path: Path) -> None:
    """Issue 16, item 9: `kboot lock lab.toml`, `kboot download lab.toml` (every entry's
    wheelhouse, made from its lock, inline profiles too), then `kboot sync lab.toml` with
    no network, in a fresh folder."""
    lab = tmp_path / "lab"
    (lab / "wheels").mkdir(parents=True)  # download makes each wheelhouse, not its folder
    manifest = lab / "lab.toml"
    manifest.write_text(
        '[[env]]\nname = "keras-numpy"\nprofile = "numpy"\nlock = "locks/pylock.numpy.toml"\n'
        'wheelhouse = "wheels/numpy"\noffline = true\n\n'
        '[[env]]\nname = "keras-np16"\n'
        'profile = { backend = "numpy", packages = ["numpy>=1.26", "scipy>=1.11", '
        '"jax>=0.4.30"], floatx = "float16" }\n'
        'wheelhouse = "wheels/np16"\noffline = true\n'
    )
    locked = kboot("lock", str(manifest))
    assert locked.returncode == 0, locked.stderr
    assert (lab / "locks" / "pylock.numpy.toml").is_file()
    fetched = kboot("download", str(manifest), "--json")
    assert fetched.returncode == 0, fetched.stderr
    items = {item["name"]: item for item in json.loads(fetched.stdout)}
    for name, house in (("keras-numpy", "numpy"), ("keras-np16", "np16")):
        assert items[name]["download"]["wheelhouse"] == str(lab / "wheels" / house)
        assert (lab / "wheels" / house / "pylock.toml").is_file()
    for name, house, lock in (
        ("keras-numpy", "numpy", "numpy"),
        ("keras-np16", "np16", "keras-np16"),
    ):
        # the lock `kboot lock` made: the entry's own, or locks/pylock.<name>.toml
        assert items[name]["lock"] == str(lab / "locks" / f"pylock.{lock}.toml")
        made = read_lock(lab / "locks" / f"pylock.{lock}.toml")
        kept = read_lock(lab / "wheels" / house / "pylock.toml")  # its files named by path
        assert kept.pins == made.pins and kept.meta["lock_digest"] == pins_digest(made)
        hashes = {h for p in made.entries for h in p.hashes}
        assert all(f"sha256:{f.sha256}" in hashes for p in kept.entries for f in p.files)
    synced = kboot_offline(tmp_path, "sync", str(manifest), "--json")
    assert synced.returncode == 0, synced.stderr
    result = json.loads(synced.stdout)
    assert result["in_sync"]
    statuses = {e["name"]: e["status"] for e in result["environments"]}
    assert statuses == {"keras-numpy": "created", "keras-np16": "created"}
    home = Path(os.environ["KBOOT_HOME"]) / "envs"
    assert report_from_fresh_shell(home / "keras-np16", tmp_path)["floatx"] == "float16"
