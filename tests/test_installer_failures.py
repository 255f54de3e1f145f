"""Why an installer failed, read from uv's and pip's real output (tests/installer_output/,
captured by provoking each failure: a lock with numpy's hashes changed, `ulimit -n`, a
cache on a read-only mount and one another user owns, a missing --find-links folder, an
--index-url without a scheme, names and versions that do not exist, no network). Nothing
runs here."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.install import failures
from bootstrap.install.failures import MAX_LINE, failure_cause
from bootstrap.install.installers import install_error
from bootstrap.profiles.model import Sources
from bootstrap.system.errors import CommandError

OUTPUT = Path(__file__).parent / "installer_output"

#: capture -> (kind, the line kboot's error message ends with)
EXPECTED = {
    "uv_hash_mismatch": (failures.HASH_MISMATCH, "hash mismatch for numpy==2.4.6"),
    "pip_hash_mismatch": (failures.HASH_MISMATCH, "hash mismatch for numpy==2.4.6"),
    "pip_download_hash_mismatch": (failures.HASH_MISMATCH, "hash mismatch for numpy==2.4.6"),
    "uv_too_many_open_files": (
        failures.TOO_MANY_FILES,
        "too many open files (the limit of open files is too low)",
    ),
    "pip_too_many_open_files": (
        failures.TOO_MANY_FILES,
        "too many open files (the limit of open files is too low)",
    ),
    "uv_cache_read_only": (
        failures.CACHE_NOT_WRITABLE,
        "the installer's cache /tmp/hf/rocache is not writable (read-only file system)",
    ),
    "uv_cache_permission_denied": (
        failures.CACHE_NOT_WRITABLE,
        "the installer's cache /tmp/hfa/rootcache is not writable (permission denied)",
    ),
    "uv_find_links_missing": (
        failures.FIND_LINKS_MISSING,
        "the --find-links folder /tmp/hf/no-such-folder does not exist",
    ),
    "pip_find_links_missing": (
        failures.FIND_LINKS_MISSING,
        "the --find-links folder /tmp/hf/no-such-folder does not exist",
    ),
    "pip_bad_index_url": (
        failures.BAD_INDEX_URL,
        "the --index-url 'not-a-url' is not a URL (it has no scheme)",
    ),
    # uv says only that nothing was found there (kboot's hint names the index)
    "uv_bad_index_url": (failures.NOT_FOUND, "namex was not found on the package index"),
    "uv_compile_bad_index_url": (failures.NOT_FOUND, "namex was not found on the package index"),
    "uv_no_such_package": (
        failures.NOT_FOUND,
        "kboot-no-such-package-x was not found on the package index",
    ),
    "uv_no_such_version": (
        failures.NOT_FOUND,
        "there is no version of namex==99.1 and you require namex==99.1",
    ),
    "pip_no_such_version": (failures.NOT_FOUND, "no matching distribution found for namex==99.1"),
    "uv_network": (failures.NETWORK, "the package index could not be reached"),
}


def test_every_capture_is_expected() -> None:
    assert {p.stem for p in OUTPUT.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_output_gives_its_stated_cause(name: str) -> None:
    cause = failure_cause((OUTPUT / f"{name}.txt").read_text(encoding="utf-8"))
    assert cause is not None
    assert (cause.kind, cause.line) == EXPECTED[name]


def test_the_cause_is_found_far_above_the_tail() -> None:
    """The tampered numpy entry: uv lists every expected hash after naming the package,
    so the last 25 lines do not name it; kboot reads all of the output."""
    text = (OUTPUT / "uv_hash_mismatch.txt").read_text(encoding="utf-8")
    tail = "\n".join(text.splitlines()[-25:])
    assert "numpy" not in tail
    error = install_error(
        CommandError("x", cmd=["uv"], returncode=1, output_tail=tail, output=text),
        "installing the lock numpy.lock with uv failed",
        target="Python 3.11 on this platform",
        sources=Sources(),
    )
    assert error.message.endswith(": hash mismatch for numpy==2.4.6")
    assert error.hint is not None and "kboot download" in error.hint


def error_for(name: str, sources: Sources | None = None) -> str:
    text = (OUTPUT / f"{name}.txt").read_text(encoding="utf-8")
    error = install_error(
        CommandError("x", cmd=["uv"], returncode=1, output_tail=text),
        "installing namex with uv failed",
        target="Python 3.11 on this platform",
        sources=sources or Sources(),
    )
    assert error.message.endswith(EXPECTED[name][1])
    assert error.hint is not None
    return error.hint


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("uv_too_many_open_files", "ulimit -n"),
        ("pip_too_many_open_files", "ulimit -n"),
        ("uv_cache_read_only", "UV_CACHE_DIR"),
        ("uv_find_links_missing", "find_links"),
        ("pip_bad_index_url", "https://HOST/simple"),
        ("uv_no_such_package", "names and versions in the profile"),
        ("uv_network", "could not be reached"),
    ],
)
def test_the_hint_fits_the_cause(name: str, hint: str) -> None:
    assert hint in error_for(name)


def test_a_package_kboot_added_is_not_blamed_on_the_profile() -> None:
    """pip (or ipykernel) missing from a mirror: kboot put it in the install, not the
    profile's author."""
    text = (OUTPUT / "uv_no_such_package.txt").read_text(encoding="utf-8")
    text = text.replace("kboot-no-such-package-x", "pip")
    error = install_error(
        CommandError("x", cmd=["uv"], returncode=1, output_tail=text),
        "installing numpy, pip with uv failed",
        target="Python 3.11 on this platform",
        sources=Sources(index_url="file:///srv/mirror"),
        added=("pip",),
    )
    assert error.message.endswith("pip was not found on the package index")
    assert error.hint is not None
    assert "profile" not in error.hint
    assert "kboot adds pip" in error.hint and "file:///srv/mirror" in error.hint


def test_an_index_given_is_named_in_the_not_found_hint() -> None:
    hint = error_for("uv_bad_index_url", Sources(index_url="not-a-url"))
    assert "--index-url not-a-url" in hint


def test_an_offline_miss_names_the_wheelhouse() -> None:
    text = (OUTPUT / "uv_no_such_version.txt").read_text(encoding="utf-8")
    error = install_error(
        CommandError("x", cmd=["uv"], returncode=1, output_tail=text),
        "installing the lock x with uv failed",
        target="Python 3.11 on this platform",
        sources=Sources(find_links=("/srv/wheels",), offline=True),
    )
    assert "namex==99.1 is not in the wheelhouse /srv/wheels" in error.message


def test_no_stated_cause_ends_with_the_exit_code() -> None:
    error = install_error(
        CommandError("x", cmd=["uv"], returncode=3, output_tail="Resolved 2 packages"),
        "installing namex with uv failed",
        target="Python 3.11 on this platform",
        sources=Sources(),
    )
    assert error.message == "installing namex with uv failed: exit code 3"
    assert error.hint is not None and "--debug" in error.hint


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "  \u00d7 Failed to build `somepkg==1.0`\n  ├─▶ The build backend returned an error\n"
            "  ╰─▶ Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)\n",
            "Failed to build `somepkg==1.0`: Call to `setuptools.build_meta.build_wheel` failed "
            "(exit status: 1)",
        ),
        (
            "ERROR: Exception:\nTraceback (most recent call last):\nValueError: boom",
            "ValueError: boom",
        ),
        ("ERROR: Invalid requirement: 'keras>>3'", "Invalid requirement: 'keras>>3'"),
        ("Successfully installed namex-0.1.0", None),
        ("", None),
    ],
)
def test_other_stated_causes(text: str, line: str | None) -> None:
    cause = failure_cause(text)
    assert (cause.line if cause else None) == line


_FRAGMENTS = st.sampled_from(
    [
        "error: ",
        "ERROR: ",
        "  cause: ",
        "Caused by: ",
        "\u00d7",
        "╰─▶",
        "Hash mismatch for `",
        "DO NOT MATCH THE HASHES",
        "    namex==0.1.0 from ",
        "Because ",
        ", we can conclude",
        "you require ",
        " was not found in the package registry",
        "Looking in links: ",
        "Location '",
        "' is ignored: it is either a non-existing path",
        'The index url "',
        '" seems invalid',
        'Permission denied (os error 13) at path "',
        "Could not acquire lock",
        "[Errno 13] Permission denied: '",
        "The conflict is caused by:\n",
        "No matching distribution found for ",
        "Failed to read `--find-links` directory: ",
        "Too many open files",
        "\n",
        "`",
        "'",
        '"',
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FRAGMENTS | st.text(max_size=30), max_size=25).map("".join))
def test_any_text_gives_one_line_or_none(text: str) -> None:
    cause = failure_cause(text)
    if cause is not None:
        assert cause.line and "\n" not in cause.line and len(cause.line) <= MAX_LINE
        assert cause.kind in {
            failures.HASH_MISMATCH,
            failures.NO_SPACE,
            failures.TOO_MANY_FILES,
            failures.CACHE_NOT_WRITABLE,
            failures.NOT_WRITABLE,
            failures.FIND_LINKS_MISSING,
            failures.BAD_INDEX_URL,
            failures.NETWORK,
            failures.NOT_FOUND,
            failures.CONFLICT,
            failures.OTHER,
        }
