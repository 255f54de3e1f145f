"""What `import keras` will do in a Python environment, and what stands in its way.

The one diagnosis behind `kboot doctor` and the smoke test of create, check and list:
the inspection probe (`_inspect.py`) runs in the environment's Python and reports what is
there without importing keras; `diagnose` turns that report into findings (a pure
function, tested over planted reports), and `environment_errors` is what both act on:
doctor exits 1 on it, the smoke test fails on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from bootstrap.envs.findings import ERROR, INFO, WARNING, Finding, errors
from bootstrap.envs.package_checks import cuda_builds, package_checks
from bootstrap.install.accelerators import HostAccelerators
from bootstrap.profiles.keras_json import KNOWN_BACKENDS
from bootstrap.profiles.model import (
    FLOATX_VALUES,
    IMAGE_DATA_FORMATS,
    is_module_path,
    near_known_backend,
)
from bootstrap.profiles.variables import jax_flag, shown, tf_legacy_keras

MARKER = "KBOOT-DOCTOR:"
PROBE_SOURCE = (Path(__file__).parent / "_inspect.py").read_text(encoding="utf-8")
BACKEND_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "jax": ("jax",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "openvino": ("openvino",),
    "theano": ("theano",),
    "cntk": ("cntk", "cntk-gpu"),
}


def read_report(stdout: str) -> dict[str, Any] | None:
    """The probe's report: its last line after MARKER, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
            except (ValueError, RecursionError):
                return None
            return data if isinstance(data, dict) else None
    return None


def environment_errors(
    report: Mapping[str, Any], environ: Mapping[str, str], host: HostAccelerators
) -> tuple[Finding, ...]:
    """What breaks this environment: doctor's errors, the smoke test's failures."""
    return errors(diagnose(report, environ, host))


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

    values = _keras_json_checks(findings, report.get("keras_json") or {})

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
        external = backend not in KNOWN_BACKENDS and (report.get("modules") or {}).get(
            backend.split(".")[0]
        )
        if (
            keras_v is not None
            and not external
            and not any(canonical in packages for canonical in providers)
        ):
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

    findings += package_checks(packages, keras_v, host, report)
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


def _keras_json_checks(findings: list[Finding], config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Which keras.json is read, and is it valid: its values, or none when Keras ignores it."""
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
    return values


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
    if host.driver and cuda_builds(packages) and not gpu_seen:
        findings.append(
            Finding(
                WARNING,
                "gpu-unseen",
                "a CUDA build and a driver, but the backend sees no GPU",
                f"devices: {', '.join(map(str, devices)) or 'none'}; {host.describe()}",
                "check CUDA_VISIBLE_DEVICES and that the CUDA libraries match the driver",
            )
        )
