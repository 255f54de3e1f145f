"""Everything kboot reads from disk becomes a value or kboot's own error, never another
exception (property-based: profiles, manifests, keras.json; locks, records and the
ledger have theirs beside their other tests)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.fleet.sync import ENTRY_KEYS, load_manifest
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.catalog import load_profile
from bootstrap.profiles.keras_json import read_keras_json
from bootstrap.profiles.model import KNOWN_KEYS, Profile, parse_profile
from bootstrap.system.errors import KbootError

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["numpy", "jax", "float64", "==3.0.5", ">=2", "my.mod", "[/]", "\0"])
)
VALUES = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.dictionaries(st.sampled_from([*KNOWN_KEYS, "flaotx"]), VALUES, max_size=8))
def test_any_profile_table_is_a_profile_or_a_profile_error(data: dict[str, Any]) -> None:
    try:
        profile = parse_profile(data, path=Path("/p/x.toml"), name="x")
    except KbootError as exc:
        assert exc.exit_code == 2 and "/p/x.toml" in exc.message
    else:
        assert isinstance(profile, Profile)
        profile.digest()  # and what kboot computes from it works too
        profile.to_dict()


def toml_like(tmp_path: Path, raw: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_profile_file_is_a_profile_or_a_profile_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = toml_like(tmp_path_factory.mktemp("p"), raw, "x.toml")
    with contextlib.suppress(KbootError):
        load_profile(path)


ENTRY = st.dictionaries(st.sampled_from([*ENTRY_KEYS, "nmae"]), VALUES, max_size=6)


def toml_value(value: object) -> str:  # noqa: PLR0911  # one TOML type a line
    """A tiny TOML writer for the fuzzer (strings, numbers, booleans, arrays, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items() if v is not None)
            + "}"
        )
    return '""'


@FUZZ
@given(st.lists(ENTRY, max_size=3), st.sampled_from(["lock", "download", "sync"]))
def test_any_manifest_is_entries_or_a_manifest_error(
    tmp_path_factory: pytest.TempPathFactory, entries: list[dict[str, Any]], stage: str
) -> None:
    folder = tmp_path_factory.mktemp("m")
    text = "".join(
        "[[env]]\n" + "".join(f'"{k}" = {toml_value(v)}\n' for k, v in e.items() if v is not None)
        for e in entries
    )
    path = toml_like(folder, text.encode(), "lab.toml")
    try:
        load_manifest(path, stage=stage)  # each command reads it: lock, download, sync
    except KbootError as exc:
        assert exc.exit_code == 2


@FUZZ
@given(st.binary(max_size=200))
def test_any_manifest_bytes_are_entries_or_a_manifest_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = toml_like(tmp_path_factory.mktemp("m"), raw, "lab.toml")
    with contextlib.suppress(KbootError):
        load_manifest(path)


@FUZZ
@given(st.binary(max_size=200) | VALUES.map(lambda v: repr(v).encode()))
def test_any_keras_json_is_a_dict_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = toml_like(tmp_path_factory.mktemp("k"), raw, "keras.json")
    try:
        data = read_keras_json(path)
    except KbootError:
        return
    assert data is None or isinstance(data, dict)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.toml", "backend = " + "[" * 5000 + "]" * 5000 + "\n"),
        ("eps.toml", 'backend = "numpy"\npackages = ["numpy"]\nepsilon = 1' + "0" * 400 + "\n"),
        ("desc.toml", 'backend = "numpy"\npackages = ["numpy"]\ndescription = "[/]"\n'),
    ],
)
def test_what_fuzzing_found_is_a_plain_answer(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(KbootError):
        load_profile(path)


def test_deep_json_in_keras_json_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keras.json"
    path.write_text("[" * 100000 + "]" * 100000, encoding="utf-8")
    with pytest.raises(KbootError):
        read_keras_json(path)


# --- pyvenv.cfg: an environment's own description of its Python ------------------------------

CFG_VERSIONS = (
    st.text(max_size=12)
    | st.from_regex(r"[0-9\u0660-\u0669]{1,6}(\.[0-9a-z\u0660-\u0669]{0,6}){0,4}", fullmatch=True)
    | st.sampled_from(["3.11.7.final.0", "3", "3.", ".11", "x.y", "3.x", "99999999999999999999.1"])
)


@FUZZ
@given(
    raw=st.binary(max_size=200)
    | st.builds(
        lambda key, version, rest: f"home = /usr/bin\n{key} = {version}\n{rest}".encode(
            "utf-8", "surrogatepass"
        ),
        st.sampled_from(["version_info", "version", "python-version"]),
        CFG_VERSIONS,
        st.text(max_size=30),
    )
)
def test_any_pyvenv_cfg_opens_or_is_kboots_error(
    raw: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A version that is not a number once ended in `int()`'s ValueError: an internal error."""
    root = tmp_path_factory.mktemp("env")
    (root / "pyvenv.cfg").write_bytes(raw)
    try:
        env = VirtualEnv.open(root, platform="linux")
    except KbootError as exc:
        assert str(root) in exc.message
    else:
        assert env.version is not None and all(isinstance(n, int) for n in env.version)


@pytest.mark.parametrize("version", ["3.x", "x.11", "\u0663.\u0661\u0661", "3", "3.11\u00b2"])
def test_a_pyvenv_cfg_version_that_is_not_a_number_names_the_file(
    version: str, tmp_path: Path
) -> None:
    (tmp_path / "pyvenv.cfg").write_text(f"version_info = {version}\n", encoding="utf-8")
    with pytest.raises(KbootError, match=r"pyvenv\.cfg is damaged"):
        VirtualEnv.open(tmp_path, platform="linux")
