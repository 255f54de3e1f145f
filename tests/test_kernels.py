"""Jupyter kernels: kernel.json construction, where Jupyter looks, ownership, and real
notebooks executed headless (nbclient) on a kernel kboot registered.

The real tests run the notebook with `KERAS_BACKEND=torch` in the environment of the
process that starts the kernel and a `~/.keras/keras.json` that says tensorflow/float16:
the kernel must still report the profile's config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest
from damage import damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.jupyter import registry
from bootstrap.jupyter.kernelspec import (
    KERNEL_JSON,
    KernelSpec,
    build_spec,
    display_name,
    kernel_name,
    parse_kernel_json,
)
from bootstrap.jupyter.registry import (
    KernelLedger,
    Registration,
    kernel_status,
    parse_registration,
    register,
    unregister,
)
from bootstrap.state.record import EnvRecord
from bootstrap.system.errors import KbootError, KernelError, UntrustedPathError, UsageError
from bootstrap.system.paths import jupyter_data_dir
from helpers import created, kboot

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["/env/bin/python", "kboot-x", "/env", "0" * 64, "..", "\0"])
)
JSON_VALUES = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
#: What Jupyter accepts as a kernel name (jupyter_client's _kernel_name_pat).
JUPYTER_NAME = re.compile(r"^[a-z0-9._\-]+$", re.IGNORECASE)


@pytest.fixture(autouse=True)
def no_jupyter_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own Jupyter folders are never touched: the conftest isolates HOME
    and XDG_DATA_HOME; these would point elsewhere."""
    for name in (
        "JUPYTER_DATA_DIR",
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_PLATFORM_DIRS",
        "JUPYTER_PATH",
        "JUPYTER_RUNTIME_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def record_for(
    env: Path,
    *,
    name: str = "jax-cpu",
    profile: str = "jax-cpu",
    backend: str = "jax",
    floatx: str = "float32",
    startup_env: dict[str, str] | None = None,
    packages: dict[str, str] | None = None,
) -> EnvRecord:
    return EnvRecord(
        name=name,
        profile={"name": profile, "backend": backend, "floatx": floatx, "sources": {}},
        profile_digest="d",
        scope="env",
        keras_home=str(env / "keras-home"),
        installer="uv",
        python={"version": "3.11.7"},
        system_site_packages=False,
        created_at="2026-01-01T00:00:00+00:00",
        kboot_version="0",
        packages={"ipykernel": "7.1.0"} if packages is None else packages,
        startup_env={"KERAS_HOME": str(env / "keras-home")} if startup_env is None else startup_env,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` with its content's digest (links as their target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "link:" + str(path.readlink())
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "dir"
    return found


# --- names and kernel.json --------------------------------------------------------------


def test_kernel_name_and_display_name() -> None:
    assert kernel_name("jax-cpu") == "kboot-jax-cpu"
    assert kernel_name("My.Env_2") == "kboot-my.env_2"
    assert display_name("jax-cpu", "jax-cpu", "float32") == "Keras · jax-cpu · float32"
    assert display_name("lab", "numpy", "float64") == "Keras · lab (numpy) · float64"


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True))
def test_every_environment_name_gives_a_name_jupyter_accepts(env_name: str) -> None:
    assert JUPYTER_NAME.match(kernel_name(env_name))
    assert kernel_name(env_name).startswith("kboot-")


def test_kernel_json_pins_the_environment_config(tmp_path: Path) -> None:
    env = tmp_path / "envs" / "jax64"
    record = record_for(
        env,
        name="jax64",
        profile="jax64",
        floatx="float64",
        startup_env={
            "KERAS_HOME": str(env / "keras-home"),
            "JAX_ENABLE_X64": "1",
            "TF_USE_LEGACY_KERAS": "1",
        },
    )
    spec = build_spec(env, env / "bin" / "python", record)
    data = json.loads(spec.render())
    assert data["argv"] == [
        str(env / "bin" / "python"),
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    assert data["display_name"] == "Keras · jax64 · float64"
    assert data["language"] == "python"
    assert data["env"] == {
        "KERAS_BACKEND": "jax",
        "KERAS_HOME": str(env / "keras-home"),
        "JAX_ENABLE_X64": "1",
        "TF_USE_LEGACY_KERAS": "1",
    }
    assert data["metadata"] == {
        "debugger": True,
        "kboot": {"environment": str(env), "kernel": "kboot-jax64"},
    }
    assert spec.render().isascii()  # Jupyter reads any encoding of it alike


def test_scope_user_pins_the_backend_and_the_shared_keras_home(tmp_path: Path) -> None:
    """A --scope user environment reads the user's keras.json: its kernel too, wherever the
    Jupyter server's KERAS_HOME points."""
    env = tmp_path / "env"
    user_home = tmp_path / "home" / ".keras"
    record = replace(record_for(env, startup_env={}), scope="user", keras_home=str(user_home))
    spec = build_spec(env, env / "bin" / "python", record)
    assert spec.env == {"KERAS_BACKEND": "jax", "KERAS_HOME": str(user_home)}


def test_dollar_signs_survive_jupyters_env_substitution(tmp_path: Path) -> None:
    """jupyter_client runs string.Template.safe_substitute over env values: `$$` is `$`."""
    from string import Template

    env = tmp_path / "a$HOME" / "env"
    record = record_for(env, startup_env={"KERAS_HOME": str(env / "keras-home"), "X": "$PATH"})
    written = json.loads(build_spec(env, env / "bin" / "python", record).render())["env"]
    launched = {
        k: Template(v).safe_substitute({"HOME": "/h", "PATH": "/p"}) for k, v in written.items()
    }
    assert launched["KERAS_HOME"] == str(env / "keras-home")
    assert launched["X"] == "$PATH"


def test_old_ipykernel_has_no_debugger_and_braces_in_the_path_are_refused(tmp_path: Path) -> None:
    env = tmp_path / "env"
    old = build_spec(env, env / "bin" / "python", record_for(env, packages={"ipykernel": "5.5.6"}))
    assert old.debugger is False
    braces = tmp_path / "{prefix}" / "env"
    with pytest.raises(UsageError, match="Jupyter replaces"):
        build_spec(braces, braces / "bin" / "python", record_for(braces))


def test_kernel_json_reads_back(tmp_path: Path) -> None:
    env = tmp_path / "env"
    spec = build_spec(env, env / "bin" / "python", record_for(env))
    found = parse_kernel_json(spec.render(), tmp_path / KERNEL_JSON)
    assert found.argv == spec.argv
    assert found.display_name == spec.display_name
    assert found.environment == str(env)


@FUZZ
@given(st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_kernel_json_is_a_value_or_kboots_error(raw: bytes) -> None:
    try:
        found = parse_kernel_json(raw, Path("/k/kernel.json"))
    except KernelError as exc:
        assert "/k/kernel.json" in exc.message
    else:
        assert found.argv and all(isinstance(a, str) for a in found.argv)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "argv": st.lists(JSON_LEAF, max_size=3) | JSON_VALUES,
            "display_name": JSON_LEAF,
            "env": st.dictionaries(st.text(max_size=5), JSON_LEAF, max_size=3) | JSON_VALUES,
            "metadata": JSON_VALUES
            | st.fixed_dictionaries({"kboot": st.dictionaries(st.text(max_size=12), JSON_LEAF)}),
        },
    )
)
def test_kernel_json_shaped_input_is_a_value_or_kboots_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(KernelError):
        parse_kernel_json(json.dumps(data).encode(), Path("/k/kernel.json"))


# --- Jupyter's data folder ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "environ", "home", "expected"),
    [
        ("linux", {"JUPYTER_DATA_DIR": "/j"}, "/h", "/j"),
        ("linux", {"XDG_DATA_HOME": "/x"}, "/h", "/x/jupyter"),
        ("linux", {}, "/h", "/h/.local/share/jupyter"),
        ("linux", {"XDG_DATA_HOME": ""}, "/h", "/h/.local/share/jupyter"),
        ("linux", {"JUPYTER_PLATFORM_DIRS": "1", "XDG_DATA_HOME": "/x"}, "/h", "/x/jupyter"),
        ("linux", {"JUPYTER_PLATFORM_DIRS": "no", "XDG_DATA_HOME": "/x"}, "/h", "/x/jupyter"),
        ("darwin", {"XDG_DATA_HOME": "/x"}, "/Users/me", "/Users/me/Library/Jupyter"),
        (
            "darwin",
            {"JUPYTER_PLATFORM_DIRS": "true"},
            "/Users/me",
            "/Users/me/Library/Application Support/jupyter",
        ),
        ("darwin", {"JUPYTER_DATA_DIR": "/j"}, "/Users/me", "/j"),
        (
            "win32",
            {"APPDATA": "C:\\Users\\me\\AppData\\Roaming"},
            "C:\\Users\\me",
            "C:\\Users\\me\\AppData\\Roaming\\jupyter",
        ),
        ("win32", {}, "C:\\Users\\me", "C:\\Users\\me\\.jupyter\\data"),
        ("win32", {"JUPYTER_CONFIG_DIR": "D:\\cfg"}, "C:\\Users\\me", "D:\\cfg\\data"),
        (
            "win32",
            {"JUPYTER_PLATFORM_DIRS": "1", "LOCALAPPDATA": "C:\\L"},
            "C:\\Users\\me",
            "C:\\L\\jupyter",
        ),
    ],
)
def test_jupyter_data_dir_rules(
    platform: str, environ: dict[str, str], home: str, expected: str
) -> None:
    pure = PureWindowsPath if platform == "win32" else PurePosixPath
    assert jupyter_data_dir(environ, platform=platform, home=pure(home)) == pure(expected)


@pytest.mark.needs("posix")  # the cases below set POSIX variables
@pytest.mark.parametrize(
    "settings_",
    [
        {},
        {"XDG_DATA_HOME": "{tmp}/xdg"},
        {"JUPYTER_DATA_DIR": "{tmp}/jdd"},
        {"JUPYTER_PLATFORM_DIRS": "1", "XDG_DATA_HOME": "{tmp}/xdg"},
        {"JUPYTER_PLATFORM_DIRS": "0"},
    ],
)
def test_the_same_folder_as_jupyter_core(
    settings_: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kboot computes the folder without jupyter_core; here both must agree."""
    from jupyter_core.paths import jupyter_data_dir as jupyters

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    for key, value in settings_.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    assert Path(jupyter_data_dir()) == Path(jupyters())


# --- ownership: register, refuse, unregister ------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Path:
    path = tmp_path / "envs" / "jax-cpu"
    (path / "bin").mkdir(parents=True)
    return path


@pytest.fixture
def ledger(tmp_path: Path) -> KernelLedger:
    return KernelLedger(tmp_path / "kboot-home")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "jupyter" / "kernels" / "kboot-jax-cpu"


def spec_for(env: Path, **kwargs: Any) -> KernelSpec:
    return build_spec(env, env / "bin" / "python", record_for(env, **kwargs))


def test_register_then_unchanged_then_updated_then_unregister(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    first = register(ledger, spec_for(env), folder)
    assert first.action == "registered"
    written = (folder / KERNEL_JSON).read_bytes()
    assert written == spec_for(env).render()
    entry = ledger.get(env)
    assert entry is not None and entry.kernelspec == folder
    assert entry.sha256 == hashlib.sha256(written).hexdigest()
    assert oct(ledger.folder.stat().st_mode & 0o777) == "0o700"

    assert register(ledger, spec_for(env), folder).action == "unchanged"
    updated = register(ledger, spec_for(env, floatx="float16"), folder)
    assert updated.action == "updated"
    assert "float16" in (folder / KERNEL_JSON).read_text()

    status = kernel_status(ledger, env, None)
    assert status is not None and status.state == "ok"

    gone = unregister(ledger, env)
    assert gone is not None and gone.removed and gone.note is None
    assert not folder.exists()
    assert folder.parent.is_dir()  # Jupyter's kernels folder is not kboot's
    assert ledger.get(env) is None
    assert unregister(ledger, env) is None


def test_a_folder_kboot_did_not_register_is_refused_byte_identical(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    """Even a kernel.json that names this environment in kboot's own metadata: a file
    anyone can write is not proof."""
    folder.mkdir(parents=True)
    (folder / KERNEL_JSON).write_bytes(spec_for(env).render())
    (folder / "logo-64x64.png").write_bytes(b"\x89PNG")
    before = snapshot(folder.parent)
    with pytest.raises(UsageError, match="not a Jupyter kernel kboot registered") as refused:
        register(ledger, spec_for(env), folder)
    assert "proves nothing" in refused.value.message
    assert "jupyter kernelspec remove kboot-jax-cpu" in (refused.value.hint or "")
    assert refused.value.exit_code == 2
    assert snapshot(folder.parent) == before
    assert ledger.get(env) is None
    assert unregister(ledger, env) is None  # nothing kboot registered: nothing deleted
    assert snapshot(folder.parent) == before


def test_another_environments_kernel_is_refused(
    env: Path, ledger: KernelLedger, folder: Path, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere" / "jax-cpu"
    register(ledger, spec_for(other), folder)
    before = snapshot(folder)
    with pytest.raises(UsageError, match=f"kernel of the kboot environment {other}"):
        register(ledger, spec_for(env), folder)
    assert snapshot(folder) == before


def test_a_kernel_json_someone_edited_is_kept_then_deleted_with_the_environment(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    register(ledger, spec_for(env), folder)
    data = json.loads((folder / KERNEL_JSON).read_text())
    data["display_name"] = "my own name"
    (folder / KERNEL_JSON).write_text(json.dumps(data))
    before = snapshot(folder)
    assert register(ledger, spec_for(env, floatx="float16"), folder).action == "kept"
    assert snapshot(folder) == before
    status = kernel_status(ledger, env, None)
    assert status is not None and status.state.startswith("ok (its kernel.json was changed")
    gone = unregister(ledger, env)  # it still runs this environment, which is going
    assert gone is not None and gone.removed
    assert not folder.exists()


def test_a_kernel_json_repointed_elsewhere_is_left_alone(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    register(ledger, spec_for(env), folder)
    data = json.loads((folder / KERNEL_JSON).read_text())
    data["argv"][0] = "/opt/other/bin/python"
    (folder / KERNEL_JSON).write_text(json.dumps(data))
    before = snapshot(folder)
    with pytest.raises(UsageError, match="runs /opt/other/bin/python"):
        register(ledger, spec_for(env), folder)
    status = kernel_status(ledger, env, None)
    assert status is not None and status.state.startswith("not this environment's")
    gone = unregister(ledger, env)
    assert gone is not None and not gone.removed
    assert gone.note is not None and "left" in gone.note and "it is yours now" in gone.note
    assert snapshot(folder) == before
    assert ledger.get(env) is None  # kboot forgets it: it is not kboot's any more


def test_garbage_in_the_kernel_json_is_left_alone(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    register(ledger, spec_for(env), folder)
    (folder / KERNEL_JSON).write_bytes(b"\xff not json")
    before = snapshot(folder)
    with pytest.raises(UsageError, match=r"not a valid kernel\.json"):
        register(ledger, spec_for(env), folder)
    gone = unregister(ledger, env)
    assert gone is not None and not gone.removed
    assert snapshot(folder) == before


def test_a_kernelspec_deleted_by_hand_is_noted(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    register(ledger, spec_for(env), folder)
    (folder / KERNEL_JSON).unlink()
    folder.rmdir()
    status = kernel_status(ledger, env, None)
    assert status is not None and status.state.startswith("missing: deleted by hand")
    gone = unregister(ledger, env)
    assert gone is not None and not gone.removed
    assert gone.note == f"{folder} was already deleted"


def test_an_unregister_killed_after_deleting_kernel_json_is_finished_by_the_next(
    env: Path, ledger: KernelLedger, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between kboot's kernel.json going and its folder going: the ledger still
    names the folder, so the next unregister removes the (now empty) folder kboot made."""
    register(ledger, spec_for(env), folder)

    def killed(self: Path) -> None:
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rmdir", killed)
        with pytest.raises(KeyboardInterrupt):
            unregister(ledger, env)
    assert folder.is_dir() and not (folder / KERNEL_JSON).exists()
    assert ledger.get(env) is not None  # the proof stays until the work is done

    gone = unregister(ledger, env)
    assert gone is not None and gone.removed
    assert not folder.exists() and ledger.get(env) is None


def test_the_users_files_in_the_kernelspec_stay(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    register(ledger, spec_for(env), folder)
    (folder / "logo-64x64.png").write_bytes(b"\x89PNG")
    gone = unregister(ledger, env)
    assert gone is not None and gone.removed
    assert gone.note == f"kept your files in {folder}: logo-64x64.png"
    assert sorted(p.name for p in folder.iterdir()) == ["logo-64x64.png"]


def test_symlinks_are_never_written_through_or_deleted(
    env: Path, ledger: KernelLedger, folder: Path, tmp_path: Path
) -> None:
    register(ledger, spec_for(env), folder)
    # the kernel.json replaced by a link to a file of the user's
    victim = tmp_path / "notes.json"
    victim.write_bytes(spec_for(env).render())
    (folder / KERNEL_JSON).unlink()
    (folder / KERNEL_JSON).symlink_to(victim)
    with pytest.raises(UsageError, match="symlink"):
        register(ledger, spec_for(env, floatx="float16"), folder)
    gone = unregister(ledger, env)
    assert gone is not None and not gone.removed
    assert victim.read_bytes() == spec_for(env).render()
    assert (folder / KERNEL_JSON).is_symlink()

    # the folder itself replaced by a link to a folder of the user's
    env2 = tmp_path / "envs" / "other"
    other = tmp_path / "jupyter" / "kernels" / "kboot-other"
    register(ledger, spec_for(env2, name="other"), other)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / KERNEL_JSON).write_bytes(spec_for(env2, name="other").render())
    (other / KERNEL_JSON).unlink()
    other.rmdir()
    other.symlink_to(precious, target_is_directory=True)
    before = snapshot(precious)
    gone = unregister(ledger, env2)
    assert gone is not None and not gone.removed
    assert gone.note is not None and "symlink" in gone.note
    assert snapshot(precious) == before
    assert other.is_symlink()


def test_a_replaced_folder_is_not_kboots(env: Path, ledger: KernelLedger, folder: Path) -> None:
    register(ledger, spec_for(env), folder)
    theirs = folder.with_name("theirs")  # exists alongside: another inode, for sure
    theirs.mkdir()
    (theirs / KERNEL_JSON).write_bytes(spec_for(env).render())
    (folder / KERNEL_JSON).unlink()
    folder.rmdir()
    theirs.rename(folder)  # someone else's folder now, at the same path
    before = snapshot(folder)
    with pytest.raises(UsageError, match="replaced"):
        register(ledger, spec_for(env), folder)
    unregister(ledger, env)
    assert snapshot(folder) == before


def test_one_kernel_per_environment_when_jupyters_folder_moves(
    env: Path, ledger: KernelLedger, folder: Path, tmp_path: Path
) -> None:
    register(ledger, spec_for(env), folder)
    moved = {"JUPYTER_DATA_DIR": str(tmp_path / "new-jupyter")}
    # while the registered folder exists, it is refreshed where it is
    assert registry.kernelspec_folder(ledger, env, "jax-cpu", moved) == folder
    new = tmp_path / "new-jupyter" / "kernels" / "kboot-jax-cpu"
    new.mkdir(parents=True)  # someone's, in the way: refused, and the old one stays
    with pytest.raises(UsageError):
        register(ledger, spec_for(env), new)
    assert (folder / KERNEL_JSON).is_file()
    new.rmdir()
    assert register(ledger, spec_for(env), new).action == "registered"
    assert not folder.exists()
    entry = ledger.get(env)
    assert entry is not None and entry.kernelspec == new


def test_a_failed_write_leaves_no_folder_and_no_ledger_entry(
    env: Path, ledger: KernelLedger, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(path: Path, content: Any, **_: Any) -> None:
        if path.name == KERNEL_JSON:
            raise OSError(28, "No space left on device", str(path))
        real_write(path, content, **_)

    real_write = registry.atomic_write
    monkeypatch.setattr(registry, "atomic_write", no_space)
    with pytest.raises(KernelError, match="No space left on device; nothing was left there"):
        register(ledger, spec_for(env), folder)
    assert not folder.exists()
    assert ledger.get(env) is None


def test_a_ledger_others_can_write_proves_nothing(
    env: Path, ledger: KernelLedger, folder: Path
) -> None:
    register(ledger, spec_for(env), folder)
    ledger.folder.chmod(0o777)
    try:
        with pytest.raises(UntrustedPathError, match="writable by other users"):
            unregister(ledger, env)
        assert (folder / KERNEL_JSON).is_file()
    finally:
        ledger.folder.chmod(0o700)


def test_registration_reads_back(env: Path, folder: Path) -> None:
    entry = Registration(
        env, "kboot-jax-cpu", "Keras", folder, str(env / "bin/python"), "a" * 64, (1, 2)
    )
    assert parse_registration(json.loads(json.dumps(entry.to_dict())), Path("/l")) == entry
    for key, bad in [
        ("python", "/usr/bin/python"),  # outside the environment: never trusted
        ("kernelspec", "/k/other-name"),
        ("name", "jupyter-x"),
        ("sha256", "x"),
        ("environment", "relative"),
    ]:
        with pytest.raises(KernelError, match="damaged"):
            parse_registration({**entry.to_dict(), key: bad}, Path("/l"))


@FUZZ
@given(
    JSON_VALUES
    | st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            (
                "environment",
                "name",
                "display_name",
                "kernelspec",
                "python",
                "sha256",
                "folder_id",
            ),
            JSON_LEAF,
        ),
    )
)
def test_any_ledger_entry_is_a_value_or_kboots_error(data: Any) -> None:
    try:
        parse_registration(data, Path("/l.json"))
    except KernelError as exc:
        assert "/l.json" in exc.message


REGISTRATION = Registration(
    Path("/envs/x"),
    "kboot-x",
    "x (jax, float32)",
    Path("/k/kernels/kboot-x"),
    "/envs/x/bin/python",
    "0" * 64,
    (64769, 99),
).to_dict()


@FUZZ
@given(damaged(REGISTRATION, max_edits=2))
def test_a_damaged_kernel_ledger_entry_is_a_value_or_kboots_error(data: Any) -> None:
    """Nested too: the folder id pair, and each field replaced by any JSON type."""
    try:
        found = parse_registration(data, Path("/l.json"))
    except KernelError as exc:
        assert "/l.json" in exc.message
    else:
        assert parse_registration(found.to_dict(), Path("/l.json")) == found


@FUZZ
@given(raw=st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_any_ledger_file_is_a_value_or_kboots_error(raw: bytes, tmp_path: Path) -> None:
    ledger = KernelLedger(tmp_path / "fuzz-home")
    env = Path("/envs/x")
    ledger.folder.mkdir(parents=True, exist_ok=True)
    ledger.file_for(env).write_bytes(raw)
    with contextlib.suppress(KbootError):
        ledger.get(env)
    kernel_status(ledger, env, None)  # a status, never an exception
    ledger.entries()


# --- the CLI, refused before anything is built ----------------------------------------------


def test_help_teaches_with_examples() -> None:
    kernel_help = kboot("kernel", "--help")
    assert kernel_help.returncode == 0
    assert "Examples: kboot kernel jax-cpu" in kernel_help.stdout
    assert "--remove" in kernel_help.stdout
    create_help = kboot("create", "--help")
    assert "--kernel" in create_help.stdout
    assert "kboot create jax-cpu --kernel" in " ".join(create_help.stdout.split())


def test_kernel_of_an_unknown_environment(tmp_path: Path) -> None:
    proc = kboot("kernel", "nosuchenv")
    assert proc.returncode == 2
    assert "no environment 'nosuchenv'" in proc.stderr and "Traceback" not in proc.stderr


def test_offline_needs_find_links() -> None:
    proc = kboot("kernel", "numpy", "--offline")
    assert proc.returncode == 2
    assert "--offline needs --find-links DIR" in proc.stderr


def test_create_refuses_a_foreign_kernelspec_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    foreign = tmp_path / "jupyter" / "kernels" / "kboot-numpy"
    foreign.mkdir(parents=True)
    (foreign / KERNEL_JSON).write_text('{"argv": ["python3"], "display_name": "mine"}')
    before = snapshot(foreign)
    proc = kboot("create", "numpy", "--kernel", "--json")
    assert proc.returncode == 2, proc.stderr
    assert "is not a Jupyter kernel kboot registered" in proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == 2
    assert snapshot(foreign) == before
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()  # nothing was built


# --- real environments, real notebooks ------------------------------------------------------


NOTEBOOK_CODE = (
    "import json, os, keras\n"
    "print(json.dumps({'backend': keras.config.backend(), 'floatx': keras.config.floatx(),"
    " 'image_data_format': keras.config.image_data_format(),"
    " 'keras_home': os.environ.get('KERAS_HOME')}))"
)


def run_notebook(kernel: str) -> dict[str, Any]:
    """Execute a one-cell notebook headless on `kernel`; what it printed, as JSON."""
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell(NOTEBOOK_CODE))
    nbclient.NotebookClient(notebook, kernel_name=kernel, timeout=300).execute()
    text = "".join(out.get("text", "") for out in notebook.cells[0].outputs)
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


@pytest.fixture
def conflicting_shell(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user whose ~/.keras/keras.json and shell both say otherwise than the profile."""
    user_json = isolated / ".keras" / "keras.json"
    user_json.parent.mkdir()
    user_json.write_text(
        json.dumps(
            {
                "backend": "tensorflow",
                "floatx": "float16",
                "image_data_format": "channels_first",
                "epsilon": 1e-07,
            }
        )
    )
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    return user_json


@pytest.mark.integration
def test_create_with_kernel_runs_a_notebook_with_the_environments_config(
    tmp_path: Path, conflicting_shell: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))
    user_json_before = conflicting_shell.read_bytes()
    data = created(kboot("create", "numpy", "--kernel", "--json"))
    env = Path(data["path"])
    kernelspec = tmp_path / "jupyter" / "kernels" / "kboot-numpy"
    assert data["kernel"]["name"] == "kboot-numpy"
    assert data["kernel"]["display_name"] == "Keras · numpy · float32"
    assert data["kernel"]["kernelspec"] == str(kernelspec)
    assert data["kernel"]["action"] == "registered"
    assert "ipykernel" in data["packages"]

    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().find_kernel_specs()["kboot-numpy"] == str(kernelspec)
    assert run_notebook("kboot-numpy") == {
        "backend": "numpy",
        "floatx": "float32",
        "image_data_format": "channels_last",
        "keras_home": str(env / "keras-home"),
    }
    assert conflicting_shell.read_bytes() == user_json_before

    listed = json.loads(kboot("list", "--json").stdout)
    assert listed[0]["kernel"] == {
        "name": "kboot-numpy",
        "display_name": "Keras · numpy · float32",
        "kernelspec": str(kernelspec),
        "state": "ok",
    }
    assert "kboot-numpy" in kboot("list").stdout

    # the kernel's packages are not drift: a re-create changes nothing and keeps it
    again = created(kboot("create", "numpy", "--json"))
    assert (again["action"], again["changed"]) == ("unchanged", False)
    assert again["kernel"]["action"] == "unchanged"
    check = kboot("check", "numpy", "--json")
    assert check.returncode == 0, check.stdout + check.stderr

    # a rebuild keeps ipykernel and the kernel
    kernel_json = (kernelspec / KERNEL_JSON).read_bytes()
    rebuilt = created(kboot("create", "numpy", "--force", "--json"))
    assert rebuilt["action"] == "rebuilt"
    assert "ipykernel" in rebuilt["packages"]
    assert rebuilt["kernel"]["action"] == "unchanged"
    assert (kernelspec / KERNEL_JSON).read_bytes() == kernel_json

    removed = kboot("remove", "numpy", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["kernel"] == {
        "name": "kboot-numpy",
        "kernelspec": str(kernelspec),
        "removed": True,
        "note": None,
    }
    assert not kernelspec.exists()
    assert "kboot-numpy" not in KernelSpecManager().find_kernel_specs()


@pytest.mark.integration
def test_kernel_for_an_existing_environment(tmp_path: Path, conflicting_shell: Path) -> None:
    """`kboot kernel ENV` (pip this time) into Jupyter's default folder under the isolated
    home; then someone edits the kernelspec, and kboot keeps its hands off what is theirs."""
    env = Path(created(kboot("create", "numpy", "--json"))["path"])
    kernelspec = Path(os.environ["XDG_DATA_HOME"]) / "jupyter" / "kernels" / "kboot-numpy"

    empty = tmp_path / "no-wheels"
    empty.mkdir()
    offline = kboot("kernel", "numpy", "--offline", "--find-links", str(empty))
    assert offline.returncode == 1
    assert "installing ipykernel into" in offline.stderr
    assert "pip download ipykernel -d DIR" in offline.stderr
    assert not kernelspec.parent.exists()  # nothing registered

    proc = kboot("kernel", "numpy", "--installer", "pip", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["action"], data["changed"]) == ("registered", True)
    assert "ipykernel" in data["installed"]
    assert data["kernel"]["kernelspec"] == str(kernelspec)
    assert "install ipykernel (pip)" in proc.stderr
    assert run_notebook("kboot-numpy")["backend"] == "numpy"

    again = json.loads(kboot("kernel", "numpy", "--json").stdout)
    assert (again["action"], again["installed"]) == ("unchanged", {})
    unchanged = created(kboot("create", "numpy", "--json"))
    assert (unchanged["action"], unchanged["kernel"]["action"]) == ("unchanged", "unchanged")
    assert kboot("check", "numpy").returncode == 0

    # someone renames it in the launcher: kboot leaves their kernel.json as it is
    edited = json.loads((kernelspec / KERNEL_JSON).read_text())
    edited["display_name"] = "my numpy"
    (kernelspec / KERNEL_JSON).write_text(json.dumps(edited))
    kept = kboot("kernel", "numpy", "--json")
    assert json.loads(kept.stdout)["action"] == "kept"
    assert "changed by someone after kboot wrote it" in kept.stderr
    assert json.loads((kernelspec / KERNEL_JSON).read_text())["display_name"] == "my numpy"

    # --remove unregisters it (it still runs this environment), and re-creates respect that
    removed = json.loads(kboot("kernel", "numpy", "--remove", "--json").stdout)
    assert (removed["action"], removed["removed"]["removed"]) == ("unregistered", True)
    assert not kernelspec.exists()
    assert created(kboot("create", "numpy", "--json"))["kernel"] is None
    assert json.loads(kboot("list", "--json").stdout)[0]["kernel"] is None
    # registered again: ipykernel is there already
    assert json.loads(kboot("kernel", "numpy", "--json").stdout)["installed"] == {}
    # what the ipykernel install made in the environment (share/) is kboot's: it all goes
    assert kboot("remove", "numpy").returncode == 0
    assert not env.exists() and not kernelspec.exists()


@pytest.mark.integration
def test_a_kernelspec_someone_pointed_elsewhere_is_theirs() -> None:
    env = Path(created(kboot("create", "numpy", "--kernel", "--json"))["path"])
    kernelspec = Path(os.environ["XDG_DATA_HOME"]) / "jupyter" / "kernels" / "kboot-numpy"
    repointed = json.loads((kernelspec / KERNEL_JSON).read_text())
    repointed["argv"][0] = sys.executable
    (kernelspec / KERNEL_JSON).write_text(json.dumps(repointed))
    before = snapshot(kernelspec)
    refused = kboot("kernel", "numpy")
    assert refused.returncode == 2
    assert f"runs {sys.executable}, not this environment's python" in refused.stderr
    assert kboot("create", "numpy", "--kernel").returncode == 2
    resync = kboot("create", "numpy", "--json")  # a re-create (a sync) goes on without it
    assert json.loads(resync.stdout)["kernel"] is None, resync.stderr
    assert "not keeping its Jupyter kernel" in resync.stderr
    assert snapshot(kernelspec) == before
    gone = kboot("remove", "numpy")
    assert gone.returncode == 0, gone.stderr
    assert f"left {kernelspec} as it is" in gone.stdout
    assert snapshot(kernelspec) == before
    assert not env.exists()


@pytest.mark.integration
def test_a_lock_without_ipykernel_is_refused_before_building(tmp_path: Path) -> None:
    lock = tmp_path / "numpy.lock"
    made = kboot("lock", "numpy", "-o", str(lock))
    assert made.returncode == 0, made.stderr
    proc = kboot("create", "numpy", "--lock", str(lock), "--kernel")
    assert proc.returncode == 2
    assert "ipykernel is not in it" in proc.stderr
    assert 'add "ipykernel" to the packages of profile numpy' in proc.stderr
    assert not (tmp_path / "kboot-home" / "envs" / "numpy").exists()


@pytest.mark.integration
def test_a_manifest_entry_with_kernel_true_keeps_the_kernel_registered(tmp_path: Path) -> None:
    """`kernel = true` in a sync manifest: registered by sync, its absence is a difference
    for `sync --check`, and the next sync registers it again."""
    manifest = tmp_path / "lab.toml"
    manifest.write_text('[[env]]\nname = "lab-numpy"\nprofile = "numpy"\nkernel = true\n')
    kernelspec = Path(os.environ["XDG_DATA_HOME"]) / "jupyter" / "kernels" / "kboot-lab-numpy"

    proc = kboot("sync", str(manifest), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["environments"][0]["status"] == "created"
    assert json.loads((kernelspec / KERNEL_JSON).read_text())["display_name"] == (
        "Keras · lab-numpy (numpy) · float32"
    )
    assert kboot("sync", str(manifest), "--check").returncode == 0

    shutil.rmtree(kernelspec)  # someone deletes it by hand
    checked = kboot("check", "lab-numpy")  # the environment itself works: a warning
    assert checked.returncode == 0, checked.stderr
    assert "its Jupyter kernel kboot-lab-numpy: missing: deleted by hand" in checked.stderr
    check = kboot("sync", str(manifest), "--check", "--json")
    assert check.returncode == 1
    [entry] = json.loads(check.stdout)["environments"]
    assert entry["status"] == "differs" and "Jupyter kernel" in entry["detail"], entry

    again = kboot("sync", str(manifest), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is True
    assert (kernelspec / KERNEL_JSON).is_file()
    assert kboot("sync", str(manifest), "--check").returncode == 0


def test_a_manifest_kernel_key_must_be_true_or_false(tmp_path: Path) -> None:
    manifest = tmp_path / "lab.toml"
    manifest.write_text('[[env]]\nname = "lab"\nprofile = "numpy"\nkernel = "yes"\n')
    proc = kboot("sync", str(manifest), "--check")
    assert proc.returncode == 2
    assert "'kernel' must be true or false" in proc.stderr
