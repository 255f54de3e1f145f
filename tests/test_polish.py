"""Issue 16 item 23, the small things users met: a closed pipe, `--json` errors, a NUL
byte in a profile, a metrics file behind a link, `kboot list` in a narrow terminal, and
`doctor --python` on a program that is no Python."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from bootstrap.cli import render
from bootstrap.envs.manage import EnvSummary
from bootstrap.profiles.model import read_profile_data
from bootstrap.run.execute import read_metrics
from bootstrap.system.errors import ProfileError
from helpers import kboot


def _into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """kboot writing into a pipe whose reader is gone (`kboot ... | head` once head quit)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "bootstrap", *args],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write)


@pytest.mark.needs("posix")
@pytest.mark.parametrize(
    "args",
    [["profiles"], ["show", "numpy"], ["profiles", "--json"], ["list"], ["--help"],
     ["create", "--help"], ["doctor"], ["show", "no-such", "--json"]],
)  # fmt: skip
def test_a_closed_pipe_ends_kboot_as_it_ends_ls(args: list[str]) -> None:
    """Killed by SIGPIPE, quietly (a shell says 141, as for `ls | head`), not exit 1."""
    proc = _into_a_closed_pipe(*args)
    assert proc.returncode == -signal.SIGPIPE, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert "Exception ignored" not in proc.stderr


@pytest.mark.needs("posix")
def test_ls_dies_the_same_way() -> None:
    """The convention the test above holds kboot to is the system's own."""
    read, write = os.pipe()
    os.close(read)
    try:
        ls = subprocess.run(["ls", "/"], stdout=write, stderr=subprocess.PIPE, check=False)
    finally:
        os.close(write)
    assert ls.returncode == -signal.SIGPIPE


@pytest.mark.needs("posix")
@pytest.mark.parametrize(
    "args", [["profiles"], ["show", "numpy"], ["profiles", "--json"], ["list"], ["--help"]]
)
def test_a_reader_that_stops_after_the_first_line_gets_exit_0(args: list[str]) -> None:
    """`set -o pipefail; kboot profiles | head -1`: kboot writes a short output at once,
    as ls does, so it is all in the pipe before the reader stops, and kboot ends 0 (it
    wrote the table, then a footnote, and died by SIGPIPE half the time)."""
    script = 'set -o pipefail; "$@" | head -1; echo "rc=$?"'
    ran = subprocess.run(
        ["bash", "-c", script, "bash", sys.executable, "-m", "bootstrap", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.stdout.splitlines()[-1] == "rc=0", ran.stdout + ran.stderr
    assert len(ran.stdout.splitlines()) == 2  # the first line, and rc
    assert "Traceback" not in ran.stderr


def test_more_than_the_pipe_holds_streams_in_order() -> None:
    """Past 64 KiB kboot's output streams; what it gathered before comes first."""
    from bootstrap.cli.app import _Gathered

    class Sink:
        def __init__(self) -> None:
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    sink = Sink()
    out = _Gathered(sink)
    out.write("first\n")
    out.write(b"bytes from click\n")  # type: ignore[arg-type]
    out.flush()
    assert sink.writes == []  # gathered: nothing written yet, a flush does not write
    out.write("x" * _Gathered.LIMIT)
    assert sink.writes[0].startswith("first\nbytes from click\nxxx")  # one write
    out.write("last\n")
    out.release()
    assert sink.writes[-1] == "last\n"


@pytest.mark.parametrize(
    ("args", "kind", "code"),
    [
        (["show", "no-such", "--json"], "ProfileError", 2),
        (["create", "--bogus", "--json"], "UsageError", 2),
        (["create", "numpy", "--name", "a b", "--json"], "UsageError", 2),
        (["check", "no-such-env", "--json"], "NoSuchEnvironment", 2),
    ],
)
def test_a_json_error_is_one_document_and_one_line(args: list[str], kind: str, code: int) -> None:
    proc = kboot(*args)
    assert proc.returncode == code
    document = json.loads(proc.stdout)  # the whole of stdout: one document
    assert document["ok"] is False and document["kind"] == kind
    assert document["exit_code"] == code and document["error"]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kboot: error: ")
    assert "hint:" not in proc.stderr and "Usage:" not in proc.stderr


def test_a_nul_byte_in_a_profile_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nul.toml"
    path.write_bytes(b'backend = "numpy"\npackages = ["numpy"]\x00\n')
    proc = kboot("show", str(path))
    assert proc.returncode == 2
    assert "a NUL byte at line 2, column 21" in proc.stderr
    assert "remove the NUL byte" in proc.stderr


def test_a_nul_byte_in_a_project_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "kboot.toml").write_bytes(b'[profiles.dev]\nbackend = "jax"\n\x00')
    proc = kboot("profiles", cwd=tmp_path)
    assert proc.returncode == 2
    assert "line 3: invalid TOML: a NUL byte at line 3, column 1" in proc.stderr


def test_a_nul_byte_in_a_manifest_is_named(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_bytes(b'[[env]]\nname = "a"\x00\nprofile = "numpy"\n')
    proc = kboot("sync", str(path), "--check")
    assert proc.returncode == 2
    assert "a NUL byte at line 2, column 11" in proc.stderr


def test_a_metrics_file_behind_a_link_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": 1}', encoding="utf-8")
    link = tmp_path / "metrics.json"
    link.symlink_to(secret)
    values, warnings = read_metrics(link)
    assert values == {}
    assert len(warnings) == 1 and "cannot read it" in warnings[0]


def _summary(name: str, path: Path) -> EnvSummary:
    return EnvSummary(name=name, path=path, record=None, health="ok")


def test_list_in_a_narrow_terminal_keeps_names_and_paths_whole(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    width = 80
    console = Console(width=width, force_terminal=True, color_system=None, soft_wrap=True)
    monkeypatch.setattr(render, "out_console", lambda: console)
    name = "keras-course-experiment-with-a-long-name"
    path = Path("/home/someone/projects/keras course/.kboot/envs") / name
    render.render_envs([_summary(name, path), _summary("numpy", Path("/tmp/numpy"))])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "BACKEND", "FLOATX", "PYTHON", "KERAS", "HEALTH"]
    assert lines[1].split()[0] == name and lines[2] == f"  {path}"
    assert lines[3].split()[0] == "numpy" and lines[4] == "  /tmp/numpy"
    # a wide terminal keeps the table
    console = Console(width=200, force_terminal=True, color_system=None, soft_wrap=True)
    monkeypatch.setattr(render, "out_console", lambda: console)
    render.render_envs([_summary(name, path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "PATH" and lines[1].rstrip().endswith(str(path))


@pytest.mark.needs("posix")
@pytest.mark.parametrize("program", ["/bin/ls", "/bin/cat", "/bin/echo"])
def test_doctor_on_a_program_that_is_no_python_keeps_the_probe_to_itself(program: str) -> None:
    proc = kboot("doctor", "--python", program)
    assert proc.returncode == 2
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"kboot: error: {program} is not a working Python interpreter (")
    assert "did not run Python code" in first
    for leak in ("import", "-c", "{", "Try "):
        assert leak not in first


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_profile_with_a_nul_byte_is_refused_naming_it(before: str, after: str) -> None:
    text = before + "\0" + after
    line = before.count("\n") + 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        with pytest.raises(ProfileError) as info:
            read_profile_data(path)
    message = info.value.message
    assert "NUL byte" in message or "not UTF-8" in message, message
    if "NUL byte" in message:
        assert f"at line {line}," in message or "\0" in before
