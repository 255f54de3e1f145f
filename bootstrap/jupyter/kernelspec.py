"""What Jupyter reads of a kboot environment's kernel: its name and its kernel.json,
built from the environment's record and read back from disk.

Where Jupyter looks for kernelspecs is `paths.jupyter_kernels_dir`; who owns the folder
is `kernels`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrap.state.record import EnvRecord
from bootstrap.system.errors import EnvironmentStateError, KernelError, UsageError
from bootstrap.system.paths import EnvLayout

KERNEL_JSON = "kernel.json"
IPYKERNEL = "ipykernel"
PREFIX = "kboot-"
#: Characters Jupyter allows in a kernel name (jupyter_client's `_kernel_name_pat`).
NOT_IN_NAME = re.compile(r"[^a-z0-9._-]")
#: What jupyter_client replaces in a kernel's argv ({connection_file}, {prefix}, ...).
_ARGV_TEMPLATE = re.compile(r"\{[A-Za-z0-9_]+\}")


def kernel_name(env_name: str) -> str:
    """`kboot-<env name>`, lowercase, only the characters Jupyter allows in a kernel name."""
    return PREFIX + NOT_IN_NAME.sub("-", env_name.lower())


def display_name(env_name: str, profile_name: str, floatx: str) -> str:
    """What Jupyter's launcher shows: "Keras · jax-cpu · float32"."""
    shown = env_name if profile_name in ("", env_name) else f"{env_name} ({profile_name})"
    return f"Keras · {shown} · {floatx}"


def env_python(environment: Path) -> Path:
    """The python a kboot environment has (or will have) at `environment`, as virtualenv
    lays it out on this platform."""
    return Path(EnvLayout.for_platform(environment, python_version=(3, 0)).python)


# --- kernel.json --------------------------------------------------------------------


@dataclass(frozen=True)
class KernelSpec:
    """The kernel.json kboot writes for an environment."""

    name: str
    display_name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    environment: str  # the environment's path (metadata: for people, not proof)
    debugger: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "display_name": self.display_name,
            "language": "python",
            # jupyter_client fills `$NAME` in env values from the server's environment;
            # `$$` is a literal `$`, so a path or a value holding one stays as it is
            "env": {key: value.replace("$", "$$") for key, value in sorted(self.env.items())},
            "metadata": {
                "debugger": self.debugger,
                "kboot": {"environment": self.environment, "kernel": self.name},
            },
        }

    def render(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode("utf-8")


def build_spec(environment: Path, python: Path, record: EnvRecord) -> KernelSpec:
    """kernel.json for the environment its record describes (a pure function of both)."""
    profile = record.profile
    backend, floatx = profile.get("backend"), profile.get("floatx")
    profile_name = profile.get("name", "")
    if not (isinstance(backend, str) and isinstance(floatx, str) and isinstance(profile_name, str)):
        raise EnvironmentStateError(
            f"{environment}'s record names no backend and floatx",
            hint="rebuild the environment: kboot create PROFILE --force",
        )
    argv = (str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}")
    if _ARGV_TEMPLATE.search(str(python)):
        raise UsageError(
            f"the environment's path {environment} holds {{...}}, which Jupyter replaces in a "
            "kernel's command line: a kernel there would not start",
            hint="build the environment in a folder without braces in its path",
        )
    # the startup file's variables: KERAS_HOME (--scope env), the profile's env, JAX_ENABLE_X64
    env = {"KERAS_BACKEND": backend, **record.startup_env}
    if record.scope == "user" and record.keras_home:
        # the shared keras.json it was made with, named outright: a KERAS_HOME in the
        # server's environment does not move it (its floatx follows that shared file)
        env.setdefault("KERAS_HOME", str(record.keras_home))
    ipykernel = record.packages.get(IPYKERNEL, "")
    return KernelSpec(
        name=kernel_name(record.name),
        display_name=display_name(record.name, profile_name, floatx),
        argv=argv,
        env=env,
        environment=str(environment),
        debugger=_major(ipykernel) >= 6,  # ipykernel 6 brought the debugger (with debugpy)
    )


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass(frozen=True)
class KernelJson:
    """What a kernel.json on disk says, as far as kboot reads it."""

    argv: tuple[str, ...]
    display_name: str
    env: Mapping[str, str]
    environment: str | None  # metadata.kboot.environment, if any


def parse_kernel_json(raw: bytes, path: Path) -> KernelJson:
    """A kernel.json read from disk, or a KernelError naming the file and what is wrong."""

    def fail(what: str) -> KernelError:
        return KernelError(f"{path} is not a valid kernel.json ({what})")

    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise fail("not JSON") from None
    if not isinstance(data, dict):
        raise fail("not a JSON object")
    argv = data.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise fail("'argv' is not a list of strings")
    name = data.get("display_name")
    if not isinstance(name, str):
        raise fail("'display_name' is not a string")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise fail("'env' is not a table of strings")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise fail("'metadata' is not an object")
    kboot = metadata.get("kboot")
    environment = kboot.get("environment") if isinstance(kboot, dict) else None
    return KernelJson(
        tuple(argv), name, dict(env), environment if isinstance(environment, str) else None
    )
