"""A per-environment lock, so two kboot processes never work on one environment at once.

The lock file lives in `<kboot home>/locks`, named by a digest of the environment's path.
It is opened without following symlinks (nobody can make kboot truncate a file of their
choosing through it) and removed by its holder on release, so lock files do not pile up.
Removing a lock file that others may have opened is safe because an acquirer checks,
once it holds the lock, that the file it locked is still the one at that name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bootstrap.errors import EnvironmentStateError, LockedError
from bootstrap.files import O_NOFOLLOW, private_dir


def path_key(target: Path) -> str:
    """A stable file-name-safe key for an environment path (already resolved by the caller)."""
    return hashlib.sha256(os.fsencode(target)).hexdigest()[:32]


def lock_file_for(locks_dir: Path, target: Path) -> Path:
    return locks_dir / f"{path_key(target)}.lock"


@contextmanager
def env_lock(
    locks_dir: Path,
    target: Path,
    *,
    wait: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive OS lock for `target`; wait up to `wait` seconds for another holder
    (`on_wait` hears the holder's pid once, when the wait begins).

    The OS releases the lock when the holder dies, so a crash never leaves it held.
    """
    try:
        private_dir(locks_dir)
    except OSError as exc:
        raise EnvironmentStateError(
            f"cannot create kboot's lock folder {locks_dir}: {exc.strerror}",
            hint="kboot's home must be writable (set KBOOT_HOME to a folder of yours)",
        ) from None
    path = lock_file_for(locks_dir, target)
    deadline = time.monotonic() + wait
    while True:
        fd = _open_lock_file(path)
        if _try_acquire(fd):
            if _same_file(fd, path):
                break
            os.close(fd)  # the holder removed this file as we locked it: take the new one
            continue
        holder = _holder(fd)
        os.close(fd)
        if time.monotonic() >= deadline:
            waited = f" (waited {wait:g} s)" if wait else ""
            raise LockedError(
                f"another kboot process (pid {holder}) is working on {target} right now{waited}",
                hint="wait for it to finish, then run the command again"
                + ("" if wait else ", or pass --wait SECONDS"),
            )
        if on_wait is not None:
            on_wait(holder)
            on_wait = None
        time.sleep(0.2)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):  # still held: nobody else can be using this file
            path.unlink()
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise EnvironmentStateError(
            f"cannot open the lock file {path}: {exc.strerror}",
            hint="a symlink there is refused; remove it, or set KBOOT_HOME to a folder of yours",
        ) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.lstat())
    except OSError:
        return False


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 64).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _try_acquire(fd: int) -> bool:
    try:
        if sys.platform == "win32":  # pragma: no cover - no Windows runner here
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def is_locked(locks_dir: Path, target: Path) -> bool:
    """Whether a kboot process holds `target`'s lock now (for `list`; takes nothing)."""
    path = lock_file_for(locks_dir, target)
    try:
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
    except OSError:
        return False
    try:
        if sys.platform == "win32":  # pragma: no cover
            return True
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        return False
    finally:
        os.close(fd)
