"""The subprocess helper, with real (tiny) commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap.system.errors import CommandError
from bootstrap.system.runner import TAIL_LINES, run, tail


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_captures_output(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    result = run(py(code))
    assert result.returncode == 0
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.cmd == (sys.executable, "-c", code)
    assert result.seconds >= 0
    assert result.output_tail == "out\nerr"  # what went wrong comes last


def test_run_accepts_paths_and_passes_env_and_cwd(tmp_path: Path) -> None:
    result = run(
        [Path(sys.executable), "-c", "import os; print(os.getcwd()); print(os.environ['KB_X'])"],
        env={"KB_X": "42", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.stdout.splitlines() == [str(tmp_path), "42"]
    assert isinstance(result.cmd[0], str)


def test_run_stdin_is_closed() -> None:
    result = run(py("import sys; print(repr(sys.stdin.read()))"), timeout=30)
    assert result.stdout.strip() == "''"


def test_non_zero_exit_raises_with_the_tail() -> None:
    code = "import sys\nfor i in range(40): print('line', i, file=sys.stderr)\nsys.exit(3)\n"
    with pytest.raises(CommandError) as info:
        run(py(code), what="doing a thing", hint="try again")
    err = info.value
    assert err.returncode == 3
    assert err.message == "doing a thing failed (exit code 3)"
    assert err.hint == "try again"
    lines = err.output_tail.splitlines()
    assert len(lines) == TAIL_LINES
    assert lines[-1] == "line 39"
    assert lines[0] == f"line {40 - TAIL_LINES}"
    assert err.details == err.output_tail
    assert err.cmd[0] == sys.executable


def test_non_zero_exit_without_what_names_the_command() -> None:
    with pytest.raises(CommandError) as info:
        run(py("raise SystemExit(5)"))
    assert "exit code 5" in info.value.message
    assert sys.executable in info.value.message


def test_check_false_returns_the_failure() -> None:
    result = run(py("print('x'); raise SystemExit(4)"), check=False)
    assert result.returncode == 4
    assert result.stdout == "x\n"


def test_missing_executable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-program"
    with pytest.raises(CommandError) as info:
        run([missing, "--version"], what="asking for a version")
    err = info.value
    assert err.returncode == -1
    assert "cannot start" in err.message
    assert str(missing) in err.message
    assert err.message.startswith("asking for a version failed")


def test_timeout_kills_the_child(tmp_path: Path) -> None:
    finished = tmp_path / "finished"
    code = (
        "import os, pathlib, time; print('started', os.getpid(), flush=True); time.sleep(60); "
        f"pathlib.Path({str(finished)!r}).touch()"
    )
    with pytest.raises(CommandError) as info:
        run(py(code), timeout=4, what="sleeping")  # room for a slow start on a busy machine
    err = info.value
    assert err.returncode == -1
    assert err.message == "sleeping did not finish within 4 s"
    assert "started" in err.output_tail
    child = int(err.output_tail.split("started")[1].split()[0])
    assert not Path(f"/proc/{child}").exists()  # killed and reaped
    assert not finished.exists()  # killed, not waited for until its 60 s were over


def test_undecodable_output_is_replaced() -> None:
    result = run(py("import sys; sys.stdout.buffer.write(b'caf\\xe9\\n')"))
    assert result.stdout == "caf\ufffd\n"


def test_tail() -> None:
    assert tail("\n a\nb\nc \n\n", lines=2) == "b\nc"
    assert tail("") == ""


def test_a_killed_builds_orphans_are_found_by_its_token_and_stopped() -> None:
    """SIGKILL does not reach kboot's children: the next kboot stops them by their token."""
    from bootstrap.system import interrupts

    token = f"tok-{os.getpid()}-{time.monotonic_ns()}"  # unique: other test runs go on
    mine = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, interrupts.OPERATION_VARIABLE: token}
    )
    other = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, interrupts.OPERATION_VARIABLE: f"{token}2"}
    )
    try:
        assert interrupts.stop_orphans(token) == 0
        assert mine.wait(timeout=60) == -9
        assert other.poll() is None, "another build's process is left alone"
    finally:
        other.kill()
        other.wait()


def test_children_of_a_build_carry_its_token(tmp_path: Path) -> None:
    from bootstrap.system import interrupts

    with interrupts.operation("tok-xyz"):
        result = run([sys.executable, "-c", "import os; print(os.environ['KBOOT_OPERATION'])"])
    assert result.stdout.strip() == "tok-xyz"
    outside = run([sys.executable, "-c", "import os; print(os.environ.get('KBOOT_OPERATION'))"])
    assert outside.stdout.strip() == "None"


@pytest.mark.parametrize("logged", [False, True], ids=["run", "run_logged"])
def test_a_signal_between_starting_a_child_and_registering_it_kills_and_reaps_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, logged: bool
) -> None:
    """Ctrl-C the moment Popen returns, before kboot counts the child among its own: the
    child must not live on (in its own process group) while a rollback deletes its folder."""
    import signal

    from bootstrap.system import interrupts
    from bootstrap.system.runner import run_logged

    started: list[subprocess.Popen[str]] = []
    real_popen = subprocess.Popen

    def popen_then_signal(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        child: subprocess.Popen[str] = real_popen(*args, **kwargs)  # type: ignore[call-overload]  # a pass-through
        started.append(child)
        signal.raise_signal(signal.SIGINT)  # its handler runs before this line returns
        return child

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    interrupts.install_handlers()
    monkeypatch.setattr(subprocess, "Popen", popen_then_signal)
    try:
        with pytest.raises(KeyboardInterrupt):
            if logged:
                run_logged(["sleep", "60"], output=tmp_path / "out.log", env=dict(os.environ))
            else:
                run(["sleep", "60"])
    finally:
        monkeypatch.undo()
        for number, handler in handlers.items():
            signal.signal(number, handler)
        interrupts.reset()
    [child] = started
    try:
        assert child.returncode is not None, "the child still runs, unregistered"
        assert child.returncode == -signal.SIGKILL  # killed, and waited for by kboot
        assert child not in interrupts._children
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
