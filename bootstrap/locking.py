"""A per-environment lock, so two `kboot create` of one environment never interleave."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bootstrap.errors import LockedError


def lock_file_for(locks_dir: Path, target: Path) -> Path:
    digest = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:16]
    return locks_dir / f"{target.name}-{digest}.lock"


@contextmanager
def env_lock(locks_dir: Path, target: Path) -> Iterator[None]:
    """Hold an exclusive OS lock for `target`; fail at once if another process holds it.

    The OS releases the lock when the holder dies, so a crash never leaves it stale.
    """
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = lock_file_for(locks_dir, target)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            _acquire(fd)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            raise LockedError(
                f"another kboot process (pid {holder}) is working on {target} right now",
                hint="wait for it to finish, then run the command again",
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - no Windows runner here
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
