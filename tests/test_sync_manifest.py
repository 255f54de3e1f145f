"""`kboot sync` manifests read and validated, and sync results judged, without building."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.fleet.sync import ManifestError, SyncEntry, SyncResult, load_manifest
from bootstrap.system.errors import (
    EXIT_FAILED,
    EXIT_OK,
    InstallError,
    KbootError,
    ProfileError,
    UntrustedPathError,
    UsageError,
)


def write_manifest(tmp_path: Path, text: str, name: str = "kboot.toml") -> Path:
    path = tmp_path / "project" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, *fragments: str, kind: type[ProfileError] = ManifestError) -> ProfileError:
    with pytest.raises(kind) as info:
        load_manifest(path)
    err = info.value
    assert isinstance(err, ProfileError)
    assert err.exit_code == 2
    assert str(path) in err.message
    for fragment in fragments:
        assert fragment in err.message, err.message
    return err


# ---- valid manifests -------------------------------------------------------------------


def test_a_builtin_profile_with_defaults(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab-np"\nprofile = "numpy"\n')
    [entry] = load_manifest(path)
    assert entry.name == "lab-np"
    assert entry.profile.name == "numpy"
    assert entry.profile.backend == "numpy"
    assert entry.lock is None
    assert entry.scope == "env"
    assert entry.installer == "uv"
    assert entry.python is None
    assert entry.system_site_packages is False
    assert entry.allow_cpu is False


def test_every_option_and_a_relative_lock(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        "[[env]]\n"
        'name = "lab-jax"\n'
        'profile = "jax-cpu"\n'
        'lock = "locks/jax-cpu.txt"\n'
        'scope = "user"\n'
        'installer = "pip"\n'
        'python = "3.11"\n'
        "system_site_packages = true\n"
        "allow_cpu = true\n",
    )
    (path.parent / "locks").mkdir()
    (path.parent / "locks" / "jax-cpu.txt").write_text("# read at create time\n")
    [entry] = load_manifest(path)
    assert entry.lock == path.parent.absolute() / "locks" / "jax-cpu.txt"
    assert entry.lock is not None
    assert entry.lock.is_absolute()
    assert entry.scope == "user"
    assert entry.installer == "pip"
    assert entry.python == "3.11"
    assert entry.system_site_packages is True
    assert entry.allow_cpu is True
    request = entry.request(verify=True)
    assert request.name == "lab-jax"
    assert request.profile == entry.profile
    assert request.lock == entry.lock
    assert request.scope == "user"
    assert request.installer == "pip"
    assert request.python == "3.11"
    assert request.system_site_packages is True
    assert request.allow_cpu is True
    assert request.verify is True


def test_a_relative_manifest_path_still_gives_an_absolute_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path, '[[env]]\nname = "a"\nprofile = "numpy"\nlock = "a.lock"\n')
    (manifest.parent / "a.lock").write_text("# read at create time\n")
    monkeypatch.chdir(tmp_path)
    [entry] = load_manifest(Path("project/kboot.toml"))
    assert entry.lock == tmp_path / "project" / "a.lock"


def test_an_inline_profile_table(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        "[[env]]\n"
        'name = "half"\n'
        'profile = { backend = "numpy", floatx = "float16", packages = ["numpy>=1.26"] }\n',
    )
    [entry] = load_manifest(path)
    assert entry.profile.name == "half"
    assert entry.profile.backend == "numpy"
    assert entry.profile.floatx == "float16"
    assert entry.profile.packages == ("numpy>=1.26",)
    assert str(entry.profile.path) == f"{path}#half"


def test_a_profile_path_relative_to_the_manifest(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "mine"\nprofile = "profiles/mine.toml"\n')
    target = path.parent / "profiles" / "mine.toml"
    target.parent.mkdir()
    target.write_text('backend = "numpy"\npackages = ["numpy"]\nfloatx = "float64"\n')
    [entry] = load_manifest(path)
    assert entry.profile.floatx == "float64"
    assert entry.profile.path == target.absolute()


def test_several_entries_keep_their_order(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        '[[env]]\nname = "b"\nprofile = "numpy"\n'
        '[[env]]\nname = "a"\nprofile = "torch-cpu"\n'
        '[[env]]\nname = "c.1_x-y"\nprofile = "numpy"\n',
    )
    assert [e.name for e in load_manifest(path)] == ["b", "a", "c.1_x-y"]


def test_an_empty_manifest_lists_nothing(tmp_path: Path) -> None:
    assert load_manifest(write_manifest(tmp_path, "# nothing yet\n")) == []


# ---- refused manifests -----------------------------------------------------------------


def test_duplicate_names(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        '[[env]]\nname = "lab"\nprofile = "numpy"\n'
        '[[env]]\nname = "other"\nprofile = "numpy"\n'
        '[[env]]\nname = "lab"\nprofile = "jax-cpu"\n',
    )
    err = refused(path, "'lab'", "twice", "#1", "#3")
    assert err.hint is not None


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\nscop = "env"\n')
    err = refused(path, "[[env]] #1", "unknown key 'scop'")
    assert err.hint == "did you mean 'scope'?"


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\nzzzzzz = 1\n')
    err = refused(path, "unknown key 'zzzzzz'")
    assert err.hint is None


@pytest.mark.parametrize(
    ("text", "key"),
    [('[[env]]\nprofile = "numpy"\n', "name"), ('[[env]]\nname = "lab"\n', "profile")],
)
def test_missing_required_key(tmp_path: Path, text: str, key: str) -> None:
    refused(write_manifest(tmp_path, text), "[[env]] #1", f"missing required key '{key}'")


def test_the_entry_number_counts_entries(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "a"\nprofile = "numpy"\n[[env]]\nname = "b"\n')
    refused(path, "[[env]] #2", "'profile'")


def test_bad_scope(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\nscope = "system"\n')
    refused(path, "[[env]] 'lab'", "'scope'", "'system'", "env, user")


def test_bad_installer(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\ninstaller = "conda"\n'
    )
    refused(path, "[[env]] 'lab'", "'installer'", "'conda'")


@pytest.mark.parametrize("flag", ["system_site_packages", "allow_cpu"])
def test_non_bool_flag(tmp_path: Path, flag: str) -> None:
    path = write_manifest(tmp_path, f'[[env]]\nname = "lab"\nprofile = "numpy"\n{flag} = "yes"\n')
    refused(path, "[[env]] 'lab'", f"'{flag}'", "true or false")


def test_python_must_be_a_string(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\npython = 3.11\n')
    refused(path, "'python'")


def test_a_lock_that_does_not_exist_is_named(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\nlock = "no.lock"\n')
    refused(path, "lock file", "no.lock", "does not exist")


def test_lock_must_be_a_string(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "numpy"\nlock = 1\n')
    refused(path, "'lock'")


def test_name_must_be_a_string(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = 7\nprofile = "numpy"\n')
    refused(path, "'name' must be a string")


# "lab\\n" is TOML for lab and a newline: refused, not a folder name ending in a newline
@pytest.mark.parametrize("name", ["..", "a..b", "../escape", "a/b", ".hidden", "", "lab\\n"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    path = write_manifest(tmp_path, f'[[env]]\nname = "{name}"\nprofile = "numpy"\n')
    err = refused(path, "is not allowed")
    assert err.hint is not None
    assert "'..'" in err.hint


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, 'envs = []\n[[env]]\nname = "a"\nprofile = "numpy"\n')
    refused(path, "unknown top-level key 'envs'", "[[env]]")


@pytest.mark.parametrize("text", ['env = "lab"\n', "env = [1, 2]\n", '[env]\nname = "lab"\n'])
def test_env_must_be_an_array_of_tables(tmp_path: Path, text: str) -> None:
    refused(write_manifest(tmp_path, text), "array of tables")


def test_inline_profile_with_a_bad_value(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        '[[env]]\nname = "lab"\n'
        'profile = { backend = "numpy", floatx = "float8", packages = ["numpy"] }\n',
    )
    # the profile's own error (a ProfileError, exit code 2), naming the manifest and entry
    err = refused(
        path, "#lab", "'floatx'", "'float8'", "float16, float32, float64", kind=ProfileError
    )
    assert err.hint is not None
    assert err.hint.startswith("did you mean 'float")


def test_profile_of_the_wrong_type(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = 3\n')
    refused(path, "[[env]] 'lab'", "'profile' must be")


def test_unknown_profile_name(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "lab"\nprofile = "nunpy"\n')
    err = refused(path, "[[env]] 'lab'", "unknown profile 'nunpy'")
    assert err.hint is not None
    assert "numpy" in err.hint


def test_invalid_toml(tmp_path: Path) -> None:
    refused(write_manifest(tmp_path, '[[env]\nname = "lab"\n'), "invalid TOML")


def test_missing_file(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere.toml", "does not exist")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[env]]\nname = "caf\xe9"\nprofile = "numpy"\n')
    refused(path, "cannot read manifest")


# ---- SyncResult ------------------------------------------------------------------------


def result(*entries: SyncEntry, check_only: bool, prune: bool = False) -> SyncResult:
    return SyncResult(Path("/m/kboot.toml"), tuple(entries), check_only, prune)


def test_check_all_ok_with_an_extra_is_in_sync_without_prune() -> None:
    outcome = result(
        SyncEntry("a", "ok"),
        SyncEntry("old", "extra", "not in the manifest"),
        check_only=True,
    )
    assert outcome.in_sync
    assert outcome.exit_code == EXIT_OK
    assert not outcome.changed
    data = outcome.to_dict()
    assert data["manifest"] == "/m/kboot.toml"
    assert data["check"] is True
    assert data["in_sync"] is True and data["was_in_sync"] is True
    assert data["ok"] is True
    assert data["changed"] is False
    assert [e["name"] for e in data["environments"]] == ["a"]
    assert [e["name"] for e in data["extra"]] == ["old"]
    assert data["extra"][0]["status"] == "extra"


def test_check_with_prune_counts_the_extra() -> None:
    outcome = result(SyncEntry("a", "ok"), SyncEntry("old", "extra"), check_only=True, prune=True)
    assert not outcome.in_sync
    assert outcome.exit_code == EXIT_FAILED
    data = outcome.to_dict()
    assert data["in_sync"] is False
    assert data["ok"] is False


@pytest.mark.parametrize("status", ["missing", "differs", "failed"])
def test_check_with_a_listed_environment_out_of_date(status: str) -> None:
    outcome = result(SyncEntry("a", "ok"), SyncEntry("b", status), check_only=True)
    assert not outcome.in_sync
    assert outcome.exit_code == EXIT_FAILED
    assert outcome.to_dict()["ok"] is False


def test_check_with_nothing_listed_is_in_sync() -> None:
    outcome = result(check_only=True, prune=True)
    assert outcome.in_sync
    assert outcome.exit_code == EXIT_OK


def test_a_sync_that_changed_things_is_in_sync_after_and_was_not_before() -> None:
    outcome = result(
        SyncEntry("a", "created", changed=True),
        SyncEntry("b", "unchanged"),
        SyncEntry("c", "updated", "floatx: 'float32' -> 'float16'", changed=True),
        SyncEntry("old", "removed", "/k/envs/old", changed=True),
        check_only=False,
        prune=True,
    )
    assert outcome.changed
    assert outcome.exit_code == EXIT_OK
    assert not outcome.was_in_sync  # 'created' and 'updated' were not in sync before
    assert outcome.in_sync  # and are now: a script reading in_sync after a sync sees true
    data = outcome.to_dict()
    assert data["in_sync"] is True and data["was_in_sync"] is False
    assert data["ok"] is True
    assert data["changed"] is True
    assert [e["name"] for e in data["environments"]] == ["a", "b", "c"]
    assert [e["name"] for e in data["extra"]] == ["old"]
    assert data["environments"][2]["detail"] == "floatx: 'float32' -> 'float16'"


def test_a_failed_entry_gives_its_exit_code_and_error() -> None:
    error = InstallError("installing keras failed")
    usage = UsageError("bad name")
    outcome = result(
        SyncEntry("a", "unchanged"),
        SyncEntry("b", "failed", error.message, 1.23456, error=error),
        check_only=False,
    )
    assert not outcome.in_sync
    assert outcome.exit_code == 1
    data = outcome.to_dict()
    assert data["ok"] is False
    failed = data["environments"][1]
    assert failed == {
        "name": "b",
        "status": "failed",
        "changed": False,
        "detail": "installing keras failed",
        "seconds": 1.235,
        "lock_drift": [],
        "error": "installing keras failed",
        "exit_code": 1,
    }
    assert "error" not in data["environments"][0]
    worst = result(
        SyncEntry("b", "failed", error=error),
        SyncEntry("c", "failed", error=usage),
        check_only=False,
    )
    assert worst.exit_code == 2  # the highest exit code of the failures


def test_outside_manifest() -> None:
    assert SyncEntry("x", "extra").outside_manifest
    assert SyncEntry("x", "removed").outside_manifest
    assert not SyncEntry("x", "ok").outside_manifest
    assert not SyncEntry("x", "failed").outside_manifest


def test_sources_for_offline_hosts_relative_to_the_manifest(tmp_path: Path) -> None:
    """Lab item 20: a manifest describes offline hosts; its paths are its own."""
    (tmp_path / "project" / "wheelhouse").mkdir(parents=True)
    path = write_manifest(
        tmp_path,
        '[[env]]\nname = "a"\nprofile = "numpy"\nwheelhouse = "wheelhouse"\noffline = true\n'
        '[[env]]\nname = "b"\nprofile = "numpy"\nindex_url = "https://mirror.example/simple"\n'
        'extra_index_urls = ["https://extra.example/simple"]\nfind_links = ["wheels", '
        '"https://links.example/"]\n',
    )
    a, b = load_manifest(path)
    assert a.wheelhouse == tmp_path / "project" / "wheelhouse" and a.offline
    request = a.request(verify=False)
    assert request.wheelhouse == a.wheelhouse and request.offline
    assert b.sources is not None
    assert b.sources.index_url == "https://mirror.example/simple"
    assert b.sources.find_links == (str(tmp_path / "project" / "wheels"), "https://links.example/")
    assert b.request(verify=False).sources == b.sources


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("offline = true\n", "'offline = true' needs a 'wheelhouse'"),
        ('wheelhouse = "nowhere"\n', "does not exist"),
        ("wheelhouse = 5\n", "'wheelhouse' must be a folder path"),
        ('find_links = "one"\n', "'find_links' must be a list of strings"),
        ('lock = "a\\u0000b"\n', "'lock' must be a path string"),
    ],
)
def test_bad_source_keys(tmp_path: Path, text: str, message: str) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "a"\nprofile = "numpy"\n' + text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert message in info.value.message


def test_an_empty_manifest_cannot_prune_everything(tmp_path: Path) -> None:
    """Lab item 23: --prune with a manifest that lists nothing is refused."""
    from bootstrap.fleet.sync import sync_manifest
    from bootstrap.state.ledger import Entry, Ledger
    from bootstrap.system.progress import RecordingReporter

    home = tmp_path / "kboot-home"
    env = (home / "envs" / "kept").resolve()
    env.mkdir(parents=True)
    Ledger(home).put(Entry(env, token="t" * 32))  # kboot's, as far as counting goes
    empty = write_manifest(tmp_path, "")
    with pytest.raises(ManifestError) as info:
        sync_manifest(
            empty,
            prune=True,
            reporter_for=lambda _: RecordingReporter(),
            environ={"KBOOT_HOME": str(home), "HOME": str(tmp_path)},
        )
    assert "would remove all 1" in info.value.message
    assert env.is_dir()


def test_a_sync_with_a_failure_is_not_in_sync_after() -> None:
    failed = SyncEntry("b", "failed", error=KbootError("no"))
    outcome = result(SyncEntry("a", "created", changed=True), failed, check_only=False)
    assert not outcome.in_sync and not outcome.was_in_sync


# ---- one manifest drives lock -> download -> sync (issue 16, item 9) ---------------------

HOUSE = '[[env]]\nname = "a"\nprofile = "numpy"\nwheelhouse = "wheels/a"\noffline = true\n'


@pytest.mark.parametrize("stage", ["lock", "download"])
def test_a_wheelhouse_download_will_make_is_fine_before_it(tmp_path: Path, stage: str) -> None:
    path = write_manifest(tmp_path, HOUSE)
    (tmp_path / "project" / "wheels").mkdir()
    [entry] = load_manifest(path, stage=stage)
    assert entry.wheelhouse == tmp_path / "project" / "wheels" / "a"
    assert not entry.wheelhouse.exists()  # reading a manifest makes nothing


def test_sync_needs_the_wheelhouse_and_says_how_to_make_it(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, HOUSE)
    (tmp_path / "project" / "wheels").mkdir()
    err = refused(path, "wheelhouse", "wheels/a does not exist")
    assert err.hint is not None and f"kboot download {path}" in err.hint


@pytest.mark.parametrize("stage", ["lock", "download", "sync"])
def test_a_wheelhouse_whose_folder_is_missing_is_refused(tmp_path: Path, stage: str) -> None:
    """download makes the folder the manifest names, never the folders above it."""
    path = write_manifest(tmp_path, HOUSE)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, stage=stage)
    assert info.value.exit_code == 2
    assert str(tmp_path / "project" / "wheels") in info.value.message


@pytest.mark.parametrize("stage", ["lock", "download", "sync"])
def test_a_wheelhouse_that_is_a_file_is_refused(tmp_path: Path, stage: str) -> None:
    path = write_manifest(tmp_path, HOUSE)
    (tmp_path / "project" / "wheels").mkdir()
    (tmp_path / "project" / "wheels" / "a").write_text("not a folder")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, stage=stage)
    assert "is not a folder" in info.value.message


def test_download_needs_the_locks_the_manifest_names(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, HOUSE + 'lock = "locks/a.lock"\n')
    (tmp_path / "project" / "wheels").mkdir()
    assert load_manifest(path, stage="lock")[0].lock == tmp_path / "project" / "locks" / "a.lock"
    with pytest.raises(ManifestError) as info:
        load_manifest(path, stage="download")
    assert "does not exist" in info.value.message
    assert info.value.hint is not None and "kboot lock" in info.value.hint


def _download(path: Path) -> None:
    from bootstrap.fleet.targets import download_manifest
    from bootstrap.system.progress import RecordingReporter

    download_manifest(
        path, pythons=["3.11"], platforms=None, reporter_for=lambda _: RecordingReporter()
    )


def test_download_of_a_manifest_without_wheelhouses_is_refused(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[env]]\nname = "a"\nprofile = "numpy"\n')
    with pytest.raises(UsageError) as info:
        _download(path)
    assert "names a wheelhouse" in info.value.message and info.value.exit_code == 2


def test_entries_sharing_a_wheelhouse_must_share_its_lock(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, HOUSE + HOUSE.replace('name = "a"', 'name = "b"'))
    (tmp_path / "project" / "wheels").mkdir()
    with pytest.raises(UsageError) as info:
        _download(path)
    assert "entries 'a' and 'b' both name the wheelhouse" in info.value.message
    assert not (tmp_path / "project" / "wheels" / "a").exists()


def test_a_wheelhouse_in_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, HOUSE)
    shared = tmp_path / "project" / "wheels"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could swap the wheelhouse kboot makes there
    with pytest.raises(UntrustedPathError) as info:
        _download(path)
    assert info.value.exit_code == 2 and str(shared) in info.value.message
    assert not (shared / "a").exists()


def test_download_refuses_a_lock_made_from_other_requirements(tmp_path: Path) -> None:
    """A stale lock would give a wheelhouse that sync then refuses: download says so first."""
    import json

    from bootstrap.install.platforms import host_platform
    from bootstrap.locks.model import LockFileError

    path = write_manifest(tmp_path, HOUSE + 'lock = "locks/a.lock"\n')
    (tmp_path / "project" / "wheels").mkdir()
    (tmp_path / "project" / "locks").mkdir()
    meta = {"profile": "numpy", "python": "3.11", "platform": host_platform(),
            "requirements_digest": "0" * 64}  # fmt: skip
    (tmp_path / "project" / "locks" / "a.lock").write_text(
        "# kboot-lock: "
        + json.dumps(meta)
        + "\nnamex==0.1.0 \\\n    --hash=sha256:"
        + "a" * 64
        + "\n"
    )
    with pytest.raises(LockFileError) as info:
        _download(path)
    assert "made from other requirements than entry 'a'" in info.value.message
    assert info.value.hint is not None and f"kboot lock {path}" in info.value.hint
    assert not (tmp_path / "project" / "wheels" / "a").exists()
