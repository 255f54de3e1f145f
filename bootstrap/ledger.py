"""kboot's ledger: the environments it made, and the journal of what it is doing to them.

One small JSON file per environment under `<kboot home>/owned/`, named by a digest of
the environment's resolved path, in a folder only the user can write. An entry with a
token is kboot's proof of ownership: the environment's record repeats the token. While
kboot changes an environment, the entry also journals the change (state, phase, what
was moved where), so that `lifecycle.recover` can finish or undo it after a kill.
This module only reads and writes those files; `lifecycle` acts on environments.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bootstrap import interrupts
from bootstrap.errors import EnvironmentStateError, KbootError
from bootstrap.files import atomic_write, private_dir
from bootstrap.locking import path_key
from bootstrap.paths import ENV_KERAS_HOME, RECORD_FILE
from bootstrap.record import read_record, write_record

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
    folder_id: tuple[int, int] | None = None  # (device, inode) of the folder kboot built in
    created_dir: bool = False  # kboot made the folder itself (else it was there, empty)
    state: str = READY
    phase: str = ""
    pending: str | None = None  # the token a build in progress writes into its record
    user_entries: tuple[str, ...] = ()  # in the folder before the build: never touched
    moved: tuple[str, ...] = ()  # entries moved into `backup`
    backup: Path | None = None  # the previous environment's entries during a rebuild/removal
    aside: Path | None = None  # a folder that was not kboot's, renamed out of the way
    saved: Mapping[str, str | None] = field(default_factory=dict)  # updating: text before
    edits: tuple[Edit, ...] = ()
    pid: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "path": str(self.path),
            "token": self.token,
            "owned": list(self.owned),
            "folder_id": list(self.folder_id) if self.folder_id else None,
            "created_dir": self.created_dir,
            "state": self.state,
            "phase": self.phase,
            "pending": self.pending,
            "user_entries": list(self.user_entries),
            "moved": list(self.moved),
            "backup": str(self.backup) if self.backup else None,
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
            isinstance(v, str) and v and not Path(v).is_absolute() and ".." not in Path(v).parts
            for v in value
        ):
            raise fail(f"'{key}' is not a list of relative names")
        return tuple(value)

    path = text("path")
    assert path is not None
    state = data.get("state", READY)
    if state not in STATES:
        raise fail(f"unknown state {state!r}")
    folder_id = data.get("folder_id")
    if folder_id is not None and (
        not isinstance(folder_id, list)
        or len(folder_id) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in folder_id)
    ):
        raise fail("'folder_id' is not two integers")
    saved = data.get("saved", {})
    if not isinstance(saved, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in saved.items()
    ):
        raise fail("'saved' is not a table of texts")
    raw_edits = data.get("edits", [])
    if not isinstance(raw_edits, list):
        raise fail("'edits' is not a list")
    edits = []
    for raw in raw_edits:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("path"), str)
            or not (raw.get("before") is None or isinstance(raw.get("before"), str))
            or not isinstance(raw.get("after_sha256"), str)
        ):
            raise fail("an edit is malformed")
        edits.append(Edit(Path(raw["path"]), raw["before"], raw["after_sha256"]))
    backup, aside = text("backup", optional=True), text("aside", optional=True)
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
        folder_id=(folder_id[0], folder_id[1]) if folder_id else None,
        created_dir=created_dir,
        state=state,
        phase=phase,
        pending=text("pending", optional=True),
        user_entries=names("user_entries"),
        moved=names("moved"),
        backup=Path(backup) if backup else None,
        aside=Path(aside) if aside else None,
        saved=saved,
        edits=tuple(edits),
        pid=pid,
    )


@dataclass(frozen=True)
class DamagedEntry:
    file: Path
    problem: str


class Ledger:
    """kboot's record of the environments it made, one small file each under its home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.folder = home / "owned"

    def file_for(self, path: Path) -> Path:
        return self.folder / f"{path_key(path)}.json"

    def get(self, path: Path) -> Entry | None:
        file = self.file_for(path)
        try:
            raw = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerError(f"cannot read kboot's ledger entry {file}: {exc}") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise LedgerError(f"kboot's ledger entry {file} is not JSON") from None
        entry = parse_entry(data, file)
        if entry.path != path:
            raise LedgerError(f"kboot's ledger entry {file} is for {entry.path}, not {path}")
        return entry

    def put(self, entry: Entry) -> None:
        with interrupts.critical():
            try:
                private_dir(self.folder)
                atomic_write(
                    self.file_for(entry.path),
                    json.dumps(entry.to_dict(), indent=1, sort_keys=True) + "\n",
                    mode=0o600,
                )
            except OSError as exc:
                raise EnvironmentStateError(
                    f"cannot write kboot's ledger in {self.folder}: {exc.strerror}",
                    hint="kboot's home must be writable (set KBOOT_HOME to a folder of yours)",
                ) from None

    def drop(self, path: Path) -> None:
        with interrupts.critical():
            self.file_for(path).unlink(missing_ok=True)

    def entries(self) -> list[Entry | DamagedEntry]:
        if not self.folder.is_dir():
            return []
        found: list[Entry | DamagedEntry] = []
        for file in sorted(self.folder.glob("*.json")):  # our own folder, our own names
            try:
                found.append(parse_entry(json.loads(file.read_text(encoding="utf-8")), file))
            except (OSError, ValueError, KbootError) as exc:
                found.append(DamagedEntry(file, getattr(exc, "message", str(exc))))
        return found

    def check_private(self) -> None:
        """Refuse a ledger folder that others can write: they could make kboot delete."""
        try:
            mode = self.folder.stat().st_mode
        except OSError:
            return
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise EnvironmentStateError(
                f"kboot's ledger {self.folder} is writable by every user, so it proves nothing",
                hint=f"chmod o-w {self.folder}",
            )


def new_token() -> str:
    return secrets.token_hex(16)


def entries_of(path: Path) -> set[str]:
    try:
        return {child.name for child in path.iterdir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def folder_id(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def exists(path: Path) -> bool:
    return os.path.lexists(path)


# --- the layout before the ledger existed -----------------------------------------


LEGACY_REGISTRY = "external-envs.txt"
LEGACY_MARKER = "kboot-building"


def migrate(ledger: Ledger, envs_dir: Path) -> list[Path]:
    """Adopt the environments an earlier kboot made (before the ledger), once.

    Proof there was kboot's own home: its envs folder and its list of --dest
    environments. An interrupted build of that time is left alone.
    """
    if ledger.folder.exists():
        return []
    registry = ledger.home / LEGACY_REGISTRY
    candidates: list[Path] = []
    if envs_dir.is_dir():
        candidates += sorted(p for p in envs_dir.iterdir() if not p.name.startswith("."))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        candidates += [
            Path(line) for line in registry.read_text(encoding="utf-8").splitlines() if line
        ]
    adopted = []
    for candidate in dict.fromkeys(candidates):
        path = Path(os.path.realpath(candidate))
        if not path.is_dir() or path.is_symlink() or (path / LEGACY_MARKER).exists():
            continue
        try:
            record = read_record(path)
        except KbootError:
            continue
        if record is None or record.owner_token:
            continue
        token = new_token()
        owned = tuple(sorted(entries_of(path) & BUILD_ENTRIES))
        write_record(path, replace(record, owner_token=token, owned=list(owned)))
        ledger.put(Entry(path, token=token, owned=owned, folder_id=folder_id(path)))
        adopted.append(path)
    if registry.is_file() and not registry.is_symlink():
        registry.unlink()  # kboot's own list, now in the ledger
    return adopted


def open_ledger(home: Path, envs_dir: Path) -> Ledger:
    """kboot's ledger, after adopting what an earlier kboot made; refused if others can write it."""
    ledger = Ledger(home)
    migrate(ledger, envs_dir)
    ledger.check_private()
    return ledger
