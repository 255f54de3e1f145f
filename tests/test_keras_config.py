"""keras.json: read, validate, merge (foreign keys kept), atomic write with backup, rollback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bootstrap.envs.lifecycle import restore_edits
from bootstrap.profiles.keras_json import (
    KERAS_DEFAULTS,
    describe_config,
    is_module_path,
    merge_keras_json,
    parse_assignments,
    read_keras_json,
)
from bootstrap.state.ledger import Edit
from bootstrap.system.errors import ConfigError, UsageError

MALFORMED = b'{\n    "floatx": "float32",\n    "backend": "jax",\n'  # truncated


@pytest.fixture
def kjson(tmp_path: Path) -> Path:
    home = tmp_path / "keras-home"
    home.mkdir()
    return home / "keras.json"


# --- read_keras_json -------------------------------------------------------------------------


def test_read_missing_is_none(kjson: Path) -> None:
    assert read_keras_json(kjson) is None


def test_read_valid(kjson: Path) -> None:
    kjson.write_text('{"backend": "jax", "floatx": "float16"}', encoding="utf-8")
    assert read_keras_json(kjson) == {"backend": "jax", "floatx": "float16"}


def test_read_malformed_is_an_error_and_leaves_the_file(kjson: Path) -> None:
    kjson.write_bytes(MALFORMED)
    with pytest.raises(ConfigError) as info:
        read_keras_json(kjson)
    assert str(kjson) in info.value.message
    assert "not valid JSON" in info.value.message
    assert info.value.hint is not None and "left it unchanged" in info.value.hint
    assert kjson.read_bytes() == MALFORMED


@pytest.mark.parametrize("text", ["[]", '"jax"', "3", "null"])
def test_read_non_object_is_an_error(kjson: Path, text: str) -> None:
    kjson.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="not an object"):
        read_keras_json(kjson)
    assert kjson.read_text(encoding="utf-8") == text


def test_read_directory_is_an_error(kjson: Path) -> None:
    kjson.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        read_keras_json(kjson)


def test_read_not_utf8_is_an_error(kjson: Path) -> None:
    kjson.write_bytes(b'{"backend": "caf\xe9"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_keras_json(kjson)


# --- merge_keras_json ------------------------------------------------------------------------


def test_merge_creates_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "new-home" / "keras.json"  # the folder does not exist yet
    result = merge_keras_json(target, {"backend": "jax", "epsilon": 1e-07})
    assert result.changed is True
    assert result.backup is None
    assert result.previous is None
    assert json.loads(target.read_text(encoding="utf-8")) == {"backend": "jax", "epsilon": 1e-07}
    assert not target.with_name("keras.json.bak").exists()
    assert [p.name for p in target.parent.iterdir()] == ["keras.json"]  # no temp file left


def test_merge_keeps_foreign_keys_and_writes_a_backup(kjson: Path) -> None:
    before = (
        '{"backend": "tensorflow", "floatx": "float32", "nnx_enabled": false, '
        '"my_tool": {"x": [1, 2]}}'
    )
    kjson.write_text(before, encoding="utf-8")
    result = merge_keras_json(kjson, {"backend": "jax", "floatx": "float64"})
    assert result.changed is True
    assert result.backup == kjson.with_name("keras.json.bak")
    assert result.backup.read_text(encoding="utf-8") == before
    assert result.previous == before.encode("utf-8")
    assert json.loads(kjson.read_text(encoding="utf-8")) == {
        "backend": "jax",
        "floatx": "float64",
        "nnx_enabled": False,
        "my_tool": {"x": [1, 2]},
    }


def test_merge_without_backup(kjson: Path) -> None:
    kjson.write_text('{"backend": "jax"}', encoding="utf-8")
    result = merge_keras_json(kjson, {"backend": "torch"}, backup=False)
    assert result.changed and result.backup is None
    assert not kjson.with_name("keras.json.bak").exists()


@pytest.mark.parametrize("value", [1.0, 1e-07])
def test_epsilon_is_written_as_a_json_float(kjson: Path, value: float) -> None:
    merge_keras_json(kjson, {"epsilon": value})
    text = kjson.read_text(encoding="utf-8")
    data = json.loads(text)
    assert isinstance(data["epsilon"], float)  # Keras asserts isinstance(epsilon, float)
    assert data["epsilon"] == value


def test_integer_epsilon_in_the_file_is_rewritten_as_float(kjson: Path) -> None:
    """An integer epsilon makes Keras fail at import; setting 1.0 must fix the file.

    1 == 1.0 in Python, so a merge that compares dicts with == believes nothing changed.
    """
    kjson.write_text('{"epsilon": 1, "backend": "jax"}', encoding="utf-8")
    result = merge_keras_json(kjson, {"epsilon": 1.0})
    data = json.loads(kjson.read_text(encoding="utf-8"))
    assert isinstance(data["epsilon"], float), "epsilon left as a JSON integer"
    assert result.changed is True


def test_unchanged_merge_reports_changed_false_and_does_not_touch(kjson: Path) -> None:
    before = '{"backend":"jax",   "floatx":"float32", "other": 1}'
    kjson.write_text(before, encoding="utf-8")
    mtime = kjson.stat().st_mtime_ns
    result = merge_keras_json(kjson, {"backend": "jax", "floatx": "float32"})
    assert result.changed is False
    assert result.backup is None
    assert kjson.read_text(encoding="utf-8") == before  # not even reformatted
    assert kjson.stat().st_mtime_ns == mtime
    assert not kjson.with_name("keras.json.bak").exists()


def test_merge_refuses_a_malformed_file(kjson: Path) -> None:
    kjson.write_bytes(MALFORMED)
    with pytest.raises(ConfigError, match="not valid JSON"):
        merge_keras_json(kjson, {"backend": "jax"})
    assert kjson.read_bytes() == MALFORMED
    assert sorted(p.name for p in kjson.parent.iterdir()) == ["keras.json"]


def test_merge_refuses_a_non_utf8_file_with_a_config_error(kjson: Path) -> None:
    before = b'{"backend": "jax", "note": "caf\xe9"}'
    kjson.write_bytes(before)
    with pytest.raises(ConfigError, match="UTF-8"):
        merge_keras_json(kjson, {"backend": "torch"})
    assert kjson.read_bytes() == before


def test_merge_keeps_the_file_mode(kjson: Path) -> None:
    kjson.write_text("{}", encoding="utf-8")
    kjson.chmod(0o640)
    merge_keras_json(kjson, {"backend": "jax"})
    assert kjson.stat().st_mode & 0o777 == 0o640


def test_unwritable_location_is_a_config_error(tmp_path: Path) -> None:
    # We run as root, where chmod does not stop writes: a *file* where the folder
    # should be provokes the OSError instead.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    target = blocker / "keras.json"
    with pytest.raises(ConfigError) as info:
        merge_keras_json(target, {"backend": "jax"})
    assert str(target) in info.value.message
    assert blocker.read_text(encoding="utf-8") == "x"


def test_unwritable_nested_location_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError):
        merge_keras_json(blocker / "sub" / "keras.json", {"backend": "jax"})


# --- journaled writes and their restore (what a rollback does) ------------------------------


def journaled_merge(path: Path, updates: dict[str, Any]) -> list[Edit]:
    """merge_keras_json with a journal, as a build records it before each write."""
    edits: list[Edit] = []

    def before_write(target: Path, before: bytes | None, after: bytes) -> None:
        text = before.decode("utf-8", errors="surrogateescape") if before is not None else None
        edits.append(Edit(target, text, hashlib.sha256(after).hexdigest()))

    merge_keras_json(path, updates, before_write=before_write)
    return edits


def test_restore_puts_back_the_exact_previous_bytes(kjson: Path) -> None:
    before = '{\n  "backend": "tensorflow",\n  "custom": "\u00e9t\u00e9"\n}'  # no final newline
    kjson.write_text(before, encoding="utf-8")
    raw = kjson.read_bytes()
    edits = journaled_merge(kjson, {"backend": "jax"})
    assert kjson.read_bytes() != raw
    assert restore_edits(edits) == []
    assert kjson.read_bytes() == raw
    assert not kjson.with_name("keras.json.bak").exists(), "the backup it made is undone too"


def test_restore_keeps_crlf_line_endings(kjson: Path) -> None:
    """A keras.json written on Windows (CRLF) must come back byte for byte."""
    raw = b'{\r\n    "backend": "tensorflow"\r\n}\r\n'
    kjson.write_bytes(raw)
    restore_edits(journaled_merge(kjson, {"backend": "jax"}))
    assert kjson.read_bytes() == raw


def test_restore_deletes_a_file_that_did_not_exist(kjson: Path) -> None:
    edits = journaled_merge(kjson, {"backend": "jax"})
    assert kjson.exists()
    restore_edits(edits)
    assert not kjson.exists()
    restore_edits(edits)  # twice is harmless
    assert not kjson.exists()


def test_restore_leaves_a_file_changed_since(kjson: Path) -> None:
    """Recovery after a kill: a keras.json the user edited meanwhile is theirs now."""
    kjson.write_text('{"backend": "tensorflow"}', encoding="utf-8")
    edits = journaled_merge(kjson, {"backend": "jax"})
    kjson.write_text('{"backend": "torch"}', encoding="utf-8")
    notes = restore_edits(edits)
    assert kjson.read_text(encoding="utf-8") == '{"backend": "torch"}'
    assert any("changed after kboot wrote it" in note for note in notes)


def test_a_symlink_planted_at_the_backup_is_replaced_not_followed(
    kjson: Path, tmp_path: Path
) -> None:
    """Defect 7: a shared Keras home where someone links keras.json.bak to a victim file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    kjson.write_text('{"backend": "tensorflow"}', encoding="utf-8")
    kjson.with_name("keras.json.bak").symlink_to(victim)
    merge_keras_json(kjson, {"backend": "jax"})
    assert victim.read_text(encoding="utf-8") == "precious"
    backup = kjson.with_name("keras.json.bak")
    assert not backup.is_symlink()
    assert json.loads(backup.read_text(encoding="utf-8")) == {"backend": "tensorflow"}


def test_the_users_own_symlinked_keras_json_is_updated_where_it_points(
    kjson: Path, tmp_path: Path
) -> None:
    """A dotfiles setup: ~/.keras/keras.json -> ~/dotfiles/keras.json stays a link."""
    real = tmp_path / "dotfiles" / "keras.json"
    real.parent.mkdir()
    real.write_text('{"backend": "tensorflow", "mine": 1}', encoding="utf-8")
    kjson.symlink_to(real)
    merge_keras_json(kjson, {"backend": "jax"})
    assert kjson.is_symlink()
    assert json.loads(real.read_text(encoding="utf-8")) == {"backend": "jax", "mine": 1}


# --- parse_assignments -----------------------------------------------------------------------


def test_parse_assignments_types_the_values() -> None:
    values = parse_assignments(
        [
            "backend=jax",
            " floatx = float64 ",
            "image_data_format=channels_first",
            "epsilon=1e-05",
            "nnx_enabled=True",
        ]
    )
    assert values == {
        "backend": "jax",
        "floatx": "float64",
        "image_data_format": "channels_first",
        "epsilon": 1e-05,
        "nnx_enabled": True,
    }


def test_integer_epsilon_becomes_a_float() -> None:
    values = parse_assignments(["epsilon=1"])
    assert values["epsilon"] == 1.0
    assert isinstance(values["epsilon"], float)


@pytest.mark.parametrize("backend", ["theano", "cntk", "my_pkg.my_backend", "openvino"])
def test_keras2_and_module_backends_are_accepted(backend: str) -> None:
    assert parse_assignments([f"backend={backend}"]) == {"backend": backend}


def test_is_module_path() -> None:
    assert is_module_path("a.b")
    assert not is_module_path("jax")
    assert not is_module_path("a..b")
    assert not is_module_path("1a.b")


@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        ("flaotx=float64", "unknown keras.json key 'flaotx'"),
        ("floatx=float8", "floatx='float8' is not allowed"),
        ("image_data_format=nchw", "image_data_format='nchw' is not allowed"),
        ("backend=jaxx", "not a Keras backend"),
        ("epsilon=0", "not a positive number"),
        ("epsilon=-1e-7", "not a positive number"),
        ("epsilon=abc", "not a positive number"),
        ("epsilon=nan", "not a positive number"),
        ("epsilon=inf", "not a positive number"),
        ("nnx_enabled=maybe", "nnx_enabled='maybe' is not allowed"),
        ("floatx", "is not KEY=VALUE"),
        ("=float64", "is not KEY=VALUE"),
    ],
)
def test_parse_assignments_rejects(pair: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_assignments([pair])
    assert fragment in info.value.message


def test_parse_assignments_needs_something() -> None:
    with pytest.raises(UsageError, match="nothing to set"):
        parse_assignments([])


# --- describe_config -------------------------------------------------------------------------


def test_describe_missing_file_reports_defaults(tmp_path: Path) -> None:
    view = describe_config(tmp_path, "default", {})
    assert view.exists is False
    assert view.path == tmp_path / "keras.json"
    assert dict(view.effective) == dict(KERAS_DEFAULTS)
    assert view.overrides == ()


def test_describe_reports_the_keras_backend_override(kjson: Path) -> None:
    kjson.write_text('{"backend": "jax", "floatx": "float16"}', encoding="utf-8")
    view = describe_config(kjson.parent, "--keras-home", {"KERAS_BACKEND": "torch"})
    assert view.exists is True
    assert view.file_values == {"backend": "jax", "floatx": "float16"}
    assert view.effective["backend"] == "torch"
    assert view.effective["floatx"] == "float16"
    assert view.effective["epsilon"] == KERAS_DEFAULTS["epsilon"]
    assert len(view.overrides) == 1
    assert "KERAS_BACKEND=torch" in view.overrides[0] and "'jax'" in view.overrides[0]
    data = view.to_dict()
    assert data["keras_home_source"] == "--keras-home"
    assert data["overrides"] == list(view.overrides)
    json.dumps(data)  # serialisable


def test_describe_malformed_file_flags_it(kjson: Path) -> None:
    kjson.write_bytes(MALFORMED)
    view = describe_config(kjson.parent, "default", {})
    assert view.exists and view.invalid and "not valid JSON" in view.invalid
    assert view.file_values == {} and view.effective["floatx"] == "float32"  # defaults
