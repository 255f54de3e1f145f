"""Which profiles have a build on macOS and Windows, said before any resolution (issue 17):
the pure function over a table of profiles and platforms, and `kboot lock` refusing at
once (these tests run offline: a lock that tried to resolve would fail otherwise)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bootstrap.install.accelerators import resolve
from bootstrap.install.availability import no_build
from bootstrap.install.platforms import Target
from bootstrap.profiles.catalog import load_profile
from bootstrap.system.paths import builtin_profiles_dir
from helpers import kboot

LINUX, ARM = "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"
MAC, INTEL_MAC = "aarch64-apple-darwin", "x86_64-apple-darwin"
WIN, WIN_ARM = "x86_64-pc-windows-msvc", "aarch64-pc-windows-msvc"
PYTHON = {"cntk": "3.6", "plaidml": "3.6", "theano": "3.7"}
BUILTINS = sorted(p.stem for p in builtin_profiles_dir().glob("*.toml"))
GPU_ONLY = {"tf-gpu", "jax-gpu", "torch-gpu"}  # refused by the accelerator choice itself
#: The built-in profiles with no build on each platform (every other one has one).
NO_BUILD = {
    LINUX: set(),
    WIN: set(),
    MAC: {"cntk", "plaidml", "theano"},
    INTEL_MAC: {"cntk", "torch", "torch-cpu"},
}


def why_not(name: str, platform: str) -> str | None:
    profile = load_profile(builtin_profiles_dir() / f"{name}.toml")
    applied, _ = resolve(profile, None, platform=platform)  # as `kboot lock` does
    return no_build(applied, Target(PYTHON.get(name, "3.12"), platform))


@pytest.mark.parametrize("platform", sorted(NO_BUILD))
def test_which_builtin_profiles_have_a_build(platform: str) -> None:
    names = [n for n in BUILTINS if not (n in GPU_ONLY and platform in (MAC, INTEL_MAC, WIN))]
    refused = {name for name in names if why_not(name, platform)}
    assert refused == NO_BUILD[platform]


@pytest.mark.parametrize(
    ("name", "platform", "reason"),
    [
        ("cntk", MAC, "CNTK 2.7 (the last release) was built for Linux and Windows x86_64"),
        ("plaidml", MAC, "PlaidML 0.7 (the last release) was built for x86_64 only"),
        ("theano", MAC, "Python 3.7 predates Apple silicon"),
        ("torch", INTEL_MAC, "torch 2.2.2 was the last release built for this platform"),
    ],
)
def test_the_reason_names_the_fact(name: str, platform: str, reason: str) -> None:
    assert reason in str(why_not(name, platform))


@pytest.mark.parametrize(
    ("packages", "platform", "python", "reason"),
    [
        (("jax[cuda12]>=0.5",), WIN, "3.12", "WSL2"),
        (("jax[cuda13]",), MAC, "3.12", "macOS has no CUDA"),
        (("jax[cuda13]",), LINUX, "3.12", None),
        (("jax[cuda13]",), ARM, "3.12", None),
        (("jax", "jax-cuda12-plugin"), WIN, "3.12", "Linux only"),
        (("tensorflow[and-cuda]>=2.16",), WIN, "3.12", "WSL2"),
        (("tensorflow[and-cuda]>=2.16",), MAC, "3.12", "macOS has no CUDA"),
        (("tensorflow[and-cuda]>=2.16",), LINUX, "3.12", None),
        (("tensorflow", "tensorflow-metal"), MAC, "3.12", None),  # asked for: the user's call
        (("tensorflow", "tensorflow-metal"), MAC, "3.13", "no wheels past Python 3.12"),
        (("tensorflow", "tensorflow-metal"), LINUX, "3.12", "macOS only"),
        (("tensorflow", "tensorflow-metal; sys_platform == 'darwin'"), LINUX, "3.12", None),
        (("jax", "jax-metal"), MAC, "3.12", None),
        (("jax", "jax-metal"), INTEL_MAC, "3.12", "Apple silicon"),
        (("jax", "jax-metal"), WIN, "3.12", "Apple silicon"),
        (("torch>=2.6",), INTEL_MAC, "3.12", "torch 2.2.2 was the last"),
        (("torch<2.3",), INTEL_MAC, "3.11", None),
        (("torch==2.1.0",), INTEL_MAC, "3.11", None),
        (("tensorflow>=2.17",), INTEL_MAC, "3.12", "tensorflow 2.16.2 was the last"),
        (("tensorflow>=2.16,<3",), INTEL_MAC, "3.12", None),
        (("tensorflow-cpu",), WIN_ARM, "3.12", "no Windows ARM64 wheels"),
        (("jax",), WIN_ARM, "3.12", "no Windows ARM64 wheels"),
        (("plaidml-keras==0.7.0",), WIN, "3.6", None),
        (("plaidml-keras==0.7.0",), ARM, "3.6", "x86_64 only"),
    ],
)
def test_a_profiles_packages_on_a_platform(
    write_profile: Any, packages: tuple[str, ...], platform: str, python: str, reason: str | None
) -> None:
    mine = replace(
        load_profile(write_profile("mine", 'backend = "jax"\npackages = ["jax"]\n')),
        packages=packages,
    )
    why = no_build(mine, Target(python, platform))
    if reason is None:
        assert why is None
    else:
        assert why is not None and reason in why


@pytest.mark.parametrize(
    ("name", "platform", "python", "said"),
    [
        ("cntk", MAC, "3.6", "CNTK 2.7 (the last release) was built for Linux and Windows"),
        ("theano", MAC, "3.7", "predates Apple silicon"),
        ("torch-cpu", INTEL_MAC, "3.12", "torch 2.2.2 was the last release"),
    ],
)
def test_lock_says_why_before_resolving(name: str, platform: str, python: str, said: str) -> None:
    """Offline in the fast tier: a refusal after trying the index would say so instead."""
    proc = kboot("lock", name, "--platform", platform, "--python-version", python, "--json")
    assert proc.returncode == 2, proc.stderr
    assert said in proc.stderr and f"profile {name} has no build for Python {python}" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- torch float64 on macOS: MPS has no float64, so Keras computes on the CPU -----------------
# (Not run for real: these machines are Linux. Keras 3 reads KERAS_TORCH_DEVICE before it
# looks for MPS, in keras/src/backend/torch/core.py; the startup file sets it at start.)


@pytest.mark.parametrize(
    ("backend", "floatx", "platform", "expected"),
    [
        ("torch", "float64", MAC, {"KERAS_TORCH_DEVICE": "cpu"}),
        ("torch", "float64", INTEL_MAC, {"KERAS_TORCH_DEVICE": "cpu"}),
        ("torch", "float32", MAC, {}),  # MPS for float32
        ("torch", "float64", LINUX, {}),
        ("torch", "float64", WIN, {}),
        ("jax", "float64", MAC, {"JAX_ENABLE_X64": "1"}),
        ("tensorflow", "float64", MAC, {}),
    ],
)
def test_the_variables_a_backend_needs(
    write_profile: Any, backend: str, floatx: str, platform: str, expected: dict[str, str]
) -> None:
    from bootstrap.envs.stages import backend_env

    package = {"tensorflow": "tensorflow>=2.16"}.get(backend, backend)
    text = f'backend = "{backend}"\nfloatx = "{floatx}"\npackages = ["{package}"]\n'
    assert backend_env(load_profile(write_profile("p", text)), platform) == expected


def test_a_profile_that_names_the_torch_device_keeps_it(write_profile: Any) -> None:
    from bootstrap.envs.stages import backend_env

    text = (
        'backend = "torch"\nfloatx = "float64"\npackages = ["torch"]\n'
        'env = { KERAS_TORCH_DEVICE = "mps" }\n'
    )
    assert backend_env(load_profile(write_profile("p", text)), MAC) == {}


def test_create_says_it_computes_on_the_cpu(
    write_profile: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The configure stage on a Mac: the variable reaches the startup file, with a note."""
    from types import SimpleNamespace

    from bootstrap.envs import stages

    monkeypatch.setattr(stages, "host_platform", lambda: MAC)
    text = 'backend = "torch"\nfloatx = "float64"\npackages = ["torch"]\n'
    warned: list[str] = []
    written: dict[str, str] = {}
    job = SimpleNamespace(
        profile=load_profile(write_profile("p", text)),
        target=SimpleNamespace(path=tmp_path / "env"),
        request=SimpleNamespace(scope="env"),
        warn=warned.append,
        reporter=None,
    )
    env = SimpleNamespace(write_startup_env=written.update)
    (tmp_path / "env").mkdir()
    stages.configure(job, env, lambda path: None, fresh=False)  # type: ignore[arg-type]
    assert written["KERAS_TORCH_DEVICE"] == "cpu"
    assert warned == [stages.MPS_FLOAT64_NOTE] and "MPS has no float64" in warned[0]


#: What the README's platform table says was proven by resolution: each of these resolves
#: for the platform from this machine (every package has a file there). torch-cpu is not
#: among them: its PyTorch CPU index cannot be reached from the test machines.
RESOLVED = [
    *[(name, platform, "3.12") for platform in (MAC, WIN)
      for name in ("numpy", "jax-cpu", "tf-cpu", "openvino", "jax", "tf", "torch")],
    ("tf-keras2", MAC, "3.12"), ("tf-keras2", WIN, "3.12"),
    ("theano", WIN, "3.7"), ("cntk", WIN, "3.6"), ("plaidml", WIN, "3.6"),
]  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(("name", "platform", "python"), RESOLVED)
def test_the_profiles_the_readme_says_resolve_there_do(
    name: str, platform: str, python: str
) -> None:
    proc = kboot("lock", name, "--platform", platform, "--python-version", python, "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert "lock-version" in proc.stdout and f'platform = "{platform}"' in proc.stdout
