"""What a test needs of the machine, declared with one marker and checked in one place:

    @pytest.mark.needs("pyenv-3.6")
    @pytest.mark.needs("torch-cpu-wheels", "local-index")

Where a requirement is missing, the test is skipped with the reason (a developer's laptop
without pyenv 3.6 still runs the rest). With KBOOT_TEST_STRICT=1 (CI sets it in .ci/run)
the test fails instead, and so does any other skip: CI proves every test on its machine.

A pytest plugin (tests/conftest.py loads it); the checks run only for the tests selected,
at most once per session each. Requirement names are checked at collection: a typo is an
error, not a test that skips forever.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

#: Set to 1 (CI does) and a missing requirement, or any other skip, is a failure.
STRICT_VARIABLE = "KBOOT_TEST_STRICT"

# Resolved on import, before the autouse fixture moves HOME.
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
#: CPU builds of torch (the PyTorch CPU index is not reachable from the test machines).
TORCH_WHEELS = Path(os.environ.get("KBOOT_TEST_TORCH_WHEELS", "/opt/wheels"))
#: A package index on this machine, for the tests that pair it with TORCH_WHEELS.
LOCAL_INDEX = os.environ.get("KBOOT_TEST_INDEX_URL", "file:///opt/pypi/simple")

Check = Callable[[], "str | None"]  # None where the machine has it, else why not


def strict() -> bool:
    return os.environ.get(STRICT_VARIABLE, "") not in ("", "0")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{argv[0]}: {exc}"


def pyenv_python(version: str) -> Path | None:
    """The newest pyenv-installed CPython `version` (such as "3.6") that runs, or None."""
    found = sorted(
        PYENV_ROOT.glob(f"versions/{version}.*/bin/python{version}"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    for path in reversed(found):
        ran = _run([str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        if not isinstance(ran, str) and ran.stdout.strip() == version:
            return path
    return None


def _pyenv(version: str) -> str | None:
    if pyenv_python(version) is None:
        return f"no working Python {version} under {PYENV_ROOT}/versions (pyenv install {version})"
    return None


def _unshare() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux)"
    ran = _run(["unshare", "-rmn", "true"])  # user, mount and network namespaces
    if isinstance(ran, str):
        return ran
    return None if ran.returncode == 0 else f"unshare -rmn fails: {ran.stderr.strip()}"


def _root() -> str | None:
    """Root that can give a file to another user (not root in a user namespace)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root"
    with tempfile.NamedTemporaryFile() as file:
        try:
            os.chown(file.name, 65534, 65534)
        except OSError as exc:
            return f"root here cannot give a file to another user (a user namespace?): {exc}"
    return None


def _second_user() -> str | None:
    """A real second account can be made and acted as (useradd, runuser, userdel)."""
    tools = ("useradd", "userdel", "runuser", "pgrep")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        return f"no {', '.join(missing)} to make and act as a second user"
    return _root()


def _no_nvidia_driver() -> str | None:
    from bootstrap.install.accelerators import read_host

    driver = read_host().driver
    return None if driver is None else f"an NVIDIA driver is loaded here ({driver})"


def _base_numpy_scipy() -> str | None:
    base = getattr(sys, "_base_executable", sys.executable)
    ran = _run([base, "-I", "-c", "import numpy, scipy"])
    if isinstance(ran, str) or ran.returncode != 0:
        return f"numpy and scipy are not both installed in the base interpreter {base}"
    return None


def _torch_cpu_wheels() -> str | None:
    if any(TORCH_WHEELS.glob("torch-*+cpu-*.whl")):
        return None
    return f"no CPU torch wheel in {TORCH_WHEELS} (set KBOOT_TEST_TORCH_WHEELS)"


def _local_index() -> str | None:
    if LOCAL_INDEX.startswith("file://") and not Path(LOCAL_INDEX[7:]).is_dir():
        return f"no package index at {LOCAL_INDEX} (set KBOOT_TEST_INDEX_URL)"
    return None


def _posix() -> str | None:
    return None if os.name == "posix" else f"not a POSIX system ({sys.platform})"


#: What makes root a user that file permissions apply to (no DAC override).
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def as_unprivileged(argv: list[str]) -> list[str]:
    """`argv` run so that file permissions refuse it: as is for a user, through setpriv
    without the capabilities that let root past them for root."""
    return [*DROP_DAC, *argv] if hasattr(os, "geteuid") and os.geteuid() == 0 else argv


def _permissions() -> str | None:
    """A folder's permissions can refuse the test's commands (`as_unprivileged`)."""
    posix = _posix()
    if posix or os.geteuid() != 0:
        return posix
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0)
        ran = _run(as_unprivileged(["ls", folder]))
        os.chmod(folder, 0o700)
    if isinstance(ran, str):
        return f"root cannot drop its capabilities: {ran}"
    return None if ran.returncode != 0 else "root here reads a folder of mode 000 even without them"


def buildah_argv(storage: Path) -> list[str]:
    """buildah with its images and containers in `storage` (a test's own, never the
    machine's /var/lib/containers)."""
    return ["buildah", "--root", str(storage / "root"), "--runroot", str(storage / "run")]


def _failed(ran: subprocess.CompletedProcess[str] | str, what: str) -> str | None:
    if isinstance(ran, str):
        return ran
    return None if ran.returncode == 0 else f"{what} fails: {ran.stderr.strip()[-300:]}"


def _buildah() -> str | None:
    """buildah runs a RUN step here: root, with chroot isolation (OCI isolation needs a
    cgroup setup that containers in containers often lack). Proved with a container made
    from scratch holding only /bin/sh and the libraries it loads."""
    if shutil.which("buildah") is None:
        return "no buildah command (apt-get install buildah)"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "buildah runs a RUN step here only as root (chroot isolation)"
    ldd = _run(["ldd", "/bin/sh"])
    libraries = [] if isinstance(ldd, str) else re.findall(r"(/\S+) \(0x", ldd.stdout)
    with tempfile.TemporaryDirectory() as folder:
        buildah = buildah_argv(Path(folder))
        made = _run([*buildah, "from", "scratch"])
        why = _failed(made, "buildah from scratch")
        if why or isinstance(made, str):
            return why
        container = made.stdout.strip()
        try:
            for path in ["/bin/sh", *libraries]:
                why = why or _failed(
                    _run([*buildah, "copy", "--quiet", container, path, path]), "buildah copy"
                )
            shell = ["sh", "-c", "echo ran"]
            ran = _run([*buildah, "run", "--isolation", "chroot", container, *shell])
        finally:
            _run([*buildah, "rm", container])
    why = why or _failed(ran, "buildah run --isolation chroot")
    if why is None and not isinstance(ran, str) and ran.stdout.strip() != "ran":
        why = f"buildah run --isolation chroot printed {ran.stdout.strip()[-200:]!r}"
    return why


#: Every requirement by name, and `pyenv-X.Y` for a pyenv-installed Python X.Y.
REQUIREMENTS: dict[str, Check] = {
    "unshare": _unshare,
    "root": _root,
    "second-user": _second_user,
    "flock": lambda: None if shutil.which("flock") else "no flock command (util-linux)",
    "no-nvidia-driver": _no_nvidia_driver,
    "base-numpy-scipy": _base_numpy_scipy,
    "torch-cpu-wheels": _torch_cpu_wheels,
    "local-index": _local_index,
    "posix": _posix,
    "permissions": _permissions,
    "buildah": _buildah,
    "debootstrap": lambda: (
        None
        if shutil.which("debootstrap")
        else "no debootstrap command (apt-get install debootstrap)"
    ),
}


def requirement(name: str) -> Check | None:
    """The check of requirement `name`, or None for a name nobody defined."""
    if name in REQUIREMENTS:
        return REQUIREMENTS[name]
    pyenv = re.fullmatch(r"pyenv-(\d+\.\d+)", name)
    return functools.partial(_pyenv, pyenv.group(1)) if pyenv else None


@functools.cache
def missing(name: str) -> str | None:
    """None where this machine has requirement `name`, else why not (one line)."""
    check = requirement(name)
    if check is None:
        raise ValueError(f"unknown requirement {name!r}")
    return check()


def _needs(item: pytest.Item) -> Iterator[str]:
    for mark in item.iter_markers("needs"):
        yield from mark.args


# --- the plugin's hooks ----------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*requirements): what the test needs of the machine (tests/machine.py: "
        f"{', '.join(REQUIREMENTS)}, pyenv-X.Y); skipped with the reason where one is "
        f"missing, a failure under {STRICT_VARIABLE}=1",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if strict():
        return f"kboot: {STRICT_VARIABLE}=1: a missing requirement or any skip is a failure"
    return f"kboot: a test that needs what this machine lacks is skipped ({STRICT_VARIABLE} unset)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    bad = sorted(
        f"{item.nodeid}: needs {name!r}"
        for item in items
        for name in _needs(item)
        if not isinstance(name, str) or requirement(name) is None
    )
    if bad:
        known = ", ".join([*REQUIREMENTS, "pyenv-X.Y"])
        raise pytest.UsageError(f"unknown requirements ({known} are known):\n" + "\n".join(bad))


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up: nothing is built in vain
def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in _needs(item):
        why = missing(name)
        if why is None:
            continue
        if strict():
            pytest.fail(f"needs {name}: {why} ({STRICT_VARIABLE}=1)", pytrace=False)
        pytest.skip(f"needs {name}: {why}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if strict() and report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"{reason} ({STRICT_VARIABLE}=1: a skip is a failure here)"
    return report
