"""Issue 15's "Done when" matrix: every command that reads or writes under KBOOT_HOME, a
Keras home (`--scope user`, `config`), the kernel folders or an environment, run with a
plant at each of those paths: (a) the folder made writable by others (group or world, no
sticky bit), (b) a symlink a second user owns at that path, pointing at root's secret
folder or file. Nothing is read through the link, nothing foreign runs, and every refusal
is exit 2 naming the path.

The environments are real (`kboot create numpy --no-smoke`, about a second with a warm
installer cache), one per case in a fresh kboot home: the ledger records each folder's
identity, so a copied environment would not be kboot's. Those cases are `integration`;
the Keras-home cases need no environment and stay in the fast tier."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import OtherUser, kboot, other_user

TOKEN = "s3cr3t-trust-matrix-issue-15"
NAME = "numpy"


@pytest.fixture(scope="module")
def bob() -> Iterator[OtherUser]:
    with other_user() as user:
        yield user


@dataclass(frozen=True)
class World:
    root: Path
    home: Path  # KBOOT_HOME
    keras_home: Path  # KERAS_HOME (config, create --scope user)
    jupyter: Path  # JUPYTER_DATA_DIR
    secret: Path  # root's folder (0700): keras.json with the token, and marker Pythons
    marker: Path  # written by a planted script if it ever runs

    def env(self, keras_home: bool) -> dict[str, str]:
        environ = {**os.environ, "KBOOT_HOME": str(self.home)}
        environ["JUPYTER_DATA_DIR"] = str(self.jupyter)
        if keras_home:  # only for config and --scope user: an environment has its own
            environ["KERAS_HOME"] = str(self.keras_home)
        return environ


#: Each location: the path planted, and for plant (a) the folder made writable.
LOCATIONS = {
    "home": lambda w: w.home,
    "envs": lambda w: w.home / "envs",
    "locks": lambda w: w.home / "locks",
    "owned": lambda w: w.home / "owned",
    "kernel-ledger": lambda w: w.home / "kernels",
    "env": lambda w: w.home / "envs" / NAME,
    "env-keras.json": lambda w: w.home / "envs" / NAME / "keras-home" / "keras.json",
    "keras-home": lambda w: w.keras_home,
    "keras.json": lambda w: w.keras_home / "keras.json",
    "jupyter-kernels": lambda w: w.jupyter / "kernels",
}
#: Plant (a) on a file's location makes its folder writable; alternating group and world.
MODES = {
    "home": 0o775, "envs": 0o777, "locks": 0o770, "owned": 0o777, "kernel-ledger": 0o775,
    "env": 0o777, "env-keras.json": 0o775, "keras-home": 0o777, "keras.json": 0o770,
    "jupyter-kernels": 0o777,
}  # fmt: skip
KERAS_COMMANDS = ("config-show", "config-set", "create-user")
KBOOT = ["home", "envs", "locks", "owned", "kernel-ledger"]
ENV = ["env", "env-keras.json"]
KERAS = ["keras-home", "keras.json"]

#: command -> (argv, needs an environment, the locations it reads or writes)
COMMANDS: dict[str, tuple[list[str], bool, list[str]]] = {
    "list": (["list"], True, [*KBOOT, *ENV]),
    "check": (["check", NAME], True, [*KBOOT, *ENV]),
    "remove": (["remove", NAME], True, [*KBOOT, *ENV, "jupyter-kernels"]),
    "kernel": (["kernel", NAME], True, [*KBOOT, "env", "jupyter-kernels"]),
    "doctor": (["doctor", NAME], True, [*KBOOT, *ENV]),
    "config-show": (["config", "show"], False, KERAS),
    "config-set": (["config", "set", "floatx=float64", "--keras-home", "{keras_home}"], False,
                   KERAS),
    "create-user": (["create", NAME, "--scope", "user", "--no-smoke"], False, [*KBOOT, *KERAS]),
    "sync-check": (["sync", "{manifest}", "--check"], True, [*KBOOT, *ENV]),
    "run": (["run", NAME, "--", "true"], True, [*KBOOT, *ENV]),
}  # fmt: skip

#: (command, location, plant) -> (exit code, reason) where a case is not a refusal.
REPORTS = "list reports the environment as refused (path named), reads and runs nothing in it"
UNREGISTER = "the environment goes; the kernel ledger is named and not acted on"
REMOVE_LINK = "remove deletes kboot's parts, a link as a link (never followed)"
NO_KERNEL = "no kernel registered: the Jupyter kernels folder is not touched"
NOT_IN_SYNC = "sync --check: NOT in sync (exit 1), the entry refused with the path named"
READ_ONLY = "config show only reads, through no link but the user's own: no refusal"
NOT_REFUSED: dict[tuple[str, str, str], tuple[int, str]] = {
    ("config-show", "keras-home", "writable"): (0, READ_ONLY),
    ("config-show", "keras.json", "writable"): (0, READ_ONLY),
    # list reports each environment in its table: this one "refused: ..." with its path
    ("list", "env", "writable"): (0, REPORTS),
    ("list", "env", "link"): (0, REPORTS),
    **{
        (command, "kernel-ledger", how): (0, "does not use the kernel ledger (no kernel)")
        for command in ("list", "check", "doctor", "create-user", "sync-check", "run")
        for how in ("writable", "link")
    },
    **{("remove", "kernel-ledger", how): (0, UNREGISTER) for how in ("writable", "link")},
    **{("remove", "env-keras.json", how): (0, REMOVE_LINK) for how in ("writable", "link")},
    **{("remove", "jupyter-kernels", how): (0, NO_KERNEL) for how in ("writable", "link")},
    **{("sync-check", "env", how): (1, NOT_IN_SYNC) for how in ("writable", "link")},
    **{("sync-check", "env-keras.json", how): (1, NOT_IN_SYNC) for how in ("writable", "link")},
    **{("list", "env-keras.json", how): (0, REPORTS) for how in ("writable", "link")},
}
#: Issue 15's gaps, all closed: a case listed here is expected to fail (strict xfail).
GAPS: dict[tuple[str, str, str], str] = {}

CASES = [
    (command, location, plant)
    for command, (_argv, _needs, locations) in COMMANDS.items()
    for location in locations
    for plant in ("writable", "link")
]


def case_id(case: tuple[str, str, str]) -> str:
    return "-".join(case)


def params() -> list[object]:
    found: list[object] = []
    for case in CASES:
        marks: list[pytest.MarkDecorator] = [pytest.mark.needs("second-user")]
        needs_env = COMMANDS[case[0]][1] or case[1] in KBOOT or case[1] in ENV
        if needs_env:
            marks.append(pytest.mark.integration)
        if case in GAPS:
            marks.append(pytest.mark.xfail(strict=True, reason=f"issue 15: {GAPS[case]}"))
        found.append(pytest.param(*case, marks=marks, id=case_id(case)))
    return found


MARKER_SCRIPT = "#!/bin/sh\necho ran >> {marker}\n"


def make_world(root: Path) -> World:
    world = World(
        root=root,
        home=root / "kb",
        keras_home=root / "keras",
        jupyter=root / "jupyter",
        secret=root / "secret",
        marker=root / "ran-foreign-code",
    )
    world.keras_home.mkdir(mode=0o755)
    (world.jupyter / "kernels").mkdir(parents=True, mode=0o755)
    world.secret.mkdir(mode=0o700)
    secret_json = json.dumps({"token": TOKEN, "floatx": "float16"})
    # what a read through a link would find, as a keras.json, as a record, as a Python
    for sub in ("", f"{NAME}/", f"envs/{NAME}/"):
        (world.secret / sub / "bin").mkdir(parents=True, exist_ok=True)
        (world.secret / sub / "keras-home").mkdir(parents=True, exist_ok=True)
        (world.secret / sub / "keras.json").write_text(secret_json, encoding="utf-8")
        (world.secret / sub / "keras-home" / "keras.json").write_text(secret_json, "utf-8")
        python = world.secret / sub / "bin" / "python"
        python.write_text(MARKER_SCRIPT.format(marker=world.marker), encoding="utf-8")
        python.chmod(0o755)
    for path in world.secret.rglob("*.json"):
        path.chmod(0o600)
    return world


def plant(world: World, location: str, how: str, bob: OtherUser) -> Path:
    """Plant at `location`; return the path the refusal must name."""
    path: Path = LOCATIONS[location](world)
    is_file = location.endswith("keras.json")
    if how == "writable":
        folder = path.parent if is_file else path
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(MODES[location])
        return folder
    if os.path.lexists(path):  # kept aside (a rename keeps its identity), out of kboot's way
        path.rename(world.root / f"aside-{location}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.symlink_to(world.secret / "keras.json" if is_file else world.secret)
    os.lchown(path, bob.uid, bob.gid)
    return path


def files_kboot_could_write(world: World) -> Iterator[Path]:
    for folder, dirs, files in os.walk(world.root):  # links are not followed
        if Path(folder) == world.secret:
            dirs.clear()
            continue
        for name in files:
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


@pytest.mark.parametrize(("command", "location", "how"), params())
def test_trust_matrix(
    shared_tmp: Path, bob: OtherUser, command: str, location: str, how: str
) -> None:
    world = make_world(shared_tmp)
    argv, needs_env, _ = COMMANDS[command]
    if needs_env or location in KBOOT or location in ENV:
        made = kboot("create", NAME, "--no-smoke", env=world.env(False))
        assert made.returncode == 0, made.stderr
    manifest = world.root / "lab.toml"
    manifest.write_text(f'[[env]]\nname = "{NAME}"\nprofile = "numpy"\n', encoding="utf-8")
    named = plant(world, location, how, bob)
    argv = [a.format(keras_home=world.keras_home, manifest=manifest) for a in argv]

    before = sorted(world.secret.rglob("*"))
    proc = kboot(*argv, env=world.env(command in KERAS_COMMANDS), timeout=300)

    expected, _reason = NOT_REFUSED.get((command, location, how), (2, ""))
    out = proc.stdout + proc.stderr
    assert proc.returncode == expected, out
    if expected == 2:  # run reports each environment's refusal in its report, on stdout
        assert str(named) in (out if command == "run" else proc.stderr), out
    elif _reason == REPORTS:
        assert "refused: the environment" in proc.stdout and str(named) in proc.stdout, out
    elif _reason == NOT_IN_SYNC:
        assert "NOT in sync" in out and str(named) in proc.stdout, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert TOKEN not in out, "the secret was printed"
    for path in files_kboot_could_write(world):
        assert TOKEN.encode() not in path.read_bytes(), f"the secret leaked into {path}"
    assert not world.marker.exists(), "root ran a Python another user planted"
    assert json.loads((world.secret / "keras.json").read_text(encoding="utf-8"))["token"] == TOKEN
    assert sorted(world.secret.rglob("*")) == before, "kboot wrote into root's secret folder"
