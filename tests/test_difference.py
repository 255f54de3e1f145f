"""One decision, "is it up to date?", for create, sync, sync --check, check and list.

Fake environments (a ledger entry, a record, this test's Python as the interpreter)
stand in for real builds: everything here is decided before anything is installed.
Each test names the disagreement between the old copies of that decision it pins down.
"""

from __future__ import annotations

import inspect as source_of
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bootstrap.envs import lifecycle, plan
from bootstrap.envs.create import _prepare, create_environment, plan_create
from bootstrap.envs.manage import list_envs
from bootstrap.envs.plan import CreateRequest, Target, _as_recorded, state_digest
from bootstrap.fleet.sync import load_manifest, sync_manifest
from bootstrap.profiles.catalog import catalog, with_editable
from bootstrap.profiles.keras_json import render as render_keras_json
from bootstrap.state.record import EnvRecord
from bootstrap.system.errors import EXIT_USAGE, UsageError
from bootstrap.system.paths import envs_dir, kboot_home
from bootstrap.system.progress import RecordingReporter

NUMPY_TWIN = 'backend = "numpy"\nkeras = ">=3.8"\npackages = ["numpy"]\n'


def environ() -> dict[str, str]:
    return dict(os.environ)


def fake_env(request: CreateRequest, **record_changes: Any) -> Target:
    """The environment `create` would have made for `request`, without building it."""
    target = _prepare(request, RecordingReporter(), environ())
    ledger = lifecycle.open_ledger(kboot_home(environ()), envs_dir(environ()))
    tx = lifecycle.Build(ledger, lifecycle.inspect(ledger, target.path))
    tx.begin()
    path = target.path
    (path / "bin").mkdir()
    (path / "bin" / "python").symlink_to(sys.executable)
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    (path / "pyvenv.cfg").write_text(f"version_info = {version}\n", encoding="utf-8")
    (path / "keras-home").mkdir()
    (path / "keras-home" / "keras.json").write_text(
        render_keras_json(target.profile.keras_config()), encoding="utf-8"
    )
    record = EnvRecord(
        name=target.name,
        profile=_as_recorded(target.profile),
        profile_digest=target.profile.digest(),
        scope=request.scope,
        keras_home=str(path / "keras-home"),
        installer=request.installer,
        python=target.interpreter.to_dict(),
        system_site_packages=request.system_site_packages,
        created_at="2026-01-01T00:00:00+00:00",
        kboot_version="0",
        packages={"keras": "3.8.0"},
        state_digest=target.state_digest,
    )
    tx.commit(replace(record, **record_changes))
    return target


def manifest(tmp_path: Path, name: str, profile: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(f'[[env]]\nname = "{name}"\nprofile = "{profile}"\n', encoding="utf-8")
    return path


def check_status(path: Path, **force: bool) -> tuple[str, str]:
    result = sync_manifest(
        path, check_only=True, reporter_for=lambda _: RecordingReporter(), **force
    )
    (entry,) = [e for e in result.entries if not e.outside_manifest]
    return entry.status, entry.detail


def numpy_request(**kwargs: Any) -> CreateRequest:
    return CreateRequest(profile=catalog().resolve("numpy"), **kwargs)


# --- sync replaces only with --force, as create does (issue 14, item 4) ---------------


def test_a_manifest_entry_does_not_take_over_another_profile_by_default(tmp_path: Path) -> None:
    """Was: every manifest entry carried replace_other_profile=True."""
    (entry,) = load_manifest(manifest(tmp_path, "numpy", "jax-cpu"))
    assert entry.request(verify=False).replace_other_profile is False
    assert entry.request(verify=False, force=True).replace_other_profile is True


def test_sync_check_says_another_profile_needs_force(tmp_path: Path) -> None:
    """Was: "differs", as if a plain sync would bring it in line (it rebuilt it quietly)."""
    fake_env(numpy_request())
    path = manifest(tmp_path, "numpy", "jax-cpu")
    status, detail = check_status(path)
    assert status == "needs-force"
    assert "'numpy'" in detail and "'jax-cpu'" in detail
    result = sync_manifest(path, check_only=True, reporter_for=lambda _: RecordingReporter())
    assert not result.in_sync and result.exit_code == 1
    assert check_status(path, force=True)[0] == "differs"


def test_sync_refuses_to_rebuild_another_profile_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: sync rebuilt numpy as a JAX environment. (Any build here is a failure.)"""
    target = fake_env(numpy_request())

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be built")

    monkeypatch.setattr(lifecycle.Build, "begin", no_build)
    (entry,) = load_manifest(manifest(tmp_path, "numpy", "jax-cpu"))
    with pytest.raises(UsageError) as refused:
        create_environment(entry.request(verify=False), environ=environ())
    message = refused.value.message + " " + (refused.value.hint or "")
    assert "numpy" in message and "'jax-cpu'" in message and "--force" in message
    assert str(target.path) in message
    assert refused.value.exit_code == EXIT_USAGE
    result = sync_manifest(
        manifest(tmp_path, "numpy", "jax-cpu"), reporter_for=lambda _: RecordingReporter()
    )
    assert result.exit_code == EXIT_USAGE
    assert [e.status for e in result.entries] == ["failed"]


def test_a_twin_profile_under_another_name_needs_force_everywhere(
    tmp_path: Path, write_profile: Any
) -> None:
    """Was: sync --check said "differs" (a sync would rebuild it) where create refused it."""
    fake_env(numpy_request(name="lab"))
    twin = write_profile("twin", NUMPY_TWIN)
    path = tmp_path / "lab.toml"
    path.write_text(f'[[env]]\nname = "lab"\nprofile = "{twin}"\n', encoding="utf-8")
    assert check_status(path)[0] == "needs-force"
    request = CreateRequest(profile=catalog().resolve(str(twin)), name="lab")
    with pytest.raises(UsageError, match="was made from profile 'numpy'"):
        create_environment(request, environ=environ())


# --- one decision for create and sync --check (issue 14, item 5) -----------------------


def test_an_editable_environment_is_up_to_date_for_sync_check_as_for_create(
    tmp_path: Path,
) -> None:
    """Was: create kept the --editable project (up to date), sync --check did not (differs)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "p"\n', encoding="utf-8")
    made = numpy_request(name="lab")
    fake_env(replace(made, profile=with_editable(made.profile, project)))
    assert plan_create(made, environ=environ()).status == "ok"
    assert create_environment(made, environ=environ()).action == "unchanged"


def test_a_removed_environment_with_the_users_files_left_is_missing(tmp_path: Path) -> None:
    """Was: sync --check said "differs" with an empty reason; create builds it afresh."""
    target = fake_env(numpy_request(name="lab"))
    (target.path / "notes.txt").write_text("mine", encoding="utf-8")
    ledger = lifecycle.open_ledger(kboot_home(environ()), envs_dir(environ()))
    lifecycle.remove(ledger, lifecycle.inspect(ledger, target.path))
    planned = plan_create(numpy_request(name="lab"), environ=environ())
    assert planned.status == "missing" and planned.changes == ()


def test_list_and_create_agree_that_drift_is_repaired_in_place() -> None:
    """Was: `list` said "failed its last smoke test" for an environment whose keras.json
    also drifted, while create updates it in place (keras.json first, then the smoke test)."""
    target = fake_env(numpy_request(name="lab"), smoke={"ok": False})
    (target.path / "keras-home" / "keras.json").write_text('{"floatx": "float16"}\n')
    (summary,) = [s for s in list_envs(environ()) if s.name == "lab"]
    assert summary.health.startswith("config changed: ")
    planned = plan_create(numpy_request(name="lab"), environ=environ())
    drift = summary.health.removeprefix("config changed: ").removesuffix(
        " (kboot create repairs it)"
    )
    assert (planned.status, planned.changes) == ("differs", (f"keras.json: {drift}",))


# --- the verdicts, pure -----------------------------------------------------------------

from bootstrap.envs.plan import (  # noqa: E402  # after the tests that run on the old code too
    FOREIGN,
    MISSING,
    NEEDS_FORCE,
    REBUILD,
    UP_TO_DATE,
    UPDATE,
    diff,
)


def existing_of(target: Target) -> lifecycle.Existing:
    ledger = lifecycle.open_ledger(kboot_home(environ()), envs_dir(environ()))
    return lifecycle.inspect(ledger, target.path)


def retarget(target: Target, request: CreateRequest, **changes: Any) -> Target:
    profile = replace(target.profile, **changes)
    digest = state_digest(profile, target.interpreter, request, target.lock)
    return replace(target, profile=profile, state_digest=digest)


def test_the_verdicts() -> None:
    request = numpy_request(name="lab")
    target = fake_env(request)
    existing = existing_of(target)
    assert diff(existing, target, request, runnable=True) == plan.Difference(UP_TO_DATE)
    assert diff(existing, target, request, runnable=False).verdict == REBUILD
    assert diff(existing, target, replace(request, force=True), runnable=True).verdict == REBUILD
    assert diff(existing, target, request, runnable=True, interrupted=True).verdict == REBUILD
    kernel = diff(existing, target, request, runnable=True, kernel="its kernel is gone")
    assert (kernel.verdict, kernel.changes) == (UPDATE, ("its kernel is gone",))
    floatx = retarget(target, request, floatx="float64")
    assert diff(existing, floatx, request, runnable=True).verdict == UPDATE
    packages = retarget(target, request, packages=("numpy", "scipy"))
    assert diff(existing, packages, request, runnable=True).verdict == REBUILD
    other = retarget(target, request, name="jax-cpu")
    taken = diff(existing, other, request, runnable=True)
    assert (taken.verdict, taken.status) == (NEEDS_FORCE, "needs-force")
    forced = replace(request, replace_other_profile=True)
    assert diff(existing, other, forced, runnable=True).verdict == REBUILD
    assert diff(lifecycle.Existing(target.path, "absent"), target, request,
                runnable=False).verdict == MISSING  # fmt: skip
    assert diff(lifecycle.Existing(target.path, "foreign", reason="x"), target, request,
                runnable=False).verdict == FOREIGN  # fmt: skip


def test_a_failed_smoke_test_is_rechecked_not_rebuilt() -> None:
    request = numpy_request(name="lab")
    target = fake_env(request, smoke={"ok": False})
    found = diff(existing_of(target), target, request, runnable=True)
    assert (found.verdict, found.recheck, found.status) == (UP_TO_DATE, True, "differs")
    quiet = diff(existing_of(target), target, replace(request, smoke=False), runnable=True)
    assert quiet == plan.Difference(UP_TO_DATE)


def test_planning_reads_no_ledger() -> None:
    """Was: plan.py opened kboot's ledger itself (shared_user_config)."""
    text = source_of.getsource(plan)
    assert "Ledger(" not in text and "open_ledger" not in text


def test_sync_takes_force_on_the_command_line() -> None:
    from typer.testing import CliRunner

    from bootstrap.cli.app import app

    shown = CliRunner().invoke(app, ["sync", "--help"], terminal_width=200)
    assert "--force" in shown.output


# --- packages installed by hand into a locked environment (issue 15, item 7) ----------

LOCKED = {"keras": "3.8.0", "numpy": "2.0.0"}


def plant_lock(tmp_path: Path) -> Path:
    """A lock create would accept for the numpy profile here (the hashes are never used:
    nothing is installed)."""
    from bootstrap.install.platforms import host_platform
    from bootstrap.locks.lockfile import requirements_digest

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    meta = {
        "profile": "numpy",
        "python": version,
        "platform": host_platform(),
        "requirements_digest": requirements_digest(catalog().resolve("numpy"), version),
    }
    pins = "".join(f"{n}=={v} \\\n    --hash=sha256:{'a' * 64}\n" for n, v in LOCKED.items())
    path = tmp_path / "numpy.lock"
    path.write_text(f"# kboot-lock: {json.dumps(meta)}\n{pins}", encoding="utf-8")
    return path


def site_packages(target: Target) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return target.path / "lib" / version / "site-packages"


def plant_packages(target: Target, packages: dict[str, str]) -> None:
    """dist-info folders, as an installer leaves them (no Python needed to read them)."""
    folder = site_packages(target)
    folder.mkdir(parents=True, exist_ok=True)
    for item in folder.glob("*.dist-info"):
        item.rmdir()
    for name, version in packages.items():
        (folder / f"{name.replace('-', '_')}-{version}.dist-info").mkdir()


def locked_env(tmp_path: Path, **record_changes: Any) -> tuple[CreateRequest, Target]:
    from bootstrap.locks.lockfile import read_lock

    lock = plant_lock(tmp_path)
    request = numpy_request(name="lab", lock=lock)
    recorded = {"packages": dict(LOCKED), **record_changes}
    target = fake_env(request, lock=read_lock(lock).summary(), **recorded)
    return request, target


def test_packages_installed_by_hand_into_a_locked_env_are_drift(tmp_path: Path) -> None:
    """Was: sync --check, check and list read only the record, so a `pip install six` or
    another keras in an environment built from a lock went unseen, and sync did nothing."""
    request, target = locked_env(tmp_path)
    plant_packages(target, LOCKED)
    assert plan_create(request, environ=environ()).status == "ok"
    (summary,) = list_envs(environ())
    assert summary.to_dict()["lock_drift"] == []

    plant_packages(target, {"keras": "3.9.0", "numpy": "2.0.0", "six": "1.17.0"})
    planned = plan_create(request, environ=environ())
    assert (planned.status, planned.difference and planned.difference.verdict) == (
        "differs",
        REBUILD,  # create and sync rebuild it: exactly the lock again
    )
    assert "six 1.17.0" in planned.changes[0] and "keras is 3.9.0" in planned.changes[0]
    drift = [
        {"name": "keras", "locked": "3.8.0", "installed": "3.9.0"},
        {"name": "six", "locked": None, "installed": "1.17.0"},
    ]
    assert planned.difference is not None
    assert [d.to_dict() for d in planned.difference.lock_drift] == drift
    (summary,) = list_envs(environ())
    assert summary.to_dict()["keras_version"] == "3.9.0"  # what is installed, not the record
    assert summary.to_dict()["lock_drift"] == drift
    assert summary.health.startswith("installed packages differ from its lock: ")

    lab = tmp_path / "lab.toml"
    lab.write_text(f'[[env]]\nname = "lab"\nprofile = "numpy"\nlock = "{plant_lock(tmp_path)}"\n')
    checked = sync_manifest(lab, check_only=True, reporter_for=lambda _: RecordingReporter())
    assert checked.exit_code == 1
    (entry,) = checked.to_dict()["environments"]
    assert (entry["status"], entry["lock_drift"]) == ("differs", drift)

    plant_packages(target, {"keras": "3.8.0"})  # numpy uninstalled
    gone = plan_create(request, environ=environ()).difference
    assert gone is not None
    assert [d.to_dict() for d in gone.lock_drift] == [
        {"name": "numpy", "locked": "2.0.0", "installed": None}
    ]


def test_what_kboot_adds_beyond_the_lock_is_not_drift(tmp_path: Path) -> None:
    """pip (seeded for --installer pip) and an --editable project are in the record, not
    the lock: kboot installed them, so they are not drift; a changed version of one is."""
    added = {**LOCKED, "pip": "24.0", "my-course": "0.1.0"}
    request, target = locked_env(tmp_path, packages=added)
    plant_packages(target, added)
    assert plan_create(request, environ=environ()).status == "ok"
    plant_packages(target, {**added, "pip": "25.1"})
    assert plan_create(request, environ=environ()).status == "differs"


def test_an_env_without_a_lock_takes_packages_by_hand(tmp_path: Path) -> None:
    request = numpy_request(name="lab")
    target = fake_env(request, packages=dict(LOCKED))
    plant_packages(target, {**LOCKED, "six": "1.17.0", "keras": "3.9.0"})
    assert plan_create(request, environ=environ()).status == "ok"
    (summary,) = list_envs(environ())
    assert summary.to_dict()["keras_version"] == "3.9.0"
