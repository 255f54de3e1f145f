"""Two installers behind one small interface: uv (default) and the environment's pip.

Credentials never go on an installer's command line (every user of the machine sees it in
`ps`): sources that carry them travel in the installer's environment variables
(`source_environ`), requirements that carry them (`pkg @ https://user:token@host/x.whl`)
in a requirements file, mode 0600, in a private temporary folder (`install`).

A credential in a query string (`?token=...`) is one the installer cannot know for a
secret: uv and pip would keep it in the URLs their caches record, in files other users
may be able to read. An install that has one therefore runs without the cache
(`--no-cache` / `--no-cache-dir`): it downloads again each time, and leaves nothing. A
token in the user-info part (`https://user:token@host`) is the supported way: uv and pip
know it for a credential and mask it in what they print and record. What remains: the
installer's processes hold the credentials in memory and in their environment (readable
by root and by the same user only), and a token written into a lock file or a profile is
as private as that file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bootstrap.install.failures import (
    BAD_INDEX_URL,
    CACHE_NOT_WRITABLE,
    CONFLICT,
    FIND_LINKS_MISSING,
    HASH_MISMATCH,
    NETWORK,
    NO_SPACE,
    NOT_FOUND,
    NOT_WRITABLE,
    OTHER,
    TOO_MANY_FILES,
    Cause,
    failure_cause,
)
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.model import Sources
from bootstrap.system.errors import CommandError, InstallError, UsageError
from bootstrap.system.process_lock import keep_private, wait_until_free
from bootstrap.system.redaction import has_credentials, has_query_secret, redact
from bootstrap.system.runner import CommandResult, isolation_flags, log, run

INSTALLERS = ("uv", "pip")
#: The longest kboot (and uv, through UV_LOCK_TIMEOUT) waits for uv's lock on an
#: environment, `<env>/.lock`, that another process holds.
UV_LOCK_WAIT = 15.0


class Installer(Protocol):
    @property
    def name(self) -> str:
        """ "uv" or "pip": also which variables carry credentialed sources."""

    @property
    def needs_pip(self) -> bool: ...

    @property
    def sees_system_site(self) -> bool:
        """True when it sees the base interpreter's packages in a --system-site-packages env."""

    @property
    def no_cache(self) -> str:
        """The flag that keeps this install out of the installer's cache."""

    def install_command(
        self, env: VirtualEnv, requirements: Sequence[str], sources: Sources
    ) -> list[str]: ...


def source_args(sources: Sources) -> list[str]:
    """Index options for URLs without credentials; the same spelling works for uv and pip.
    (Those with credentials go in `source_environ`: a command line is visible to every
    user of the machine, a process environment is not.)"""
    args: list[str] = []
    if sources.offline:
        args.append("--no-index")
    if sources.index_url and not has_credentials(sources.index_url):
        args += ["--index-url", sources.index_url]
    if not any(map(has_credentials, sources.extra_index_urls)):
        for url in sources.extra_index_urls:
            args += ["--extra-index-url", url]
    if not any(map(has_credentials, sources.find_links)):
        for link in sources.find_links:
            args += ["--find-links", link]
    return args


#: The variables uv and pip read for each source option.
_SOURCE_VARIABLES = {
    "uv": ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", " ", ","),
    "pip": ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", " ", " "),
}


def source_environ(sources: Sources, tool: str) -> dict[str, str]:
    """The sources whose URLs carry credentials, as the tool's environment variables."""
    index, extra, links, extra_sep, links_sep = _SOURCE_VARIABLES[tool]
    environ = {}
    if sources.index_url and has_credentials(sources.index_url):
        environ[index] = sources.index_url
    if any(map(has_credentials, sources.extra_index_urls)):
        environ[extra] = extra_sep.join(sources.extra_index_urls)
    if any(map(has_credentials, sources.find_links)):
        environ[links] = links_sep.join(sources.find_links)
    return environ


@dataclass(frozen=True)
class UvInstaller:
    name: str = "uv"
    needs_pip: bool = False
    sees_system_site: bool = False  # uv reads only the venv's own site-packages (uv#4466)
    no_cache: str = "--no-cache"

    def install_command(
        self, env: VirtualEnv, requirements: Sequence[str], sources: Sources
    ) -> list[str]:
        from uv import find_uv_bin

        return [
            find_uv_bin(),
            "pip",
            "install",
            # a uv.toml in the working folder or above it (a planted /tmp/uv.toml) must not
            # change where packages come from: the profile and UV_* variables say that
            "--no-config",
            # bytecode now, as pip does: where PYTHONDONTWRITEBYTECODE is set or users cannot
            # write the environment (a lab's shared one) none is ever written, and every
            # `import keras` pays ~3 s; compiled here, the smoke test's imports gain too.
            # uv's compile step needs Python 3.7 (py_compile.PycInvalidationMode)
            *([] if env.version is not None and env.version < (3, 7) else ["--compile-bytecode"]),
            "--python",
            str(env.python),
            *(["--offline"] if sources.offline else []),
            *source_args(sources),
            *requirements,
        ]


@dataclass(frozen=True)
class PipInstaller:
    name: str = "pip"
    needs_pip: bool = True
    sees_system_site: bool = True
    no_cache: str = "--no-cache-dir"

    def install_command(
        self, env: VirtualEnv, requirements: Sequence[str], sources: Sources
    ) -> list[str]:
        return [
            str(env.python),
            *isolation_flags(env.version),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *source_args(sources),
            *requirements,
        ]


def check_installer(name: str) -> str:
    """An installer name from the command line, refused before anything is touched."""
    if name not in INSTALLERS:
        raise UsageError(f"--installer {name!r}: expected one of {', '.join(INSTALLERS)}")
    return name


def get_installer(name: str) -> Installer:
    if name == "pip":
        return PipInstaller()
    if name == "uv":
        return UvInstaller()
    raise UsageError(f"--installer {name!r}: expected one of {', '.join(INSTALLERS)}")


def satisfied_by(requirement: str, available: Mapping[str, str]) -> str | None:
    """The installed version that meets `requirement`, if any (extras are not checked)."""
    req = Requirement(requirement)
    version = available.get(canonicalize_name(req.name))
    if version is not None and req.specifier.contains(version, prereleases=True):
        return version
    return None


@dataclass(frozen=True)
class InstallPlan:
    """What to install, and what the base interpreter already provides."""

    requirements: tuple[str, ...]
    reused: Mapping[str, str]  # requirement -> version found in the base interpreter
    constraints: Mapping[str, str]  # name -> version pinned so the base's packages still fit


def plan_install(
    installer: Installer, requirements: Sequence[str], base_packages: Mapping[str, str] | None
) -> InstallPlan:
    """Requirements the base already meets are dropped for an installer that cannot see them.

    pip skips them by itself. uv would reinstall them (and a CUDA torch is gigabytes), so
    they are left out and everything the base has is pinned as a constraint: what uv adds
    must fit the versions the reused packages were built against.
    """
    if not base_packages or installer.sees_system_site:
        return InstallPlan(tuple(requirements), {}, {})
    reused = {r: v for r in requirements if (v := satisfied_by(r, base_packages)) is not None}
    todo = tuple(r for r in requirements if r not in reused)
    return InstallPlan(todo, reused, dict(base_packages))


def install(
    installer: Installer,
    env: VirtualEnv,
    requirements: Sequence[str],
    sources: Sources,
    *,
    python_version: str,
    constraints: Mapping[str, str] | None = None,
    require_hashes: bool = False,
    no_deps: bool = False,
    added: Collection[str] = (),
) -> CommandResult | None:
    if not requirements:
        return None
    # a requirement with credentials goes in a private file, never on the command line
    listed = [r for r in requirements if has_credentials(r)]
    cmd = installer.install_command(env, [r for r in requirements if r not in listed], sources)
    if require_hashes:
        cmd.append("--require-hashes")
    if no_deps:  # a lock over a base Python: the base has the rest
        cmd.append("--no-deps")
    if leaks_into_cache(requirements, sources):
        cmd.append(installer.no_cache)
    secret = source_environ(sources, installer.name)
    if installer.name == "uv":
        secret = {**secret, **uv_lock_guard(env)}
    with tempfile.TemporaryDirectory(prefix="kboot-") as tmp:  # mode 0700: this user's only
        if listed:
            cmd += ["-r", str(write_private(Path(tmp) / "requirements.txt", listed))]
        if constraints:
            pins = Path(tmp) / "constraints.txt"
            pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
            cmd += ["--constraint", str(pins)]
        return _run_install(
            installer, cmd, Path(tmp), requirements, python_version, sources, secret, added
        )


def uv_lock_guard(env: VirtualEnv) -> dict[str, str]:
    """Before uv runs into `env`: its lock file `<env>/.lock` made (or kept) 0600, so no
    other user can open and hold it (uv would make it 0666), and a bounded wait for a holder
    already there, named in the error. Returns the variable that bounds uv's own wait (uv
    then goes on without the lock, warning, rather than hang)."""
    lock = env.root / ".lock"
    keep_private(lock)
    wait_until_free(lock, wait=UV_LOCK_WAIT, what=f"uv cannot install into {env.root}")
    return {"UV_LOCK_TIMEOUT": str(int(UV_LOCK_WAIT))}


def leaks_into_cache(requirements: Sequence[str], sources: Sources) -> bool:
    """Whether a URL of this install carries a query-string credential, which the
    installer's cache would keep (see the module's docstring)."""
    urls = (
        *requirements,
        *([sources.index_url] if sources.index_url else []),
        *sources.extra_index_urls,
        *sources.find_links,
    )
    return any(map(has_query_secret, urls))


def write_private(path: Path, lines: Sequence[str]) -> Path:
    """A new file only this user can read (0600 from its creation, never through a link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as out:
        out.write("".join(f"{line}\n" for line in lines))
    return path


def _run_install(
    installer: Installer,
    cmd: list[str],
    private: Path,
    requirements: Sequence[str],
    python_version: str,
    sources: Sources,
    secret: Mapping[str, str],
    added: Collection[str],
) -> CommandResult:
    environ = {**os.environ, **secret} if secret else None
    for key, value in secret.items():
        log.debug("and in its environment: %s=%s", key, redact(value))
    locked = list(requirements[:1]) == ["-r"]
    what = f"the lock {requirements[1]}" if locked else redact(", ".join(requirements))
    try:  # from a private folder: nothing in the user's folder is imported or read
        return run(cmd, cwd=private, env=environ, what=f"installing with {installer.name}")
    except CommandError as exc:
        raise install_error(
            exc,
            f"installing {what} with {installer.name} failed",
            target=f"Python {python_version} on this platform",
            sources=sources,
            added=added,
        ) from None


def install_error(
    exc: CommandError,
    failed: str,
    *,
    target: str,
    sources: Sources,
    added: Collection[str] = (),
    unknown: str | None = None,
    other_hint: str = "see the installer's output above; rerun with --debug for the full command",
) -> InstallError:
    """An installer's failure as kboot's error: its message ends with the cause the
    installer stated (`failure_cause`), and the hint fits that cause. `added` names the
    packages kboot put in the install itself (pip, ipykernel): a mirror that lacks one is
    not the profile's fault. `target` ("Python 3.11 on this platform") is what the wheels
    were sought for; `unknown` ends the message when the installer states no cause, and
    `other_hint` is the hint for a cause without one of its own."""
    cause = failure_cause(exc.output)
    line = cause.line if cause else unknown or f"exit code {exc.returncode}"
    text = exc.output_tail
    if cause is not None and cause.kind == NOT_FOUND and sources.offline:
        return InstallError(
            f"{failed}: {cause.subject} is not in the wheelhouse "
            f"{', '.join(sources.find_links)}, and --offline allows no other source",
            hint="download it there again (kboot download PROFILE --lock LOCK --dest DIR) "
            "on a machine with a network",
            details=text,
        )
    return InstallError(
        f"{failed}: {line}",
        hint=_hint(cause, target, sources, added) or other_hint,
        # diagnosed: pip's own traceback for a full disk adds nothing
        details=None if cause is not None and cause.kind == NO_SPACE else text,
    )


def _hint(  # noqa: PLR0911 - one answer per cause
    cause: Cause | None, target: str, sources: Sources, added: Collection[str]
) -> str | None:
    kind = cause.kind if cause else OTHER
    if kind == HASH_MISMATCH:
        return (
            "the file does not match the lock's hashes (tampered with, or replaced on the "
            "index), so it was refused: fetch the files again (kboot download) or make the "
            "lock again (kboot lock)"
        )
    if kind == NO_SPACE:
        return "free some space (or point TMPDIR and the installer's cache elsewhere)"
    if kind == TOO_MANY_FILES:
        return "raise the limit of open files (ulimit -n 4096) and run it again"
    if kind == CACHE_NOT_WRITABLE:
        return (
            "make that folder writable, or point the installer's cache at one you can "
            "write (UV_CACHE_DIR for uv, PIP_CACHE_DIR for pip)"
        )
    if kind == NOT_WRITABLE:
        return "fix that file's permissions, or build where you can write"
    if kind == FIND_LINKS_MISSING:
        return (
            "make that folder (kboot download fills one), or fix --find-links / the "
            "find_links of the profile or manifest"
        )
    if kind == BAD_INDEX_URL:
        return "give an index such as https://HOST/simple or file:///path/to/simple"
    if kind == NETWORK:
        return (
            "the package index could not be reached: check the network or proxy, "
            "or point --index-url / --find-links at a mirror or a local wheel folder"
        )
    if cause is not None and kind in (NOT_FOUND, CONFLICT):
        index = f" (--index-url {redact(sources.index_url)})" if sources.index_url else ""
        package = cause.package
        if package is not None and canonicalize_name(package) in {
            canonicalize_name(Requirement(requirement).name) for requirement in added
        }:
            return (
                f"kboot adds {package} to this environment itself; the package index"
                f"{index} does not serve it: add it to your mirror or wheel folder"
            )
        return (
            "a requirement cannot be met: check the names and versions in the profile "
            f"and that wheels exist for {target}{index}"
        )
    return None


#: The newest pip that still runs on each Python that virtualenv can no longer seed.
LEGACY_PIP: Mapping[tuple[int, int], str] = {
    (3, 5): "pip<21",
    (3, 6): "pip<22",
    (3, 7): "pip<24.1",
    (3, 8): "pip<25.1",
}


def legacy_pip(version: Version) -> str | None:
    """The pip requirement for a Python older than 3.9 (None: virtualenv seeds pip)."""
    return LEGACY_PIP.get((version.major, version.minor))
