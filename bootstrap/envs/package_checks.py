"""What the packages of an environment (and the machine under them) break: conflicting
distributions, mismatched versions, CUDA builds without a driver to run them, and the GPU
traps users meet (LD_LIBRARY_PATH folders that shadow the wheels' CUDA libraries, a
TensorFlow without its CUDA libraries, two frameworks reserving one GPU's memory).

Pure functions over the inspection probe's report (`_inspect.py`), for `diagnose`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from packaging.version import InvalidVersion, Version

from bootstrap.envs.findings import ERROR, WARNING, Finding
from bootstrap.install.accelerators import CUDA_PLATFORMS, HostAccelerators, cuda_generations
from bootstrap.install.platforms import platform_markers
from bootstrap.profiles.variables import shown


def version_of(text: object) -> Version | None:
    try:
        return Version(text) if isinstance(text, str) and text else None
    except InvalidVersion:
        return None


def package_checks(
    packages: Mapping[str, str],
    keras_v: Version | None,
    host: HostAccelerators,
    report: Mapping[str, Any],
) -> list[Finding]:
    findings = _distribution_checks(packages, keras_v)
    findings += _jax_checks(packages)
    for label, generation in cuda_builds(packages):
        if not host.driver:
            findings.append(
                Finding(
                    WARNING,
                    "cuda-no-driver",
                    f"{label} is a CUDA build, and there is no NVIDIA driver",
                    host.describe(),
                    "it runs on the CPU here, with gigabytes of CUDA libraries "
                    "for nothing: the CPU build fits (kboot create ... --accelerator cpu)",
                )
            )
        elif generation and generation not in cuda_generations(host.driver, host.platform):
            findings.append(
                Finding(
                    ERROR,
                    "driver-too-old",
                    f"{label} needs CUDA {generation}, which driver {host.driver} does not run",
                    host.describe(),
                    "update the NVIDIA driver, or install the build for an older "
                    "CUDA (kboot create ... --accelerator cuda-12)",
                )
            )
    seen: Mapping[str, str | None] = report.get("environ") or {}
    findings += library_shadows(report, packages, seen.get("LD_LIBRARY_PATH"), host)
    findings += _gpu_checks(packages, host, seen)
    return findings


def _distribution_checks(packages: Mapping[str, str], keras_v: Version | None) -> list[Finding]:
    findings = []
    tf_v = version_of(packages.get("tensorflow") or packages.get("tensorflow-cpu"))
    if keras_v is not None and keras_v.major >= 3 and tf_v is not None and tf_v < Version("2.16"):
        findings.append(
            Finding(
                ERROR,
                "tf-too-old",
                f"TensorFlow {tf_v} with Keras {keras_v}",
                "TensorFlow < 2.16 pins keras < 2.16: its tf.keras and Keras 3 break each other",
                "install tensorflow>=2.16 (or keep keras<3 for this TensorFlow)",
            )
        )
    if "tensorflow" in packages and "tensorflow-cpu" in packages:
        keep = " (keep tensorflow: tf-keras requires it)" if "tf-keras" in packages else ""
        findings.append(
            Finding(
                ERROR,
                "tf-twice",
                "tensorflow and tensorflow-cpu are both installed",
                f"tensorflow {packages['tensorflow']}, tensorflow-cpu {packages['tensorflow-cpu']}",
                f"they write the same files: uninstall both, then install one{keep}",
            )
        )
    return findings


def _jax_checks(packages: Mapping[str, str]) -> list[Finding]:
    findings = []
    jax_v, jaxlib_v = version_of(packages.get("jax")), version_of(packages.get("jaxlib"))
    if jax_v is not None and jaxlib_v is not None and jax_v.release[:2] != jaxlib_v.release[:2]:
        findings.append(
            Finding(
                ERROR,
                "jax-jaxlib",
                f"jax {jax_v} with jaxlib {jaxlib_v}",
                "jax and jaxlib come in matching versions",
                f"pip install 'jax=={jax_v}' 'jaxlib=={jax_v}'",
            )
        )
    if jax_v is not None and jaxlib_v is None:
        findings.append(
            Finding(
                ERROR,
                "no-jaxlib",
                "jax without jaxlib",
                f"jax {jax_v}",
                "pip install jax (it brings jaxlib)",
            )
        )
    for name, version in sorted(packages.items()):
        # jax-cuda12-plugin and jax-cuda12-pjrt: jaxlib loads them at run time, and a
        # plugin built for another jaxlib fails there ("Unable to initialize backend 'cuda'")
        part = name.startswith("jax-cuda") and name.endswith(("-plugin", "-pjrt"))
        if part and jaxlib_v is not None and version_of(version) != jaxlib_v:
            generation = name.removeprefix("jax-cuda").split("-")[0]
            findings.append(
                Finding(
                    ERROR,
                    "jax-plugin",
                    f"{name} {version} with jaxlib {jaxlib_v}: the CUDA backend fails at run time",
                    f"{name} must have jaxlib's version; {name} {version}, jaxlib {jaxlib_v}",
                    f"pip install '{name}=={jaxlib_v}' (or 'jax[cuda{generation}]=="
                    f"{jax_v or jaxlib_v}' for the whole matching set)",
                )
            )
    return findings


def cuda_builds(packages: Mapping[str, str]) -> list[tuple[str, int | None]]:
    """CUDA builds among the packages, with their CUDA generation where it shows."""
    builds: list[tuple[str, int | None]] = []
    torch = packages.get("torch")
    if torch and "+cu" in torch:
        digits = torch.split("+cu", 1)[1]
        builds.append((f"torch {torch}", int(digits[:2]) if digits[:2].isdigit() else None))
    for name, version in packages.items():
        if name.startswith("jax-cuda") and name.endswith("plugin"):
            digits = name.removeprefix("jax-cuda").split("-")[0]
            builds.append((f"{name} {version}", int(digits) if digits.isdigit() else None))
    if "tensorflow" in packages and _cuda_libraries(packages):
        builds.append((f"tensorflow {packages['tensorflow']} with CUDA 12 libraries", 12))
    return builds


def _cuda_libraries(packages: Mapping[str, str]) -> list[str]:
    """The nvidia-*-cu12 wheels (tensorflow[and-cuda] brings them; jax[cuda12] and torch too)."""
    return sorted(n for n in packages if n.startswith("nvidia-") and n.endswith("-cu12"))


_SONAME = re.compile(r"^(?P<stem>lib.+?\.so\.)(?P<major>\d+)$")


def _library_version(soname: str, file_name: str) -> Version | None:
    """libcudnn.so.9 as libcudnn.so.9.1.0 -> 9.1.0; None when the name shows the major only."""
    found = _SONAME.match(soname)
    if not found or not file_name.startswith(soname + "."):
        return None
    return version_of(found["major"] + file_name[len(soname) :])


def _wheel_of(folder: str, packages: Mapping[str, str]) -> tuple[str, Version | None]:
    """The nvidia-* distribution behind site-packages/nvidia/FOLDER (cudnn, cuda_runtime)."""
    stem = "nvidia-" + folder.replace("_", "-").lower()
    for name in (f"{stem}-cu12", f"{stem}-cu13", stem):
        if name in packages:
            return name, version_of(packages[name])
    return f"the nvidia wheel in nvidia/{folder}", None


def _soname_of(file_name: str, wheel_libraries: Mapping[str, str]) -> str | None:
    """The wheels' library that `file_name` is a copy of (libcudnn.so.9.1.0: libcudnn.so.9)."""
    for soname in wheel_libraries:
        if file_name == soname or file_name.startswith(soname + "."):
            return soname
    return None


def library_shadows(
    report: Mapping[str, Any],
    packages: Mapping[str, str],
    value: str | None,
    host: HostAccelerators,
) -> list[Finding]:
    """LD_LIBRARY_PATH folders holding a CUDA library that an nvidia-* wheel here brings too.

    The dynamic loader searches LD_LIBRARY_PATH before the paths the wheels' libraries
    carry (RUNPATH), so jax's CUDA plugin and TensorFlow load the folder's copy. An older
    one than the wheel's fails at run time ("Loaded runtime CuDNN library: 9.1.0 but
    source was compiled with: 9.5.1", "Found cuBLAS version ..., but JAX was built
    against ..."): an error. A newer one, or one whose version the name hides: a warning.
    torch is left out: it finds its wheels' libraries itself, whatever LD_LIBRARY_PATH says.
    """
    users = [n for n in sorted(packages) if n.startswith("jax-cuda") and n.endswith("plugin")]
    users += ["tensorflow"] if "tensorflow" in packages else []
    wheel_libraries: Mapping[str, str] = report.get("nvidia_libraries") or {}
    if not users or not wheel_libraries or not host.driver:
        return []  # without a driver no CUDA library is loaded (cuda-no-driver says so)
    findings = []
    for entry in report.get("library_path") or []:
        folder, held = str(entry.get("folder")), entry.get("libraries") or {}
        by_wheel: dict[str, dict[str, Version | None]] = {}
        for file_name, target in sorted(held.items()):
            soname = _soname_of(file_name, wheel_libraries)
            if soname is None:
                continue
            found = _library_version(soname, str(target)) or _library_version(soname, file_name)
            libraries = by_wheel.setdefault(wheel_libraries[soname], {})
            known = libraries.get(soname)
            if soname not in libraries or (found is not None and (known is None or found > known)):
                libraries[soname] = found
        for wheel_folder, libraries in sorted(by_wheel.items()):
            findings.append(
                _shadow_finding(folder, wheel_folder, libraries, packages, users, value)
            )
    return findings


def _shadow_finding(
    folder: str,
    wheel_folder: str,
    libraries: Mapping[str, Version | None],
    packages: Mapping[str, str],
    users: list[str],
    value: str | None,
) -> Finding:
    wheel, wheel_v = _wheel_of(wheel_folder, packages)
    held = ", ".join(f"{lib} ({v or 'version not in its name'})" for lib, v in libraries.items())
    older = [
        lib
        for lib, v in libraries.items()
        if v is not None and wheel_v is not None and v.release[:2] < wheel_v.release[:2]
    ]
    brought = f"{wheel} {wheel_v}" if wheel_v else wheel
    evidence = (
        f"LD_LIBRARY_PATH={value}: {folder} holds {held}; {brought} brings "
        f"{', '.join(libraries)} in site-packages/nvidia/{wheel_folder}/lib, "
        f"which {', '.join(users)} would load"
    )
    fix = (
        f"remove {folder} from LD_LIBRARY_PATH where you run this environment (or unset "
        "LD_LIBRARY_PATH): the wheels' libraries are found without it"
    )
    if older:
        return Finding(
            ERROR,
            "ld-library-path",
            f"LD_LIBRARY_PATH loads {', '.join(older)} from {folder}, older than the "
            f"{brought} installed here: CUDA fails at run time",
            evidence,
            fix,
        )
    return Finding(
        WARNING,
        "ld-library-path",
        f"LD_LIBRARY_PATH loads {', '.join(libraries)} from {folder} instead of {brought}",
        evidence,
        fix + "; this environment then runs on libraries it was not installed with",
    )


def _gpu_checks(
    packages: Mapping[str, str], host: HostAccelerators, seen: Mapping[str, str | None]
) -> list[Finding]:
    if not host.driver:
        return []
    findings = []
    tf = packages.get("tensorflow")
    system, machine = platform_markers(host.platform)
    cuda_tf = tf is not None and (system, machine) in CUDA_PLATFORMS["tensorflow"]
    if cuda_tf and not _cuda_libraries(packages):
        findings.append(
            Finding(
                WARNING,
                "tf-without-cuda",
                f"TensorFlow {tf} runs on the CPU here: it was installed without [and-cuda]",
                f"tensorflow {tf} and no nvidia-*-cu12 libraries in the packages; "
                f"{host.describe()}",
                f"pip install 'tensorflow[and-cuda]=={tf}' (kboot create tf --accelerator "
                "cuda), or tensorflow-cpu to run on the CPU on purpose",
            )
        )
    plugins = [n for n in sorted(packages) if n.startswith("jax-cuda") and n.endswith("plugin")]
    if plugins and tf is not None and _cuda_libraries(packages):
        findings += _memory_check(f"{plugins[0]} {packages[plugins[0]]}", tf, host, seen)
    return findings


def _memory_check(
    plugin: str, tf: str, host: HostAccelerators, seen: Mapping[str, str | None]
) -> list[Finding]:
    """JAX takes 75% of the GPU's memory at its first computation, TensorFlow nearly all of
    it when it starts: in one process, the second one runs out of memory."""
    prealloc = (seen.get("XLA_PYTHON_CLIENT_PREALLOCATE") or "").strip().lower()
    jax_tamed = (
        prealloc in ("false", "0")
        or bool(seen.get("XLA_PYTHON_CLIENT_MEM_FRACTION"))
        or (seen.get("XLA_PYTHON_CLIENT_ALLOCATOR") or "").strip() == "platform"
    )
    tf_tamed = seen.get("TF_FORCE_GPU_ALLOW_GROWTH") == "true"  # TensorFlow reads "true" only
    if jax_tamed and tf_tamed:
        return []
    untamed = [
        (name, value)
        for name, value, tamed in (
            ("XLA_PYTHON_CLIENT_PREALLOCATE", "false", jax_tamed),
            ("TF_FORCE_GPU_ALLOW_GROWTH", "true", tf_tamed),
        )
        if not tamed
    ]
    said = [shown(name, seen.get(name)) for name, _ in untamed]
    return [
        Finding(
            WARNING,
            "gpu-memory",
            "JAX and TensorFlow here both reserve most of the GPU's memory: in one process "
            "the second runs out",
            f"{plugin} and tensorflow {tf} with CUDA libraries; {host.describe()}; "
            + ", ".join(said),
            "export "
            + " ".join(f"{name}={value}" for name, value in untamed)
            + " (or hide the GPU from the one that needs none: "
            "tf.config.set_visible_devices([], 'GPU'))",
        )
    ]
