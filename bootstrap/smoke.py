"""The smoke test: import keras in the environment and compare with the profile.

The probe (`_probe.py`) runs in the environment's own interpreter and only
reports; `evaluate` compares that report with what the profile expects, as a
pure function, so the GPU logic can be tested with any device list.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.runner import run

MARKER = "KBOOT-PROBE:"
PROBE_SOURCE = (Path(__file__).parent / "_probe.py").read_text(encoding="utf-8")
#: Variables removed before the probe runs: they would override the environment's own config.
SCRUBBED = ("KERAS_BACKEND", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
CHECKED_KEYS = ("backend", "floatx", "image_data_format", "epsilon")


@dataclass(frozen=True)
class Expectation:
    backend: str
    floatx: str
    image_data_format: str
    epsilon: float
    gpu: bool = False
    allow_cpu: bool = False

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "floatx": self.floatx})


@dataclass(frozen=True)
class SmokeReport:
    ok: bool
    reported: Mapping[str, Any]
    devices: tuple[Mapping[str, str], ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    keras_version: str | None = None
    backend_version: str | None = None
    packages: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    details: str | None = None  # traceback or output tail, for a failed import

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reported": dict(self.reported),
            "devices": [dict(d) for d in self.devices],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "keras_version": self.keras_version,
            "backend_version": self.backend_version,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class HostGpuInfo:
    """What the machine itself says about NVIDIA GPUs, for the diagnosis."""

    driver_version: str | None
    nvidia_smi: bool
    cuda_visible_devices: str | None

    def describe(self) -> str:
        if self.driver_version:
            driver = f"NVIDIA driver {self.driver_version} is loaded"
        elif self.nvidia_smi:
            driver = "nvidia-smi is on PATH but no NVIDIA kernel driver is loaded"
        else:
            driver = "no NVIDIA driver found (no /proc/driver/nvidia, no nvidia-smi)"
        if self.cuda_visible_devices is not None:
            driver += f"; CUDA_VISIBLE_DEVICES={self.cuda_visible_devices!r}"
        return driver


def host_gpu_info(environ: Mapping[str, str] | None = None) -> HostGpuInfo:
    environ = os.environ if environ is None else environ
    version = None
    try:
        text = Path("/proc/driver/nvidia/version").read_text(encoding="utf-8")
        for word in text.split():
            if word.count(".") >= 1 and word.replace(".", "").isdigit():
                version = word
                break
        version = version or "unknown version"
    except OSError:
        pass
    return HostGpuInfo(
        version, shutil.which("nvidia-smi") is not None, environ.get("CUDA_VISIBLE_DEVICES")
    )


def probe_environment(
    python: Path, expected: Expectation, *, environ: Mapping[str, str], cwd: Path
) -> tuple[dict[str, Any] | None, str, float]:
    """Run the probe; returns (report or None, output tail, seconds)."""
    result = run(
        [python, "-c", PROBE_SOURCE, expected.to_json()],
        env=environ,
        cwd=cwd,
        check=False,
        what="smoke test",
        timeout=900,
    )
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :]), result.output_tail, result.seconds
    return None, result.output_tail, result.seconds


def probe_environ(base: Mapping[str, str], *, keep_keras_home: bool) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in SCRUBBED}
    if not keep_keras_home:
        env.pop("KERAS_HOME", None)  # the environment's startup file sets its own
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's banner is noise here
    return env


def evaluate(
    report: Mapping[str, Any] | None,
    expected: Expectation,
    *,
    host: HostGpuInfo,
    output_tail: str = "",
    seconds: float = 0.0,
) -> SmokeReport:
    """Compare the probe's report with the profile: every difference is a problem."""
    if report is None:
        return SmokeReport(
            ok=False,
            reported={},
            devices=(),
            problems=("the probe printed no report (the interpreter crashed?)",),
            seconds=seconds,
            details=output_tail,
        )
    if "import_error" in report:
        return SmokeReport(
            ok=False,
            reported={},
            devices=(),
            problems=(f"`import keras` failed: {report['import_error']}",),
            packages=report.get("packages", {}),
            seconds=seconds,
            details=report.get("traceback"),
        )
    problems: list[str] = []
    warnings: list[str] = []
    reported = {key: report.get(key) for key in CHECKED_KEYS}
    for key in CHECKED_KEYS:
        want, got = getattr(expected, key), reported[key]
        if key == "epsilon":
            same = isinstance(got, int | float) and math.isclose(got, want, rel_tol=1e-9)
        else:
            same = got == want
        if not same:
            problems.append(f"{key}: keras reports {got!r}, the profile asks for {want!r}")
    compute = report.get("compute")
    if compute is None:
        problems.append(f"a tiny computation failed: {report.get('compute_error', 'no result')}")
    else:
        reported["compute_dtype"] = compute["dtype"]
        if compute["dtype"] != expected.floatx:
            problems.append(
                f"a matmul in {expected.floatx} returned {compute['dtype']}: "
                f"the backend does not compute in {expected.floatx}"
            )
        if any(not math.isclose(v, 2.0) for v in compute["values"]):
            problems.append(f"ones(2,2) @ ones(2,2) gave {compute['values']}, not all 2.0")
    devices = tuple(report.get("devices") or ())
    if report.get("devices_error"):
        warnings.append(f"could not list devices: {report['devices_error']}")
    if expected.gpu and not any(d.get("kind") == "gpu" for d in devices):
        message = gpu_diagnosis(report, devices, host)
        if expected.allow_cpu:
            warnings.append(message + " (accepted: --allow-cpu)")
        else:
            problems.append(message)
    return SmokeReport(
        ok=not problems,
        reported=reported,
        devices=devices,
        problems=tuple(problems),
        warnings=tuple(warnings),
        keras_version=report.get("keras_version"),
        backend_version=report.get("backend_version"),
        packages=report.get("packages", {}),
        seconds=seconds,
        details=report.get("traceback"),
    )


def gpu_diagnosis(
    report: Mapping[str, Any], devices: Sequence[Mapping[str, str]], host: HostGpuInfo
) -> str:
    backend = report.get("backend")
    seen = ", ".join(d.get("name", "?") for d in devices) or "no devices"
    parts = [f"the profile needs a GPU, but {backend} sees only: {seen}", host.describe()]
    build = report.get("build") or {}
    if backend == "torch" and "cuda" in build and build["cuda"] is None:
        parts.append("this torch is a CPU-only build (torch.version.cuda is None)")
    if backend == "tensorflow" and build.get("cuda") is False:
        parts.append("this TensorFlow was built without CUDA")
    if backend == "jax" and not any(
        name.startswith("jax-cuda") for name in report.get("packages", {})
    ):
        parts.append("no jax CUDA plugin is installed (jax[cuda12] brings it)")
    return "; ".join(parts) + "; use --allow-cpu to accept running on the CPU"


_LIST_SOURCE = """
import json, sys
try:
    from importlib import metadata
    found = {d.metadata["Name"].lower().replace("_", "-"): d.version
             for d in metadata.distributions() if d.metadata["Name"]}
except ImportError:
    import pkg_resources
    found = {d.project_name.lower().replace("_", "-"): d.version for d in pkg_resources.working_set}
sys.stdout.write(json.dumps(found))
"""


def installed_packages(python: Path, *, cwd: Path) -> dict[str, str]:
    """Distributions the environment's interpreter sees, without importing keras."""
    result = run([python, "-c", _LIST_SOURCE], cwd=cwd, what="listing installed packages")
    packages: dict[str, str] = json.loads(result.stdout)
    return packages
