"""The code paths that differ on Windows, on this Linux machine (issue 17): kboot imports
and answers without the POSIX-only modules and functions (fcntl, pwd, killpg, wait4,
getuid, SIGKILL...), and each branch on `sys.platform == "win32"` does what it should.
The hosted CI workflow runs the fast tier on a real Windows as well."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path, PureWindowsPath
from types import SimpleNamespace

import pytest

from bootstrap.system import interrupts, process_lock, runner
from bootstrap.system.paths import EnvLayout

#: Runs first in a child Python: what Windows lacks is gone (the third-party modules that
#: pick a Windows module of their own there are imported before).
WITHOUT_POSIX = """\
import builtins, os, signal, sys
import platformdirs, platformdirs.unix, typer, rich, packaging.requirements
import subprocess, tempfile, shutil
POSIX_ONLY = {"fcntl", "pwd", "grp", "resource", "termios", "tty", "pty"}
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name.split(".")[0] in POSIX_ONLY:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
for name in POSIX_ONLY:
    sys.modules.pop(name, None)
for name in ("killpg", "wait4", "getuid", "geteuid", "getgid", "getegid", "fchmod",
             "getpgid", "setsid", "O_NOFOLLOW", "O_DIRECTORY"):
    if hasattr(os, name):
        delattr(os, name)
for name in ("SIGKILL", "SIGHUP", "SIGPIPE", "SIGQUIT"):
    if hasattr(signal, name):
        delattr(signal, name)
"""
EVERY_MODULE = """
import importlib, pkgutil, bootstrap
for info in pkgutil.walk_packages(bootstrap.__path__, "bootstrap."):
    importlib.import_module(info.name)
from bootstrap.cli.app import main
main(sys.argv[1:])
"""


@pytest.mark.needs("posix")  # the stand-in removes POSIX parts: there must be some to remove
@pytest.mark.parametrize("args", [["--help"], ["list", "--json"], ["show", "numpy"]])
def test_kboot_imports_and_answers_without_posix_only_parts(
    tmp_path: Path, args: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_POSIX + EVERY_MODULE, *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "KBOOT_HOME": str(tmp_path / "kboot")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_the_stand_in_does_remove_them() -> None:
    """The prelude really hides fcntl: else the test above proves nothing."""
    code = WITHOUT_POSIX + "import fcntl\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "No module named 'fcntl'" in proc.stderr
    code = (
        WITHOUT_POSIX
        + "import os, signal; print(hasattr(os, 'killpg'), hasattr(signal, 'SIGKILL'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout.split() == ["False", "False"]


def test_an_environment_on_windows_has_scripts_and_python_exe() -> None:
    layout = EnvLayout.for_platform(
        PureWindowsPath(r"C:\Users\ada\envs\jax"), python_version=(3, 12), platform="win32"
    )
    assert str(layout.python) == r"C:\Users\ada\envs\jax\Scripts\python.exe"
    assert str(layout.site_packages) == r"C:\Users\ada\envs\jax\Lib\site-packages"


@pytest.mark.needs("posix")  # a real child to stop; the branch itself is Windows'
def test_a_cancel_on_windows_kills_the_child_without_sigkill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No SIGKILL and no process groups there: kill_tree ends the child itself."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], text=True)
    try:
        monkeypatch.setattr(sys, "platform", "win32")
        # Windows' signal module has no SIGKILL (Popen.kill here still sends it)
        monkeypatch.setattr(interrupts, "signal", SimpleNamespace(SIGTERM=signal.SIGTERM))
        monkeypatch.delattr(os, "killpg")
        interrupts.kill_tree(child)
        assert child.wait(timeout=10) != 0
    finally:
        child.kill()
        child.wait()


class FlockMsvcrt:
    """msvcrt.locking's contract, over flock: LK_NBLCK raises OSError where another open
    file holds the lock; LK_UNLCK releases it."""

    LK_NBLCK, LK_UNLCK = 2, 0
    calls: list[int]

    def __init__(self) -> None:
        self.calls = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        import fcntl  # this stand-in runs on POSIX only

        assert nbytes == 1 and os.lseek(fd, 0, os.SEEK_CUR) == 0  # the first byte
        self.calls.append(mode)
        fcntl.flock(fd, fcntl.LOCK_UN if mode == self.LK_UNLCK else fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.needs("posix")
def test_the_environment_lock_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    msvcrt = FlockMsvcrt()
    monkeypatch.setitem(sys.modules, "msvcrt", msvcrt)
    monkeypatch.setattr(sys, "platform", "win32")
    locks, target = tmp_path / "locks", tmp_path / "envs" / "jax"
    with process_lock.env_lock(locks, target):
        assert process_lock.is_locked(locks, target)
        with pytest.raises(process_lock.LockedError), process_lock.env_lock(locks, target):
            pass
    # Windows cannot remove a file another process has open: the file may stay behind
    process_lock.lock_file_for(locks, target).write_text("4242")
    assert not process_lock.is_locked(locks, target)
    assert msvcrt.LK_UNLCK in msvcrt.calls


def test_lock_files_of_other_programs_are_left_alone_on_windows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No flock, no uid there: nothing to tighten, nothing to wait for (no fcntl import)."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "fcntl", None)  # an import of it fails
    lock = tmp_path / ".lock"
    lock.write_text("")
    lock.chmod(0o666)
    process_lock.keep_private(lock)
    process_lock.wait_until_free(lock, wait=0.1, what="uv")
    assert lock.stat().st_mode & 0o777 == 0o666


@pytest.mark.needs("posix")
def test_a_command_is_reaped_without_wait4(monkeypatch: pytest.MonkeyPatch) -> None:
    """No wait4 (Windows): the exit code, and no memory figure."""
    monkeypatch.delattr(os, "wait4")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], text=True)
    assert runner._wait(proc) == (3, None)


def test_run_logs_lock_is_a_no_op_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    from bootstrap.run import logs

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "fcntl", None)
    assert logs._lock(-1) is True


def test_the_owner_checks_have_no_uid_on_windows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bootstrap.system import files

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.delattr(os, "geteuid")
    folder = tmp_path / "mine"
    folder.mkdir()
    assert files.file_owner_differs(folder) is False
    files.trusted_dir(folder, what="a folder")  # no owner to check: no error
