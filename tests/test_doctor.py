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

from bootstrap.doctor.examine import diagnose, examine
from bootstrap.install.accelerators import HostAccelerators
from helpers import kboot
from machine import pyenv_python

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


@pytest.mark.needs("no-nvidia-driver")
def test_a_cuda_build_without_a_driver(venv: Path, tmp_path: Path) -> None:
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


@pytest.mark.parametrize(
    ("value", "code", "title"),
    [
        (None, "jax-float64", "JAX_ENABLE_X64 is not set"),
        ("0", "jax-float64", "JAX_ENABLE_X64='0' turns 64-bit mode off"),
        ("off", "jax-float64", "JAX_ENABLE_X64='off' turns 64-bit mode off"),
        ("on", None, None),  # JAX reads on, yes, true, 1 in any case as true
        ("Yes", None, None),
        ("TRUE", None, None),
        ("maybe", "jax-x64-invalid", "JAX_ENABLE_X64='maybe' is not a value JAX accepts"),
    ],
)
def test_jax_enable_x64_is_read_as_jax_reads_it(
    venv: Path, tmp_path: Path, value: str | None, code: str | None, title: str | None
) -> None:
    plant(venv, keras="3.15.1", jax="0.12.0", jaxlib="0.12.0")
    user_keras_json(tmp_path, '{"backend": "jax", "floatx": "float64"}')
    extra = {} if value is None else {"JAX_ENABLE_X64": value}
    _, data = doctor(venv, tmp_path, **extra)
    x64 = [f for f in data["findings"] if f["code"] in ("jax-float64", "jax-x64-invalid")]
    if code is None:
        assert x64 == []
    else:
        assert [f["code"] for f in x64] == [code] and title in x64[0]["title"]


def test_two_kerases_show_tf_use_legacy_keras_as_set_or_not(venv: Path, tmp_path: Path) -> None:
    plant(venv, keras="3.15.1", tf_keras="2.21.0", tensorflow="2.21.0")
    user_keras_json(tmp_path, '{"backend": "tensorflow"}')
    _, data = doctor(venv, tmp_path)
    (found,) = [f for f in data["findings"] if f["code"] == "two-kerases"]
    assert "TF_USE_LEGACY_KERAS (not set)" in found["evidence"] and "None" not in str(found)


#: A stand-in for keras that does what Keras 3 does at import: write a missing keras.json
#: (and its folder) with the defaults, in $KERAS_HOME or ~/.keras.
WRITING_KERAS = """
import json, os
_dir = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
os.makedirs(_dir, exist_ok=True)
_path = os.path.join(_dir, "keras.json")
if not os.path.exists(_path):
    with open(_path, "w") as f:
        json.dump({"backend": "tensorflow", "floatx": "float32"}, f)
class config:
    backend = staticmethod(lambda: "numpy")
    floatx = staticmethod(lambda: "float32")
    image_data_format = staticmethod(lambda: "channels_last")
    epsilon = staticmethod(lambda: 1e-07)
__version__ = "3.15.1"
"""


@pytest.mark.parametrize("had_folder", [False, True])
def test_doctor_import_changes_nothing_in_the_users_home(
    venv: Path, tmp_path: Path, had_folder: bool
) -> None:
    """Importing Keras writes ~/.keras/keras.json when it is missing: `doctor --import` takes
    away what its import made, so the next doctor run reports what the first one did."""
    plant(venv, keras="3.15.1", numpy="2.4.6")
    (site(venv) / "keras").mkdir()
    (site(venv) / "keras" / "__init__.py").write_text(WRITING_KERAS)
    home = tmp_path / "user"
    home.mkdir()
    if had_folder:
        (home / ".keras").mkdir()
        (home / ".keras" / "mine.txt").write_text("kept")
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    first_code, first = doctor(venv, tmp_path, "--import")
    after = sorted(p.relative_to(home) for p in home.rglob("*"))
    assert after == before  # no keras.json, no .keras folder left behind
    assert any(f["code"] == "imported" for f in first["findings"]), first
    second_code, second = doctor(venv, tmp_path)
    assert second_code == first_code
    assert second["keras_json"] == first["keras_json"]


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


@pytest.mark.parametrize("how", ["name", "version"])
def test_python_by_name_on_path_or_by_version_as_create_takes_it(tmp_path: Path, how: str) -> None:
    """`kboot doctor --python python3` (a name on PATH) and `--python 3.11` (a version)."""
    folder = Path(sys.executable).parent
    named = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if how == "name":
        link = tmp_path / "bin" / "mypython"
        link.parent.mkdir()
        link.symlink_to(sys.executable)
        value, path = "mypython", f"{link.parent}{os.pathsep}{os.environ['PATH']}"
    else:
        value, path = named.removeprefix("python"), f"{folder}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "HOME": str(tmp_path)}
    proc = kboot("doctor", "--python", value, "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr  # examined (no keras here is an error)
    data = json.loads(proc.stdout)
    assert data["python_version"].startswith(named.removeprefix("python")), data
    missing = kboot("doctor", "--python", "no-such-python-kboot", env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_not_a_python_a_broken_one_and_python_2_are_usage_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("x")
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    for target in (text, broken, tmp_path / "missing", Path("/bin/ls")):
        proc = kboot("doctor", "--python", str(target))
        assert proc.returncode == 2, proc.stderr
        assert "kboot: error:" in proc.stderr and "Traceback" not in proc.stderr
        assert '{"import"' not in proc.stderr  # the probe's arguments are not the user's
    legacy = tmp_path / "python2"  # what Python 2 says to the probe (a real one: below)
    legacy.write_text(
        "#!/bin/sh\n"
        'echo "  File x, line 1"; echo "    print x"; '
        'echo "SyntaxError: invalid syntax" >&2; exit 1\n'
    )
    legacy.chmod(0o755)
    proc = kboot("doctor", "--python", str(legacy))
    assert proc.returncode == 2 and ("3.5 and newer" in proc.stderr or "too old" in proc.stderr)


@pytest.mark.integration  # a pyenv interpreter: not in the fast tier
@pytest.mark.needs("pyenv-2.7")
def test_a_real_python_2_is_a_usage_error() -> None:
    proc = kboot("doctor", "--python", str(pyenv_python("2.7")))
    assert proc.returncode == 2, proc.stderr
    assert "3.5 and newer" in proc.stderr or "too old" in proc.stderr
    assert "Traceback" not in proc.stderr


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
