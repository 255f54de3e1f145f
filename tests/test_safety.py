"""kboot never deletes, overwrites or runs what it did not create: each defect of the
trust issue, reproduced with the real command, and a SIGKILL at every step of the
environment's life followed by the next command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import created, kboot, python_of

pytestmark = pytest.mark.integration

#: A small Keras 3 profile that builds in about a second from a warm cache.
LAB = 'backend = "numpy"\npackages = ["numpy", "scipy", "jax"]\n'
LAB_PLUS = 'backend = "numpy"\npackages = ["numpy", "scipy", "jax", "six"]\n'
LAB_BROKEN = 'backend = "numpy"\npackages = ["numpy", "scipy", "jax", "kboot-no-such-package-x"]\n'


@pytest.fixture(autouse=True)
def profiles(tmp_path: Path) -> Path:
    """The user's profile folder (KBOOT_PROFILES) with the lab profile in it."""
    folder = tmp_path / "user-profiles"
    folder.mkdir(exist_ok=True)
    (folder / "lab.toml").write_text(LAB, encoding="utf-8")
    return folder


def set_profile(profiles: Path, text: str, name: str = "lab") -> None:
    (profiles / f"{name}.toml").write_text(text, encoding="utf-8")


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def plant_user_files(env: Path) -> dict[str, bytes]:
    (env / "notebook.ipynb").write_text('{"cells": []}', encoding="utf-8")
    (env / "data").mkdir()
    (env / "data" / "train.csv").write_text("x,y\n1,2\n", encoding="utf-8")
    return files_of(env / "data") | {"notebook.ipynb": b'{"cells": []}'}


def assert_user_files(env: Path, mine: dict[str, bytes]) -> None:
    assert (env / "notebook.ipynb").read_bytes() == mine["notebook.ipynb"]
    assert (env / "data" / "train.csv").read_bytes() == mine["train.csv"]


def env_works(env: Path) -> None:
    """A complete environment: kboot's record and ledger agree, and its Python starts."""
    listed = json.loads(kboot("list", "--json").stdout)
    health = {item["path"]: item["health"] for item in listed}
    assert health.get(str(env)) in ("ok", "unchecked (built with --no-smoke)"), listed
    proc = subprocess.run(
        [str(python_of(env)), "-c", "import numpy, scipy; print('ok')"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip() == "ok", proc.stderr


# --- data loss ------------------------------------------------------------------------------


def test_a_rebuild_keeps_the_files_a_user_added(tmp_path: Path, profiles: Path) -> None:
    """Defect 1: mkdir proj; create --dest proj; add a notebook and data; change the profile."""
    proj = tmp_path / "proj"
    proj.mkdir()
    first = created(kboot("create", "lab", "--dest", str(proj), "--json"))
    assert first["action"] == "created"
    mine = plant_user_files(proj)
    set_profile(profiles, LAB_PLUS)
    again = kboot("create", "lab", "--dest", str(proj), "--json")
    second = created(again)
    assert second["action"] == "rebuilt"
    assert "six" in second["packages"]
    assert_user_files(proj, mine)
    assert "kept your files" in again.stderr and "notebook.ipynb" in again.stderr
    removed = kboot("remove", str(proj))
    assert removed.returncode == 0, removed.stderr
    assert_user_files(proj, mine)  # remove deletes kboot's part only
    assert sorted(p.name for p in proj.iterdir()) == ["data", "notebook.ipynb"]


@pytest.mark.parametrize("planted", ["kboot-building", "kboot-env.json"])
def test_a_planted_marker_file_does_not_make_a_folder_kboot_s(
    tmp_path: Path, isolated: Path, planted: str
) -> None:
    """Defect 2: a home folder holding a file named like kboot's is never deleted."""
    victim = tmp_path / "victim-home"
    (victim / ".ssh").mkdir(parents=True)
    (victim / ".ssh" / "id_ed25519").write_text("secret", encoding="utf-8")
    (victim / planted).write_text('{"name": "x"}' if planted.endswith(".json") else "1\n")
    before = files_of(victim)
    for args, says in (
        (("create", "lab", "--dest", str(victim)), "is not a kboot environment"),
        (("remove", str(victim)), "is not an environment kboot made"),
    ):
        proc = kboot(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr
        assert files_of(victim) == before
    # and as the real home folder: refused whatever the flags
    env = {**os.environ, "HOME": str(victim)}
    proc = kboot("create", "lab", "--dest", str(victim), "--replace-foreign", env=env)
    assert proc.returncode == 2 and "home folder" in proc.stderr
    assert files_of(victim) == before


def test_an_environment_of_another_profile_is_not_rebuilt_silently(
    tmp_path: Path, profiles: Path
) -> None:
    """Defect 3: `create numpy --name jax-cpu` must not turn jax-cpu into numpy."""
    set_profile(profiles, LAB_PLUS, name="other")
    created(kboot("create", "other", "--name", "mine", "--no-smoke", "--json"))
    refused = kboot("create", "lab", "--name", "mine", "--no-smoke")
    assert refused.returncode == 2
    assert "made from profile 'other', not 'lab'" in refused.stderr
    assert "--force" in refused.stderr
    data = created(kboot("create", "lab", "--name", "mine", "--no-smoke", "--force", "--json"))
    assert data["profile"] == "lab" and data["action"] == "rebuilt"


def test_force_never_replaces_a_folder_kboot_did_not_make(tmp_path: Path, profiles: Path) -> None:
    """Defect 4: a mistyped --dest with --force, or kboot's own envs folder."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "model.py").write_text("print('mine')\n", encoding="utf-8")
    before = files_of(project)
    proc = kboot("create", "lab", "--dest", str(project), "--force")
    assert proc.returncode == 2 and "--replace-foreign" in proc.stderr
    assert files_of(project) == before

    created(kboot("create", "lab", "--no-smoke", "--json"))
    envs = tmp_path / "kboot-home" / "envs"
    proc = kboot("create", "lab", "--dest", str(envs), "--force", "--replace-foreign")
    assert proc.returncode == 2 and "kboot's own folders" in proc.stderr
    assert (envs / "lab" / "kboot-env.json").is_file()

    moved = kboot("create", "lab", "--dest", str(project), "--replace-foreign", "--no-smoke")
    assert moved.returncode == 0, moved.stderr
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("project.kboot-backup-")]
    assert len(backups) == 1 and files_of(backups[0]) == before
    assert str(backups[0]) in moved.stderr


def test_remove_refuses_a_symlink_to_an_environment(tmp_path: Path, profiles: Path) -> None:
    """Defect 6: `kboot remove LINK` said "removed" and only renamed the link."""
    data = created(kboot("create", "lab", "--no-smoke", "--json"))
    link = tmp_path / "link"
    link.symlink_to(data["path"])
    proc = kboot("remove", str(link))
    assert proc.returncode == 2 and "is a symlink" in proc.stderr
    assert link.is_symlink() and Path(data["path"], "kboot-env.json").is_file()


# --- overwrites and code execution -------------------------------------------------------------


def test_lock_files_are_never_opened_through_a_symlink(tmp_path: Path, profiles: Path) -> None:
    """Defect 7 (locks): a symlink planted at a lock file's name is not truncated through."""
    from bootstrap.system.process_lock import lock_file_for

    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    target = Path(os.path.realpath(tmp_path / "kboot-home" / "envs")) / "lab"
    lock = lock_file_for(tmp_path / "kboot-home" / "locks", target)
    lock.parent.mkdir(parents=True)
    lock.symlink_to(victim)
    proc = kboot("create", "lab", "--no-smoke")
    assert proc.returncode == 1 and "lock file" in proc.stderr
    assert victim.read_text(encoding="utf-8") == "precious"


def test_a_planted_module_in_the_working_folder_never_runs(tmp_path: Path, profiles: Path) -> None:
    """Defect 9: every Python kboot starts is isolated from the working folder."""
    trap = tmp_path / "trap"
    trap.mkdir()
    sprung = tmp_path / "SPRUNG"
    for module in ("json", "keras", "site_check", "numpy"):
        (trap / f"{module}.py").write_text(
            f"open({str(sprung)!r}, 'a').write({module!r})\n", encoding="utf-8"
        )
    # kboot as its console script runs it: -I, so this test's own start does not import trap/
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "bootstrap", "create", "lab", "--json"],
        capture_output=True,
        text=True,
        cwd=trap,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not sprung.exists(), sprung.read_text()
    env = Path(json.loads(proc.stdout)["path"])
    checked = subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "bootstrap",
            "config",
            "set",
            "backend=keras.src.backend.numpy",
            "--keras-home",
            str(trap / "kh"),
            "--python",
            str(env),
        ],
        capture_output=True,
        text=True,
        cwd=trap,
        check=False,
    )
    assert "Traceback" not in checked.stderr
    assert not sprung.exists(), sprung.read_text()


def test_credentials_in_an_index_url_are_never_shown(tmp_path: Path, profiles: Path) -> None:
    """Defect 10: a token in --index-url is not printed, not in --json, not with --debug."""
    url = "http://alice:s3cr3t-t0ken@127.0.0.1:9/simple"
    for args in (
        ("create", "lab", "--index-url", url),
        ("create", "lab", "--index-url", url, "--json"),
        ("--debug", "create", "lab", "--index-url", url),
    ):
        proc = kboot(*args)
        assert proc.returncode == 1, proc.stderr
        assert "s3cr3t" not in proc.stderr + proc.stdout, args
    # --debug says where the index is, masked, and that it is not on the command line
    assert "UV_INDEX_URL=http://alice:****@127.0.0.1:9/simple" in proc.stderr


def test_an_environment_at_a_non_ascii_path_starts_under_the_c_locale(
    tmp_path: Path, profiles: Path
) -> None:
    """Defect 12: site reads .pth files in the locale's encoding on Python <= 3.12."""
    dest = tmp_path / "café" / "env"
    data = created(kboot("create", "lab", "--dest", str(dest), "--no-smoke", "--json"))
    pth = next(Path(data["path"]).glob("lib/python3.*/site-packages/_kboot_keras_home.pth"))
    pth.read_bytes().decode("ascii")  # pure ASCII
    proc = subprocess.run(
        [str(python_of(dest)), "-c", "import os; print(os.environ['KERAS_HOME'])"],
        capture_output=True,
        env={"PATH": os.environ["PATH"], "LC_ALL": "C", "HOME": str(tmp_path)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("utf-8").strip() == str(dest / "keras-home")


@pytest.fixture
def silent_index() -> Iterator[str]:
    """A package index that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_sigterm_stops_every_installer_of_a_batch_at_once(
    tmp_path: Path, profiles: Path, silent_index: str
) -> None:
    """Defect 13: SIGTERM to `create A B` against an index that never answers."""
    set_profile(profiles, LAB_PLUS, name="lab2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", "create", "lab", "lab2", "--index-url", silent_index],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache")},
    )
    deadline = time.monotonic() + 120
    while len(installers_of(silent_index)) < 2:  # both installers wait on the index
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 130
    assert took < 10, f"took {took:.1f} s to stop"
    envs = tmp_path / "kboot-home" / "envs"
    assert not envs.exists() or not any(envs.iterdir())
    assert installers_of(silent_index) == [], "an installer outlived kboot"


def installers_of(index: str) -> list[str]:
    """The uv processes working against `index` now."""
    found = subprocess.run(
        ["pgrep", "-f", f"uv pip install.*{index}"], capture_output=True, check=False
    )
    return found.stdout.decode().split()


def test_concurrent_dest_creates_are_all_listed_and_leave_no_lock_files(
    tmp_path: Path, profiles: Path
) -> None:
    """Defect 14: the list of --dest environments lost entries; lock files piled up."""
    dests = [tmp_path / f"d{i}" for i in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bootstrap", "create", "lab", "--dest", str(d), "--no-smoke"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for d in dests
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    listed = {item["path"] for item in json.loads(kboot("list", "--json").stdout)}
    assert {str(d) for d in dests} <= listed
    assert list((tmp_path / "kboot-home" / "locks").iterdir()) == []


# --- SIGKILL at every step, then the next command -------------------------------------------------


def run_killed(point: str, *args: str) -> subprocess.CompletedProcess[str]:
    return kboot(*args, env={**os.environ, "KBOOT_TEST_KILL_AT": point})


KILLS: list[tuple[str, str, str]] = [
    # (what, kill point, what the user does next)
    ("create", "create-journaled", "create"),
    ("create", "build-started", "create"),
    ("create", "build-venv-created", "create"),
    ("create", "build-installed", "create"),
    ("create", "build-config-written", "create"),
    ("create", "commit-record-written", "list"),
    ("rebuild", "rebuild-journaled", "create"),
    ("rebuild", "rebuild-moved-0", "create"),
    ("rebuild", "rebuild-moved-3", "create"),
    ("rebuild", "build-started", "create"),
    ("rebuild", "build-installed", "create"),
    ("rebuild", "commit-record-written", "list"),
    ("rebuild", "commit-backup-deleted", "create"),
    ("failed rebuild", "rollback-deleted", "create"),
    ("failed rebuild", "rollback-restoring", "list"),
    ("failed rebuild", "rollback-moved-back", "create"),
    ("update", "update-journaled", "create"),
    ("update", "update-config-written", "list"),
    ("update", "update-record-written", "create"),
    ("remove", "remove-journaled", "remove"),
    ("remove", "remove-moved-0", "list"),
    ("remove", "remove-trash-deleted", "remove"),
]


@pytest.mark.parametrize(("what", "point", "then"), KILLS, ids=[f"{w}@{p}" for w, p, _ in KILLS])
def test_sigkill_at_every_step_then_the_next_command(
    tmp_path: Path, profiles: Path, what: str, point: str, then: str
) -> None:
    """After each kill and the next command, the old or the new environment is complete
    (for remove: or gone), and no file the user added is lost."""
    proj = tmp_path / "proj"
    base = ("create", "lab", "--dest", str(proj), "--no-smoke")
    mine: dict[str, bytes] = {}
    if what != "create":
        created(kboot(*base, "--json"))
        mine = plant_user_files(proj)
    if what == "rebuild":
        set_profile(profiles, LAB_PLUS)
        killed = run_killed(point, *base)
    elif what == "failed rebuild":
        set_profile(profiles, LAB_BROKEN)
        killed = run_killed(point, *base)
    elif what == "update":
        set_profile(profiles, LAB + 'floatx = "float16"\n')
        killed = run_killed(point, *base)
    elif what == "remove":
        killed = run_killed(point, "remove", str(proj))
    else:
        killed = run_killed(point, *base)
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)

    if what == "failed rebuild":
        set_profile(profiles, LAB)  # the user gives up on the broken change
    if then == "create":
        proc = kboot(*base, "--json")
        assert proc.returncode == 0, proc.stderr
    elif then == "remove":
        proc = kboot("remove", str(proj))
        assert proc.returncode == 0, proc.stderr
    else:  # `list` only looks; the next command that changes something repairs
        proc = kboot("list", "--json")
        assert proc.returncode == 0, proc.stderr
        repaired = kboot(*base) if what != "remove" else kboot("remove", str(proj))
        assert repaired.returncode == 0, repaired.stderr

    if mine:
        assert_user_files(proj, mine)
    if what == "remove":
        assert not (proj / "bin").exists() and not (proj / "kboot-env.json").exists()
    else:
        env_works(proj)
    leftovers = [p.name for p in tmp_path.iterdir() if ".kboot-" in p.name]
    if proj.is_dir():
        leftovers += [p.name for p in proj.iterdir() if p.name.startswith(".kboot-")]
    assert leftovers == []


def test_one_environment_never_leaks_its_config_into_another(
    tmp_path: Path, profiles: Path
) -> None:
    """A Jupyter server of one environment starting a kernel of another: the child must
    read its own Keras home, not the inherited one; a KERAS_HOME the user set still wins."""
    set_profile(profiles, LAB + 'env = { KBOOT_TEST_FLAG = "from-a" }\n', name="lab-a")
    a, b = tmp_path / "a", tmp_path / "b"
    created(kboot("create", "lab-a", "--dest", str(a), "--no-smoke", "--json"))
    created(kboot("create", "lab", "--dest", str(b), "--no-smoke", "--json"))
    child = "import os; print(os.environ.get('KERAS_HOME'), os.environ.get('KBOOT_TEST_FLAG'))"
    parent = (
        "import os, subprocess, sys;"
        "print(os.environ['KERAS_HOME'], os.environ['KBOOT_TEST_FLAG']); sys.stdout.flush();"
        f"subprocess.run([sys.argv[1], '-c', {child!r}])"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_", "KBOOT_"))}
    proc = subprocess.run(
        [str(python_of(a)), "-c", parent, str(python_of(b))],
        capture_output=True, text=True, env=base, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [f"{a}/keras-home from-a", f"{b}/keras-home None"]
    mine = tmp_path / "my-keras"
    proc = subprocess.run(
        [str(python_of(a)), "-c", parent, str(python_of(b))],
        capture_output=True, text=True, env={**base, "KERAS_HOME": str(mine)}, check=False,
    )  # fmt: skip
    assert proc.stdout.split("\n")[:2] == [f"{mine} from-a", f"{mine} None"]


# --- the folder's identity: a folder made at an environment's name is the user's -------------


def assert_refused_naming(proc: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert str(folder) in proc.stderr and "Traceback" not in proc.stderr


def test_a_replaced_environment_folder_is_never_deleted(tmp_path: Path) -> None:
    """Item 3, the issue's sequence: mv env env.mine; mkdir -p env/lib; cp
    env.mine/kboot-env.json env/; echo thesis > env/lib/thesis.txt; kboot remove numpy."""
    env = Path(created(kboot("create", "numpy", "--json"))["path"])
    mine = env.with_name("numpy.mine")
    env.rename(mine)
    (env / "lib").mkdir(parents=True)
    shutil.copy(mine / "kboot-env.json", env / "kboot-env.json")
    (env / "lib" / "thesis.txt").write_text("thesis\n", encoding="utf-8")
    before, moved = files_of(env), files_of(mine)
    for args in (("remove", "numpy"), ("create", "numpy"), ("check", "numpy")):
        proc = kboot(*args)
        assert_refused_naming(proc, env)
        assert files_of(env) == before and files_of(mine) == moved, args
    health = {i["path"]: i["health"] for i in json.loads(kboot("list", "--json").stdout)}
    assert health[str(env)].startswith("replaced"), health


def own_venv(folder: Path) -> dict[str, bytes]:
    """The user's own virtualenv, made where kboot's half-built one was."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    (folder / "lib" / "thesis.txt").write_text("years of work", encoding="utf-8")
    return files_of(folder)


REPLACED_KILLS = [
    ("create", "build-installed"),
    ("rebuild", "build-installed"),
    ("rebuild", "rebuild-moved-0"),
    ("remove", "remove-moved-0"),
]


@pytest.mark.parametrize(
    ("what", "point"), REPLACED_KILLS, ids=[f"{w}@{p}" for w, p in REPLACED_KILLS]
)
def test_a_folder_replaced_after_a_kill_is_left_to_its_user(
    tmp_path: Path, profiles: Path, what: str, point: str
) -> None:
    """Item 3 after a kill: the user deletes the half-done folder and makes their own venv
    there; the next command leaves it (exit 2, naming it); moved away, the name builds."""
    proj = tmp_path / "proj"
    base = ("create", "lab", "--dest", str(proj), "--no-smoke")
    if what != "create":
        created(kboot(*base, "--json"))
    if what == "rebuild":
        set_profile(profiles, LAB_PLUS)
    killed = run_killed(point, *(("remove", str(proj)) if what == "remove" else base))
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
    shutil.rmtree(proj)
    mine = own_venv(proj)
    then = [("remove", str(proj)), base] if what == "remove" else [base]
    for args in then:  # the next command, and one more
        assert_refused_naming(kboot(*args), proj)
        assert files_of(proj) == mine
    proj.rename(tmp_path / "theirs")  # 0 names unusable
    created(kboot(*base, "--json"))
    env_works(proj)
    assert files_of(tmp_path / "theirs") == mine


@pytest.mark.parametrize("point", ["create-journaled", "build-started", "build-installed"])
def test_a_kill_after_a_removal_that_kept_keras_home_leaves_the_name_usable(
    tmp_path: Path, profiles: Path, point: str
) -> None:
    """Item 5: create, a file in its keras-home, remove, a create killed: the next create
    and sync build there again, and the file survives."""
    proj = tmp_path / "proj"
    base = ("create", "lab", "--dest", str(proj), "--no-smoke")
    created(kboot(*base, "--json"))
    (proj / "keras-home" / "my_model.keras").write_text("weights", encoding="utf-8")
    removed = kboot("remove", str(proj))
    assert removed.returncode == 0, removed.stderr
    killed = run_killed(point, *base)
    assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
    again = kboot(*base, "--json")
    assert again.returncode == 0, again.stderr
    env_works(proj)
    assert (proj / "keras-home" / "my_model.keras").read_text(encoding="utf-8") == "weights"


def test_a_file_added_after_a_removal_does_not_block_create_or_check(
    tmp_path: Path, profiles: Path
) -> None:
    """Item 15: `check` says the folder holds only your files and create builds there; create
    does, keeping them (it used to say 'not a kboot environment' for good)."""
    proj = tmp_path / "proj"
    base = ("create", "lab", "--dest", str(proj), "--no-smoke")
    created(kboot(*base, "--json"))
    mine = plant_user_files(proj)
    assert kboot("remove", str(proj)).returncode == 0
    (proj / "later.txt").write_text("after the removal", encoding="utf-8")
    checked = kboot("check", str(proj))
    assert checked.returncode == 2 and "builds there again" in checked.stderr, checked.stderr
    again = kboot(*base, "--json")
    assert again.returncode == 0, again.stderr
    env_works(proj)
    assert_user_files(proj, mine)
    assert (proj / "later.txt").read_text(encoding="utf-8") == "after the removal"
    # the folder the removal left, replaced by another one at its name: the user's, and
    # check and create say so alike (exit 2, naming it)
    assert kboot("remove", str(proj)).returncode == 0
    proj.rename(tmp_path / "moved")
    proj.mkdir()
    (proj / "thesis.txt").write_text("mine", encoding="utf-8")
    for args in (("check", str(proj)), base):
        proc = kboot(*args)
        assert_refused_naming(proc, proj)
        assert "made at its name since" in proc.stderr or "replaced" in proc.stderr, args
    assert files_of(proj) == {"thesis.txt": b"mine"}
