"""The smoke test's verdict, from injected probe reports (no environment, no keras)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bootstrap.envs.smoke import (
    SCRUBBED,
    Expectation,
    HostGpuInfo,
    evaluate,
    probe_environ,
)

NO_GPU_HOST = HostGpuInfo(driver_version=None, nvidia_smi=False, cuda_visible_devices=None)
DRIVER_HOST = HostGpuInfo(driver_version="550.54.14", nvidia_smi=True, cuda_visible_devices="")

EXPECT = Expectation(
    backend="jax", floatx="float32", image_data_format="channels_last", epsilon=1e-07
)
GOOD: dict[str, Any] = {
    "python": "3.12.1",
    "backend": "jax",
    "floatx": "float32",
    "image_data_format": "channels_last",
    "epsilon": 1e-07,
    "keras_version": "3.8.0",
    "backend_version": "0.4.35",
    "devices": [{"kind": "cpu", "name": "TFRT_CPU_0"}],
    "build": {"default_backend": "cpu"},
    "compute": {"dtype": "float32", "values": [2.0, 2.0, 2.0, 2.0]},
    "packages": {"keras": "3.8.0", "jax": "0.4.35", "jaxlib": "0.4.35"},
}


def report(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data.update(changes)
    return data


def gpu(expect: Expectation = EXPECT, *, allow_cpu: bool = False) -> Expectation:
    return Expectation(
        expect.backend,
        expect.floatx,
        expect.image_data_format,
        expect.epsilon,
        gpu=True,
        allow_cpu=allow_cpu,
    )


def test_all_match_is_ok() -> None:
    result = evaluate(report(), EXPECT, host=NO_GPU_HOST, seconds=1.5)
    assert result.ok is True
    assert result.problems == ()
    assert result.warnings == ()
    assert result.keras_version == "3.8.0"
    assert result.backend_version == "0.4.35"
    assert result.reported == {
        "backend": "jax",
        "floatx": "float32",
        "image_data_format": "channels_last",
        "epsilon": 1e-07,
        "build": "cpu (jax without a CUDA plugin)",
        "compute_dtype": "float32",
    }
    assert result.packages["jax"] == "0.4.35"
    assert result.to_dict()["seconds"] == 1.5
    assert result.to_dict()["devices"] == [{"kind": "cpu", "name": "TFRT_CPU_0"}]


def test_epsilon_close_enough_is_ok() -> None:
    assert evaluate(report(epsilon=1.00000000001e-07), EXPECT, host=NO_GPU_HOST).ok


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("backend", "tensorflow"),
        ("floatx", "float64"),
        ("image_data_format", "channels_first"),
        ("epsilon", 1e-05),
        ("epsilon", None),
        ("epsilon", "1e-07"),
    ],
)
def test_each_mismatch_is_named(key: str, value: Any) -> None:
    result = evaluate(report(**{key: value}), EXPECT, host=NO_GPU_HOST)
    assert result.ok is False
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.startswith(f"{key}: keras reports {value!r}")
    assert repr(getattr(EXPECT, key)) in problem


def test_missing_key_is_a_mismatch() -> None:
    data = report()
    del data["image_data_format"]
    result = evaluate(data, EXPECT, host=NO_GPU_HOST)
    assert not result.ok
    assert result.problems == (
        "image_data_format: keras reports None, the profile asks for 'channels_last'",
    )


def test_compute_dtype_mismatch() -> None:
    expect = Expectation("torch", "float16", "channels_last", 1e-07)
    data = report(
        backend="torch", floatx="float16", compute={"dtype": "float32", "values": [2.0] * 4}
    )
    result = evaluate(data, expect, host=NO_GPU_HOST)
    assert not result.ok
    assert len(result.problems) == 1
    assert "returned float32" in result.problems[0]
    assert "does not compute in float16" in result.problems[0]
    assert result.reported["compute_dtype"] == "float32"


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_float64_on_jax_with_x64_turned_off_in_the_shell_blames_the_variable(value: str) -> None:
    expect = Expectation("jax", "float64", "channels_last", 1e-07)
    data = report(floatx="float64", jax_enable_x64_env=value,
                  compute={"dtype": "float32", "values": [2.0] * 4})  # fmt: skip
    (problem,) = evaluate(data, expect, host=NO_GPU_HOST).problems
    assert f"JAX_ENABLE_X64={value!r} in your environment turns JAX's 64-bit mode off" in problem
    assert "unset it" in problem and "does not compute" not in problem


def test_float64_on_jax_without_the_variable_still_blames_the_backend() -> None:
    expect = Expectation("jax", "float64", "channels_last", 1e-07)
    data = report(floatx="float64", compute={"dtype": "float32", "values": [2.0] * 4})
    (problem,) = evaluate(data, expect, host=NO_GPU_HOST).problems
    assert "does not compute in float64" in problem


def test_wrong_compute_values() -> None:
    result = evaluate(
        report(compute={"dtype": "float32", "values": [2.0, 2.0, 2.0, 3.0]}),
        EXPECT,
        host=NO_GPU_HOST,
    )
    assert not result.ok
    assert "not all 2.0" in result.problems[0]


def test_failed_computation() -> None:
    data = report(compute_error="RuntimeError: boom", traceback="Traceback ...boom")
    del data["compute"]
    result = evaluate(data, EXPECT, host=NO_GPU_HOST)
    assert not result.ok
    assert "a tiny computation failed: RuntimeError: boom" in result.problems
    assert result.details == "Traceback ...boom"


def test_import_error() -> None:
    data = {
        "python": "3.12.1",
        "import_error": "ModuleNotFoundError: No module named 'scipy'",
        "traceback": "Traceback (most recent call last): ...",
        "packages": {"keras": "3.8.0"},
    }
    result = evaluate(data, EXPECT, host=NO_GPU_HOST)
    assert result.ok is False
    assert result.problems == (
        "`import keras` failed: ModuleNotFoundError: No module named 'scipy'",
    )
    assert result.details == "Traceback (most recent call last): ..."
    assert result.packages == {"keras": "3.8.0"}


def test_no_report_at_all() -> None:
    result = evaluate(None, EXPECT, host=NO_GPU_HOST, output_tail="Segmentation fault")
    assert not result.ok
    assert "no report" in result.problems[0]
    assert result.details == "Segmentation fault"


def test_devices_error_is_a_warning() -> None:
    result = evaluate(
        report(devices=[], devices_error="RuntimeError: no platform"), EXPECT, host=NO_GPU_HOST
    )
    assert result.ok
    assert result.warnings == ("could not list devices: RuntimeError: no platform",)


# --- GPU -------------------------------------------------------------------------------------


def test_gpu_profile_on_cpu_only_is_a_problem() -> None:
    result = evaluate(report(), gpu(), host=DRIVER_HOST)
    assert result.ok is False
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert "the profile needs a GPU, but jax sees only: TFRT_CPU_0" in problem
    assert "NVIDIA driver 550.54.14 is loaded" in problem
    assert "CUDA_VISIBLE_DEVICES=''" in problem
    assert "no jax CUDA plugin" in problem
    assert "--allow-cpu" in problem


def test_gpu_diagnosis_without_driver() -> None:
    result = evaluate(report(devices=[]), gpu(), host=NO_GPU_HOST)
    problem = result.problems[0]
    assert "jax sees only: no devices" in problem
    assert "no NVIDIA driver found" in problem
    assert "CUDA_VISIBLE_DEVICES" not in problem


def test_gpu_diagnosis_smi_without_kernel_driver() -> None:
    host = HostGpuInfo(driver_version=None, nvidia_smi=True, cuda_visible_devices=None)
    problem = evaluate(report(), gpu(), host=host).problems[0]
    assert "nvidia-smi is on PATH but no NVIDIA kernel driver is loaded" in problem


def test_gpu_diagnosis_jax_with_cuda_plugin_does_not_blame_the_plugin() -> None:
    packages = {**GOOD["packages"], "jax-cuda12-plugin": "0.4.35", "jax-cuda12-pjrt": "0.4.35"}
    problem = evaluate(report(packages=packages), gpu(), host=DRIVER_HOST).problems[0]
    assert "no jax CUDA plugin" not in problem


def test_gpu_diagnosis_torch_cpu_build() -> None:
    expect = gpu(Expectation("torch", "float32", "channels_last", 1e-07))
    data = report(backend="torch", devices=[{"kind": "cpu", "name": "cpu"}], build={"cuda": None})
    problem = evaluate(data, expect, host=DRIVER_HOST).problems[0]
    assert "torch sees only: cpu" in problem
    assert "CPU-only build" in problem


def test_gpu_diagnosis_tensorflow_without_cuda() -> None:
    expect = gpu(Expectation("tensorflow", "float32", "channels_last", 1e-07))
    data = report(
        backend="tensorflow",
        devices=[{"kind": "cpu", "name": "/physical_device:CPU:0"}],
        build={"cuda": False},
    )
    problem = evaluate(data, expect, host=DRIVER_HOST).problems[0]
    assert "tensorflow sees only: /physical_device:CPU:0" in problem
    assert "built without CUDA" in problem


def test_allow_cpu_turns_the_gpu_problem_into_a_warning() -> None:
    result = evaluate(report(), gpu(allow_cpu=True), host=DRIVER_HOST)
    assert result.ok is True
    assert result.problems == ()
    assert len(result.warnings) == 1
    assert "the profile needs a GPU" in result.warnings[0]
    assert result.warnings[0].endswith("(accepted: --allow-cpu)")


def test_allow_cpu_does_not_hide_other_problems() -> None:
    result = evaluate(report(floatx="float64"), gpu(allow_cpu=True), host=DRIVER_HOST)
    assert not result.ok
    assert len(result.problems) == 1 and result.problems[0].startswith("floatx:")


def test_gpu_present_is_ok() -> None:
    devices = [{"kind": "cpu", "name": "cpu"}, {"kind": "gpu", "name": "cuda:0"}]
    result = evaluate(report(devices=devices), gpu(), host=DRIVER_HOST)
    assert result.ok is True
    assert result.warnings == ()
    assert result.devices == tuple(devices)


def test_host_description_with_visible_devices() -> None:
    host = HostGpuInfo(driver_version="535.1", nvidia_smi=False, cuda_visible_devices="0,1")
    assert host.describe() == "NVIDIA driver 535.1 is loaded; CUDA_VISIBLE_DEVICES='0,1'"


# --- the probe's environment -----------------------------------------------------------------


BASE = {
    "PATH": "/usr/bin",
    "HOME": "/home/ada",
    "KERAS_BACKEND": "torch",
    "PYTHONPATH": "/somewhere",
    "PYTHONHOME": "/elsewhere",
    "PYTHONSTARTUP": "/startup.py",
    "KERAS_HOME": "/home/ada/kh",
}


def test_probe_environ_scrubs_and_drops_keras_home() -> None:
    base = dict(BASE)
    env = probe_environ(base, keep_keras_home=False)
    for name in SCRUBBED:
        assert name not in env
    assert "KERAS_HOME" not in env
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/ada"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert base == BASE  # the caller's mapping is not modified


def test_probe_environ_keeps_keras_home_for_user_scope() -> None:
    env = probe_environ(BASE, keep_keras_home=True)
    assert env["KERAS_HOME"] == "/home/ada/kh"
    assert "KERAS_BACKEND" not in env and "PYTHONPATH" not in env


def test_probe_environ_keeps_the_users_tf_log_level() -> None:
    env = probe_environ({**BASE, "TF_CPP_MIN_LOG_LEVEL": "0"}, keep_keras_home=False)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0"
