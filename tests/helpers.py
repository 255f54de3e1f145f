"""Helpers for the tests that build real environments through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bootstrap.install.venv import VirtualEnv

#: The built-in profiles kboot ships (the tests of each say what it must be).
BUILTIN_NAMES = frozenset(
    {
        "jax",
        "jax-cpu",
        "jax-gpu",
        "tf",
        "torch",
        "numpy",
        "openvino",
        "tf-cpu",
        "tf-gpu",
        "torch-cpu",
        "torch-gpu",
        "theano",
        "cntk",
        "plaidml",
        "tf-keras2",
    }
)

REPORT = (
    "import json, keras, keras.ops as ops\n"
    "print(json.dumps({'backend': keras.config.backend(), 'floatx': keras.config.floatx(),"
    " 'image_data_format': keras.config.image_data_format(),"
    " 'epsilon': keras.config.epsilon(),"
    " 'dtype': str(ops.convert_to_numpy(ops.ones((1,), dtype=keras.config.floatx())).dtype)}))"
)
#: The same for multi-backend Keras 2 (and tf-keras), on Pythons as old as 3.6.
REPORT_KERAS2 = (
    "import json, sys, importlib\n"
    "keras = importlib.import_module(sys.argv[1])\n"
    "K = keras.backend\n"
    "print(json.dumps({'backend': K.backend(), 'floatx': K.floatx(),"
    " 'image_data_format': K.image_data_format(), 'epsilon': K.epsilon(),"
    " 'version': keras.__version__}))"
)


def kboot(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootstrap", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def start_kboot(*args: str, until: str) -> subprocess.Popen[str]:
    """Start kboot and return once a line of its progress (stderr) contains `until`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if until in line:
            return proc
    raise AssertionError(f"kboot {' '.join(args)} ended before printing {until!r}")


def kboot_offline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kboot in a new network namespace, with an installer cache that holds nothing yet."""
    return subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "bootstrap", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "empty-uv-cache")},
        timeout=600,
        check=False,
    )


def created(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def python_of(env_path: Path) -> Path:
    return env_path / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def run_in_fresh_shell(
    env_path: Path, tmp_path: Path, code: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run code with the environment's python for a user with an empty HOME and no KERAS_*."""
    empty_home = tmp_path / "fresh-home"
    empty_home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_")}
    env["HOME"] = str(empty_home)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [str(python_of(env_path)), "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (empty_home / ".keras" / "keras.json").exists(), "keras used the user's home"
    return proc


def report_from_fresh_shell(
    env_path: Path, tmp_path: Path, *, keras2: str | None = None
) -> dict[str, Any]:
    """What keras reports in the environment; keras2 names the module for Keras 2 APIs."""
    if keras2:
        proc = run_in_fresh_shell(env_path, tmp_path, REPORT_KERAS2, keras2)
    else:
        proc = run_in_fresh_shell(env_path, tmp_path, REPORT)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks(language: str = "sh") -> list[str]:
    """The README's fenced code blocks of one language, as the shell would read them:
    one entry per command line (continuation lines joined); for a block whose first line
    is `# NAME`, the whole block (a file the reader writes)."""
    text = README.read_text(encoding="utf-8")
    found: list[str] = []
    for block in re.findall(r"^```" + re.escape(language) + r"\n(.*?)^```", text, re.M | re.S):
        if language != "sh":
            found.append(block)
            continue
        found += [
            line.strip()
            for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    return found


@dataclass(frozen=True)
class OtherUser:
    """A second account on this machine, made for one test (`other_user()`)."""

    name: str
    uid: int
    gid: int

    def argv(self, *command: str) -> list[str]:
        return ["runuser", "-u", self.name, "--", *command]

    def run(self, *command: str) -> None:
        subprocess.run(self.argv(*command), check=True, timeout=60)


@contextlib.contextmanager
def other_user() -> Iterator[OtherUser]:
    """A real second account for the test's length, removed afterwards with whatever it
    still runs. Tests using it declare `@pytest.mark.needs("second-user")`."""
    name = f"kbt{secrets.token_hex(5)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh",
         "--user-group", name],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    try:
        import pwd  # POSIX only: this module is imported on Windows too

        entry = pwd.getpwnam(name)
        yield OtherUser(name, entry.pw_uid, entry.pw_gid)
    finally:  # what the account still runs (runuser's children) ends first, by pid
        for _ in range(20):
            found = subprocess.run(["pgrep", "-u", name], capture_output=True, text=True,
                                   check=False)  # fmt: skip
            for pid in found.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            if subprocess.run(["userdel", name], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.2)


#: Keras 3 as the smoke test's probe sees it: the backend from keras.json (else
#: tensorflow), the profile's other values, and a 2x2 matmul that gives 2.0 everywhere.
FAKE_KERAS = """\
import json, os
__version__ = "3.15.1"
try:
    with open(os.path.join(os.environ["KERAS_HOME"], "keras.json")) as _f:
        _backend = json.load(_f).get("backend", "tensorflow")
except (OSError, ValueError, KeyError, AttributeError):
    _backend = "tensorflow"


class config:
    backend = staticmethod(lambda: _backend)
    floatx = staticmethod(lambda: "float32")
    image_data_format = staticmethod(lambda: "channels_last")
    epsilon = staticmethod(lambda: 1e-07)


class _Array:
    dtype = "float32"

    def reshape(self, *shape):
        return [2.0, 2.0, 2.0, 2.0]


class ops:
    ones = staticmethod(lambda shape, dtype=None: _Array())
    matmul = staticmethod(lambda a, b: a)
    convert_to_numpy = staticmethod(lambda x: x)
"""


def handmade_env(folder: Path) -> VirtualEnv:
    """A virtualenv made by hand (python -m venv, no pip) holding FAKE_KERAS."""
    from bootstrap.install.venv import VirtualEnv

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    env = VirtualEnv.open(folder)
    (env.site_packages / "keras").mkdir()
    (env.site_packages / "keras" / "__init__.py").write_text(FAKE_KERAS)
    return env


def plant(site_packages: Path, packages: dict[str, str]) -> None:
    """Installed distributions as installers leave them: a dist-info folder each."""
    for name, version in packages.items():
        info = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def resolved_lock(path: Path, profile: str = "numpy", python: str = "3.11") -> Path:
    """A pylock.toml for `profile`, written by `kboot lock`'s own code with uv's resolution
    stood in for (made-up files and hashes): for tests that need a lock kboot accepts and
    no network. The files are not real: nothing can be installed from it."""
    import pytest

    from bootstrap.install.platforms import Target, host_platform
    from bootstrap.locks import resolve
    from bootstrap.locks.model import LockedFile, Pin
    from bootstrap.profiles.catalog import catalog

    def pins(loaded: object, target: Target, base: object = None) -> list[Pin]:
        found = []
        for name, version in (("keras", "3.15.1"), ("numpy", "2.4.6"), ("scipy", "1.17.0"),
                              ("jax", "0.10.2"), ("jaxlib", "0.10.2")):  # fmt: skip
            digest = hashlib_hex(f"{name}-{version}")
            wheel = LockedFile(
                f"{name}-{version}-py3-none-any.whl", digest, url=f"https://files.invalid/{name}"
            )
            found.append(Pin(name, version, (f"sha256:{digest}",), files=(wheel,)))
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resolve, "_resolve", pins)
        target = Target(python, host_platform())
        resolve.make_lock(catalog().resolve(profile), targets=[target], output=path)
    return path


def hashlib_hex(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
