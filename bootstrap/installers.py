"""Two installers behind one small interface: uv (default) and the environment's pip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bootstrap.environment import VirtualEnv
from bootstrap.errors import CommandError, InstallError
from bootstrap.profiles import Sources
from bootstrap.runner import CommandResult, run

INSTALLERS = ("uv", "pip")


class Installer(Protocol):
    name: str
    needs_pip: bool

    def install_command(
        self, env: VirtualEnv, requirements: Sequence[str], sources: Sources
    ) -> list[str]: ...


def source_args(sources: Sources) -> list[str]:
    """Index options; the same spelling works for uv pip and pip."""
    args: list[str] = []
    if sources.index_url:
        args += ["--index-url", sources.index_url]
    for url in sources.extra_index_urls:
        args += ["--extra-index-url", url]
    for link in sources.find_links:
        args += ["--find-links", link]
    return args


@dataclass(frozen=True)
class UvInstaller:
    name: str = "uv"
    needs_pip: bool = False

    def install_command(
        self, env: VirtualEnv, requirements: Sequence[str], sources: Sources
    ) -> list[str]:
        from uv import find_uv_bin

        return [
            find_uv_bin(),
            "pip",
            "install",
            "--python",
            str(env.python),
            *source_args(sources),
            *requirements,
        ]


@dataclass(frozen=True)
class PipInstaller:
    name: str = "pip"
    needs_pip: bool = True

    def install_command(
        self, env: VirtualEnv, requirements: Sequence[str], sources: Sources
    ) -> list[str]:
        return [
            str(env.python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *source_args(sources),
            *requirements,
        ]


def get_installer(name: str) -> Installer:
    if name == "pip":
        return PipInstaller()
    return UvInstaller()


_NOT_FOUND = (
    "No solution found",
    "No matching distribution",
    "Could not find a version",
    "not found in the package registry",
    "ResolutionImpossible",
    "conflicting dependencies",
)
_NETWORK = (
    "Failed to fetch",
    "dns error",
    "Connection refused",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "timed out",
    "Network is unreachable",
    "error sending request",
)


def install(
    installer: Installer,
    env: VirtualEnv,
    requirements: Sequence[str],
    sources: Sources,
    *,
    python_version: str,
) -> CommandResult:
    cmd = installer.install_command(env, requirements, sources)
    try:
        return run(cmd, cwd=env.root, what=f"installing with {installer.name}")
    except CommandError as exc:
        text = exc.output_tail
        if any(marker in text for marker in _NETWORK):
            hint = (
                "the package index could not be reached: check the network or proxy, "
                "or point --index-url / --find-links at a mirror or a local wheel folder"
            )
        elif any(marker in text for marker in _NOT_FOUND):
            hint = (
                "a requirement cannot be met: check the names and versions in the profile "
                f"and that wheels exist for Python {python_version} on this platform"
            )
        else:
            hint = "see the installer's output above; rerun with --debug for the full command"
        raise InstallError(
            f"installing {', '.join(requirements)} with {installer.name} failed "
            f"(exit code {exc.returncode})",
            hint=hint,
            details=text,
        ) from None
