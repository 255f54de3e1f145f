"""Which build of TensorFlow, JAX or PyTorch fits this machine: CPU, or CUDA 12 or 13.

Reading the machine (`read_host`) and deciding (`choose`, `build_for`) are separate: the
decision is a pure function of what was read, so it is tested over a table of drivers
and platforms, and reading takes a root folder so tests give it a fake `/proc`.

The driver is read the way uv reads it for `--torch-backend=auto`:
`/proc/driver/nvidia/version`, else `nvidia-smi` (time-boxed). A driver supports the
CUDA generations whose minimum driver it meets (NVIDIA's CUDA toolkit release notes):
CUDA 13 from 580, CUDA 12 from 525.60.13 (Windows 528.33); current TensorFlow, JAX and
PyTorch ship CUDA 12 and 13 builds only, so an older driver gets the CPU build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bootstrap.install.platforms import host_platform, platform_markers
from bootstrap.profiles.model import ACCELERATED_BACKENDS, ACCELERATORS, Profile
from bootstrap.system.errors import UsageError

FRAMEWORKS = ACCELERATED_BACKENDS
#: The oldest driver of each CUDA generation that current frameworks build for.
LINUX_CUDA_DRIVERS: tuple[tuple[int, tuple[int, ...]], ...] = ((13, (580,)), (12, (525, 60, 13)))
WINDOWS_CUDA_DRIVERS: tuple[tuple[int, tuple[int, ...]], ...] = ((13, (580,)), (12, (528, 33)))
TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
TORCH_CUDA_TAG = {12: "cu128", 13: "cu130"}
#: Default version ranges of the backend packages kboot picks (Keras 3 needs TF >= 2.16).
DEFAULT_SPECIFIERS = {"tensorflow": ">=2.16,<3", "jax": ">=0.4.30", "torch": ">=2.6"}


@dataclass(frozen=True)
class HostAccelerators:
    """What this machine says about its accelerators (nothing decided yet)."""

    platform: str  # as uv names it, e.g. x86_64-unknown-linux-gnu
    driver: str | None = None  # NVIDIA driver version, e.g. "580.159.04"
    source: str | None = None  # where the driver version came from
    problem: str | None = None  # a driver that is there but could not be read
    amd: bool = False  # an AMD GPU with the ROCm kernel driver
    read: bool = True  # False: another machine (a lock for a platform), nothing was read

    def describe(self) -> str:
        if not self.read:
            return f"{self.platform} (another machine: nothing read here)"
        if self.driver:
            return f"NVIDIA driver {self.driver} ({self.source})"
        if self.problem:
            return self.problem
        return "no NVIDIA driver found (no /proc/driver/nvidia/version, no nvidia-smi)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "driver": self.driver,
            "driver_source": self.source,
            "problem": self.problem,
            "amd": self.amd,
        }


_DRIVER = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)*)")


def parse_driver_version(text: str) -> str | None:
    """The version in /proc/driver/nvidia/version (both the proprietary and open modules)."""
    found = _DRIVER.search(text)
    return found.group(1) if found else None


def read_host(  # noqa: PLR0911  # one answer for each thing the machine says
    *,
    root: Path = Path("/"),
    platform: str | None = None,
    nvidia_smi: str | None = None,
    timeout: float = 3.0,
) -> HostAccelerators:
    """Read the NVIDIA driver (and whether there is an AMD GPU) from `root`."""
    platform = platform or host_platform()
    version_file = root / "proc" / "driver" / "nvidia" / "version"
    amd = (root / "dev" / "kfd").exists() or (root / "sys" / "module" / "amdgpu").exists()
    try:
        text = version_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = None
    if text is not None:
        driver = parse_driver_version(text)
        if driver:
            return HostAccelerators(platform, driver, str(version_file), amd=amd)
        problem = f"{version_file} says no driver version kboot can read ({text.strip()[:80]!r})"
        return HostAccelerators(platform, problem=problem, amd=amd)
    smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
    if not smi:
        return HostAccelerators(platform, amd=amd)
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return HostAccelerators(
            platform, problem=f"nvidia-smi did not answer within {timeout:g} s", amd=amd
        )
    except OSError as exc:
        return HostAccelerators(platform, problem=f"nvidia-smi failed: {exc.strerror}", amd=amd)
    versions = re.findall(r"^\s*(\d+\.\d+(?:\.\d+)*)\s*$", out.stdout, re.MULTILINE)
    if out.returncode == 0 and versions:
        return HostAccelerators(platform, versions[0], "nvidia-smi", amd=amd)
    said = (out.stderr or out.stdout).strip().splitlines()
    reason = said[0][:100] if said else f"exit code {out.returncode}"
    return HostAccelerators(platform, problem=f"nvidia-smi found no driver ({reason})", amd=amd)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def cuda_generations(driver: str, platform: str) -> tuple[int, ...]:
    """The CUDA generations `driver` runs, newest first."""
    system, _ = platform_markers(platform)
    table = WINDOWS_CUDA_DRIVERS if system == "win32" else LINUX_CUDA_DRIVERS
    found = _version_tuple(driver)
    return tuple(generation for generation, minimum in table if found >= minimum)


@dataclass(frozen=True)
class Choice:
    """The build kboot picked, and why (for the output, the record and --json)."""

    requested: str
    kind: str  # "cpu" | "cuda"
    cuda: int | None
    reason: str
    notes: tuple[str, ...] = ()
    host: HostAccelerators | None = None

    @property
    def label(self) -> str:
        return f"cuda-{self.cuda}" if self.kind == "cuda" else "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "chosen": self.label,
            "reason": self.reason,
            "notes": list(self.notes),
            "host": self.host.to_dict() if self.host else None,
        }


#: Where each framework ships CUDA builds: (sys_platform, machine) pairs.
CUDA_PLATFORMS: Mapping[str, frozenset[tuple[str, str | None]]] = {
    "jax": frozenset({("linux", "x86_64"), ("linux", "aarch64")}),
    "torch": frozenset({("linux", "x86_64"), ("linux", "aarch64"), ("win32", "AMD64")}),
    "tensorflow": frozenset({("linux", "x86_64")}),
}
ELSEWHERE = {
    ("darwin", "jax"): "Apple GPUs: jax-metal is experimental; JAX runs on the CPU here",
    ("darwin", "torch"): "Apple GPUs: PyTorch's default macOS build uses them through MPS",
    ("darwin", "tensorflow"): "Apple GPUs: kboot does not add tensorflow-metal (unmaintained: "
    "no wheels past Python 3.12, reported broken with TensorFlow 2.21); TensorFlow runs on "
    "the CPU here",
    ("win32", "jax"): "JAX has no CUDA build for Windows: use WSL2 for the GPU",
    ("win32", "tensorflow"): "TensorFlow has no GPU build for Windows since 2.10: use WSL2",
}
AMD_NOTES = {
    "torch": "an AMD GPU: PyTorch's ROCm wheels (https://download.pytorch.org/whl/rocm6.4) "
    "would use it; kboot builds for NVIDIA CUDA only",
    "jax": "an AMD GPU: jax[rocm] would use it; kboot builds for NVIDIA CUDA only",
    "tensorflow": "an AMD GPU: tensorflow-rocm would use it; kboot builds for NVIDIA CUDA only",
}


def choose(requested: str, framework: str, host: HostAccelerators) -> Choice:  # noqa: PLR0911
    """The build for `framework` on `host`: a pure function of what was read."""
    if requested not in ACCELERATORS:
        raise UsageError(f"accelerator {requested!r}: expected one of {', '.join(ACCELERATORS)}")
    system, machine = platform_markers(host.platform)
    notes: list[str] = []
    if (system, framework) in ELSEWHERE:
        notes.append(ELSEWHERE[(system, framework)])
    if host.amd and not host.driver:
        notes.append(AMD_NOTES[framework])
    ships_cuda = (system, machine) in CUDA_PLATFORMS[framework]
    supported = cuda_generations(host.driver, host.platform) if host.driver else ()
    if requested == "cpu":
        return Choice(requested, "cpu", None, "asked for the CPU build", tuple(notes), host)
    if requested.startswith("cuda"):
        if not ships_cuda:
            raise UsageError(
                f"{framework} ships no CUDA build for {host.platform}",
                hint="; ".join(notes) or "use --accelerator cpu",
            )
        wanted = int(requested.split("-")[1]) if "-" in requested else None
        if wanted is None:
            generation = supported[0] if supported else 12
            why = (
                f"{host.describe()} runs CUDA {generation}"
                if supported
                else f"asked for CUDA; {host.describe()}, so CUDA 12, which every driver "
                "from 525.60.13 runs (ask for cuda-13 for CUDA 13)"
            )
        else:
            generation = wanted
            why = f"asked for CUDA {wanted}"
            if host.driver and wanted not in supported:
                notes.append(
                    f"{host.describe()} does not run CUDA {wanted}: update the driver "
                    f"(CUDA {wanted} needs {_minimum(wanted, host.platform)} or newer)"
                )
        return Choice(requested, "cuda", generation, why, tuple(notes), host)
    # auto
    if not host.read:
        reason = "auto on another machine: the CPU build (use --accelerator cuda for its GPUs)"
        return Choice(requested, "cpu", None, reason, tuple(notes), host)
    if not host.driver:
        if host.problem:
            notes.append(host.problem)
        return Choice(
            requested, "cpu", None, f"{host.describe()}: the CPU build", tuple(notes), host
        )
    if not ships_cuda:
        reason = f"{host.describe()}, but {framework} has no CUDA build for {host.platform}"
        return Choice(requested, "cpu", None, reason, tuple(notes), host)
    if not supported:
        notes.append(
            f"driver {host.driver} is too old for any current CUDA build (CUDA 12 needs "
            f"{_minimum(12, host.platform)}): update it to use the GPU"
        )
        return Choice(requested, "cpu", None, f"{host.describe()}: too old, CPU build",
                      tuple(notes), host)  # fmt: skip
    generation = supported[0]
    reason = f"{host.describe()} runs CUDA {', '.join(map(str, supported))}: CUDA {generation}"
    return Choice(requested, "cuda", generation, reason, tuple(notes), host)


def _minimum(generation: int, platform: str) -> str:
    system, _ = platform_markers(platform)
    table = dict(WINDOWS_CUDA_DRIVERS if system == "win32" else LINUX_CUDA_DRIVERS)
    return ".".join(map(str, table[generation]))


@dataclass(frozen=True)
class Build:
    """What to install for a choice: the backend's requirement and where it comes from."""

    requirement: str
    extra_index_urls: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


def build_for(framework: str, choice: Choice, specifier: str, platform: str) -> Build:  # noqa: PLR0911
    """The package (and index) of `framework` for `choice`: a pure function."""
    system, _ = platform_markers(platform)
    cuda = choice.cuda if choice.kind == "cuda" else None
    if framework == "jax":
        return Build(f"jax[cuda{cuda}]{specifier}" if cuda else f"jax{specifier}")
    if framework == "torch":
        if cuda:
            return Build(f"torch{specifier}", (TORCH_INDEX.format(tag=TORCH_CUDA_TAG[cuda]),))
        if system in ("darwin", "win32"):  # the default index's torch there is the CPU
            return Build(f"torch{specifier}")  # build (macOS: with MPS for Apple GPUs)
        return Build(f"torch{specifier}", (TORCH_INDEX.format(tag="cpu"),))
    if framework == "tensorflow":
        if cuda:
            return Build(f"tensorflow[and-cuda]{specifier}")
        if (system == "linux" and platform.startswith(("x86_64", "amd64"))) or system == "win32":
            return Build(f"tensorflow-cpu{specifier}")
        return Build(f"tensorflow{specifier}")  # macOS, Linux aarch64: the CPU build
    raise UsageError(f"no accelerator choice for backend {framework!r}")


def apply(profile: Profile, choice: Choice, platform: str) -> Profile:
    """The profile with the chosen build of its backend in `packages` (and its index)."""
    framework = profile.backend
    kept, specifier = [], DEFAULT_SPECIFIERS[framework]
    providers = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "jax", "jaxlib", "torch"}
    for package in profile.packages:
        requirement = Requirement(package)
        if canonicalize_name(requirement.name) in providers:
            if canonicalize_name(requirement.name) != "jaxlib" and str(requirement.specifier):
                specifier = str(requirement.specifier)
            continue
        kept.append(package)
    build = build_for(framework, choice, specifier, platform)
    sources = profile.sources
    if build.extra_index_urls:
        sources = replace(
            sources,
            extra_index_urls=tuple(
                dict.fromkeys((*build.extra_index_urls, *sources.extra_index_urls))
            ),
        )
    return replace(
        profile,
        packages=(build.requirement, *kept),
        sources=sources,
        gpu=choice.kind == "cuda",
    )


def resolve(
    profile: Profile,
    requested: str | None,
    *,
    host: HostAccelerators | None = None,
    platform: str | None = None,
) -> tuple[Profile, Choice | None]:
    """Apply the accelerator choice (the option, else the profile's key) to a profile."""
    wanted = requested or profile.accelerator
    if not wanted:
        return profile, None
    if profile.backend not in FRAMEWORKS:
        raise UsageError(
            f"--accelerator is for tensorflow, jax and torch profiles; {profile.name} uses "
            f"{profile.backend}"
        )
    if host is None:
        target = platform or host_platform()
        host = read_host() if target == host_platform() else HostAccelerators(target, read=False)
    choice = choose(wanted, profile.backend, host)
    return apply(profile, choice, host.platform), choice


def host_environment_note(environ: Mapping[str, str]) -> str | None:
    """CUDA_VISIBLE_DEVICES hides every GPU: worth a line next to a CUDA choice."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None and value.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={value!r} hides every GPU from the backends"
    return None
