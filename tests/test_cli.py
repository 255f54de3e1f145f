"""The CLI through its real entry point `bootstrap.cli.app.main`: exit codes, stdout, stderr.

Nothing here builds an environment: every `create` below is refused before the disk
is touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootstrap import __version__
from bootstrap.cli.app import main
from helpers import BUILTIN_NAMES


def kboot(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; returns (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), out, err


def refused(capsys, code: int, *args: str) -> str:  # type: ignore[no-untyped-def]
    """Run, expect `code`, one clean error line and no traceback; returns stderr."""
    got, out, err = kboot(capsys, *args)
    assert got == code, (got, out, err)
    assert "Traceback" not in err
    assert "Traceback" not in out
    assert "kboot: error: " in err
    return err


# --- version and help ------------------------------------------------------------------------


def test_version(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "--version")
    assert code == 0
    assert out.strip() == f"kboot {__version__}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["create"],
        ["profiles"],
        ["show"],
        ["list"],
        ["check"],
        ["remove"],
        ["config"],
        ["config", "show"],
        ["config", "set"],
    ],
    ids=lambda c: " ".join(c) or "kboot",
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(capsys, command: list[str], flag: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = kboot(capsys, *command, flag)
    assert code == 0, err
    assert "Usage: kboot" in out
    assert "Traceback" not in err


def test_root_help_documents_the_exit_codes(capsys) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = kboot(capsys, "--help")
    assert "Exit codes" in out
    for command in ("create", "profiles", "show", "list", "check", "remove", "config"):
        assert command in out


def test_unknown_option_is_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = kboot(capsys, "profiles", "--no-such-option")
    assert code == 2
    assert "No such option" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["show"], "profile"),
        (["check"], "env"),
        (["config", "set"], "KEY=VALUE"),
    ],
)
def test_missing_argument_is_usage_error(capsys, args: list[str], missing: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = kboot(capsys, *args)
    assert code == 2
    assert "Missing" in err and missing.upper() in err.upper()
    assert "Traceback" not in err


def test_create_without_a_profile_outside_a_project(capsys, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    code, _, err = kboot(capsys, "create")
    assert code == 2
    assert "no profile given, and no project here" in err and "kboot create numpy" in err


def test_no_arguments_shows_help(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = kboot(capsys)
    assert code in (0, 2)  # click < 8.2 exits 0, later versions 2
    assert "Usage: kboot" in out + err
    assert "Traceback" not in err


# --- profiles and show -----------------------------------------------------------------------


def test_profiles_json_lists_the_builtins(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "profiles", "--json")
    assert code == 0
    entries = json.loads(out)
    assert {e["name"] for e in entries} == BUILTIN_NAMES
    assert all(e["origin"] == "builtin" and e["error"] is None for e in entries)
    by_name = {e["name"]: e for e in entries}
    assert by_name["torch-cpu"]["backend"] == "torch"
    assert by_name["tf-gpu"]["backend"] == "tensorflow"


def test_profiles_json_shows_a_user_profile(capsys, write_profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # conftest points KBOOT_PROFILES at tmp_path / "user-profiles"
    write_profile(
        "numpy", 'backend = "numpy"\npackages = ["numpy"]\n', folder=tmp_path / "user-profiles"
    )
    write_profile("broken", 'backend = "numpy"\nflaotx = "x"\n', folder=tmp_path / "user-profiles")
    code, out, _ = kboot(capsys, "profiles", "--json")
    assert code == 0
    by_name = {e["name"]: e for e in json.loads(out)}
    assert by_name["numpy"]["origin"] == "user"
    assert by_name["numpy"]["shadows_builtin"] is True
    assert "unknown key 'flaotx'" in by_name["broken"]["error"]


def test_profiles_table(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "profiles")
    assert code == 0
    for name in BUILTIN_NAMES:
        assert name in out


def test_show_json(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "show", "numpy", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "numpy"
    assert data["backend"] == "numpy"
    assert data["path"].endswith("numpy.toml")
    assert any(p.startswith("numpy") for p in data["packages"])
    assert data["sources"] == {"index_url": None, "extra_index_urls": [], "find_links": []}


def test_show_text(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "show", "torch-cpu")
    assert code == 0
    assert "torch" in out


def test_show_prints_what_create_uses_and_what_it_extends(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 items 22 and 23: a profile extending torch-cpu that drops its index still
    gets the PyTorch CPU index from its accelerator; show says so, and says what it
    extends, and its --json is the profile create resolves."""
    import os

    from bootstrap.envs.create import _prepare
    from bootstrap.envs.names import profile_for
    from bootstrap.envs.plan import CreateRequest
    from bootstrap.system.progress import RecordingReporter

    (tmp_path / "kboot.toml").write_text(
        '[profiles.mine]\nextends = "torch-cpu"\nextra_index_urls = []\n', encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = kboot(capsys, "show", "mine")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == f"# extends: torch-cpu ({Path(__file__).parent.parent / 'profiles'}" \
        "/torch-cpu.toml)"  # fmt: skip
    index = next(line for line in lines if line.startswith("extra_index_urls = "))
    assert index.startswith('extra_index_urls = ["https://download.pytorch.org/whl/cpu"]')
    assert "the accelerator's build; the profile says []" in index
    code, out, _ = kboot(capsys, "show", "mine", "--json")
    shown = json.loads(out)
    assert shown["extends"] and shown["build"]["chosen"] == "cpu"
    declared = profile_for("mine", os.environ, tmp_path)
    target = _prepare(CreateRequest(declared), RecordingReporter(), dict(os.environ))
    used = target.profile.to_dict()
    for key in ("packages", "sources", "accelerator", "gpu", "backend", "python", "keras"):
        assert shown[key] == used[key], key


def test_show_unknown_profile(capsys) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "show", "nunpy")
    assert "unknown profile 'nunpy'" in err
    assert "did you mean numpy" in err


def test_show_missing_profile_file(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "show", str(tmp_path / "missing.toml"))
    assert "does not exist" in err


def test_show_bad_profile_file(capsys, write_profile) -> None:  # type: ignore[no-untyped-def]
    path = write_profile("bad", 'backend = "numpy"\npackages = ["numpy"]\nflaotx = "float64"\n')
    err = refused(capsys, 2, "show", str(path))
    assert str(path) in err
    assert "did you mean 'floatx'?" in err


def test_show_invalid_toml(capsys, write_profile) -> None:  # type: ignore[no-untyped-def]
    path = write_profile("bad", "backend = \n")
    err = refused(capsys, 2, "show", str(path))
    assert "invalid TOML" in err


# --- create: refused before anything is built ------------------------------------------------


def _nothing_built(tmp_path: Path) -> None:
    envs = tmp_path / "kboot-home" / "envs"
    assert not envs.exists() or not any(envs.iterdir())


def test_create_unknown_profile(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "create", "nunpy")
    assert "did you mean numpy" in err
    _nothing_built(tmp_path)


def test_create_bad_name(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "create", "numpy", "--name", "../x")
    assert "'../x' is not allowed" in err
    assert not (tmp_path / "kboot-home" / "x").exists()
    _nothing_built(tmp_path)


def test_create_bad_installer(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "create", "numpy", "--installer", "conda")
    assert "--installer 'conda'" in err
    assert "uv, pip" in err
    _nothing_built(tmp_path)


def test_create_bad_scope(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "create", "numpy", "--scope", "system")
    assert "--scope 'system'" in err
    _nothing_built(tmp_path)


def test_create_refuses_a_foreign_folder(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "project"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine", encoding="utf-8")
    (dest / "sub").mkdir()
    (dest / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = sorted((p.relative_to(dest), p.stat().st_mtime_ns) for p in dest.rglob("*"))

    err = refused(capsys, 2, "create", "numpy", "--dest", str(dest))
    assert "is not a kboot environment" in err
    assert "--replace-foreign" in err
    # --force is for kboot's own environments: it does not touch this folder either
    err = refused(capsys, 2, "create", "numpy", "--dest", str(dest), "--force")
    assert "--force rebuilds kboot's own environments only" in err

    after = sorted((p.relative_to(dest), p.stat().st_mtime_ns) for p in dest.rglob("*"))
    assert after == before
    assert (dest / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert not (tmp_path / "kboot-home" / "external-envs.txt").exists()
    _nothing_built(tmp_path)


def test_create_refuses_a_file_as_dest(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "afile"
    dest.write_text("x", encoding="utf-8")
    err = refused(capsys, 2, "create", "numpy", "--dest", str(dest))
    assert "is not a folder" in err
    assert dest.read_text(encoding="utf-8") == "x"


# --- config ----------------------------------------------------------------------------------


def test_config_set_then_show(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "kh"
    code, out, err = kboot(capsys, "config", "set", "floatx=float64", "--keras-home", str(home))
    assert code == 0, err
    assert "updated" in out and "floatx=float64" in out
    assert json.loads((home / "keras.json").read_text(encoding="utf-8")) == {"floatx": "float64"}

    code, out, _ = kboot(capsys, "config", "show", "--json", "--keras-home", str(home))
    assert code == 0
    view = json.loads(out)
    assert view["keras_home"] == str(home)
    assert view["keras_home_source"] == "--keras-home"
    assert view["exists"] is True
    assert view["file_values"] == {"floatx": "float64"}
    assert view["effective"]["floatx"] == "float64"
    assert view["effective"]["backend"] == "tensorflow"  # Keras' default
    assert view["overrides"] == []


def test_config_set_again_is_unchanged_and_backs_up(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = str(tmp_path / "kh")
    kboot(capsys, "config", "set", "floatx=float64", "--keras-home", home)
    code, out, _ = kboot(capsys, "config", "set", "floatx=float64", "--keras-home", home, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["changed"] is False and data["backup"] is None
    code, out, _ = kboot(capsys, "config", "set", "epsilon=1", "--keras-home", home, "--json")
    data = json.loads(out)
    assert data["changed"] is True
    assert data["set"] == {"epsilon": 1.0}
    assert data["backup"] == str(tmp_path / "kh" / "keras.json.bak")
    saved = json.loads((tmp_path / "kh" / "keras.json").read_text(encoding="utf-8"))
    assert saved == {"floatx": "float64", "epsilon": 1.0}
    assert isinstance(saved["epsilon"], float)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--find-links", "/nonexistent-kboot"], "--find-links /nonexistent-kboot: no such folder"),
        (["--index-url", "not a url"], "--index-url 'not a url' is not a URL"),
        (["--extra-index-url", "ftp://x/simple"],
         "--extra-index-url 'ftp://x/simple' is not a URL"),
        (["--offline", "--wheelhouse", "WH", "--index-url", "https://example.invalid/simple"],
         "WH and --index-url both say where to install from"),
    ],
)  # fmt: skip
def test_sources_are_checked_before_anything_is_touched(  # type: ignore[no-untyped-def]
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "WH").mkdir()
    code, _, err = kboot(capsys, "create", "numpy", *args, "--no-smoke")
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "kboot-home" / "envs").exists()


def test_usage_errors_show_the_usage_line_as_help_does(capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = kboot(capsys, "remove")
    assert code == 2
    assert "Usage: kboot remove [OPTIONS] ENV" in err and "{" not in err


def test_did_you_mean_suggests_only_a_close_name(capsys) -> None:  # type: ignore[no-untyped-def]
    _, _, far = kboot(capsys, "show", "nosuch")
    assert "did you mean" not in far and "kboot profiles` lists them" in far
    _, _, near = kboot(capsys, "show", "nmupy")
    assert "did you mean numpy?" in near


def test_a_name_too_long_for_a_file_name_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = kboot(capsys, "create", "numpy", "--name", "x" * 300, "--no-smoke")
    assert code == 2
    assert "is 300 characters long: at most 100 are allowed" in err
    assert "Traceback" not in err and "File name too long" not in err


def test_config_set_into_a_keras_home_whose_parent_is_missing_is_refused(  # type: ignore[no-untyped-def]
    capsys, tmp_path: Path
) -> None:
    home = tmp_path / "typo" / "deeper" / "kh"
    code, _, err = kboot(capsys, "config", "set", "floatx=float32", "--keras-home", str(home))
    assert code == 2
    assert f"Keras home {home} does not exist, nor does {tmp_path / 'typo'}" in err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "file").write_text("x")
    code, _, err = kboot(capsys, "config", "set", "floatx=float32", "--keras-home",
                         str(tmp_path / "file"))  # fmt: skip
    assert code == 2 and "is not a folder" in err


def test_config_show_flags_a_malformed_keras_json(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "kh"
    home.mkdir()
    (home / "keras.json").write_text("{bad", encoding="utf-8")
    code, out, _ = kboot(capsys, "config", "show", "--keras-home", str(home))
    assert code == 0
    assert "INVALID: Keras ignores the whole file" in out and "not valid JSON" in out
    code, out, _ = kboot(capsys, "config", "show", "--keras-home", str(home), "--json")
    view = json.loads(out)
    assert code == 0 and view["exists"] is True and "not valid JSON" in view["invalid"]
    assert view["effective"]["backend"] == "tensorflow"  # Keras' defaults apply
    assert (home / "keras.json").read_text(encoding="utf-8") == "{bad"


def test_config_default_home_is_the_isolated_one(capsys, isolated: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, _ = kboot(capsys, "config", "set", "backend=jax")
    assert code == 0
    assert json.loads((isolated / ".keras" / "keras.json").read_text(encoding="utf-8")) == {
        "backend": "jax"
    }
    code, out, _ = kboot(capsys, "config", "show", "--json")
    view = json.loads(out)
    assert view["keras_home_source"] == "default"
    assert view["path"] == str(isolated / ".keras" / "keras.json")


def test_config_keras_home_variable(capsys, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "from-env"))
    code, out, _ = kboot(capsys, "config", "show", "--json")
    assert code == 0
    view = json.loads(out)
    assert view["keras_home_source"] == "KERAS_HOME"
    assert view["exists"] is False


def test_config_show_reports_keras_backend(capsys, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home = str(tmp_path / "kh")
    kboot(capsys, "config", "set", "backend=jax", "--keras-home", home)
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    code, out, _ = kboot(capsys, "config", "show", "--json", "--keras-home", home)
    view = json.loads(out)
    assert view["effective"]["backend"] == "torch"
    assert len(view["overrides"]) == 1 and "KERAS_BACKEND=torch" in view["overrides"][0]
    code, _, err = kboot(capsys, "config", "set", "backend=numpy", "--keras-home", home)
    assert code == 0
    assert "KERAS_BACKEND=torch" in err


def test_config_set_bad_value(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "config", "set", "floatx=float8", "--keras-home", str(tmp_path / "kh"))
    assert "float8" in err
    assert not (tmp_path / "kh").exists()


def test_config_set_malformed_file(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "kh"
    home.mkdir()
    raw = b'{"backend": "jax",, }\n'
    (home / "keras.json").write_bytes(raw)
    err = refused(capsys, 1, "config", "set", "floatx=float64", "--keras-home", str(home))
    assert "not valid JSON" in err
    assert (home / "keras.json").read_bytes() == raw
    assert sorted(p.name for p in home.iterdir()) == ["keras.json"]


def test_config_show_malformed_file(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "kh"
    home.mkdir()
    (home / "keras.json").write_text("[1, 2]", encoding="utf-8")
    code, out, _ = kboot(capsys, "config", "show", "--keras-home", str(home))
    assert code == 0 and "INVALID" in out and "not an object" in out  # flagged, not refused


# --- list, check, remove ---------------------------------------------------------------------


def test_list_json_on_empty_home(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "list", "--json")
    assert code == 0
    assert json.loads(out) == []


def test_list_text_on_empty_home(capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = kboot(capsys, "list")
    assert code == 0
    assert "Traceback" not in err


def test_unknown_env(capsys) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "check", "nosuchenv")
    assert "no environment 'nosuchenv'" in err


def test_removing_what_is_not_there_is_nothing_to_remove(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = kboot(capsys, "remove", "nosuchenv")
    assert code == 0 and "nothing to remove: no environment 'nosuchenv'" in out
    code, out, _ = kboot(capsys, "remove", "nosuchenv", "--json")
    data = json.loads(out)
    assert code == 0 and data["removed"] is False and "nosuchenv" in data["nothing_to_remove"]


def test_check_takes_several_environments_and_names_each(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = kboot(capsys, "check", "nosuch-a", "nosuch-b", "--json")
    assert code == 2
    items = json.loads(out)
    assert [(i["name"], i["ok"], i["exit_code"]) for i in items] == [
        ("nosuch-a", False, 2), ("nosuch-b", False, 2)]  # fmt: skip
    code, _, err = kboot(capsys, "check", "nosuch-a", "nosuch-b")
    assert code == 2 and "nosuch-a: error: no environment" in err and "nosuch-b: error:" in err


@pytest.mark.parametrize("command", ["check", "remove"])
def test_foreign_folder_is_not_an_env(capsys, command: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "keep.txt").write_text("k", encoding="utf-8")
    err = refused(capsys, 2, command, str(folder))
    assert "not an environment kboot made" in err
    assert (folder / "keep.txt").read_text(encoding="utf-8") == "k"


def test_json_errors_are_a_document_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["show", "no-such-profile", "--json"])
    assert exit_info.value.code == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "ProfileError" and doc["exit_code"] == 2
    assert "no-such-profile" in doc["error"]


@pytest.mark.parametrize("name", ["numpy", "plaidml", "tf-keras2", "torch-cpu"])
def test_show_prints_a_profile_that_loads_back(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["show", name])
    assert done.value.code == 0
    copy = tmp_path / f"{name}-copy.toml"
    copy.write_text(capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["show", name, "--json"])
    original = json.loads(capsys.readouterr().out)
    with pytest.raises(SystemExit) as done:
        main(["show", str(copy), "--json"])
    assert done.value.code == 0
    reloaded = json.loads(capsys.readouterr().out)
    for data in (original, reloaded):
        del data["name"], data["path"]
    assert reloaded == original


def test_config_set_in_a_shared_keras_home_never_writes_through_a_planted_link(
    capsys,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Defect 7: someone links keras.json.bak in a shared Keras home to a file of yours."""
    shared = tmp_path / "shared-keras"
    shared.mkdir()
    (shared / "keras.json").write_text('{"backend": "tensorflow"}', encoding="utf-8")
    victim = tmp_path / "bashrc"
    victim.write_text("export X=1\n", encoding="utf-8")
    (shared / "keras.json.bak").symlink_to(victim)
    code, _, err = kboot(capsys, "config", "set", "backend=jax", "--keras-home", str(shared))
    assert code == 0, err
    assert victim.read_text(encoding="utf-8") == "export X=1\n"
    assert not (shared / "keras.json.bak").is_symlink()
    assert json.loads((shared / "keras.json").read_text(encoding="utf-8"))["backend"] == "jax"


@pytest.mark.needs("root")  # a symlink owned by another user
def test_dest_that_is_another_users_symlink_is_refused(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Found in review: a link planted in a shared folder would choose where kboot builds."""
    import os

    target = tmp_path / "attacker" / "env"
    target.parent.mkdir()
    link = tmp_path / "myenv"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    err = refused(capsys, 2, "create", "numpy", "--dest", str(link))
    assert "a symlink that another user made" in err
    assert not target.exists()


def test_dest_in_a_folder_everyone_can_write_is_refused(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    err = refused(capsys, 2, "create", "numpy", "--dest", str(shared / "env"))
    assert "writable by other users (and has no sticky bit)" in err
    shared.chmod(0o1777)  # like /tmp: others cannot rename or delete what is yours
    code, _, err = kboot(
        capsys, "create", "numpy", "--dest", str(shared / "env"), "--python", "/nonexistent"
    )
    assert code == 2 and "no such file" in err  # it got past the folder, to the interpreter
    assert "writable by other users" not in err


def test_dest_root_is_named_as_a_filesystem_root(capsys) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "create", "numpy", "--dest", "/")
    assert "a filesystem root" in err


def test_lock_output_that_is_not_a_lock_is_left_alone(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    err = refused(capsys, 2, "lock", "numpy", "-o", str(notes))
    assert "is not a lock kboot wrote" in err
    assert notes.read_text(encoding="utf-8") == "mine\n"


def test_download_of_a_profile_needs_dest(capsys) -> None:  # type: ignore[no-untyped-def]
    err = refused(capsys, 2, "download", "numpy")
    assert "needs --dest DIR" in err


def test_download_of_a_manifest_takes_no_dest_or_lock(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Its entries name their wheelhouse and lock (issue 16, item 9)."""
    manifest = tmp_path / "lab.toml"
    manifest.write_text('[[env]]\nname = "a"\nprofile = "numpy"\nwheelhouse = "w"\n')
    err = refused(capsys, 2, "download", str(manifest), "--dest", str(tmp_path / "x"))
    assert "--dest cannot go with a manifest" in err
    err = refused(capsys, 2, "download", str(manifest), "--lock", "x.lock", "--dest", "d")
    assert "--dest and --lock cannot go with a manifest" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "w").exists()
