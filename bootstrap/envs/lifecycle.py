"""The life of an environment folder, in one module: claim, build, swap, roll back,
recover after a kill, update in place, remove. Every deletion and rename of an
environment's content in kboot happens here, through `_delete` and `_move`.

What counts as kboot's
----------------------
- An environment is kboot's when the ledger under kboot's home
  (`<kboot home>/owned/<key>.json`, in a folder only the user can write) has an entry
  for its resolved path and the environment's record (`kboot-env.json`) carries the
  same random token, *and* the folder is still the very one kboot made or built in: the
  same device, inode and owner (`os.lstat`, never followed) as the ledger recorded. A
  record alone proves nothing: anyone can write one, or copy kboot's into a folder made
  at the same name. (A damaged record is forgiven only in kboot's own folder.)
- The identity rule holds in every state of the journal: kboot records a folder's
  identity when it makes the folder or begins to build in it (new builds, the folder a
  removal left, and its own `.kboot-old-*` / `.kboot-removing-*` scratch folders), and
  acts on a folder only while it is still that one. A folder that is not is refused
  (exit 2, naming it), never "repaired" by deletion; recovery leaves it and what is in
  it, and forgets the interrupted change, with a note.
- The user's files that a removal left (`kept`) stay a place a later build may use, as
  long as the folder is the same folder and holds nothing a build makes; whatever else
  appears there is the user's too.
- Inside it, kboot's part is the entries its build made: names a build makes
  (`BUILD_ENTRIES`: `bin`, `lib`, `pyvenv.cfg`, `keras-home`, ...) that were not there
  before. Inside `keras-home` only keras.json and the cache *links* are kboot's. Anything
  else in the folder, whenever it appeared, is the user's.

What is never touched
---------------------
- A folder that is not kboot's: refused; with `replace_foreign` it is renamed aside to
  a visible `<name>.kboot-backup-<time>` that kboot never deletes.
- The user's entries in a kboot environment: a rebuild builds around them, a removal
  leaves them (and the folder) in place, and a later build there builds around them.
- Symlinks are never followed: a link is moved or deleted as a link, and nothing is
  reached through one (`guard` refuses a path whose folder is not its real folder).
- Home folders, filesystem roots, folders that hold the current directory, kboot's own
  home and its folders: `guard` refuses them on every path that deletes or moves,
  recovery included. Paths are used literally: nothing here globs.

Crash safety
------------
Each change is journaled in the ledger entry before it is made; its scratch folders
(the old entries during a rebuild, the trash of a removal) live inside the environment
as `.kboot-old-<hex>` / `.kboot-removing-<hex>`, so a rebuild or removal needs no write
access to the folder above. The next command on that environment (holding its lock)
calls `recover`: a build whose record carries the new token is complete and is rolled
forward; anything else is rolled back, the previous environment's entries moved back; a
killed removal is finished. Recovery never deletes the last complete copy of an
environment. A journal is only ever followed to the names kboot itself makes (the
ledger refuses any other), so it cannot be turned against other files.

Every build makes its scratch folder (even with nothing to set aside) and journals its
identity with the folder's before the build begins; a removal journals its trash's and
each entry it will move. Recovery first checks that the folder is still the journal's
(`_still_the_journal_s`) and, where it would delete (a build's entries, a removal's
moves), that the scratch folder is too: a folder deleted and made again at the path can
get the old inode back, not kboot's scratch folder inside it. Otherwise `_forget`.

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

from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.keras_json import KERAS_JSON
from bootstrap.state.ledger import (
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
    SCRATCH,
    UPDATING,
    DamagedEntry,
    Edit,
    Entry,
    Ledger,
    entries_of,
    entry_id,
    exists,
    folder_id,
    new_token,
    open_ledger,
    same_entry,
    same_folder,
)
from bootstrap.state.record import EnvRecord, read_record, write_record
from bootstrap.system import interrupts
from bootstrap.system.errors import (
    EnvironmentStateError,
    KbootError,
    UntrustedPathError,
    UsageError,
)
from bootstrap.system.files import atomic_write, foreign_link, trusted_dir
from bootstrap.system.paths import ENV_KERAS_HOME, RECORD_FILE

__all__ = ["READY", "DamagedEntry", "Entry", "Ledger", "open_ledger"]

FAULT_ENV = "KBOOT_TEST_KILL_AT"

#: Names a build must create itself: a user's entry of that name blocks a build there.
BUILD_NEEDS = frozenset(
    ["bin", "Scripts", "lib", "Lib", "lib64", "include", "Include", "pyvenv.cfg", ENV_KERAS_HOME]
) | {RECORD_FILE}
#: The Keras download caches that an environment's Keras home links to the user's.
CACHE_LINKS = ("datasets", "models")


def checkpoint(name: str, *, interruptible: bool = True) -> None:
    """A point where the fault-injection tests may kill kboot; a cancelled worker stops here."""
    if interruptible:
        interrupts.check()
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- guards -----------------------------------------------------------------


def protected_reason(path: Path, kboot_home: Path, *, allow_cwd: bool = False) -> str | None:
    """Why `path` must never be deleted or moved by kboot (or be an environment), or None."""
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
    if reason is None and Path(os.path.realpath(path.parent)) != path.parent:
        reason = "reached through a symlink"  # kboot never acts on what a link points to
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
    guard(target, kboot_home, action="move into")
    os.replace(source, target)  # a rename: a link moves as a link


def _scratch(path: Path, kind: str, token: str) -> Path:
    """A scratch folder inside the environment, made new (never an existing one)."""
    folder = path / f".kboot-{kind}-{token[:12]}"
    folder.mkdir(mode=0o700)
    return folder


def is_scratch(name: str) -> bool:
    return bool(SCRATCH.fullmatch(name))


def keras_home_user_entries(home: Path) -> tuple[str, ...]:
    """What in an environment's Keras home is the user's: all but keras.json, the cache
    links, and cache folders that are still empty (kboot makes `datasets/` and `models/`
    real folders where the user has none to link to; once a download lands in one it
    holds the user's data)."""
    if home.is_symlink() or not home.is_dir():
        return ()
    kboot_s = {"keras.json"} | {
        name for name in CACHE_LINKS if (home / name).is_symlink() or _empty_folder(home / name)
    }
    return tuple(sorted(entries_of(home) - kboot_s))


def open_to_run(path: Path) -> VirtualEnv:
    """The environment at `path`, opened to start its Python (a smoke test, doctor's probe,
    a kernel, `kboot run`): the one place that judges what that Python will read first.

    The environment's folder and its Keras home must pass the trust rule (`trusted_dir`),
    and its keras.json must not be another user's link: Keras reads that file at import,
    as the user who runs it. UntrustedPathError (exit 2) names the path.
    """
    check_trusted_to_run(path)
    return VirtualEnv.open(path)


def check_trusted_to_run(path: Path) -> None:
    """`open_to_run`'s checks alone, for a caller that opens the environment later."""
    trusted_dir(path, what="the environment")
    home = path / ENV_KERAS_HOME
    if os.path.lexists(home):
        trusted_dir(home, what="the environment's Keras home")
        link = foreign_link(home / KERAS_JSON)
        if link is not None:
            raise UntrustedPathError(
                f"the environment's keras.json {link[0]} is a symlink that another user made "
                f"({link[1]}); Keras would read it through the link, so kboot starts nothing "
                "there",
                hint=f"delete the link (rm {link[0]}); kboot create ... --force writes the "
                "environment's own keras.json again",
            )


def _empty_folder(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


# --- what is at a path --------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    """What is at an environment path, as far as ownership goes."""

    path: Path
    kind: str  # absent | empty | kept | kboot | foreign
    entry: Entry | None = None
    record: EnvRecord | None = None
    reason: str = ""  # foreign: why it is not kboot's; kboot: a damaged record

    @property
    def user_entries(self) -> tuple[str, ...]:
        """What in the folder is the user's, not kboot's."""
        names = entries_of(self.path)
        if self.kind == "kept":
            return tuple(sorted(n for n in names if not is_scratch(n)))
        if self.kind != "kboot" or self.entry is None:
            return ()
        return tuple(sorted(n for n in names - set(self.entry.owned) if not is_scratch(n)))

    @property
    def keras_home_user_entries(self) -> tuple[str, ...]:
        if self.kind != "kboot" or ENV_KERAS_HOME not in (self.entry.owned if self.entry else ()):
            return ()
        return keras_home_user_entries(self.path / ENV_KERAS_HOME)


def inspect(ledger: Ledger, path: Path) -> Existing:  # noqa: PLR0911  # one verdict a line
    """Absent, empty, kept (the user's files a removal left), kboot's (proven by the
    ledger) or foreign. Reads only. A folder there that another user could change is
    refused first (`trusted_dir`, UntrustedPathError naming it): kboot neither builds in it
    nor calls what is in it up to date, as `list` reports it refused."""
    if not exists(path):
        return Existing(path, "absent")
    trusted_dir(path, what="the environment")
    if path.is_symlink():
        return Existing(path, "foreign", reason="it is a symlink")
    if not path.is_dir():
        return Existing(path, "foreign", reason="it is not a folder")
    entry = ledger.get(path)
    names = {n for n in entries_of(path) if not is_scratch(n)}
    if entry is not None and entry.state == READY and not same_folder(path, entry.folder_id):
        if not names:
            return Existing(path, "empty")
        made = "built" if entry.token is not None else "left there after a removal"
        return Existing(
            path,
            "foreign",
            reason=f"it is not the folder kboot {made}: the folder was replaced (another "
            "device, inode or owner), whatever files in it say",
        )
    if entry is not None and entry.token is None and entry.state == READY:
        # the user's files that a removal left, in the same folder: build around them (and
        # around anything the user added since: it is theirs too)
        return Existing(path, "kept" if names else "empty", entry=entry)
    if entry is None or entry.state != READY or entry.token is None:
        if not names:
            return Existing(path, "empty", entry=entry)
        why = "kboot has no record of making it"
        if RECORD_FILE in names:
            why += f" (its {RECORD_FILE} alone proves nothing: anyone can write one)"
        return Existing(path, "foreign", reason=why)
    try:
        record = read_record(path)
    except KbootError as exc:  # the folder is kboot's own (checked above): rebuild it
        return Existing(path, "kboot", entry=entry, reason=exc.message)
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
    """A user's entry named like something the build makes would be written into: refuse.
    (A Keras home that a removal kept is set aside by the build and its files carried.)"""
    clash = sorted(set(existing.user_entries) & BUILD_NEEDS - {ENV_KERAS_HOME})
    if clash:
        raise UsageError(
            f"{existing.path} holds {', '.join(clash)} of yours, where a build must write",
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
            entry = replace(
                old,
                state=REBUILDING,
                phase=MOVING,
                pending=self.token,
                user_entries=existing.user_entries,
                moved=moved,
                backup=path / f".kboot-old-{self.token[:12]}",
                pid=pid,
            )
            self._journal(entry)
            checkpoint("rebuild-journaled")
            backup = _scratch(path, "old", self.token)
            entry = replace(entry, backup_id=folder_id(backup))
            self._journal(entry)  # only a scratch folder of this identity is ever emptied
            for index, name in enumerate(moved):
                _move(path / name, backup / name, home)
                checkpoint(f"rebuild-moved-{index}")
        elif existing.kind == "foreign":
            guard(path, home, action="move aside")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = _free_name(path.with_name(f"{path.name}.kboot-backup-{stamp}"))
            entry = Entry(
                path, state=BUILDING, phase=MOVING, pending=self.token, aside=aside,
                created_dir=True, pid=pid, backup=path / f".kboot-old-{self.token[:12]}",
            )  # fmt: skip
            self._journal(entry)
            checkpoint("foreign-journaled")
            _move(path, aside, home)
            path.mkdir()
            backup = _scratch(path, "old", self.token)
            entry = replace(entry, folder_id=folder_id(path), backup_id=folder_id(backup))
            self._journal(entry)  # the folders kboot made: the only ones it builds in
        else:
            created = existing.kind == "absent"
            made = _missing_parents(path) if created else ()
            kept = existing.entry if existing.kind == "kept" else None
            # a Keras home that a removal kept for the user's files there: set aside like a
            # rebuild's, and its files carried into the new one
            moved = (ENV_KERAS_HOME,) if kept and exists(path / ENV_KERAS_HOME) else ()
            entry = Entry(
                path,
                state=BUILDING,
                phase=MOVING,
                pending=self.token,
                created_dir=created or bool(kept and kept.created_dir),
                parents=made or (kept.parents if kept else ()),
                user_entries=tuple(n for n in existing.user_entries if n not in moved),
                moved=moved,
                backup=path / f".kboot-old-{self.token[:12]}",
                folder_id=None if created else folder_id(path),
                pid=pid,
            )
            self._journal(entry)
            checkpoint("create-journaled")
            path.mkdir(parents=True, exist_ok=not created)
            # the scratch folder, made by every build (also where nothing is set aside): a
            # folder deleted and made again at the path may reuse its inode, not this
            backup = _scratch(path, "old", self.token)
            entry = replace(
                entry,
                folder_id=folder_id(path) if created else entry.folder_id,
                backup_id=folder_id(backup),
            )
            self._journal(entry)  # the folders kboot made: the only ones it builds in
            if moved:
                _move(path / ENV_KERAS_HOME, backup / ENV_KERAS_HOME, home)
        self._journal(replace(entry, phase=BUILD))
        checkpoint("build-started")

    def journal_edit(self, path: Path, before: bytes | None, after: bytes) -> None:
        """Say, before writing it, that a file outside the environment is about to change."""
        assert self.entry is not None
        self.edits.append(_edit(path, before, after))
        self._journal(replace(self.entry, edits=tuple(self.edits)))

    def commit(self, record: EnvRecord) -> Committed:
        """Write the record that makes the new environment complete, then tidy up."""
        assert self.entry is not None
        owned = _made_by_build(self.path, self.entry)
        with interrupts.critical():
            write_record(self.path, replace(record, owner_token=self.token, owned=list(owned)))
            self.committed = True  # complete: from here on only forward, never back
            checkpoint("commit-record-written", interruptible=False)
            self._journal(replace(self.entry, phase=COMMITTING, name=record.name))
            notes = _finish_build(self.ledger, self.entry, owned)
        return Committed(self.token, owned, tuple(notes), self.entry.aside)

    def rollback(self) -> list[str]:
        """Undo the build; a no-op once `commit` made the new environment complete."""
        if self.entry is None or self.committed:
            return []
        with interrupts.critical():
            if not _still_the_journal_s(self.entry):  # replaced while kboot was building
                return _forget(self.ledger, self.entry)
            return _undo_build(self.ledger, self.entry)

    def _journal(self, entry: Entry) -> None:
        self.entry = entry
        self.ledger.put(entry)


def _made_by_build(path: Path, entry: Entry) -> tuple[str, ...]:
    """kboot's part of a finished build: the names a build makes that were not there before
    (a file the user dropped into the folder meanwhile stays theirs)."""
    new = entries_of(path) - set(entry.user_entries)
    return tuple(sorted({n for n in new if n in BUILD_ENTRIES} | {RECORD_FILE}))


def _missing_parents(path: Path) -> tuple[str, ...]:
    """The folders above `path` that do not exist yet (a build makes them), deepest first."""
    missing = []
    parent = path.parent
    while not exists(parent) and parent.parent != parent:
        missing.append(str(parent))
        parent = parent.parent
    return tuple(missing)


def _remove_made_parents(entry: Entry, home: Path) -> None:
    for parent in map(Path, entry.parents):
        if not parent.is_dir() or parent.is_symlink() or entries_of(parent):
            return
        if protected_reason(parent, home) is not None:
            return
        parent.rmdir()


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
    if backup is not None and exists(backup) and not same_folder(backup, entry.backup_id):
        notes.append(f"left {backup}: it is not the scratch folder kboot made there")
    elif backup is not None and exists(backup):
        old_home, new_home = backup / ENV_KERAS_HOME, path / ENV_KERAS_HOME
        for name in keras_home_user_entries(old_home):
            new = new_home / name
            if name in CACHE_LINKS and new.is_symlink():
                _delete(new, home)  # the user's real download folder wins over kboot's link
            elif name in CACHE_LINKS and _empty_folder(new):
                new.rmdir()  # kboot's empty stand-in, made by this build: rmdir takes only that
            if new_home.is_symlink() or not new_home.is_dir() or exists(new):
                keep_backup = True
                notes.append(f"kept {old_home / name}: the new environment has one too")
                continue
            _move(old_home / name, new, home)
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
            name=entry.name,
            folder_id=folder_id(path),  # the folder checked to be the journal's (recover)
            created_dir=entry.created_dir,
            parents=entry.parents,
        )
    )
    return notes


def _undo_build(ledger: Ledger, entry: Entry) -> list[str]:
    """Put back what was there before the build (nothing, the old environment, or the
    folder moved aside). Only names a build makes are deleted: anything else that
    appeared in the folder meanwhile is left, and said."""
    notes: list[str] = []
    path, home = entry.path, ledger.home
    if entry.phase == BUILD:  # only now is what is new at `path` the build's
        for name in sorted(entries_of(path) - set(entry.user_entries)):
            if name in BUILD_ENTRIES:
                _delete(path / name, home)
                checkpoint("rollback-deleted", interruptible=False)
            elif not is_scratch(name):
                notes.append(f"left {path / name}: it is not something a build makes")
        # from here on, what is at `path` is the user's or the old environment's again
        entry = replace(entry, phase=RESTORING)
        ledger.put(entry)
        checkpoint("rollback-restoring", interruptible=False)
    if entry.backup is not None:
        if same_folder(entry.backup, entry.backup_id):  # (else nothing was moved into it)
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
        _remove_made_parents(entry, home)
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
                name=entry.name,
                folder_id=entry.folder_id,
                created_dir=entry.created_dir,
                parents=entry.parents,
            )
        )
    else:
        _keep_or_forget(ledger, entry)
    return notes


def _keep_or_forget(ledger: Ledger, entry: Entry) -> None:
    """After a build was undone or a removal finished: the user's files still in the folder
    (kept by a removal, carried back from a build, or added meanwhile) are remembered as
    theirs, with the folder's identity, so that a later build there goes around them;
    nothing left, nothing to remember."""
    path = entry.path
    remaining = {n for n in entries_of(path) if not is_scratch(n)}
    if remaining and path.is_dir() and not path.is_symlink():
        ledger.put(
            Entry(
                path,
                created_dir=entry.created_dir,
                parents=entry.parents,
                kept=tuple(sorted(remaining)),
                folder_id=folder_id(path),
            )
        )
    else:
        ledger.drop(path)


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
        # an empty file before is a file (b""), not "no file" (None): it is put back, not deleted
        before = None if edit.before is None else edit.before.encode("utf-8", "surrogateescape")
        if edit.before is not None and current == before:
            continue
        if current is None or hashlib.sha256(current).hexdigest() != edit.after_sha256:
            if current is not None:
                notes.append(f"left {edit.path} as it is: it changed after kboot wrote it")
            continue
        if before is None:
            edit.path.unlink(missing_ok=True)  # kboot made it: it held exactly kboot's bytes
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
        self.edits.append(_edit(path, before, after))
        self._journal(replace(self.entry, edits=tuple(self.edits)))

    def commit(self, record: EnvRecord) -> None:
        with interrupts.critical():
            write_record(
                self.path,
                replace(record, owner_token=self.entry.token or "", owned=list(self.entry.owned)),
            )
            checkpoint("update-record-written", interruptible=False)
            self._journal(
                replace(self.entry, state=READY, saved={}, edits=(), pid=0, name=record.name)
            )
            self.committed = True

    def rollback(self) -> list[str]:
        """Undo the update; a no-op once `commit` finished it."""
        if self.committed:
            return []
        with interrupts.critical():
            if not _still_the_journal_s(self.entry):  # replaced while kboot was updating
                return _forget(self.ledger, self.entry)
            return _undo_update(self.ledger, self.entry)

    def _journal(self, entry: Entry) -> None:
        self.entry = entry
        self.ledger.put(entry)


def _undo_update(ledger: Ledger, entry: Entry) -> list[str]:
    for relative, text in entry.saved.items():
        file = entry.path / relative
        guard(file, ledger.home, action="restore")
        if text is None:
            file.unlink(missing_ok=True)  # kboot's own file, new in this update
        else:
            atomic_write(file, text.encode("utf-8", errors="surrogateescape"))
    notes = restore_edits(entry.edits)
    ledger.put(replace(entry, state=READY, saved={}, edits=(), pid=0))
    return notes


def claim_installed(ledger: Ledger, path: Path, before: Iterable[str]) -> tuple[str, ...]:
    """After kboot installed more into a finished environment (ipykernel for a Jupyter
    kernel): the names a build makes that the install added (its `share/`) are kboot's part,
    as if the build had made them. Returns kboot's part, for the record to repeat."""
    entry = ledger.get(path)
    if entry is None or entry.token is None or entry.state != READY:
        raise EnvironmentStateError(f"{path} is not a finished kboot environment")
    new = {n for n in entries_of(path) - set(before) if n in BUILD_ENTRIES}
    owned = tuple(sorted(set(entry.owned) | new))
    if new:
        ledger.put(replace(entry, owned=owned))
    return owned


# --- removal --------------------------------------------------------------------


@dataclass(frozen=True)
class Removed:
    path: Path
    kept: tuple[str, ...]  # the user's entries, left in place
    folder_removed: bool
    notes: tuple[str, ...] = ()


def remove(ledger: Ledger, existing: Existing) -> Removed:
    """Delete kboot's part of an environment; the user's files and folder stay.

    A failure half-way (a read-only folder) puts back what was moved and says so; a
    kill half-way is finished by the next command (the user asked for the removal).
    """
    assert existing.kind == "kboot" and existing.entry is not None
    path, home, entry = existing.path, ledger.home, existing.entry
    home_link = (path / ENV_KERAS_HOME).is_symlink()
    keras_user = existing.keras_home_user_entries
    doomed: list[str] = []
    for name in entry.owned:
        if name == ENV_KERAS_HOME and keras_user and not home_link:
            inner = ["keras.json", *(n for n in CACHE_LINKS if n not in keras_user)]
            doomed += [f"{ENV_KERAS_HOME}/{n}" for n in inner if exists(path / ENV_KERAS_HOME / n)]
        elif exists(path / name):
            doomed.append(name)
    for name in doomed:
        guard(path / name, home, action="delete")
    token = new_token()
    kept = existing.user_entries + ((ENV_KERAS_HOME,) if keras_user and not home_link else ())
    journal = replace(
        entry,
        state=REMOVING,
        phase=MOVING,
        backup=path / f".kboot-removing-{token[:12]}",
        moved=tuple(doomed),
        # (each was just seen; one gone meanwhile gets an identity nothing has)
        moved_ids=tuple(entry_id(path / name) or (0, 0, -1, 0, 0) for name in doomed),
        kept=tuple(sorted(kept)),
        pid=os.getpid(),
    )
    ledger.put(journal)
    with interrupts.critical():
        try:
            trash = _scratch(path, "removing", token)
            journal = replace(journal, backup_id=folder_id(trash))
            ledger.put(journal)  # only a trash folder of this identity is ever deleted
            checkpoint("remove-journaled", interruptible=False)
            _move_into_trash(ledger, journal)
        except (OSError, KbootError) as exc:
            _undo_removal(ledger, journal)
            raise EnvironmentStateError(
                f"cannot remove {path}: {getattr(exc, 'strerror', None) or exc}; "
                "it was left as it was",
                hint="kboot needs write access to the environment's folder to remove it",
            ) from None
        return _finish_removal(ledger, replace(journal, phase=DELETING))


def _move_into_trash(ledger: Ledger, entry: Entry) -> list[str]:
    """Move kboot's entries into the trash: each only while it is the very entry the journal
    recorded (one the user made again at its name after a kill is theirs, and stays)."""
    path, trash = entry.path, entry.backup
    assert trash is not None
    notes = []
    for index, name in enumerate(entry.moved):
        if not exists(path / name):
            continue
        if entry.moved_ids and not same_entry(path / name, entry.moved_ids[index]):
            notes.append(f"left {path / name}: it was made after kboot began removing")
            continue
        (trash / name).parent.mkdir(exist_ok=True)
        _move(path / name, trash / name, ledger.home)
        checkpoint(f"remove-moved-{index}", interruptible=False)
    ledger.put(replace(entry, phase=DELETING))
    return notes


def _undo_removal(ledger: Ledger, entry: Entry) -> None:
    path, trash = entry.path, entry.backup
    assert trash is not None
    for name in entry.moved:
        if exists(trash / name) and not exists(path / name):
            _move(trash / name, path / name, ledger.home)
    if same_folder(trash, entry.backup_id):
        for inner in (trash / ENV_KERAS_HOME, trash):
            if inner.is_dir() and not entries_of(inner):
                inner.rmdir()
    ledger.put(
        replace(
            entry,
            state=READY,
            phase="",
            backup=None,
            backup_id=None,
            moved=(),
            moved_ids=(),
            kept=(),
            pid=0,
        )
    )


def _finish_removal(ledger: Ledger, entry: Entry) -> Removed:
    path, trash, home = entry.path, entry.backup, ledger.home
    assert trash is not None
    notes: list[str] = []
    if entry.phase == MOVING and same_folder(trash, entry.backup_id):
        notes += _move_into_trash(ledger, entry)  # killed while moving: finish (the user asked)
    if exists(trash):
        if same_folder(trash, entry.backup_id):
            _delete(trash, home)
            checkpoint("remove-trash-deleted", interruptible=False)
        else:
            notes.append(f"left {trash}: it is not the folder kboot made for the removal")
    folder_removed = False
    remaining = entries_of(path)
    if (
        entry.created_dir
        and path.is_dir()
        and not path.is_symlink()
        and not remaining
        and protected_reason(path, home) is None
    ):
        path.rmdir()
        _remove_made_parents(entry, home)
        folder_removed = True
    _keep_or_forget(ledger, entry)  # the user's files stay: remember them as theirs
    kept = tuple(sorted(n for n in remaining if not is_scratch(n)))
    return Removed(path, kept, folder_removed, tuple(notes))


# --- recovery -------------------------------------------------------------------


def recover(ledger: Ledger, path: Path) -> list[str]:  # noqa: PLR0911  # one outcome a line
    """Finish or undo what a killed kboot left at `path`. Call it holding the path's lock:
    the OS released the dead process's lock, so a journal found here is a leftover."""
    entry = ledger.get(path)
    if entry is None or entry.state == READY:
        return []
    if entry.pending is not None:  # the killed build's installers may still be writing
        interrupts.stop_orphans(entry.pending)
    with interrupts.critical():
        if not _still_the_journal_s(entry):
            return _forget(ledger, entry)
        if entry.state in (BUILDING, REBUILDING):
            if entry.phase in (BUILD, COMMITTING) and _complete(path, entry.pending):
                record = read_record(path)
                owned = tuple(record.owned) if record else ()
                name = record.name if record else ""
                notes = _finish_build(ledger, replace(entry, name=name), owned)
                return [f"finished the interrupted build of {path}", *notes]
            notes = _undo_build(ledger, entry)
            if entry.state == REBUILDING:
                return [f"restored {path} as it was before an interrupted rebuild", *notes]
            return [f"removed what an interrupted build left in {path}", *notes]
        if entry.state == UPDATING:
            notes = _undo_update(ledger, entry)
            return [f"undid an interrupted update of {path}", *notes]
        if entry.phase == MOVING and entry.backup_id is None:  # killed before it began
            _undo_removal(ledger, entry)
            return [f"{path} was not removed: the removal was interrupted before it began"]
        removed = _finish_removal(ledger, entry)
        where = "" if removed.folder_removed else " (the folder and your files in it stay)"
        return [f"finished removing {path}{where}", *removed.notes]


def _still_the_journal_s(entry: Entry) -> bool:
    """Is the folder at the journal's path the one kboot was working in? Only a new build
    killed before it made its folder recorded none (nothing is there of kboot's, and its
    undoing deletes nothing but the empty folder). Where recovery would delete what is in
    the folder (a build's entries, or a removal's still to move), the scratch folder kboot
    made in it must be there too: a folder deleted and made again can reuse the inode."""
    if entry.folder_id is None:
        return entry.state == BUILDING and not exists(entry.path)
    if not same_folder(entry.path, entry.folder_id):
        return False
    if entry.state == UPDATING:  # it rewrites kboot's files: only where kboot's record is
        return _complete(entry.path, entry.token)
    deletes = (entry.state in (BUILDING, REBUILDING) and entry.phase == BUILD) or (
        entry.state == REMOVING and entry.phase == MOVING
    )
    if deletes and entry.backup is not None and entry.backup_id is not None:
        return same_folder(entry.backup, entry.backup_id)
    return True


def _forget(ledger: Ledger, entry: Entry) -> list[str]:
    """The folder an interrupted change was working in is gone or is another folder now:
    nothing in it is touched. Files outside it that kboot changed are put back, a folder
    moved aside goes back only where nothing is in its way, and the journal is dropped."""
    path = entry.path
    doing = {
        BUILDING: "building",
        REBUILDING: "rebuilding",
        UPDATING: "updating",
        REMOVING: "removing",
    }[entry.state]
    if exists(path):
        note = (
            f"{path} is not the folder an interrupted kboot was {doing} (it was moved or "
            "replaced since): kboot left it and everything in it untouched, and forgot the "
            "interrupted change"
        )
    else:
        note = f"{path} is gone: kboot forgot the interrupted {doing} of it"
    notes = [note, *restore_edits(entry.edits)]
    if entry.aside is not None and exists(entry.aside):  # the user's own folder, moved aside
        if exists(path):
            notes.append(f"your folder is still at {entry.aside}: {path} is in the way")
        else:
            _move(entry.aside, path, ledger.home)
            notes.append(f"put your folder back at {path}")
    ledger.drop(path)
    return notes


def _complete(path: Path, token: str | None) -> bool:
    if token is None:
        return False
    try:
        record = read_record(path)
    except KbootError:
        return False
    return record is not None and record.owner_token == token


def describe_state(entry: Entry) -> str | None:
    """A journal that is not `ready`, for `list` and `check`: what happened, what finishes it."""
    if entry.state == READY:
        return None
    doing = {
        BUILDING: ("being built", "kboot create"),
        REBUILDING: ("being rebuilt", "kboot create"),
        UPDATING: ("being updated", "kboot create"),
        REMOVING: ("being removed", "kboot remove"),
    }[entry.state]
    return f"{doing[0]} by kboot (pid {entry.pid}), or interrupted ({doing[1]} finishes it)"


def _edit(path: Path, before: bytes | None, after: bytes) -> Edit:
    """The journal line for a file outside the environment that is about to change: what
    it held (to put back) and a digest of what kboot writes (to know it is still ours)."""
    return Edit(
        path,
        before.decode("utf-8", errors="surrogateescape") if before is not None else None,
        hashlib.sha256(after).hexdigest(),
    )
