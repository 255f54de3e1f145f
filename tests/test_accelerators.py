"""Which build of TensorFlow, JAX and PyTorch a machine gets: reading (with a fake /proc and
fake nvidia-smi), the pure decision over a table of drivers and platforms, and what the
smoke test says when the build installed is not the one chosen."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootstrap.envs.smoke import Expectation, HostGpuInfo, evaluate
from bootstrap.install.accelerators import (
    HostAccelerators,
    build_for,
    choose,
    cuda_generations,
    parse_driver_version,
    read_host,
    resolve,
)
from bootstrap.locks.lockfile import read_lock
from bootstrap.profiles.catalog import load_profile
from bootstrap.system.errors import UsageError
from helpers import created, kboot, kboot_offline

ROOT = Path(__file__).resolve().parent.parent

LINUX, ARM, MAC, WIN = (
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
)
PROPRIETARY = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.144.03  Mon Dec 30 17:44:08 UTC 2024\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OPEN = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
    "(nixbld@)\nGCC version:  gcc version 15.3.0 (GCC)\n"
)


@pytest.mark.parametrize(
    ("text", "version"),
    [(PROPRIETARY, "550.144.03"), (OPEN, "580.159.04"), ("garbage", None), ("", None)],
)
def test_parse_driver_version(text: str, version: str | None) -> None:
    assert parse_driver_version(text) == version


def fake_root(tmp_path: Path, version_text: str | None) -> Path:
    root = tmp_path / "root"
    folder = root / "proc" / "driver" / "nvidia"
    folder.mkdir(parents=True)
    if version_text is not None:
        (folder / "version").write_text(version_text, encoding="utf-8")
    return root


def fake_smi(tmp_path: Path, body: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_read_the_driver_from_proc(tmp_path: Path) -> None:
    host = read_host(root=fake_root(tmp_path, OPEN), platform=LINUX, nvidia_smi="")
    assert host.driver == "580.159.04" and "proc/driver/nvidia/version" in str(host.source)


def test_an_unreadable_driver_file_is_said_not_crashed(tmp_path: Path) -> None:
    host = read_host(root=fake_root(tmp_path, "NVRM: ???\n"), platform=LINUX, nvidia_smi="")
    assert (
        host.driver is None and host.problem and "no driver version kboot can read" in host.problem
    )
    choice = choose("auto", "jax", host)
    assert choice.kind == "cpu" and any("can read" in n for n in choice.notes)


def test_nvidia_smi_when_proc_says_nothing(tmp_path: Path) -> None:
    smi = fake_smi(tmp_path, 'echo "535.104.05"')
    host = read_host(root=fake_root(tmp_path, None), platform=LINUX, nvidia_smi=smi)
    assert host.driver == "535.104.05" and host.source == "nvidia-smi"


def test_an_nvidia_smi_that_hangs_is_time_boxed(tmp_path: Path) -> None:
    smi = fake_smi(tmp_path, "sleep 30")
    host = read_host(root=fake_root(tmp_path, None), platform=LINUX, nvidia_smi=smi, timeout=0.5)
    assert host.driver is None and "did not answer within 0.5 s" in str(host.problem)
    assert choose("auto", "torch", host).kind == "cpu"


def test_an_nvidia_smi_without_a_driver(tmp_path: Path) -> None:
    smi = fake_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    host = read_host(root=fake_root(tmp_path, None), platform=LINUX, nvidia_smi=smi)
    assert host.driver is None and "NVIDIA-SMI has failed" in str(host.problem)


def test_an_amd_gpu_gets_the_cpu_build_and_a_line_about_rocm(tmp_path: Path) -> None:
    root = fake_root(tmp_path, None)
    (root / "dev").mkdir()
    (root / "dev" / "kfd").write_text("")
    host = read_host(root=root, platform=LINUX, nvidia_smi="")
    choice = choose("auto", "torch", host)
    assert choice.kind == "cpu" and any("ROCm" in n for n in choice.notes)


@pytest.mark.parametrize(
    ("driver", "platform", "generations"),
    [
        ("580.159.04", LINUX, (13, 12)),
        ("580.0", LINUX, (13, 12)),
        ("575.51.03", LINUX, (12,)),
        ("525.60.13", LINUX, (12,)),
        ("525.60.12", LINUX, ()),
        ("470.82", LINUX, ()),
        ("528.33", WIN, (12,)),
        ("527.41", WIN, ()),
    ],
)
def test_cuda_generations_of_a_driver(
    driver: str, platform: str, generations: tuple[int, ...]
) -> None:
    assert cuda_generations(driver, platform) == generations


def host(driver: str | None, platform: str = LINUX) -> HostAccelerators:
    return HostAccelerators(platform, driver, "test" if driver else None)


@pytest.mark.parametrize(
    ("requested", "framework", "machine", "label"),
    [
        ("auto", "jax", host("580.159.04"), "cuda-13"),
        ("auto", "torch", host("550.144.03"), "cuda-12"),
        ("auto", "tensorflow", host("550.144.03"), "cuda-12"),
        ("auto", "jax", host(None), "cpu"),
        ("auto", "jax", host("470.82"), "cpu"),  # too old for every current CUDA build
        ("auto", "jax", host("580.1", ARM), "cuda-13"),
        ("auto", "tensorflow", host("580.1", ARM), "cpu"),  # TF ships CUDA for x86_64 only
        ("auto", "torch", host(None, MAC), "cpu"),
        ("auto", "jax", host("580.1", WIN), "cpu"),  # no Windows CUDA JAX
        ("auto", "torch", host("580.1", WIN), "cuda-13"),
        ("cpu", "torch", host("580.1"), "cpu"),
        ("cuda", "torch", host(None), "cuda-12"),  # a lock for GPU nodes, from anywhere
        ("cuda", "jax", host("580.1"), "cuda-13"),
        ("cuda-12", "jax", host("580.1"), "cuda-12"),
        ("cuda-13", "jax", host(None), "cuda-13"),
    ],
)
def test_the_choice_over_drivers_and_platforms(
    requested: str, framework: str, machine: HostAccelerators, label: str
) -> None:
    choice = choose(requested, framework, machine)
    assert choice.label == label
    assert choice.reason


def test_a_cuda_version_the_driver_does_not_run_gets_a_note() -> None:
    choice = choose("cuda-13", "torch", host("550.1"))
    assert choice.label == "cuda-13"
    assert any("update the driver" in note and "580" in note for note in choice.notes)


def test_cuda_where_the_framework_ships_none_is_refused() -> None:
    with pytest.raises(UsageError) as info:
        choose("cuda", "tensorflow", host("580.1", MAC))
    assert "no CUDA build" in info.value.message


@pytest.mark.parametrize(
    ("framework", "label", "platform", "requirement", "index"),
    [
        ("jax", "cuda-13", LINUX, "jax[cuda13]>=0.5", None),
        ("jax", "cuda-12", LINUX, "jax[cuda12]>=0.5", None),
        ("jax", "cpu", LINUX, "jax>=0.5", None),
        ("torch", "cuda-13", LINUX, "torch>=0.5", "https://download.pytorch.org/whl/cu130"),
        ("torch", "cuda-12", LINUX, "torch>=0.5", "https://download.pytorch.org/whl/cu128"),
        ("torch", "cpu", LINUX, "torch>=0.5", "https://download.pytorch.org/whl/cpu"),
        ("torch", "cpu", MAC, "torch>=0.5", None),
        ("tensorflow", "cuda-12", LINUX, "tensorflow[and-cuda]>=0.5", None),
        ("tensorflow", "cpu", LINUX, "tensorflow-cpu>=0.5", None),
        ("tensorflow", "cpu", MAC, "tensorflow>=0.5", None),
        ("tensorflow", "cpu", ARM, "tensorflow>=0.5", None),
    ],
)
def test_what_each_framework_ships(
    framework: str, label: str, platform: str, requirement: str, index: str | None
) -> None:
    cuda = int(label.split("-")[1]) if label != "cpu" else None
    choice = choose(f"cuda-{cuda}" if cuda else "cpu", framework, host("580.1", platform))
    build = build_for(framework, choice, ">=0.5", platform)
    assert build.requirement == requirement
    assert build.extra_index_urls == ((index,) if index else ())


#: uv's platform name for each (sys.platform, machine) a course laptop or a node has.
PLATFORMS = {
    ("linux", "x86_64"): LINUX,
    ("linux", "aarch64"): ARM,
    ("darwin", "aarch64"): MAC,
    ("darwin", "x86_64"): "x86_64-apple-darwin",
    ("win32", "x86_64"): WIN,
    ("win32", "aarch64"): "aarch64-pc-windows-msvc",
}
TF, TF_CPU = "tensorflow>=2.16,<3", "tensorflow-cpu>=2.16,<3"
CU = "https://download.pytorch.org/whl/"
REFUSED = "refused"
#: (os, machine, driver, framework, requested) -> label, requirement, extra index, a note
CHOICES = [
        # Linux x86_64: every CUDA build
        ("linux", "x86_64", None, "tensorflow", "auto", "cpu", TF_CPU, None, None),
        ("linux", "x86_64", "580.1", "tensorflow", "auto", "cuda-13",
         "tensorflow[and-cuda]>=2.16,<3", None, None),
        ("linux", "x86_64", "550.1", "jax", "auto", "cuda-12", "jax[cuda12]>=2.16,<3", None, None),
        ("linux", "x86_64", "580.1", "torch", "auto", "cuda-13", "torch>=2.16,<3", CU + "cu130",
         None),
        ("linux", "x86_64", "580.1", "torch", "cpu", "cpu", "torch>=2.16,<3", CU + "cpu", None),
        # Linux aarch64: no CUDA TensorFlow
        ("linux", "aarch64", "580.1", "tensorflow", "auto", "cpu", TF, None, None),
        ("linux", "aarch64", "580.1", "tensorflow", "cuda", REFUSED, None, None, None),
        ("linux", "aarch64", "580.1", "jax", "auto", "cuda-13", "jax[cuda13]>=2.16,<3", None, None),
        ("linux", "aarch64", "580.1", "torch", "auto", "cuda-13", "torch>=2.16,<3", CU + "cu130",
         None),
        # macOS on Apple silicon: plain tensorflow (no tensorflow-metal), CPU jax, MPS torch
        ("darwin", "aarch64", None, "tensorflow", "auto", "cpu", TF, None, "tensorflow-metal"),
        ("darwin", "aarch64", None, "tensorflow", "cpu", "cpu", TF, None, "tensorflow-metal"),
        ("darwin", "aarch64", None, "tensorflow", "cuda", REFUSED, None, None, None),
        ("darwin", "aarch64", None, "jax", "auto", "cpu", "jax>=2.16,<3", None, "jax-metal"),
        ("darwin", "aarch64", None, "jax", "cuda-12", REFUSED, None, None, None),
        ("darwin", "aarch64", None, "torch", "auto", "cpu", "torch>=2.16,<3", None, "MPS"),
        ("darwin", "aarch64", None, "torch", "cuda", REFUSED, None, None, None),
        ("darwin", "x86_64", None, "torch", "auto", "cpu", "torch>=2.16,<3", None, "MPS"),
        ("darwin", "x86_64", None, "tensorflow", "auto", "cpu", TF, None, "tensorflow-metal"),
        # Windows x86_64: CUDA torch from the PyTorch index; no GPU TensorFlow or JAX
        ("win32", "x86_64", "580.1", "tensorflow", "auto", "cpu", TF_CPU, None, "WSL2"),
        ("win32", "x86_64", "580.1", "tensorflow", "cuda", REFUSED, None, None, "WSL2"),
        ("win32", "x86_64", "580.1", "jax", "auto", "cpu", "jax>=2.16,<3", None, "WSL2"),
        ("win32", "x86_64", "580.1", "jax", "cuda", REFUSED, None, None, "WSL2"),
        ("win32", "x86_64", "580.1", "torch", "auto", "cuda-13", "torch>=2.16,<3", CU + "cu130",
         None),
        ("win32", "x86_64", "550.1", "torch", "auto", "cuda-12", "torch>=2.16,<3", CU + "cu128",
         None),
        ("win32", "x86_64", "527.41", "torch", "auto", "cpu", "torch>=2.16,<3", None, "too old"),
        ("win32", "x86_64", None, "torch", "auto", "cpu", "torch>=2.16,<3", None, None),
        ("win32", "x86_64", "580.1", "torch", "cpu", "cpu", "torch>=2.16,<3", None, None),
        # Windows on ARM64: no CUDA build of anything
        ("win32", "aarch64", "580.1", "torch", "auto", "cpu", "torch>=2.16,<3", None, None),
        ("win32", "aarch64", "580.1", "torch", "cuda", REFUSED, None, None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    "system, machine, driver, framework, requested, label, requirement, index, note", CHOICES
)
def test_the_choice_table(
    system: str, machine: str, driver: str | None, framework: str, requested: str,
    label: str, requirement: str | None, index: str | None, note: str | None,
) -> None:  # fmt: skip
    """(os, machine, driver, framework, requested) -> the build, its index and its notes."""
    platform = PLATFORMS[(system, machine)]
    if label == REFUSED:
        with pytest.raises(UsageError) as info:
            choose(requested, framework, host(driver, platform))
        assert "no CUDA build" in info.value.message
        assert note is None or note in str(info.value.hint)
        return
    choice = choose(requested, framework, host(driver, platform))
    build = build_for(framework, choice, ">=2.16,<3", platform)
    assert (choice.label, build.requirement) == (label, requirement)
    assert build.extra_index_urls == ((index,) if index else ())
    if note is not None:
        assert any(note in line for line in choice.notes), choice.notes
    if system == "darwin" and framework == "tensorflow":  # never by default
        assert "metal" not in build.requirement


def test_the_table_covers_every_platform_and_framework() -> None:
    covered = {(row[0], row[1], row[3]) for row in CHOICES}
    for system, machine in PLATFORMS:
        for framework in ("tensorflow", "jax", "torch"):
            if (system, machine) in {("darwin", "x86_64"), ("win32", "aarch64")}:
                continue  # the CPU builds only, as their neighbours: a row each suffices
            assert (system, machine, framework) in covered, (system, machine, framework)


def test_a_profile_takes_the_build_and_keeps_its_versions(write_profile: Any) -> None:
    profile = load_profile(
        write_profile(
            "mine",
            'backend = "torch"\naccelerator = "auto"\npackages = ["torch>=2.7", "pandas"]\n',
        )
    )
    applied, choice = resolve(profile, None, host=host("580.159.04"))
    assert choice is not None and choice.label == "cuda-13"
    assert applied.packages == ("torch>=2.7", "pandas")
    assert applied.sources.extra_index_urls == ("https://download.pytorch.org/whl/cu130",)
    assert applied.gpu is True
    cpu, _ = resolve(profile, "cpu", host=host("580.159.04"))
    assert cpu.gpu is False and cpu.sources.extra_index_urls == (
        "https://download.pytorch.org/whl/cpu",
    )


def test_accelerator_is_for_three_backends_and_decides_gpu(write_profile: Any) -> None:
    from bootstrap.system.errors import ProfileError

    with pytest.raises(ProfileError) as info:
        load_profile(
            write_profile("n", 'backend = "numpy"\npackages = ["numpy"]\naccelerator = "auto"\n')
        )
    assert "accelerator" in info.value.message
    with pytest.raises(ProfileError) as info:
        load_profile(write_profile("g", 'backend = "jax"\naccelerator = "cuda"\ngpu = true\n'))
    assert "gpu" in info.value.message
    with pytest.raises(ProfileError):
        load_profile(write_profile("b", 'backend = "jax"\naccelerator = "rocm"\n'))


def test_every_accelerated_builtin_resolves_on_every_machine_kind() -> None:
    from bootstrap.system.paths import builtin_profiles_dir

    for name in ("tf", "jax", "torch", "tf-cpu", "jax-cpu", "torch-cpu"):
        profile = load_profile(builtin_profiles_dir() / f"{name}.toml")
        for machine in (host(None), host("580.1"), host("550.1"), host(None, MAC), host(None, WIN)):
            applied, choice = resolve(profile, None, host=machine)
            assert choice is not None
            assert applied.gpu == (choice.kind == "cuda")


# --- the smoke test checks the build it got ------------------------------------------------

NO_DRIVER = HostGpuInfo(None, False, None)


def probe_report(backend: str, build: dict[str, Any], packages: dict[str, str]) -> dict[str, Any]:
    return {
        "backend": backend,
        "floatx": "float32",
        "image_data_format": "channels_last",
        "epsilon": 1e-07,
        "devices": [{"kind": "cpu", "name": "cpu"}],
        "build": build,
        "compute": {"dtype": "float32", "values": [2.0, 2.0, 2.0, 2.0]},
        "packages": packages,
    }


def expect(backend: str, build: str | None, *, gpu: bool = False) -> Expectation:
    return Expectation(
        backend, "float32", "channels_last", 1e-07, gpu=gpu, allow_cpu=True, build=build
    )


def test_a_cpu_profile_that_got_a_cuda_torch_is_reported() -> None:
    """`kboot create torch-cpu --find-links DIR` replaced the CPU index: 5 GB of CUDA."""
    report = probe_report("torch", {"cuda": "13.0"}, {"torch": "2.11.0"})
    result = evaluate(report, expect("torch", "cpu"), host=NO_DRIVER)
    assert not result.ok
    assert any("a CPU profile got a CUDA build of torch" in p for p in result.problems)
    assert "torch.version.cuda is 13.0" in result.reported["build"]


def test_a_cuda_profile_that_got_a_cpu_jax_is_reported() -> None:
    report = probe_report("jax", {"default_backend": "cpu"}, {"jax": "0.11.2", "jaxlib": "0.11.2"})
    result = evaluate(report, expect("jax", "cuda", gpu=True), host=NO_DRIVER)
    assert any("a CUDA profile got a CPU build of jax" in p for p in result.problems)


def test_the_right_builds_pass() -> None:
    jax = probe_report("jax", {}, {"jax": "0.11.2", "jax-cuda13-plugin": "0.11.2"})
    assert evaluate(jax, expect("jax", "cuda", gpu=True), host=NO_DRIVER).ok
    tf = probe_report("tensorflow", {"cuda": False}, {"tensorflow-cpu": "2.21.0"})
    assert evaluate(tf, expect("tensorflow", "cpu"), host=NO_DRIVER).ok


def test_a_cuda_build_in_a_profile_without_accelerator_is_a_warning() -> None:
    report = probe_report("torch", {"cuda": "12.8"}, {"torch": "2.11.0"})
    result = evaluate(report, expect("torch", None), host=NO_DRIVER)
    assert result.ok
    assert any('accelerator = "cpu"' in w for w in result.warnings)


# --- real runs on this (GPU-less) machine -------------------------------------------------


@pytest.mark.integration
@pytest.mark.needs("no-nvidia-driver")
def test_create_jax_here_gets_the_cpu_build_and_says_why() -> None:
    data = created(kboot("create", "jax", "--json"))
    assert data["accelerator"]["requested"] == "auto"
    assert data["accelerator"]["chosen"] == "cpu"
    assert "no NVIDIA driver" in data["accelerator"]["reason"]
    assert [d["name"].split(":")[0].lower() for d in data["smoke"]["devices"]] == ["cpu"]
    text = kboot("list")
    assert "jax" in text.stdout and text.returncode == 0


@pytest.mark.integration  # resolves against the package index
def test_lock_the_cuda_build_for_gpu_nodes_from_a_cpu_machine(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.tf-cuda.toml"
    proc = kboot(
        "lock", "tf", "--accelerator", "cuda", "--platform", "x86_64-unknown-linux-gnu",
        "--python-version", "3.12", "-o", str(lock),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = lock.read_text()
    assert "tensorflow[and-cuda]" in text  # what was asked, in the lock's header
    pinned = read_lock(lock).pins
    assert {"tensorflow", "keras", "nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= set(pinned)
    # and the CPU build for the same target has no CUDA libraries
    cpu = tmp_path / "pylock.tf-cpu.toml"
    proc = kboot(
        "lock", "tf", "--accelerator", "cpu", "--platform", "x86_64-unknown-linux-gnu",
        "--python-version", "3.12", "-o", str(cpu),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cpu_pins = read_lock(cpu).pins
    assert "tensorflow-cpu" in cpu_pins and not [n for n in cpu_pins if n.startswith("nvidia-")]


@pytest.mark.needs("no-nvidia-driver")
def test_cuda_asked_here_is_refused_before_any_download(tmp_path: Path) -> None:
    proc = kboot("create", "jax", "--accelerator", "cuda-13", "--json")
    assert proc.returncode == 1
    assert "no NVIDIA driver" in proc.stderr  # one line; the hint is in the document
    assert "--allow-cpu" in json.loads(proc.stdout)["hint"]
    assert not (tmp_path / "kboot-home" / "envs" / "jax").exists()


@pytest.mark.needs("no-nvidia-driver")
def test_the_gpu_proof_script_stops_clearly_without_a_gpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_proof.py"), "--steps", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no NVIDIA driver" in proc.stderr and "nothing was built" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
@pytest.mark.needs("unshare")
def test_an_environment_over_a_base_python_from_a_small_offline_wheelhouse(
    tmp_path: Path,
) -> None:
    """The GPU-node workflow on this machine: a base Python that already has the backend
    (here jax, CPU build), a lock over its packages made elsewhere, a wheelhouse of what it
    lacks, and an offline create that sits on the base."""
    base = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base)], check=True)
    subprocess.run(
        ["uv", "pip", "install", "--python", str(base / "bin" / "python"), "jax", "pip"],
        check=True, capture_output=True,
    )  # fmt: skip
    freeze = tmp_path / "base.txt"
    listed = subprocess.run(
        [str(base / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    freeze.write_text(listed.stdout)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    lock, house = tmp_path / "pylock.jax-cpu.toml", tmp_path / "wheels"
    proc = kboot(
        "lock", "jax-cpu", "--python-version", version, "--base-packages", str(freeze),
        "-o", str(lock),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pinned = set(read_lock(lock).pins)
    assert "keras" in pinned and not {"jax", "jaxlib", "numpy"} & pinned
    proc = kboot("download", "jax-cpu", "--lock", str(lock), "--dest", str(house))
    assert proc.returncode == 0, proc.stderr
    size = sum(f.stat().st_size for f in house.iterdir())
    assert size < 20 * 2**20, f"the wheelhouse should be small, it is {size} bytes"
    made = kboot_offline(
        tmp_path, "create", "jax-cpu", "--python", str(base / "bin" / "python"),
        "--system-site-packages", "--offline", "--wheelhouse", str(house), "--json",
    )  # fmt: skip
    data = created(made)
    assert data["smoke"]["ok"] and data["smoke"]["reported"]["backend"] == "jax"
    env_site = next(Path(data["path"]).glob("lib/python*/site-packages"))
    names = {p.name.split("-")[0].lower() for p in env_site.glob("*.dist-info")}
    assert "keras" in names and "jax" not in names and "jaxlib" not in names
