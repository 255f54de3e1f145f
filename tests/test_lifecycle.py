"""The environment folder's life, on the real filesystem: what is kboot's, what is kept,
what recovery does from every journaled state. A fake build stands in for virtualenv and
the installers (they are exercised for real in test_safety.py and the integration tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from damage import damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.envs import lifecycle
from bootstrap.envs.kernel_setup import recorded_sources
from bootstrap.envs.lifecycle import Build, Update, inspect, protected_reason, recover, remove
from bootstrap.envs.smoke import SmokeReport
from bootstrap.jupyter.kernelspec import build_spec
from bootstrap.profiles.model import Profile, parse_profile
from bootstrap.state.ledger import (
    MOVING,
    READY,
    REBUILDING,
    Edit,
    Entry,
    Ledger,
    LedgerError,
    entry_id,
    folder_id,
    migrate,
    parse_entry,
    same_entry,
)
from bootstrap.state.record import EnvRecord, parse_record, read_record, write_record
from bootstrap.system.errors import (
    EnvironmentStateError,
    KbootError,
    UntrustedPathError,
    UsageError,
)


def record(name: str = "env", profile: str = "numpy", fmt: int = 2) -> EnvRecord:
    return EnvRecord(
        format=fmt,
        name=name,
        profile={"name": profile, "path": f"/p/{profile}.toml", "backend": "numpy"},
        profile_digest="d",
        scope="env",
        keras_home="",
        installer="uv",
        python={"version": "3.11.7"},
        system_site_packages=False,
        created_at="2026-01-01T00:00:00+00:00",
        kboot_version="0",
    )


def fake_build(path: Path, marker: str) -> None:
    """What virtualenv, the installer and kboot put into an environment."""
    (path / "bin").mkdir()
    (path / "bin" / "python").write_text(marker, encoding="utf-8")
    (path / "lib" / "site").mkdir(parents=True)
    (path / "lib" / "site" / "pkg.py").write_text(marker, encoding="utf-8")
    (path / "pyvenv.cfg").write_text(f"version_info = 3.11.7\nbuild = {marker}\n", encoding="utf-8")
    (path / "keras-home").mkdir()
    (path / "keras-home" / "keras.json").write_text(marker, encoding="utf-8")


def build(ledger: Ledger, path: Path, marker: str, **kwargs: bool) -> lifecycle.Committed:
    existing = inspect(ledger, path)
    tx = Build(ledger, existing, **kwargs)
    tx.begin()
    fake_build(path, marker)
    return tx.commit(record())


def marker_of(path: Path) -> str:
    return (path / "bin" / "python").read_text(encoding="utf-8")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "kboot-home")


@pytest.fixture
def env(tmp_path: Path) -> Path:
    return tmp_path / "work" / "env"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> content): what must survive."""
    return {
        str(p.relative_to(folder)): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def add_user_files(path: Path) -> dict[str, str]:
    (path / "notebook.ipynb").write_text("{}", encoding="utf-8")
    (path / "data").mkdir()
    (path / "data" / "train.csv").write_text("1,2\n", encoding="utf-8")
    (path / "keras-home" / "my_model.keras").write_text("weights", encoding="utf-8")
    return {
        "notebook.ipynb": "{}",
        "data/train.csv": "1,2\n",
        "keras-home/my_model.keras": "weights",
    }


def assert_kept(path: Path, files: dict[str, str]) -> None:
    for relative, content in files.items():
        assert (path / relative).read_text(encoding="utf-8") == content, relative


# --- ownership ------------------------------------------------------------------------


def test_a_new_build_is_proven_kboot_s_by_the_ledger(ledger: Ledger, env: Path) -> None:
    committed = build(ledger, env, "one")
    existing = inspect(ledger, env)
    assert existing.kind == "kboot"
    assert existing.record is not None
    assert existing.record.owner_token == committed.token
    assert set(committed.owned) == {"bin", "lib", "pyvenv.cfg", "keras-home", "kboot-env.json"}
    entry = ledger.get(env)
    assert entry is not None and entry.state == READY and entry.created_dir
    assert (ledger.folder.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("planted", ["kboot-env.json", "kboot-building"])
def test_a_planted_file_proves_nothing(ledger: Ledger, tmp_path: Path, planted: str) -> None:
    """Defect 2: a folder with a file anyone can create is not kboot's."""
    home = tmp_path / "someone"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret", encoding="utf-8")
    if planted == "kboot-env.json":
        write_record(home, record())
    else:
        (home / planted).write_text("123\n", encoding="utf-8")
    existing = inspect(ledger, home)
    assert existing.kind == "foreign"
    assert "kboot has no record of making it" in existing.reason
    with pytest.raises(AssertionError):
        Build(ledger, existing)  # never without replace_foreign
    assert (home / ".ssh" / "id_ed25519").read_text(encoding="utf-8") == "secret"


def test_a_copied_record_is_not_proof(ledger: Ledger, env: Path, tmp_path: Path) -> None:
    build(ledger, env, "one")
    ledger.drop(env)  # e.g. a ledger of another machine; the record still says kboot
    assert inspect(ledger, env).kind == "foreign"
    other = tmp_path / "copy"
    other.mkdir()
    (other / "kboot-env.json").write_bytes((env / "kboot-env.json").read_bytes())
    assert inspect(ledger, other).kind == "foreign"


def test_a_replaced_folder_is_not_kboot_s(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    for child in env.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    (env / "mine.txt").write_text("x", encoding="utf-8")
    assert inspect(ledger, env).kind == "foreign"


def test_a_damaged_record_in_kboot_s_own_folder_is_still_kboot_s(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    (env / "kboot-env.json").write_text("null", encoding="utf-8")
    existing = inspect(ledger, env)
    assert existing.kind == "kboot"
    assert existing.record is None
    assert "damaged" in existing.reason


# --- rebuild keeps the user's files ------------------------------------------------------


def test_a_rebuild_keeps_every_file_the_user_added(ledger: Ledger, env: Path) -> None:
    """Defect 1: notebook.ipynb and data/ survive a rebuild, where they were."""
    build(ledger, env, "one")
    mine = add_user_files(env)
    committed = build(ledger, env, "two")
    assert marker_of(env) == "two"
    assert_kept(env, mine)
    assert "notebook.ipynb" not in committed.owned and "data" not in committed.owned
    assert not [p for p in env.iterdir() if "kboot-old" in p.name]


def test_a_failed_rebuild_puts_the_old_environment_back(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    before = snapshot(env)
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "two")
    (env / "share").mkdir()  # more of the half-done build
    tx.rollback()
    assert snapshot(env) == before
    assert_kept(env, mine)
    entry = ledger.get(env)
    assert entry is not None and entry.state == READY
    assert inspect(ledger, env).kind == "kboot"


def test_a_failed_first_build_leaves_nothing(ledger: Ledger, env: Path) -> None:
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "one")
    tx.rollback()
    assert not env.exists()
    assert ledger.get(env) is None


def test_a_failed_build_in_an_empty_folder_leaves_it_empty(ledger: Ledger, env: Path) -> None:
    env.mkdir(parents=True)
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "one")
    tx.rollback()
    assert env.is_dir() and not any(env.iterdir())


def test_a_user_entry_where_the_build_writes_is_refused(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    existing = inspect(ledger, env)
    # the user replaced kboot's bin with a folder of their own
    shutil.rmtree(env / "bin")
    ledger.put(replace(existing.entry, owned=tuple(n for n in existing.entry.owned if n != "bin")))  # type: ignore[arg-type]
    (env / "bin").mkdir()
    (env / "bin" / "mytool").write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        lifecycle.check_build_room(inspect(ledger, env))
    assert "bin" in info.value.message
    assert (env / "bin" / "mytool").read_text(encoding="utf-8") == "mine"


# --- foreign folders ----------------------------------------------------------------------


def test_replace_foreign_moves_it_aside_and_never_deletes_it(ledger: Ledger, env: Path) -> None:
    env.mkdir(parents=True)
    (env / "thesis.tex").write_text("years of work", encoding="utf-8")
    committed = build(ledger, env, "one", replace_foreign=True)
    assert committed.aside is not None
    assert committed.aside.name.startswith("env.kboot-backup-")
    assert (committed.aside / "thesis.tex").read_text(encoding="utf-8") == "years of work"
    assert marker_of(env) == "one"


def test_replace_foreign_that_fails_puts_the_folder_back(ledger: Ledger, env: Path) -> None:
    env.mkdir(parents=True)
    (env / "thesis.tex").write_text("years of work", encoding="utf-8")
    tx = Build(ledger, inspect(ledger, env), replace_foreign=True)
    tx.begin()
    fake_build(env, "one")
    tx.rollback()
    assert snapshot(env) == {"thesis.tex": "years of work"}
    assert [p.name for p in env.parent.iterdir()] == ["env"]


# --- removal --------------------------------------------------------------------------------


def test_remove_deletes_kboot_s_part_and_keeps_the_user_s(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    removed = remove(ledger, inspect(ledger, env))
    assert set(removed.kept) == {"data", "keras-home", "notebook.ipynb"}
    assert not removed.folder_removed
    assert_kept(env, mine)
    assert sorted(p.name for p in env.iterdir()) == ["data", "keras-home", "notebook.ipynb"]
    assert sorted(p.name for p in (env / "keras-home").iterdir()) == ["my_model.keras"]
    entry = ledger.get(env)
    assert entry is not None and entry.token is None  # not an environment: the user's files
    assert inspect(ledger, env).kind == "kept"  # a later build goes around them
    assert [p.name for p in env.parent.iterdir()] == ["env"]


def test_remove_of_a_clean_environment_removes_the_folder_kboot_made(
    ledger: Ledger, env: Path
) -> None:
    build(ledger, env, "one")
    removed = remove(ledger, inspect(ledger, env))
    assert removed.folder_removed
    assert not env.exists()


def test_remove_leaves_a_folder_the_user_made(ledger: Ledger, env: Path) -> None:
    env.mkdir(parents=True)
    build(ledger, env, "one")
    remove(ledger, inspect(ledger, env))
    assert env.is_dir() and not any(env.iterdir())


# --- recovery from every journaled state ---------------------------------------------------


def crash_after_begin(ledger: Ledger, path: Path, **kwargs: bool) -> Build:
    tx = Build(ledger, inspect(ledger, path), **kwargs)
    tx.begin()
    return tx


def test_recovery_of_a_rebuild_killed_while_moving_puts_everything_back(
    ledger: Ledger, env: Path
) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    before = snapshot(env)
    entry = ledger.get(env)
    assert entry is not None
    # killed after moving two of kboot's entries aside
    backup = env / ".kboot-old-0123456789ab"
    backup.mkdir()
    for name in ("bin", "lib"):
        (env / name).rename(backup / name)
    ledger.put(
        replace(
            entry,
            state=REBUILDING,
            phase=MOVING,
            pending="new-token",
            moved=entry.owned,
            backup=backup,
            backup_id=folder_id(backup),  # kboot records the scratch folder it made
            user_entries=("data", "notebook.ipynb"),
        )
    )
    notes = recover(Ledger(ledger.home), env)
    assert any("restored" in n for n in notes)
    assert snapshot(env) == before
    assert_kept(env, mine)
    assert not backup.exists()
    assert inspect(ledger, env).kind == "kboot"


def test_recovery_of_a_rebuild_killed_while_building_restores_the_old(
    ledger: Ledger, env: Path
) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    before = snapshot(env)
    crash_after_begin(ledger, env)
    fake_build(env, "two")  # half a build: no record yet
    (env / "surprise.txt").write_text("appeared meanwhile", encoding="utf-8")
    notes = recover(Ledger(ledger.home), env)
    assert any("surprise.txt" in n for n in notes), "an unknown entry is left, and said so"
    (env / "surprise.txt").unlink()
    assert snapshot(env) == before
    assert_kept(env, mine)
    assert marker_of(env) == "one"


def test_recovery_of_a_complete_rebuild_rolls_it_forward(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    tx = crash_after_begin(ledger, env)
    fake_build(env, "two")
    assert tx.entry is not None
    write_record(env, replace(record(), owner_token=tx.token, owned=["bin", "lib"]))
    notes = recover(Ledger(ledger.home), env)
    assert any("finished" in n for n in notes)
    assert marker_of(env) == "two"
    assert_kept(env, mine)
    assert inspect(ledger, env).kind == "kboot"
    assert not [p for p in env.iterdir() if "kboot-old" in p.name]


def test_recovery_of_a_first_build_removes_only_what_a_build_makes(
    ledger: Ledger, env: Path
) -> None:
    crash_after_begin(ledger, env)
    fake_build(env, "one")
    (env / "notes.md").write_text("written after the kill", encoding="utf-8")
    notes = recover(Ledger(ledger.home), env)
    assert sorted(p.name for p in env.iterdir()) == ["notes.md"]
    assert any("notes.md" in n for n in notes)
    entry = ledger.get(env)  # the user's file, remembered as theirs: a build goes around it
    assert entry is not None and entry.token is None and entry.kept == ("notes.md",)
    assert inspect(ledger, env).kind == "kept"


def test_recovery_of_replace_foreign_brings_the_folder_back(ledger: Ledger, env: Path) -> None:
    env.mkdir(parents=True)
    (env / "thesis.tex").write_text("years of work", encoding="utf-8")
    crash_after_begin(ledger, env, replace_foreign=True)
    fake_build(env, "one")
    recover(Ledger(ledger.home), env)
    assert snapshot(env) == {"thesis.tex": "years of work"}


def test_recovery_of_a_removal_finishes_it_and_keeps_the_user_s_files(
    ledger: Ledger, env: Path
) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    entry = ledger.get(env)
    assert entry is not None
    trash = env / ".kboot-removing-0123456789ab"
    trash.mkdir()
    (env / "bin").rename(trash / "bin")  # killed after the first move
    inner = ["keras-home/keras.json"]
    moved = tuple(n for n in entry.owned if n != "keras-home") + tuple(inner)
    ledger.put(
        replace(
            entry,
            state="removing",
            phase=MOVING,
            backup=trash,
            backup_id=folder_id(trash),
            moved=moved,
        )
    )
    recover(Ledger(ledger.home), env)
    assert not trash.exists()
    assert sorted(p.name for p in env.iterdir()) == ["data", "keras-home", "notebook.ipynb"]
    assert_kept(env, mine)
    assert inspect(ledger, env).kind == "kept"


def test_paths_with_glob_characters_are_used_literally(ledger: Ledger, tmp_path: Path) -> None:
    """Defect 6: recovery of `[ab]` must not touch the backup of `a` or `b`."""
    globby, plain = tmp_path / "[ab]", tmp_path / "a"
    build(ledger, globby, "glob")
    build(ledger, plain, "plain")
    tx = crash_after_begin(ledger, plain)  # a's rebuild is in flight: its backup exists
    assert tx.entry is not None and tx.entry.backup is not None
    backup_before = snapshot(tx.entry.backup)
    crash_after_begin(ledger, globby)
    fake_build(globby, "half")
    recover(Ledger(ledger.home), globby)
    assert marker_of(globby) == "glob"
    assert snapshot(tx.entry.backup) == backup_before


# --- a kill at every checkpoint, then the next command ---------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (test_safety.py sends the real one)."""


class KillAt:
    """A stand-in for lifecycle.checkpoint: records the points, or 'dies' at the n-th."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.seen = at, []  # type: ignore[var-annotated]

    def __call__(self, name: str, *, interruptible: bool = True) -> None:
        self.seen.append(name)
        if self.at is not None and len(self.seen) == self.at:
            raise Killed(name)


def rebuild_ok(ledger: Ledger, env: Path) -> None:
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "two")
    tx.commit(record())


def rebuild_failing(ledger: Ledger, env: Path) -> None:
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "two")
    tx.rollback()  # the build failed: kboot rolls back, and is killed while doing it


def update_ok(ledger: Ledger, env: Path) -> None:
    tx = Update(ledger, inspect(ledger, env), [env / "keras-home" / "keras.json"])
    tx.begin()
    (env / "keras-home" / "keras.json").write_text("one-updated", encoding="utf-8")
    tx.commit(record())


def remove_it(ledger: Ledger, env: Path) -> None:
    remove(ledger, inspect(ledger, env))


def first_build(ledger: Ledger, env: Path) -> None:
    shutil.rmtree(env)  # nothing there before
    build(ledger, env, "two")


def first_build_failing(ledger: Ledger, env: Path) -> None:
    shutil.rmtree(env)
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "two")
    tx.rollback()


#: scenario -> (action, the environments that may be complete afterwards; None: no environment)
SCENARIOS = {
    "rebuild": (rebuild_ok, {"one", "two"}),
    "failed rebuild": (rebuild_failing, {"one"}),
    "update": (update_ok, {"one"}),
    "remove": (remove_it, {"one", None}),
    "first build": (first_build, {"two", None}),
    "failed first build": (first_build_failing, {None}),
}


def kill_points(scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    spy = KillAt()
    monkeypatch.setattr(lifecycle, "checkpoint", spy)
    ledger, env = Ledger(tmp_path / "dry-home"), tmp_path / "dry" / "env"
    build(ledger, env, "one")
    add_user_files(env)
    start = len(spy.seen)
    SCENARIOS[scenario][0](ledger, env)
    return len(spy.seen) - start


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_kill_at_every_checkpoint_leaves_a_complete_environment(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a kill anywhere and the next command's recovery: the old or the new environment
    is complete (or, for a removal, gone), and no file of the user's is lost."""
    action, outcomes = SCENARIOS[scenario]
    points = kill_points(scenario, tmp_path, monkeypatch)
    assert points >= 2
    for at in range(1, points + 1):
        ledger, env = Ledger(tmp_path / f"home-{at}"), tmp_path / f"w{at}" / "env"
        monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
        build(ledger, env, "one")
        mine = add_user_files(env)
        spy = KillAt(at)
        monkeypatch.setattr(lifecycle, "checkpoint", spy)
        if scenario.endswith("first build"):
            ledger.drop(env)
            mine = {}
        with pytest.raises(Killed):
            action(ledger, env)
        monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
        recover(Ledger(ledger.home), env)  # the next command, in a new process
        where = f"{scenario}, killed at {spy.seen[-1]} (#{at})"
        assert_kept(env, mine)
        existing = inspect(ledger, env)
        if existing.kind == "kboot":
            assert existing.record is not None, where
            assert marker_of(env) in outcomes, where
            assert (env / "pyvenv.cfg").is_file(), where
            assert (env / "lib" / "site" / "pkg.py").is_file(), where
            config = (env / "keras-home" / "keras.json").read_text(encoding="utf-8")
            assert config in {marker_of(env), "one-updated"}, where
        else:
            assert None in outcomes, where
            assert not (env / "bin").exists() and not (env / "lib").exists(), where
        leftovers = [p.name for p in env.parent.iterdir() if ".kboot-" in p.name]
        if env.is_dir():
            leftovers += [p.name for p in env.iterdir() if p.name.startswith(".kboot-")]
        assert leftovers == [], where
        entry = ledger.get(env)
        assert entry is None or entry.state == READY, where


# --- the folder's identity: a folder replaced at its name is never kboot's ----------------------


def user_venv(path: Path) -> dict[str, str]:
    """The user's own virtualenv (and a file they care about) made at `path` by hand."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_text("the user's python", encoding="utf-8")
    (path / "lib").mkdir()
    (path / "lib" / "thesis.txt").write_text("years of work", encoding="utf-8")
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n", encoding="utf-8")
    return snapshot(path)


def test_a_folder_replaced_at_a_ready_environment_s_name_is_foreign(
    ledger: Ledger, env: Path
) -> None:
    """Item 3: mv env env.mine; mkdir -p env/lib; cp env.mine/kboot-env.json env/; a thesis
    in env/lib. The token in the copied record matches, the folder is not kboot's."""
    build(ledger, env, "one")
    env.rename(env.with_name("env.mine"))
    (env / "lib").mkdir(parents=True)
    shutil.copy(env.with_name("env.mine") / "kboot-env.json", env / "kboot-env.json")
    (env / "lib" / "thesis.txt").write_text("thesis", encoding="utf-8")
    existing = inspect(ledger, env)
    assert existing.kind == "foreign"
    assert "replaced" in existing.reason
    with pytest.raises(AssertionError):
        Build(ledger, existing)  # never rebuilt, removed or "repaired"
    assert (env / "lib" / "thesis.txt").read_text(encoding="utf-8") == "thesis"
    assert inspect(ledger, env.with_name("env.mine")).kind == "foreign"  # a moved env: no
    # once the user's folder is out of the way, the name builds again
    env.rename(env.with_name("env.theirs"))
    build(ledger, env, "two")
    assert inspect(ledger, env).kind == "kboot"


def replace_folder(env: Path, how: str) -> None:
    """What a user does after a kill: the half-done folder moved away (or deleted, when
    the new folder may get the old one's inode), their own made at its name."""
    if env.exists() and how == "moved":
        env.rename(env.with_name("env.before"))
    elif env.exists():
        shutil.rmtree(env)
    env.mkdir(parents=True, exist_ok=True)


#: kill-point scenarios whose folder the user replaces before the next command
REPLACED = {
    "first build": first_build,
    "rebuild": rebuild_ok,
    "failed rebuild": rebuild_failing,
    "update": update_ok,
    "remove": remove_it,
}


@pytest.mark.parametrize("how", ["moved", "deleted"])
@pytest.mark.parametrize("scenario", sorted(REPLACED))
def test_a_folder_replaced_after_a_kill_is_never_touched_by_recovery(
    scenario: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3 after a kill: the user replaces the half-done folder with their own venv;
    the next command's recovery leaves it (and the moved-away one) as they are, says so,
    and the name is usable again once their folder is out of the way."""
    action = REPLACED[scenario]
    points = kill_points(scenario, tmp_path, monkeypatch)
    for at in range(1, points + 1):
        ledger, env = Ledger(tmp_path / f"home-{at}"), tmp_path / f"w{at}" / "env"
        monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
        build(ledger, env, "one")
        add_user_files(env)
        spy = KillAt(at)
        monkeypatch.setattr(lifecycle, "checkpoint", spy)
        if scenario == "first build":
            ledger.drop(env)
        with pytest.raises(Killed):
            action(ledger, env)
        monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
        where = f"{scenario}, killed at {spy.seen[-1]} (#{at})"
        replace_folder(env, how)
        mine = user_venv(env)
        moved = env.with_name("env.before")
        before = snapshot(moved) if moved.exists() else {}
        notes = recover(Ledger(ledger.home), env)  # the next command, in a new process
        assert snapshot(env) == mine, where  # 0 user files lost
        assert (snapshot(moved) if moved.exists() else {}) == before, where
        entry = ledger.get(env)
        if entry is not None:  # recovery had finished before the folder was replaced
            assert entry.state == READY, where
        else:
            assert any("untouched" in note for note in notes), (where, notes)
        existing = inspect(ledger, env)  # refused, never repaired
        if existing.kind == "kept":  # a new folder that got the old one's inode, after
            with pytest.raises(UsageError):  # recovery had finished: a build there stops
                lifecycle.check_build_room(existing)  # at the user's bin/, lib/...
        else:
            assert existing.kind == "foreign", where
        assert snapshot(env) == mine, where
        env.rename(env.with_name("env.theirs"))  # 0 names unusable: out of the way, it builds
        build(ledger, env, "two")
        assert inspect(ledger, env).kind == "kboot", where


def test_a_scratch_folder_kboot_did_not_make_is_never_deleted(ledger: Ledger, env: Path) -> None:
    """A journal names a trash folder; the folder at that name is not the one kboot made."""
    build(ledger, env, "one")
    entry = ledger.get(env)
    assert entry is not None
    trash = env / ".kboot-removing-0123456789ab"
    trash.mkdir()  # another folder than the one kboot recorded
    (trash / "precious.txt").write_text("mine", encoding="utf-8")
    recorded = folder_id(env.parent)
    assert recorded is not None and folder_id(trash) != recorded
    ledger.put(replace(entry, state="removing", phase="deleting", backup=trash, backup_id=recorded))
    notes = recover(Ledger(ledger.home), env)
    assert (trash / "precious.txt").read_text(encoding="utf-8") == "mine"
    assert any(str(trash) in note for note in notes)


def test_a_folder_moved_aside_comes_back_when_the_build_s_folder_is_gone(
    ledger: Ledger, env: Path
) -> None:
    """--replace-foreign killed mid-build, then the half-built folder deleted by hand: the
    journal is forgotten, and the user's folder moved aside goes back to its name."""
    env.mkdir(parents=True)
    (env / "thesis.tex").write_text("years of work", encoding="utf-8")
    crash_after_begin(ledger, env, replace_foreign=True)
    fake_build(env, "one")
    shutil.rmtree(env)
    notes = recover(Ledger(ledger.home), env)
    assert snapshot(env) == {"thesis.tex": "years of work"}
    assert any("put your folder back" in note for note in notes)
    assert ledger.get(env) is None


def test_a_killed_removal_leaves_what_the_user_made_again_at_kboot_s_names(
    ledger: Ledger, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3, removal: killed after moving bin/ to the trash; the user deletes lib/ and
    makes their own there (same folder). Finishing the removal moves only the entries the
    journal recorded; the user's new lib/ stays, and is theirs."""
    build(ledger, env, "one")
    monkeypatch.setattr(lifecycle, "checkpoint", KillAt(2))  # remove-journaled, remove-moved-0
    with pytest.raises(Killed):
        remove(ledger, inspect(ledger, env))
    monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
    assert not (env / "bin").exists()
    shutil.rmtree(env / "lib")
    (env / "lib").mkdir()
    (env / "lib" / "thesis.txt").write_text("years of work", encoding="utf-8")
    notes = recover(Ledger(ledger.home), env)
    assert (env / "lib" / "thesis.txt").read_text(encoding="utf-8") == "years of work"
    assert any(str(env / "lib") in note for note in notes)
    assert not (env / "pyvenv.cfg").exists() and not (env / "kboot-env.json").exists()
    entry = ledger.get(env)
    assert entry is not None and entry.token is None and "lib" in entry.kept


def test_an_entry_made_again_is_told_apart_even_on_the_same_inode(tmp_path: Path) -> None:
    """A folder deleted and made again often gets the freed inode back (that made the test
    above fail now and then): a journal also records the change time and what the entry
    holds, so the new folder is not taken for kboot's. A change to the inode counts, as
    here on the very same inode; so do other contents, whatever the clock says; an
    earlier kboot's three numbers still compare."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "python3.11").mkdir()
    recorded = entry_id(lib)
    assert recorded is not None and same_entry(lib, recorded)
    assert same_entry(lib, recorded[:3])  # a journal an earlier kboot wrote
    before = os.lstat(lib).st_ino
    os.chmod(lib, 0o750)  # the inode changes, the folder is the same
    assert os.lstat(lib).st_ino == before
    assert not same_entry(lib, recorded)
    recorded = entry_id(lib)
    (lib / "python3.11").rmdir()
    (lib / "thesis.txt").write_text("years of work", encoding="utf-8")
    assert not same_entry(lib, recorded)
    assert not same_entry(tmp_path / "gone", recorded)


def remove_with_kept_keras_home(ledger: Ledger, env: Path) -> dict[str, str]:
    build(ledger, env, "one")
    (env / "keras-home" / "my_model.keras").write_text("weights", encoding="utf-8")
    removed = remove(ledger, inspect(ledger, env))
    assert removed.kept == ("keras-home",)
    return {"keras-home/my_model.keras": "weights"}


def test_a_kill_of_a_build_where_a_removal_kept_keras_home_leaves_the_name_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 5: create, a file in keras-home, remove, then a create killed anywhere: the
    next create builds there again (0 names unusable) and the file survives (0 lost)."""
    spy = KillAt()
    monkeypatch.setattr(lifecycle, "checkpoint", spy)
    ledger, env = Ledger(tmp_path / "dry-home"), tmp_path / "dry" / "env"
    remove_with_kept_keras_home(ledger, env)
    start = len(spy.seen)
    build(ledger, env, "two")
    points = len(spy.seen) - start
    assert points >= 3
    for at in range(1, points + 1):
        ledger, env = Ledger(tmp_path / f"home-{at}"), tmp_path / f"w{at}" / "env"
        monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
        mine = remove_with_kept_keras_home(ledger, env)
        spy = KillAt(at)
        monkeypatch.setattr(lifecycle, "checkpoint", spy)
        with pytest.raises(Killed):
            build(ledger, env, "two")
        monkeypatch.setattr(lifecycle, "checkpoint", KillAt())
        where = f"killed at {spy.seen[-1]} (#{at})"
        recover(Ledger(ledger.home), env)
        assert_kept(env, mine)
        existing = inspect(ledger, env)
        assert existing.kind in ("kept", "kboot"), (where, existing.reason)
        if existing.kind == "kept":
            lifecycle.check_build_room(existing)
        build(ledger, env, "three")  # the next create
        assert marker_of(env) == "three", where
        assert_kept(env, mine)
        assert not [p.name for p in env.iterdir() if p.name.startswith(".kboot-")], where


def test_a_file_added_after_a_removal_does_not_block_a_build_there(
    ledger: Ledger, env: Path
) -> None:
    """Item 15: the folder a removal left is the user's place; a new file there is theirs,
    and a later build goes around it as around the rest."""
    build(ledger, env, "one")
    mine = add_user_files(env)
    remove(ledger, inspect(ledger, env))
    (env / "later.txt").write_text("added after the removal", encoding="utf-8")
    mine["later.txt"] = "added after the removal"
    existing = inspect(ledger, env)
    assert existing.kind == "kept", existing.reason
    assert "later.txt" in existing.user_entries
    lifecycle.check_build_room(existing)
    committed = build(ledger, env, "two")
    assert_kept(env, mine)
    assert "later.txt" not in committed.owned
    remove(ledger, inspect(ledger, env))
    assert_kept(env, mine)


def test_a_left_over_folder_that_was_replaced_or_holds_a_build_s_names_is_refused(
    ledger: Ledger, env: Path
) -> None:
    """Item 15: what a later create refuses there, with one reason each."""
    build(ledger, env, "one")
    add_user_files(env)
    remove(ledger, inspect(ledger, env))
    (env / "bin").mkdir()  # something of the user's where a build writes
    with pytest.raises(UsageError) as info:
        lifecycle.check_build_room(inspect(ledger, env))
    assert "bin" in info.value.message and str(env) in info.value.message
    (env / "bin").rmdir()
    env.rename(env.with_name("env.old"))  # another folder at the name: not the one left
    env.mkdir()
    (env / "thesis.txt").write_text("x", encoding="utf-8")
    existing = inspect(ledger, env)
    assert existing.kind == "foreign" and "replaced" in existing.reason
    assert (env / "thesis.txt").read_text(encoding="utf-8") == "x"


# --- updates in place -------------------------------------------------------------------------


def test_an_interrupted_update_is_undone(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    before = snapshot(env)
    existing = inspect(ledger, env)
    tx = Update(ledger, existing, [env / "keras-home" / "keras.json", env / "kboot-env.json"])
    tx.begin()
    (env / "keras-home" / "keras.json").write_text("changed", encoding="utf-8")
    recover(Ledger(ledger.home), env)
    assert snapshot(env) == before
    entry = ledger.get(env)
    assert entry is not None and entry.state == READY


# --- guards -------------------------------------------------------------------------------------


def test_protected_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "kboot-home"
    (home / "envs").mkdir(parents=True)
    assert protected_reason(Path("/"), home) == "a filesystem root"
    assert protected_reason(Path(os.environ["HOME"]), home) == "a home folder"
    assert protected_reason(home, home) == "kboot's own home, or holds it"
    assert protected_reason(home.parent, home) == "kboot's own home, or holds it"
    assert protected_reason(home / "envs", home) == "one of kboot's own folders"
    work = tmp_path / "work"
    (work / "inner").mkdir(parents=True)
    monkeypatch.chdir(work / "inner")
    assert protected_reason(work, home) == "the current folder, or holds it"
    assert protected_reason(work, home, allow_cwd=True) is None
    assert protected_reason(home / "envs" / "x", home) is None


def test_a_guarded_path_is_never_deleted(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(EnvironmentStateError) as info:
        lifecycle.guard(Path("/"), ledger.home, action="delete")
    assert "filesystem root" in info.value.message


# --- the layout before the ledger ------------------------------------------------------------


def test_environments_of_an_earlier_kboot_are_adopted_once(tmp_path: Path) -> None:
    home = tmp_path / "kboot-home"
    old = home / "envs" / "numpy"
    old.mkdir(parents=True)
    fake_build(old, "old")
    write_record(old, record("numpy", fmt=1))
    dest = tmp_path / "elsewhere"
    dest.mkdir()
    fake_build(dest, "dest")
    write_record(dest, record("elsewhere", fmt=1))
    (home / "external-envs.txt").write_text(f"{dest}\n", encoding="utf-8")
    half = home / "envs" / "half"
    half.mkdir()
    write_record(half, record("half", fmt=1))
    (half / "kboot-building").write_text("1", encoding="utf-8")
    ledger = Ledger(home)
    adopted = migrate(ledger, home / "envs")
    assert sorted(adopted) == sorted([old, dest])
    assert inspect(ledger, old).kind == "kboot"
    assert inspect(ledger, dest).kind == "kboot"
    assert inspect(ledger, half).kind == "foreign"
    assert not (home / "external-envs.txt").exists()
    assert migrate(ledger, home / "envs") == []


# --- parsers of what kboot reads back: any input gives a value or kboot's own error ----------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
ENTRY_KEYS = st.sampled_from(
    ["path", "token", "owned", "folder_id", "state", "saved", "edits", "pid", "moved", "phase"]
)


JOURNAL = Entry(  # an update in flight, its journal filled in
    path=Path("/envs/x"),
    token="t" * 32,
    owned=("bin", "lib", "pyvenv.cfg", "kboot-env.json"),
    name="x",
    folder_id=(64769, 1234),
    created_dir=True,
    state=REBUILDING,
    phase=MOVING,
    pending="p" * 32,
    user_entries=("notes.txt",),
    moved=("bin", "lib"),
    moved_ids=((64769, 1235, 1000), (64769, 1236, 1000)),
    backup=Path("/envs/x/.kboot-old-0123456789ab"),
    backup_id=(64769, 1237, 1000),
    aside=Path("/envs/x.kboot-backup-1"),
    saved={"keras-home/keras.json": "{}", "kboot-env.json": None},
    edits=(Edit(Path("/home/u/.keras/keras.json"), "{}", "0" * 64),),
    pid=4242,
    parents=("/envs",),
    kept=("notes.txt",),
).to_dict()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(ENTRY_KEYS, JSON, max_size=8) | JSON | damaged(JOURNAL, max_edits=3))
def test_any_ledger_entry_parses_or_is_a_ledger_error(data: object) -> None:
    """Ledger entries and the journal inside them (edits, saved texts, scratch folders)."""
    try:
        entry = parse_entry(data, Path("/k/owned/x.json"))
    except LedgerError as exc:
        assert "/k/owned/x.json" in exc.message
    else:
        assert isinstance(entry, Entry)
        assert parse_entry(entry.to_dict(), Path("/k/owned/x.json")) == entry


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged(JOURNAL, max_edits=3).map(json.dumps).map(str.encode) | st.binary(max_size=200))
def test_any_journal_file_reads_or_is_a_ledger_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    """A damaged journal on disk: `get` raises kboot's error, `scan` lists it as damaged."""
    home = tmp_path_factory.mktemp("ledger")
    ledger = Ledger(home)
    ledger.put(Entry(path=Path("/envs/x")))
    ledger.file_for(Path("/envs/x")).write_bytes(raw)
    with contextlib.suppress(KbootError):
        ledger.get(Path("/envs/x"))
    assert len(ledger.entries()) == 1


def test_the_full_journal_parses_back() -> None:
    assert parse_entry(JOURNAL, Path("/k/x.json")).to_dict() == JOURNAL


def full_record() -> dict[str, Any]:
    """A record as `create` writes it, every nested table filled in."""
    profile = parse_profile(
        {
            "backend": "jax",
            "packages": ["jax"],
            "env": {"XLA_FLAGS": "--x"},
            "extra_index_urls": ["https://example.invalid/simple"],
        },
        path=Path("/p/jax.toml"),
        name="jax",
    )
    smoke = SmokeReport(
        ok=True,
        reported={"backend": "jax", "epsilon": 1e-07},
        devices=({"kind": "cpu", "name": "TFRT_CPU_0"},),
        problems=(),
        warnings=("w",),
        keras_version="3.8.0",
        backend_version="0.4.38",
        seconds=1.5,
    )
    return {
        **record("full").to_dict(),
        "profile": profile.to_dict(),
        "smoke": smoke.to_dict(),
        "python": {
            "version": "3.11.7",
            "path": "/usr/bin/python3",
            "real_path": "/usr/bin/python3",
        },
        "startup_env": {"KERAS_HOME": "/env/keras-home"},
        "packages": {"keras": "3.8.0", "ipykernel": "7.1.0"},
        "lock": {"path": "/p/jax.lock", "digest": "0" * 64},
        "kernel": {"name": "kboot-full", "display_name": "full"},
        "owned": ["bin", "lib", "pyvenv.cfg"],
    }


def read_back(parsed: EnvRecord) -> None:
    """What commands do with a parsed record's nested tables: nothing but kboot's own
    error may come out (`check` rebuilds the profile, `create` the smoke report...)."""
    Profile.from_dict(parsed.profile)
    if parsed.smoke is not None:
        SmokeReport.from_dict(parsed.smoke)
    recorded_sources(parsed)
    with contextlib.suppress(KbootError):
        build_spec(Path("/env"), Path("/env/bin/python"), parsed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    JSON
    | st.dictionaries(st.sampled_from(list(EnvRecord.__dataclass_fields__)), JSON)
    | damaged(full_record())
)
def test_any_record_parses_or_is_kboot_s_error(data: object) -> None:
    """Nested fields too: a record whose profile has no path, or whose smoke report holds
    a number for a list, once passed here and failed later as an internal error."""
    try:
        parsed = parse_record(data, Path("/env/kboot-env.json"))
    except KbootError as exc:
        assert "/env/kboot-env.json" in exc.message
    else:
        assert isinstance(parsed, EnvRecord)
        read_back(parsed)


def test_a_full_record_parses_back() -> None:
    parsed = parse_record(full_record(), Path("/env/kboot-env.json"))
    assert Profile.from_dict(parsed.profile).to_dict() == parsed.profile
    assert (
        parsed.smoke is not None and SmokeReport.from_dict(parsed.smoke).to_dict() == parsed.smoke
    )


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        (("profile", "path"), None),
        (("profile", "packages"), 3),
        (("profile", "sources"), {"extra_index_urls": 1}),
        (("profile", "env"), {"A": 1}),
        (("smoke", "devices"), 1),
        (("smoke", "problems"), [None]),
        (("smoke", "seconds"), "1"),
        (("python", "version"), 3),
    ],
)
def test_a_damaged_nested_field_names_the_file(where: tuple[str, str], bad: object) -> None:
    data = full_record()
    if bad is None:
        del data[where[0]][where[1]]
    else:
        data[where[0]][where[1]] = bad
    with pytest.raises(EnvironmentStateError, match=r"/env/kboot-env\.json") as info:
        parse_record(data, Path("/env/kboot-env.json"))
    assert where[0] in info.value.message


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_record_file_reads_or_is_kboot_s_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    folder = tmp_path_factory.mktemp("rec")
    (folder / "kboot-env.json").write_bytes(raw)
    with contextlib.suppress(KbootError):
        read_record(folder)


# --- found in review: each of these lost or exposed a file that was not kboot's ---------------


def test_a_keras_home_link_is_removed_as_a_link_never_through(
    ledger: Ledger, env: Path, tmp_path: Path
) -> None:
    build(ledger, env, "one")
    user_keras = tmp_path / "dot-keras"
    (user_keras / "datasets").mkdir(parents=True)
    (user_keras / "keras.json").write_text('{"backend": "jax"}', encoding="utf-8")
    (user_keras / "datasets" / "mnist.npz").write_text("data", encoding="utf-8")
    shutil.rmtree(env / "keras-home")
    (env / "keras-home").symlink_to(user_keras)
    before = snapshot(user_keras)
    remove(ledger, inspect(ledger, env))
    assert snapshot(user_keras) == before
    assert not os.path.lexists(env / "keras-home")


def test_files_that_appear_during_a_build_are_never_claimed_or_deleted(
    ledger: Ledger, env: Path
) -> None:
    tx = Build(ledger, inspect(ledger, env))
    tx.begin()
    fake_build(env, "one")
    (env / "analysis.ipynb").write_text("mine", encoding="utf-8")
    committed = tx.commit(record())
    assert "analysis.ipynb" not in committed.owned
    remove(ledger, inspect(ledger, env))
    assert (env / "analysis.ipynb").read_text(encoding="utf-8") == "mine"

    tx = Build(ledger, inspect(ledger, env))  # and when the build fails
    tx.begin()
    fake_build(env, "two")
    (env / "during.txt").write_text("mine too", encoding="utf-8")
    notes = tx.rollback()
    assert (env / "during.txt").read_text(encoding="utf-8") == "mine too"
    assert any("during.txt" in note for note in notes)
    assert not (env / "bin").exists()


def test_a_forged_journal_cannot_point_recovery_at_other_files(
    ledger: Ledger, env: Path, tmp_path: Path
) -> None:
    build(ledger, env, "one")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years", encoding="utf-8")
    file = ledger.file_for(env)
    data = json.loads(file.read_text(encoding="utf-8"))
    data.update(state="removing", phase="deleting", backup=str(precious))
    file.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(LedgerError) as info:
        recover(Ledger(ledger.home), env)
    assert "not a kboot scratch folder" in info.value.message
    assert (precious / "thesis.tex").read_text(encoding="utf-8") == "years"


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_ledger_others_can_write_is_not_trusted(ledger: Ledger, env: Path, mode: int) -> None:
    build(ledger, env, "one")
    ledger.folder.chmod(mode)
    with pytest.raises(UntrustedPathError) as info:
        lifecycle.open_ledger(ledger.home, ledger.home / "envs")
    assert "writable by other users" in info.value.message


def test_migration_never_adopts_through_a_symlink(tmp_path: Path) -> None:
    home = tmp_path / "kboot-home"
    (home / "envs").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    fake_build(victim, "theirs")
    write_record(victim, record("victim", fmt=1))
    (home / "envs" / "victim").symlink_to(victim)
    assert migrate(Ledger(home), home / "envs") == []


def test_a_removal_that_fails_half_way_puts_everything_back(
    ledger: Ledger, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    before = snapshot(env)
    real_move, calls = lifecycle._move, []

    def flaky_move(source: Path, target: Path, home: Path) -> None:
        calls.append(source)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied", str(source))
        real_move(source, target, home)

    monkeypatch.setattr(lifecycle, "_move", flaky_move)
    with pytest.raises(EnvironmentStateError) as info:
        remove(ledger, inspect(ledger, env))
    assert "Permission denied" in info.value.message and "left as it was" in info.value.message
    assert snapshot(env) == before
    assert_kept(env, mine)
    assert inspect(ledger, env).kind == "kboot"


def test_a_new_build_goes_around_the_files_a_removal_kept(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    mine = add_user_files(env)
    remove(ledger, inspect(ledger, env))
    assert inspect(ledger, env).kind == "kept"
    committed = build(ledger, env, "two")
    assert marker_of(env) == "two"
    assert_kept(env, mine)
    assert "data" not in committed.owned and "notebook.ipynb" not in committed.owned


def test_folders_made_for_an_environment_go_with_it(ledger: Ledger, tmp_path: Path) -> None:
    deep = tmp_path / "deep" / "a" / "b" / "env"
    tx = Build(ledger, inspect(ledger, deep))
    tx.begin()
    fake_build(deep, "one")
    tx.rollback()
    assert not (tmp_path / "deep").exists()
    build(ledger, deep, "one")
    remove(ledger, inspect(ledger, deep))
    assert not (tmp_path / "deep").exists()


def test_a_real_download_folder_in_keras_home_is_the_user_s(ledger: Ledger, env: Path) -> None:
    build(ledger, env, "one")
    (env / "keras-home" / "datasets").mkdir()  # kboot's link fell back to a real folder
    (env / "keras-home" / "datasets" / "cifar.tar.gz").write_text("data", encoding="utf-8")
    build(ledger, env, "two")
    assert (env / "keras-home" / "datasets" / "cifar.tar.gz").read_text(encoding="utf-8") == "data"
    remove(ledger, inspect(ledger, env))
    assert (env / "keras-home" / "datasets" / "cifar.tar.gz").read_text(encoding="utf-8") == "data"


def test_downloads_in_kboot_s_own_cache_folder_move_into_the_rebuild(
    ledger: Ledger, env: Path
) -> None:
    """Where the user has no ~/.keras/datasets, a build makes an empty real one; a rebuild
    carries the downloads that landed in it, and leaves no backup behind."""
    build(ledger, env, "one")
    (env / "keras-home" / "datasets").mkdir()
    (env / "keras-home" / "datasets" / "mnist.npz").write_text("data", encoding="utf-8")
    existing = inspect(ledger, env)
    tx = Build(ledger, existing)
    tx.begin()
    fake_build(env, "two")
    (env / "keras-home" / "datasets").mkdir()  # the rebuild's own, still empty
    committed = tx.commit(record())
    assert (env / "keras-home" / "datasets" / "mnist.npz").read_text(encoding="utf-8") == "data"
    assert not [p for p in env.iterdir() if p.name.startswith(".kboot-")]
    assert not any("has one too" in note for note in committed.notes)
    remove(ledger, inspect(ledger, env))  # the user's downloads stay where they are
    assert (env / "keras-home" / "datasets" / "mnist.npz").read_text(encoding="utf-8") == "data"
