"""A per-environment lock, so two kboot processes never work on one environment at once.

The lock file lives in `<kboot home>/locks`, named by a digest of the environment's path.
It is opened without following symlinks (nobody can make kboot truncate a file of their
choosing through it) and removed by its holder on release, so lock files do not pile up.
Removing a lock file that others may have opened is safe because an acquirer checks,
once it holds the lock, that the file it locked is still the one at that name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bootstrap.system.errors import EnvironmentStateError, LockedError, os_error_hint
from bootstrap.system.files import O_NOFOLLOW, private_dir


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
        private_dir(locks_dir, what="kboot's lock folder")
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
        hint = (
            "a symlink there is refused; remove it, or set KBOOT_HOME to a folder of yours"
            if exc.errno == errno.ELOOP
            else os_error_hint(exc, writes=True)
        )
        raise EnvironmentStateError(
            f"cannot open the lock file {path}: {exc.strerror}", hint=hint
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
        if sys.platform == "win32":  # no flock: a lock on the first byte
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
        if sys.platform == "win32":  # the file stays after a release there (open elsewhere)
            import msvcrt

            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                return True
            os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks from the file position
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            return False
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        return False
    finally:
        os.close(fd)


# --- locks of other programs: uv's `<env>/.lock` -----------------------------------------------
#
# uv takes an exclusive lock on `<env>/.lock` for every `uv pip install` into an environment,
# waits for it as long as another process holds it (five minutes by default), and creates
# the file mode 0666: any user of the machine could open it and hold root's kboot up
# (`flock <env>/.lock sleep 1000`). kboot keeps that file 0600 (`keep_private`) and waits a
# bounded time for it, saying who holds it (`wait_until_free`).


def keep_private(path: Path) -> None:
    """`path` (a lock file another program uses) exists, mode 0600: only its owner can open
    it, so only its owner can hold it. A file of another user, or a link, is left alone
    (`wait_until_free` then still bounds the wait)."""
    if sys.platform == "win32":  # pragma: no cover - no Windows runner here
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        pass
    finally:
        os.close(fd)


def wait_until_free(path: Path, *, wait: float, what: str) -> None:
    """Return once nobody holds an exclusive lock on `path`, waiting up to `wait` seconds;
    a LockedError naming the file and its holder after that. Takes nothing: the program
    that uses the lock takes it next (and bounds its own wait)."""
    if sys.platform == "win32":  # pragma: no cover - no Windows runner here
        return
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # none there (the program makes it), or not ours to open
        return
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = lock_holder(path) or "another process"
                    raise LockedError(
                        f"{what}: its lock {path} is held by {holder} (waited {wait:g} s)",
                        hint="wait for that process to finish (or stop it), then run the "
                        "command again",
                    ) from None
                time.sleep(0.2)
            except OSError:
                return  # a file system without flock: the program's own wait is bounded
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
    finally:
        os.close(fd)


def lock_holder(path: Path, proc: Path = Path("/proc")) -> str | None:
    """'pid N (user U)' of the process that holds a lock on `path`, from /proc/locks (Linux);
    None where that is not known."""
    try:
        st = path.stat()
        table = (proc / "locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF"; a waiter's line has "->"
        if "->" in fields or len(fields) < 6 or fields[5] != device:
            continue
        pid = fields[4]
        try:
            uid = (proc / pid).stat().st_uid
        except OSError:
            return f"pid {pid}"
        return f"pid {pid} ({_user_name(uid)})"
    return None


def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"
