"""`kboot export PROFILE --to oci|apptainer`: a build context for a container image of a
kboot environment (a Containerfile, an Apptainer definition, and what they install from).

The export folder (`-o DIR`) is kboot's only by its record, `.kboot-export.json`, which
lists every file kboot wrote there with its sha256. The rules, all in this module:

- a folder that does not exist, or is empty, is made into an export;
- a folder holding exactly what its record lists, unchanged, is replaced by the new
  export (it is all kboot's: it wrote every file);
- anything else is refused before any work: a file kboot did not write, one changed since
  (your edits to the Containerfile), a link, a folder without a record.

The new export is made in a temporary folder beside DIR and renamed into place, so a
failure (a download that fails, Ctrl-C) leaves DIR as it was. The context holds:

    Containerfile, PROFILE.def     the build files (--to oci, --to apptainer)
    kboot-export/lock/FILE         the lock, as given (or the wheelhouse's own)
    kboot-export/wheelhouse/       a copy of --wheelhouse: the build is then offline
    kboot-export/tool/             kboot's wheel and its dependencies' for the image's
                                   Python, and requirements.txt pinning their sha256
    kboot-export/profile/FILE      the profile file, for a profile that is not built in

kboot's own wheels are made at export time (pip, from the package index: the only step
that needs it when a wheelhouse is given); the image build then needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from bootstrap import __version__
from bootstrap.fleet import containers
from bootstrap.fleet.containers import ImageSpec
from bootstrap.install.platforms import host_platform
from bootstrap.locks.lockfile import WHEELHOUSE_LOCK, check_lock, read_lock, wheelhouse_lock
from bootstrap.locks.wheelhouse import pip_platform_tags
from bootstrap.profiles.catalog import catalog
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import CommandError, InstallError, UsageError
from bootstrap.system.files import trusted_dir
from bootstrap.system.paths import builtin_profiles_dir
from bootstrap.system.progress import Reporter
from bootstrap.system.runner import run_python

FORMATS = ("oci", "apptainer")
RECORD = ".kboot-export.json"
CONTAINERFILE = "Containerfile"
#: a container image reference: [host[:port]/]path[:tag][@digest], no spaces or quotes
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?", re.IGNORECASE)


class ExportFolderError(UsageError):
    """An -o folder that kboot may not write its export into (exit 2)."""


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    profile: str
    formats: tuple[str, ...]
    files: tuple[str, ...]  # the build files written (Containerfile, PROFILE.def)
    lock: str  # the lock's file name
    lock_sha256: str
    base: str
    python: str
    offline: bool  # a wheelhouse was copied: the image builds without a network
    tool_wheels: int
    replaced: bool  # an earlier export of kboot's was replaced

    @property
    def image_name(self) -> str:
        return f"keras-{self.profile}"

    def build_commands(self) -> tuple[str, ...]:
        commands = []
        if "oci" in self.formats:
            commands.append(f"buildah build -t {self.image_name} {self.folder}")
        if "apptainer" in self.formats:
            commands.append(
                f"cd {self.folder} && apptainer build {self.image_name}.sif {self.profile}.def"
            )
        return tuple(commands)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "profile": self.profile,
            "formats": list(self.formats),
            "files": list(self.files),
            "lock": self.lock,
            "lock_sha256": self.lock_sha256,
            "base": self.base,
            "python": self.python,
            "offline": self.offline,
            "tool_wheels": self.tool_wheels,
            "replaced": self.replaced,
            "build": list(self.build_commands()),
        }


def export_profile(
    ref: str,
    *,
    formats: Sequence[str],
    lock: Path | None,
    wheelhouse: Path | None,
    output: Path | None,
    base: str | None,
    python: str | None,
    accelerator: str | None,
    command: str,
    reporter: Reporter,
) -> ExportResult:
    """Write the build context of PROFILE's image into `output` (default ./export-NAME)."""
    wanted = _formats(formats)
    if lock is None and wheelhouse is None:
        raise UsageError(
            "kboot export needs the lock the image installs: --lock FILE, or --wheelhouse DIR "
            "(which holds its lock)",
            hint=f"kboot lock {ref}, then kboot export {ref} --lock pylock.{ref}.toml",
        )
    lock_path = _lock_path(lock, wheelhouse)
    if python is not None and not re.fullmatch(r"3\.\d+", python):
        raise UsageError(f"--python {python!r} is not a Python version X.Y such as 3.11")
    profile = catalog().resolve(ref)
    in_image, profile_file = _profile_in_image(profile)
    locked = read_lock(lock_path)  # not a lock, or not this profile's: refused now, not
    if python is None:  # minutes into a build
        from bootstrap.fleet.targets import default_python

        python = locked.python or default_python(profile)
    check_lock(locked, profile, Version(python), _image_platform())
    base = base or f"python:{python}-slim"
    if not _IMAGE.fullmatch(base):
        raise UsageError(f"--base {base!r} is not a container image name such as python:3.11-slim")
    folder = (output or Path(f"export-{profile.name}")).expanduser().absolute()
    replaced = _check_folder(folder)
    trusted_dir(folder, what="the export folder")
    lock_bytes = _read(lock_path, "the lock")
    spec = ImageSpec(
        profile=in_image,
        profile_name=profile.name,
        python=python,
        base=base,
        lock_file=lock_path.name,
        lock_sha256=hashlib.sha256(lock_bytes).hexdigest(),
        wheelhouse=wheelhouse is not None,
        kboot_version=__version__,
        memory_settings=_jax_and_tensorflow(profile),
        accelerator=accelerator,
    )
    files, tool_wheels = _write_context(
        folder,
        spec,
        formats=wanted,
        lock=(lock_path.name, lock_bytes),
        profile_file=profile_file,
        wheelhouse=wheelhouse,
        command=command,
        replaced=replaced,
        reporter=reporter,
    )
    return ExportResult(
        folder=folder,
        profile=profile.name,
        formats=wanted,
        files=files,
        lock=lock_path.name,
        lock_sha256=spec.lock_sha256,
        base=base,
        python=python,
        offline=wheelhouse is not None,
        tool_wheels=tool_wheels,
        replaced=replaced,
    )


def _write_context(
    folder: Path,
    spec: ImageSpec,
    *,
    formats: tuple[str, ...],
    lock: tuple[str, bytes],
    profile_file: Path | None,
    wheelhouse: Path | None,
    command: str,
    replaced: bool,
    reporter: Reporter,
) -> tuple[tuple[str, ...], int]:
    """The export made beside `folder` and renamed into place: its build files, and how
    many of kboot's own wheels it holds."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.kboot-export-", dir=folder.parent))
    except FileNotFoundError:
        raise UsageError(
            f"cannot make the export folder {folder}: no folder {folder.parent}",
            hint=f"make that folder first (mkdir -p {folder.parent})",
        ) from None
    try:
        context = staging / containers.CONTEXT
        (context / containers.LOCK_DIR).mkdir(parents=True)
        (context / containers.LOCK_DIR / lock[0]).write_bytes(lock[1])
        if profile_file is not None:
            (context / containers.PROFILE_DIR).mkdir()
            shutil.copyfile(profile_file, context / containers.PROFILE_DIR / profile_file.name)
        if wheelhouse is not None:
            with reporter.step(f"copy the wheelhouse {wheelhouse}"):
                _copy_wheelhouse(wheelhouse, context / containers.WHEELHOUSE_DIR)
        label = f"kboot {__version__} and its dependencies' wheels, Python {spec.python}"
        with reporter.step(label):
            tool_wheels = _tool_wheels(context / containers.TOOL_DIR, spec.python)
        files = []
        if "oci" in formats:
            (staging / CONTAINERFILE).write_text(
                containers.containerfile(spec, command), encoding="utf-8"
            )
            files.append(CONTAINERFILE)
        if "apptainer" in formats:
            definition = f"{spec.profile_name}.def"
            (staging / definition).write_text(
                containers.apptainer_definition(spec, command), encoding="utf-8"
            )
            files.append(definition)
        _write_record(staging, command)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private
        _swap_in(staging, folder, replaced=replaced)
    finally:
        if staging.exists():  # kboot's own temporary folder: a failure leaves nothing
            shutil.rmtree(staging, ignore_errors=True)
    return tuple(files), tool_wheels


def _image_platform() -> str:
    """The image's platform: Linux, on this machine's architecture."""
    return f"{host_platform().split('-', 1)[0]}-unknown-linux-gnu"


def _formats(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(
            f"--to {unknown[0]!r} is not a format kboot exports",
            hint="--to oci (a Containerfile), --to apptainer (a definition), or both",
        )
    return tuple(f for f in FORMATS if f in formats) if formats else FORMATS


def _lock_path(lock: Path | None, wheelhouse: Path | None) -> Path:
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise UsageError(
            f"--wheelhouse {wheelhouse} is not a folder",
            hint="make one with kboot download PROFILE --dest DIR",
        )
    if lock is not None:
        if not lock.is_file():
            raise UsageError(
                f"--lock {lock} is not a file",
                hint="make one with kboot lock PROFILE (it writes pylock.PROFILE.toml)",
            )
        return lock
    assert wheelhouse is not None  # one of them is given: checked by the caller
    own = wheelhouse_lock(wheelhouse)
    if own is None:
        raise UsageError(
            f"--wheelhouse {wheelhouse} holds no lock ({WHEELHOUSE_LOCK})",
            hint="give the lock it was downloaded from with --lock FILE, or download it again "
            "with kboot download PROFILE --dest DIR",
        )
    return own


def _profile_in_image(profile: Profile) -> tuple[str, Path | None]:
    """How the image's kboot names the profile: a built-in by its name, any other profile
    file by its copy in the context (returned, to copy)."""
    try:
        builtin = profile.path.resolve().parent == builtin_profiles_dir().resolve()
    except OSError:
        builtin = False
    if builtin and profile.project is None:
        return profile.name, None
    if profile.project is not None or profile.extends or profile.path.suffix != ".toml":
        raise UsageError(
            f"profile {profile.name} ({profile.path}) is part of a project or extends another: "
            "kboot export takes a built-in profile or a profile file that stands alone",
            hint="write the profile out as one .toml file (kboot show PROFILE lists its "
            "values) and export that file",
        )
    path = f"{containers.MOUNTED}/{containers.PROFILE_DIR}/{profile.path.name}"
    return path, profile.path


def _jax_and_tensorflow(profile: Profile) -> bool:
    names = {profile.backend}
    for requirement in profile.requirements():
        found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if found:
            names.add(canonicalize_name(found.group(1)))
    tensorflow = any(n == "tensorflow" or n.startswith("tensorflow-") for n in names)
    return "jax" in names and tensorflow


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _copy_wheelhouse(source: Path, dest: Path) -> None:
    """The wheelhouse's files (its wheels and lock); kboot create in the image refuses any
    that its lock does not pin, as it would here."""
    dest.mkdir()
    for item in sorted(source.iterdir()):
        if item.name.startswith(".") or not item.is_file() or item.is_symlink():
            continue
        shutil.copyfile(item, dest / item.name)


# --- kboot's own wheels ---------------------------------------------------------------------


def _checkout() -> Path | None:
    """The source folder of this kboot when it runs from one (an editable install)."""
    root = Path(__file__).resolve().parent.parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if re.search(r'(?m)^name\s*=\s*"kboot"', text) else None


def _tool_wheels(dest: Path, python: str) -> int:
    """kboot's wheel (built from its checkout, or the release of this version) and its
    dependencies' for Python `python` on this machine's architecture, with a requirements
    file of their hashes. Returns how many wheels."""
    dest.mkdir()
    source = _checkout()
    if source is not None:
        _pip(["wheel", "--no-deps", "--wheel-dir", str(dest), str(source)])
        (wheel,) = dest.glob("kboot-*.whl")
    else:
        wheel = _repack(dest)
    platform = _image_platform()
    tags = [arg for tag in pip_platform_tags(platform) for arg in ("--platform", tag)]
    # pip judges markers by the Python it runs on, not the target's: tomli is kboot's only
    # dependency behind one
    extra = ["tomli>=2"] if tuple(map(int, python.split("."))) < (3, 11) else []
    _pip([
        "download", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
        *tags, "-d", str(dest), str(wheel), *extra,
    ])  # fmt: skip
    hashes: dict[str, list[str]] = defaultdict(list)
    for item in sorted(dest.iterdir()):
        try:
            name, version, _, _ = parse_wheel_filename(item.name)
        except InvalidWheelFilename:
            continue
        digest = hashlib.sha256(item.read_bytes()).hexdigest()
        hashes[f"{name}=={version}"].append(f"--hash=sha256:{digest}")
    (dest / containers.TOOL_REQUIREMENTS).write_text(
        "".join(f"{pin} {' '.join(h)}\n" for pin, h in sorted(hashes.items())), encoding="utf-8"
    )
    return sum(len(h) for h in hashes.values())


def _repack(dest: Path) -> Path:
    """The installed kboot (the one running) as a wheel again, from the files its RECORD
    lists: no index is asked for a package of that name, which may be another's."""
    import base64
    import zipfile
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("kboot")
    except PackageNotFoundError:
        raise InstallError(
            "kboot export cannot find kboot's own installed files to put into the image",
            hint="install kboot with pip or uv (or run it from its checkout)",
        ) from None
    root = Path(str(dist.locate_file("")))
    wheel = dest / f"kboot-{__version__}-py3-none-any.whl"
    record_lines = []
    record_name = ""
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in dist.files or ():
            name = file.as_posix()
            if name.startswith("..") or "__pycache__" in name or name.endswith(".pyc"):
                continue  # scripts (made again on install) and bytecode
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            data = (root / name).read_bytes()
            archive.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record_lines.append(f"{name},sha256={digest.decode()},{len(data)}")
        record_lines.append(f"{record_name},,")
        archive.writestr(record_name, "\n".join(record_lines) + "\n")
    return wheel


def _pip(args: list[str]) -> None:
    try:
        run_python(
            Path(sys.executable),
            ["-m", "pip", "--disable-pip-version-check", *args],
            version=sys.version_info[:2],
            what="making kboot's own wheels for the image",
        )
    except CommandError as exc:
        raise InstallError(
            f"making kboot's own wheels for the image failed: pip {args[0]} exit code "
            f"{exc.returncode}",
            hint="kboot export fetches kboot's dependencies from the package index once, "
            "at export time; the output above names what failed",
            details=exc.output_tail,
        ) from None


# --- the export folder: kboot's by its record ----------------------------------------------


def _files(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            yield here / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_record(staging: Path, command: str) -> None:
    files = {
        path.relative_to(staging).as_posix(): _sha256(path) for path in sorted(_files(staging))
    }
    record = {"kboot": __version__, "command": command, "files": files}
    (staging / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def parse_record(raw: bytes, path: Path) -> dict[str, str]:
    """An export record's files and their sha256, or an ExportFolderError naming `path`."""
    bad = ExportFolderError(
        f"{path} is not a record kboot can read, so kboot does not know what in "
        f"{path.parent} is its own",
        hint="export into another folder (-o DIR), or move that folder away",
    )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise bad
    return files


def _check_folder(folder: Path) -> bool:
    """Whether `folder` holds an earlier export to replace (False: none there); refuses a
    folder that holds anything else."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ExportFolderError(
            f"-o {folder} is not a folder", hint="give a folder that does not exist yet"
        )
    if not folder.exists():
        return False
    try:
        present = {p.relative_to(folder).as_posix(): p for p in _files(folder)}
    except OSError as exc:
        raise ExportFolderError(f"cannot read -o {folder}: {exc.strerror}") from None
    if not present:
        return False
    hint = "export into another folder (-o DIR), or move those files away"
    if RECORD not in present:
        raise ExportFolderError(
            f"-o {folder} holds files kboot did not write ({_some(present)}), and kboot never "
            "overwrites what it did not write",
            hint=hint,
        )
    try:
        recorded = parse_record(present.pop(RECORD).read_bytes(), folder / RECORD)
    except OSError as exc:
        raise ExportFolderError(f"cannot read {folder / RECORD}: {exc.strerror}") from None
    foreign = [name for name, p in present.items() if name not in recorded or p.is_symlink()]
    if foreign:
        raise ExportFolderError(
            f"-o {folder} holds files kboot did not write ({_some(foreign)}), and kboot never "
            "overwrites what it did not write",
            hint=hint,
        )
    changed = [name for name, p in present.items() if _sha256(p) != recorded[name]]
    if changed:
        raise ExportFolderError(
            f"{_some(changed)} in -o {folder} changed since kboot wrote it: kboot never "
            "overwrites your edits",
            hint="export into another folder (-o DIR), or move the changed files away",
        )
    return True


def _some(names: Sequence[str] | dict[str, Path]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _swap_in(staging: Path, folder: Path, *, replaced: bool) -> None:
    """`staging` becomes `folder`: renamed over an empty or missing one; an earlier export
    (checked to be all kboot's) is moved aside first and deleted once the new one is in."""
    if not replaced:
        os.replace(staging, folder)  # over an empty folder, or none
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.kboot-old-", dir=folder.parent))
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)  # the earlier export: every file kboot's


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
