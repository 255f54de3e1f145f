"""Shell completion, through the protocol the shells use (typer's bash and zsh scripts set
`_KBOOT_COMPLETE`, and COMP_WORDS/COMP_CWORD or _TYPER_COMPLETE_ARGS), in a real process:
what a <TAB> prints is exactly what the shell offers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bootstrap.install.installers import INSTALLERS
from bootstrap.profiles.keras_json import KNOWN_BACKENDS, SETTABLE_KEYS
from bootstrap.profiles.model import ACCELERATORS, FLOATX_VALUES, IMAGE_DATA_FORMATS


def bash_tab(line: str) -> subprocess.CompletedProcess[str]:
    """What bash's <TAB> at the end of `line` gets: its words as bash splits them (at
    spaces and at `=`, which is in bash's COMP_WORDBREAKS), the cursor in the last one."""
    words = line.replace("=", " = ").split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = {**os.environ, "_KBOOT_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(words),
           "COMP_CWORD": str(cword)}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "bootstrap"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def offered(line: str) -> list[str]:
    proc = bash_tab(line)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing printed into the user's terminal
    return proc.stdout.split()


def test_run_completes_profiles_and_prints_no_error() -> None:
    proc = bash_tab("kboot run nu")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.split() == ["numpy"]
    assert "COMMAND" not in proc.stdout
    assert offered("kboot run numpy jax-c") == ["jax-cpu"]


def test_run_still_needs_the_command_when_it_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "bootstrap", "run", "numpy"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2 and "needs `-- COMMAND`" in proc.stderr


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("kboot create numpy --installer ", list(INSTALLERS)),
        ("kboot create numpy --installer p", ["pip"]),
        ("kboot kernel numpy --installer ", list(INSTALLERS)),
        ("kboot create numpy --accelerator ", list(ACCELERATORS)),
        ("kboot create numpy --accelerator cuda", ["cuda", "cuda-12", "cuda-13"]),
        ("kboot lock tf --accelerator c", ["cpu", "cuda", "cuda-12", "cuda-13"]),
        ("kboot download tf --accelerator a", ["auto"]),
        ("kboot create numpy --scope ", ["env", "user"]),
    ],
)
def test_options_with_choices_complete_them(line: str, wanted: list[str]) -> None:
    assert offered(line) == wanted


def test_config_set_completes_keys_then_their_values() -> None:
    assert offered("kboot config set ") == [f"{key}=" for key in SETTABLE_KEYS]
    assert offered("kboot config set fl") == ["floatx="]
    # bash: after `floatx=` (a word break) readline inserts the value alone
    assert offered("kboot config set floatx=") == list(FLOATX_VALUES)
    assert offered("kboot config set floatx=float6") == ["float64"]
    assert offered("kboot config set backend=") == list(KNOWN_BACKENDS)
    assert offered("kboot config set floatx=float64 image_data_format=channels_f") == [
        "channels_first"
    ]
    assert offered("kboot config set nnx_enabled=") == ["true", "false"]
    assert offered("kboot config set epsilon=") == []  # a number: nothing to offer


def test_zsh_gets_the_whole_word() -> None:
    env = {**os.environ, "_KBOOT_COMPLETE": "complete_zsh",
           "_TYPER_COMPLETE_ARGS": "kboot config set image_data_format=ch"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "bootstrap"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == ""
    for value in IMAGE_DATA_FORMATS:
        assert f'"image_data_format={value}"' in proc.stdout
