"""Reading and writing files so that nobody else can redirect the read or the write.

Every file kboot writes goes through `atomic_write`: a new temporary file in the target's
folder (created exclusively, so a symlink planted at its name is never followed), then a
rename over the target. A symlink at the target itself is replaced, not followed, unless
the caller resolved it on purpose (`own_symlink_target`). A file another user could have
planted a link at is read with `read_no_follow`.

`trusted_dir` is the one rule for where kboot acts at all on a shared machine: a folder
that another user could change, or swap for one of theirs, is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from pathlib import Path

from bootstrap.system.errors import UntrustedPathError

#: os.open flag that refuses to open through a symlink (0 where the OS has none).
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: Opening a FIFO planted at a file's name must not block (0 where the OS has none).
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def trusted_dir(path: Path, *, what: str = "folder") -> None:
    """Refuse (UntrustedPathError, exit 2) a folder that another user could change.

    The rule, OpenSSH's StrictModes and git's safe.directory for every folder kboot acts
    under: with symlinks resolved, the folder and every folder above it up to `/` must be
    owned by you or by root, and writable by nobody else (no group or other write bit).
    A folder with the sticky bit (/tmp) is accepted *above* the folder, as nobody else
    can rename or delete what you own in it; never as the folder itself. A folder that
    does not exist yet is judged by the nearest one above it (kboot makes the rest, as
    you). Nothing to check where there are no owners (Windows).
    """
    if sys.platform == "win32" or not hasattr(os, "geteuid"):  # pragma: no cover
        return
    link = foreign_link(path)  # the rule judges the real folder: never where bob's link points
    if link is not None:
        raise UntrustedPathError(
            f"{what} {path} is not safe to use: {link[0]} is a symlink that another user "
            f"made ({link[1]}), so kboot does not follow it",
            hint="use the real folder of your own, not another user's link to it",
        )
    problem = untrusted_dir(path)
    if problem is not None and problem[0].is_symlink():  # left by realpath: it loops
        raise UntrustedPathError(
            f"{what} {path} cannot be used: {problem[0]} is a symlink that loops (it leads "
            "back to itself)",
            hint="replace the link with the real folder (ls -l shows where it points)",
        )
    if problem is not None:
        folder, reason = problem
        where = "it" if folder == Path(os.path.realpath(path)) else f"{folder}, above it,"
        raise UntrustedPathError(
            f"{what} {path} is not safe to use: {where} {reason}, so another user could "
            "change or swap what kboot reads and writes there",
            hint="use a folder of your own that only you can write (e.g. under your home), "
            f"or fix {folder} (chown it to yourself, chmod go-w)",
        )


def untrusted_dir(path: Path) -> tuple[Path, str] | None:
    """The first folder, from `path` up to `/`, that breaks `trusted_dir`'s rule, and why."""
    me = os.geteuid()
    real = Path(os.path.realpath(path))
    folder = real
    while not os.path.lexists(folder) and folder.parent != folder:
        folder = folder.parent
    itself = folder == real
    while True:
        try:
            info = folder.lstat()
        except OSError as exc:
            return folder, f"cannot be checked ({exc.strerror})"
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            return folder, "is not a folder"
        if info.st_uid not in (me, 0):
            return folder, f"belongs to another user ({user_name(info.st_uid)})"
        if info.st_mode & _OTHERS_WRITE and (itself or not info.st_mode & stat.S_ISVTX):
            return folder, "is writable by other users" + (
                "" if info.st_mode & stat.S_ISVTX else " (and has no sticky bit)"
            )
        if folder.parent == folder:
            return None
        folder, itself = folder.parent, False


def user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def read_no_follow(path: Path) -> bytes:
    """The bytes of the regular file at `path`, never read through a symlink at its name.

    OSError as open() raises it: ENOENT when there is nothing, ELOOP for a symlink,
    EISDIR for a folder, and EINVAL for anything else that is not a regular file (a FIFO
    would block, a device would never end). One open, then fstat: nothing can be swapped
    in between a check and the read.
    """
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def file_mode(path: Path) -> int | None:
    """The permission bits of the regular file at `path` (None: none there, or a link)."""
    return _existing_mode(path)


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


def private_dir(path: Path, *, what: str = "kboot's folder") -> Path:
    """Make, or check, a folder only this user can change: kboot's own bookkeeping (the
    ledgers, the locks) lives there, and decides what kboot may delete.

    Above it, the trust rule (`trusted_dir`) before anything is made; missing folders are
    made mode 0700. The folder itself must then be a real folder (not a link), yours, and
    writable by nobody else (UntrustedPathError, exit 2); read bits for others on a folder
    of yours are taken away (0700). OSError when it cannot be made.
    """
    if sys.platform == "win32" or not hasattr(os, "geteuid"):  # pragma: no cover
        path.mkdir(parents=True, exist_ok=True)
        return path
    trusted_dir(path.parent, what=f"the folder above {what} {path}")
    missing = []
    folder = path
    while not os.path.lexists(folder) and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another kboot made it meanwhile
            folder.mkdir(mode=0o700)
    problem = not_private(path)
    if problem is None:
        info = path.lstat()
        if stat.S_IMODE(info.st_mode) & 0o077:  # readable by others: yours, so tightened
            os.chmod(path, 0o700, follow_symlinks=False)
        untrusted = untrusted_dir(path)
        if untrusted is None:
            return path
        problem = f"is not safe to use: {untrusted[0]} {untrusted[1]}"
    raise UntrustedPathError(
        f"{what} {path} {problem}, so another user could change what kboot keeps there",
        hint=f"remove {path} (kboot makes it again, private) or fix it: a real folder of "
        "your own, chmod 700; or set KBOOT_HOME to a folder of your own",
    )


def not_private(folder: Path) -> str | None:
    """Why `folder` (one of kboot's private folders) is not a real folder that only you
    can write, or None when it is; a folder that is not there is private. Its parents are
    `trusted_dir`'s. Raises OSError when it cannot tell."""
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"belongs to another user ({user_name(info.st_uid)})"
    if info.st_mode & _OTHERS_WRITE:
        return "is writable by other users"
    return None


def foreign_link(path: Path) -> tuple[Path, str] | None:
    """The first symlink on the way to `path` (any component, and the links those point
    through) that belongs to another user but root, with its owner's name; None when all
    are yours or root's. Followed as the OS would; a part that does not exist ends it."""
    if sys.platform == "win32" or not hasattr(os, "geteuid"):  # pragma: no cover
        return None
    me = os.geteuid()
    given = path.absolute()
    pending = list(reversed(given.parts[1:]))
    current = Path(given.anchor)
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent  # `current` is real here: .. is its parent
            continue
        candidate = current / name
        try:
            info = candidate.lstat()
        except OSError:
            return None  # the rest does not exist yet (kboot makes it, as you)
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        if info.st_uid not in (me, 0):
            return candidate, user_name(info.st_uid)
        hops += 1
        if hops > 40:  # a loop of links: the OS refuses it (ELOOP) when kboot uses it
            return None
        target = candidate.readlink()
        if target.is_absolute():
            current = Path(target.anchor)
        pending.extend(reversed([p for p in target.parts if p != target.anchor]))
    return None
