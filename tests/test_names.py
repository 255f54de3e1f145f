"""What a name on the command line means (bootstrap/envs/names.py), for every command:
inside a project a profile's name means `<project>-<name>` to create, run, check, doctor,
kernel and remove alike, and a name that means two environments is refused. Planted
environments (a fake build in kboot's ledger) stand in for real ones; one integration
test builds the real numpy environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bootstrap.doctor.examine import target_python
from bootstrap.envs import lifecycle
from bootstrap.envs.kernel_setup import kernel_env
from bootstrap.envs.names import profile_for, resolve
from bootstrap.run.execute import Unavailable, prepare
from bootstrap.state.record import EnvRecord
from bootstrap.system.errors import UsageError
from bootstrap.system.paths import builtin_profiles_dir, envs_dir, kboot_home
from bootstrap.system.progress import RecordingReporter
from helpers import OtherUser, created, kboot, other_user

COURSE = """\
[project]
name = "keras-course"
version = "0.1"

[tool.kboot]
default = "dev"

[tool.kboot.profiles.dev]
extends = "numpy"
packages = ["pandas"]

[tool.kboot.profiles.jax-cpu]
extends = "jax-cpu"
image_data_format = "channels_first"
"""


@pytest.fixture
def course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text(COURSE, encoding="utf-8")
    return root


def plant(name: str, profile: str = "numpy") -> Path:
    """An environment kboot made, called `name`, in kboot's home (a fake build)."""
    ledger = lifecycle.open_ledger(kboot_home(), envs_dir())
    path = Path(os.path.realpath(envs_dir())) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tx = lifecycle.Build(ledger, lifecycle.inspect(ledger, path))
    tx.begin()
    (path / "bin").mkdir()
    (path / "bin" / "python").write_text("not a python", encoding="utf-8")
    (path / "pyvenv.cfg").write_text("version_info = 3.11.7\n", encoding="utf-8")
    tx.commit(
        EnvRecord(
            format=2,
            name=name,
            profile={"name": profile, "backend": "numpy", "path": f"{profile}.toml"},
            profile_digest="d",
            scope="env",
            keras_home="",
            installer="uv",
            python={"version": "3.11.7"},
            system_site_packages=False,
            created_at="2026-01-01T00:00:00+00:00",
            kboot_version="0",
        )
    )
    return path


def known(path: Path) -> bool:
    entry = lifecycle.open_ledger(kboot_home(), envs_dir()).get(path)
    return entry is not None and entry.token is not None


# --- one name, one environment, for every command ---------------------------------------


def test_a_project_profile_means_its_project_environment_to_every_command(
    course: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = plant("keras-course-dev", "dev")
    here = course / "notebooks"
    monkeypatch.chdir(here)
    meant = resolve("dev", os.environ, here)
    assert (meant.name, meant.path, meant.source, meant.exists) == (
        "keras-course-dev",
        mine,
        "project",
        True,
    )
    assert "[tool.kboot.profiles.dev]" in meant.where
    # create and show: the same profile, and the same environment
    made = resolve("dev", os.environ, here, want="profile")
    assert made.profile is not None and made.profile.project == "keras-course"
    assert made.path == mine
    assert profile_for("dev", os.environ, here).default_env_name == "keras-course-dev"
    # doctor, kernel and run act on it
    assert target_python("dev", None, os.environ) == mine / "bin" / "python"
    assert kernel_env("dev", os.environ, remove=True).path == mine
    (target,) = prepare(["dev"], os.environ, reporter_for=lambda _: RecordingReporter())
    assert not isinstance(target, Unavailable) and target.path == mine
    # and remove removes it, from anywhere in the project
    proc = kboot("remove", "dev", "--json", cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert not known(mine)


def test_check_in_a_project_checks_the_project_environment(course: Path) -> None:
    mine = plant("keras-course-dev", "dev")
    proc = kboot("check", "dev", cwd=course)
    assert "no environment 'dev'" not in proc.stderr
    assert str(mine) in proc.stderr  # a fake build cannot pass: the error names it


@pytest.mark.parametrize("project_env_too", [True, False])
def test_a_name_that_means_two_environments_is_refused(
    course: Path, monkeypatch: pytest.MonkeyPatch, project_env_too: bool
) -> None:
    """The course redefines jax-cpu; the student's own jax-cpu, made elsewhere, is not
    the course's: `kboot remove jax-cpu` in the course must not delete it."""
    theirs = plant("jax-cpu", "jax-cpu")
    mine = plant("keras-course-jax-cpu", "jax-cpu") if project_env_too else None
    for command in (["remove", "jax-cpu"], ["check", "jax-cpu"], ["kernel", "jax-cpu"]):
        proc = kboot(*command, cwd=course)
        assert proc.returncode == 2, proc.stderr
        assert "'jax-cpu' means two environments here" in proc.stderr
        assert "keras-course-jax-cpu" in proc.stderr and str(theirs) in proc.stderr
        assert "hint: say keras-course-jax-cpu for the project's" in proc.stderr
    assert known(theirs)
    assert mine is None or known(mine)
    monkeypatch.chdir(course)
    with pytest.raises(UsageError, match="means two environments"):
        target_python("jax-cpu", None, os.environ)
    (target,) = prepare(["jax-cpu"], os.environ, reporter_for=lambda _: RecordingReporter())
    assert isinstance(target, Unavailable) and "means two" in target.error.message
    # the full name, or a path, says which one; outside the project the name is the other
    if mine is not None:
        assert resolve("keras-course-jax-cpu", os.environ, course).path == mine
    assert resolve(str(theirs), os.environ, course).path == theirs
    assert resolve("jax-cpu", os.environ, course.parent).path == theirs
    proc = kboot("remove", "jax-cpu", cwd=course.parent)
    assert proc.returncode == 0, proc.stderr
    assert not known(theirs)
    assert mine is None or known(mine)


def test_a_name_the_project_does_not_define_means_the_environment(course: Path) -> None:
    numpy = plant("numpy")
    meant = resolve("numpy", os.environ, course)
    assert (meant.path, meant.source) == (numpy, "environment")
    made = resolve("numpy", os.environ, course, want="profile")
    assert (made.name, made.source, made.path) == ("numpy", "builtin", numpy)


def test_a_project_profile_not_made_yet_says_how_to_make_it(course: Path) -> None:
    proc = kboot("check", "dev", cwd=course)
    assert proc.returncode == 2
    assert "no environment 'keras-course-dev'" in proc.stderr
    assert "kboot create dev" in proc.stderr


def test_run_creates_a_missing_project_environment_under_the_project_name(course: Path) -> None:
    meant = resolve("dev", os.environ, course, want="either")
    assert meant.exists is False and meant.profile is not None
    assert meant.profile.default_env_name == "keras-course-dev" == meant.name


def test_a_sync_manifest_names_its_environment_whatever_the_project(course: Path) -> None:
    from bootstrap.fleet.sync import load_manifest

    manifest = course / "lab.toml"
    manifest.write_text('[[env]]\nname = "lab-dev"\nprofile = "dev"\n', encoding="utf-8")
    (entry,) = load_manifest(manifest)
    assert entry.name == "lab-dev"  # not keras-course-lab-dev
    assert entry.profile.project == "keras-course"  # the manifest's folder's project


# --- a profile folder or project file kboot cannot read -------------------------------


def test_an_unreadable_user_profile_folder_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Path(os.environ["KBOOT_PROFILES"])
    folder.mkdir()
    (folder / "numpy.toml").write_text('backend = "numpy"\nfloatx = "float64"\n')
    scandir = os.scandir

    def denied(path: object = ".") -> object:
        if Path(str(path)) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", denied)
    from bootstrap.system.errors import ProfileError

    with pytest.raises(ProfileError) as caught:
        profile_for("numpy", os.environ, tmp_path)
    assert f"cannot read the profile folder {folder}: Permission denied" in caught.value.message
    assert "chmod u+rx" in (caught.value.hint or "")
    assert "KBOOT_PROFILES" in (caught.value.hint or "")


def test_an_unreadable_project_file_is_an_error(
    course: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bootstrap.profiles.catalog import find_project
    from bootstrap.system.errors import ProfileError

    read_bytes = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == "pyproject.toml":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ProfileError) as caught:
        find_project(course / "notebooks")
    assert f"cannot read {course / 'pyproject.toml'}: Permission denied" in caught.value.message
    assert f"chmod u+r {course / 'pyproject.toml'}" in (caught.value.hint or "")


def _public_python(shared: Path, user: OtherUser) -> list[str]:
    """The command that runs `python -m bootstrap` as any user: a Python they can run, and
    copies of kboot and the packages it imports in `shared`."""
    import shutil
    import sys

    import rich.console  # noqa: F401

    import bootstrap.cli.app  # the modules the CLI needs, loaded ...
    import bootstrap.cli.render  # ... its lazy ones too
    import bootstrap.envs.create  # noqa: F401

    site = shared / "site"
    site.mkdir()
    package = Path(__file__).resolve().parent.parent / "bootstrap"
    shutil.copytree(package, site / "bootstrap", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(builtin_profiles_dir(), site / "bootstrap" / "profiles" / "builtin")
    copied: set[str] = set()
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        file = getattr(module, "__file__", None)
        if top in copied or top == "bootstrap" or not file or "site-packages" not in file:
            continue
        root = Path(file)
        while root.parent.name != "site-packages":
            root = root.parent
        target = site / root.name
        if root.is_dir():
            shutil.copytree(root, target, dirs_exist_ok=True)
        else:
            shutil.copy2(root, target)
        copied.add(top)
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        probe = subprocess.run(
            user.argv(python, "-c", "import sys; print(sys.version_info[:2])"),
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return [python, "-S", "-c", f"import sys; sys.path[:0] = [{str(site)!r}]; "
                    "import runpy; runpy.run_module('bootstrap', run_name='__main__')"]  # fmt: skip
    raise AssertionError(f"no Python {sys.version_info[:2]} that {user.name} can run")


@pytest.mark.needs("second-user")
def test_unreadable_profile_folder_and_project_file_for_a_real_user(shared_tmp: Path) -> None:
    """chmod 000 on the user's profile folder, then on a project's pyproject.toml: every
    command says so (exit 2) instead of building or showing the built-in."""
    with other_user() as user:
        shared = shared_tmp
        python = _public_python(shared, user)
        home = shared / "home"
        profiles = home / ".config" / "kboot" / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "numpy.toml").write_text('extends = "numpy"\nfloatx = "float64"\n')
        project = home / "course"
        project.mkdir()
        (project / "pyproject.toml").write_text(COURSE)
        subprocess.run(["chown", "-R", user.name, str(home)], check=True)
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "KBOOT_HOME": str(home / "kboot"),
            "LANG": "C.UTF-8",
        }

        def kboot_as_user(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                user.argv("env", "-i", *(f"{k}={v}" for k, v in environ.items()), *python, *args),
                capture_output=True,
                text=True,
                cwd=cwd,
                timeout=120,
                check=False,
            )

        shown = kboot_as_user("show", "numpy", "--json", cwd=home)
        assert shown.returncode == 0, shown.stderr
        assert '"floatx": "float64"' in shown.stdout  # the user's numpy, readable
        profiles.chmod(0o000)
        for args in (["show", "numpy"], ["profiles"], ["create", "numpy", "--no-smoke"]):
            proc = kboot_as_user(*args, cwd=home)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
            assert f"cannot read the profile folder {profiles}: Permission denied" in proc.stderr
        assert not (home / "kboot" / "envs" / "numpy").exists()
        profiles.chmod(0o755)
        (project / "pyproject.toml").chmod(0o000)
        for args in (["show", "numpy"], ["profiles"], ["create", "numpy", "--no-smoke"]):
            proc = kboot_as_user(*args, cwd=project)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
            assert f"cannot read {project / 'pyproject.toml'}: Permission denied" in proc.stderr
        assert not (home / "kboot" / "envs").exists()


# --- a malformed pyproject.toml ---------------------------------------------------------


def test_a_malformed_pyproject_without_kboot_tables_is_passed_over(
    course: Path, tmp_path: Path
) -> None:
    from bootstrap.profiles.catalog import find_project

    inner = course / "vendored" / "lib"
    inner.mkdir(parents=True)
    # someone else's broken file, mentioning kboot only in a comment and a string
    (inner / "pyproject.toml").write_text(
        '[project]\nname = "lib\n# see [tool.kbootstrap]\ndescription = "tool.kboot"\n'
    )
    found = find_project(inner)
    assert found is not None and found.file == course / "pyproject.toml"  # searched on up
    # a `kboot` script of someone's package is not a [tool.kboot] table either
    (inner / "pyproject.toml").write_text('[project.scripts]\nkboot = "kboot.cli:main\n')
    found = find_project(inner)
    assert found is not None and found.file == course / "pyproject.toml"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "pyproject.toml").write_text("[project\nname = 'x'\n")
    proc = kboot("show", "numpy", cwd=alone)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "text",
    [
        '[project]\nname = "x"\n\n[tool.kboot.profiles.dev]\nextends = "numpy\n',
        '[project]\nname = "x"\n\n[tool.kboot]\ndefault = dev\n',
        '[project]\nname = "x"\n\n[ tool . "kboot" ]\ndefault = dev\n',
        '[project]\nname = "x"\n\n[tool]\nkboot = { default = dev }\n',
    ],
)
def test_a_malformed_kboot_pyproject_names_the_file_and_the_line(tmp_path: Path, text: str) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(text)
    proc = kboot("create", "numpy", cwd=root)
    assert proc.returncode == 2, proc.stderr
    assert f"{root / 'pyproject.toml'}, line 5: invalid TOML" in proc.stderr
    assert "hint: fix line 5 of pyproject.toml" in proc.stderr


def test_a_malformed_kboot_toml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "kboot.toml").write_text('default = "dev"\n[profiles.dev\n')
    proc = kboot("show", "numpy", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{tmp_path / 'kboot.toml'}, line 2: invalid TOML" in proc.stderr


# --- the real thing ---------------------------------------------------------------------


@pytest.mark.integration
def test_create_check_and_remove_agree_in_a_project(tmp_path: Path) -> None:
    """A real numpy environment from a project profile: create, check and remove all act
    on `<project>-fast`, and the user's own `fast` outside is never touched."""
    root = tmp_path / "course"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "keras-course"\nversion = "0.1"\n\n'
        '[tool.kboot.profiles.fast]\nextends = "numpy"\nimage_data_format = "channels_first"\n'
    )
    made = created(kboot("create", "fast", "--json", cwd=root))
    assert made["name"] == "keras-course-fast"
    checked = kboot("check", "fast", "--json", cwd=root)
    assert checked.returncode == 0, checked.stderr
    assert '"name": "keras-course-fast"' in checked.stdout
    removed = kboot("remove", "fast", "--json", cwd=root)
    assert removed.returncode == 0, removed.stderr
    assert '"name": "keras-course-fast"' in removed.stdout
    assert not Path(made["path"]).exists()
