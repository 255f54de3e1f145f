"""GPU traps `kboot doctor` names, each planted in a real virtualenv (dist-info folders,
the nvidia wheels' library layout, LD_LIBRARY_PATH folders, variables) and a machine
with a driver given as the diagnosis reads it (`host`): this machine has no GPU. An error
among them fails the smoke test of the CUDA build as well; a warning does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap.doctor.examine import examine
from bootstrap.envs.diagnosis import diagnose
from bootstrap.envs.findings import Finding
from bootstrap.envs.smoke import Expectation
from bootstrap.envs.verify import run_smoke
from bootstrap.install.accelerators import HostAccelerators
from bootstrap.install.venv import VirtualEnv
from helpers import handmade_env, plant

LINUX = "x86_64-unknown-linux-gnu"
DRIVER = HostAccelerators(LINUX, "580.159.04", "/proc/driver/nvidia/version")
NO_DRIVER = HostAccelerators(LINUX)
JAX_CUDA = {
    "keras": "3.15.1",
    "jax": "0.6.0",
    "jaxlib": "0.6.0",
    "jax-cuda12-plugin": "0.6.0",
    "jax-cuda12-pjrt": "0.6.0",
    "nvidia-cudnn-cu12": "9.5.1.17",
    "nvidia-cublas-cu12": "12.8.4.1",
}
JAX_EXPECTED = Expectation("jax", "float32", "channels_last", 1e-07, gpu=True, allow_cpu=True)


@pytest.fixture
def venv(tmp_path: Path) -> VirtualEnv:
    env = handmade_env(tmp_path / "handmade")
    home = tmp_path / "keras-home"
    home.mkdir()
    (home / "keras.json").write_text('{"backend": "jax"}')
    return env


def wheel_libraries(env: VirtualEnv) -> None:
    """Where nvidia-cudnn-cu12 and nvidia-cublas-cu12 put their libraries."""
    for folder, names in (
        ("cudnn", ("libcudnn.so.9", "libcudnn_ops.so.9")),
        ("cublas", ("libcublas.so.12", "libcublasLt.so.12")),
    ):
        lib = env.site_packages / "nvidia" / folder / "lib"
        lib.mkdir(parents=True)
        for name in names:
            (lib / name).write_bytes(b"")


def cuda_folder(tmp_path: Path, **versions: str) -> Path:
    """A CUDA installation's lib64 as the toolkit lays it out: libX.so.N -> libX.so.N.m.p."""
    folder = tmp_path / "cuda" / "lib64"
    folder.mkdir(parents=True)
    for soname, version in versions.items():
        name = soname.replace("_so_", ".so.")
        (folder / f"{name}.{version}").write_bytes(b"")
        (folder / name).symlink_to(f"{name}.{version}")
    return folder


def user_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "XLA_", "TF_"))}
    environ.pop("LD_LIBRARY_PATH", None)
    return {**environ, "KERAS_HOME": str(tmp_path / "keras-home"), **extra}


def found(env: VirtualEnv, environ: dict[str, str], code: str, host: HostAccelerators = DRIVER
          ) -> list[Finding]:  # fmt: skip
    return [f for f in examine(env.python, environ, host=host).findings if f.code == code]


def test_an_older_cudnn_in_ld_library_path_is_an_error_and_fails_the_smoke_test(
    venv: VirtualEnv, tmp_path: Path
) -> None:
    plant(venv.site_packages, JAX_CUDA)
    wheel_libraries(venv)
    folder = cuda_folder(tmp_path, libcudnn_so_9="1.0", libcudnn_ops_so_9="1.0")
    (folder / "libnpp.so.12").write_bytes(b"")  # no wheel here brings it: not named
    environ = user_environ(tmp_path, LD_LIBRARY_PATH=f"/nowhere:{folder}")
    (finding,) = found(venv, environ, "ld-library-path")
    assert finding.severity == "error"
    assert finding.title == (
        f"LD_LIBRARY_PATH loads libcudnn.so.9, libcudnn_ops.so.9 from {folder}, older than "
        "the nvidia-cudnn-cu12 9.5.1.17 installed here: CUDA fails at run time"
    )
    assert "libcudnn.so.9 (9.1.0)" in finding.evidence and "jax-cuda12-plugin" in finding.evidence
    assert "nvidia/cudnn/lib" in finding.evidence and "libnpp" not in finding.evidence
    assert finding.fix.startswith(f"remove {folder} from LD_LIBRARY_PATH")
    smoke = run_smoke(venv, JAX_EXPECTED, scope="user", environ=environ, host=DRIVER)
    assert not smoke.ok and any(finding.title in p for p in smoke.problems), smoke.problems


def test_a_newer_or_unversioned_copy_is_a_warning_the_smoke_test_passes(
    venv: VirtualEnv, tmp_path: Path
) -> None:
    plant(venv.site_packages, JAX_CUDA)
    wheel_libraries(venv)
    folder = cuda_folder(tmp_path, libcublas_so_12="9.1.4")
    (folder / "libcudnn.so.9").write_bytes(b"")  # a plain file: its name hides the version
    environ = user_environ(tmp_path, LD_LIBRARY_PATH=str(folder))
    findings = found(venv, environ, "ld-library-path")
    assert [(f.severity, f.title) for f in findings] == [
        ("warning", f"LD_LIBRARY_PATH loads libcublas.so.12 from {folder} instead of "
                    "nvidia-cublas-cu12 12.8.4.1"),
        ("warning", f"LD_LIBRARY_PATH loads libcudnn.so.9 from {folder} instead of "
                    "nvidia-cudnn-cu12 9.5.1.17"),
    ]  # fmt: skip
    assert "version not in its name" in findings[1].evidence
    smoke = run_smoke(venv, JAX_EXPECTED, scope="user", environ=environ, host=DRIVER)
    assert smoke.ok, smoke.problems


@pytest.mark.parametrize(
    ("packages", "host", "ld"),
    [
        (JAX_CUDA, NO_DRIVER, True),  # no driver: no CUDA library is loaded
        (JAX_CUDA, DRIVER, False),  # LD_LIBRARY_PATH not set
        # torch finds its wheels' libraries itself
        ({"keras": "3.15.1", "torch": "2.11.0+cu128", "nvidia-cudnn-cu12": "9.5.1.17"},
         DRIVER, True),
    ],
)  # fmt: skip
def test_no_shadowing_reported(
    venv: VirtualEnv, tmp_path: Path, packages: dict[str, str], host: HostAccelerators, ld: bool
) -> None:
    plant(venv.site_packages, packages)
    wheel_libraries(venv)
    folder = cuda_folder(tmp_path, libcudnn_so_9="1.0")
    environ = user_environ(tmp_path, **({"LD_LIBRARY_PATH": str(folder)} if ld else {}))
    assert found(venv, environ, "ld-library-path", host) == []


@pytest.mark.parametrize("part", ["jax-cuda12-plugin", "jax-cuda12-pjrt"])
def test_a_cuda_plugin_of_another_version_than_jaxlib(
    venv: VirtualEnv, tmp_path: Path, part: str
) -> None:
    plant(venv.site_packages, {**JAX_CUDA, part: "0.5.3"})
    (finding,) = found(venv, user_environ(tmp_path), "jax-plugin")
    assert finding.severity == "error"
    assert f"{part} 0.5.3, jaxlib 0.6.0" in finding.evidence
    assert finding.fix.startswith(f"pip install '{part}==0.6.0'")
    assert "'jax[cuda12]==0.6.0'" in finding.fix


TF_CUDA_LIBS = {"nvidia-cudnn-cu12": "9.5.1.17", "nvidia-cublas-cu12": "12.8.4.1"}


@pytest.mark.parametrize(
    ("packages", "host", "warned"),
    [
        ({"tensorflow": "2.21.0"}, DRIVER, True),
        ({"tensorflow": "2.21.0", **TF_CUDA_LIBS}, DRIVER, False),  # [and-cuda]
        ({"tensorflow": "2.21.0"}, NO_DRIVER, False),  # the CPU is all there is
        ({"tensorflow-cpu": "2.21.0"}, DRIVER, False),  # the CPU, on purpose
        ({"tensorflow": "2.21.0"}, HostAccelerators("aarch64-apple-darwin", "580.1", "t"), False),
    ],
)
def test_tensorflow_without_and_cuda_on_a_machine_with_a_driver(
    venv: VirtualEnv,
    tmp_path: Path,
    packages: dict[str, str],
    host: HostAccelerators,
    warned: bool,
) -> None:
    plant(venv.site_packages, {"keras": "3.15.1", **packages})
    findings = found(venv, user_environ(tmp_path), "tf-without-cuda", host)
    assert len(findings) == warned
    if warned:
        (finding,) = findings
        assert finding.severity == "warning" and "without [and-cuda]" in finding.title
        assert "NVIDIA driver 580.159.04" in finding.evidence
        assert finding.fix.startswith("pip install 'tensorflow[and-cuda]==2.21.0'")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, ["XLA_PYTHON_CLIENT_PREALLOCATE=false", "TF_FORCE_GPU_ALLOW_GROWTH=true"]),
        ({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, ["TF_FORCE_GPU_ALLOW_GROWTH=true"]),
        ({"TF_FORCE_GPU_ALLOW_GROWTH": "1"}, ["XLA_PYTHON_CLIENT_PREALLOCATE=false",
                                               "TF_FORCE_GPU_ALLOW_GROWTH=true"]),  # "true" only
        ({"XLA_PYTHON_CLIENT_MEM_FRACTION": ".4", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}, []),
        ({"XLA_PYTHON_CLIENT_PREALLOCATE": "False", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}, []),
    ],
)  # fmt: skip
def test_jax_and_tensorflow_both_reserving_the_gpu(
    venv: VirtualEnv, tmp_path: Path, variables: dict[str, str], named: list[str]
) -> None:
    plant(venv.site_packages, {**JAX_CUDA, "tensorflow": "2.21.0"})
    findings = found(venv, user_environ(tmp_path, **variables), "gpu-memory")
    if not named:
        assert findings == []
        return
    (finding,) = findings
    assert finding.severity == "warning" and "both reserve" in finding.title
    assert "jax-cuda12-plugin 0.6.0 and tensorflow 2.21.0" in finding.evidence
    assert finding.fix.startswith("export " + " ".join(named) + " (")
    if "TF_FORCE_GPU_ALLOW_GROWTH" in variables:
        assert "TF_FORCE_GPU_ALLOW_GROWTH='1'" in finding.evidence
    smoke = run_smoke(venv, JAX_EXPECTED, scope="user", environ=user_environ(tmp_path), host=DRIVER)
    assert smoke.ok, smoke.problems  # a warning: it works, badly


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
LIBRARY_NAMES = st.one_of(
    NAMES, st.sampled_from(["libcudnn.so.9", "libcudnn.so.9.1.0", "libcudnn.so.9.x", "lib.so.1"])
)


@settings(max_examples=200)
@given(
    packages=st.dictionaries(
        st.one_of(NAMES, st.sampled_from(["tensorflow", "jax", "jaxlib", "jax-cuda12-plugin",
                                           "jax-cuda12-pjrt", "nvidia-cudnn-cu12", "torch"])),
        NAMES,
    ),
    wheel=st.dictionaries(LIBRARY_NAMES, NAMES, max_size=4),
    held=st.dictionaries(LIBRARY_NAMES, LIBRARY_NAMES, max_size=4),
    variables=st.dictionaries(
        st.sampled_from(["LD_LIBRARY_PATH", "XLA_PYTHON_CLIENT_PREALLOCATE",
                         "TF_FORCE_GPU_ALLOW_GROWTH", "XLA_PYTHON_CLIENT_MEM_FRACTION"]),
        st.one_of(st.none(), NAMES),
    ),
)  # fmt: skip
def test_any_packages_and_libraries_on_disk_give_findings(
    packages: dict[str, str],
    wheel: dict[str, str],
    held: dict[str, str],
    variables: dict[str, str | None],
) -> None:
    """Names and versions come from folder names on disk: any of them gives findings."""
    report = {
        "packages": packages,
        "environ": variables,
        "nvidia_libraries": wheel,
        "library_path": [{"folder": "/x", "libraries": held}],
        "keras_json": {"path": "/h/.keras/keras.json", "exists": False},
    }
    for host in (DRIVER, NO_DRIVER):
        for finding in diagnose(report, {}, host):
            assert finding.severity in ("error", "warning", "info") and finding.title
