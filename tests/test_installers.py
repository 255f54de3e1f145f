"""Installer command lines and how their failures are explained; no command really runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from uv import find_uv_bin

from bootstrap.install import installers
from bootstrap.install.installers import (
    PipInstaller,
    UvInstaller,
    get_installer,
    install,
    source_args,
)
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.model import Sources
from bootstrap.system.errors import CommandError, InstallError
from bootstrap.system.runner import CommandResult

REQS = ("keras>=3,<4", "numpy>=1.26")
ALL_SOURCES = Sources(
    index_url="https://mirror.example/simple",
    extra_index_urls=("https://download.pytorch.org/whl/cpu", "https://extra.example/simple"),
    find_links=("/srv/wheels",),
)
SOURCE_ARGS = [
    "--index-url",
    "https://mirror.example/simple",
    "--extra-index-url",
    "https://download.pytorch.org/whl/cpu",
    "--extra-index-url",
    "https://extra.example/simple",
    "--find-links",
    "/srv/wheels",
]


@pytest.fixture
def env(tmp_path: Path) -> VirtualEnv:
    root = tmp_path / "env"
    root.mkdir()
    return VirtualEnv(root, root / "bin" / "python", root / "bin", root / "lib" / "site-packages")


def test_source_args_default_is_empty() -> None:
    assert source_args(Sources()) == []


def test_source_args_all() -> None:
    assert source_args(ALL_SOURCES) == SOURCE_ARGS


def test_uv_command(env: VirtualEnv) -> None:
    cmd = UvInstaller().install_command(env, REQS, ALL_SOURCES)
    assert cmd == [
        find_uv_bin(),
        "pip",
        "install",
        "--no-config",  # a planted uv.toml in a parent folder never picks the index
        "--compile-bytecode",  # as pip does: imports in a shared environment stay fast
        "--python",
        str(env.python),
        *SOURCE_ARGS,
        *REQS,
    ]


def test_uv_command_default_sources(env: VirtualEnv) -> None:
    cmd = UvInstaller().install_command(env, REQS, Sources())
    assert cmd[1:] == [
        "pip", "install", "--no-config", "--compile-bytecode", "--python", str(env.python), *REQS
    ]  # fmt: skip
    assert Path(cmd[0]).name.startswith("uv")


def test_pip_command(env: VirtualEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    cmd = PipInstaller().install_command(env, REQS, ALL_SOURCES)
    assert cmd == [
        str(env.python),
        "-E",  # the interpreter's version is unknown here: -I's parts
        "-s",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        *SOURCE_ARGS,
        *REQS,
    ]


def test_only_pip_needs_pip_in_the_environment() -> None:
    assert PipInstaller().needs_pip is True
    assert UvInstaller().needs_pip is False


def test_get_installer() -> None:
    assert isinstance(get_installer("pip"), PipInstaller)
    assert isinstance(get_installer("uv"), UvInstaller)


# --- install(): the subprocess helper patched ------------------------------------------------


class FakeRun:
    def __init__(self, error: CommandError | None = None) -> None:
        self.error = error
        self.calls: list[tuple[list[str], dict[str, object]]] = []

    def __call__(self, cmd, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append((list(cmd), kwargs))
        if self.error is not None:
            raise self.error
        return CommandResult(tuple(cmd), 0, "Installed 2 packages", "", 0.1)


def failing(output: str, returncode: int = 1) -> FakeRun:
    return FakeRun(
        CommandError("installing failed", cmd=["x"], returncode=returncode, output_tail=output)
    )


@pytest.mark.parametrize("installer", [UvInstaller(), PipInstaller()], ids=["uv", "pip"])
def test_install_runs_the_command_in_the_environment(monkeypatch, env, installer) -> None:  # type: ignore[no-untyped-def]
    fake = FakeRun()
    monkeypatch.setattr(installers, "run", fake)
    result = install(installer, env, REQS, ALL_SOURCES, python_version="3.12.1")
    assert result.returncode == 0
    assert len(fake.calls) == 1
    cmd, kwargs = fake.calls[0]
    assert cmd == installer.install_command(env, REQS, ALL_SOURCES)
    # a private folder, not the environment's or the user's: nothing there is imported
    assert kwargs["cwd"] != env.root
    assert kwargs["cwd"].name.startswith("kboot-")
    assert installer.name in str(kwargs["what"])


UV_OFFLINE = """\
error: Request failed after 3 retries
  Caused by: Failed to fetch: `https://index.example/simple/keras/`
  Caused by: error sending request for url (https://index.example/simple/keras/)
  Caused by: client error (Connect)
  Caused by: dns error: failed to lookup address information: Temporary failure in name resolution
"""
PIP_OFFLINE = """\
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after \
connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection \
object at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name \
resolution')': /simple/keras/
ERROR: Could not find a version that satisfies the requirement keras<4,>=3 (from versions: none)
ERROR: No matching distribution found for keras<4,>=3
"""
PIP_TIMEOUT = """\
WARNING: Retrying (Retry(total=4)) after connection broken by 'ConnectTimeoutError(..., \
'Connection to index.example timed out. (connect timeout=15)')': /simple/keras/
ERROR: No matching distribution found for keras<4,>=3
"""
UV_NO_SOLUTION = """\
  \u00d7 No solution found when resolving dependencies:
  ╰─▶ Because nosuchpkg-kboot was not found in the package registry and you require
      nosuchpkg-kboot, we can conclude that your requirements are unsatisfiable.
"""
UV_CONFLICT = """\
  \u00d7 No solution found when resolving dependencies:
  ╰─▶ Because tensorflow==2.15.0 depends on keras>=2.15.0,<2.16 and you require keras>=3,
      we can conclude that your requirements are unsatisfiable.
"""
PIP_NO_VERSION = """\
ERROR: Could not find a version that satisfies the requirement torch>=99 (from versions: 2.6.0)
ERROR: No matching distribution found for torch>=99
"""
PIP_CONFLICT = """\
ERROR: Cannot install keras<4,>=3 and tensorflow==2.15.0 because these package versions have \
conflicting dependencies.
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution
"""
UV_BUILD_FAILURE = """\
  \u00d7 Failed to build `somepkg==1.0`
  ├─▶ The build backend returned an error
  ╰─▶ Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)
"""


@pytest.mark.parametrize(
    ("installer", "output"),
    [(UvInstaller(), UV_OFFLINE), (PipInstaller(), PIP_OFFLINE), (PipInstaller(), PIP_TIMEOUT)],
    ids=["uv-offline", "pip-offline", "pip-timeout"],
)
def test_network_failure_hint(monkeypatch, env, installer, output) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(installers, "run", failing(output, returncode=2))
    with pytest.raises(InstallError) as info:
        install(installer, env, REQS, Sources(), python_version="3.12.1")
    err = info.value
    assert err.message == (
        f"installing keras>=3,<4, numpy>=1.26 with {installer.name} failed: "
        "the package index could not be reached"
    )
    assert err.hint is not None
    assert "could not be reached" in err.hint
    assert "--index-url" in err.hint and "--find-links" in err.hint
    assert err.details == output


@pytest.mark.parametrize(
    ("installer", "output"),
    [
        (UvInstaller(), UV_NO_SOLUTION),
        (UvInstaller(), UV_CONFLICT),
        (PipInstaller(), PIP_NO_VERSION),
        (PipInstaller(), PIP_CONFLICT),
    ],
    ids=["uv-unknown", "uv-conflict", "pip-no-version", "pip-conflict"],
)
def test_resolution_failure_hint(monkeypatch, env, installer, output) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(installers, "run", failing(output))
    with pytest.raises(InstallError) as info:
        install(installer, env, REQS, Sources(), python_version="3.13.0")
    err = info.value
    assert err.hint is not None
    assert "cannot be met" in err.hint
    assert "Python 3.13.0" in err.hint
    assert "could not be reached" not in err.hint
    assert err.details == output
    assert err.exit_code == 1


def test_other_failure_gets_the_generic_hint(monkeypatch, env) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(installers, "run", failing(UV_BUILD_FAILURE))
    with pytest.raises(InstallError) as info:
        install(UvInstaller(), env, REQS, Sources(), python_version="3.12.1")
    assert info.value.hint is not None and "--debug" in info.value.hint
    assert "cannot be met" not in info.value.hint
    assert "could not be reached" not in info.value.hint


def test_pip_runs_isolated_on_a_known_python(
    env: VirtualEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    known = replace(env, version=(3, 11))
    cmd = PipInstaller().install_command(known, REQS, Sources())
    assert cmd[:4] == [str(env.python), "-I", "-m", "pip"]
    # -I drops PYTHON* variables: a user who asked for no bytecode still gets none
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert PipInstaller().install_command(known, REQS, Sources())[:3] == [
        str(env.python),
        "-I",
        "-B",
    ]


def test_uv_compiles_bytecode_where_it_can(tmp_path: Path) -> None:
    """uv's compile step fails on Python 3.6 (no py_compile.PycInvalidationMode)."""
    old = VirtualEnv(tmp_path, tmp_path / "bin" / "python", tmp_path / "bin", tmp_path, (3, 6))
    assert "--compile-bytecode" not in UvInstaller().install_command(old, REQS, Sources())
    new = VirtualEnv(tmp_path, tmp_path / "bin" / "python", tmp_path / "bin", tmp_path, (3, 7))
    assert "--compile-bytecode" in UvInstaller().install_command(new, REQS, Sources())
