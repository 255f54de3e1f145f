"""Writing files so that nobody else can redirect the write.

Every file kboot writes goes through `atomic_write`: a new temporary file in the target's
folder (created exclusively, so a symlink planted at its name is never followed), then a
rename over the target. A symlink at the target itself is replaced, not followed, unless
the caller resolved it on purpose (`own_symlink_target`).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

#: os.open flag that refuses to open through a symlink (0 where the OS has none).
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def atomic_write(path: Path, content: str | bytes, *, mode: int | None = None) -> None:
    """Write through a temporary file in the same folder, then rename over the target."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:
            mode = _existing_mode(path)
        if mode is None:  # mkstemp makes 0600 files; a config file is normally world-readable
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _existing_mode(path: Path) -> int | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else None


def own_symlink_target(path: Path) -> Path:
    """Where a write to `path` should go: through a symlink only if the link is the user's.

    A dotfiles setup links ~/.keras/keras.json into a repository: writing there keeps the
    link. A link that someone else planted (a shared /tmp/.keras) is not followed: the
    write then replaces the link itself.
    """
    try:
        info = path.lstat()
    except OSError:
        return path
    if not stat.S_ISLNK(info.st_mode):
        return path
    if sys.platform != "win32" and info.st_uid != os.geteuid():
        return path
    return Path(os.path.realpath(path))


def file_owner_differs(path: Path) -> bool:
    """True when `path` exists and belongs to another user (POSIX only)."""
    if sys.platform == "win32":  # pragma: no cover - no uid there
        return False
    try:
        return path.lstat().st_uid != os.geteuid()
    except OSError:
        return False


def private_dir(path: Path) -> Path:
    """Make (or check) a folder only this user can write: kboot's own bookkeeping lives there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def not_private(folder: Path) -> str | None:
    """Why someone else could write `folder` (a ledger of kboot's), or None when only its
    owner can; a folder that is not there is private. Raises OSError when it cannot tell."""
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return "belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None
