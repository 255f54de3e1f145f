"""`kboot sync`: make this machine match a manifest of environments.

    [[env]]
    name = "lab-jax"
    profile = "jax-cpu"            # a profile name or path, or an inline table
    lock = "locks/jax-cpu.txt"     # optional, relative to the manifest
    scope = "env"                  # optional
    kernel = true                  # optional: a Jupyter kernel, as `create --kernel`

Creates what is missing, updates what differs, leaves what matches (each through
`create`'s transaction, so an interrupted sync never leaves a half-built
environment and the next sync finishes the job), and reports the environments kboot
manages that the manifest does not list (`--prune` removes them). An environment made
from another profile than its entry names is replaced only with `--force`, as by create.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bootstrap.envs.create import plan_create
from bootstrap.envs.installed import PackageDrift
from bootstrap.envs.manage import list_envs, remove_env
from bootstrap.envs.names import profile_for
from bootstrap.envs.plan import SCOPES, CreateRequest, validate_name
from bootstrap.fleet.batch import create_many
from bootstrap.install.installers import INSTALLERS
from bootstrap.profiles.catalog import catalog
from bootstrap.profiles.model import (
    ACCELERATORS,
    Profile,
    Sources,
    local_or_url,
    looks_like_path,
    nul_in_toml,
)
from bootstrap.system.errors import EXIT_FAILED, EXIT_OK, KbootError, ProfileError
from bootstrap.system.paths import envs_dir
from bootstrap.system.progress import Reporter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENTRY_KEYS = (
    "name",
    "profile",
    "lock",
    "scope",
    "python",
    "installer",
    "system_site_packages",
    "allow_cpu",
    "wheelhouse",
    "offline",
    "index_url",
    "extra_index_urls",
    "find_links",
    "accelerator",
    "kernel",
)


class ManifestError(ProfileError):
    """A manifest that cannot be read or validated (exit code 2)."""


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    profile: Profile
    lock: Path | None
    scope: str
    python: str | None
    installer: str
    system_site_packages: bool
    allow_cpu: bool
    wheelhouse: Path | None = None
    offline: bool = False
    sources: Sources | None = None  # replaces the profile's sources when given
    accelerator: str | None = None  # overrides the profile's
    kernel: bool = False  # also a Jupyter kernel (create --kernel)

    def request(self, *, verify: bool, wait: float = 0.0, force: bool = False) -> CreateRequest:
        return CreateRequest(
            profile=self.profile,
            name=self.name,
            python=self.python,
            installer=self.installer,
            scope=self.scope,
            system_site_packages=self.system_site_packages,
            allow_cpu=self.allow_cpu,
            lock=self.lock,
            wheelhouse=self.wheelhouse,
            offline=self.offline,
            sources=self.sources,
            accelerator=self.accelerator,
            kernel=self.kernel,
            verify=verify,
            wait=wait,
            # one made from another profile is replaced only with --force, as by create
            replace_other_profile=force,
        )


#: What reads a manifest: `kboot lock` writes the locks its entries name, `kboot download`
#: makes their wheelhouses from those locks, and `kboot sync` installs from both.
STAGES = ("lock", "download", "sync")


def load_manifest(path: Path, *, stage: str = "sync") -> list[ManifestEntry]:
    """The manifest's entries, validated for `stage`: before `kboot lock` neither the
    locks nor the wheelhouses need exist, before `kboot download` the locks must and the
    wheelhouses need not (download makes them), before `kboot sync` both must."""
    assert stage in STAGES
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise ManifestError(f"manifest path {str(path)!r} is not a valid path: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        nul = nul_in_toml(text)
        raise ManifestError(f"{path}: invalid TOML: {nul[1] if nul else exc}") from None
    except RecursionError:
        raise ManifestError(f"{path}: nested too deeply to be a manifest") from None
    unknown = [key for key in data if key != "env"]
    if unknown:
        raise ManifestError(
            f"{path}: unknown top-level key '{unknown[0]}'; expected [[env]] tables"
        )
    raw_entries = data.get("env", [])
    if not isinstance(raw_entries, list) or not all(isinstance(e, dict) for e in raw_entries):
        raise ManifestError(f"{path}: 'env' must be an array of tables ([[env]])")
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries, start=1):
        entry = _entry(path, index, raw, stage)
        if entry.name in seen:
            raise ManifestError(
                f"{path}: environment name '{entry.name}' appears twice "
                f"([[env]] #{seen[entry.name]} and #{index})",
                hint="every environment needs its own name",
            )
        seen[entry.name] = index
        entries.append(entry)
    return entries


def _entry(path: Path, index: int, raw: Mapping[str, Any], stage: str = "sync") -> ManifestEntry:
    where = f"{path}: [[env]] #{index}"
    for key in raw:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(key, ENTRY_KEYS, n=1)
            raise ManifestError(
                f"{where}: unknown key '{key}'; known keys: {', '.join(ENTRY_KEYS)}",
                hint=f"did you mean '{close[0]}'?" if close else None,
            )
    for key in ("name", "profile"):
        if key not in raw:
            raise ManifestError(f"{where}: missing required key '{key}'")
    name = raw["name"]
    if not isinstance(name, str):
        raise ManifestError(f"{where}: 'name' must be a string")
    where = f"{path}: [[env]] '{name}'"
    try:
        validate_name(name)
    except KbootError as exc:
        raise ManifestError(f"{where}: {exc.message}", hint=exc.hint) from None
    profile = _profile(path, where, name, raw["profile"])
    lock = raw.get("lock")
    if lock is not None and (not isinstance(lock, str) or not _path_text(lock)):
        raise ManifestError(f"{where}: 'lock' must be a path string")
    if lock is not None and stage != "lock" and not (path.parent / lock).is_file():
        raise ManifestError(
            f"{where}: lock file {path.parent / lock} does not exist",
            hint=f"make it (and every lock the manifest names) with `kboot lock {path}`, "
            "or drop the 'lock' key",
        )
    scope = raw.get("scope", "env")
    if scope not in SCOPES:
        raise ManifestError(f"{where}: 'scope' is {scope!r}; expected one of {', '.join(SCOPES)}")
    installer = raw.get("installer", "uv")
    if installer not in INSTALLERS:
        raise ManifestError(f"{where}: 'installer' is {installer!r}; expected uv or pip")
    python = raw.get("python")
    if python is not None and not isinstance(python, str):
        raise ManifestError(f"{where}: 'python' must be a string such as \"3.11\"")
    flags = {}
    for key in ("system_site_packages", "allow_cpu", "offline", "kernel"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise ManifestError(f"{where}: '{key}' must be true or false")
        flags[key] = value
    wheelhouse = _wheelhouse(path, where, raw.get("wheelhouse"), stage)
    if flags["offline"] and wheelhouse is None:
        raise ManifestError(f"{where}: 'offline = true' needs a 'wheelhouse'")
    return ManifestEntry(
        name=name,
        profile=profile,
        lock=(path.parent / lock).absolute() if lock else None,
        scope=scope,
        python=python,
        installer=installer,
        wheelhouse=wheelhouse,
        sources=_sources(path, where, raw),
        accelerator=_accelerator(where, raw),
        **flags,
    )


def _wheelhouse(path: Path, where: str, value: object, stage: str) -> Path | None:
    """An entry's wheelhouse folder, relative to the manifest. `kboot download MANIFEST`
    makes it (the folder itself, never the folders above it): until then it may be
    missing, where its parent exists."""
    if value is None:
        return None
    if not isinstance(value, str) or not _path_text(value):
        raise ManifestError(f"{where}: 'wheelhouse' must be a folder path")
    wheelhouse = (path.parent / value).absolute()
    try:
        if wheelhouse.is_dir():
            return wheelhouse
        there = wheelhouse.exists() or wheelhouse.is_symlink()
    except OSError as exc:  # a name too long, a folder it cannot look into
        raise ManifestError(f"{where}: wheelhouse {wheelhouse}: {exc.strerror}") from None
    if there:
        raise ManifestError(f"{where}: wheelhouse {wheelhouse} is not a folder")
    if stage == "sync":
        raise ManifestError(
            f"{where}: wheelhouse {wheelhouse} does not exist",
            hint=f"make it from the entry's lock with `kboot download {path}` (on a machine "
            "with a network), then copy it here with the manifest",
        )
    if not wheelhouse.parent.is_dir():
        raise ManifestError(
            f"{where}: wheelhouse {wheelhouse} cannot be made: no folder {wheelhouse.parent}",
            hint=f"make that folder first (mkdir -p {wheelhouse.parent}), or fix 'wheelhouse'",
        )
    return wheelhouse


def _accelerator(where: str, raw: Mapping[str, Any]) -> str | None:
    value = raw.get("accelerator")
    if value is not None and value not in ACCELERATORS:
        raise ManifestError(
            f"{where}: 'accelerator' is {value!r}; expected one of {', '.join(ACCELERATORS)}"
        )
    return value


def _path_text(value: str) -> bool:
    return bool(value) and "\0" not in value


def _sources(path: Path, where: str, raw: Mapping[str, Any]) -> Sources | None:
    """index_url, extra_index_urls and find_links of an entry; local paths are relative to
    the manifest. Any of them replaces all of the profile's own sources, as on the CLI."""
    if not any(key in raw for key in ("index_url", "extra_index_urls", "find_links")):
        return None
    index_url = raw.get("index_url")
    if index_url is not None and (not isinstance(index_url, str) or not _path_text(index_url)):
        raise ManifestError(f"{where}: 'index_url' must be a URL string")
    lists = {}
    for key in ("extra_index_urls", "find_links"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(v, str) and _path_text(v) for v in value
        ):
            raise ManifestError(f"{where}: '{key}' must be a list of strings")
        lists[key] = value
    return Sources(
        index_url,
        tuple(lists["extra_index_urls"]),
        tuple(local_or_url(link, path.parent) for link in lists["find_links"]),
    )


def _profile(path: Path, where: str, name: str, value: object) -> Profile:
    # names as `kboot create` in the manifest's folder means them: its project first (the
    # entry's `name` names its environment: never prefixed with a project)
    profiles = catalog(path.parent)
    if isinstance(value, dict):
        try:
            inline = Path(f"{path}#{name}")
            return profiles.parse_table(value, path=inline, name=name, where=str(inline))
        except ProfileError as exc:
            raise ManifestError(exc.message, hint=exc.hint) from None
    if not isinstance(value, str) or not _path_text(value):
        raise ManifestError(f"{where}: 'profile' must be a profile name, a path or a table")
    ref = str((path.parent / value).absolute()) if looks_like_path(value) else value
    try:
        return profile_for(ref, os.environ, path.parent, profiles=profiles)
    except ProfileError as exc:
        raise ManifestError(f"{where}: {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True)
class SyncEntry:
    name: str
    status: (
        # created rebuilt updated unchanged failed | ok missing differs needs-force |
        # extra removed foreign
        str
    )
    detail: str = ""
    seconds: float = 0.0
    changed: bool = False
    error: KbootError | None = None
    # --check: installed packages that differ from the lock it was built from
    lock_drift: tuple[PackageDrift, ...] = ()

    @property
    def outside_manifest(self) -> bool:
        return self.status in ("extra", "removed", "foreign")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "changed": self.changed,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "lock_drift": [d.to_dict() for d in self.lock_drift],
        }
        if self.error is not None:
            data["error"] = self.error.message
            data["exit_code"] = self.error.exit_code
        return data


@dataclass(frozen=True)
class SyncResult:
    manifest: Path
    entries: tuple[SyncEntry, ...]
    check_only: bool
    prune: bool = False

    @property
    def changed(self) -> bool:
        return any(e.changed for e in self.entries)

    @property
    def was_in_sync(self) -> bool:
        """Before this run, every listed environment matched (extra ones count only when
        pruning): what `sync --check` answers."""
        return all(
            e.status in ("ok", "unchanged", "foreign") or (e.status == "extra" and not self.prune)
            for e in self.entries
        )

    @property
    def in_sync(self) -> bool:
        """After this run, the machine matches the manifest: a check changes nothing, so
        it is the same as before; a sync is in sync when every entry ended well."""
        if self.check_only:
            return self.was_in_sync
        return all(
            e.status in ("created", "rebuilt", "updated", "unchanged", "removed", "foreign")
            or (e.status == "extra" and not self.prune)
            for e in self.entries
        )

    @property
    def failed(self) -> int:
        return sum(1 for e in self.entries if e.status == "failed")

    @property
    def exit_code(self) -> int:
        if self.check_only:
            return EXIT_OK if self.was_in_sync else EXIT_FAILED
        failed = [e.error.exit_code for e in self.entries if e.error is not None]
        return max(failed, default=EXIT_OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest),
            "check": self.check_only,
            "changed": self.changed,
            "in_sync": self.in_sync,  # after this run
            "was_in_sync": self.was_in_sync,  # before it
            "ok": self.exit_code == EXIT_OK,
            "environments": [e.to_dict() for e in self.entries if not e.outside_manifest],
            "extra": [e.to_dict() for e in self.entries if e.outside_manifest],
        }


def sync_manifest(
    manifest: Path,
    *,
    check_only: bool = False,
    prune: bool = False,
    verify: bool = False,
    workers: int | None = None,
    reporter_for: Callable[[str], Reporter],
    environ: Mapping[str, str] | None = None,
    wait: float = 0.0,
    force: bool = False,
) -> SyncResult:
    environ = dict(os.environ if environ is None else environ)
    entries = load_manifest(manifest)
    if prune and not entries:
        doomed = [s for s in list_envs(environ) if s.kboot]
        if doomed:
            raise ManifestError(
                f"{manifest} lists no environments, so --prune would remove all "
                f"{len(doomed)} that kboot made; refused",
                hint="list the environments to keep in the manifest, or remove them one by "
                "one with kboot remove",
            )
    results: list[SyncEntry] = []
    if check_only:
        for entry in entries:
            try:
                plan = plan_create(entry.request(verify=False, force=force), environ=environ)
            except KbootError as exc:
                results.append(SyncEntry(entry.name, "failed", exc.message, error=exc))
                continue
            drift = plan.difference.lock_drift if plan.difference else ()
            detail = "; ".join(plan.changes)
            results.append(SyncEntry(entry.name, plan.status, detail, lock_drift=drift))
    else:
        jobs = [
            (e.name, partial(e.request, verify=verify, wait=wait, force=force)) for e in entries
        ]
        items = create_many(
            jobs,
            reporter_for=reporter_for,
            environ=environ,
            workers=workers,
        )
        for item in items:
            if item.result is None:
                assert item.error is not None
                results.append(
                    SyncEntry(
                        item.label, "failed", item.error.message, item.seconds, error=item.error
                    )
                )
            else:
                detail = "; ".join(item.result.changes)
                results.append(
                    SyncEntry(item.label, item.status, detail, item.seconds, item.result.changed)
                )
    listed = {e.name for e in entries}
    home_envs = Path(os.path.realpath(envs_dir(environ)))
    for summary in list_envs(environ):
        if summary.path.parent != home_envs or summary.path.name in listed:
            continue
        if not summary.kboot:
            detail = "not made by kboot: left alone, never pruned"
            results.append(SyncEntry(summary.path.name, "foreign", detail))
        elif prune and not check_only:
            try:
                remove_env(str(summary.path), environ)
            except KbootError as exc:
                results.append(SyncEntry(summary.path.name, "failed", exc.message, error=exc))
                continue
            results.append(SyncEntry(summary.path.name, "removed", str(summary.path), changed=True))
        else:
            detail = "not in the manifest" + ("; --prune removes it" if prune else "")
            results.append(SyncEntry(summary.path.name, "extra", detail))
    return SyncResult(manifest, tuple(results), check_only, prune)
