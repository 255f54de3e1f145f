"""The Jupyter kernelspecs kboot registers, in one module: register, refresh, unregister,
and what `list` says of them. Every deletion of a kernelspec in kboot happens here.

`kboot create PROFILE --kernel` and `kboot kernel ENV` (`kernel_setup`) register
`kboot-<name>` in Jupyter's user data folder (`paths.jupyter_kernels_dir`), with the
kernel.json `jupyter.build_spec` makes: the environment's python, with its config pinned
in `env` so that neither a KERAS_BACKEND in the shell that starts Jupyter nor
`~/.keras/keras.json` wins.

What counts as kboot's
----------------------
- A kernelspec folder is kboot's when kboot's kernel ledger
  (`<kboot home>/kernels/<key>.json`, in a folder only the user can write, one file per
  environment) says kboot made it for that environment: the folder's path, its device
  and inode, the python its kernel.json runs and the digest of the kernel.json written.
  A kernel.json alone proves nothing, however much it looks like kboot's: anyone can
  write one.
- Inside it, only `kernel.json` is kboot's (written atomically); anything else there is
  the user's.

What is never touched
---------------------
- A kernelspec folder kboot did not register for this environment: refused, left
  byte-identical.
- A kernel.json that no longer runs this environment's python: whoever changed it made
  it theirs; it is left as it is (and kboot forgets it when the environment goes).
- A kernel.json changed by someone but still running this environment's python is not
  rewritten (kboot says so); it is deleted with the environment, or by `--remove`.
- Symlinks: a folder or kernel.json that is a link, or a folder reached through one, is
  neither written through nor deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bootstrap.jupyter.kernelspec import (
    KERNEL_JSON,
    NOT_IN_NAME,
    PREFIX,
    KernelSpec,
    kernel_name,
    parse_kernel_json,
)
from bootstrap.state.ledger import JsonLedger, parse_folder_id
from bootstrap.state.record import EnvRecord
from bootstrap.system import interrupts
from bootstrap.system.errors import KbootError, KernelError, UsageError
from bootstrap.system.files import O_NOFOLLOW, atomic_write, trusted_dir
from bootstrap.system.paths import jupyter_kernels_dir

LEDGER_FORMAT = 1
#: The folder under kboot's home that proves which kernelspecs kboot made.
LEDGER_FOLDER = "kernels"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: A kernel.json is a few hundred bytes; anything far larger is not one kboot wrote.
_MAX_KERNEL_JSON = 1 << 20


# --- kboot's kernel ledger ------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """kboot's proof that it made a kernelspec folder for an environment."""

    environment: Path  # the environment's resolved path
    name: str
    display_name: str
    kernelspec: Path  # the folder kboot made
    python: str  # what kernel.json runs (inside the environment)
    sha256: str  # of the kernel.json kboot wrote last
    folder_id: tuple[int, int] | None = None  # (device, inode) of the folder it made

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "environment": str(self.environment),
            "name": self.name,
            "display_name": self.display_name,
            "kernelspec": str(self.kernelspec),
            "python": self.python,
            "sha256": self.sha256,
            "folder_id": list(self.folder_id) if self.folder_id else None,
        }


def parse_registration(data: object, where: Path) -> Registration:
    """A kernel ledger entry from its JSON, or a KernelError naming the file."""

    def fail(what: str) -> KernelError:
        return KernelError(
            f"kboot's kernel ledger entry {where} is damaged ({what})",
            hint=f"delete {where}; the kernelspec it names is then no longer kboot's, and kboot "
            "leaves it for you to remove (jupyter kernelspec remove NAME)",
        )

    if not isinstance(data, dict):
        raise fail("not a JSON object")
    texts = {}
    for key in ("environment", "name", "display_name", "kernelspec", "python", "sha256"):
        value = data.get(key)
        if not isinstance(value, str) or not value or "\0" in value:
            raise fail(f"'{key}' is not a string")
        texts[key] = value
    environment, kernelspec = Path(texts["environment"]), Path(texts["kernelspec"])
    python = Path(texts["python"])
    if not (environment.is_absolute() and kernelspec.is_absolute() and python.is_absolute()):
        raise fail("a path is not absolute")
    if ".." in python.parts or not python.is_relative_to(environment) or python == environment:
        raise fail("'python' is not inside the environment")
    if ".." in kernelspec.parts or kernelspec.name != texts["name"]:
        raise fail("'kernelspec' is not a folder named after the kernel")
    if not texts["name"].startswith(PREFIX) or NOT_IN_NAME.search(texts["name"]):
        raise fail("'name' is not a kernel name kboot makes")
    if not _SHA256.fullmatch(texts["sha256"]):
        raise fail("'sha256' is not a digest")
    folder_id = parse_folder_id(data.get("folder_id"), fail)
    return Registration(
        environment,
        texts["name"],
        texts["display_name"],
        kernelspec,
        texts["python"],
        texts["sha256"],
        folder_id,
    )


class KernelLedger(JsonLedger[Registration]):
    """The kernelspecs kboot made, one small file per environment under its home."""

    noun = "kernel ledger"
    error = KernelError

    def __init__(self, home: Path) -> None:
        super().__init__(home / LEDGER_FOLDER)

    def parse(self, data: object, file: Path) -> Registration:
        return parse_registration(data, file)

    def key_of(self, entry: Registration) -> Path:
        return entry.environment

    def entries(self) -> list[Registration]:
        """Every readable entry (a damaged one is skipped: it proves nothing)."""
        return [e for e in self.scan() if isinstance(e, Registration)]

    def put(self, registration: Registration) -> None:
        self.write(registration.environment, registration.to_dict())


def open_kernel_ledger(home: Path) -> KernelLedger:
    ledger = KernelLedger(home)
    ledger.check_private()
    return ledger


# --- what is at a kernelspec folder ---------------------------------------------------


@dataclass(frozen=True)
class _Found:
    kind: str  # absent | ours | foreign
    reason: str = ""
    current: bytes | None = None  # kernel.json's bytes (ours; None: there is none)
    owner: Path | None = None  # foreign: the kboot environment whose kernel it is


class _NotOurs(Exception):
    """A file kboot must not read through or act on."""


def _folder_id(info: os.stat_result) -> tuple[int, int]:
    return (info.st_dev, info.st_ino)


def _read_kernel_json(path: Path) -> bytes | None:
    """The bytes of a regular file, never through a symlink; None when there is none."""
    try:
        info = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(info.st_mode):
        raise _NotOurs(f"its {KERNEL_JSON} is a symlink")
    if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_KERNEL_JSON:
        raise _NotOurs(f"its {KERNEL_JSON} is not a kernel.json kboot writes")
    try:
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(_MAX_KERNEL_JSON + 1)
    except OSError as exc:
        raise _NotOurs(f"its {KERNEL_JSON} cannot be read ({exc.strerror})") from None


def _inspect(  # noqa: PLR0911  # one verdict a line
    folder: Path, registration: Registration | None, python: str, ledger: KernelLedger
) -> _Found:
    """Absent, kboot's for this environment (proven by its ledger), or foreign. Reads only."""
    try:
        info = folder.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return _Found("absent")
    if registration is None or registration.kernelspec != folder:
        owner = next((r for r in ledger.entries() if r.kernelspec == folder), None)
        if owner is not None:
            why = f"it is the kernel of the kboot environment {owner.environment}"
            return _Found("foreign", why, owner=owner.environment)
        why = "kboot's records do not say it made it for this environment"
        if os.path.lexists(folder / KERNEL_JSON):
            why += f" (a {KERNEL_JSON} alone proves nothing: anyone can write one)"
        return _Found("foreign", why)
    if stat.S_ISLNK(info.st_mode):
        return _Found("foreign", "it is a symlink")
    if not stat.S_ISDIR(info.st_mode):
        return _Found("foreign", "it is not a folder")
    if Path(os.path.realpath(folder.parent)) != folder.parent:
        return _Found("foreign", "it is reached through a symlink")
    if registration.folder_id is not None and registration.folder_id != _folder_id(info):
        return _Found("foreign", "it is not the folder kboot made (it was replaced)")
    try:
        current = _read_kernel_json(folder / KERNEL_JSON)
    except _NotOurs as exc:
        return _Found("foreign", str(exc))
    if current is not None:
        try:
            found = parse_kernel_json(current, folder / KERNEL_JSON)
        except KernelError as exc:
            return _Found("foreign", f"its {KERNEL_JSON} was changed since: {exc.message}")
        if found.argv[0] != python:
            return _Found(
                "foreign",
                f"its {KERNEL_JSON} was changed since: it runs {found.argv[0]}, not this "
                "environment's python",
            )
    return _Found("ours", current=current)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kernelspec_folder(
    ledger: KernelLedger, environment: Path, env_name: str, environ: Mapping[str, str]
) -> Path:
    """Where the environment's kernelspec is or goes: where kboot registered it, while that
    folder exists (under the same name), else `<Jupyter data dir>/kernels/kboot-<name>`."""
    registration = ledger.get(environment)
    if (
        registration is not None
        and registration.name == kernel_name(env_name)
        and os.path.lexists(registration.kernelspec)
    ):
        return registration.kernelspec
    # never where another user's link points, nor into a folder they can write
    trusted_dir(Path(jupyter_kernels_dir(environ)), what="Jupyter's kernels folder")
    kernels = Path(os.path.realpath(jupyter_kernels_dir(environ)))
    return kernels / kernel_name(env_name)


def check_folder(ledger: KernelLedger, environment: Path, folder: Path, python: str) -> None:
    """Refuse, before anything happens, a kernelspec folder that is not kboot's for this
    environment (it is left byte-identical)."""
    found = _inspect(folder, ledger.get(environment), python, ledger)
    if found.kind == "foreign":
        raise _refusal(folder, environment, found)


def _refusal(folder: Path, environment: Path, found: _Found) -> UsageError:
    return UsageError(
        f"{folder} exists and is not a Jupyter kernel kboot registered for {environment} "
        f"({found.reason}); kboot left it untouched",
        hint=f"remove that environment's kernel first (kboot kernel {found.owner} --remove)"
        if found.owner
        else f"if you no longer need it, remove it (jupyter kernelspec remove {folder.name}), "
        "then run this again",
    )


# --- register, unregister, status -----------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """A kernel kboot registered (or found registered) for an environment."""

    name: str
    display_name: str
    kernelspec: Path
    action: str  # registered | updated | unchanged | kept (changed by someone: left alone)
    spec: KernelSpec

    @property
    def changed(self) -> bool:
        return self.action in ("registered", "updated")

    def record_entry(self) -> dict[str, Any]:
        """What the environment's record says about it (for re-creates and `list`)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "kernelspec": str(self.kernelspec),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record_entry(),
            "kernel_json": str(self.kernelspec / KERNEL_JSON),
            "action": self.action,
            "argv": list(self.spec.argv),
            "env": dict(self.spec.env),
        }


def register(ledger: KernelLedger, spec: KernelSpec, folder: Path) -> Kernel:
    """Write the kernelspec (kernel.json, atomically) into a folder that is free or kboot's
    for this environment; the ledger says so before the folder appears."""
    environment, python = Path(spec.environment), spec.argv[0]
    if folder.name != spec.name:
        raise AssertionError(f"a kernelspec folder is named after its kernel, not {folder}")
    previous = ledger.get(environment)
    moved = previous is not None and previous.kernelspec != folder
    found = _inspect(folder, None if moved else previous, python, ledger)
    if found.kind == "foreign":
        raise _refusal(folder, environment, found)
    if moved:  # renamed, or Jupyter's folder moved: the old one goes, one kernel each
        unregister(ledger, environment)
        previous = None
    content = spec.render()

    def kernel(action: str) -> Kernel:
        return Kernel(spec.name, spec.display_name, folder, action, spec)

    if found.kind == "ours" and found.current is not None:
        assert previous is not None
        if found.current == content:
            if previous.sha256 != _sha256(content) or previous.display_name != spec.display_name:
                ledger.put(
                    replace(previous, sha256=_sha256(content), display_name=spec.display_name)
                )
            return kernel("unchanged")
        if _sha256(found.current) != previous.sha256:
            return kernel("kept")  # someone changed it; it still runs this environment
    entry = Registration(
        environment,
        spec.name,
        spec.display_name,
        folder,
        python,
        _sha256(content),
        previous.folder_id if found.kind == "ours" and previous else None,
    )
    made = False
    with interrupts.critical():
        ledger.put(entry)  # first: a folder kboot is about to make is provably its own
        try:
            if found.kind == "absent":
                folder.parent.mkdir(parents=True, exist_ok=True)
                folder.mkdir()
                made = True
            atomic_write(folder / KERNEL_JSON, content)
            ledger.put(replace(entry, folder_id=_folder_id(folder.lstat())))
        except BaseException as exc:
            if made:
                with contextlib.suppress(OSError):  # empty: atomic_write removed its temp file
                    folder.rmdir()
            if previous is None:
                ledger.drop(environment)
            else:
                ledger.put(previous)
            if isinstance(exc, OSError):
                raise KernelError(
                    f"registering the Jupyter kernel {spec.name} in {folder} failed: "
                    f"{exc.strerror or exc}; nothing was left there",
                    hint="fix the folder's permissions (or free some space), or point "
                    "JUPYTER_DATA_DIR at a folder of yours, then run it again",
                ) from None
            raise
    return kernel("registered" if found.kind == "absent" or found.current is None else "updated")


@dataclass(frozen=True)
class Unregistered:
    """What became of an environment's kernelspec when kboot unregistered it."""

    name: str
    kernelspec: Path | None  # None: kboot's ledger of it could not be read
    removed: bool  # kboot deleted its kernel.json (and the folder, unless it held more)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kernelspec": str(self.kernelspec) if self.kernelspec else None,
            "removed": self.removed,
            "note": self.note,
        }


def unregister(ledger: KernelLedger, environment: Path) -> Unregistered | None:
    """Delete the kernelspec kboot registered for `environment` (None: it registered none).

    Only a folder the ledger proves kboot's, whose kernel.json still runs this
    environment's python, loses its kernel.json; the folder goes when nothing else is in
    it. Anything else is left, and said; kboot then forgets it either way.
    """
    ledger.check_private()
    registration = ledger.get(environment)
    if registration is None:
        return None
    folder, name = registration.kernelspec, registration.name
    with interrupts.critical():
        found = _inspect(folder, registration, registration.python, ledger)
        if found.kind == "absent":
            outcome = Unregistered(name, folder, False, f"{folder} was already deleted")
        elif found.kind == "foreign":
            outcome = Unregistered(
                name, folder, False, f"left {folder} as it is: {found.reason}; it is yours now"
            )
        else:
            try:
                outcome = _delete_kernelspec(name, folder, found.current is not None)
            except OSError as exc:
                raise KernelError(
                    f"unregistering the Jupyter kernel {name} failed: cannot delete "
                    f"{exc.filename or folder}: {exc.strerror or exc}",
                    hint="fix the folder's permissions, then run kboot kernel ENV --remove",
                ) from None
        ledger.drop(environment)
    return outcome


def _delete_kernelspec(name: str, folder: Path, has_json: bool) -> Unregistered:
    """kboot's kernel.json, then the folder if nothing of the user's is in it (rmdir: a
    folder is never deleted with its content)."""
    if has_json:
        (folder / KERNEL_JSON).unlink()
    rest = sorted(child.name for child in folder.iterdir())
    if rest:
        return Unregistered(name, folder, True, f"kept your files in {folder}: {', '.join(rest)}")
    folder.rmdir()
    return Unregistered(name, folder, True)


@dataclass(frozen=True)
class KernelStatus:
    """An environment's kernel as `kboot list` shows it."""

    name: str
    display_name: str
    kernelspec: Path | None
    state: str  # ok, or what is wrong

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "kernelspec": str(self.kernelspec) if self.kernelspec else None,
            "state": self.state,
        }


def kernel_status(
    ledger: KernelLedger, environment: Path, record: EnvRecord | None
) -> KernelStatus | None:
    """The environment's kernel (None when it has none), checked against the disk."""
    wanted = record.kernel if record is not None else None
    try:
        registration = ledger.get(environment)
    except KbootError as exc:
        return KernelStatus("?", "?", None, f"broken: {exc.message}")
    if registration is None:
        if not wanted:
            return None
        name, shown = str(wanted.get("name", "?")), str(wanted.get("display_name", "?"))
        return KernelStatus(name, shown, None, "missing: not registered (kboot kernel ENV)")
    found = _inspect(registration.kernelspec, registration, registration.python, ledger)
    if found.kind == "absent" or (found.kind == "ours" and found.current is None):
        state = "missing: deleted by hand (kboot kernel ENV registers it again)"
    elif found.kind == "foreign":
        state = f"not this environment's: {found.reason}"
    elif found.current is not None and _sha256(found.current) != registration.sha256:
        state = "ok (its kernel.json was changed by hand)"
    else:
        state = "ok"
    return KernelStatus(
        registration.name, registration.display_name, registration.kernelspec, state
    )


def kernel_problem(
    ledger: KernelLedger, environment: Path, record: EnvRecord | None, *, wanted: bool = False
) -> str | None:
    """What is wrong with the environment's kernel, in one line (for `check` and `sync
    --check`); None when it is fine, or when it has none and none is `wanted`."""
    status = kernel_status(ledger, environment, record)
    if status is None:
        return "its Jupyter kernel is not registered" if wanted else None
    if status.state.startswith("ok"):
        return None
    return f"its Jupyter kernel {status.name}: {status.state}"
