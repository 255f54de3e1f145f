"""Project profiles ([tool.kboot] in pyproject.toml, or kboot.toml), `extends`, and the
lookup order project -> user -> built-in; then a real project built with `kboot create`
and no argument, with the project installed editable."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.profiles.catalog import Catalog, find_project
from bootstrap.system.errors import ProfileError
from bootstrap.system.paths import builtin_profiles_dir
from helpers import created, kboot, python_of

BUILTINS = builtin_profiles_dir()


def project(tmp_path: Path, text: str, *, kind: str = "pyproject.toml") -> Path:
    root = tmp_path / "course"
    root.mkdir(exist_ok=True)
    (root / kind).write_text(text, encoding="utf-8")
    return root


def profiles_in(root: Path, user: Path | None = None) -> Catalog:
    return Catalog(user or root.parent / "user-profiles", BUILTINS, find_project(root))


PYPROJECT = """\
[project]
name = "keras-course"
version = "0.1"

[tool.kboot]
default = "dev"

[tool.kboot.profiles.dev]
extends = "jax-cpu"
packages = ["pandas"]
image_data_format = "channels_first"
"""


def test_a_pyproject_table_extends_a_builtin(tmp_path: Path) -> None:
    root = project(tmp_path, PYPROJECT)
    found = profiles_in(root)
    assert found.default() == "dev"
    dev = found.resolve("dev")
    jax_cpu = found.resolve("jax-cpu")
    assert dev.backend == "jax" and dev.accelerator == "cpu"
    assert dev.packages == (*jax_cpu.packages, "pandas")
    assert dev.image_data_format == "channels_first"
    assert dev.floatx == jax_cpu.floatx and dev.python == jax_cpu.python
    assert dev.description == jax_cpu.description
    assert dev.default_env_name == "keras-course-dev"
    assert dev.table == "tool.kboot.profiles.dev"


def test_found_from_a_subfolder_and_a_pyproject_without_kboot_is_passed_over(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, PYPROJECT)
    inner = root / "src" / "pkg"
    inner.mkdir(parents=True)
    (inner / "pyproject.toml").write_text('[project]\nname = "inner"\n')
    found = find_project(inner)
    assert found is not None and found.file == root / "pyproject.toml"
    assert find_project(tmp_path) is None


def test_kboot_toml_has_the_same_tables_without_the_prefix(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        'default = "gpu-box"\n[profiles.gpu-box]\nextends = "torch"\nfloatx = "float16"\n',
        kind="kboot.toml",
    )
    found = profiles_in(root)
    assert found.resolve("gpu-box").floatx == "float16"
    assert found.resolve("gpu-box").default_env_name == "course-gpu-box"  # the folder's name


def test_same_name_packages_replace_and_remove_packages_takes_away(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "[tool.kboot.profiles.lean]\n"
        'extends = "numpy"\n'
        'remove_packages = ["jax"]\n'
        'packages = ["numpy==2.1.0", "rich"]\n'
        'env = { MY_FLAG = "1" }\n',
    )
    lean = profiles_in(root).resolve("lean")
    assert lean.packages == ("scipy>=1.11", "numpy==2.1.0", "rich")
    assert lean.env == {"MY_FLAG": "1"}


@pytest.mark.parametrize("key", ["extra_index_urls", "find_links"])
def test_an_empty_list_drops_what_the_parent_lists(tmp_path: Path, key: str) -> None:
    """Issue 16 item 22: `extra_index_urls = []` replaces the parent's, as any key does."""
    root = project(
        tmp_path,
        '[tool.kboot.profiles.base]\nbackend = "numpy"\npackages = ["numpy"]\n'
        f'{key} = ["https://mirror.example/simple"]\n'
        f'[tool.kboot.profiles.mine]\nextends = "base"\n{key} = []\n',
    )
    found = profiles_in(root)
    assert getattr(found.resolve("base").sources, key) == ("https://mirror.example/simple",)
    assert getattr(found.resolve("mine").sources, key) == ()


def test_a_profile_knows_the_chain_it_extends(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        '[tool.kboot.profiles.a]\nextends = "b"\n[tool.kboot.profiles.b]\nextends = "torch-cpu"\n',
    )
    a = profiles_in(root).resolve("a")
    assert a.extends == (
        f"b ({root / 'pyproject.toml'} [tool.kboot.profiles.b])",
        f"torch-cpu ({BUILTINS / 'torch-cpu.toml'})",
    )
    assert a.to_dict()["extends"] == list(a.extends)
    # where values come from is no part of what is built: the digest is torch-cpu's own
    assert a.digest() == profiles_in(root).resolve("torch-cpu").digest()
    assert profiles_in(root).resolve("torch-cpu").extends == ()


def test_extending_its_own_name_means_the_next_layer_down(tmp_path: Path) -> None:
    root = project(
        tmp_path, '[tool.kboot.profiles.jax-cpu]\nextends = "jax-cpu"\nfloatx = "float64"\n'
    )
    found = profiles_in(root)
    mine = found.resolve("jax-cpu")
    assert mine.floatx == "float64" and mine.table == "tool.kboot.profiles.jax-cpu"
    [entry] = [e for e in found.entries() if e.name == "jax-cpu"]
    assert entry.origin == "project" and entry.shadows == ("builtin",)


def test_a_user_profile_file_can_extend_and_a_path_is_relative_to_its_file(tmp_path: Path) -> None:
    user = tmp_path / "user-profiles"
    user.mkdir()
    (user / "wheels").mkdir()
    (user / "base.toml").write_text(
        'backend = "numpy"\npackages = ["numpy"]\nfind_links = ["wheels"]\n'
    )
    (user / "mine.toml").write_text('extends = "./base.toml"\nepsilon = 0.001\n')
    mine = Catalog(user, BUILTINS).resolve("mine")
    assert mine.epsilon == 0.001 and mine.packages == ("numpy",)
    assert mine.sources.find_links == (str(user / "wheels"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[tool.kboot.profiles.dev]\nextends = "jax-cpu"\nfloatx = "float8"\n',
         "pyproject.toml [tool.kboot.profiles.dev]: key 'floatx' has invalid value 'float8'"),
        ('[tool.kboot.profiles.dev]\nextends = "jaxcpu"\n',
         "[tool.kboot.profiles.dev]: extends 'jaxcpu': unknown profile"),
        ('[tool.kboot.profiles.dev]\nextends = "b"\n[tool.kboot.profiles.b]\nextends = "dev"\n',
         "goes round in a circle"),
        ('[tool.kboot.profiles.dev]\nextends = "numpy"\nremove_packages = ["torch"]\n',
         "remove_packages names torch, which"),
        ('[tool.kboot.profiles.dev]\nbackend = "jax"\nremove_packages = ["jax"]\n',
         "key 'remove_packages' needs 'extends'"),
        ('[tool.kboot.profiles.dev]\nextends = "numpy"\nflaotx = "float64"\n',
         "unknown key 'flaotx'"),
        ('[tool.kboot]\ndefualt = "dev"\n', "unknown key 'defualt'"),
        ('[tool.kboot]\ndefault = "prod"\n[tool.kboot.profiles.dev]\nextends = "numpy"\n',
         "key 'default' has invalid value 'prod'; expected one of this file's profiles: dev"),
        ('[tool.kboot.profiles]\ndev = "numpy"\n', "'profiles' must hold tables"),
        ("[tool.kboot\n", "invalid TOML"),
    ],
)  # fmt: skip
def test_every_mistake_names_the_file_the_table_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ProfileError) as caught:
        profiles_in(project(tmp_path, text)).resolve("dev")
    assert expected in caught.value.message + (caught.value.hint or "")


def test_no_default_says_how_to_add_one(tmp_path: Path) -> None:
    root = project(tmp_path, '[tool.kboot.profiles.dev]\nextends = "numpy"\n')
    with pytest.raises(ProfileError) as caught:
        profiles_in(root).default()
    assert "has no default profile (profiles: dev)" in caught.value.message
    assert caught.value.hint == 'add default = "NAME" to [tool.kboot]'


def test_a_sync_manifest_called_kboot_toml_is_not_a_project(tmp_path: Path) -> None:
    root = project(tmp_path, '[[env]]\nname = "a"\nprofile = "numpy"\n', kind="kboot.toml")
    assert find_project(root) is None


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(lambda t: ("[tool.kboot]\n" + t).encode()),
        st.sampled_from(
            [b'[tool.kboot.profiles.x]\nextends = 3\n', b"[tool]\nkboot = 1\n",
             b'[tool.kboot.profiles."a b"]\n', b"[tool.kboot]\nprofiles = []\n",
             b'[tool.kboot.profiles.x]\nextends = "x"\n', b'[profiles.x]\npackages = 1\n']
        ),
    ),
    name=st.sampled_from(["pyproject.toml", "kboot.toml"]),
)  # fmt: skip
def test_any_project_file_gives_profiles_or_kboots_error(
    tmp_path: Path, data: bytes, name: str
) -> None:
    root = tmp_path / "fuzz"
    root.mkdir(exist_ok=True)
    for stale in ("pyproject.toml", "kboot.toml"):
        (root / stale).unlink(missing_ok=True)
    (root / name).write_bytes(data)
    try:
        found = profiles_in(root)
        for entry in found.entries():
            assert entry.profile is not None or entry.error
        if found.project is not None:
            for profile_name in found.project.profiles:
                with contextlib.suppress(ProfileError):
                    found.resolve(profile_name)
    except ProfileError as exc:
        assert exc.message


# --- real runs -----------------------------------------------------------------------------

COURSE = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "keras-course"
version = "0.1"
dependencies = []

[tool.setuptools]
py-modules = ["course_helpers"]

[tool.kboot]
default = "dev"

[tool.kboot.profiles.dev]
extends = "numpy"
image_data_format = "channels_first"
"""


@pytest.mark.integration
def test_create_with_no_argument_in_a_project_builds_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path, COURSE)
    (root / "course_helpers.py").write_text("ANSWER = 42\n")
    (root / "notebooks").mkdir()
    monkeypatch.chdir(root / "notebooks")  # anywhere below the project
    data: dict[str, Any] = created(kboot("create", "--editable", "--json"))
    assert data["name"] == "keras-course-dev"
    assert data["smoke"]["reported"]["image_data_format"] == "channels_first"
    python = python_of(Path(data["path"]))
    out = subprocess.run(
        [str(python), "-c", "import course_helpers; print(course_helpers.ANSWER)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "42"
    (root / "course_helpers.py").write_text("ANSWER = 43\n")  # editable: seen at once
    out = subprocess.run(
        [str(python), "-c", "import course_helpers; print(course_helpers.ANSWER)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "43"

    again = created(kboot("create", "--editable", "--json"))
    assert again["action"] == "unchanged"
    # a plain create keeps the project installed, as it keeps a kernel
    assert created(kboot("create", "--json"))["action"] == "unchanged"
    # a new dependency in pyproject.toml is a change: the next create installs it
    (root / "pyproject.toml").write_text(
        COURSE.replace("dependencies = []", 'dependencies = ["six"]')
    )
    updated = created(kboot("create", "--json"))
    assert updated["action"] != "unchanged" and "six" in updated["packages"]
    out = subprocess.run(
        [str(python), "-c", "import six, course_helpers; print(course_helpers.ANSWER)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "43"
    # --no-editable drops it
    dropped = created(kboot("create", "--no-editable", "--json"))
    assert dropped["action"] != "unchanged" and "keras-course" not in dropped["packages"]
    listed = json.loads(kboot("profiles", "--json").stdout)
    [dev] = [p for p in listed if p["name"] == "dev"]
    assert dev["origin"] == "project" and dev["where"].endswith("[tool.kboot.profiles.dev]")
    shown = kboot("show", "dev")
    assert "pyproject.toml [tool.kboot.profiles.dev]" in shown.stdout
    assert 'image_data_format = "channels_first"' in shown.stdout


def test_editable_outside_a_project_is_refused_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    proc = kboot("create", "numpy", "--editable")
    assert proc.returncode == 2
    assert "no pyproject.toml or setup.py to install" in proc.stderr
    assert not (tmp_path / "kboot-home" / "envs").exists()


@pytest.mark.needs("root")  # a file owned by another user
def test_a_project_file_someone_else_owns_is_passed_over(tmp_path: Path) -> None:
    """git's safe.directory rule: another user's kboot.toml in a shared folder (/tmp) must
    not choose the packages kboot installs for you."""
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    shared.chmod(0o1777)
    evil = shared / "kboot.toml"
    evil.write_text(
        '[profiles.numpy]\nextends = "numpy"\nindex_url = "https://evil.example/simple"\n'
    )
    os.chown(evil, 65534, 65534)
    notes: list[str] = []
    assert find_project(shared / "sub", notes) is None
    assert notes == [f"{evil} is passed over: it belongs to another user (uid 65534)"]
    proc = kboot("show", "numpy", cwd=shared / "sub")
    assert proc.returncode == 0 and "evil" not in proc.stdout
    assert "is passed over" in proc.stderr
    # one's own file in a folder others can write (no sticky bit) is passed over too
    os.chown(evil, os.getuid(), os.getgid())
    shared.chmod(0o777)
    notes.clear()
    assert find_project(shared / "sub", notes) is None
    assert notes == [f"{evil} is passed over: others can write its folder"]


def test_a_parents_packages_are_checked(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        '[profiles.base]\nbackend = "numpy"\npackages = "numpy"\n'
        '[profiles.dev]\nextends = "base"\npackages = ["scipy"]\n',
        kind="kboot.toml",
    )
    with pytest.raises(ProfileError) as caught:
        profiles_in(root).resolve("dev")
    assert "[profiles.base]: key 'packages' has invalid value 'numpy'" in caught.value.message
    entries = {e.name: e for e in profiles_in(root).entries()}  # the listing still works
    assert entries["dev"].error and entries["numpy"].profile is not None


def test_one_broken_user_profile_does_not_hide_the_others(tmp_path: Path) -> None:
    user = tmp_path / "user-profiles"
    user.mkdir()
    (user / "bad.toml").write_text("backend = \n")
    entries = {e.name: e for e in Catalog(user, BUILTINS).entries()}
    assert entries["bad"].error and "invalid TOML" in entries["bad"].error
    assert entries["numpy"].profile is not None


def test_a_user_profile_means_the_same_inside_a_project(tmp_path: Path) -> None:
    user = tmp_path / "user-profiles"
    user.mkdir()
    (user / "mine.toml").write_text('extends = "numpy"\n')
    text = '[profiles.numpy]\nbackend = "tensorflow"\npackages = ["tensorflow"]\n'
    root = project(tmp_path, text, kind="kboot.toml")
    assert profiles_in(root, user).resolve("mine").backend == "numpy"  # the built-in's
    assert profiles_in(root, user).resolve("numpy").backend == "tensorflow"  # the project's


def test_a_profile_file_called_kboot_toml_is_not_a_project(tmp_path: Path) -> None:
    root = project(tmp_path, 'backend = "numpy"\npackages = ["numpy"]\n', kind="kboot.toml")
    assert find_project(root) is None
    assert Catalog(tmp_path / "u", BUILTINS).resolve(str(root / "kboot.toml")).backend == "numpy"


def test_extending_its_own_name_with_nothing_below_says_so(tmp_path: Path) -> None:
    root = project(tmp_path, '[profiles.c]\nextends = "c"\n', kind="kboot.toml")
    with pytest.raises(ProfileError) as caught:
        profiles_in(root).resolve("c")
    assert (
        "extends its own name" in caught.value.message and "there is none" in caught.value.message
    )


def test_editable_in_a_monorepo_installs_the_package_you_are_in(tmp_path: Path) -> None:
    from bootstrap.profiles.catalog import editable_root

    root = project(tmp_path, '[profiles.dev]\nextends = "numpy"\n', kind="kboot.toml")
    package = root / "packages" / "alpha"
    (package / "src").mkdir(parents=True)
    (package / "pyproject.toml").write_text('[project]\nname = "alpha"\n')
    found = find_project(package / "src")
    assert found is not None and found.root == root
    assert editable_root(found, package / "src") == package
    with pytest.raises(ProfileError, match=r"no pyproject\.toml or setup\.py to install"):
        editable_root(found, root)


@pytest.mark.integration
def test_two_checkouts_of_one_project_do_not_rebuild_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '[project]\nname = "course"\n[tool.kboot]\ndefault = "dev"\n' \
        '[tool.kboot.profiles.dev]\nextends = "numpy"\n'  # fmt: skip
    first, second = tmp_path / "one", tmp_path / "two"
    for checkout in (first, second):
        checkout.mkdir()
        (checkout / "pyproject.toml").write_text(text)
    assert created(kboot("create", "--json", cwd=first))["name"] == "course-dev"
    refused = kboot("create", cwd=second)
    assert refused.returncode == 2
    assert f"was made from {first / 'pyproject.toml'}" in refused.stderr
    assert "--name NAME" in refused.stderr
