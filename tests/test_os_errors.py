"""What the machine refuses (a full disk, permissions, a read-only file system, a long
name, a looping link) is said in its own words with a hint that fits it, and the hint of a
command that only reads never tells the user to free space or that it rolled back."""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.cli.app import writes
from bootstrap.system.errors import from_os_error, os_error_hint, os_error_reason
from helpers import kboot
from machine import as_unprivileged

ERRNOS = [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
          errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.EMFILE,
          errno.EIO, errno.EBUSY]  # fmt: skip


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
def test_a_read_only_command_is_never_told_to_free_space_or_that_it_rolled_back(
    code: int,
) -> None:
    exc = OSError(code, os.strerror(code), "/some/where")
    error = from_os_error(exc, writes=False)
    assert error.hint is not None
    assert "rolled back" not in error.hint
    if code not in (errno.ENOSPC, errno.EDQUOT):
        assert "space" not in error.hint
    assert error.message.endswith(": /some/where")
    assert "Errno" not in error.message and "OSError" not in error.message


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
def test_each_hint_fits_what_happened(code: int) -> None:
    exc = OSError(code, os.strerror(code), "/some/where")
    wrote, read = os_error_hint(exc, writes=True), os_error_hint(exc, writes=False)
    fits = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space",
        errno.EACCES: "permissions",
        errno.EPERM: "permissions",
        errno.EROFS: "read-only",
        errno.ENAMETOOLONG: "shorter",
        errno.ELOOP: "link",
        errno.ENOENT: "missing",
        errno.ENOTDIR: "missing",
        errno.EMFILE: "ulimit -n",
        errno.EIO: "dmesg",
        errno.EBUSY: "--debug",
    }[code]
    assert fits in wrote and fits in read
    if code != errno.ELOOP:
        assert "link" not in wrote + read  # a read-only file system is no symlink's fault
    assert "rolled back" in from_os_error(exc, writes=True).hint  # type: ignore[operator]


def test_the_reason_is_the_machine_s_words_and_the_path() -> None:
    assert os_error_reason(OSError(errno.EROFS, "Read-only file system", "/mnt/x")) == (
        "read-only file system: /mnt/x"
    )
    assert os_error_reason(OSError(errno.EBUSY, "Device or resource busy")) == (
        "Device or resource busy"
    )


@pytest.mark.parametrize(
    ("args", "wrote"),
    [
        (["list"], False),
        (["list", "--json"], False),
        (["--debug", "doctor", "--python", "/bin/ls"], False),
        (["show", "numpy"], False),
        (["profiles"], False),
        (["check", "lab"], False),
        (["config", "show"], False),
        (["sync", "lab.toml", "--check"], False),
        (["create", "numpy"], True),
        (["config", "set", "floatx=float64"], True),
        (["sync", "lab.toml"], True),
        (["remove", "lab"], True),
        (["run", "numpy"], True),
    ],
)
def test_which_commands_write(args: list[str], wrote: bool) -> None:
    assert writes(args) is wrote


def _unprivileged_kboot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_unprivileged([sys.executable, "-m", "bootstrap", *args]),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.needs("permissions")
def test_list_in_a_home_it_may_not_read_says_so_and_nothing_else(tmp_path: Path) -> None:
    envs = tmp_path / "kboot-home" / "envs"
    envs.mkdir(parents=True)
    (tmp_path / "kboot-home").chmod(0o700)
    envs.chmod(0)
    try:
        proc = _unprivileged_kboot("list")
    finally:
        envs.chmod(0o700)
    assert proc.returncode == 1, proc.stderr
    assert f"kboot: error: permission denied: {envs}\n" in proc.stderr
    assert "you may not read it" in proc.stderr
    assert "space" not in proc.stderr and "rolled back" not in proc.stderr
    assert "Traceback" not in proc.stderr and "Errno" not in proc.stderr


@pytest.mark.needs("permissions")
def test_a_dest_in_a_folder_you_may_not_write_is_no_raw_permission_error(
    tmp_path: Path,
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o555)
    try:
        proc = _unprivileged_kboot("create", "numpy", "--dest", str(closed / "env"))
    finally:
        closed.chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    assert f"permission denied: {closed / 'env'}; everything was rolled back" in proc.stderr
    assert "fix its permissions" in proc.stderr
    assert "PermissionError" not in proc.stderr and "Errno" not in proc.stderr
    assert list(closed.iterdir()) == []


def _on_read_only_tmpfs(
    mount: Path, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """kboot with `mount` a tmpfs holding a private folder `sub`, remounted read-only (in
    a user and mount namespace of its own: nothing outside sees it)."""
    mount.mkdir(exist_ok=True)
    script = (
        f"mount -t tmpfs none {shlex.quote(str(mount))} && "
        f"mkdir -m 700 {shlex.quote(str(mount / 'sub'))} && "
        f"mount -o remount,ro {shlex.quote(str(mount))} && "
        f"exec {shlex.join([sys.executable, '-m', 'bootstrap', *args])}"
    )
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300, check=False, env=environ)  # fmt: skip


@pytest.mark.needs("unshare")
def test_a_dest_on_a_read_only_file_system_says_so(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    dest = mount / "sub" / "env"
    proc = _on_read_only_tmpfs(mount, "create", "numpy", "--dest", str(dest))
    assert proc.returncode == 1, proc.stderr
    assert f"read-only file system: {dest}; everything was rolled back" in proc.stderr
    assert "mounted read-only" in proc.stderr
    assert "link" not in proc.stderr and "Errno" not in proc.stderr


@pytest.mark.needs("unshare")
def test_a_kboot_home_on_a_read_only_file_system_is_no_symlink(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    environ = {**os.environ, "KBOOT_HOME": str(mount / "sub")}
    made = _on_read_only_tmpfs(mount, "create", "numpy", environ=environ)
    assert made.returncode == 1, made.stderr
    assert "Read-only file system" in made.stderr and "writable" in made.stderr
    assert "symlink" not in made.stderr
    listed = _on_read_only_tmpfs(mount, "list", environ=environ)  # reading needs no writing
    assert listed.returncode == 0, listed.stderr
    assert "no environments yet" in listed.stdout


def test_a_looping_dest_link_is_named_a_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    proc = kboot("create", "numpy", "--dest", str(tmp_path / "a" / "env"))
    assert proc.returncode == 2, proc.stderr
    assert "is a symlink that loops" in proc.stderr
    assert "another user" not in proc.stderr


def test_a_name_too_long_for_the_file_system_says_so(tmp_path: Path) -> None:
    dest = tmp_path / ("d" * 300) / "env"
    proc = kboot("create", "numpy", "--dest", str(dest))
    assert proc.returncode == 1, proc.stderr
    assert "file name too long" in proc.stderr and "shorter path" in proc.stderr
    assert "Errno" not in proc.stderr
    assert {p.name for p in tmp_path.iterdir()} <= {"home", "kboot-home"}
