"""Every error `kboot doctor` reports fails the smoke test too (create, check, list): one
diagnosis behind both (bootstrap/envs/diagnosis.py, `environment_errors`).

Each doctor error kind is planted in a real virtualenv (dist-info folders, files, variables;
no download) that holds a stand-in keras which passes the smoke test on its own. Doctor
must report the error there, and the smoke test must fail with doctor's words. A new error
kind without a case here fails `test_every_doctor_error_kind_has_a_case`.
"""

from __future__ import annotations

import ast
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bootstrap.doctor.examine import examine
from bootstrap.envs import diagnosis, package_checks
from bootstrap.envs.smoke import Expectation
from bootstrap.envs.verify import run_smoke
from bootstrap.install.accelerators import HostAccelerators
from bootstrap.install.venv import VirtualEnv
from helpers import handmade_env, plant

LINUX = "x86_64-unknown-linux-gnu"
NO_DRIVER = HostAccelerators(LINUX)
DRIVER_580 = HostAccelerators(LINUX, "580.159.04", "test")
DRIVER_550 = HostAccelerators(LINUX, "550.144.03", "test")


@dataclass(frozen=True)
class Case:
    packages: dict[str, str]
    keras_json: str = "{}"
    environ: dict[str, str] = field(default_factory=dict)
    host: HostAccelerators = NO_DRIVER
    cuda: bool = False  # plant cuDNN 9.5 from a wheel, and an older one in LD_LIBRARY_PATH


KERAS, TF = {"keras": "3.15.1"}, {"tensorflow": "2.21.0"}
JAX = {"jax": "0.6.0", "jaxlib": "0.6.0"}
CASES: dict[str, Case] = {
    "no-keras": Case(TF),
    "tf-keras": Case({"tf-keras": "2.21.0", **TF}),
    "keras-json-invalid": Case({**KERAS, **TF}, '{"backend": "tensorflow",,}'),
    "epsilon-int": Case({**KERAS, **TF}, '{"epsilon": 1}'),
    "bad-floatx": Case({**KERAS, **TF}, '{"floatx": "float8"}'),
    "bad-image_data_format": Case({**KERAS, **TF}, '{"image_data_format": "channels_middle"}'),
    "bad-backend": Case({**KERAS, **TF}, '{"backend": "jaxx"}'),
    "backend-missing": Case({**KERAS, "numpy": "2.4.6"}, '{"backend": "torch"}'),
    "keras2-backend": Case({"keras": "2.15.0", **JAX}, '{"backend": "jax"}'),
    "tf-too-old": Case({**KERAS, "tensorflow": "2.15.0"}),
    "tf-twice": Case({**KERAS, **TF, "tensorflow-cpu": "2.21.0", "tf-keras": "2.21.0"}),
    "jax-jaxlib": Case({**KERAS, "jax": "0.6.0", "jaxlib": "0.4.30"}, '{"backend": "jax"}'),
    "no-jaxlib": Case({**KERAS, "jax": "0.6.0"}, '{"backend": "jax"}'),
    "jax-plugin": Case(
        {**KERAS, **JAX, "jax-cuda12-plugin": "0.5.3"}, '{"backend": "jax"}', host=DRIVER_580
    ),
    "driver-too-old": Case(
        {**KERAS, "torch": "2.11.0+cu130"}, '{"backend": "torch"}', host=DRIVER_550
    ),
    "jax-x64-invalid": Case({**KERAS, **JAX}, '{"backend": "jax"}', {"JAX_ENABLE_X64": "maybe"}),
    "ld-library-path": Case(
        {**KERAS, **JAX, "jax-cuda12-plugin": "0.6.0", "nvidia-cudnn-cu12": "9.5.1.17"},
        '{"backend": "jax"}',
        host=DRIVER_580,
        cuda=True,
    ),
}
#: Only `doctor --import` imports keras; the smoke test's own import fails on it.
IMPORT_FAILED = "import-failed"


def doctor_error_codes() -> set[str]:
    """Every `Finding(ERROR, code, ...)` in the diagnosis, f-string codes as patterns."""
    codes = set()
    for module in (diagnosis, package_checks):
        tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finding"):
                continue
            severity, code = node.args[0], node.args[1]
            if not (isinstance(severity, ast.Name) and severity.id == "ERROR"):
                continue
            if isinstance(code, ast.Constant):
                codes.add(str(code.value))
            else:
                assert isinstance(code, ast.JoinedStr)
                codes.add("".join(
                    str(p.value) if isinstance(p, ast.Constant) else "*" for p in code.values
                ))  # fmt: skip
    return codes


def test_every_doctor_error_kind_has_a_case() -> None:
    patterns = doctor_error_codes()
    assert len(patterns) > 10  # the collector found them
    cases = {*CASES, IMPORT_FAILED}
    assert {c for c in cases if not any(fnmatch.fnmatch(c, p) for p in patterns)} == set()
    assert {p for p in patterns if not fnmatch.filter(cases, p)} == set()


@pytest.fixture
def venv(tmp_path: Path) -> VirtualEnv:
    return handmade_env(tmp_path / "handmade")


def plant_cuda(env: VirtualEnv, tmp_path: Path) -> str:
    """cuDNN 9.5 as nvidia-cudnn-cu12 lays it out, and a cuDNN 9.1 in a CUDA folder."""
    wheel = env.site_packages / "nvidia" / "cudnn" / "lib"
    wheel.mkdir(parents=True)
    (wheel / "libcudnn.so.9").write_bytes(b"")
    system = tmp_path / "cuda-12.4" / "lib64"
    system.mkdir(parents=True)
    (system / "libcudnn.so.9.1.0").write_bytes(b"")
    (system / "libcudnn.so.9").symlink_to("libcudnn.so.9.1.0")
    (system / "libcublas.so.12").write_bytes(b"")  # no wheel brings it here: not named
    return str(system)


def user_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "JAX_"))}
    environ.pop("LD_LIBRARY_PATH", None)
    environ["KERAS_HOME"] = str(tmp_path / "keras-home")
    return {**environ, **extra}


def smoke_and_doctor(
    env: VirtualEnv, tmp_path: Path, case: Case
) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the smoke test's problems, doctor's errors {code: title}) for the planted case."""
    plant(env.site_packages, case.packages)
    extra = dict(case.environ)
    if case.cuda:
        extra["LD_LIBRARY_PATH"] = plant_cuda(env, tmp_path)
    environ = user_environ(tmp_path, **extra)
    home = Path(environ["KERAS_HOME"])
    home.mkdir()
    (home / "keras.json").write_text(case.keras_json)
    expected = Expectation("tensorflow", "float32", "channels_last", 1e-07)
    for backend in ("jaxx", "jax", "torch"):
        if f'"{backend}"' in case.keras_json:
            expected = Expectation(backend, "float32", "channels_last", 1e-07)
    smoke = run_smoke(env, expected, scope="user", environ=environ, host=case.host)
    doctor = examine(env.python, environ, host=case.host)
    return smoke.problems, {f.code: f.title for f in doctor.findings if f.severity == "error"}


def test_the_stand_in_passes_both_when_nothing_is_planted(venv: VirtualEnv, tmp_path: Path) -> None:
    problems, errors = smoke_and_doctor(venv, tmp_path, Case({**KERAS, **TF}))
    assert (problems, errors) == ((), {})


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_doctor_error_fails_the_smoke_test(
    venv: VirtualEnv, tmp_path: Path, code: str
) -> None:
    problems, errors = smoke_and_doctor(venv, tmp_path, CASES[code])
    assert code in errors, errors
    assert any(errors[code] in problem for problem in problems), problems


def test_a_keras_that_fails_to_import_fails_both(venv: VirtualEnv, tmp_path: Path) -> None:
    (venv.site_packages / "keras" / "__init__.py").write_text("raise ImportError('planted')\n")
    plant(venv.site_packages, {**KERAS, **TF})
    environ = user_environ(tmp_path)
    expected = Expectation("tensorflow", "float32", "channels_last", 1e-07)
    smoke = run_smoke(venv, expected, scope="user", environ=environ, host=NO_DRIVER)
    assert not smoke.ok and "`import keras` failed: ImportError: planted" in smoke.problems[0]
    doctor = examine(venv.python, environ, do_import=True, host=NO_DRIVER)
    assert [f.code for f in doctor.findings if f.severity == "error"] == [IMPORT_FAILED]
