"""kboot's ledger: the environments it made, and the journal of what it is doing to them.

One small JSON file per environment under `<kboot home>/owned/`, named by a digest of
the environment's resolved path, in a folder only the user can write. An entry with a
token is kboot's proof of ownership: the environment's record repeats the token. While
kboot changes an environment, the entry also journals the change (state, phase, what
was moved where), so that `lifecycle.recover` can finish or undo it after a kill.

An entry also records the identity (device, inode, owner: `folder_id`) of the
folder kboot made or built in, and of the scratch folder it made inside it: a path proves
nothing by itself (a folder can be moved away and another made at its name), so
`lifecycle` acts on a folder only while its identity is the one recorded here.
This module only reads and writes those files; `lifecycle` acts on environments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from bootstrap.state.record import read_record, write_record
from bootstrap.system import interrupts
from bootstrap.system.errors import EnvironmentStateError, KbootError, UntrustedPathError
from bootstrap.system.files import atomic_write, not_private, private_dir, trusted_dir
from bootstrap.system.paths import ENV_KERAS_HOME, RECORD_FILE
from bootstrap.system.process_lock import path_key

T = TypeVar("T")
#: A folder's identity: device, inode, owner (`folder_id`).
FolderId = tuple[int, ...]

LEDGER_FORMAT = 1
#: Top-level names a build makes (virtualenv, installers, kboot). After a kill, recovery
#: removes only these; anything else that appeared in the folder is left alone.
BUILD_ENTRIES = frozenset(
    [
        "bin",
        "Scripts",
        "lib",
        "Lib",
        "lib64",
        "include",
        "Include",
        "share",
        "etc",
        "man",
        "pyvenv.cfg",
        ".gitignore",
        "CACHEDIR.TAG",
        ".lock",
    ]
) | {ENV_KERAS_HOME, RECORD_FILE}

READY, BUILDING, REBUILDING, UPDATING, REMOVING = (
    "ready",
    "building",
    "rebuilding",
    "updating",
    "removing",
)
STATES = (READY, BUILDING, REBUILDING, UPDATING, REMOVING)
#: Phases of a build: MOVING the old entries aside, BUILD, then COMMITTING forward or
#: RESTORING backward (the new entries are gone; the old ones are moving back).
MOVING, BUILD, COMMITTING, RESTORING = "moving", "build", "committing", "restoring"
DELETING = "deleting"  # a removal whose entries are all in the trash


#: kboot's scratch folders inside an environment: the old entries during a rebuild, the
#: trash during a removal. Never the user's, never part of the environment.
SCRATCH = re.compile(r"\.kboot-(old|removing)-[0-9a-f]{12}")
#: The only files outside an environment that kboot edits (a --scope user Keras home).
EDITABLE = frozenset({"keras.json", "keras.json.bak"})


class LedgerError(EnvironmentStateError):
    """kboot's own bookkeeping for an environment cannot be read."""


@dataclass(frozen=True)
class Edit:
    """A file outside kboot's entries that a transaction changes (a --scope user keras.json)."""

    path: Path
    before: str | None  # the exact text before (None: it did not exist)
    after_sha256: str  # what kboot writes; recovery restores only a file that still holds it

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "before": self.before, "after_sha256": self.after_sha256}


@dataclass(frozen=True)
class Entry:
    """One environment in the ledger, and the journal of what is being done to it."""

    path: Path
    token: str | None = None  # of the complete environment at `path`; None while none is
    owned: tuple[str, ...] = ()
    name: str = ""  # the environment's name, as its record says
    #: (device, inode, owner) of the folder kboot built in, recorded when kboot made it or
    #: began to build in it (an entry of an earlier kboot may hold only device and inode)
    folder_id: FolderId | None = None
    created_dir: bool = False  # kboot made the folder itself (else it was there, empty)
    state: str = READY
    phase: str = ""
    pending: str | None = None  # the token a build in progress writes into its record
    user_entries: tuple[str, ...] = ()  # in the folder before the build: never touched
    moved: tuple[str, ...] = ()  # entries moved into `backup`
    #: a removal: the identity of each of `moved` when it was journaled (one made again by
    #: hand at its name since is the user's, and stays)
    moved_ids: tuple[FolderId, ...] = ()
    backup: Path | None = None  # the previous environment's entries during a rebuild/removal
    backup_id: FolderId | None = None  # identity of `backup`, recorded when kboot made it
    aside: Path | None = None  # a folder that was not kboot's, renamed out of the way
    saved: Mapping[str, str | None] = field(default_factory=dict)  # updating: text before
    edits: tuple[Edit, ...] = ()
    pid: int = 0
    parents: tuple[str, ...] = ()  # folders made to hold `path`, deepest first
    kept: tuple[str, ...] = ()  # token None: the user's files a removal left in the folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "path": str(self.path),
            "token": self.token,
            "owned": list(self.owned),
            "name": self.name,
            "parents": list(self.parents),
            "kept": list(self.kept),
            "folder_id": list(self.folder_id) if self.folder_id else None,
            "created_dir": self.created_dir,
            "state": self.state,
            "phase": self.phase,
            "pending": self.pending,
            "user_entries": list(self.user_entries),
            "moved": list(self.moved),
            "moved_ids": [list(i) for i in self.moved_ids],
            "backup": str(self.backup) if self.backup else None,
            "backup_id": list(self.backup_id) if self.backup_id else None,
            "aside": str(self.aside) if self.aside else None,
            "saved": dict(self.saved),
            "edits": [edit.to_dict() for edit in self.edits],
            "pid": self.pid,
        }


def parse_entry(data: object, where: Path) -> Entry:
    """A ledger entry from its JSON, or a LedgerError naming the file."""

    def fail(what: str) -> LedgerError:
        return LedgerError(
            f"kboot's ledger entry {where} is damaged ({what})",
            hint="the environment it describes is no longer proven kboot's: check it and "
            f"remove it by hand if you do not need it, then delete {where}",
        )

    if not isinstance(data, dict):
        raise fail("not a JSON object")

    def text(key: str, *, optional: bool = False) -> str | None:
        value = data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise fail(f"'{key}' is not a string")
        return value

    def names(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(v, str)
            and v
            and "\0" not in v
            and not Path(v).is_absolute()
            and ".." not in Path(v).parts
            for v in value
        ):
            raise fail(f"'{key}' is not a list of relative names")
        return tuple(value)

    path = text("path")
    assert path is not None
    if not Path(path).is_absolute():
        raise fail("'path' is not absolute")
    parents = data.get("parents", [])
    if not isinstance(parents, list) or not all(
        isinstance(p, str) and Path(path).is_relative_to(p) and Path(p) != Path(path)
        for p in parents
    ):
        raise fail("'parents' are not folders above the environment")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise fail("'name' is not a string")
    state = data.get("state", READY)
    if state not in STATES:
        raise fail(f"unknown state {state!r}")
    folder_id = parse_identity(data.get("folder_id"), "folder_id", fail)
    backup_id = parse_identity(data.get("backup_id"), "backup_id", fail)
    raw_ids = data.get("moved_ids", [])
    if not isinstance(raw_ids, list):
        raise fail("'moved_ids' is not a list")
    moved_ids = tuple(parse_identity(i, "moved_ids", fail) for i in raw_ids)
    saved = data.get("saved", {})
    if not isinstance(saved, dict) or not all(
        isinstance(k, str)
        and k
        and not Path(k).is_absolute()
        and ".." not in Path(k).parts
        and (v is None or isinstance(v, str))
        for k, v in saved.items()
    ):
        raise fail("'saved' is not a table of texts under the environment")
    edits = _parse_edits(data.get("edits", []), fail)
    backup, aside = text("backup", optional=True), text("aside", optional=True)
    _check_scratch(Path(path), backup, aside, fail)
    pid = data.get("pid", 0)
    if not isinstance(pid, int) or isinstance(pid, bool):
        raise fail("'pid' is not a number")
    phase = data.get("phase", "")
    if not isinstance(phase, str):
        raise fail("'phase' is not a string")
    created_dir = data.get("created_dir", False)
    if not isinstance(created_dir, bool):
        raise fail("'created_dir' is not true or false")
    return Entry(
        path=Path(path),
        token=text("token", optional=True),
        owned=names("owned"),
        folder_id=folder_id,
        created_dir=created_dir,
        state=state,
        phase=phase,
        pending=text("pending", optional=True),
        user_entries=names("user_entries"),
        moved=names("moved"),
        moved_ids=_identities(moved_ids, len(names("moved")), fail),
        backup=Path(backup) if backup else None,
        backup_id=backup_id,
        aside=Path(aside) if aside else None,
        saved=saved,
        edits=tuple(edits),
        pid=pid,
        name=name,
        parents=tuple(parents),
        kept=names("kept"),
    )


def parse_folder_id(value: object, fail: Callable[[str], KbootError]) -> tuple[int, int] | None:
    """A (device, inode) pair as an entry stores it, a JSON list of two integers."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    ):
        raise fail("'folder_id' is not two integers")
    return (value[0], value[1])


def parse_identity(value: object, key: str, fail: Callable[[str], KbootError]) -> FolderId | None:
    """A folder's identity as an entry stores it: device, inode and owner (two integers,
    device and inode, in an entry an earlier kboot wrote)."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3, 5)
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    ):
        raise fail(f"'{key}' is not a device, an inode and an owner")
    return tuple(value)


def _identities(
    ids: tuple[FolderId | None, ...], count: int, fail: Callable[[str], KbootError]
) -> tuple[FolderId, ...]:
    """One identity for each moved entry, or none at all (a journal of an earlier kboot)."""
    if ids and (len(ids) != count or any(i is None for i in ids)):
        raise fail("'moved_ids' does not match 'moved'")
    return tuple(i for i in ids if i is not None)


def _parse_edits(raw_edits: object, fail: Callable[[str], LedgerError]) -> list[Edit]:
    if not isinstance(raw_edits, list):
        raise fail("'edits' is not a list")
    edits = []
    for raw in raw_edits:
        if (
            not isinstance(raw, dict)
            or "before" not in raw  # None says the file did not exist: never a default
            or not isinstance(raw.get("path"), str)
            or not (raw.get("before") is None or isinstance(raw.get("before"), str))
            or not isinstance(raw.get("after_sha256"), str)
        ):
            raise fail("an edit is malformed")
        if Path(raw["path"]).name not in EDITABLE or not Path(raw["path"]).is_absolute():
            raise fail(f"an edit names {raw['path']!r}, which kboot never edits")
        edits.append(Edit(Path(raw["path"]), raw["before"], raw["after_sha256"]))
    return edits


def _check_scratch(
    path: Path, backup: str | None, aside: str | None, fail: Callable[[str], LedgerError]
) -> None:
    """Only the names kboot itself makes: a journal can never point recovery elsewhere."""
    if backup is not None and not (
        Path(backup).parent == path and SCRATCH.fullmatch(Path(backup).name)
    ):
        raise fail(f"'backup' {backup!r} is not a kboot scratch folder of the environment")
    if aside is not None and not (
        Path(aside).parent == path.parent
        and Path(aside).name.startswith(f"{path.name}.kboot-backup-")
    ):
        raise fail(f"'aside' {aside!r} is not a backup name kboot makes")


@dataclass(frozen=True)
class DamagedEntry:
    file: Path
    problem: str


class JsonLedger(Generic[T]):
    """One small JSON file per path, in a folder only this user can write: what kboot keeps
    to prove what it made. A subclass says what an entry is (`parse`, `key_of`) and how
    messages name the ledger; a folder someone else could write proves nothing."""

    noun = "ledger"
    error: type[KbootError] = LedgerError

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def parse(self, data: object, file: Path) -> T:
        raise NotImplementedError

    def key_of(self, entry: T) -> Path:
        raise NotImplementedError

    def file_for(self, path: Path) -> Path:
        return self.folder / f"{path_key(path)}.json"

    def get(self, path: Path) -> T | None:
        self.check_private()  # every read: a ledger someone else could write proves nothing
        file = self.file_for(path)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.error(
                f"cannot read kboot's {self.noun} entry {file}: {exc.strerror}"
            ) from None
        entry = self.parse(_json_or_none(raw), file)
        if self.key_of(entry) != path:
            raise self.error(
                f"kboot's {self.noun} entry {file} is for {self.key_of(entry)}, not {path}"
            )
        return entry

    def scan(self) -> list[T | DamagedEntry]:
        """Every entry, a damaged one as what is wrong with it (it proves nothing)."""
        self.check_private()
        if not self.folder.is_dir():
            return []
        found: list[T | DamagedEntry] = []
        for file in sorted(self.folder.glob("*.json")):  # our own folder, our own names
            try:
                found.append(self.parse(_json_or_none(file.read_bytes()), file))
            except OSError as exc:
                found.append(DamagedEntry(file, str(exc)))
            except KbootError as exc:
                found.append(DamagedEntry(file, exc.message))
        return found

    def write(self, path: Path, document: Mapping[str, Any]) -> None:
        with interrupts.critical():
            try:
                private_dir(self.folder, what=f"kboot's {self.noun}")
                atomic_write(
                    self.file_for(path),
                    json.dumps(document, indent=1, sort_keys=True) + "\n",
                    mode=0o600,
                )
            except OSError as exc:
                raise self.error(
                    f"cannot write kboot's {self.noun} in {self.folder}: {exc.strerror}",
                    hint="kboot's home must be writable (set KBOOT_HOME to a folder of yours)",
                ) from None

    def drop(self, path: Path) -> None:
        with interrupts.critical():
            self.file_for(path).unlink(missing_ok=True)

    def check_private(self) -> None:
        """Refuse a ledger that someone else could write: they could make kboot delete.
        Its folder must be a real folder only you can write, and every folder above it up
        to `/` trusted (`trusted_dir`): whoever can rename a parent can swap the ledger."""
        self._check_folder(self.folder, f"kboot's {self.noun}")

    def _check_folder(self, folder: Path, what: str) -> None:
        try:
            problem = not_private(folder)
        except OSError as exc:
            raise self.error(f"cannot read {what} {folder}: {exc.strerror}") from None
        if problem:  # another user's doing or a mistake to fix: a refusal (exit 2)
            raise UntrustedPathError(
                f"{what} {folder} {problem}, so it proves nothing; kboot will not act on "
                "what it says",
                hint=f"chmod 700 {folder} (as its owner), or set KBOOT_HOME to a folder "
                "of your own",
            )
        trusted_dir(folder, what=what)


def _json_or_none(raw: bytes) -> object:
    """The JSON in an entry's bytes, or None (which no parser takes) when there is none."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


class Ledger(JsonLedger[Entry]):
    """kboot's record of the environments it made, one small file each under its home."""

    def __init__(self, home: Path) -> None:
        super().__init__(home / "owned")
        self.home = home

    def parse(self, data: object, file: Path) -> Entry:
        return parse_entry(data, file)

    def key_of(self, entry: Entry) -> Path:
        return entry.path

    def put(self, entry: Entry) -> None:
        self.write(entry.path, entry.to_dict())

    def check_private(self) -> None:
        """The ledger, and the lock folder beside it: a lock someone else could remove
        lets two kboot change one environment at once."""
        super().check_private()
        self._check_folder(self.home / "locks", "kboot's lock folder")

    def entries(self) -> list[Entry | DamagedEntry]:
        return self.scan()


def new_token() -> str:
    return secrets.token_hex(16)


def entries_of(path: Path) -> set[str]:
    try:
        return {child.name for child in path.iterdir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def folder_id(path: Path) -> FolderId | None:
    """The identity of what is at `path` (never followed if a link): device, inode, owner."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_uid)


def entry_id(path: Path) -> FolderId | None:
    """The identity of an entry kboot is about to move (never followed if a link): device,
    inode, owner, the time its inode last changed, and what it holds (a folder: its names;
    anything else: its size). The inode alone is not proof: a folder deleted and made
    again at once often gets the freed inode back, and within one tick of the file
    system's clock even the change time may be the same; what it holds tells that one
    apart. kboot changes nothing in an entry between recording it and moving it; where
    anything else did, the entry is kept, the safe side."""
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            names = "\0".join(sorted(entries_of(path))).encode("utf-8", "surrogateescape")
            held = int.from_bytes(hashlib.blake2b(names, digest_size=7).digest(), "big")
        else:
            held = info.st_size
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_uid, info.st_ctime_ns, held)


def same_entry(path: Path, recorded: FolderId | None) -> bool:
    """Is what is at `path` (a file, a folder or a link, never followed) still the entry
    whose identity kboot recorded (`entry_id`; a journal of an earlier kboot holds three
    numbers, compared as they are)?"""
    if recorded is None:
        return False
    now = entry_id(path)
    return now is not None and now[: len(recorded)] == tuple(recorded)


def same_folder(path: Path, recorded: FolderId | None) -> bool:
    """Is the folder at `path` still the one whose identity kboot recorded? A real folder
    (not a link), with the same device, inode and owner (an entry of an earlier kboot holds
    only device and inode). Nothing recorded proves nothing."""
    if recorded is None:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    return (info.st_dev, info.st_ino, info.st_uid)[: len(recorded)] == tuple(recorded)


def exists(path: Path) -> bool:
    return os.path.lexists(path)


# --- the layout before the ledger existed -----------------------------------------


LEGACY_REGISTRY = "external-envs.txt"
LEGACY_MARKER = "kboot-building"


def migrate(ledger: Ledger, envs_dir: Path) -> list[Path]:
    """Adopt the environments an earlier kboot made (before the ledger), once.

    The proof there was kboot's own home, which only the user writes: a real folder
    directly in its envs folder, or a path in its list of --dest environments, that
    holds a virtualenv and an old-format record. Symlinks, interrupted builds of that
    time and protected folders are never adopted, and only the names a build makes
    become kboot's in an adopted environment.
    """
    if ledger.folder.exists():
        return []
    real_envs = Path(os.path.realpath(envs_dir))
    candidates: list[Path] = []
    if envs_dir.is_dir():
        candidates += sorted(
            real_envs / p.name
            for p in envs_dir.iterdir()
            if not p.name.startswith(".") and not p.is_symlink()
        )
    registry = ledger.home / LEGACY_REGISTRY
    with contextlib.suppress(OSError, UnicodeDecodeError, ValueError):
        candidates += [
            Path(line)
            for line in registry.read_text(encoding="utf-8").splitlines()
            if line and Path(line).is_absolute() and os.path.realpath(line) == line
        ]
    adopted = []
    for path in dict.fromkeys(candidates):
        if not _legacy_environment(path):
            continue
        record = read_record(path)
        assert record is not None
        token = new_token()
        owned = tuple(sorted(entries_of(path) & BUILD_ENTRIES))
        write_record(path, replace(record, owner_token=token, owned=list(owned)))
        ledger.put(
            Entry(path, token=token, owned=owned, folder_id=folder_id(path), name=record.name)
        )
        adopted.append(path)
    if registry.is_file() and not registry.is_symlink():
        registry.unlink()  # kboot's own list, now in the ledger
    return adopted


def _legacy_environment(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir() or (path / LEGACY_MARKER).exists():
        return False
    if path.parent == path or path in (Path.home(), Path(os.path.realpath(Path.home()))):
        return False
    if not (path / "pyvenv.cfg").is_file():
        return False
    try:
        record = read_record(path)
    except KbootError:
        return False
    return record is not None and not record.owner_token and record.format == 1


def open_ledger(home: Path, envs_dir: Path) -> Ledger:
    """kboot's ledger, refused if others can write it (or a folder above it); then what an
    earlier kboot made is adopted into it (never before: the migration writes records)."""
    ledger = Ledger(home)
    ledger.check_private()
    migrate(ledger, envs_dir)
    return ledger
