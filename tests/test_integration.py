"""Real environments: real virtualenvs, real installs from the package index, real keras.

Each check of what an environment reports runs in a separate process, with HOME
pointed at an empty folder and no KERAS_BACKEND, exactly as a user's next shell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrap.system.paths import locks_dir
from bootstrap.system.process_lock import env_lock
from helpers import created, kboot, report_from_fresh_shell, start_kboot
from machine import LOCAL_INDEX, TORCH_WHEELS

pytestmark = pytest.mark.integration


def test_create_numpy_end_to_end(tmp_path: Path, isolated: Path) -> None:
    data = created(kboot("create", "numpy", "--json"))
    path = Path(data["path"])
    assert path == tmp_path / "kboot-home" / "envs" / "numpy"
    assert data["backend"] == "numpy" and data["changed"] is True
    assert data["smoke"]["ok"] is True
    assert data["keras_version"].startswith("3.")
    assert {"keras", "numpy", "scipy", "jax"} <= set(data["packages"])
    assert data["smoke"]["reported"]["compute_dtype"] == "float32"
    assert report_from_fresh_shell(path, tmp_path) == {
        "backend": "numpy",
        "floatx": "float32",
        "image_data_format": "channels_last",
        "epsilon": 1e-07,
        "dtype": "float32",
    }
    # nothing was written into the user's home: no ~/.keras, nothing a backend made at import
    assert sorted(p.name for p in isolated.iterdir() if p.name != ".cache") == []
    assert (path / "keras-home" / "datasets").is_dir()  # the environment's own, not a link
    assert not (path / "keras-home" / "datasets").is_symlink()

    # bytecode was compiled at create, PYTHONDONTWRITEBYTECODE or not (this machine sets it)
    site = next(path.glob("lib/python3.*/site-packages"))
    assert any((site / "keras").rglob("__pycache__/*.pyc"))

    listed = json.loads(kboot("list", "--json").stdout)
    assert [(e["name"], e["backend"], e["health"]) for e in listed] == [("numpy", "numpy", "ok")]

    check = kboot("check", "numpy", "--json", env={**os.environ, "KERAS_BACKEND": "torch"})
    assert check.returncode == 0, check.stderr
    checked = json.loads(check.stdout)
    assert checked["ok"] is True
    assert any("KERAS_BACKEND=torch" in w for w in checked["warnings"])

    # someone edits the environment's keras.json behind kboot's back: check says what differs
    keras_json = path / "keras-home" / "keras.json"
    keras_json.write_text(json.dumps({**json.loads(keras_json.read_text()), "floatx": "float16"}))
    broken = kboot("check", "numpy")
    assert broken.returncode == 1
    assert "floatx: keras reports 'float16', the profile asks for 'float32'" in broken.stdout
    several = kboot("check", "numpy", "nosuch")  # a lab gate: each checked, the worst exit
    assert several.returncode == 2, several.stderr
    assert "numpy: FAILED" in several.stdout and "nosuch: error: no environment" in several.stderr

    # another kboot holds the environment: remove waits for it (--wait), or says who holds it
    from bootstrap.system.paths import locks_dir
    from bootstrap.system.process_lock import env_lock

    with env_lock(locks_dir(), path):
        busy = kboot("remove", "numpy")
        assert busy.returncode != 0 and "--wait SECONDS" in busy.stderr, busy.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "bootstrap", "remove", "numpy", "--wait", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert waiting.stderr is not None
        assert "waiting up to 120 s" in waiting.stderr.readline()
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and "removed numpy" in out
    assert not path.exists()
    assert json.loads(kboot("list", "--json").stdout) == []
    again = kboot("remove", "numpy", "--json")  # scripts run it twice: nothing to remove
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["removed"] is False


def test_jax_profile_values_are_what_keras_reports(tmp_path: Path, write_profile: Any) -> None:
    profile = write_profile(
        "jax-cf",
        'backend = "jax"\nfloatx = "float16"\nimage_data_format = "channels_first"\n'
        'epsilon = 1e-5\npackages = ["jax"]\n',
    )
    dest = tmp_path / "envs" / "my-jax"
    data = created(kboot("create", str(profile), "--dest", str(dest), "--json"))
    assert data["name"] == "my-jax" and Path(data["path"]) == dest
    assert report_from_fresh_shell(dest, tmp_path) == {
        "backend": "jax",
        "floatx": "float16",
        "image_data_format": "channels_first",
        "epsilon": 1e-05,
        "dtype": "float16",
    }
    # a --dest outside kboot's home is still listed
    assert [e["path"] for e in json.loads(kboot("list", "--json").stdout)] == [str(dest)]


def test_jax_float64_computes_in_float64(tmp_path: Path, write_profile: Any) -> None:
    """JAX truncates to float32 unless x64 is on: kboot turns it on for float64 profiles."""
    profile = write_profile("jax64", 'backend = "jax"\nfloatx = "float64"\npackages = ["jax"]\n')
    data = created(kboot("create", str(profile), "--json"))
    assert data["smoke"]["reported"]["compute_dtype"] == "float64"
    assert report_from_fresh_shell(Path(data["path"]), tmp_path)["dtype"] == "float64"


def test_existing_user_download_folders_are_shared_and_openvino_writes_nothing_home(
    tmp_path: Path, isolated: Path
) -> None:
    (isolated / ".keras" / "datasets").mkdir(parents=True)
    data = created(kboot("create", "openvino", "--json"))
    path = Path(data["path"])
    assert (path / "keras-home" / "datasets").resolve() == isolated / ".keras" / "datasets"
    assert not (path / "keras-home" / "models").is_symlink()  # the user has none: its own
    # openvino's telemetry writes ~/intel at import: the smoke test ran in a home of its own
    assert sorted(p.name for p in isolated.iterdir() if p.name != ".cache") == [".keras"]
    assert sorted(p.name for p in (isolated / ".keras").iterdir()) == ["datasets"]


def test_tf_cpu_real_create(tmp_path: Path) -> None:
    data = created(kboot("create", "tf-cpu", "--json"))
    assert data["smoke"]["ok"] and data["smoke"]["backend_version"].startswith("2.")
    assert "tensorflow-cpu" in data["packages"]
    assert report_from_fresh_shell(Path(data["path"]), tmp_path)["backend"] == "tensorflow"


@pytest.mark.needs("torch-cpu-wheels", "local-index")
def test_torch_cpu_through_source_overrides(tmp_path: Path) -> None:
    """The PyTorch CPU index is unreachable here: the overrides point at local CPU wheels."""
    data = created(
        kboot(
            "create",
            "torch-cpu",
            "--index-url",
            LOCAL_INDEX,
            "--find-links",
            str(TORCH_WHEELS),
            "--json",
        )
    )
    assert data["packages"]["torch"].endswith("+cpu")
    assert data["smoke"]["backend_version"].endswith("+cpu")
    assert report_from_fresh_shell(Path(data["path"]), tmp_path)["backend"] == "torch"


def test_pip_installer_and_scope_user(tmp_path: Path, keras_home: Path) -> None:
    keras_home.mkdir()
    original = '{"floatx": "float32", "backend": "tensorflow", "my_setting": 42}\n'
    (keras_home / "keras.json").write_text(original)
    data = created(
        kboot(
            "create", "numpy", "--installer", "pip", "--scope", "user", "--name", "np-pip", "--json"
        )
    )
    assert data["installer"] == "pip" and data["scope"] == "user"
    merged = json.loads((keras_home / "keras.json").read_text())
    assert merged["my_setting"] == 42 and merged["backend"] == "numpy"
    assert (keras_home / "keras.json.bak").read_text() == original
    assert (Path(data["path"]) / "bin" / "pip").exists()
    removed = kboot("remove", "np-pip")
    assert "left" in removed.stdout and (keras_home / "keras.json").exists()


def test_failed_install_leaves_nothing_and_restores_replaced_env(
    tmp_path: Path, write_profile: Any, keras_home: Path
) -> None:
    good = created(kboot("create", "numpy", "--name", "mine", "--json"))
    path = Path(good["path"])
    record_before = (path / "kboot-env.json").read_text()
    bad = write_profile(
        "bad", 'backend = "numpy"\npackages = ["numpy", "kboot-no-such-package-xyz"]\n'
    )
    proc = kboot("create", str(bad), "--name", "mine", "--force")
    assert proc.returncode == 1
    assert "installing" in proc.stderr and "kboot-no-such-package-xyz" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (path / "kboot-env.json").read_text() == record_before
    assert report_from_fresh_shell(path, tmp_path)["backend"] == "numpy"
    assert not [p for p in path.parent.iterdir() if ".kboot-" in p.name]

    fresh = kboot("create", str(bad), "--name", "never")
    assert fresh.returncode == 1
    assert not (path.parent / "never").exists()


def test_scope_user_malformed_keras_json_is_left_alone(keras_home: Path, tmp_path: Path) -> None:
    keras_home.mkdir()
    broken = b'{"backend": "jax",,}'
    (keras_home / "keras.json").write_bytes(broken)
    proc = kboot("create", "numpy", "--scope", "user")
    assert proc.returncode == 1
    assert "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert (keras_home / "keras.json").read_bytes() == broken
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()


def test_missing_scipy_is_caught_by_the_smoke_test(write_profile: Any, tmp_path: Path) -> None:
    profile = write_profile("np-noscipy", 'backend = "numpy"\npackages = ["numpy"]\n')
    proc = kboot("create", str(profile))
    assert proc.returncode == 1
    assert "import keras` failed" in proc.stderr and "No module named" in proc.stderr
    assert "hint: add" in proc.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "np-noscipy").exists()


@pytest.mark.needs("no-nvidia-driver")
def test_gpu_profile_on_cpu_machine_refused_before_download_and_allow_cpu(
    write_profile: Any, tmp_path: Path
) -> None:
    """No NVIDIA driver here: refused before any download; --allow-cpu is remembered."""
    profile = write_profile("jax-needs-gpu", 'backend = "jax"\npackages = ["jax"]\ngpu = true\n')
    proc = kboot("create", str(profile), "--json")
    assert proc.returncode == 1
    assert "needs an NVIDIA GPU, but no NVIDIA driver found" in proc.stderr.replace("\n", " ")
    assert "nothing was downloaded" in proc.stderr  # one line: the hint is in the document
    assert json.loads(proc.stdout)["exit_code"] == 1
    assert "--allow-cpu" in json.loads(proc.stdout)["hint"]
    assert not (tmp_path / "kboot-home" / "envs" / "jax-needs-gpu").exists()
    data = created(kboot("create", str(profile), "--allow-cpu", "--json"))
    assert any("accepted: --allow-cpu" in w for w in data["warnings"])
    # remembered: check and a plain create accept the CPU fallback it was built with
    checked = kboot("check", "jax-needs-gpu")
    assert checked.returncode == 0, checked.stderr
    assert created(kboot("create", str(profile), "--json"))["action"] == "unchanged"


def base_packages() -> dict[str, str]:
    """The distributions the base interpreter has (the one a --system-site-packages
    environment sees, also where the tests run in a virtualenv): name -> version.
    Asked when a test needs it, not on import: collecting the fast tier runs nothing."""
    found: dict[str, str] = json.loads(
        subprocess.run(
            [
                getattr(sys, "_base_executable", sys.executable),
                "-I",
                "-c",
                "import json, importlib.metadata as m;"
                "print(json.dumps({d.metadata['Name'].lower(): d.version"
                " for d in m.distributions()}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return found


@pytest.mark.needs("base-numpy-scipy")
@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_system_site_packages_reuses_the_base(installer: str, write_profile: Any) -> None:
    """Packages the base Python already has are reused, as on GPU nodes with a CUDA build."""
    base = base_packages()
    profile = write_profile("np-base", 'backend = "numpy"\npackages = ["numpy", "scipy", "jax"]\n')
    proc = kboot(
        "create", str(profile), "--system-site-packages", "--installer", installer, "--json"
    )
    data = created(proc)
    assert data["packages"]["numpy"] == base["numpy"]
    assert data["packages"]["scipy"] == base["scipy"]
    site = next(Path(data["path"]).glob("lib/python3.*/site-packages"))
    if installer == "uv":
        # uv cannot see the base (uv#4466): kboot drops what the base meets and pins the rest
        assert "reusing numpy>=" not in proc.stderr  # the profile says plain "numpy"
        assert "reusing numpy from the base Python" in proc.stderr
        assert "reusing scipy from the base Python" in proc.stderr
    else:
        # pip sees the base itself: neither numpy nor scipy is installed again
        assert not (site / "numpy").exists() and not (site / "scipy").exists()
    assert data["smoke"]["ok"]


def test_dest_that_is_not_a_kboot_env_is_refused_then_moved_aside(tmp_path: Path) -> None:
    dest = tmp_path / "precious"
    dest.mkdir()
    (dest / "thesis.tex").write_text("do not lose me")
    proc = kboot("create", "numpy", "--dest", str(dest))
    assert proc.returncode == 2 and "--replace-foreign" in proc.stderr
    assert (dest / "thesis.tex").read_text() == "do not lose me"
    made = kboot(
        "create", "numpy", "--dest", str(dest), "--replace-foreign", "--no-smoke", "--json"
    )
    data = created(made)
    assert data["smoke"] is None and not (dest / "thesis.tex").exists()
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("precious.kboot-backup-")]
    assert (aside / "thesis.tex").read_text() == "do not lose me"
    assert str(aside) in made.stderr


def test_concurrent_create_is_refused_by_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "kboot-home" / "envs" / "numpy"
    with env_lock(locks_dir(os.environ), target):
        proc = kboot("create", "numpy")
    assert proc.returncode == 1
    assert "another kboot process" in proc.stderr and str(os.getpid()) in proc.stderr
    assert not target.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_install_rolls_back(tmp_path: Path, signum: int) -> None:
    """Ctrl-C, and SIGTERM from kill, timeouts or a CI cancel, roll back alike."""
    # piped, a step is printed once it ends: the install starts right after this line
    proc = start_kboot(
        "create", "tf-cpu", "--name", "interrupted", "--no-smoke", until="✓ create virtualenv"
    )
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "kboot-home" / "envs" / "interrupted").exists()


def test_a_killed_rebuild_is_repaired_by_the_next_create(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to roll back: the next run finds the leftovers and repairs."""
    first = created(kboot("create", "numpy", "--json"))
    path = Path(first["path"])
    proc = start_kboot(
        "create", "numpy", "--force", "--installer", "pip", until="✓ create virtualenv"
    )
    proc.kill()
    proc.wait(timeout=60)
    aside = [p for p in path.iterdir() if p.name.startswith(".kboot-old-")]
    assert aside, "the old environment's entries were moved aside"
    listed = json.loads(kboot("list", "--json").stdout)
    assert [(e["name"], e["health"].split(":")[0]) for e in listed] == [("numpy", "broken")]

    repaired = kboot("create", "numpy", "--json")
    data = created(repaired)
    assert "restored" in repaired.stderr
    assert data["action"] == "unchanged"  # the environment from before the rebuild is back
    assert not [p for p in [*path.parent.iterdir(), *path.iterdir()] if ".kboot-" in p.name]
    assert report_from_fresh_shell(path, tmp_path)["backend"] == "numpy"


def test_scope_user_environments_share_one_keras_json(keras_home: Path) -> None:
    created(kboot("create", "jax-cpu", "--name", "u1", "--scope", "user", "--json"))
    second = kboot("create", "numpy", "--name", "u2", "--scope", "user", "--json")
    assert "u1 (--scope user) reads the same" in second.stderr
    created(second)
    health = {e["name"]: e["health"] for e in json.loads(kboot("list", "--json").stdout)}
    assert health["u2"] == "ok"
    assert health["u1"].startswith("config changed: backend is 'numpy'")
    repaired = created(kboot("create", "jax-cpu", "--name", "u1", "--scope", "user", "--json"))
    assert repaired["action"] == "updated"
    assert repaired["changes"][0].startswith("keras.json: backend is 'numpy'")
    assert json.loads((keras_home / "keras.json").read_text())["backend"] == "jax"


def test_a_dest_with_spaces_builds_runs_and_is_found(tmp_path: Path) -> None:
    """Any path works as --dest (issue 16 item 15): the folder keeps its name, the
    environment is named without the space, its console scripts (a /bin/sh trampoline in
    a venv at such a path) run, and the "use it" line pastes back into a shell."""
    dest = tmp_path / "dir with spaces" / "env x"
    proc = kboot("create", "numpy", "--dest", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert f"created env-x at {dest}" in proc.stdout
    assert "smoke test passed" in proc.stdout
    use_it = next(line for line in proc.stdout.splitlines() if line.startswith("use it: "))
    command = use_it.removeprefix("use it: ").replace("your_script.py", "-c 'print(1 + 1)'")
    shell = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    assert (shell.returncode, shell.stdout) == (0, "2\n"), (command, shell.stderr)
    assert report_from_fresh_shell(dest, tmp_path)["backend"] == "numpy"
    script = subprocess.run(
        [str(dest / "bin" / "numpy-config"), "--version"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert script.returncode == 0 and script.stdout.strip(), script.stderr
    for ref in ("env-x", str(dest)):
        checked = kboot("check", ref, "--json")
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)["ok"] is True
