"""Whether a profile has a build on a target platform at all: said before any resolution.

A lock made from Linux for a Mac or a Windows machine would otherwise fail deep in the
resolver (`cntk==2.7.post2 has no wheels with a matching platform tag`), or worse,
succeed with something that does not work there: `tensorflow[and-cuda]` for Windows
locks the CUDA libraries next to a TensorFlow that never uses them (no GPU on native
Windows since 2.10). `no_build` is a pure function of the profile's requirements and the
target, so it is tested over a table; the facts are the wheels each project publishes
(checked by resolving from Linux for each platform, 2026-12):

- CNTK 2.7 (the last) has wheels for Linux and Windows x86_64 only; PlaidML 0.7 (the
  last) for x86_64 only.
- CPython before 3.8 has no Apple-silicon build from python.org, and NumPy and SciPy
  publish no arm64 macOS wheels for it (Theano, CNTK and PlaidML profiles need 3.6/3.7).
- JAX's CUDA plugins and TensorFlow's `[and-cuda]` are Linux only.
- tensorflow-metal and jax-metal are macOS only; tensorflow-metal has no wheels past
  Python 3.12 and is not maintained (last release 2025-01-31; kboot never adds it).
- Intel Macs: the last builds are torch 2.2.2, tensorflow 2.16.2 and jaxlib 0.4.38.
- Windows on ARM64: TensorFlow and jaxlib publish no wheels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.install.platforms import Target, platform_markers
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import UsageError

LINUX_X86, WINDOWS_X86 = ("linux", "x86_64"), ("win32", "AMD64")
MAC_ARM, MAC_X86, WINDOWS_ARM = ("darwin", "arm64"), ("darwin", "x86_64"), ("win32", "ARM64")

#: Packages built for some platforms only: where they have wheels, and why not elsewhere.
ONLY_ON: dict[str, tuple[frozenset[tuple[str, str]], str]] = {
    "cntk": (
        frozenset({LINUX_X86, WINDOWS_X86}),
        "CNTK 2.7 (the last release) was built for Linux and Windows x86_64 only",
    ),
    "plaidml": (
        frozenset({LINUX_X86, MAC_X86, WINDOWS_X86}),
        "PlaidML 0.7 (the last release) was built for x86_64 only",
    ),
    "jax-metal": (frozenset({MAC_ARM}), "jax-metal is for Apple silicon Macs only"),
}
ONLY_ON["plaidml-keras"] = ONLY_ON["plaidml"]  # pure Python, over plaidml
#: Only on one operating system (any machine): sys_platform and why.
ONLY_ON_SYSTEM: Mapping[str, tuple[str, str]] = {
    "tensorflow-metal": ("darwin", "tensorflow-metal is for macOS only"),
    **{
        f"jax-cuda{n}-{part}": ("linux", f"jax-cuda{n}-{part} (JAX's CUDA) is for Linux only")
        for n in (12, 13)
        for part in ("plugin", "pjrt")
    },
}
#: The last version built for a platform (nothing newer has wheels there).
LAST_BUILT: Mapping[tuple[str, tuple[str, str]], str] = {
    ("torch", MAC_X86): "2.2.2",
    ("tensorflow", MAC_X86): "2.16.2",
    ("jax", MAC_X86): "0.4.38",
    ("jaxlib", MAC_X86): "0.4.38",
}
#: No build at all on a platform.
NEVER_ON: Mapping[tuple[str, tuple[str, str]], str] = {
    ("tensorflow", WINDOWS_ARM): "TensorFlow publishes no Windows ARM64 wheels",
    ("tensorflow-cpu", WINDOWS_ARM): "TensorFlow publishes no Windows ARM64 wheels",
    ("jax", WINDOWS_ARM): "jaxlib publishes no Windows ARM64 wheels",
    ("jaxlib", WINDOWS_ARM): "jaxlib publishes no Windows ARM64 wheels",
}
CUDA_ELSEWHERE = {
    "win32": "no CUDA build for native Windows (TensorFlow since 2.10, JAX ever): use WSL2, "
    "or the CPU build",
    "darwin": "macOS has no CUDA: the CPU build (torch also uses Apple GPUs through MPS)",
}
#: tensorflow-metal's newest wheels are for CPython 3.12.
METAL_PYTHON = (3, 12)


def no_build(profile: Profile, target: Target) -> str | None:
    """Why `profile` cannot be built for `target` (one sentence), or None where it can."""
    system, machine = platform_markers(target.platform)
    where = (system, machine or "")
    python = _python(target.python)
    markers = target.environment()
    for requirement in _requirements(profile.requirements()):
        if requirement.marker is not None and not requirement.marker.evaluate(markers):
            continue  # not installed there
        why = _requirement_problem(requirement, system, where, python)
        if why:
            return f"{requirement}: {why}"
    if where == MAC_ARM and python is not None and python < (3, 8):
        return (
            f"Python {target.python} predates Apple silicon: no CPython build for it, and "
            "NumPy and SciPy publish no arm64 macOS wheels for it (an Intel Mac, "
            "x86_64-apple-darwin, or Rosetta has them)"
        )
    return None


def _requirement_problem(  # noqa: PLR0911  # one answer for each fact above
    requirement: Requirement, system: str, where: tuple[str, str], python: tuple[int, int] | None
) -> str | None:
    name = canonicalize_name(requirement.name)
    extras = {canonicalize_name(extra) for extra in requirement.extras}
    if name in ONLY_ON and where not in ONLY_ON[name][0]:
        return ONLY_ON[name][1]
    if name in ONLY_ON_SYSTEM and system != ONLY_ON_SYSTEM[name][0]:
        return ONLY_ON_SYSTEM[name][1]
    if name == "tensorflow-metal" and python is not None and python > METAL_PYTHON:
        return (
            "tensorflow-metal has no wheels past Python 3.12 (last release 2025-01-31, "
            "reported broken with TensorFlow 2.21): plain tensorflow runs on the CPU"
        )
    if system != "linux" and (
        (name == "jax" and any(extra.startswith("cuda") for extra in extras))
        or (name == "tensorflow" and "and-cuda" in extras)
    ):
        return CUDA_ELSEWHERE[system]
    if (name, where) in NEVER_ON:
        return NEVER_ON[(name, where)]
    last = LAST_BUILT.get((name, where))
    if last and not _admits_up_to(requirement, Version(last)):
        return f"{name} {last} was the last release built for this platform"
    return None


def _admits_up_to(requirement: Requirement, last: Version) -> bool:
    """Whether the requirement admits `last` or a version the specifier names below it."""
    candidates = [last]
    for spec in requirement.specifier:
        try:
            version = Version(spec.version.removesuffix(".*"))
        except InvalidVersion:
            continue
        if version <= last:
            candidates.append(version)
    return any(requirement.specifier.contains(v, prereleases=True) for v in candidates)


def _requirements(lines: Iterable[str]) -> Iterable[Requirement]:
    for line in lines:
        try:
            yield Requirement(line)
        except InvalidRequirement:  # the profile loader said so already; not ours to judge
            continue


def _python(version: str) -> tuple[int, int] | None:
    major, _, minor = version.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def check_buildable(profile: Profile, target: Target) -> None:
    """A UsageError where `profile` has no build for `target` (before any resolution)."""
    why = no_build(profile, target)
    if why:
        raise UsageError(
            f"profile {profile.name} has no build for {target}: {why}",
            hint="lock it for another platform or Python (--platform, --python-version), "
            "or change the profile's packages",
        )
