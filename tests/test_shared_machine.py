"""Issue 15, shared lab machines: other users are the threat. Each test reproduces one
defect; the multi-user ones run for real with a second account made for the test."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from bootstrap.envs.lifecycle import _edit, restore_edits
from bootstrap.envs.plan import check_dest, check_link
from bootstrap.install.interpreters import Interpreter
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.keras_json import merge_keras_json, read_keras_json
from bootstrap.state.ledger import Edit
from bootstrap.system.errors import KbootError, UntrustedPathError, UsageError
from bootstrap.system.files import private_dir, trusted_dir
from bootstrap.system.paths import kboot_home
from helpers import OtherUser, kboot, other_user

SECRET = {"token": "s3cr3t-kboot-issue-15"}


@pytest.fixture
def bob() -> Iterator[OtherUser]:
    with other_user() as user:
        yield user


def files_in(folder: Path) -> dict[str, bytes]:
    """The regular files in `folder` (a link is not followed: bob's points at the secret)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if stat.S_ISREG(p.lstat().st_mode)}


# --- item 2: root never reads through, or copies from, another user's link --------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """root's credentials, a valid JSON object (so a read through a link would merge it)."""
    folder = tmp_path / "sec"
    folder.mkdir(mode=0o700)
    path = folder / "cred.json"
    path.write_text(json.dumps(SECRET), encoding="utf-8")
    path.chmod(0o600)
    return path


def bobs_folder(shared_tmp: Path, bob: OtherUser) -> Path:
    folder = shared_tmp / "bob"
    folder.mkdir()
    os.chown(folder, bob.uid, bob.gid)
    folder.chmod(0o777)
    return folder


def assert_no_leak(folder: Path, secret: Path) -> None:
    for name, content in files_in(folder).items():
        assert SECRET["token"].encode() not in content, f"the secret leaked into {name}"


@pytest.mark.parametrize("planted", ["keras.json", "keras.json.bak"])
@pytest.mark.needs("second-user")
def test_config_set_never_reads_through_a_link_another_user_planted(
    shared_tmp: Path, bob: OtherUser, secret: Path, planted: str
) -> None:
    folder = bobs_folder(shared_tmp, bob)
    bob.run("ln", "-s", str(secret), str(folder / planted))
    proc = kboot("config", "set", "floatx=float64", env={**os.environ, "KERAS_HOME": str(folder)})
    assert proc.returncode == 2, proc.stderr
    assert f"{folder / planted}" in proc.stderr or f"{folder}" in proc.stderr, proc.stderr
    assert "hint:" in proc.stderr
    assert (folder / planted).is_symlink(), "bob's link was replaced"
    assert_no_leak(folder, secret)
    assert json.loads(secret.read_text(encoding="utf-8")) == SECRET


@pytest.mark.needs("second-user")
def test_config_set_refuses_a_keras_json_of_another_user(
    shared_tmp: Path, bob: OtherUser, secret: Path
) -> None:
    folder = bobs_folder(shared_tmp, bob)
    bob.run("sh", "-c", f"echo '{{}}' > {folder / 'keras.json'}")
    proc = kboot("config", "set", "floatx=float64", env={**os.environ, "KERAS_HOME": str(folder)})
    assert proc.returncode == 2, proc.stderr
    assert str(folder) in proc.stderr and "hint:" in proc.stderr
    assert (folder / "keras.json").read_bytes() == b"{}\n"
    assert not (folder / "keras.json.bak").exists()


@pytest.mark.needs("second-user")
def test_a_keras_home_another_user_can_write_is_refused(
    shared_tmp: Path, bob: OtherUser, secret: Path
) -> None:
    """root's own, valid keras.json in a folder bob may write (no sticky bit): bob could
    swap in a link (or a hard link) between kboot's check and its read."""
    folder = shared_tmp / "open"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "keras.json").write_text("{}\n", encoding="utf-8")
    proc = kboot("config", "set", "floatx=float64", env={**os.environ, "KERAS_HOME": str(folder)})
    assert proc.returncode == 2, proc.stderr
    assert "writable by other users" in proc.stderr
    assert (folder / "keras.json").read_bytes() == b"{}\n"


@pytest.mark.needs("second-user")
def test_create_scope_user_refuses_a_planted_link_before_building(
    shared_tmp: Path, bob: OtherUser, secret: Path, tmp_path: Path
) -> None:
    folder = bobs_folder(shared_tmp, bob)
    bob.run("ln", "-s", str(secret), str(folder / "keras.json"))
    proc = kboot(
        "create", "numpy", "--scope", "user", "--dest", str(tmp_path / "env"),
        env={**os.environ, "KERAS_HOME": str(folder)}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert str(folder) in proc.stderr
    assert not (tmp_path / "env").exists(), "refused only after building"
    assert (folder / "keras.json").is_symlink()
    assert_no_leak(folder, secret)


@pytest.mark.needs("second-user")
def test_reading_refuses_a_link_another_user_made(tmp_path: Path, bob: OtherUser) -> None:
    (tmp_path / "real.json").write_text('{"backend": "jax"}', encoding="utf-8")
    link = tmp_path / "keras.json"
    link.symlink_to(tmp_path / "real.json")
    assert read_keras_json(link) == {"backend": "jax"}  # your own link (dotfiles): followed
    os.lchown(link, bob.uid, bob.gid)
    with pytest.raises(UntrustedPathError, match="another user made"):
        read_keras_json(link)


def test_the_backup_keeps_the_permissions_of_a_private_keras_json(tmp_path: Path) -> None:
    path = tmp_path / "keras.json"
    path.write_text('{"token": "x"}\n', encoding="utf-8")
    path.chmod(0o600)
    result = merge_keras_json(path, {"floatx": "float64"})
    assert result.backup is not None
    assert stat.S_IMODE(result.backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- item 8: an empty file before is a file, not "no file" -------------------------


def test_rollback_puts_back_an_empty_file_instead_of_deleting_it(tmp_path: Path) -> None:
    path = tmp_path / "keras.json.bak"
    written = b'{"floatx": "float64"}\n'
    path.write_bytes(written)  # what kboot wrote over the empty file
    edit = Edit(path, "", hashlib.sha256(written).hexdigest())
    assert restore_edits([edit]) == []
    assert path.is_file(), "the empty file that was there before was deleted"
    assert path.read_bytes() == b""


def test_a_journaled_merge_over_an_empty_backup_rolls_back_to_it(tmp_path: Path) -> None:
    """create --scope user: keras.json and an empty keras.json.bak were there before; the
    merge is journaled as create journals it, then rolled back."""
    path, backup = tmp_path / "keras.json", tmp_path / "keras.json.bak"
    path.write_text('{"backend": "jax"}\n', encoding="utf-8")
    backup.write_bytes(b"")
    edits: list[Edit] = []
    merge_keras_json(path, {"floatx": "float64"}, before_write=lambda *a: edits.append(_edit(*a)))
    assert [e.before for e in edits] == ["", '{"backend": "jax"}\n']
    assert restore_edits(edits) == []
    assert path.read_text(encoding="utf-8") == '{"backend": "jax"}\n'
    assert backup.is_file() and backup.read_bytes() == b""


def test_rollback_deletes_a_file_that_was_not_there_before(tmp_path: Path) -> None:
    path = tmp_path / "keras.json"
    written = b"{}\n"
    path.write_bytes(written)
    assert restore_edits([Edit(path, None, hashlib.sha256(written).hexdigest())]) == []
    assert not path.exists()


# --- item 9: only the profile shapes the environment ---------------------------------


def test_virtualenv_variables_and_ini_do_not_shape_the_environment(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = tmp_path / "virtualenv.ini"
    ini.write_text("[virtualenv]\nsystem_site_packages = true\n", encoding="utf-8")
    default_ini = isolated / ".config" / "virtualenv" / "virtualenv.ini"
    default_ini.parent.mkdir(parents=True)
    default_ini.write_text(ini.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("VIRTUALENV_SYSTEM_SITE_PACKAGES", "1")
    monkeypatch.setenv("VIRTUALENV_PROMPT", "planted")
    interpreter = Interpreter(Path(sys.executable), Version(platform.python_version()))
    env = VirtualEnv.create(tmp_path / "env", interpreter)
    assert env.system_site_packages is False
    assert "planted" not in (tmp_path / "env" / "pyvenv.cfg").read_text(encoding="utf-8")
    monkeypatch.delenv("VIRTUALENV_SYSTEM_SITE_PACKAGES")
    monkeypatch.setenv("VIRTUALENV_CONFIG_FILE", str(ini))
    env = VirtualEnv.create(tmp_path / "env2", interpreter)
    assert env.system_site_packages is False
    assert os.environ["VIRTUALENV_CONFIG_FILE"] == str(ini)  # the caller's own is untouched


# --- item 13: kboot's home is a folder of its own, that only you (or root) can change ----


@pytest.mark.parametrize("home", ["/", "/usr", "/etc", "/var", "/opt", "/tmp", "/dev", "/root"])
def test_a_system_folder_is_never_kboot_s_home(home: str) -> None:
    with pytest.raises(UsageError, match="KBOOT_HOME") as caught:
        kboot_home({"KBOOT_HOME": home})
    assert caught.value.exit_code == 2 and caught.value.hint


def test_a_home_folder_itself_is_never_kboot_s_home(isolated: Path) -> None:
    with pytest.raises(UsageError, match="home folder"):
        kboot_home({"KBOOT_HOME": str(isolated)})
    assert kboot_home({"KBOOT_HOME": str(isolated / "kb")}) == isolated / "kb"


def test_kboot_home_slash_creates_nothing() -> None:
    before = set(Path("/").iterdir())
    proc = kboot("list", env={**os.environ, "KBOOT_HOME": "/"})
    assert proc.returncode == 2, proc.stderr
    assert "KBOOT_HOME=/ is a filesystem root" in proc.stderr and "hint:" in proc.stderr
    assert set(Path("/").iterdir()) == before


@pytest.mark.needs("second-user")
def test_a_kboot_home_under_another_user_s_folder_is_refused(
    shared_tmp: Path, bob: OtherUser
) -> None:
    folder = shared_tmp / "bob"
    folder.mkdir(mode=0o755)
    os.chown(folder, bob.uid, bob.gid)
    bob.run("mkdir", str(folder / "kb"))
    for home in (folder / "kb", folder / "kb" / "new"):
        proc = kboot("list", env={**os.environ, "KBOOT_HOME": str(home)})
        assert proc.returncode == 2, proc.stderr
        assert f"belongs to another user ({bob.name})" in proc.stderr, proc.stderr
        assert not (home / "envs").exists() and not (folder / "kb" / "owned").exists()


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777], ids=oct)
def test_a_kboot_home_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    home = tmp_path / "kb"
    home.mkdir()
    home.chmod(mode)  # the sticky bit protects what is in it, not the folder's own entries
    with pytest.raises(UntrustedPathError, match="writable by other users"):
        kboot_home({"KBOOT_HOME": str(home)})


def test_a_kboot_home_below_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "open" / "kb").mkdir(mode=0o700)
    with pytest.raises(UntrustedPathError, match=r"above it, is writable by other users"):
        kboot_home({"KBOOT_HOME": str(tmp_path / "open" / "kb")})


def test_a_kboot_home_of_your_own_in_tmp_is_fine(shared_tmp: Path) -> None:
    """/tmp is writable by all, but sticky: nobody else can swap your folder in it."""
    assert kboot_home({"KBOOT_HOME": str(shared_tmp)}) == shared_tmp
    assert kboot_home({"KBOOT_HOME": str(shared_tmp / "not-yet")}) == shared_tmp / "not-yet"
    trusted_dir(shared_tmp / "a" / "b")


# --- item 1: root never runs a Python another user could have swapped in -----------------


def test_an_envs_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "kb"
    (home / "envs").mkdir(parents=True)
    (home / "envs").chmod(0o777)
    proc = kboot("list", env={**os.environ, "KBOOT_HOME": str(home)})
    assert proc.returncode == 2, proc.stderr
    assert f"{home / 'envs'} is not safe to use" in proc.stderr


@pytest.mark.integration
@pytest.mark.needs("second-user")
def test_root_never_runs_a_python_another_user_swapped_in(shared_tmp: Path) -> None:
    """(1) With envs/ writable by others, another user swaps envs/numpy for a copy (the
    record and token are readable) whose bin/python is their script: root's next `kboot
    check` or `kboot list` ran it as root. Now the folder is refused before anything runs."""
    home = shared_tmp / "kb"
    environ = {**os.environ, "KBOOT_HOME": str(home)}
    made = kboot("create", "numpy", "--no-smoke", "--json", env=environ)
    assert made.returncode == 0, made.stderr
    envs = home / "envs"
    home.chmod(0o755)
    envs.chmod(0o777)  # the lab admin's mistake
    marker = shared_tmp / "ran-as-root"
    with other_user() as mallory:
        copy = envs / ".mallory"  # her copy (the record and token are readable), in envs/
        shutil.copytree(envs / "numpy", copy, symlinks=True)
        (copy / "bin" / "python").unlink()
        (copy / "bin" / "python").write_text(f"#!/bin/sh\nid -u > {marker}\n")
        (copy / "bin" / "python").chmod(0o755)
        subprocess.run(["chown", "-R", mallory.name, str(copy)], check=True)
        mallory.run("mv", str(envs / "numpy"), str(envs / ".numpy-moved"))
        mallory.run("mv", str(copy), str(envs / "numpy"))
        for command in (["check", "numpy"], ["list"], ["doctor", "numpy"]):
            proc = kboot(*command, env=environ)
            assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
            assert "is not safe to use" in proc.stderr, proc.stderr
        assert not marker.exists(), "root ran the other user's script"


# --- item 4: --replace-foreign never moves a home, a system folder or another's folder ---


def backups_of(folder: Path) -> list[Path]:
    return [p for p in folder.parent.iterdir() if p.name.startswith(f"{folder.name}.kboot-")]


@pytest.mark.needs("second-user")
def test_replace_foreign_never_moves_another_user_s_home(shared_tmp: Path, bob: OtherUser) -> None:
    """Only the caller's own $HOME was protected: bob's home was renamed aside."""
    home = shared_tmp / "home-of-bob"
    home.mkdir(mode=0o755)
    (home / ".bashrc").write_text("echo hi\n", encoding="utf-8")
    os.chown(home, bob.uid, bob.gid)
    os.chown(home / ".bashrc", bob.uid, bob.gid)
    subprocess.run(["usermod", "--home", str(home), bob.name], check=True, capture_output=True)
    proc = kboot("create", "numpy", "--dest", str(home), "--replace-foreign", "--no-smoke")
    assert proc.returncode == 2, proc.stderr
    assert str(home) in proc.stderr and f"home folder of {bob.name}" in proc.stderr, proc.stderr
    assert (home / ".bashrc").read_text(encoding="utf-8") == "echo hi\n"
    assert not backups_of(home) and sorted(p.name for p in home.iterdir()) == [".bashrc"]


@pytest.mark.needs("second-user")
def test_replace_foreign_never_moves_a_folder_of_another_user(
    shared_tmp: Path, bob: OtherUser
) -> None:
    """root with --replace-foreign on bob's project folder: refused, not renamed."""
    project = shared_tmp / "bobs-project"
    project.mkdir(mode=0o755)
    (project / "train.py").write_text("print(1)\n", encoding="utf-8")
    os.chown(project, bob.uid, bob.gid)
    proc = kboot("create", "numpy", "--dest", str(project), "--replace-foreign", "--no-smoke")
    assert proc.returncode == 2, proc.stderr
    assert str(project) in proc.stderr and "another user" in proc.stderr, proc.stderr
    assert sorted(p.name for p in project.iterdir()) == ["train.py"] and not backups_of(project)


@pytest.mark.parametrize("folder", ["/", "/usr", "/etc", "/var", "/opt", "/usr/local", "/srv"])
def test_a_system_folder_is_never_an_environment(folder: str, tmp_path: Path) -> None:
    """(Checked on check_dest itself: a create with --replace-foreign would rename it.)"""
    with pytest.raises(KbootError) as caught:
        check_dest(Path(folder), tmp_path / "kboot-home")
    assert caught.value.exit_code == 2 and folder in caught.value.message


def test_a_mount_point_is_never_an_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounted = tmp_path / "disk"
    mounted.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(mounted) or real_ismount(p))
    with pytest.raises(UsageError, match="mount point"):
        check_dest(mounted, tmp_path / "kboot-home")
    check_dest(mounted / "env", tmp_path / "kboot-home")  # a folder on it is fine


@pytest.mark.needs("second-user")
def test_a_home_in_the_passwd_database_is_never_an_environment(
    shared_tmp: Path, bob: OtherUser, tmp_path: Path
) -> None:
    home = shared_tmp / "home-of-bob"
    home.mkdir(mode=0o755)
    subprocess.run(["usermod", "--home", str(home), bob.name], check=True, capture_output=True)
    kb = tmp_path / "kboot-home"
    with pytest.raises(UsageError, match=f"home folder of {bob.name}"):
        check_dest(home, kb)
    with pytest.raises(UsageError, match=f"holds the home folder of {bob.name}"):
        check_dest(shared_tmp, kb)
    check_dest(home.with_name("next-to-it"), kb)


# --- item 11: every component of kboot's folders, and of a --dest, by the trust rule -----


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777], ids=oct)
def test_a_dest_in_a_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Group-writable counted too, and the folder itself even when sticky (trusted_dir)."""
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    (open_folder / "env").mkdir(mode=0o700)
    open_folder.chmod(mode)
    target = open_folder / "env" if mode & 0o1000 else open_folder / "new-env"
    if mode & 0o1000:
        target.chmod(0o1777)
    with pytest.raises(UntrustedPathError, match="writable by other users"):
        check_dest(target, tmp_path / "kboot-home")


def test_a_dest_below_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    """Only the nearest parent was looked at: a swappable folder further up passed."""
    (tmp_path / "open" / "mine").mkdir(parents=True)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(UntrustedPathError, match=r"above it, is writable by other users"):
        check_dest(tmp_path / "open" / "mine" / "env", tmp_path / "kboot-home")
    check_dest(tmp_path / "mine-too" / "env", tmp_path / "kboot-home")  # all yours: fine


@pytest.mark.needs("second-user")
def test_a_dest_through_another_user_s_link_further_up_is_refused(
    shared_tmp: Path, bob: OtherUser
) -> None:
    """Only the last component was checked for a link: bob's link above it passed."""
    mine = shared_tmp / "mine"
    mine.mkdir(mode=0o755)
    link = shared_tmp / "projects"
    link.symlink_to(mine)
    os.lchown(link, bob.uid, bob.gid)
    says = f"goes through .*, a symlink that another user made .{bob.name}"
    with pytest.raises(UsageError, match=says) as caught:
        check_link(link / "env")
    assert str(link) in caught.value.message
    check_link(mine / "env")
    own = shared_tmp / "own-link"
    own.symlink_to(mine)
    check_link(own / "env")  # your own link is followed


def test_private_dir_creates_a_private_folder(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "kb" / "owned")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722], ids=oct)
def test_private_dir_refuses_a_folder_others_can_write(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "locks"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(UntrustedPathError, match="writable by other users"):
        private_dir(folder)


def test_private_dir_refuses_a_link(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UntrustedPathError, match="symlink"):
        private_dir(tmp_path / "locks")


@pytest.mark.needs("second-user")
def test_private_dir_refuses_a_folder_of_another_user(tmp_path: Path, bob: OtherUser) -> None:
    folder = tmp_path / "owned"
    folder.mkdir(mode=0o700)
    os.chown(folder, bob.uid, bob.gid)
    with pytest.raises(UntrustedPathError, match=f"belongs to another user .{bob.name}"):
        private_dir(folder)


def test_a_lock_folder_others_can_write_is_refused_by_a_real_command(tmp_path: Path) -> None:
    """locks/ was made with mkdir(exist_ok) and never checked."""
    home = tmp_path / "kboot-home"
    (home / "locks").mkdir(parents=True)
    (home / "locks").chmod(0o777)
    proc = kboot("remove", "nothing-here")
    assert proc.returncode == 2, proc.stderr  # a refusal (issue 15: every one is exit 2)
    assert str(home / "locks") in proc.stderr and "writable by other users" in proc.stderr


def test_the_ledger_is_checked_before_it_is_migrated(tmp_path: Path) -> None:
    """The migration of an old kboot home wrote records and ledger entries first and
    checked afterwards: with a folder above the ledger others can write, nothing is
    adopted or written."""
    from bootstrap.state.ledger import LEGACY_REGISTRY, open_ledger

    above = tmp_path / "open"
    home = above / "kb"
    (home / "envs").mkdir(parents=True)
    legacy = tmp_path / "old-env"
    (legacy / "bin").mkdir(parents=True)
    (legacy / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    record = json.dumps({"format": 1, "name": "old-env", "profile": {"name": "numpy"}})
    (legacy / "kboot-env.json").write_text(record, encoding="utf-8")
    (home / LEGACY_REGISTRY).write_text(f"{legacy}\n", encoding="utf-8")
    above.chmod(0o777)
    with pytest.raises(KbootError, match="writable by other users") as caught:
        open_ledger(home, home / "envs")
    assert caught.value.exit_code == 2
    assert not (home / "owned").exists()
    assert (legacy / "kboot-env.json").read_text(encoding="utf-8") == record


def test_the_kernel_ledger_below_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    from bootstrap.jupyter.registry import open_kernel_ledger

    home = tmp_path / "open" / "kb"
    home.mkdir(parents=True)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(KbootError, match="writable by other users"):
        open_kernel_ledger(home)


@pytest.mark.parametrize("which", ["owned", "kernels"])
def test_every_read_of_a_ledger_checks_it_first(tmp_path: Path, which: str) -> None:
    """`sync --check`, `list` and the kernel status read the ledgers without open_ledger:
    a ledger others can write proved something there."""
    from bootstrap.jupyter.registry import KernelLedger
    from bootstrap.state.ledger import Ledger

    home = tmp_path / "kb"
    (home / which).mkdir(parents=True)
    (home / which).chmod(0o777)
    ledger = Ledger(home) if which == "owned" else KernelLedger(home)
    with pytest.raises(KbootError, match="writable by other users"):
        ledger.get(tmp_path / "env")
    with pytest.raises(KbootError, match="writable by other users"):
        ledger.scan()
