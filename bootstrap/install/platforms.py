"""Target platforms as uv names them (`x86_64-unknown-linux-gnu`), and their PEP 508 markers.

Locks, accelerator choices and wheelhouses all speak of "a Python X.Y on a platform"; this
module is the one place that names a platform and says what markers it has.
"""

from __future__ import annotations

import platform as host
import sys
from dataclasses import dataclass

from bootstrap.system.errors import UsageError


def host_platform() -> str:
    """This machine as uv names target platforms (`--python-platform`)."""
    machine = host.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform == "darwin":
        return f"{arch}-apple-darwin"
    if sys.platform == "win32":
        return f"{arch}-pc-windows-msvc"
    return f"{arch}-unknown-linux-gnu"


@dataclass(frozen=True, order=True)
class Target:
    """One machine kind a lock is for: a Python X.Y on a platform (as uv names it)."""

    python: str
    platform: str

    def __str__(self) -> str:
        return f"Python {self.python} on {self.platform}"

    def to_dict(self) -> dict[str, str]:
        return {"python": self.python, "platform": self.platform}

    def environment(self) -> dict[str, str]:
        """PEP 508 marker variables for this target (what our markers test)."""
        system, machine = platform_markers(self.platform)
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "sys_platform": system,
            "platform_system": {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[system],
            "platform_machine": machine or "",
            "os_name": "nt" if system == "win32" else "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }

    def marker(self) -> str:
        system, machine = platform_markers(self.platform)
        parts = [f'python_version == "{self.python}"', f'sys_platform == "{system}"']
        if machine:
            parts.append(f'platform_machine == "{machine}"')
        return " and ".join(parts)


_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_MACHINE = {
    ("linux", "x86_64"): "x86_64",
    ("linux", "aarch64"): "aarch64",
    ("darwin", "x86_64"): "x86_64",
    ("darwin", "aarch64"): "arm64",
    ("win32", "x86_64"): "AMD64",
    ("win32", "aarch64"): "ARM64",
}


def platform_markers(platform: str) -> tuple[str, str | None]:
    """sys_platform and platform_machine for a uv platform name."""
    lowered = platform.lower()
    if "linux" in lowered:
        system = "linux"
    elif "darwin" in lowered or "macos" in lowered:
        system = "darwin"
    elif "windows" in lowered:
        system = "win32"
    else:
        raise UsageError(
            f"--platform {platform!r} is not a platform kboot knows",
            hint="e.g. x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, "
            "aarch64-apple-darwin, x86_64-pc-windows-msvc",
        )
    arch = _ARCH.get(lowered.split("-", maxsplit=1)[0])
    return system, _MACHINE.get((system, arch)) if arch else None
