"""Profile loading and validation: every error names the file, the key and the bad value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bootstrap.profiles.catalog import list_profiles, load_profile, resolve_profile
from bootstrap.profiles.model import (
    KERAS2_BACKENDS,
    KERAS3_BACKENDS,
    Profile,
    Sources,
)
from bootstrap.system.errors import ProfileError
from bootstrap.system.paths import builtin_profiles_dir
from helpers import BUILTIN_NAMES

BUILTINS = builtin_profiles_dir()
MINIMAL = 'backend = "numpy"\npackages = ["numpy"]\n'


# --- built-in profiles ---------------------------------------------------------------------


def test_builtin_folder_holds_the_expected_profiles() -> None:
    assert {p.stem for p in BUILTINS.glob("*.toml")} == BUILTIN_NAMES


@pytest.mark.parametrize("path", sorted(BUILTINS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_builtin_profile_loads(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.path == path
    if profile.generation == 3:
        assert profile.backend in KERAS3_BACKENDS
    else:
        assert profile.backend in KERAS2_BACKENDS or "." in profile.backend
    assert profile.description
    assert profile.requirements()[0].startswith(profile.keras_package)
    # The name says the build: -gpu profiles ask for CUDA, -cpu ones for the CPU build
    if path.stem.endswith("-gpu"):
        assert profile.accelerator == "cuda"
    elif path.stem.endswith("-cpu"):
        assert profile.accelerator == "cpu" or profile.backend not in ("jax", "torch")
    assert profile.gpu is False  # a CUDA choice sets it when the machine is known


def test_minimal_profile_gets_the_defaults(write_profile) -> None:  # type: ignore[no-untyped-def]
    profile = load_profile(write_profile("mini", MINIMAL))
    assert profile.name == "mini"
    assert profile.floatx == "float32"
    assert profile.image_data_format == "channels_last"
    assert profile.epsilon == 1e-07
    assert isinstance(profile.epsilon, float)
    assert profile.python == ">=3.10"
    assert profile.keras == ">=3,<4"
    assert profile.packages == ("numpy",)
    assert profile.gpu is False
    assert profile.sources == Sources()
    assert profile.requirements() == ("keras>=3,<4", "numpy")
    assert profile.keras_config() == {
        "backend": "numpy",
        "floatx": "float32",
        "image_data_format": "channels_last",
        "epsilon": 1e-07,
    }


def test_full_profile_values_are_kept(write_profile) -> None:  # type: ignore[no-untyped-def]
    text = (
        'description = "d"\nbackend = "jax"\nfloatx = "float64"\n'
        'image_data_format = "channels_first"\nepsilon = 1\npython = " >=3.11 "\n'
        'keras = "==3.8.*"\npackages = ["jax[cpu]>=0.4"]\ngpu = true\n'
        'index_url = "https://mirror/simple"\nextra_index_urls = ["https://x/simple"]\n'
        'find_links = ["/wheels"]\n'
    )
    profile = load_profile(write_profile("full", text))
    assert profile.backend == "jax"
    assert profile.floatx == "float64"
    assert profile.image_data_format == "channels_first"
    assert profile.epsilon == 1.0 and isinstance(profile.epsilon, float)
    assert profile.python == ">=3.11"
    assert profile.keras == "==3.8.*"
    assert profile.gpu is True
    assert profile.sources == Sources("https://mirror/simple", ("https://x/simple",), ("/wheels",))
    assert profile.requirements() == ("keras==3.8.*", "jax[cpu]>=0.4")


@pytest.mark.parametrize("provider", ["tensorflow-cpu", "tf-nightly", "tensorflow[and-cuda]>=2.16"])
def test_any_tensorflow_distribution_provides_the_backend(write_profile, provider) -> None:  # type: ignore[no-untyped-def]
    profile = load_profile(
        write_profile("tf", f'backend = "tensorflow"\npackages = ["{provider}"]\n')
    )
    assert profile.backend == "tensorflow"


# --- validation errors -----------------------------------------------------------------------


def _error(write_profile, text: str) -> ProfileError:  # type: ignore[no-untyped-def]
    path = write_profile("bad", text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(path) in info.value.message, "every profile error names the file"
    return info.value


def test_unknown_key_suggests_the_close_one(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + 'flaotx = "float64"\n')
    assert "unknown key 'flaotx'" in err.message
    assert err.hint == "did you mean 'floatx'?"


def test_unknown_key_without_close_match_has_no_suggestion(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + "zzzzzz = 1\n")
    assert "unknown key 'zzzzzz'" in err.message
    assert err.hint is None


def test_missing_backend(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, 'packages = ["numpy"]\n')
    assert "missing required key 'backend'" in err.message
    for backend in KERAS3_BACKENDS:
        assert backend in err.message


def test_bad_backend_suggests(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, 'backend = "jaxx"\npackages = ["jax"]\n')
    assert "key 'backend'" in err.message and "'jaxx'" in err.message
    assert err.hint == "did you mean 'jax'?"


def test_keras2_backend_is_refused(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, 'backend = "theano"\npackages = ["theano"]\n')
    assert "key 'backend'" in err.message and "'theano'" in err.message


def test_non_string_backend(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, 'backend = 3\npackages = ["numpy"]\n')
    assert "key 'backend' has invalid value 3" in err.message


@pytest.mark.parametrize("value", ['"float8"', '"Float32"', "32"])
def test_bad_floatx(write_profile, value: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + f"floatx = {value}\n")
    assert "key 'floatx'" in err.message
    assert "float16, float32, float64" in err.message


def test_bad_image_data_format(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + 'image_data_format = "channel_last"\n')
    assert "key 'image_data_format'" in err.message
    assert err.hint == "did you mean 'channels_last'?"


@pytest.mark.parametrize("value", ['"1e-7"', "0", "0.0", "-1e-07", "true", "false", "inf", "nan"])
def test_bad_epsilon(write_profile, value: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + f"epsilon = {value}\n")
    assert "key 'epsilon' has invalid value" in err.message
    assert "positive" in err.message


@pytest.mark.parametrize(
    ("key", "value"),
    [("python", '">=three"'), ("python", "3.12"), ("keras", '"3.8"'), ("keras", '"=>3"')],
)
def test_bad_specifier(write_profile, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + f"{key} = {value}\n")
    assert f"key '{key}' has invalid value" in err.message
    assert "specifier" in err.message


@pytest.mark.parametrize("value", ['["numpy", "not a requirement!"]', '"numpy"', '["numpy", 3]'])
def test_bad_packages(write_profile, value: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, f'backend = "numpy"\npackages = {value}\n')
    assert "key 'packages' has invalid value" in err.message


def test_bad_requirement_hint_explains(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, 'backend = "numpy"\npackages = ["numpy", "jax[cpu>=0.4"]\n')
    assert "'jax[cpu>=0.4'" in err.message
    assert err.hint  # packaging's own explanation


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gpu", '"yes"'),
        ("gpu", "1"),
        ("index_url", "1"),
        ("find_links", '"/w"'),
        ("extra_index_urls", "[1]"),
        ("description", "[]"),
    ],
)
def test_bad_types(write_profile, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, MINIMAL + f"{key} = {value}\n")
    assert f"key '{key}' has invalid value" in err.message


def test_invalid_toml_names_the_file(write_profile) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, 'backend = "numpy"\npackages = ["numpy"\n')
    assert "invalid TOML" in err.message
    assert err.hint and "kboot show numpy" in err.hint


def test_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b'description = "caf\xe9"\nbackend = "numpy"\npackages = ["numpy"]\n')
    with pytest.raises(ProfileError, match="not UTF-8") as info:
        load_profile(path)
    assert str(path) in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")


@pytest.mark.parametrize("keras", ["keras", "Keras>=3", "keras[all]"])
def test_keras_in_packages_is_refused(write_profile, keras: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, f'backend = "numpy"\npackages = ["numpy", "{keras}"]\n')
    assert "lists keras" in err.message
    assert err.hint and "keras =" in err.hint


@pytest.mark.parametrize(
    ("backend", "packages", "needed"),
    [
        ("jax", '["numpy"]', "jax, jaxlib"),
        ("torch", "[]", "torch"),
        ("tensorflow", '["keras-nlp"]', "tensorflow"),
        ("openvino", '["scipy"]', "openvino"),
    ],
)
def test_backend_package_missing_is_refused(write_profile, backend, packages, needed) -> None:  # type: ignore[no-untyped-def]
    err = _error(write_profile, f'backend = "{backend}"\npackages = {packages}\n')
    assert f"backend '{backend}' needs one of" in err.message
    assert needed in err.message
    assert err.hint and "packages = [" in err.hint


def test_backend_package_name_is_canonicalized(write_profile) -> None:  # type: ignore[no-untyped-def]
    text = 'backend = "tensorflow"\npackages = ["TensorFlow_CPU"]\n'
    profile = load_profile(write_profile("tf", text))
    assert profile.packages == ("TensorFlow_CPU",)


# --- resolve_profile -------------------------------------------------------------------------


def test_resolve_builtin_by_name(tmp_path: Path) -> None:
    profile = resolve_profile("numpy", tmp_path / "user", BUILTINS)
    assert profile.path == BUILTINS / "numpy.toml"
    assert profile.backend == "numpy"


def test_user_profile_shadows_builtin(write_profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    user = tmp_path / "user"
    mine = write_profile("numpy", MINIMAL + 'floatx = "float64"\n', folder=user)
    profile = resolve_profile("numpy", user, BUILTINS)
    assert profile.path == mine
    assert profile.floatx == "float64"


def test_user_profile_by_name(write_profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    user = tmp_path / "user"
    write_profile("mine", MINIMAL, folder=user)
    assert resolve_profile("mine", user, BUILTINS).name == "mine"


def test_resolve_by_path(write_profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_profile("elsewhere", MINIMAL)
    profile = resolve_profile(str(path), tmp_path / "user", BUILTINS)
    assert profile.path == path
    assert profile.name == "elsewhere"


def test_resolve_relative_toml_path(write_profile, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    write_profile("rel", MINIMAL, folder=tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_profile("rel.toml", tmp_path / "user", BUILTINS).name == "rel"


def test_resolve_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        resolve_profile(str(tmp_path / "missing.toml"), tmp_path / "user", BUILTINS)


def test_unknown_name_suggests(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile("nunpy", tmp_path / "user", BUILTINS)
    assert "unknown profile 'nunpy'" in info.value.message
    assert "jax-cpu" in info.value.message  # the known ones are listed
    assert info.value.hint is not None and "numpy" in info.value.hint
    assert info.value.hint.startswith("did you mean")


def test_unknown_name_without_match_points_at_listing(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile("qqqqqqqqqq", tmp_path / "user", BUILTINS)
    assert info.value.hint is not None and "kboot profiles" in info.value.hint


# --- list_profiles ---------------------------------------------------------------------------


def test_list_builtins_only(tmp_path: Path) -> None:
    entries = list_profiles(tmp_path / "no-such-folder", BUILTINS)
    assert {e.name for e in entries} == BUILTIN_NAMES
    assert all(e.origin == "builtin" and not e.shadows_builtin for e in entries)
    assert all(e.error is None and e.profile is not None for e in entries)
    assert [e.name for e in entries] == sorted(e.name for e in entries)


def test_list_marks_shadowing_and_invalid_user_profiles(write_profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    user = tmp_path / "user"
    write_profile("numpy", MINIMAL, folder=user)
    write_profile("mine", MINIMAL, folder=user)
    write_profile("broken", 'backend = "numpy"\n', folder=user)  # no numpy package
    entries = {e.name: e for e in list_profiles(user, BUILTINS)}
    assert set(entries) == BUILTIN_NAMES | {"mine", "broken"}

    assert entries["numpy"].origin == "user"
    assert entries["numpy"].shadows_builtin is True
    assert entries["numpy"].path == user / "numpy.toml"

    assert entries["mine"].origin == "user"
    assert entries["mine"].shadows_builtin is False

    broken = entries["broken"]
    assert broken.profile is None
    assert broken.error is not None and "needs one of numpy" in broken.error
    as_dict = broken.to_dict()
    assert as_dict["backend"] is None and as_dict["error"] == broken.error

    assert entries["jax-cpu"].origin == "builtin"
    assert entries["jax-cpu"].to_dict()["backend"] == "jax"


# --- digest ----------------------------------------------------------------------------------


def test_digest_is_stable_and_ignores_name_and_path(write_profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = load_profile(write_profile("a", MINIMAL))
    b = load_profile(write_profile("b", "# comment\n" + MINIMAL, folder=tmp_path / "other"))
    assert a.digest() == load_profile(a.path).digest()
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64


@pytest.mark.parametrize(
    "extra",
    [
        'floatx = "float64"',
        "epsilon = 1e-06",
        'keras = "==3.8.*"',
        "gpu = true",
        'find_links = ["/wheels"]',
        'description = "other"',
    ],
)
def test_digest_changes_with_content(write_profile, extra: str) -> None:  # type: ignore[no-untyped-def]
    base = load_profile(write_profile("a", MINIMAL))
    changed = load_profile(write_profile("b", MINIMAL + extra + "\n"))
    assert base.digest() != changed.digest()


def test_digest_changes_with_sources_override(write_profile) -> None:  # type: ignore[no-untyped-def]
    base = load_profile(write_profile("a", MINIMAL))
    other = base.with_sources(Sources(index_url="https://mirror/simple"))
    assert isinstance(other, Profile)
    assert other.digest() != base.digest()
    assert other.to_dict()["sources"]["index_url"] == "https://mirror/simple"


@pytest.mark.parametrize(
    "name", ["PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH",
             "DYLD_INSERT_LIBRARIES", "PYTHONUSERBASE"]
)  # fmt: skip
def test_env_that_changes_which_code_loads_is_refused(write_profile: Any, name: str) -> None:
    """Defect 11: such a variable would apply to every program started from the environment."""
    text = f'backend = "numpy"\npackages = ["numpy"]\nenv = {{ {name} = "/x" }}\n'
    path = write_profile("bad", text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert f"env.{name}" in info.value.message and str(path) in info.value.message
    assert info.value.hint is not None and "shell" in info.value.hint


def test_harmless_env_is_kept(write_profile: Any) -> None:
    text = 'backend = "numpy"\npackages = ["numpy"]\nenv = { TF_CPP_MIN_LOG_LEVEL = "2" }\n'
    assert dict(load_profile(write_profile("ok", text)).env) == {"TF_CPP_MIN_LOG_LEVEL": "2"}


def test_credentials_never_reach_what_kboot_writes(write_profile: Any) -> None:
    """Defect 10: records, --json and show carry the profile with credentials masked."""
    text = (
        'backend = "numpy"\npackages = ["numpy"]\n'
        'index_url = "https://alice:t0ken@mirror.example/simple"\n'
        'extra_index_urls = ["https://t0ken2@mirror.example/extra"]\n'
    )
    profile = load_profile(write_profile("secret", text))
    shown = json.dumps(profile.to_dict())
    assert "t0ken" not in shown
    assert "https://alice:****@mirror.example/simple" in shown
    assert "https://****@mirror.example/extra" in shown
    # the installer still gets the real URL
    assert profile.sources.index_url == "https://alice:t0ken@mirror.example/simple"
    # rotating a token is not a change of what gets built
    rotated = load_profile(write_profile("secret", text.replace("t0ken@", "n3w@")))
    assert rotated.digest() == profile.digest()


@pytest.mark.parametrize(
    ("spec", "generation"),
    [
        ("==3.0.5", 3),  # an exact pin on a micro version nobody sampled
        ("==2.3.1", 2),
        ("==3.15.1", 3),
        ("~=3.0", 3),
        (">=2.2,<2.4", 2),
        ("!=3.*,>=2", 2),
        (">3.0.5,<3.0.6", 3),
        ("==3.*", 3),
        (">=2", None),
        (">=4", None),
    ],
)
def test_the_generation_comes_from_the_specifier_itself(spec: str, generation: int | None) -> None:
    from bootstrap.profiles.model import infer_generation

    assert infer_generation("keras", spec) == generation


def test_a_keras2_backend_may_be_any_module_name(write_profile: Any) -> None:
    """Keras 2 imports any module name (importlib), dotted or not."""
    text = 'keras = "==2.3.1"\npython = ">=3.6,<3.8"\nbackend = "{}"\npackages = ["theano"]\n'
    for name in ("my_backend", "pkg.sub.backend"):
        profile = load_profile(write_profile("ext", text.format(name)))
        assert profile.backend == name and profile.external_backend
    with pytest.raises(ProfileError) as info:
        load_profile(write_profile("typo", text.format("theeno")))
    assert info.value.hint is not None and "did you mean 'theano'" in info.value.hint
