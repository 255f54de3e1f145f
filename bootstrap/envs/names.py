"""What a name on the command line means: which profile, and which environment.

Every command asks `resolve` (create, show and sync for a PROFILE; check, doctor, kernel,
remove and `config set --python` for an ENV; run for either), so a name means the same
thing to all of them. The rule, also in the README's Projects section:

- A path (it has a `/`, or is `.` or `..`) is the environment folder it names; a path
  ending in `.toml` is a profile file, whose environment is named after the file.
- A PROFILE name is the project's profile (in a folder with a kboot.toml or a
  pyproject.toml with [tool.kboot], or below one), else yours, else the built-in: a lower
  one of the same name is shadowed (`kboot profiles` says so), which is precedence, not
  ambiguity.
- An ENV name, in a project that has a profile of that name, is that profile's
  environment, `<project>-<name>`, as `kboot create <name>` there makes it. Anywhere else
  it is the environment called so: the one in kboot's home, else the one made with
  `--dest` that has that name (two of those are refused). A user or built-in profile's
  environment has the profile's name, so there the profile and the environment agree.
- Refused as ambiguous (exit 2), naming both: in a project that has a profile NAME, an
  environment literally called NAME (made outside the project, or with `--name`) that is
  not the project's. Say `<project>-NAME` for the project's, or the other's path.
- `kboot run NAME` uses the environment NAME means if kboot made it, else creates it from
  the profile NAME means.
- A `kboot sync` manifest names each environment (`name`, in kboot's home, never prefixed
  with a project) and its profile (`profile`, looked up as `create` looks it up in the
  manifest's folder): nothing there depends on where sync runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bootstrap.envs import lifecycle
from bootstrap.envs.lifecycle import Entry, Ledger, open_ledger
from bootstrap.envs.plan import validate_name
from bootstrap.profiles.catalog import Catalog, catalog
from bootstrap.profiles.model import Profile, looks_like_path
from bootstrap.state.ledger import same_folder
from bootstrap.system.errors import KbootError, NoSuchEnvironment, UsageError
from bootstrap.system.files import trusted_dir
from bootstrap.system.paths import envs_dir, kboot_home

#: what the command takes: a profile (create, show), an environment kboot made (check,
#: doctor, kernel, remove), or either (run: an environment, created when missing)
Want = Literal["profile", "env", "either"]


@dataclass(frozen=True)
class Resolved:
    """What one name on the command line means."""

    ref: str  # as given
    name: str  # the environment's name
    path: Path  # its folder (symlinks resolved); for a missing one, where create makes it
    source: str  # "project", "user", "builtin", "file" (a .toml path), "environment", "path"
    where: str  # the profile's file and table, or the environment's folder
    #: kboot's ledger knows an environment there (by a name: a complete one, not one
    #: removed already); None: not looked up (a profile's, for create and show)
    exists: bool | None
    #: the profile, when the command needs it: create and show, or run creating it
    profile: Profile | None = None


def resolve(
    ref: str,
    environ: Mapping[str, str],
    cwd: Path | None = None,
    *,
    want: Want = "env",
    profiles: Catalog | None = None,
    ledger: Ledger | None = None,
) -> Resolved:
    """What `ref` means, typed in `cwd` (default: the current folder); see the module's
    rule. `profiles` and `ledger` are the caller's, when it has them already."""
    here = Path.cwd() if cwd is None else cwd
    if want == "profile":
        return _as_profile(ref, profiles or catalog(here, environ), here, environ)
    ledger = ledger or open_ledger(kboot_home(environ), envs_dir(environ))
    if _is_path(ref) and not (ref.endswith(".toml") and not _is_dir(here, ref)):
        return _folder(ref, here, ledger, environ, want)
    if ref.endswith(".toml"):  # a profile file: its environment
        meant = _as_profile(ref, profiles or catalog(here, environ), here, environ)
        return _named(meant.name, ledger, environ, want, meant)
    profiles = profiles or catalog(here, environ)
    project = profiles.project
    if project is None or ref not in project.profiles:
        return _named(ref, ledger, environ, want, None, profiles)
    own = _lookup(project.env_name(ref), ledger, environ)
    other = _lookup(ref, ledger, environ)
    if _live(other[1]) and (not _live(own[1]) or own[0] != other[0]):
        state = "" if _live(own[1]) else ", not made yet"
        raise UsageError(
            f"{ref!r} means two environments here: {project.env_name(ref)} (this project's "
            f"profile {ref}, {project.where(ref)}{state}) and the environment {ref!r} at "
            f"{other[0]}, which is not this project's",
            hint=f"say {project.env_name(ref)} for the project's, or {other[0]} for the "
            f"other (outside {project.root}, {ref!r} means only the other)",
        )
    meant = Resolved(
        ref, project.env_name(ref), own[0], "project", project.where(ref), _live(own[1])
    )
    return _named(meant.name, ledger, environ, want, meant, profiles)


def _as_profile(ref: str, profiles: Catalog, here: Path, environ: Mapping[str, str]) -> Resolved:
    given = Path(ref).expanduser() if looks_like_path(ref) else None
    # a relative path is relative to where it was typed
    looked_up = str(here / given) if given and not given.is_absolute() else ref
    profile, origin, where = profiles.lookup(looked_up)
    name = profile.default_env_name
    return Resolved(ref, name, _home(name, environ), origin, where, None, profile)


def _named(
    name: str,
    ledger: Ledger,
    environ: Mapping[str, str],
    want: Want,
    meant: Resolved | None,
    profiles: Catalog | None = None,
) -> Resolved:
    """The environment called `name`; `meant` is the profile it comes from, if any."""
    path, entry = _lookup(name, ledger, environ)
    source, where = (meant.source, meant.where) if meant else ("environment", str(path))
    found = Resolved(meant.ref if meant else name, name, path, source, where, _live(entry))
    if want == "either":
        if found.exists:
            return found
        # missing (or removed, leaving only the user's files): run creates it
        profile = meant.profile if meant and meant.profile else None
        if profile is None:
            assert profiles is not None
            profile, origin, where = profiles.lookup(found.ref)
            source = source if meant else origin
        return Resolved(found.ref, name, path, source, where, False, profile)
    _check_env(found, entry, ledger, environ, meant)
    return found


def _lookup(name: str, ledger: Ledger, environ: Mapping[str, str]) -> tuple[Path, Entry | None]:
    """The folder of the environment called `name`, and kboot's ledger entry for it (None
    when it has none): the one in kboot's home, else the one made with --dest that has
    that name (two such are refused), else where the home would have it."""
    home = _home(name, environ)
    entry = ledger.get(home) if _valid(name) else None
    if entry is not None or not _valid(name):
        return home, entry
    named = [
        e
        for e in ledger.entries()
        if isinstance(e, Entry) and e.token is not None and name in (e.name, e.path.name)
    ]
    if len(named) > 1:
        raise UsageError(
            f"{name!r} names {len(named)} environments: " + ", ".join(str(e.path) for e in named),
            hint="give the path of the one you mean",
        )
    return (named[0].path, named[0]) if named else (home, None)


def _folder(
    ref: str, here: Path, ledger: Ledger, environ: Mapping[str, str], want: Want
) -> Resolved:
    """A path on the command line: the environment folder it names."""
    given = (here / Path(ref).expanduser()).absolute()
    if given.is_symlink():
        raise UsageError(
            f"{given} is a symlink (to {os.path.realpath(given)}); kboot acts on "
            "environments by their own path only",
            hint=f"name the environment itself: {os.path.realpath(given)} "
            "(or delete the link with rm, which leaves the environment alone)",
        )
    path = Path(os.path.realpath(given))
    entry = ledger.get(path)
    # one kboot is building (or was, when killed) is known too: the command says its state
    found = Resolved(ref, path.name, path, "path", str(path), entry is not None)
    if want == "either" and not path.is_dir():
        raise UsageError(
            f"{ref!r} is neither an environment's folder nor a profile file ({path} is not a "
            "folder)",
            hint="give a profile's name, a .toml file, or an environment's folder",
        )
    _check_env(found, entry, ledger, environ, None)
    return found


def _check_env(
    found: Resolved,
    entry: Entry | None,
    ledger: Ledger,
    environ: Mapping[str, str],
    meant: Resolved | None,
) -> None:
    """Refuse what a command that acts on an environment cannot act on."""
    path = found.path
    if entry is not None and entry.token is None and entry.state == lifecycle.READY:
        if os.path.lexists(path) and not same_folder(path, entry.folder_id):
            raise UsageError(  # as create says: a folder made anew at the name is not kboot's
                f"{path} is not an environment kboot made: the environment there was removed, "
                "and this folder was made at its name since",
                hint="kboot leaves it alone; move it away to build there again",
            )
        raise UsageError(
            f"{path} was removed already; only your own files remain there, and kboot leaves "
            "them alone",
            hint=f"kboot create PROFILE --dest {path} builds there again, around your files",
        )
    if entry is not None:
        if os.path.lexists(path):  # kboot runs its Python: no one else may swap it
            trusted_dir(path, what="the environment")
        return
    if os.path.lexists(path):
        raise UsageError(
            f"{path} is not an environment kboot made (kboot's ledger has no record of it)",
            hint="kboot acts only on what it made; a kboot-env.json in a folder proves nothing",
        )
    if meant is not None:
        raise NoSuchEnvironment(
            f"no environment {found.name!r} at {path}: the environment of the profile "
            f"{meant.ref} ({meant.where}) is not made yet",
            hint=f"kboot create {meant.ref} makes it",
        )
    known = sorted(e.name for e in ledger.entries() if isinstance(e, Entry) and e.token is not None)
    raise NoSuchEnvironment(
        f"no environment {found.ref!r} at {path}",
        hint=f"known environments: {', '.join(known)}" if known else "create one first",
    )


def _home(name: str, environ: Mapping[str, str]) -> Path:
    return Path(os.path.realpath(envs_dir(environ))) / name


def _live(entry: Entry | None) -> bool:
    return entry is not None and entry.token is not None


def _valid(name: str) -> bool:
    try:
        validate_name(name)
    except KbootError:
        return False
    return True


def _is_path(ref: str) -> bool:
    return os.sep in ref or bool(os.altsep and os.altsep in ref) or ref in (".", "..")


def _is_dir(here: Path, ref: str) -> bool:
    try:
        return (here / Path(ref).expanduser()).is_dir()
    except OSError:
        return False


def profile_for(
    ref: str,
    environ: Mapping[str, str],
    cwd: Path | None = None,
    *,
    profiles: Catalog | None = None,
) -> Profile:
    """The profile `ref` means (`resolve(..., want="profile")`), for create and show."""
    profile = resolve(ref, environ, cwd, want="profile", profiles=profiles).profile
    assert profile is not None  # a profile lookup always builds it
    return profile
