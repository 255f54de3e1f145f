"""Reading installer output, planning installs and wheel platform tags; nothing runs."""

from __future__ import annotations

import pytest

from bootstrap.install.failures import HASH_MISMATCH, NOT_FOUND, failure_cause
from bootstrap.install.installers import (
    PipInstaller,
    UvInstaller,
    plan_install,
    satisfied_by,
)
from bootstrap.locks.wheelhouse import pip_platform_tags
from bootstrap.system.errors import UsageError

UV_HASH = """\
Resolved 1 package in 3ms
error: Failed to prepare distributions
  Caused by: Failed to fetch wheel: namex==0.1.0
  Caused by: Hash mismatch for `namex==0.1.0`

Expected:
  sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa

Computed:
  sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
"""

PIP_HASH = """\
Collecting namex==0.1.0 (from -r /locks/lab.txt (line 2))
  Downloading namex-0.1.0-py3-none-any.whl (5.9 kB)
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have \
updated the package versions, please update the hashes. Otherwise, examine the package \
contents carefully; someone may have tampered with them.
    namex==0.1.0 from https://files.index.example/packages/namex-0.1.0-py3-none-any.whl:
        Expected sha256 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
             Got        bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
"""

UV_MISSING = """\
  x No solution found when resolving dependencies:
  `-> Because namex was not found in the provided package locations and you require \
namex==0.1.0, we can conclude that your requirements are unsatisfiable.
"""

PIP_MISSING = """\
Looking in links: /wheels
ERROR: Could not find a version that satisfies the requirement namex==0.1.0 (from versions: none)
ERROR: No matching distribution found for namex==0.1.0
"""


# ---- hash mismatches -------------------------------------------------------------------


def hash_mismatch(text: str) -> str | None:
    cause = failure_cause(text)
    return cause.subject or "?" if cause is not None and cause.kind == HASH_MISMATCH else None


def test_uv_hash_mismatch_names_the_package() -> None:
    assert hash_mismatch(UV_HASH) == "namex==0.1.0"


def test_uv_hash_mismatch_lowercase() -> None:
    text = "error: Failed to download `namex==0.1.0`\n  Caused by: hash mismatch for `namex==0.1.0`"
    assert hash_mismatch(text) == "namex==0.1.0"


def test_pip_hash_mismatch_names_the_package() -> None:
    assert hash_mismatch(PIP_HASH) == "namex==0.1.0"


def test_a_hash_mismatch_without_a_name_is_still_recognised() -> None:
    text = "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
    cause = failure_cause(text)
    assert cause is not None and cause.line == "hash mismatch for a locked package"


@pytest.mark.parametrize(
    "text",
    [
        "",
        UV_MISSING,
        PIP_MISSING,
        "error: Failed to fetch: `https://index.example/simple/namex/`\n  Caused by: dns error",
        "ERROR: Hashes are required in --require-hashes mode, but they are missing from some "
        "requirements. Here is a list of those requirements along with the hashes their "
        "downloaded archives actually had.\n    namex==0.1.0 --hash=sha256:aaaa",
        "Successfully installed namex-0.1.0",
    ],
)
def test_other_output_is_no_hash_mismatch(text: str) -> None:
    assert hash_mismatch(text) is None


# ---- offline misses --------------------------------------------------------------------


def missing(text: str) -> str | None:
    cause = failure_cause(text)
    return cause.subject if cause is not None and cause.kind == NOT_FOUND else None


def test_uv_offline_miss_names_the_requirement() -> None:
    assert missing(UV_MISSING) == "namex==0.1.0"


def test_pip_offline_miss_names_the_requirement() -> None:
    assert missing(PIP_MISSING) == "namex==0.1.0"


@pytest.mark.parametrize("text", ["", UV_HASH, PIP_HASH, "Successfully installed namex-0.1.0"])
def test_other_output_is_no_offline_miss(text: str) -> None:
    assert missing(text) is None


# ---- install plans ---------------------------------------------------------------------

BASE = {"numpy": "1.26.4", "torch": "2.3.1", "typing-extensions": "4.12.2"}
WANTED = ("keras>=3.8,<4", "torch>=2.2", "numpy>=2", "Typing_Extensions")


def test_uv_drops_what_the_base_satisfies_and_pins_the_base() -> None:
    plan = plan_install(UvInstaller(), WANTED, BASE)
    assert plan.requirements == ("keras>=3.8,<4", "numpy>=2")  # numpy 1.26 does not fit
    assert plan.reused == {"torch>=2.2": "2.3.1", "Typing_Extensions": "4.12.2"}
    assert plan.constraints == BASE


def test_pip_keeps_everything() -> None:
    plan = plan_install(PipInstaller(), WANTED, BASE)
    assert plan.requirements == WANTED
    assert plan.reused == {}
    assert plan.constraints == {}


@pytest.mark.parametrize("base", [None, {}])
def test_no_base_keeps_everything(base: dict[str, str] | None) -> None:
    plan = plan_install(UvInstaller(), WANTED, base)
    assert plan.requirements == WANTED
    assert plan.reused == {}
    assert plan.constraints == {}


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("torch>=2.2", "2.3.1"),
        ("torch==2.3.1", "2.3.1"),
        ("torch<2", None),
        ("Torch", "2.3.1"),
        ("jax", None),
        ("torch[cuda]>=2", "2.3.1"),  # extras are not checked
        ("numpy>=1.26; python_version >= '3'", "1.26.4"),
    ],
)
def test_satisfied_by(requirement: str, expected: str | None) -> None:
    assert satisfied_by(requirement, BASE) == expected


def test_satisfied_by_accepts_an_installed_prerelease() -> None:
    assert satisfied_by("jax>=0.4", {"jax": "0.5.0rc1"}) == "0.5.0rc1"


# ---- wheel platform tags ---------------------------------------------------------------


def test_tags_for_this_host() -> None:
    tags = pip_platform_tags("x86_64-unknown-linux-gnu")
    assert tags
    assert len(tags) == len(set(tags))
    assert any(t.startswith("manylinux") and t.endswith("_x86_64") for t in tags)
    assert "linux_x86_64" in tags


def test_tags_for_linux_aarch64() -> None:
    tags = pip_platform_tags("aarch64-unknown-linux-gnu")
    assert tags[0] == "manylinux_2_28_aarch64"
    assert "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags
    assert tags[-1] == "manylinux1_aarch64"
    assert all(t.endswith("_aarch64") for t in tags)


def test_tags_for_intel_mac() -> None:
    tags = pip_platform_tags("x86_64-apple-darwin")
    assert "macosx_11_0_x86_64" in tags
    assert "macosx_10_9_x86_64" in tags
    assert all(t.startswith("macosx_") and t.endswith("_x86_64") for t in tags)


def test_tags_for_apple_silicon() -> None:
    tags = pip_platform_tags("aarch64-apple-darwin")
    assert "macosx_11_0_arm64" in tags
    assert all(t.endswith("_arm64") for t in tags)


def test_tags_for_windows() -> None:
    assert pip_platform_tags("x86_64-pc-windows-msvc") == ["win_amd64"]


def test_an_unknown_platform_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        pip_platform_tags("sparc-sun-solaris")
    assert info.value.exit_code == 2
    assert "sparc-sun-solaris" in info.value.message


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (
            "error: No solution found when resolving dependencies\n  cause: Because "
            "kboot-no-such-package-x was not found in the package registry and you require "
            "kboot-no-such-package-x, we can conclude that your requirements are unsatisfiable.",
            "kboot-no-such-package-x was not found on the package index",
        ),
        (
            "  cause: Because tensorflow-cpu==2.15.0 depends on keras>=2.15.0,<2.16 and you "
            "require keras==3.8.0, we can conclude that your requirements and\n"
            "         tensorflow-cpu==2.15.0 are incompatible.",
            "tensorflow-cpu==2.15.0 depends on keras>=2.15.0,<2.16 and you require keras==3.8.0",
        ),
        (
            "  cause: Because there is no version of numpy==1.0.0 and you require numpy==1.0.0, "
            "we can conclude that your requirements are unsatisfiable.",
            "there is no version of numpy==1.0.0 and you require numpy==1.0.0",
        ),
        (
            "ERROR: Cannot install keras==3.8.0 and tensorflow-cpu==2.15.0 because these package "
            "versions have conflicting dependencies.\n\nThe conflict is caused by:\n"
            "    The user requested keras==3.8.0\n"
            "    tensorflow-cpu 2.15.0 depends on keras<2.16 and >=2.15.0\n",
            "conflicting requirements: The user requested keras==3.8.0; tensorflow-cpu 2.15.0 "
            "depends on keras<2.16 and >=2.15.0",
        ),
        (
            "ERROR: Could not find a version that satisfies the requirement jaxlib==0.1 "
            "(from versions: none)\nERROR: No matching distribution found for jaxlib==0.1\n",
            "no matching distribution found for jaxlib==0.1",
        ),
        (
            "error: Failed to install: numpy-2.4.6.whl\n  Caused by: failed to write to file\n"
            "  Caused by: No space left on device (os error 28)",
            "no space left on the device",
        ),
        ("OSError: [Errno 28] No space left on device", "no space left on the device"),
    ],
)
def test_an_install_failure_is_one_line_naming_the_cause(output: str, reason: str) -> None:
    cause = failure_cause(output)
    assert cause is not None and cause.line == reason
