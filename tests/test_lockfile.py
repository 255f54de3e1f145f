"""Lock files parsed, checked and refused without resolving or installing anything."""

from __future__ import annotations

import contextlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from bootstrap.install import platforms
from bootstrap.install.platforms import host_platform
from bootstrap.locks import lockfile
from bootstrap.locks import resolve as locks_resolve
from bootstrap.locks.lockfile import check_lock, parse_lock, read_lock, requirements_digest
from bootstrap.locks.model import LockedFile, LockFileError, Pin
from bootstrap.locks.resolve import make_lock
from bootstrap.profiles.catalog import load_profile
from bootstrap.profiles.model import Profile, Sources
from bootstrap.system.errors import UsageError
from bootstrap.system.paths import builtin_profiles_dir

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64
PLATFORM = "x86_64-unknown-linux-gnu"

PROFILE_TEXT = 'backend = "numpy"\nkeras = ">=3.8,<4"\npackages = ["numpy>=1.26"]\n'


def header(**overrides: Any) -> str:
    meta: dict[str, Any] = {
        "profile": "numpy",
        "python": "3.11",
        "platform": PLATFORM,
        "requirements_digest": "0" * 64,
    }
    meta.update(overrides)
    return "# kboot-lock: " + json.dumps(meta, sort_keys=True) + "\n"


PINS = (
    f"keras==3.8.0 \\\n    --hash={HASH_A}\n"
    f"numpy==2.4.6 \\\n    --hash={HASH_A} \\\n    --hash={HASH_B}\n"
    f"Typing_Extensions==4.12.2 \\\n    --hash={HASH_B}\n"
)


def lock_text(**overrides: Any) -> str:
    return header(**overrides) + PINS


@pytest.fixture
def profile(write_profile: Any) -> Profile:
    return load_profile(write_profile("numpy-mini", PROFILE_TEXT))


def expect_error(raw: bytes, path: Path, *fragments: str) -> LockFileError:
    with pytest.raises(LockFileError) as info:
        parse_lock(raw, path)
    err = info.value
    assert err.exit_code == 2
    assert str(path) in err.message
    for fragment in fragments:
        assert fragment in err.message
    return err


# ---- parsing ---------------------------------------------------------------------------


def test_a_valid_lock_parses(tmp_path: Path) -> None:
    path = tmp_path / "numpy.lock"
    text = lock_text()
    path.write_text(text, encoding="utf-8")
    lock = read_lock(path)
    assert lock.path == path
    assert lock.python == "3.11"
    assert lock.platform == PLATFORM
    assert lock.meta["profile"] == "numpy"
    # names are canonicalized, versions kept as written
    assert lock.pins == {"keras": "3.8.0", "numpy": "2.4.6", "typing-extensions": "4.12.2"}
    assert len(lock.digest) == 64
    assert lock.summary() == {"path": str(path), "digest": lock.digest}
    data = lock.to_dict()
    assert data["pins"] == lock.pins
    assert data["platform"] == PLATFORM


def test_the_digest_is_the_file_hash(tmp_path: Path) -> None:
    import hashlib

    raw = lock_text().encode()
    assert parse_lock(raw, tmp_path / "x").digest == hashlib.sha256(raw).hexdigest()
    other = parse_lock((lock_text() + "# a comment\n").encode(), tmp_path / "x")
    assert other.digest != parse_lock(raw, tmp_path / "x").digest


def test_comments_blank_lines_extras_and_markers_are_accepted(tmp_path: Path) -> None:
    body = (
        "\n# resolved by uv\n"
        f"jax[cpu]==0.4.30 ; python_version >= '3.10' \\\n    --hash={HASH_A}\n"
        f"scipy==1.13.1 --hash={HASH_B}\n"
    )
    lock = parse_lock((header() + body).encode(), tmp_path / "l.txt")
    assert lock.pins == {"jax": "0.4.30", "scipy": "1.13.1"}


def test_no_header_is_refused(tmp_path: Path) -> None:
    err = expect_error(PINS.encode(), tmp_path / "nohead.txt", "first line")
    assert err.hint is not None
    assert "kboot lock" in err.hint


def test_header_that_is_not_json_is_refused(tmp_path: Path) -> None:
    raw = ("# kboot-lock: {profile: numpy\n" + PINS).encode()
    expect_error(raw, tmp_path / "badjson.txt", "not valid JSON")


@pytest.mark.parametrize("key", ["profile", "python", "platform", "requirements_digest"])
def test_header_missing_a_key_is_refused(tmp_path: Path, key: str) -> None:
    meta = {"profile": "numpy", "python": "3.11", "platform": PLATFORM, "requirements_digest": "0"}
    del meta[key]
    raw = ("# kboot-lock: " + json.dumps(meta) + "\n" + PINS).encode()
    expect_error(raw, tmp_path / "nokey.txt", "lacks", key)


@pytest.mark.parametrize("value", ["42", "null", '"profile python platform"', "[1, 2]"])
def test_header_that_is_json_but_not_an_object_is_refused(tmp_path: Path, value: str) -> None:
    # must be a LockFileError (exit code 2), never a TypeError from `in` on a non-dict
    expect_error(("# kboot-lock: " + value + "\n" + PINS).encode(), tmp_path / "notdict.txt")


def test_a_line_that_is_not_a_pin_names_the_line(tmp_path: Path) -> None:
    body = f"numpy==2.4.6 \\\n    --hash={HASH_A}\nscipy>=1.11 \\\n    --hash={HASH_B}\n"
    err = expect_error((header() + body).encode(), tmp_path / "range.txt", "line 4", "scipy>=1.11")
    assert "name==version" in err.message


def test_a_bad_version_names_the_line(tmp_path: Path) -> None:
    body = f"numpy==not.a.version! \\\n    --hash={HASH_A}\n"
    expect_error((header() + body).encode(), tmp_path / "v.txt", "line 2", "bad version")


def test_no_pins_is_refused(tmp_path: Path) -> None:
    expect_error((header() + "# nothing\n\n").encode(), tmp_path / "empty.txt", "pins no packages")


def test_no_hashes_is_refused(tmp_path: Path) -> None:
    body = "numpy==2.4.6\nkeras==3.8.0\n"
    expect_error((header() + body).encode(), tmp_path / "nohash.txt", "no hashes")


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(header().encode() + b"numpy==2.4.6 \xff\xfe\n")
    with pytest.raises(LockFileError) as info:
        read_lock(path)
    assert info.value.exit_code == 2
    assert str(path) in info.value.message
    assert "UTF-8" in info.value.message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.txt"
    with pytest.raises(LockFileError) as info:
        read_lock(path)
    assert info.value.exit_code == 2
    assert str(path) in info.value.message
    assert "does not exist" in info.value.message


def test_a_folder_is_refused_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(LockFileError) as info:
        read_lock(tmp_path)
    assert info.value.exit_code == 2
    assert str(tmp_path) in info.value.message


# ---- check_lock ------------------------------------------------------------------------


def matching_lock(tmp_path: Path, made_from: Profile, **overrides: Any) -> lockfile.LockFile:
    meta: dict[str, Any] = {"requirements_digest": requirements_digest(made_from, "3.11")}
    meta.update(overrides)
    return parse_lock(lock_text(**meta).encode(), tmp_path / "numpy.lock")


def test_check_lock_accepts_a_matching_lock(tmp_path: Path, profile: Profile) -> None:
    lock = matching_lock(tmp_path, profile)
    check_lock(lock, profile, Version("3.11.7"), PLATFORM)  # no error


def test_check_lock_refuses_another_python(tmp_path: Path, profile: Profile) -> None:
    lock = matching_lock(tmp_path, profile)
    with pytest.raises(LockFileError) as info:
        check_lock(lock, profile, Version("3.12.1"), PLATFORM)
    err = info.value
    assert err.exit_code == 2
    assert str(lock.path) in err.message
    assert "Python 3.11" in err.message
    assert "3.12.1" in err.message
    assert err.hint is not None
    assert "--python-version 3.12" in err.hint


def test_check_lock_refuses_another_platform(tmp_path: Path, profile: Profile) -> None:
    lock = matching_lock(tmp_path, profile)
    with pytest.raises(LockFileError) as info:
        check_lock(lock, profile, Version("3.11.7"), "aarch64-apple-darwin")
    err = info.value
    assert err.exit_code == 2
    assert PLATFORM in err.message
    assert "aarch64-apple-darwin" in err.message
    assert err.hint is not None
    assert "--platform aarch64-apple-darwin" in err.hint


def test_check_lock_refuses_other_requirements(
    tmp_path: Path, profile: Profile, write_profile: Any
) -> None:
    lock = matching_lock(tmp_path, profile, profile="older")
    changed = load_profile(
        write_profile("numpy-mini", PROFILE_TEXT.replace("numpy>=1.26", "numpy>=2"))
    )
    with pytest.raises(LockFileError) as info:
        check_lock(lock, changed, Version("3.11.7"), PLATFORM)
    err = info.value
    assert err.exit_code == 2
    assert "other requirements" in err.message
    assert "'older'" in err.message
    assert str(lock.path) in err.message


# ---- requirements_digest ---------------------------------------------------------------


def test_requirements_digest_is_stable_and_follows_the_requirements(
    profile: Profile, write_profile: Any
) -> None:
    first = requirements_digest(profile, "3.11")
    assert first == requirements_digest(profile, "3.11")
    assert len(first) == 64
    same = load_profile(write_profile("renamed", PROFILE_TEXT + 'description = "other"\n'))
    assert requirements_digest(same, "3.11") == first  # only the requirements count
    other = load_profile(write_profile("other", PROFILE_TEXT.replace("1.26", "2.0")))
    assert requirements_digest(other, "3.11") != first


def test_requirements_digest_ignores_sources(profile: Profile) -> None:
    mirrored = profile.with_sources(
        Sources(index_url="https://mirror.example/simple", find_links=("/wheels",), offline=True)
    )
    assert requirements_digest(mirrored, "3.11") == requirements_digest(profile, "3.11")


def test_requirements_digest_includes_the_legacy_pip_for_old_pythons(profile: Profile) -> None:
    assert lockfile.lock_requirements(profile, "3.6")[-1] == "pip<22"
    assert lockfile.lock_requirements(profile, "3.11") == profile.requirements()
    assert requirements_digest(profile, "3.6") != requirements_digest(profile, "3.11")
    # 3.10 and 3.11 add nothing, so they resolve from the same requirements
    assert requirements_digest(profile, "3.10") == requirements_digest(profile, "3.11")


# ---- host_platform and make_lock -------------------------------------------------------


def test_host_platform_on_linux_x86_64() -> None:
    assert sys.platform.startswith("linux")
    assert platform.machine().lower() in ("x86_64", "amd64")
    assert host_platform() == "x86_64-unknown-linux-gnu"


@pytest.mark.parametrize(
    ("system", "machine", "expected"),
    [
        ("linux", "aarch64", "aarch64-unknown-linux-gnu"),
        ("darwin", "arm64", "aarch64-apple-darwin"),
        ("darwin", "x86_64", "x86_64-apple-darwin"),
        ("win32", "AMD64", "x86_64-pc-windows-msvc"),
    ],
)
def test_host_platform_elsewhere(
    monkeypatch: pytest.MonkeyPatch, system: str, machine: str, expected: str
) -> None:
    monkeypatch.setattr(platforms.sys, "platform", system)
    monkeypatch.setattr(platforms.host, "machine", lambda: machine)
    assert host_platform() == expected


@pytest.mark.parametrize("version", ["3", "three", "3.11.2", "3.x", "", " 3.11"])
def test_make_lock_refuses_a_bad_python_version_before_running(
    monkeypatch: pytest.MonkeyPatch, profile: Profile, tmp_path: Path, version: str
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        pytest.fail("make_lock ran a command for an invalid --python-version")

    monkeypatch.setattr(locks_resolve, "run", no_run)
    output = tmp_path / "out.lock"
    with pytest.raises(UsageError) as info:
        make_lock(profile, python_version=version, platform=PLATFORM, output=output)
    assert info.value.exit_code == 2
    assert "--python-version" in info.value.message
    assert not output.exists()


@pytest.mark.parametrize(
    "line",
    [
        f"--hash={HASH_A} --index-url https://evil.example/simple",
        "--index-url https://evil.example/simple",
        "-e git+https://evil.example/x.git#egg=x",
        "-r other.txt",
        f"--hash=sha256:{'0' * 63} \\",
        f"--hash=md5:{'0' * 32}",
        f"x @ https://evil.example/x.whl --hash={HASH_A}",
    ],
)
def test_only_what_kboot_lock_writes_is_accepted(tmp_path: Path, line: str) -> None:
    """Defect 14: a line that starts with --hash used to let any option through."""
    body = f"numpy==2.4.6 \\\n    --hash={HASH_A}\n{line}\n"
    with pytest.raises(LockFileError) as info:
        parse_lock((header() + body).encode(), tmp_path / "evil.txt")
    assert "evil.txt, line" in info.value.message


# ---- one lock for a lab: several Pythons and platforms ---------------------------------

LINUX, MAC = "x86_64-unknown-linux-gnu", "aarch64-apple-darwin"


def fake_resolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    """uv's answer per target: numpy differs by Python, a mac-only package on macOS."""

    def pin(name: str, version: str, digest: str, tag: str = "py3-none-any") -> Pin:
        wheel = LockedFile(
            f"{name}-{version}-{tag}.whl", digest, url=f"https://files.example/{name}"
        )
        return Pin(name, version, (f"sha256:{digest}",), files=(wheel,))

    def resolve(profile: Profile, target: platforms.Target, base: object = None) -> list[Pin]:
        numpy = "2.4.6" if target.python == "3.11" else "2.5.5"
        pins = [pin("keras", "3.8.0", "a" * 64), pin("numpy", numpy, "b" * 64)]
        if "darwin" in target.platform:
            pins.append(pin("appnope", "0.1.4", "c" * 64))
        return pins

    monkeypatch.setattr(locks_resolve, "_resolve", resolve)


def test_one_lock_for_several_targets(
    tmp_path: Path, profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_resolutions(monkeypatch)
    targets = [platforms.Target(p, pl) for p in ("3.11", "3.12") for pl in (LINUX, MAC)]
    result = make_lock(profile, targets=targets, output=tmp_path / "pylock.lab.toml")
    lock = read_lock(tmp_path / "pylock.lab.toml")
    assert lock.standard and lock.targets == tuple(targets)
    keras = [p for p in lock.entries if p.name == "keras"]
    assert len(keras) == 1 and keras[0].marker is None  # shared by every target: no marker
    numpys = {p.version: p.marker for p in lock.entries if p.name == "numpy"}
    assert set(numpys) == {"2.4.6", "2.5.5"} and all(numpys.values())
    linux311 = lock.requirements_for(platforms.Target("3.11", LINUX))
    mac312 = lock.requirements_for(platforms.Target("3.12", MAC))
    assert "numpy==2.4.6" in linux311 and "appnope" not in linux311 and ";" not in linux311
    assert "numpy==2.5.5" in mac312 and "appnope==0.1.4" in mac312
    for target in targets:  # accepted on each machine of the lab
        check_lock(lock, profile, Version(f"{target.python}.4"), target.platform)
    with pytest.raises(LockFileError) as info:
        check_lock(lock, profile, Version("3.13.0"), LINUX)
    assert "Python 3.11 on x86_64-unknown-linux-gnu" in info.value.message
    with pytest.raises(LockFileError) as info:
        check_lock(lock, profile, Version("3.11.2"), "x86_64-pc-windows-msvc")
    assert info.value.hint is not None and "--platform x86_64-pc-windows-msvc" in info.value.hint
    assert result.lock.digest == lock.digest


@pytest.mark.parametrize(
    "meta",
    [
        {"requirements": 5},
        {"requirements": [1, 2]},
        {"python": 3.11},
        {"targets": "all"},
        {"targets": [{"python": "3.11"}]},
        {"targets": [{"python": "three", "platform": LINUX}], "requirements_digests": {}},
        {"targets": [{"python": "3.11", "platform": "plan9"}], "requirements_digests": {}},
    ],
)
def test_a_header_of_the_wrong_shape_is_a_lock_error(tmp_path: Path, meta: dict[str, Any]) -> None:
    """Fuzzing found `"requirements": 5` raising TypeError: the header is parsed, typed."""
    with pytest.raises((LockFileError, UsageError)):
        parse_lock(lock_text(**meta).encode(), tmp_path / "odd.lock")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_a_lock_or_a_lock_error(raw: bytes) -> None:
    with contextlib.suppress(LockFileError, UsageError):
        parse_lock(raw, Path("/x.lock"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["profile", "python", "platform", "requirements", "requirements_digest", "targets",
             "requirements_digests", "format"]
        ),
        JSON_VALUES,
    ),
    st.lists(st.sampled_from(["numpy==2.4.6 \\", f"    --hash={HASH_A}", "--index-url x",
                              "scipy ; python_version < '3'", "", "# c"]), max_size=6),
)  # fmt: skip
def test_any_header_and_body_give_a_lock_or_a_lock_error(
    meta: dict[str, Any], body: list[str]
) -> None:
    raw = ("# kboot-lock: " + json.dumps(meta) + "\n" + "\n".join(body)).encode()
    try:
        lock = parse_lock(raw, Path("/x.lock"))
    except (LockFileError, UsageError):
        return
    assert lock.targets and lock.entries


def test_lock_into_a_missing_folder_is_refused_before_resolving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        pytest.fail("make_lock resolved for a lock it cannot write")

    monkeypatch.setattr(locks_resolve, "run", no_run)
    profile = load_profile(builtin_profiles_dir() / "numpy.toml")
    with pytest.raises(UsageError, match="no folder"):
        make_lock(profile, python_version="3.11", platform=PLATFORM,
                  output=tmp_path / "missing" / "numpy.lock")  # fmt: skip


def test_a_wheelhouse_holds_only_the_locks_files(tmp_path: Path) -> None:
    """Was: a changed or an extra wheel was only skipped by the installer (online, the
    locked file then came from the index), though the README says both are refused."""
    import hashlib

    from bootstrap.locks.wheelhouse import check_wheelhouse
    from bootstrap.system.errors import InstallError

    house = tmp_path / "wh"
    house.mkdir()
    wheel = house / "namex-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"the locked wheel")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (house / "kboot-lock.txt").write_text(
        header() + f"namex==0.1.0 \\\n    --hash=sha256:{digest}\n", encoding="utf-8"
    )
    lock = read_lock(house / "kboot-lock.txt")
    check_wheelhouse(house, lock)  # only the lock's files: fine

    extra = house / "namex-99.0.0-py3-none-any.whl"
    extra.write_bytes(b"planted")
    with pytest.raises(InstallError) as planted:
        check_wheelhouse(house, lock)
    assert planted.value.exit_code == 1
    assert "namex-99.0.0-py3-none-any.whl is not in the lock" in planted.value.message
    extra.unlink()

    wheel.write_bytes(b"the locked wheel, changed")
    with pytest.raises(InstallError) as tampered:
        check_wheelhouse(house, lock)
    assert "hash mismatch for namex==0.1.0" in tampered.value.message
    assert str(wheel) in tampered.value.message
