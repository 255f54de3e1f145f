"""The smoke test: import keras in the environment and compare with the profile.

The probe (`_probe.py`) runs in the environment's own interpreter and only
reports; `evaluate` compares that report with what the profile expects, as a
pure function, so the GPU logic can be tested with any device list. Before it,
doctor's inspection (`_inspect.py`) runs there too: every error `kboot doctor`
would report (`environment_errors`) fails the smoke test as well.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.envs import diagnosis
from bootstrap.envs.findings import Finding, errors
from bootstrap.install.accelerators import HostAccelerators, read_host
from bootstrap.profiles.variables import jax_flag, shown
from bootstrap.system.errors import SmokeError
from bootstrap.system.runner import run_python

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
    keras_module: str = "keras"
    mode: str = "compute"  # or "import": no computation (a backend that needs a device setup)
    build: str | None = None  # "cpu" or "cuda": the build the profile's accelerator chose

    def to_json(self) -> str:
        return json.dumps(
            {
                "backend": self.backend,
                "floatx": self.floatx,
                "keras_module": self.keras_module,
                "mode": self.mode,
            }
        )


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

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, where: str = "the recorded smoke test"
    ) -> SmokeReport:
        """A report as recorded in an environment (`to_dict`'s shape), or a SmokeError
        naming `where` and the key."""

        def fail(key: str, wanted: str) -> SmokeError:
            return SmokeError(
                f"{where}: '{key}' is not {wanted}",
                hint="rebuild the environment: kboot create PROFILE --force",
            )

        def texts(key: str) -> tuple[str, ...]:
            value = data.get(key, ())
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise fail(key, "a list of texts")
            return tuple(value)

        def text(key: str) -> str | None:
            value = data.get(key)
            if not (value is None or isinstance(value, str)):
                raise fail(key, "a text")
            return value

        if not isinstance(data, Mapping):
            raise SmokeError(f"{where}: not a table but {type(data).__name__}")
        ok, reported, seconds = data.get("ok"), data.get("reported", {}), data.get("seconds", 0.0)
        devices = data.get("devices", ())
        if not isinstance(ok, bool):
            raise fail("ok", "true or false")
        if not isinstance(reported, Mapping):
            raise fail("reported", "a table")
        if not isinstance(devices, (list, tuple)) or not all(
            isinstance(d, Mapping) and all(isinstance(v, str) for v in d.values()) for d in devices
        ):
            raise fail("devices", "a list of tables of texts")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise fail("seconds", "a number")
        try:
            seconds = float(seconds)
        except OverflowError:  # an integer beyond any float
            raise fail("seconds", "a number a float can hold") from None
        return cls(
            ok=ok,
            reported=reported,
            devices=tuple(devices),
            problems=texts("problems"),
            warnings=texts("warnings"),
            keras_version=text("keras_version"),
            backend_version=text("backend_version"),
            seconds=seconds,
        )

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


def host_gpu_info(
    environ: Mapping[str, str] | None = None, host: HostAccelerators | None = None
) -> HostGpuInfo:
    """The machine's NVIDIA driver, read as the accelerator choice reads it (or `host`,
    already read)."""
    environ = os.environ if environ is None else environ
    host = host or read_host()
    return HostGpuInfo(
        host.driver or ("unknown version" if host.problem and "proc" in host.problem else None),
        shutil.which("nvidia-smi") is not None,
        environ.get("CUDA_VISIBLE_DEVICES"),
    )


def probe_environment(
    python: Path,
    expected: Expectation,
    *,
    environ: Mapping[str, str],
    version: tuple[int, int] | None,
) -> tuple[dict[str, Any] | None, str, float]:
    """Run the probe, isolated; returns (report or None, output tail, seconds)."""
    result = run_python(
        python,
        ["-c", PROBE_SOURCE, expected.to_json()],
        version=version,
        env=environ,
        check=False,
        what="smoke test",
        timeout=900,
    )
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                report = json.loads(line[len(MARKER) :])
            except (ValueError, RecursionError):
                break  # not our probe's line: as good as no report
            if isinstance(report, dict):
                return report, result.output_tail, result.seconds
            break
    return None, result.output_tail, result.seconds


def inspect_environment(
    python: Path, *, environ: Mapping[str, str], version: tuple[int, int] | None
) -> dict[str, Any] | None:
    """Doctor's inspection of the environment (no keras import), isolated as the probe is;
    None when it printed no report (the smoke probe then says why)."""
    result = run_python(
        python,
        ["-c", diagnosis.PROBE_SOURCE, json.dumps({"import": False})],
        version=version,
        env=environ,
        check=False,
        what="inspecting the environment",
        timeout=120,
    )
    return diagnosis.read_report(result.stdout)


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
    findings: Sequence[Finding] = (),
) -> SmokeReport:
    """Compare the probe's report with the profile: every difference is a problem, and so
    is every error among doctor's `findings` about the environment."""
    broken = tuple(f.line() for f in errors(findings))
    if report is None:
        return SmokeReport(
            ok=False,
            reported={},
            devices=(),
            problems=("the probe printed no report (the interpreter crashed?)", *broken),
            seconds=seconds,
            details=output_tail,
        )
    if "import_error" in report:
        return SmokeReport(
            ok=False,
            reported={},
            devices=(),
            problems=(import_problem(expected.keras_module, report["import_error"]), *broken),
            packages=report.get("packages", {}),
            seconds=seconds,
            details=report.get("traceback"),
        )
    problems: list[str] = list(broken)
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
    if expected.mode == "import":
        pass
    elif compute is None:
        problems.append(f"a tiny computation failed: {report.get('compute_error', 'no result')}")
    else:
        reported["compute_dtype"] = compute["dtype"]
        if compute["dtype"] != expected.floatx:
            x64_value = report.get("jax_enable_x64_env")
            if (
                expected.floatx == "float64"
                and expected.backend == "jax"
                and jax_flag(x64_value) == "off"
            ):  # the shell's variable, not the backend: say so
                problems.append(
                    f"a matmul in float64 returned {compute['dtype']}: "
                    f"{shown('JAX_ENABLE_X64', x64_value)} in your environment turns JAX's "
                    "64-bit mode off (the environment sets JAX_ENABLE_X64=1 itself): unset it"
                )
            else:
                why = ""
                if expected.floatx == "float64" and compute["dtype"] == "float32":
                    why = (
                        " (Keras 3 promotes float64 results to float32 except on tensorflow, "
                        "and on jax without JAX_ENABLE_X64)"
                    )
                problems.append(
                    f"a matmul in {expected.floatx} returned {compute['dtype']}: "
                    f"the backend does not compute in {expected.floatx}{why}"
                )
        if any(not math.isclose(v, 2.0) for v in compute["values"]):
            problems.append(f"ones(2,2) @ ones(2,2) gave {compute['values']}, not all 2.0")
    routed = report.get("tf.keras_package")
    if routed is not None:
        reported["tf.keras_package"] = routed
        if routed != "tf_keras":
            problems.append(
                f"tf.keras resolves to {routed}, not tf_keras: TF_USE_LEGACY_KERAS=1 "
                "is not in effect in this environment"
            )
    build, how = build_of(report)
    if build is not None:
        reported["build"] = f"{build} ({how})"
        _check_build(report.get("backend"), build, how, expected, problems, warnings)
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


#: Shared libraries that legacy backends load, and where they come from.
KNOWN_LIBRARIES: Mapping[str, str] = {
    "libmpi_cxx.so.1": "OpenMPI 1.10's C++ library, which cntk 2.7 was built against; "
    "current distributions (Debian 12: OpenMPI 4) no longer ship it",
    "libmpi.so.12": "OpenMPI 1.10's MPI library, needed by cntk 2.7",
}


def import_problem(module: str, error: str) -> str:
    """`import keras` failed: say which library or module is missing when we can tell."""
    missing_lib = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", error)
    if missing_lib:
        lib = missing_lib.group(1)
        origin = KNOWN_LIBRARIES.get(lib, "a system library the backend was built against")
        return (
            f"`import {module}` failed: the shared library {lib} is missing on this system "
            f"({origin}). Install it and add its folder to LD_LIBRARY_PATH, "
            "or pick another backend"
        )
    return f"`import {module}` failed: {error}"


def _check_build(
    backend: object,
    build: str,
    how: str,
    expected: Expectation,
    problems: list[str],
    warnings: list[str],
) -> None:
    """A CPU profile must not get a CUDA build, nor the reverse."""
    if expected.build is not None and build != expected.build:
        if expected.build == "cpu":
            problems.append(
                f"a CPU profile got a CUDA build of {backend} ({how}): its sources did not "
                "give the CPU build (an --index-url/--find-links override replaces the "
                "profile's own index), and gigabytes of CUDA libraries were installed for nothing"
            )
        else:
            problems.append(
                f"a CUDA profile got a CPU build of {backend} ({how}): no GPU would ever be "
                "used; check the profile's sources"
            )
    elif (
        expected.build is None
        and build == "cuda"
        and not expected.gpu
        # tf-keras requires `tensorflow` itself, CUDA-built on Linux (it runs on the CPU
        # without the nvidia libraries): tensorflow-cpu is no choice there
        and not (backend == "tensorflow" and expected.keras_module == "tf_keras")
    ):
        warnings.append(
            f"this is a CUDA build of {backend} ({how}) in a profile that needs no GPU: "
            'accelerator = "cpu" in the profile gets the smaller CPU build'
        )


def build_of(report: Mapping[str, Any]) -> tuple[str | None, str]:
    """Which build of the backend the probe found: ("cpu" | "cuda" | None, the evidence)."""
    backend = report.get("backend")
    build = report.get("build") or {}
    packages = report.get("packages") or {}
    if backend == "torch" and "cuda" in build:
        cuda = build["cuda"]
        return (
            ("cuda", f"torch.version.cuda is {cuda}")
            if cuda
            else (
                "cpu",
                "torch.version.cuda is None",
            )
        )
    if backend == "tensorflow" and "cuda" in build:
        built = bool(build["cuda"])
        return ("cuda" if built else "cpu"), f"tf.test.is_built_with_cuda() is {built}"
    if backend == "jax":
        plugins = sorted(name for name in packages if name.startswith("jax-cuda"))
        if plugins:
            return "cuda", "jax with " + ", ".join(plugins)
        return "cpu", "jax without a CUDA plugin"
    return None, ""


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


def _run_probe(
    python: Path,
    request: Mapping[str, Any],
    environ: Mapping[str, str] | None,
    version: tuple[int, int] | None,
    what: str,
) -> dict[str, Any]:
    result = run_python(
        python,
        ["-c", PROBE_SOURCE, json.dumps(request)],
        version=version,
        env=environ,
        what=what,
        check=False,
        timeout=900,
    )
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
            except (ValueError, RecursionError):
                break
            if isinstance(data, dict):
                return data
            break
    raise SmokeError(f"{what} failed: {python} printed no report", details=result.output_tail)


def installed_packages(python: Path, *, version: tuple[int, int] | None) -> dict[str, str]:
    """Distributions the environment's interpreter sees, without importing keras."""
    data = _run_probe(python, {"mode": "packages"}, None, version, "listing installed packages")
    packages: dict[str, str] = data["packages"]
    return packages


REQUIRED_ENTRIES = ("placeholder", "variable", "function")


@dataclass(frozen=True)
class BackendModuleReport:
    module: str
    import_error: str | None
    missing: tuple[str, ...]
    details: str | None = None

    @property
    def ok(self) -> bool:
        return self.import_error is None and not self.missing

    def problem(self) -> str:
        if self.import_error:
            return f"backend module {self.module} does not import: {self.import_error}"
        return (
            f"backend module {self.module} lacks {', '.join(self.missing)}: Keras 2 requires "
            f"{', '.join(REQUIRED_ENTRIES)}"
        )


def check_backend_module(
    python: Path, module: str, *, environ: Mapping[str, str], version: tuple[int, int] | None
) -> BackendModuleReport:
    """Import an external Keras 2 backend the way Keras does, in the target interpreter."""
    env = probe_environ(environ, keep_keras_home=True)
    env["KERAS_BACKEND"] = module
    with tempfile.TemporaryDirectory(prefix="kboot-keras-home-") as home:
        env["KERAS_HOME"] = home  # Keras 2 writes a keras.json at import: not into anyone's home
        data = _run_probe(
            python,
            {"mode": "backend-module", "backend": module},
            env,
            version,
            f"checking backend module {module}",
        )
    return BackendModuleReport(
        module, data.get("import_error"), tuple(data.get("missing", ())), data.get("traceback")
    )
