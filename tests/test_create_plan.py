"""What `create` decides before touching the disk: names, destinations, changes, digests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from bootstrap.envs.plan import (
    CreateRequest,
    Target,
    _as_recorded,
    describe_changes,
    in_place_ok,
    name_for_folder,
    resolve_target,
    state_digest,
    validate_name,
)
from bootstrap.install.installers import legacy_pip
from bootstrap.install.interpreters import Interpreter
from bootstrap.locks.model import LockFile
from bootstrap.profiles.catalog import load_profile
from bootstrap.profiles.model import Profile, Sources
from bootstrap.state.record import EnvRecord, write_record
from bootstrap.system.errors import UsageError

PROFILE_TEXT = 'backend = "numpy"\nkeras = ">=3.8,<4"\npackages = ["numpy>=1.26"]\n'
PY311 = Interpreter(Path("/opt/py/bin/python3.11"), Version("3.11.7"))


@pytest.fixture
def profile(write_profile: Any) -> Profile:
    return load_profile(write_profile("lab", PROFILE_TEXT))


def make_lock(digest: str) -> LockFile:
    meta = {"profile": "lab", "python": "3.11", "platform": "x", "requirements_digest": "0"}
    return LockFile(Path("/locks/lab.txt"), meta, {"numpy": "2.4.6"}, digest)


def make_target(
    profile: Profile,
    request: CreateRequest,
    *,
    interpreter: Interpreter = PY311,
    lock: LockFile | None = None,
) -> Target:
    return Target(
        name="lab",
        path=Path("/envs/lab"),
        profile=profile,
        interpreter=interpreter,
        user_home=Path("/home/u/.keras"),
        lock=lock,
        state_digest=state_digest(profile, interpreter, request, lock),
    )


def record_of(target: Target, request: CreateRequest) -> EnvRecord:
    """The record `create` would have written for this target."""
    return EnvRecord(
        name=target.name,
        profile=_as_recorded(target.profile),
        profile_digest=target.profile.digest(),
        scope=request.scope,
        keras_home=str(target.path / "keras-home"),
        installer=request.installer,
        python=target.interpreter.to_dict(),
        system_site_packages=request.system_site_packages,
        created_at="2025-01-01T00:00:00+00:00",
        kboot_version="0",
        packages={"keras": "3.8.0", "numpy": "2.4.6"},
        state_digest=target.state_digest,
        lock=target.lock.summary() if target.lock else None,
    )


# ---- names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lab", "lab-jax", "a", "A1", "tf_2.16", "x.y-z_0", "9lives"])
def test_accepted_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "..", "a..b", "../up", "a/b", "a\\b", ".hidden", "-dash", "_under", "sp ace", "é", "a\n"],
)
def test_refused_names(name: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_name(name)
    assert info.value.exit_code == 2
    assert repr(name) in info.value.message
    assert info.value.hint is not None
    assert "--dest" in info.value.hint


@pytest.mark.parametrize(
    ("folder", "name"),
    [("lab", "lab"), ("env x", "env-x"), ("my  env (2)", "my-env-2"), (" lab ", "lab"),
     ("a..b", "a.b"), (".venv", "venv"), ("é-lab", "lab"), ("x\ny", "x-y")],
)  # fmt: skip
def test_a_dest_folder_any_name_gets_an_environment_name(folder: str, name: str) -> None:
    assert name_for_folder(folder) == name


@pytest.mark.parametrize("folder", ["é", "...", "   ", "(*)"])
def test_a_dest_folder_with_nothing_to_name_by_asks_for_name(folder: str) -> None:
    with pytest.raises(UsageError) as info:
        name_for_folder(folder)
    assert repr(folder) in info.value.message
    assert info.value.hint is not None and "--name NAME" in info.value.hint
    assert "--dest" not in info.value.hint  # given already


def test_a_dest_with_spaces_keeps_its_path_and_gets_a_name(
    profile: Profile, tmp_path: Path
) -> None:
    dest = tmp_path / "dir with spaces" / "env x"
    home = {"KBOOT_HOME": str(tmp_path / "kboot-home")}
    name, path = resolve_target(CreateRequest(profile, dest=dest), home)
    assert (name, path) == ("env-x", dest)
    name, _ = resolve_target(CreateRequest(profile, dest=dest, name="mine"), home)
    assert name == "mine"
    with pytest.raises(UsageError, match="'my env' is not allowed"):
        resolve_target(CreateRequest(profile, dest=dest, name="my env"), home)


# ---- legacy pip ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "pin"),
    [("3.5.10", "pip<21"), ("3.6.15", "pip<22"), ("3.7.17", "pip<24.1"), ("3.8.20", "pip<25.1")],
)
def test_legacy_pip(version: str, pin: str) -> None:
    assert legacy_pip(Version(version)) == pin


@pytest.mark.parametrize("version", ["3.9.0", "3.10.14", "3.11.7", "3.13.1", "3.14.0"])
def test_no_legacy_pip_for_new_pythons(version: str) -> None:
    assert legacy_pip(Version(version)) is None


# ---- describe_changes and in_place_ok --------------------------------------------------


def test_nothing_changed(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    target = make_target(profile, request)
    record = record_of(target, request)
    assert describe_changes(record, target, request) == []


def test_a_floatx_change_is_made_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    half = replace(profile, floatx="float16")
    new_request = replace(request, profile=half)
    target = make_target(half, new_request)
    assert describe_changes(record, target, new_request) == ["floatx: 'float32' -> 'float16'"]
    assert in_place_ok(record, target, new_request)


def test_keras_json_level_changes_are_made_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    changed = replace(
        profile,
        image_data_format="channels_first",
        epsilon=1e-5,
        description="other",
        env={"OMP_NUM_THREADS": "1"},
        smoke="import",
    )
    new_request = replace(request, profile=changed)
    target = make_target(changed, new_request)
    changes = describe_changes(record, target, new_request)
    assert [c.split(":")[0] for c in changes] == [
        "description",
        "env",
        "epsilon",
        "image_data_format",
        "smoke",
    ]
    assert in_place_ok(record, target, new_request)


def test_a_packages_change_is_not_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    more = replace(profile, packages=("numpy>=1.26", "scipy"))
    new_request = replace(request, profile=more)
    target = make_target(more, new_request)
    assert describe_changes(record, target, new_request) == [
        "packages: ['numpy>=1.26'] -> ['numpy>=1.26', 'scipy']"
    ]
    assert not in_place_ok(record, target, new_request)


def test_a_keras_version_change_is_not_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    newer = replace(profile, keras=">=3.10,<4")
    new_request = replace(request, profile=newer)
    target = make_target(newer, new_request)
    assert describe_changes(record, target, new_request) == ["keras: '>=3.8,<4' -> '>=3.10,<4'"]
    assert not in_place_ok(record, target, new_request)


def test_a_python_path_change_is_not_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    moved = Interpreter(Path("/usr/bin/python3.11"), Version("3.11.7"))
    target = make_target(profile, request, interpreter=moved)
    changes = describe_changes(record, target, request)
    assert changes == ["python: 3.11.7 (/opt/py/bin/python3.11) -> 3.11.7 (/usr/bin/python3.11)"]
    assert not in_place_ok(record, target, request)


def test_a_python_version_change_is_not_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    upgraded = Interpreter(PY311.path, Version("3.11.9"))
    target = make_target(profile, request, interpreter=upgraded)
    assert describe_changes(record, target, request) == [
        "python: 3.11.7 (/opt/py/bin/python3.11) -> 3.11.9 (/opt/py/bin/python3.11)"
    ]
    assert not in_place_ok(record, target, request)


def test_scope_and_system_site_changes_are_not_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    for other, expected in (
        (replace(request, scope="user"), "scope: env -> user"),
        (replace(request, system_site_packages=True), "system_site_packages: False -> True"),
    ):
        target = make_target(profile, other)
        assert describe_changes(record, target, other) == [expected]
        assert not in_place_ok(record, target, other)


def test_a_lock_digest_change_is_described_and_not_in_place(profile: Profile) -> None:
    request = CreateRequest(profile=profile, lock=Path("/locks/lab.txt"))
    old = make_target(profile, request, lock=make_lock("a" * 64))
    record = record_of(old, request)
    target = make_target(profile, request, lock=make_lock("b" * 64))
    assert describe_changes(record, target, request) == [f"lock: {'a' * 64} -> {'b' * 64}"]
    assert not in_place_ok(record, target, request)


def test_adding_and_dropping_a_lock_is_described(profile: Profile) -> None:
    plain = CreateRequest(profile=profile)
    record = record_of(make_target(profile, plain), plain)
    locked = replace(plain, lock=Path("/locks/lab.txt"))
    target = make_target(profile, locked, lock=make_lock("c" * 64))
    assert describe_changes(record, target, locked) == [f"lock: none -> {'c' * 64}"]
    record = record_of(target, locked)
    target = make_target(profile, plain)
    assert describe_changes(record, target, plain) == [f"lock: {'c' * 64} -> none"]


def test_a_sources_change_under_a_lock_is_nothing(profile: Profile) -> None:
    request = CreateRequest(profile=profile, lock=Path("/locks/lab.txt"))
    lock = make_lock("d" * 64)
    record = record_of(make_target(profile, request, lock=lock), request)
    mirrored = profile.with_sources(Sources(index_url="https://mirror.example/simple"))
    target = make_target(mirrored, request, lock=lock)
    assert target.state_digest == record.state_digest
    assert describe_changes(record, target, request) == []
    assert in_place_ok(record, target, request)


def test_a_sources_change_without_a_lock_is_described(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    record = record_of(make_target(profile, request), request)
    mirrored = profile.with_sources(Sources(index_url="https://mirror.example/simple"))
    target = make_target(mirrored, request)
    [change] = describe_changes(record, target, request)
    assert change.startswith("sources: ")
    assert "https://mirror.example/simple" in change


def test_a_record_from_another_kboot_version(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    target = make_target(profile, request)
    record = replace(record_of(target, request), state_digest="older-digest-scheme")
    assert describe_changes(record, target, request) == [
        "kboot's record of it is from another kboot version"
    ]


def test_a_record_round_trips_through_json(profile: Profile, tmp_path: Path) -> None:
    """describe_changes compares against what a record file holds (JSON: lists, not tuples)."""
    from bootstrap.state.record import read_record

    request = CreateRequest(profile=profile)
    target = make_target(profile, request)
    write_record(tmp_path, record_of(target, request))
    record = read_record(tmp_path)
    assert record is not None
    assert json.loads(json.dumps(record.profile)) == record.profile
    assert describe_changes(record, target, request) == []
    assert in_place_ok(record, target, request)


# ---- state_digest ----------------------------------------------------------------------


def test_state_digest_is_stable_and_ignores_the_name_and_file(
    profile: Profile, write_profile: Any, tmp_path: Path
) -> None:
    request = CreateRequest(profile=profile)
    digest = state_digest(profile, PY311, request, None)
    assert digest == state_digest(profile, PY311, request, None)
    elsewhere = load_profile(write_profile("other", PROFILE_TEXT, tmp_path / "elsewhere"))
    assert state_digest(elsewhere, PY311, request, None) == digest


def test_state_digest_follows_the_lock_digest(profile: Profile) -> None:
    request = CreateRequest(profile=profile, lock=Path("/locks/lab.txt"))
    one = state_digest(profile, PY311, request, make_lock("a" * 64))
    two = state_digest(profile, PY311, request, make_lock("b" * 64))
    none = state_digest(profile, PY311, request, None)
    assert len({one, two, none}) == 3


def test_state_digest_ignores_sources_only_with_a_lock(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    mirrored = profile.with_sources(Sources(find_links=("/wheels",), offline=True))
    lock = make_lock("e" * 64)
    assert state_digest(mirrored, PY311, request, lock) == state_digest(
        profile, PY311, request, lock
    )
    assert state_digest(mirrored, PY311, request, None) != state_digest(
        profile, PY311, request, None
    )


def test_state_digest_ignores_offline(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    online = profile.with_sources(Sources(find_links=("/wheels",)))
    offline = profile.with_sources(Sources(find_links=("/wheels",), offline=True))
    assert state_digest(online, PY311, request, None) == state_digest(offline, PY311, request, None)


def test_state_digest_follows_python_scope_and_system_site(profile: Profile) -> None:
    request = CreateRequest(profile=profile)
    base = state_digest(profile, PY311, request, None)
    others = {
        state_digest(profile, Interpreter(Path("/usr/bin/python3"), PY311.version), request, None),
        state_digest(profile, Interpreter(PY311.path, Version("3.11.8")), request, None),
        state_digest(profile, PY311, replace(request, scope="user"), None),
        state_digest(profile, PY311, replace(request, system_site_packages=True), None),
        state_digest(replace(profile, floatx="float64"), PY311, request, None),
    }
    assert base not in others
    assert len(others) == 5
    # how the build runs, not what it builds: no effect
    assert state_digest(profile, PY311, replace(request, installer="pip"), None) == base
    assert state_digest(profile, PY311, replace(request, allow_cpu=True), None) == base
