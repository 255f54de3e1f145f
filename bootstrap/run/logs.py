"""Where `kboot run` keeps each run's output, and the one place that deletes it.

The rules:
- By default each `kboot run` gets a new folder `run-YYYYmmdd-HHMMSS-XXXXXXXX` (mode 0700,
  a name no one can guess) in kboot's runs folder (`paths.run_logs_dir()`, under the
  user's log folder: private to you, checked by `files.private_dir`), with kboot's marker
  file in it, locked while the runs go on.
- Only the newest KEEP_RUNS of those folders are kept: older ones are deleted when a new
  one is made. A folder is deleted only when all of this holds: it is in the runs folder,
  named as kboot names them, a real folder of yours (not a link), it holds kboot's marker
  (a regular file) and nothing else but regular `*.log` files, and no kboot runs in it (its
  marker is not locked); or it is empty (what a kboot killed before its rmdir left).
  Its files are unlinked one by one and the folder removed with
  rmdir: never rmtree, never through a link; anything else in it keeps it.
- `--logs DIR` is yours: it must be a folder no other user can change (`trusted_dir`), it
  is never pruned, and a folder kboot made for it (DIR itself when missing, or a new
  `run-...` subfolder when DIR holds anything) is mode 0700.
- A run where no command started leaves no folder: what kboot made for it is removed
  again when it holds no log.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bootstrap.system.errors import UsageError
from bootstrap.system.files import O_NOFOLLOW, private_dir, trusted_dir
from bootstrap.system.paths import run_logs_dir

#: How many runs' log folders the runs folder keeps (the newest).
KEEP_RUNS = 20
#: The file in each log folder kboot made: its proof that the folder is kboot's.
MARKER = ".kboot-run"
_NAME = re.compile(r"run-\d{8}-\d{6}-[a-z0-9_]{8}\Z")  # tempfile.mkdtemp's 8 characters


@dataclass(frozen=True)
class LogFolder:
    """The folder one `kboot run` writes its logs into, and what kboot made for it."""

    path: Path  # absolute, normalised
    made: tuple[Path, ...] = ()  # folders this kboot created, outermost first
    lock: int | None = None  # the marker, open and locked while the runs go on


def open_default(root: Path | None = None, *, keep: int = KEEP_RUNS) -> LogFolder:
    """A new folder in kboot's runs folder (`root`, by default `run_logs_dir()`), after
    pruning it to the newest `keep` - 1."""
    root = private_dir(root or run_logs_dir(), what="kboot's run logs folder").resolve()
    prune(root, keep=max(keep - 1, 0))
    folder = _new_run_folder(root)
    fd = os.open(folder / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW, 0o600)
    try:
        os.write(fd, b"kboot run: the logs of one run; kboot deletes this folder later\n")
        _lock(fd)
    except BaseException:
        os.close(fd)
        raise
    return LogFolder(folder, (folder,), fd)


def open_asked(logs: Path) -> LogFolder:
    """`--logs DIR`: that folder when it is new or empty, else a new subfolder of it (kboot
    overwrites no file it did not make). Refused (exit 2) when another user could change
    it, or when it cannot be used."""
    given = logs.expanduser().absolute()
    if os.path.lexists(given) and not given.is_dir():
        raise UsageError(
            f"--logs {given}: cannot use the folder: it is not a folder",
            hint="give --logs a new folder, or an existing one",
        )
    trusted_dir(given, what="--logs")  # before resolving: another user's link is refused
    folder = given.resolve()
    made: list[Path] = []
    try:
        missing = []
        above = folder
        while not os.path.lexists(above) and above.parent != above:
            missing.append(above)
            above = above.parent
        for new in reversed(missing):  # as mkdir -p, but DIR itself is private
            new.mkdir(mode=0o700 if new == folder else 0o777)
            made.append(new)
        if any(folder.iterdir()):
            made.append(_new_run_folder(folder))
            return LogFolder(made[-1], tuple(made))
    except OSError as exc:
        _remove_empty(made)
        raise UsageError(
            f"--logs {folder}: cannot use the folder: {exc.strerror}",
            hint="give --logs a folder of your own that you can write",
        ) from None
    return LogFolder(folder, tuple(made))


def close(folder: LogFolder) -> Path | None:
    """Done with the folder: its path, or None when no run left a log there (then what
    kboot made for it is removed)."""
    if folder.lock is not None:
        os.close(folder.lock)  # the lock goes with it
    try:
        names = {path.name for path in folder.path.iterdir()}
    except OSError:
        return None
    if names - {MARKER}:
        return folder.path
    if not folder.made:
        return None  # the user's own empty folder stays as it was
    if MARKER in names:
        with contextlib.suppress(OSError):
            (folder.path / MARKER).unlink()
    _remove_empty(list(folder.made))
    return None


def _remove_empty(made: list[Path]) -> None:
    for path in reversed(made):  # innermost first; stops at one that holds anything
        try:
            path.rmdir()
        except OSError:
            return


def _new_run_folder(parent: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"run-{stamp}-", dir=parent))  # 0700, never a link


def prune(root: Path, *, keep: int) -> list[Path]:
    """Delete the oldest of kboot's run folders in `root` so that `keep` remain; returns
    those deleted. Only folders that prove to be kboot's (see the module's rules)."""
    try:
        folders = sorted((path for path in root.iterdir() if _NAME.match(path.name)), key=_age)
    except OSError:
        return []
    return [folder for folder in folders[: max(len(folders) - keep, 0)]
            if _remove_run_folder(folder)]  # fmt: skip


def _age(folder: Path) -> tuple[str, int]:
    """Oldest first: by the time in the name, then (runs of one second) by when the marker
    was written."""
    try:
        written = (folder / MARKER).lstat().st_mtime_ns
    except OSError:
        written = 0
    return folder.name[:19], written  # run-YYYYmmdd-HHMMSS


def _remove_run_folder(folder: Path) -> bool:
    """Delete one of kboot's run folders, if it proves to be one and no kboot runs in it."""
    files = _kboots_files(folder)
    if files is None:
        return False
    if not files:  # emptied by a kboot killed before its rmdir: rmdir takes only that
        with contextlib.suppress(OSError):
            folder.rmdir()
        return not os.path.lexists(folder)
    try:
        fd = os.open(folder / MARKER, os.O_RDONLY | O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not _lock(fd, wait=False):
            return False  # a kboot still runs there
        # the marker last: a prune killed half-way leaves a folder that still proves to
        # be kboot's, and the next prune finishes it
        for path in sorted(files, key=lambda path: path.name == MARKER):
            path.unlink()
        folder.rmdir()
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _kboots_files(folder: Path) -> list[Path] | None:
    """The files of a run folder that proves to be kboot's, or None: a real folder of
    yours holding kboot's marker and otherwise only `*.log` files, all regular and yours."""
    try:
        info = folder.lstat()
        if not (stat.S_ISDIR(info.st_mode) and _mine(info)):
            return None
        files = list(folder.iterdir())
        for path in files:
            entry = path.lstat()
            named = path.name == MARKER or path.name.endswith(".log")
            if not (named and stat.S_ISREG(entry.st_mode) and _mine(entry)):
                return None
    except OSError:
        return None
    return files if folder / MARKER in files or not files else None


def _mine(info: os.stat_result) -> bool:
    return not hasattr(os, "geteuid") or info.st_uid == os.geteuid()


def _lock(fd: int, *, wait: bool = True) -> bool:
    """An exclusive lock on the open file `fd`; False when another process holds one."""
    if sys.platform == "win32":  # pragma: no cover - no flock; an open log is not deleted there
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
