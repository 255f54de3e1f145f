"""Project profiles, and where every profile name is looked up.

A repository declares its environments in `pyproject.toml`:

    [tool.kboot]
    default = "dev"                      # what `kboot create` with no argument builds
    [tool.kboot.profiles.dev]
    extends = "jax-cpu"                  # a project, user or built-in profile, or a path
    packages = ["pandas"]                # added to what it extends
    remove_packages = ["scipy"]          # taken away from what it extends
    image_data_format = "channels_first"

or in a `kboot.toml` beside it (the same tables without the `tool.kboot` prefix). kboot
finds the nearest such file from the current folder upwards. A name is looked up in the
project first, then in the user's profile folder, then among the built-ins; `extends`
works in every profile (project, user, or a .toml path). The environment of a project
profile is named `<project>-<profile>`, so two projects' `dev` never meet.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bootstrap.profiles.model import (
    Profile,
    local_or_url,
    looks_like_path,
    nul_in_toml,
    parse_profile,
    project_env_name,
    read_profile_data,
)
from bootstrap.system.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PROJECT_FILES = ("kboot.toml", "pyproject.toml")
PROJECT_KEYS = ("default", "profiles")
MAX_DEPTH = 16
_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Project:
    """The `[tool.kboot]` (or kboot.toml) tables of one repository."""

    root: Path
    file: Path
    prefix: str  # "tool.kboot." in pyproject.toml, "" in kboot.toml
    name: str  # the prefix of its environments' names
    default: str | None
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def where(self, name: str) -> str:
        return f"{self.file} [{self.prefix}profiles.{name}]"

    def env_name(self, profile: str) -> str:
        """The environment of this project's profile: `<project>-<profile>`."""
        return project_env_name(self.name, profile)

    @property
    def installable(self) -> bool:
        """Whether `pip install -e ROOT` can build it."""
        return (self.root / "pyproject.toml").is_file() or (self.root / "setup.py").is_file()


def find_project(start: Path, notes: list[str] | None = None) -> Project | None:
    """The nearest project from `start` upwards: a kboot.toml, or a pyproject.toml with a
    [tool.kboot] table (a pyproject.toml without one is passed over).

    Only files that you (or root) own, in folders that nobody else can swap them in,
    count, as git's safe.directory has it: a kboot.toml that another user left in a
    shared folder (/tmp) must not decide which packages kboot installs for you. Such a
    file is passed over, with a line in `notes`.
    """
    folder = start.absolute()
    for candidate in (folder, *folder.parents):
        for filename in PROJECT_FILES:
            path = candidate / filename
            try:
                if not path.is_file():
                    continue
            except OSError:
                continue
            distrust = _not_trusted(path)
            if distrust:
                if notes is not None:
                    notes.append(f"{path} is passed over: {distrust}")
                continue
            project = _read_project(path)
            if project is not None:
                return project
    return None


def _not_trusted(path: Path) -> str | None:  # noqa: PLR0911  # one reason a line
    """Why a project file could be someone else's, or None."""
    if not hasattr(os, "getuid"):  # Windows: ownership works otherwise; not checked there
        return None
    me = os.getuid()
    try:
        file, folder = path.stat(), path.parent.stat()
    except OSError as exc:
        return f"cannot check who owns it ({exc.strerror})"
    if file.st_uid not in (me, 0):
        return f"it belongs to another user (uid {file.st_uid})"
    if file.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "others can write it"
    if folder.st_uid not in (me, 0):
        return f"its folder belongs to another user (uid {folder.st_uid})"
    if folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not folder.st_mode & stat.S_ISVTX:
        return "others can write its folder"
    return None


def _read_project(path: Path) -> Project | None:
    """The project in `path`, None when the file is not kboot's, or kboot's own error.

    A pyproject.toml is kboot's only when it has a [tool.kboot] table: any other one,
    broken or not, is passed over as if it were not there (as pixi passes over a
    pyproject.toml without [tool.pixi]), so someone else's malformed pyproject.toml
    above the current folder cannot stop kboot. A broken one that shows a [tool.kboot]
    header, or any broken kboot.toml, is kboot's and stops it, naming the line.
    """
    pyproject = path.name == "pyproject.toml"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        # it may hold [tool.kboot]: going on without it would build the wrong profile
        raise ProfileError(
            f"cannot read {path}: {exc.strerror or exc}; kboot reads it to find this "
            "project's profiles",
            hint=f"make it readable (chmod u+r {path}), or run kboot outside {path.parent}",
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if pyproject and not _mentions_kboot(raw.decode("latin-1")):
            return None
        line = raw[: exc.start].count(b"\n") + 1
        raise ProfileError(
            f"{path}, line {line}: not UTF-8 text ({exc.reason})",
            hint=f"save {path.name} as UTF-8, or run kboot outside {path.parent}",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if pyproject and not _mentions_kboot(text):
            return None  # not ours: someone else's broken file is theirs to fix
        line, reason = nul_in_toml(text) or _toml_error_line(exc, text)
        raise ProfileError(
            f"{path}, line {line}: invalid TOML: {reason}",
            hint=f"fix line {line} of {path.name} (kboot reads its "
            f"{'[tool.kboot] tables' if pyproject else 'tables'} here), or run kboot "
            f"outside {path.parent}",
        ) from None
    except RecursionError:
        if pyproject and not _mentions_kboot(text):
            return None
        raise ProfileError(f"{path}: nested too deeply") from None
    prefix = "tool.kboot." if pyproject else ""
    if pyproject:
        tool = data.get("tool")
        table = tool.get("kboot") if isinstance(tool, dict) else None
        if table is None:
            return None
    elif ("env" in data or "backend" in data) and not {"profiles", "default"} & set(data):
        return None  # a `kboot sync` manifest, or a profile, that is called kboot.toml
    else:
        table = data
    where = f"{path} [{prefix.rstrip('.') or 'top level'}]"
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: expected a table, found {type(table).__name__}")
    unknown = [key for key in table if key not in PROJECT_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], PROJECT_KEYS, n=1)
        raise ProfileError(
            f"{where}: unknown key '{unknown[0]}'; known keys: {', '.join(PROJECT_KEYS)}",
            hint=f"did you mean '{close[0]}'?"
            if close
            else f"profiles go in [{prefix}profiles.NAME]",
        )
    profiles = table.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ProfileError(
            f"{where}: 'profiles' must hold tables: [{prefix}profiles.NAME]",
            hint=f'for example:\n[{prefix}profiles.dev]\nextends = "jax-cpu"',
        )
    for name in profiles:
        if not name or _NOT_NAME.search(name):
            raise ProfileError(
                f"{path} [{prefix}profiles.{name}]: a profile name uses letters, digits, "
                "'.', '_' and '-' only"
            )
    default = table.get("default")
    if default is not None and (not isinstance(default, str) or default not in profiles):
        raise ProfileError(
            f"{where}: key 'default' has invalid value {default!r}; expected one of this "
            f"file's profiles: {', '.join(profiles) or 'none yet'}"
        )
    return Project(
        root=path.parent,
        file=path,
        prefix=prefix,
        name=_project_name(data if pyproject else {}, path.parent),
        default=default,
        profiles=profiles,
    )


#: a [tool.kboot] or [tool.kboot.X] header (or [[...]]), or a `tool.kboot...` key
_KBOOT_HEADER = re.compile(
    r"""^[ \t]*(?:\[\[?[ \t]*tool[ \t]*\.[ \t]*["']?kboot["']?[ \t]*(?:[.\]]|$)"""
    r"""|tool[ \t]*\.[ \t]*["']?kboot["']?[ \t]*[.=])""",
    re.MULTILINE,
)
_TOOL_HEADER = re.compile(r"\[[ \t]*tool[ \t]*\]")
_KBOOT_KEY = re.compile(r"""["']?kboot["']?[ \t]*[.=]""")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)$")


def _mentions_kboot(text: str) -> bool:
    """Whether a pyproject.toml too broken to parse shows a [tool.kboot] table: a
    [tool.kboot...] header, a `tool.kboot...` key, or a `kboot` key under [tool] (not
    one elsewhere: `kboot = "..."` under [project.scripts] is someone's script)."""
    if _KBOOT_HEADER.search(text):
        return True
    in_tool = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_tool = _TOOL_HEADER.match(stripped) is not None
        elif in_tool and _KBOOT_KEY.match(stripped):
            return True
    return False


def _toml_error_line(exc: Exception, text: str) -> tuple[int, str]:
    """The line tomllib names in its message (only 3.14 has `lineno`), and the reason."""
    message = str(exc)
    found = _TOML_LINE.search(message)
    if found:
        return int(found.group(1)), message[: found.start()].rstrip()
    end = "(at end of document)"
    return text.count("\n") + 1, message.removesuffix(end).rstrip()


def _project_name(pyproject: Mapping[str, Any], root: Path) -> str:
    """[project].name, else the folder's name, as an environment name allows it."""
    project = pyproject.get("project")
    name = project.get("name") if isinstance(project, dict) else None
    if not isinstance(name, str) or not name.strip():
        name = root.name or "project"
    return _NOT_NAME.sub("-", name).strip("-._") or "project"


@dataclass(frozen=True)
class _Source:
    """Where one profile's table comes from."""

    name: str
    path: Path
    origin: str  # "project", "user", "builtin" or "file"
    where: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Catalog:
    """Every profile a name can mean, in lookup order: project, user, built-in."""

    user_dir: Path
    builtin_dir: Path
    project: Project | None = None

    # -- lookup -----------------------------------------------------------------------

    def resolve(self, ref: str) -> Profile:
        """A profile by name (project, user, built-in) or by path to a .toml file."""
        return self.lookup(ref)[0]

    def lookup(self, ref: str) -> tuple[Profile, str, str]:
        """The profile `ref` means, where it comes from ("project", "user", "builtin" or
        "file") and its file (and table). `bootstrap.envs.names` asks this for every
        command; call that, not this, to learn what a name on the command line means."""
        source = self._find(ref)
        return self._build(source), source.origin, source.where

    def default(self) -> str:
        """The project's default profile: what `kboot create` with no argument builds."""
        if self.project is None:
            raise ProfileError(
                "no profile given, and no project here: no kboot.toml, and no pyproject.toml "
                "with [tool.kboot], in this folder or above",
                hint="name one (`kboot profiles` lists them), e.g. kboot create numpy",
            )
        if self.project.default is None:
            names = ", ".join(self.project.profiles) or "none"
            raise ProfileError(
                f"{self.project.file} has no default profile (profiles: {names})",
                hint=f'add default = "NAME" to [{self.project.prefix.rstrip(".")}]'
                if self.project.prefix
                else 'add default = "NAME" at the top of kboot.toml',
            )
        return self.project.default

    def names(self) -> list[str]:
        """Every profile name, once, sorted."""
        return sorted({name for layer in self._layers().values() for name in layer})

    def entries(self) -> list[ProfileEntry]:
        """Every named profile, for `kboot profiles`: the one a name means, and what it
        shadows."""
        layers = self._layers()
        entries = []
        for name in sorted({n for layer in layers.values() for n in layer}):
            origin = next(o for o in ("project", "user", "builtin") if name in layers[o])
            where = str(layers[origin][name])
            try:
                source = self._source(name, origin)
                where = source.where
                profile: Profile | None = self._build(source)
                error = None
            except ProfileError as exc:
                profile, error = None, exc.message
            shadows = [o for o in ("user", "builtin") if o != origin and name in layers[o]]
            entries.append(
                ProfileEntry(
                    name,
                    origin,
                    layers[origin][name],
                    "builtin" in shadows,
                    profile,
                    error,
                    where=where,
                    shadows=tuple(shadows),
                )
            )
        return entries

    def load(self, path: Path, *, name: str | None = None) -> Profile:
        """A profile file, read and built like any other."""
        source = _Source(name or path.stem, path, "file", str(path), read_profile_data(path))
        return self._build(source)

    def parse_table(self, data: Mapping[str, Any], *, path: Path, name: str, where: str) -> Profile:
        """An inline profile table (a manifest's), with `extends` like any other."""
        return self._build(_Source(name, path, "file", where, data))

    # -- internals --------------------------------------------------------------------

    def _layers(self) -> dict[str, dict[str, Path]]:
        return {
            "project": dict.fromkeys(self.project.profiles, self.project.file)
            if self.project
            else {},
            "user": _profile_files(
                self.user_dir,
                f"make it readable (chmod u+rx {self.user_dir}), or set KBOOT_PROFILES to "
                "another folder",
            ),
            "builtin": _profile_files(self.builtin_dir, "reinstall kboot"),
        }

    def _source(self, name: str, origin: str) -> _Source:
        if origin == "project":
            assert self.project is not None
            return _Source(
                name,
                self.project.file,
                "project",
                self.project.where(name),
                self.project.profiles[name],
            )
        path = (self.user_dir if origin == "user" else self.builtin_dir) / f"{name}.toml"
        return _Source(name, path, origin, str(path), read_profile_data(path))

    def _find(
        self,
        ref: str,
        *,
        below: str | None = None,
        base: Path | None = None,
        skip_project: bool = False,
    ) -> _Source:
        """The profile `ref` means. A path is relative to `base` (a profile's file) or the
        current folder; `below` skips the layers down to and including that origin (a
        profile that extends its own name means the next one down)."""
        if looks_like_path(ref):
            path = Path(ref).expanduser()
            if base is not None and not path.is_absolute():
                path = base.parent / path
            return _Source(path.stem, path, "file", str(path), read_profile_data(path))
        layers = self._layers()
        order = ["user", "builtin"] if skip_project else ["project", "user", "builtin"]
        if below is not None:
            order = order[order.index(below) + 1 :] if below in order else order
        for origin in order:
            if ref in layers[origin]:
                return self._source(ref, origin)
        if below is not None:
            raise ProfileError(
                f"it extends its own name, which means the {' or '.join(order) or 'no'} "
                f"profile '{ref}' below it, and there is none",
                hint="extend another profile, or give the values here",
            )
        known = sorted({n for layer in layers.values() for n in layer})
        # 0.7: `nmupy` is numpy (0.8), `nosuch` is not torch (0.55)
        close = difflib.get_close_matches(ref, known, n=3, cutoff=0.7)
        hint = f"did you mean {' or '.join(close)}?" if close else "`kboot profiles` lists them"
        raise ProfileError(
            f"unknown profile '{ref}'; known profiles: {', '.join(known) or 'none'}", hint=hint
        )

    def _build(self, source: _Source) -> Profile:
        parents: list[str] = []
        data = self._expand(source, chain=(), parents=parents)
        profile = parse_profile(data, path=source.path, name=source.name, where=source.where)
        if parents:
            profile = replace(profile, extends=tuple(parents))
        if source.origin == "project" and self.project is not None:
            profile = replace(
                profile,
                project=self.project.name,
                table=f"{self.project.prefix}profiles.{source.name}",
            )
        return profile

    def _expand(
        self, source: _Source, chain: tuple[str, ...], parents: list[str] | None = None
    ) -> dict[str, Any]:
        """The source's table with everything it extends folded in; `parents` gets what it
        extends, nearest first (`jax-cpu (.../jax-cpu.toml)`)."""
        data = dict(source.data)
        ref = data.pop("extends", None)
        remove = data.pop("remove_packages", None)
        if ref is None:
            if remove is not None:
                raise ProfileError(
                    f"{source.where}: key 'remove_packages' needs 'extends': it removes "
                    "packages from the profile this one extends",
                    hint="list only the packages you want in 'packages' instead",
                )
            return data
        if not isinstance(ref, str) or not ref.strip():
            raise ProfileError(
                f"{source.where}: key 'extends' has invalid value {ref!r}; expected a "
                "profile name or a path to a .toml file"
            )
        if len(chain) >= MAX_DEPTH or source.where in chain:
            trail = " -> ".join((*chain, source.where))
            raise ProfileError(f"{source.where}: 'extends' goes round in a circle: {trail}")
        same_name = ref == source.name and source.origin in ("project", "user", "builtin")
        try:
            # only a project's own profiles see the project's names: a user's or a
            # built-in profile means the same wherever kboot runs
            parent = self._find(
                ref,
                below=source.origin if same_name else None,
                base=source.path,
                skip_project=source.origin != "project",
            )
        except ProfileError as exc:
            raise ProfileError(
                f"{source.where}: extends '{ref}': {exc.message}", hint=exc.hint
            ) from None
        if parents is not None:
            parents.append(f"{ref} ({parent.where})" if parent.where != ref else ref)
        inherited = self._expand(parent, (*chain, source.where), parents)
        # the parent's local find_links are relative to the parent's own file
        links = inherited.get("find_links")
        if isinstance(links, list):
            inherited["find_links"] = [
                local_or_url(link, parent.path.parent) if isinstance(link, str) else link
                for link in links
            ]
        return _merge(inherited, data, remove, source.where, parent.where)


def _merge(
    base: Mapping[str, Any],
    child: Mapping[str, Any],
    remove: object,
    where: str,
    parent: str,
) -> dict[str, Any]:
    """`child` over `base`: every key replaces, `packages` adds (a package of the same
    name replaces the parent's), `env` merges, `remove_packages` takes away."""
    merged = {k: v for k, v in base.items() if k != "description"}
    merged.update({k: v for k, v in child.items() if k not in ("packages", "env")})
    if "description" in base and "description" not in child:
        merged["description"] = base["description"]
    inherited = base.get("packages", [])
    if not isinstance(inherited, list) or not all(isinstance(p, str) for p in inherited):
        raise ProfileError(
            f"{parent}: key 'packages' has invalid value {inherited!r}; expected a list of "
            "requirement strings",
            hint=f"{where} extends it: fix it there",
        )
    packages = list(inherited)
    if remove is not None:
        if not isinstance(remove, list) or not all(isinstance(n, str) for n in remove):
            raise ProfileError(
                f"{where}: key 'remove_packages' has invalid value {remove!r}; expected a "
                "list of package names"
            )
        wanted = {canonicalize_name(n) for n in remove}
        present = {_name(p) for p in packages}
        missing = sorted(wanted - present)
        if missing:
            raise ProfileError(
                f"{where}: remove_packages names {', '.join(missing)}, which {parent} does "
                f"not list; it lists: {', '.join(str(p) for p in packages) or 'nothing'}"
            )
        packages = [p for p in packages if _name(p) not in wanted]
    if "packages" in child:
        added = child["packages"]
        if not isinstance(added, list):
            merged["packages"] = added  # parse_profile names the problem
        else:
            names = {_name(p) for p in added}
            packages = [p for p in packages if _name(p) not in names or _name(p) is None]
            packages += added
            merged["packages"] = packages
    else:
        merged["packages"] = packages
    if isinstance(base.get("env"), dict) and isinstance(child.get("env"), dict):
        merged["env"] = {**base["env"], **child["env"]}
    elif "env" in child or "env" in base:
        merged["env"] = child.get("env", base.get("env"))
    if "gpu" in merged and "accelerator" in child and "gpu" not in child:
        del merged["gpu"]  # the child chose a build: that decides the GPU question
    return merged


def _name(requirement: object) -> str | None:
    if not isinstance(requirement, str):
        return None
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return None


def _profile_files(folder: Path, fix: str) -> dict[str, Path]:
    """The profile files in a folder, by name: {} when there is no folder, kboot's error
    when there is one it cannot read (going on without it would build another profile
    of the same name, the built-in, as if nothing were wrong)."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise ProfileError(
            f"cannot read the profile folder {folder}: {exc.strerror or exc}", hint=fix
        ) from None
    found = {}
    for name in names:
        path = folder / name
        try:
            if name.endswith(".toml") and path.is_file():
                found[path.stem] = path
        except OSError as exc:
            raise ProfileError(
                f"cannot read the profile folder {folder}: {path}: {exc.strerror or exc}",
                hint=fix,
            ) from None
    return found


def catalog(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Catalog:
    """The profiles a name means from `cwd` (default: the current folder)."""
    from bootstrap.system.paths import builtin_profiles_dir, user_profiles_dir

    notes: list[str] = []
    project = find_project(cwd if cwd is not None else Path.cwd(), notes)
    for note in notes:  # said where the user sees it, whatever the command
        sys.stderr.write(f"kboot: warning: {note} (not a project of yours)\n")
    return Catalog(user_profiles_dir(environ), builtin_profiles_dir(), project)


BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg")


def build_files_digest(root: Path) -> str:
    """What decides how `pip install -e ROOT` installs: its build files' bytes."""
    digest = hashlib.sha256()
    for name in BUILD_FILES:
        try:
            data = (root / name).read_bytes()
        except OSError:
            continue
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]


def with_editable(profile: Profile, root: Path) -> Profile:
    """The profile with the project at `root` installed editable."""
    return replace(profile, editable=str(root), editable_digest=build_files_digest(root))


def editable_root(project: Project | None, cwd: Path) -> Path:
    """The folder `create --editable` installs: the nearest one from the current folder up
    to the project's that has a pyproject.toml or setup.py (in a monorepo, the package
    you are in)."""
    here = cwd.absolute()
    top = project.root if project is not None else here
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() or (folder / "setup.py").is_file():
            return folder
        if folder == top:
            break
    raise ProfileError(
        f"--editable: no pyproject.toml or setup.py to install in {here}"
        + (f" or above it up to {top}" if top != here else ""),
        hint="run it in the project's folder, or leave --editable out",
    )


@dataclass(frozen=True)
class ProfileEntry:
    """One line of `kboot profiles`."""

    name: str
    origin: str  # "project", "user" or "builtin"
    path: Path
    shadows_builtin: bool
    profile: Profile | None
    error: str | None
    where: str = ""  # the file, and the table of a project profile
    shadows: tuple[str, ...] = ()  # the lower layers that have this name too

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "path": str(self.path),
            "where": self.where or str(self.path),
            "shadows": list(self.shadows),
            "shadows_builtin": self.shadows_builtin,
            "backend": self.profile.backend if self.profile else None,
            "description": self.profile.description if self.profile else None,
            "error": self.error,
        }


def list_profiles(user_dir: Path, builtin_dir: Path) -> list[ProfileEntry]:
    """User and built-in profiles (no project)."""
    return Catalog(user_dir, builtin_dir).entries()


def load_profile(path: Path, *, name: str | None = None) -> Profile:
    """Read and validate one profile file (one that `extends` another finds it as the
    command line would: project, user, built-in)."""
    data = read_profile_data(path)
    if "extends" in data or "remove_packages" in data:
        return catalog().load(path, name=name)
    return parse_profile(data, path=path, name=name or path.stem)


def resolve_profile(ref: str, user_dir: Path, builtin_dir: Path) -> Profile:
    """A profile by built-in name, user-profile name, or path to a .toml file (no
    project: see `bootstrap.profiles.catalog.Catalog`)."""
    return Catalog(user_dir, builtin_dir).resolve(ref)
