"""The life of an environment folder, in one module: claim, build, swap, roll back,
recover after a kill, update in place, remove. Every deletion and rename of an
environment's content in kboot happens here, through `_delete` and `_move`.

What counts as kboot's
----------------------
- An environment is kboot's when the ledger under kboot's home
  (`<kboot home>/owned/<key>.json`, in a folder only the user can write) has an entry
  for its resolved path and the environment's record (`kboot-env.json`) carries the
  same random token. A record alone proves nothing: anyone can write one. (A damaged
  record is forgiven only when the folder is still the very one kboot built: same
  device and inode as the ledger remembers.)
- Inside it, kboot's part is the entries its build created (`owned`: `bin`, `lib`,
  `pyvenv.cfg`, `keras-home`, ...), and inside `keras-home` only keras.json and the
  cache links. Everything else in the folder is the user's.

What is never touched
---------------------
- A folder that is not kboot's: refused; with `replace_foreign` it is renamed aside to
  a visible `<name>.kboot-backup-<time>` that kboot never deletes.
- The user's entries in a kboot environment: a rebuild builds around them, a removal
  leaves them (and the folder) in place.
- Home folders, filesystem roots, folders that hold the current directory, kboot's own
  home and its folders: `guard` refuses them on every path that deletes or moves,
  recovery included. Paths are used literally: nothing here globs.

Crash safety
------------
Each change is journaled in the ledger entry before it is made. The next command on
that environment (holding its lock) calls `recover`: a build whose record carries the
new token is complete and is rolled forward; anything else is rolled back, the
previous environment's entries moved back. Recovery never deletes the last complete
copy of an environment, and after a kill it removes only entries whose names a build
makes (anything else that appeared meanwhile is left and reported).

`KBOOT_TEST_KILL_AT=<checkpoint>` makes kboot SIGKILL itself at that checkpoint: the
fault-injection tests use it to prove the above at every step.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bootstrap import interrupts
from bootstrap.errors import EnvironmentStateError, KbootError, UsageError
from bootstrap.files import atomic_write
from bootstrap.ledger import (
    BUILD,
    BUILD_ENTRIES,
    BUILDING,
    COMMITTING,
    DELETING,
    MOVING,
    READY,
    REBUILDING,
    REMOVING,
    RESTORING,
    UPDATING,
    DamagedEntry,
    Edit,
    Entry,
    Ledger,
    entries_of,
    exists,
    folder_id,
    new_token,
    open_ledger,
)
from bootstrap.paths import ENV_KERAS_HOME, RECORD_FILE
from bootstrap.record import EnvRecord, read_record, write_record

__all__ = ["READY", "DamagedEntry", "Entry", "Ledger", "open_ledger"]

FAULT_ENV = "KBOOT_TEST_KILL_AT"

#: Names a build must create itself: a user's entry of that name blocks a build there.
BUILD_NEEDS = frozenset(
    ["bin", "Scripts", "lib", "Lib", "lib64", "include", "Include", "pyvenv.cfg", ENV_KERAS_HOME]
) | {RECORD_FILE}
#: Inside an environment's Keras home, what is kboot's; anything else there is the user's.
KERAS_HOME_ENTRIES = frozenset({"keras.json", "datasets", "models"})


def checkpoint(name: str, *, interruptible: bool = True) -> None:
    """A point where the fault-injection tests may kill kboot; a cancelled worker stops here."""
    if interruptible:
        interrupts.check()
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- guards -----------------------------------------------------------------


def protected_reason(path: Path, kboot_home: Path, *, allow_cwd: bool = False) -> str | None:
    """Why `path` must never be deleted or moved by kboot, or None."""
    resolved = Path(os.path.realpath(path))
    if resolved.parent == resolved:
        return "a filesystem root"
    homes = {Path.home()}
    if os.environ.get("HOME"):
        homes.add(Path(os.environ["HOME"]))
    if resolved in {Path(os.path.realpath(h)) for h in homes}:
        return "a home folder"
    if not allow_cwd:
        try:
            cwd = Path(os.path.realpath(Path.cwd()))
        except OSError:
            cwd = None
        if cwd is not None and cwd.is_relative_to(resolved):
            return "the current folder, or holds it"
    home = Path(os.path.realpath(kboot_home))
    if home.is_relative_to(resolved):
        return "kboot's own home, or holds it"
    if resolved in (home / "envs", home / "owned", home / "locks"):
        return "one of kboot's own folders"
    return None


def guard(path: Path, kboot_home: Path, *, action: str) -> None:
    reason = protected_reason(path, kboot_home)
    if reason:
        raise EnvironmentStateError(
            f"refusing to {action} {path}: it is {reason}; kboot never does that",
            hint="run kboot from another folder, or choose another environment path",
        )


def _delete(path: Path, kboot_home: Path) -> None:
    """Delete one entry kboot made: a file, a link or a folder (links are never followed)."""
    guard(path, kboot_home, action="delete")
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def _move(source: Path, target: Path, kboot_home: Path) -> None:
    guard(source, kboot_home, action="move")
    os.replace(source, target)  # within one folder tree: one filesystem, one rename


# --- what is at a path --------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """What is at an environment path, as far as ownership goes."""

    path: Path
    kind: str  # absent | empty | kboot | foreign
    entry: Entry | None = None
    record: EnvRecord | None = None
    reason: str = ""  # foreign: why it is not kboot's; kboot: a damaged record

    @property
    def user_entries(self) -> tuple[str, ...]:
        """What in the folder is the user's, not kboot's."""
        if self.kind != "kboot" or self.entry is None:
            return ()
        return tuple(sorted(entries_of(self.path) - set(self.entry.owned)))

    @property
    def keras_home_user_entries(self) -> tuple[str, ...]:
        home = self.path / ENV_KERAS_HOME
        if self.kind != "kboot" or ENV_KERAS_HOME not in (self.entry.owned if self.entry else ()):
            return ()
        return tuple(sorted(entries_of(home) - KERAS_HOME_ENTRIES)) if home.is_dir() else ()


def inspect(ledger: Ledger, path: Path) -> Existing:  # noqa: PLR0911  # one verdict a line
    """Absent, empty, kboot's (proven by the ledger) or foreign. Reads only."""
    if not exists(path):
        return Existing(path, "absent")
    if path.is_symlink():
        return Existing(path, "foreign", reason="it is a symlink")
    if not path.is_dir():
        return Existing(path, "foreign", reason="it is not a folder")
    entry = ledger.get(path)
    names = entries_of(path)
    if entry is None or entry.state != READY or entry.token is None:
        if not names:
            return Existing(path, "empty", entry=entry)
        why = "kboot has no record of making it"
        if RECORD_FILE in names:
            why += f" (its {RECORD_FILE} alone proves nothing: anyone can write one)"
        return Existing(path, "foreign", reason=why)
    try:
        record = read_record(path)
    except KbootError as exc:
        if entry.folder_id is not None and entry.folder_id == folder_id(path):
            return Existing(path, "kboot", entry=entry, reason=exc.message)
        return Existing(path, "foreign", reason=f"its record is damaged: {exc.message}")
    if record is None or record.owner_token != entry.token:
        if not names:
            return Existing(path, "empty", entry=entry)
        return Existing(
            path,
            "foreign",
            reason="its kboot-env.json is not the one kboot wrote there (the folder was "
            "replaced or copied)",
        )
    return Existing(path, "kboot", entry=entry, record=record)


def check_build_room(existing: Existing) -> None:
    """A user's entry named like something the build makes would be written into: refuse."""
    clash = sorted(set(existing.user_entries) & BUILD_NEEDS)
    if clash:
        raise UsageError(
            f"{existing.path} holds {', '.join(clash)} of yours, where a rebuild must write",
            hint="move or rename "
            + ", ".join(str(existing.path / c) for c in clash)
            + ", then run it again",
        )


# --- a build: new, rebuild, or over a foreign folder moved aside ----------------


@dataclass(frozen=True)
class Committed:
    token: str
    owned: tuple[str, ...]
    notes: tuple[str, ...]
    aside: Path | None


class Build:
    """Build an environment at `existing.path`; `begin`, then `commit` or `rollback`."""

    def __init__(self, ledger: Ledger, existing: Existing, *, replace_foreign: bool = False):
        if existing.kind == "foreign" and not replace_foreign:
            raise AssertionError("a foreign folder is replaced only when asked to")
        self.ledger, self.existing, self.path = ledger, existing, existing.path
        self.token = new_token()
        self.entry: Entry | None = None
        self.edits: list[Edit] = []
        self.committed = False

    @property
    def rebuilding(self) -> bool:
        return self.existing.kind == "kboot"

    def begin(self) -> None:
        existing, path, home = self.existing, self.path, self.ledger.home
        pid = os.getpid()
        if existing.kind == "kboot":
            old = existing.entry
            assert old is not None
            moved = tuple(name for name in old.owned if exists(path / name))
            backup = path.with_name(f".{path.name}.kboot-old-{self.token[:12]}")
            entry = replace(
                old,
                state=REBUILDING,
                phase=MOVING,
                pending=self.token,
                user_entries=existing.user_entries,
                moved=moved,
                backup=backup,
                pid=pid,
            )
            self._journal(entry)
            checkpoint("rebuild-journaled")
            backup.mkdir(mode=0o700)
            for index, name in enumerate(moved):
                _move(path / name, backup / name, home)
                checkpoint(f"rebuild-moved-{index}")
        elif existing.kind == "foreign":
            guard(path, home, action="move aside")
            aside = _free_name(
                path.with_name(f"{path.name}.kboot-backup-{time.strftime('%Y%m%d-%H%M%S')}")
            )
            entry = Entry(
                path, state=BUILDING, phase=MOVING, pending=self.token, aside=aside,
                created_dir=True, pid=pid,
            )  # fmt: skip
            self._journal(entry)
            checkpoint("foreign-journaled")
            _move(path, aside, home)
            path.mkdir()
        else:
            created = existing.kind == "absent"
            entry = Entry(path, state=BUILDING, phase=MOVING, pending=self.token,
                          created_dir=created, pid=pid)  # fmt: skip
            self._journal(entry)
            checkpoint("create-journaled")
            path.mkdir(parents=True, exist_ok=not created)
        self._journal(replace(entry, phase=BUILD))
        checkpoint("build-started")

    def journal_edit(self, path: Path, before: bytes | None, after: bytes) -> None:
        """Say, before writing it, that a file outside the environment is about to change."""
        assert self.entry is not None
        self.edits.append(
            Edit(
                path,
                before.decode("utf-8", errors="surrogateescape") if before is not None else None,
                hashlib.sha256(after).hexdigest(),
            )
        )
        self._journal(replace(self.entry, edits=tuple(self.edits)))

    def commit(self, record: EnvRecord) -> Committed:
        """Write the record that makes the new environment complete, then tidy up."""
        assert self.entry is not None
        user = set(self.entry.user_entries)
        owned = tuple(sorted((entries_of(self.path) | {RECORD_FILE}) - user))
        with interrupts.critical():
            write_record(self.path, replace(record, owner_token=self.token, owned=list(owned)))
            self.committed = True  # complete: from here on only forward, never back
            checkpoint("commit-record-written", interruptible=False)
            self._journal(replace(self.entry, phase=COMMITTING))
            notes = _finish_build(self.ledger, self.entry, owned)
        return Committed(self.token, owned, tuple(notes), self.entry.aside)

    def rollback(self) -> list[str]:
        """Undo the build; a no-op once `commit` made the new environment complete."""
        if self.entry is None or self.committed:
            return []
        with interrupts.critical():
            return _undo_build(self.ledger, self.entry, in_process=True)

    def _journal(self, entry: Entry) -> None:
        self.entry = entry
        self.ledger.put(entry)


def _free_name(path: Path) -> Path:
    candidate, number = path, 1
    while exists(candidate):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def _finish_build(ledger: Ledger, entry: Entry, owned: tuple[str, ...]) -> list[str]:
    """Roll a complete build forward: carry the user's Keras-home files, drop the old copy."""
    notes: list[str] = []
    path, backup, home = entry.path, entry.backup, ledger.home
    keep_backup = False
    if backup is not None and backup.is_dir():
        old_home, new_home = backup / ENV_KERAS_HOME, path / ENV_KERAS_HOME
        if old_home.is_dir() and not old_home.is_symlink():
            for name in sorted(entries_of(old_home) - KERAS_HOME_ENTRIES):
                if not new_home.is_dir() or exists(new_home / name):
                    keep_backup = True
                    notes.append(f"kept {old_home / name}: the new environment has one too")
                    continue
                _move(old_home / name, new_home / name, home)
                checkpoint("commit-carried", interruptible=False)
        if keep_backup:
            notes.append(f"the previous environment's files stay in {backup}")
        else:
            try:
                _delete(backup, home)
            except (OSError, KbootError) as exc:  # the new environment is complete regardless
                notes.append(f"could not delete the previous environment's files {backup}: {exc}")
            checkpoint("commit-backup-deleted", interruptible=False)
    if entry.aside is not None:
        notes.append(f"the folder that was at {path} is now {entry.aside} (kboot never deletes it)")
    ledger.put(
        Entry(
            path,
            token=entry.pending,
            owned=owned,
            folder_id=folder_id(path),
            created_dir=entry.created_dir,
        )
    )
    return notes


def _undo_build(ledger: Ledger, entry: Entry, *, in_process: bool) -> list[str]:
    """Put back what was there before the build (nothing, the old environment, or the
    folder moved aside). `in_process`: this process made everything that appeared."""
    notes: list[str] = []
    path, home = entry.path, ledger.home
    if entry.phase == BUILD:  # only now is everything new at `path` the build's
        for name in sorted(entries_of(path) - set(entry.user_entries)):
            if in_process or name in BUILD_ENTRIES:
                _delete(path / name, home)
                checkpoint("rollback-deleted", interruptible=False)
            else:
                notes.append(f"left {path / name}: it appeared during the interrupted build")
        # from here on, what is at `path` is the user's or the old environment's again
        entry = replace(entry, phase=RESTORING)
        ledger.put(entry)
        checkpoint("rollback-restoring", interruptible=False)
    if entry.backup is not None:
        for name in entry.moved:
            if exists(entry.backup / name) and not exists(path / name):
                _move(entry.backup / name, path / name, home)
                checkpoint("rollback-moved-back", interruptible=False)
        try:
            entry.backup.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            notes.append(f"{entry.backup} still holds files; look at them before deleting it")
    if (
        entry.state == BUILDING
        and entry.created_dir
        and path.is_dir()
        and not path.is_symlink()
        and not entries_of(path)
        and protected_reason(path, home) is None
    ):
        path.rmdir()  # kboot made this folder for the build that is now undone
    if entry.aside is not None and exists(entry.aside):
        if exists(path):
            notes.append(f"your folder is still at {entry.aside}: {path} is in the way")
        else:
            _move(entry.aside, path, home)
    notes += restore_edits(entry.edits)
    if entry.state == REBUILDING:
        ledger.put(
            Entry(
                path,
                token=entry.token,
                owned=entry.owned,
                folder_id=entry.folder_id,
                created_dir=entry.created_dir,
            )
        )
    else:
        ledger.drop(path)
    return notes


def restore_edits(edits: Iterable[Edit]) -> list[str]:
    """Put files outside the environment back, unless someone changed them since kboot did."""
    notes = []
    for edit in reversed(list(edits)):
        try:
            current = edit.path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError as exc:
            notes.append(f"could not restore {edit.path}: {exc.strerror}")
            continue
        before = edit.before.encode("utf-8", errors="surrogateescape") if edit.before else None
        if edit.before is not None and current == before:
            continue
        if current is None or hashlib.sha256(current).hexdigest() != edit.after_sha256:
            if current is not None:
                notes.append(f"left {edit.path} as it is: it changed after kboot wrote it")
            continue
        if before is None:
            edit.path.unlink(missing_ok=True)
        else:
            atomic_write(edit.path, before)
    return notes


# --- an update in place: a few of kboot's own files -----------------------------


class Update:
    """Rewrite keras.json-level files of an environment; `begin`, then `commit` or `rollback`."""

    def __init__(self, ledger: Ledger, existing: Existing, files: Sequence[Path]) -> None:
        assert existing.kind == "kboot" and existing.entry is not None
        self.ledger, self.existing, self.path = ledger, existing, existing.path
        inside = [f for f in files if f.is_relative_to(self.path)]
        # the record is rewritten by every commit: it is always saved with the rest
        self.files = list(dict.fromkeys([*inside, self.path / RECORD_FILE]))
        self.entry: Entry = existing.entry
        self.edits: list[Edit] = []
        self.committed = False

    def begin(self) -> None:
        saved: dict[str, str | None] = {}
        for file in self.files:
            try:
                saved[str(file.relative_to(self.path))] = file.read_text(
                    encoding="utf-8", errors="surrogateescape"
                )
            except FileNotFoundError:
                saved[str(file.relative_to(self.path))] = None
        self._journal(replace(self.entry, state=UPDATING, saved=saved, pid=os.getpid()))
        checkpoint("update-journaled")

    def journal_edit(self, path: Path, before: bytes | None, after: bytes) -> None:
        self.edits.append(
            Edit(
                path,
                before.decode("utf-8", errors="surrogateescape") if before is not None else None,
                hashlib.sha256(after).hexdigest(),
            )
        )
        self._journal(replace(self.entry, edits=tuple(self.edits)))

    def commit(self, record: EnvRecord) -> None:
        with interrupts.critical():
            write_record(
                self.path,
                replace(record, owner_token=self.entry.token or "", owned=list(self.entry.owned)),
            )
            checkpoint("update-record-written", interruptible=False)
            self._journal(replace(self.entry, state=READY, saved={}, edits=(), pid=0))
            self.committed = True

    def rollback(self) -> list[str]:
        """Undo the update; a no-op once `commit` finished it."""
        if self.committed:
            return []
        with interrupts.critical():
            return _undo_update(self.ledger, self.entry)

    def _journal(self, entry: Entry) -> None:
        self.entry = entry
        self.ledger.put(entry)


def _undo_update(ledger: Ledger, entry: Entry) -> list[str]:
    for relative, text in entry.saved.items():
        file = entry.path / relative
        if text is None:
            file.unlink(missing_ok=True)
        else:
            atomic_write(file, text.encode("utf-8", errors="surrogateescape"))
    notes = restore_edits(entry.edits)
    ledger.put(replace(entry, state=READY, saved={}, edits=(), pid=0))
    return notes


# --- removal --------------------------------------------------------------------


@dataclass(frozen=True)
class Removed:
    path: Path
    kept: tuple[str, ...]  # the user's entries, left in place
    folder_removed: bool


def remove(ledger: Ledger, existing: Existing) -> Removed:
    """Delete kboot's part of an environment; the user's files and folder stay."""
    assert existing.kind == "kboot" and existing.entry is not None
    path, home, entry = existing.path, ledger.home, existing.entry
    keras_user = existing.keras_home_user_entries
    doomed: list[str] = []
    for name in entry.owned:
        if name == ENV_KERAS_HOME and keras_user:
            doomed += [
                f"{ENV_KERAS_HOME}/{inner}"
                for inner in sorted(KERAS_HOME_ENTRIES)
                if exists(path / ENV_KERAS_HOME / inner)
            ]
        elif exists(path / name):
            doomed.append(name)
    for name in doomed:
        guard(path / name, home, action="delete")
    trash = path.with_name(f".{path.name}.kboot-removing-{new_token()[:12]}")
    journal = replace(
        entry, state=REMOVING, phase=MOVING, backup=trash, moved=tuple(doomed), pid=os.getpid()
    )
    ledger.put(journal)
    checkpoint("remove-journaled")
    with interrupts.critical():
        return _finish_removal(ledger, journal, existing.user_entries)


def _finish_removal(ledger: Ledger, entry: Entry, kept: Sequence[str]) -> Removed:
    path, trash, home = entry.path, entry.backup, ledger.home
    assert trash is not None
    if entry.phase == MOVING:
        trash.mkdir(mode=0o700, exist_ok=True)
        for index, name in enumerate(entry.moved):
            if exists(path / name):
                (trash / name).parent.mkdir(exist_ok=True)
                _move(path / name, trash / name, home)
                checkpoint(f"remove-moved-{index}", interruptible=False)
        entry = replace(entry, phase=DELETING)
        ledger.put(entry)
    if exists(trash):
        _delete(trash, home)
        checkpoint("remove-trash-deleted", interruptible=False)
    folder_removed = False
    keras_home = path / ENV_KERAS_HOME
    if keras_home.is_dir() and not keras_home.is_symlink() and not entries_of(keras_home):
        keras_home.rmdir()  # emptied of kboot's files, and the user had none there
    if (
        entry.created_dir
        and path.is_dir()
        and not path.is_symlink()
        and not entries_of(path)
        and protected_reason(path, home) is None
    ):
        path.rmdir()
        folder_removed = True
    ledger.drop(path)
    return Removed(path, tuple(kept), folder_removed)


# --- recovery -------------------------------------------------------------------


def recover(ledger: Ledger, path: Path) -> list[str]:
    """Finish or undo what a killed kboot left at `path`. Call it holding the path's lock:
    the OS released the dead process's lock, so a journal found here is a leftover."""
    entry = ledger.get(path)
    if entry is None or entry.state == READY:
        return []
    if entry.pending is not None:  # the killed build's installers may still be writing
        interrupts.stop_orphans(entry.pending)
    with interrupts.critical():
        if entry.state in (BUILDING, REBUILDING):
            if entry.phase in (BUILD, COMMITTING) and _complete(path, entry.pending):
                record = read_record(path)
                owned = tuple(record.owned) if record else ()
                notes = _finish_build(ledger, entry, owned)
                return [f"finished the interrupted build of {path}", *notes]
            notes = _undo_build(ledger, entry, in_process=False)
            if entry.state == REBUILDING:
                return [f"restored {path} as it was before an interrupted rebuild", *notes]
            return [f"removed what an interrupted build left in {path}", *notes]
        if entry.state == UPDATING:
            notes = _undo_update(ledger, entry)
            return [f"undid an interrupted update of {path}", *notes]
        removed = _finish_removal(ledger, entry, ())
        where = "" if removed.folder_removed else " (the folder and your files in it stay)"
        return [f"finished removing {path}{where}"]


def _complete(path: Path, token: str | None) -> bool:
    if token is None:
        return False
    try:
        record = read_record(path)
    except KbootError:
        return False
    return record is not None and record.owner_token == token


def describe_state(entry: Entry) -> str | None:
    """A journal that is not `ready`, for `list` and `check`: what happened."""
    if entry.state == READY:
        return None
    doing = {
        BUILDING: "being built",
        REBUILDING: "being rebuilt",
        UPDATING: "being updated",
        REMOVING: "being removed",
    }[entry.state]
    return f"{doing} by kboot (pid {entry.pid}), or interrupted"
