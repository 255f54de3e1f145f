"""Legacy multi-backend Keras 2: real environments on old interpreters, external backends."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers import created, kboot, python_of, report_from_fresh_shell, run_in_fresh_shell

pytestmark = pytest.mark.integration


@pytest.mark.needs("pyenv-3.6")
def test_theano_on_python_36(tmp_path: Path) -> None:
    data = created(kboot("create", "theano", "--python", "3.6", "--json"))
    assert data["python_version"].startswith("3.6.")
    assert data["keras_version"] == "2.3.1" and data["packages"]["theano"] == "1.0.5"
    assert data["smoke"]["reported"]["compute_dtype"] == "float32"
    env = Path(data["path"])
    assert report_from_fresh_shell(env, tmp_path, keras2="keras") == {
        "backend": "theano",
        "floatx": "float32",
        "image_data_format": "channels_last",
        "epsilon": 1e-07,
        "version": "2.3.1",
    }
    # a normal environment: a pip that runs on 3.6, and a start-up without errors
    pip = run_in_fresh_shell(env, tmp_path, "import pip; print(pip.__version__)")
    assert pip.stdout.strip().startswith("21.")
    quiet = run_in_fresh_shell(env, tmp_path, "pass")
    assert quiet.stderr == ""


@pytest.mark.needs("pyenv-3.7")
def test_theano_prefers_the_newest_fitting_python(tmp_path: Path) -> None:
    data = created(kboot("create", "theano", "--no-smoke", "--json"))
    assert data["python_version"].startswith("3.7.")  # profile: >=3.6,<3.8


@pytest.mark.needs("pyenv-3.6")
def test_plaidml_external_backend(tmp_path: Path) -> None:
    data = created(kboot("create", "plaidml", "--json"))
    assert data["backend"] == "plaidml.keras.backend"
    assert data["keras_version"] == "2.2.4"
    env = Path(data["path"])
    reported = report_from_fresh_shell(env, tmp_path, keras2="keras")
    assert reported["backend"] == "plaidml.keras.backend"


THEANO_REEXPORT = "from keras.backend.theano_backend import *  # noqa: F403\n"
BACKEND_PACKAGE = {
    "setup.py": "from setuptools import setup\n"
    'setup(name="kbtb", version="1.0", packages=["kbtb"])\n',
    "kbtb/__init__.py": "",
    # a complete external backend: theano's, re-exported under another module path
    "kbtb/complete.py": THEANO_REEXPORT,
    "kbtb/incomplete.py": THEANO_REEXPORT + "del function\n",
}


@pytest.fixture
def backend_package(tmp_path: Path) -> Path:
    root = tmp_path / "kbtb-src"
    for name, text in BACKEND_PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def backend_profile(write_profile: Any, package: Path, module: str) -> Path:
    path: Path = write_profile(
        module.replace(".", "-"),
        f'backend = "{module}"\npython = "==3.6.*"\nkeras = "==2.3.1"\n'
        f'packages = ["theano==1.0.5", "kbtb @ {package.as_uri()}"]\n',
    )
    return path


@pytest.mark.needs("pyenv-3.6")
def test_external_backend_complete_and_missing_function(
    tmp_path: Path, write_profile: Any, backend_package: Path
) -> None:
    good = created(
        kboot(
            "create",
            str(backend_profile(write_profile, backend_package, "kbtb.complete")),
            "--json",
        )
    )
    assert good["smoke"]["reported"]["backend"] == "kbtb.complete"
    env = Path(good["path"])
    assert report_from_fresh_shell(env, tmp_path, keras2="keras")["backend"] == "kbtb.complete"

    bad = kboot("create", str(backend_profile(write_profile, backend_package, "kbtb.incomplete")))
    assert bad.returncode == 1
    assert "kbtb.incomplete lacks function" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "kbtb-incomplete").exists()

    # config set runs the same check when it is given an interpreter or an environment
    home = tmp_path / "keras-home"
    refused = kboot(
        "config",
        "set",
        "backend=kbtb.incomplete",
        "--keras-home",
        str(home),
        "--python",
        "kbtb-complete",
    )
    assert refused.returncode == 2 and "lacks function" in refused.stderr
    assert not (home / "keras.json").exists()
    accepted = kboot(
        "config",
        "set",
        "backend=kbtb.complete",
        "--keras-home",
        str(home),
        "--python",
        str(python_of(env)),
        "--json",
    )
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["backend_checked_with"] == str(python_of(env))
    unchecked = kboot("config", "set", "backend=kbtb.other", "--keras-home", str(home))
    assert unchecked.returncode == 0 and "could not check" in unchecked.stderr


def test_tf_keras2_routes_tf_keras_to_keras_2(tmp_path: Path) -> None:
    data = created(kboot("create", "tf-keras2", "--json"))
    assert data["smoke"]["reported"]["tf.keras_package"] == "tf_keras"
    assert data["packages"]["tf-keras"].startswith("2.")
    env = Path(data["path"])
    reported = report_from_fresh_shell(env, tmp_path, keras2="tf_keras")
    assert reported["backend"] == "tensorflow" and reported["version"].startswith("2.")
    routed = run_in_fresh_shell(
        env, tmp_path, "import tensorflow as tf; print(tf.keras.layers.Dense.__module__)"
    )
    assert routed.stdout.strip().splitlines()[-1].startswith("tf_keras.")
    # one TensorFlow distribution: tf-keras requires `tensorflow`, so no tensorflow-cpu next
    # to it (doctor's tf-twice error, which the smoke test would fail on), and no warning
    # that a CPU build would fit better (tf-keras leaves no choice)
    assert "tensorflow" in data["packages"] and "tensorflow-cpu" not in data["packages"]
    assert data["smoke"]["warnings"] == [], data["smoke"]["warnings"]
    doctor = kboot("doctor", "tf-keras2", "--json")
    assert doctor.returncode == 0, doctor.stdout
    assert json.loads(doctor.stdout)["ok"] is True


@pytest.mark.needs("pyenv-3.6")  # cntk: Python >=3.5,<3.7
def test_cntk_fails_with_the_missing_library_named(tmp_path: Path) -> None:
    proc = kboot("create", "cntk")
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert "libmpi_cxx.so.1 is missing" in message and "OpenMPI 1.10" in message
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "cntk").exists()


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ('backend = "jax"\nkeras = "==2.3.1"\npackages = ["jax"]\n', "is a Keras 3 backend"),
        ('backend = "theano"\npackages = ["theano"]\n', "is a Keras 2 backend"),
        (
            'backend = "theano"\nkeras = "==2.3.1"\npython = ">=3.10"\npackages = ["theano"]\n',
            "Python 3.6/3.7",
        ),
        (
            'backend = "cntk"\nkeras = "==2.3.1"\npython = ">=3.8"\npackages = ["cntk"]\n',
            "3.5 and 3.6 only",
        ),
        ('backend = "my..module"\nkeras = "==2.3.1"\npackages = []\n', "a module name such as"),
        ('backend = "theano"\nkeras = ">=2"\npackages = ["theano"]\n', "generation"),
    ],
)
def test_generation_mismatches_are_profile_errors(
    write_profile: Any, profile: str, expected: str
) -> None:
    proc = kboot("create", str(write_profile("bad", profile)))
    assert proc.returncode == 2, proc.stderr
    assert expected in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


def test_python_option_that_is_not_python(tmp_path: Path) -> None:
    missing = kboot("create", "theano", "--python", str(tmp_path / "nope" / "python3.6"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    script = tmp_path / "python3.6"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    fake = kboot("create", "theano", "--python", str(script))
    assert fake.returncode == 2 and "not a working Python" in fake.stderr
    wrong = kboot("create", "theano", "--python", "3.11")
    assert wrong.returncode == 2
    assert re.search(
        r"--python 3\.11 asks for Python ==3\.11\.\*, but the profile needs", wrong.stderr
    )
