"""`kboot doctor` on environments made by hand (python -m venv, pip: not kboot), each with
a problem planted; and the pure diagnosis over reports for what this machine cannot
show (a driver too old for a CUDA build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from uv import find_uv_bin

from bootstrap.accelerators import HostAccelerators
from bootstrap.doctor import diagnose, examine
from helpers import kboot

LINUX = "x86_64-unknown-linux-gnu"
NO_DRIVER = HostAccelerators(LINUX)


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A virtualenv made by hand, without pip: packages are planted as dist-info folders."""
    folder = tmp_path / "handmade"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder


def site(venv: Path) -> Path:
    return next(venv.glob("lib/python3.*/site-packages"))


def plant(venv: Path, **packages: str) -> None:
    for name, version in packages.items():
        # installers write the name with underscores, as wheels do
        info = site(venv) / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def doctor(venv: Path, tmp_path: Path, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_")}
    base["HOME"] = str(tmp_path / "user")
    Path(base["HOME"]).mkdir(exist_ok=True)
    proc = kboot("doctor", "--python", str(venv), "--json", *args, env={**base, **env})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def codes(data: dict[str, Any], severity: str | None = None) -> set[str]:
    return {f["code"] for f in data["findings"] if severity in (None, f["severity"])}


def finding(data: dict[str, Any], code: str) -> dict[str, str]:
    (found,) = [f for f in data["findings"] if f["code"] == code]
    return found


def user_keras_json(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user" / ".keras" / "keras.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_no_keras(venv: Path, tmp_path: Path) -> None:
    code, data = doctor(venv, tmp_path)
    assert code == 1 and "no-keras" in codes(data, "error")
    assert data["ok"] is False


def test_a_healthy_environment_says_where_the_backend_comes_from(
    venv: Path, tmp_path: Path
) -> None:
    plant(venv, keras="3.15.1", jax="0.12.0", jaxlib="0.12.0", numpy="2.4.6")
    user_keras_json(tmp_path, '{"backend": "jax", "floatx": "float32"}')
    code, data = doctor(venv, tmp_path)
    assert code == 0 and data["ok"]
    assert finding(data, "backend")["title"] == "backend: jax"
    assert data["keras_json"]["path"].endswith("user/.keras/keras.json")


def test_the_shell_backend_wins_and_doctor_says_so(venv: Path, tmp_path: Path) -> None:
    plant(venv, keras="3.15.1", torch="2.11.0")
    user_keras_json(tmp_path, '{"backend": "jax"}')
    _code, data = doctor(venv, tmp_path, KERAS_BACKEND="torch")
    assert finding(data, "backend")["title"] == "backend: torch"
    assert "KERAS_BACKEND in your shell" in finding(data, "backend")["evidence"]


def test_a_conda_activation_script_that_sets_the_backend(venv: Path, tmp_path: Path) -> None:
    plant(venv, keras="3.15.1", tensorflow="2.21.0")
    scripts = venv / "etc" / "conda" / "activate.d"
    scripts.mkdir(parents=True)
    (scripts / "keras.sh").write_text("export KERAS_BACKEND=jax\n")
    _code, data = doctor(venv, tmp_path)
    found = finding(data, "conda-activate")
    assert found["severity"] == "warning" and "KERAS_BACKEND=jax" in found["title"]
    assert "keras.sh" in found["evidence"]


def test_a_startup_file_that_sets_the_backend(venv: Path, tmp_path: Path) -> None:
    plant(venv, keras="3.15.1", torch="2.11.0", jax="0.12.0", jaxlib="0.12.0")
    (site(venv) / "zz_backend.pth").write_text(
        "import os; os.environ.setdefault('KERAS_BACKEND', 'torch')\n"
    )
    user_keras_json(tmp_path, '{"backend": "jax"}')
    _code, data = doctor(venv, tmp_path)
    backend = finding(data, "backend")
    assert backend["title"] == "backend: torch"
    assert "zz_backend.pth" in backend["evidence"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"backend": "jax",,}', "keras-json-invalid"),
        ('{"backend": "jax", "epsilon": 1}', "epsilon-int"),
        ('{"backend": "jax", "floatx": "float8"}', "bad-floatx"),
        ('{"backend": "jaxx"}', "bad-backend"),
    ],
)
def test_a_broken_keras_json(venv: Path, tmp_path: Path, text: str, code: str) -> None:
    plant(venv, keras="3.15.1", jax="0.12.0", jaxlib="0.12.0")
    user_keras_json(tmp_path, text)
    exit_code, data = doctor(venv, tmp_path)
    assert exit_code == 1 and code in codes(data, "error")


@pytest.mark.parametrize(
    ("packages", "code"),
    [
        ({"keras": "3.15.1", "tensorflow": "2.15.0"}, "tf-too-old"),
        ({"keras": "3.15.1", "tensorflow": "2.21.0", "tensorflow-cpu": "2.21.0"}, "tf-twice"),
        ({"keras": "3.15.1", "jax": "0.12.0", "jaxlib": "0.10.2"}, "jax-jaxlib"),
        ({"keras": "3.15.1", "jax": "0.12.0"}, "no-jaxlib"),
        ({"keras": "3.15.1", "numpy": "2.4.6"}, "backend-missing"),  # backend tensorflow
    ],
)
def test_package_conflicts(venv: Path, tmp_path: Path, packages: dict[str, str], code: str) -> None:
    plant(venv, **packages)
    user_keras_json(tmp_path, '{"backend": "jax"}' if "jax" in packages else "{}")
    exit_code, data = doctor(venv, tmp_path)
    assert exit_code == 1 and code in codes(data, "error"), data["findings"]


def test_a_cuda_build_without_a_driver(venv: Path, tmp_path: Path) -> None:
    assert not Path("/proc/driver/nvidia/version").exists(), "this test needs a CPU machine"
    plant(venv, keras="3.15.1", torch="2.11.0+cu130")
    user_keras_json(tmp_path, '{"backend": "torch"}')
    _code, data = doctor(venv, tmp_path)
    found = finding(data, "cuda-no-driver")
    assert found["severity"] == "warning" and "torch 2.11.0+cu130" in found["title"]


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ('{"backend": "jax", "floatx": "float64"}', "jax-float64"),
        ('{"backend": "jax", "floatx": "float16"}', "float16"),
        ('{"backend": "torch", "floatx": "float64"}', "float64-promoted"),
    ],
)
def test_numeric_traps(venv: Path, tmp_path: Path, config: str, code: str) -> None:
    plant(venv, keras="3.15.1", jax="0.12.0", jaxlib="0.12.0", torch="2.11.0")
    user_keras_json(tmp_path, config)
    exit_code, data = doctor(venv, tmp_path)
    assert exit_code == 0 and code in codes(data, "warning")


def test_pythonpath_is_a_warning(venv: Path, tmp_path: Path) -> None:
    plant(venv, keras="3.15.1", jax="0.12.0", jaxlib="0.12.0")
    user_keras_json(tmp_path, '{"backend": "jax"}')
    _, data = doctor(venv, tmp_path, PYTHONPATH="/somewhere")
    assert "pythonpath" in codes(data, "warning")


def test_a_driver_too_old_for_the_build() -> None:
    """Pure diagnosis: a CUDA 13 torch on a machine whose driver runs CUDA 12 only."""
    report = {
        "executable": "/x/bin/python",
        "packages": {"keras": "3.15.1", "torch": "2.11.0+cu130", "jax-cuda13-plugin": "0.11.2",
                     "jax": "0.11.2", "jaxlib": "0.11.2"},
        "environ": {},
        "keras_json": {"path": "/h/.keras/keras.json", "exists": True,
                       "values": {"backend": "torch"}},
    }  # fmt: skip
    found = diagnose(report, {}, HostAccelerators(LINUX, "550.144.03", "test"))
    too_old = [f for f in found if f.code == "driver-too-old"]
    assert len(too_old) == 2 and all(f.severity == "error" for f in too_old)
    assert not [
        f
        for f in diagnose(report, {}, HostAccelerators(LINUX, "580.1", "t"))
        if f.code == "driver-too-old"
    ]


def test_not_a_python_a_broken_one_and_python_2_are_usage_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("x")
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    for target in (text, broken, tmp_path / "missing"):
        proc = kboot("doctor", "--python", str(target))
        assert proc.returncode == 2, proc.stderr
        assert "kboot: error:" in proc.stderr and "Traceback" not in proc.stderr
    old = Path.home() / ".pyenv" / "versions"
    legacy = next(iter(sorted(old.glob("2.7*/bin/python2.7"))), None) if old.is_dir() else None
    if legacy is None:
        legacy = tmp_path / "python2"
        legacy.write_text(
            "#!/bin/sh\n"
            'echo "  File x, line 1"; echo "    print x"; '
            'echo "SyntaxError: invalid syntax" >&2; exit 1\n'
        )
        legacy.chmod(0o755)
    proc = kboot("doctor", "--python", str(legacy))
    assert proc.returncode == 2 and ("3.5 and newer" in proc.stderr or "too old" in proc.stderr)


@pytest.mark.integration
def test_import_on_a_real_handmade_environment(tmp_path: Path) -> None:
    """venv + an installer (not kboot), float64 on JAX planted: --import shows what runs."""
    env = tmp_path / "real"
    subprocess.run([find_uv_bin(), "venv", "-q", "--python", sys.executable, str(env)], check=True)
    subprocess.run(
        [find_uv_bin(), "pip", "install", "-q", "--python", str(env / "bin" / "python"),
         "keras>=3.8,<4", "jax>=0.4.30"],
        check=True,
    )  # fmt: skip
    home = tmp_path / "user"
    (home / ".keras").mkdir(parents=True)
    (home / ".keras" / "keras.json").write_text('{"backend": "jax", "floatx": "float64"}')
    result = examine(
        env / "bin" / "python",
        {**{k: v for k, v in os.environ.items() if not k.startswith("KERAS_")}, "HOME": str(home)},
        do_import=True,
        host=NO_DRIVER,
    )
    assert result.ok, result.findings
    found = {f.code: f for f in result.findings}
    assert "jax-float64" in found
    assert found["imported"].title == "`import keras` gives backend jax, floatx float64"
    assert "cpu" in found["imported"].evidence.lower()


@pytest.mark.parametrize(
    ("packages", "code", "severity"),
    [
        ({"tf-keras": "2.21.0", "tensorflow": "2.21.0"}, "tf-keras", "error"),
        ({"keras": "3.15.1", "tf-keras": "2.21.0", "tensorflow": "2.21.0"}, "two-kerases", None),
        ({"keras": "2.15.0", "tensorflow": "2.15.0"}, "keras", "info"),
    ],
)
def test_which_keras(
    venv: Path, tmp_path: Path, packages: dict[str, str], code: str, severity: str | None
) -> None:
    plant(venv, **packages)
    user_keras_json(tmp_path, "{}")
    _, data = doctor(venv, tmp_path)
    assert code in codes(data, severity), data["findings"]
    if code == "keras":
        assert "Keras 2" in finding(data, "keras")["title"]


def test_an_unusable_home_falls_back_to_tmp_as_keras_does(venv: Path, tmp_path: Path) -> None:
    plant(venv, keras="3.15.1", numpy="2.4.6")
    _, data = doctor(venv, tmp_path, HOME=str(tmp_path / "no-such-home"))
    assert data["keras_json"]["path"] == "/tmp/.keras/keras.json"
    assert "/tmp fallback" in data["keras_json"]["source"]
