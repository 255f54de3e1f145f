"""`kboot doctor`: what `import keras` will do in any Python environment, and why.

A probe (`_doctor_probe.py`) runs in the target Python with the caller's own variables
(as the user's `import keras` would see them), reads package metadata, startup files,
conda activation scripts and keras.json, and imports nothing unless asked (`--import`).
`diagnose` turns that report into findings, each with a severity, the evidence and the
fix: a pure function, tested over planted reports.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from bootstrap.install.accelerators import HostAccelerators, cuda_generations, read_host
from bootstrap.profiles.keras_json import KNOWN_BACKENDS
from bootstrap.profiles.model import (
    FLOATX_VALUES,
    IMAGE_DATA_FORMATS,
    is_module_path,
    near_known_backend,
)
from bootstrap.profiles.variables import jax_flag, shown, tf_legacy_keras
from bootstrap.system.errors import EXIT_FAILED, EXIT_OK, KbootError, UsageError
from bootstrap.system.runner import run

MARKER = "KBOOT-DOCTOR:"
PROBE_SOURCE = (Path(__file__).parent / "_probe.py").read_text(encoding="utf-8")
ERROR, WARNING, INFO = "error", "warning", "info"
BACKEND_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "jax": ("jax",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "openvino": ("openvino",),
    "theano": ("theano",),
    "cntk": ("cntk", "cntk-gpu"),
}


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    code: str
    title: str
    evidence: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "code": self.code,
            "title": self.title,
            "evidence": self.evidence,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class DoctorResult:
    python: Path
    version: str
    findings: tuple[Finding, ...]
    report: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "python": str(self.python),
            "python_version": self.version,
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "keras_json": self.report.get("keras_json"),
            "imported": self.report.get("imported"),
        }


def target_python(ref: str | None, python: str | None, environ: Mapping[str, str]) -> Path:
    """ENV (a kboot environment), --python (an interpreter or an environment's folder), or
    the `python3` on PATH: the Python the user runs."""
    if ref and python:
        raise UsageError("give ENV or --python, not both")
    if ref:
        from bootstrap.envs.lifecycle import open_to_run
        from bootstrap.envs.names import resolve

        return open_to_run(resolve(ref, environ).path).python
    if python:
        path = Path(python).expanduser()
        if path.is_dir():  # a venv or conda prefix
            for name in ("bin/python", "bin/python3", "Scripts/python.exe", "python.exe"):
                if (path / name).exists():
                    return (path / name).absolute()
            raise UsageError(f"--python {path}: a folder with no bin/python in it")
        if path.exists():
            return path.absolute()
        if os.sep not in python:  # a name on PATH, or a version, as `create --python` takes
            on_path = shutil.which(python, path=environ.get("PATH"))
            if on_path:
                return Path(on_path)
            from packaging.specifiers import SpecifierSet

            from bootstrap.install.interpreters import find_interpreter

            return find_interpreter(SpecifierSet(), requested=python, environ=environ).path
        raise UsageError(
            f"--python {path}: no such file",
            hint="give an interpreter's path, its name on PATH, or a version such as 3.12",
        )
    found = shutil.which("python3", path=environ.get("PATH")) or shutil.which(
        "python", path=environ.get("PATH")
    )
    if not found:
        raise UsageError("no python3 on PATH", hint="name one: kboot doctor --python PATH")
    return Path(found)


def examine(
    python: Path,
    environ: Mapping[str, str],
    *,
    do_import: bool = False,
    host: HostAccelerators | None = None,
) -> DoctorResult:
    report = probe(python, environ, do_import=do_import)
    version = _version(str(report.get("python")))
    if version is None or version < Version("3.5"):
        raise UsageError(
            f"{python} is Python {report.get('python')}: kboot doctor examines Python 3.5 and "
            "newer",
            hint="run it on the Python 3 environment that runs keras",
        )
    findings = diagnose(report, environ, host or read_host())
    return DoctorResult(python, str(report.get("python")), tuple(findings), report)


def probe(python: Path, environ: Mapping[str, str], *, do_import: bool) -> dict[str, Any]:
    """Run the doctor's probe in `python`, from a private folder, with the user's variables."""
    import tempfile

    if not os.access(python, os.X_OK) or python.is_dir():
        raise UsageError(f"{python} is not a Python interpreter (not an executable file)")
    with tempfile.TemporaryDirectory(prefix="kboot-doctor-") as private:
        try:
            result = run(
                [python, "-c", PROBE_SOURCE, json.dumps({"import": do_import})],
                env=dict(environ),
                cwd=Path(private),
                check=False,
                timeout=600 if do_import else 60,
                what=f"examining {python}",
            )
        except KbootError as exc:
            raise UsageError(f"{python} cannot be run: {exc.message}") from None
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
            except ValueError:
                break
            if isinstance(data, dict):
                return data
            break
    said = (result.stderr or result.stdout).strip().splitlines()
    if any("SyntaxError" in line or "print " in line for line in said[-5:]):
        raise UsageError(
            f"{python} is a Python too old for kboot doctor (3.5 or newer is needed)",
            hint="run it on the Python 3 environment that runs keras",
        )
    # what it said, without the probe it was handed (its source and arguments are ours)
    reason = said[-1] if said else ""
    if not reason or "import" in reason or len(reason) > 200:
        reason = f"exit code {result.returncode}"
    raise UsageError(
        f"{python} is not a working Python interpreter ({reason})",
        hint="give the Python you run keras with: a path, a name on PATH, or a version",
    )


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def diagnose(  # one check after another, in the order users meet them
    report: Mapping[str, Any], environ: Mapping[str, str], host: HostAccelerators
) -> list[Finding]:
    """What `import keras` will do there, and what stands in its way: a pure function."""
    findings: list[Finding] = []
    packages: Mapping[str, str] = report.get("packages") or {}
    seen: Mapping[str, str | None] = report.get("environ") or {}
    keras_v, tf_keras_v = _version(packages.get("keras")), _version(packages.get("tf-keras"))

    # which Keras
    if keras_v is None and tf_keras_v is None:
        findings.append(
            Finding(
                ERROR,
                "no-keras",
                "keras is not installed here",
                f"packages of {report.get('executable')}",
                "install it (pip install keras), or build an environment: kboot create jax",
            )
        )
    elif keras_v is not None:
        generation = 3 if keras_v.major >= 3 else 2
        findings.append(
            Finding(INFO, "keras", f"Keras {keras_v} (Keras {generation})", "keras in the packages")
        )
        if tf_keras_v is not None:
            legacy = tf_legacy_keras(seen.get("TF_USE_LEGACY_KERAS"))
            findings.append(
                Finding(
                    INFO,
                    "two-kerases",
                    f"keras {keras_v} and tf-keras {tf_keras_v} are both installed",
                    shown("TF_USE_LEGACY_KERAS", seen.get("TF_USE_LEGACY_KERAS")),
                    "`import keras` is Keras 3; tf.keras is tf-keras only with "
                    "TF_USE_LEGACY_KERAS=1" + (" (set)" if legacy else " (not set)"),
                )
            )
    else:
        findings.append(
            Finding(
                ERROR,
                "tf-keras",
                f"`import keras` will fail: only tf-keras {tf_keras_v} (the Keras 2 API) is here",
                "tf-keras in the packages, no keras",
                "import tf_keras (or tf.keras with TF_USE_LEGACY_KERAS=1), or install keras",
            )
        )

    # which keras.json, and is it valid
    config = report.get("keras_json") or {}
    values: Mapping[str, Any] = config.get("values") or {}
    path = config.get("path")
    if config.get("error"):
        findings.append(
            Finding(
                ERROR,
                "keras-json-invalid",
                f"{path} is not valid: Keras ignores all of it",
                str(config["error"]),
                f"fix or delete {path} (kboot config set writes a valid one)",
            )
        )
        values = {}
    elif config.get("exists"):
        findings.append(
            Finding(
                INFO,
                "keras-json",
                f"keras.json read: {path}",
                f"found through {config.get('source')}",
            )
        )
        if config.get("epsilon_is_int"):
            findings.append(
                Finding(
                    ERROR,
                    "epsilon-int",
                    f"epsilon in {path} is an integer: Keras refuses it",
                    f"epsilon = {values.get('epsilon')!r}",
                    "write it as a float, e.g. 1.0 or 1e-07",
                )
            )
        for key, allowed in (("floatx", FLOATX_VALUES), ("image_data_format", IMAGE_DATA_FORMATS)):
            if key in values and values[key] not in allowed:
                findings.append(
                    Finding(
                        ERROR,
                        f"bad-{key}",
                        f"{key} = {values[key]!r} in {path} is not valid",
                        f"allowed: {', '.join(allowed)}",
                        f"kboot config set {key}=...",
                    )
                )
    else:
        findings.append(
            Finding(
                INFO,
                "keras-json-missing",
                f"no keras.json at {path}: Keras's defaults apply",
                f"looked through {config.get('source')}",
                "Keras writes one at the first import (with backend tensorflow)",
            )
        )

    # which backend, and where that comes from
    backend, source = _backend_source(seen, environ, values, report)
    findings.append(Finding(INFO, "backend", f"backend: {backend}", f"from {source}"))
    for script in report.get("conda_scripts") or []:
        findings.append(
            Finding(
                WARNING,
                "conda-activate",
                f"a conda activation script sets {script['name']}={script['value']}",
                script["file"],
                "it wins over keras.json whenever this environment is activated: "
                "remove the line, or expect it",
            )
        )
    for startup in report.get("startup_files") or []:
        findings.append(
            Finding(
                INFO,
                "startup-file",
                f"a startup file touches {', '.join(startup['names'])}",
                startup["file"],
                "runs at every start of this Python",
            )
        )
    typo = near_known_backend(backend) if backend not in KNOWN_BACKENDS else None
    keras3 = keras_v is not None and keras_v.major >= 3
    if backend not in KNOWN_BACKENDS and (typo or not is_module_path(backend) or keras3):
        findings.append(
            Finding(
                ERROR,
                "bad-backend",
                f"backend {backend!r} is not a Keras backend",
                f"from {source}",
                f"did you mean {typo!r}?" if typo else f"one of {', '.join(KNOWN_BACKENDS)}",
            )
        )
    else:
        providers = BACKEND_PACKAGES.get(backend, (backend.split(".")[0],))
        if keras_v is not None and not any(canonical in packages for canonical in providers):
            findings.append(
                Finding(
                    ERROR,
                    "backend-missing",
                    f"`import keras` will fail: {backend} is not installed",
                    f"none of {', '.join(providers)} in the packages",
                    f"install {providers[0]}, or choose an installed backend",
                )
            )
    if (
        keras_v is not None
        and keras_v.major < 3
        and backend in ("jax", "torch", "numpy", "openvino")
    ):
        findings.append(
            Finding(
                ERROR,
                "keras2-backend",
                f"Keras {keras_v} has no {backend} backend",
                f"backend from {source}",
                "install keras>=3, or use tensorflow/theano/cntk",
            )
        )

    _package_checks(findings, packages, keras_v, host)
    _numeric_checks(findings, backend, values, seen)
    if seen.get("PYTHONPATH"):
        findings.append(
            Finding(
                WARNING,
                "pythonpath",
                "PYTHONPATH is set",
                f"PYTHONPATH={seen['PYTHONPATH']}",
                "its packages shadow this environment's (a keras there wins): unset it",
            )
        )
    imported = report.get("imported")
    if imported is not None:
        _import_checks(findings, imported, packages, host)
    return findings


def _backend_source(
    seen: Mapping[str, str | None],
    environ: Mapping[str, str],
    values: Mapping[str, Any],
    report: Mapping[str, Any],
) -> tuple[str, str]:
    chosen = seen.get("KERAS_BACKEND")
    if chosen:
        if environ.get("KERAS_BACKEND") == chosen:
            return chosen, "KERAS_BACKEND in your shell (it wins over keras.json)"
        files = [
            s["file"] for s in report.get("startup_files") or [] if "KERAS_BACKEND" in s["names"]
        ]
        where = files[0] if files else "a startup file"
        return chosen, f"KERAS_BACKEND set at interpreter start by {where}"
    if isinstance(values.get("backend"), str):
        return values["backend"], (report.get("keras_json") or {}).get("path", "keras.json")
    return "tensorflow", "Keras's default (no KERAS_BACKEND, no backend in keras.json)"


def _package_checks(
    findings: list[Finding],
    packages: Mapping[str, str],
    keras_v: Version | None,
    host: HostAccelerators,
) -> None:
    tf_v = _version(packages.get("tensorflow") or packages.get("tensorflow-cpu"))
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
        findings.append(
            Finding(
                ERROR,
                "tf-twice",
                "tensorflow and tensorflow-cpu are both installed",
                f"tensorflow {packages['tensorflow']}, tensorflow-cpu {packages['tensorflow-cpu']}",
                "they write the same files: uninstall both, then install one",
            )
        )
    jax_v, jaxlib_v = _version(packages.get("jax")), _version(packages.get("jaxlib"))
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
    for name, version in packages.items():
        plugin = name.startswith("jax-cuda") and name.endswith("plugin")
        if plugin and jaxlib_v is not None and _version(version) != jaxlib_v:
            findings.append(
                Finding(
                    ERROR,
                    "jax-plugin",
                    f"{name} {version} with jaxlib {jaxlib_v}",
                    "a CUDA plugin must match jaxlib",
                    f"pip install 'jax[cuda..]=={jaxlib_v}'",
                )
            )
    for label, generation in _cuda_builds(packages):
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


def _cuda_builds(packages: Mapping[str, str]) -> list[tuple[str, int | None]]:
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
    if "tensorflow" in packages and any(n.endswith("-cu12") for n in packages):
        builds.append((f"tensorflow {packages['tensorflow']} with CUDA 12 libraries", 12))
    return builds


def _numeric_checks(
    findings: list[Finding],
    backend: str,
    values: Mapping[str, Any],
    seen: Mapping[str, str | None],
) -> None:
    floatx = values.get("floatx", "float32")
    x64_value = seen.get("JAX_ENABLE_X64")
    x64 = jax_flag(x64_value)
    if x64 == "invalid" and backend == "jax":
        findings.append(
            Finding(
                ERROR,
                "jax-x64-invalid",
                f"{shown('JAX_ENABLE_X64', x64_value)} is not a value JAX accepts",
                "JAX reads it as a boolean (1/0, true/false, on/off, yes/no, any case) and "
                "fails at `import jax` on anything else",
                "set JAX_ENABLE_X64=1 or 0, or unset it",
            )
        )
    elif floatx == "float64" and backend == "jax" and x64 != "on":
        findings.append(
            Finding(
                WARNING,
                "jax-float64",
                "floatx is float64 on JAX, but "
                + ("JAX_ENABLE_X64 is not set" if x64 == "unset"
                   else f"{shown('JAX_ENABLE_X64', x64_value)} turns 64-bit mode off"),
                "JAX then computes in float32 while Keras reports float64",
                "set JAX_ENABLE_X64=1 (kboot's environments do it for float64 jax profiles)",
            )
        )  # fmt: skip
    if floatx == "float64" and backend in ("torch", "numpy", "openvino"):
        findings.append(
            Finding(
                WARNING,
                "float64-promoted",
                f"floatx is float64 on {backend}",
                "Keras 3 promotes float64 results to float32 on every backend but tensorflow "
                "(and jax with x64)",
                "use tensorflow or jax (with JAX_ENABLE_X64=1) for float64",
            )
        )
    if floatx == "float16":
        findings.append(
            Finding(
                WARNING,
                "float16",
                "floatx is float16 for everything",
                "LSTM/GRU initialisers need a QR decomposition jax and torch lack in float16, "
                "and Adam with the default epsilon goes NaN",
                "train in mixed precision instead: "
                'keras.mixed_precision.set_global_policy("mixed_float16")',
            )
        )


def _import_checks(
    findings: list[Finding],
    imported: Mapping[str, Any],
    packages: Mapping[str, str],
    host: HostAccelerators,
) -> None:
    if imported.get("error"):
        findings.append(
            Finding(
                ERROR,
                "import-failed",
                "`import keras` fails",
                str(imported["error"]),
                "see the evidence; the findings above often say why",
            )
        )
        return
    devices = imported.get("devices") or []
    findings.append(
        Finding(
            INFO,
            "imported",
            f"`import keras` gives backend {imported.get('backend')}, "
            f"floatx {imported.get('floatx')}",
            f"keras {imported.get('version')}; devices: "
            + (", ".join(map(str, devices)) or "none"),
        )
    )
    gpu_seen = any("cuda" in str(d).lower() or "gpu" in str(d).lower() for d in devices)
    if host.driver and _cuda_builds(packages) and not gpu_seen:
        findings.append(
            Finding(
                WARNING,
                "gpu-unseen",
                "a CUDA build and a driver, but the backend sees no GPU",
                f"devices: {', '.join(map(str, devices)) or 'none'}; {host.describe()}",
                "check CUDA_VISIBLE_DEVICES and that the CUDA libraries match the driver",
            )
        )


def severity_rank(findings: Sequence[Finding]) -> list[Finding]:
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(findings, key=lambda f: order[f.severity])
