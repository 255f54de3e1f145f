"""`kboot run`: the command's environment, the metrics file, runs in fake environments
(tiny real commands), the CLI's usage errors, and real environments running a real Keras
training script and a real pytest suite on several backends."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap.cli.app import main
from bootstrap.cli.run_table import metric_text, render_run, run_markdown
from bootstrap.run import execute
from bootstrap.run import logs as run_logs
from bootstrap.run.execute import (
    MAX_METRICS,
    MAX_METRICS_BYTES,
    METRICS_VARIABLE,
    RunReport,
    RunTarget,
    Unavailable,
    find_command,
    json_value,
    parse_metrics,
    read_metrics,
    run_all,
    run_environ,
)
from bootstrap.system import interrupts
from bootstrap.system.errors import MetricsError, ProfileError, UsageError
from bootstrap.system.paths import run_logs_dir
from helpers import created, readme_blocks, start_kboot
from helpers import kboot as kboot_process
from machine import LOCAL_INDEX, TORCH_WHEELS

# --- the command's environment -------------------------------------------------------------


def target(root: Path, **changes: Any) -> RunTarget:
    values: dict[str, Any] = {
        "name": "fake",
        "path": root,
        "bin_dir": root / "bin",
        "backend": "jax",
        "scope": "env",
        "keras_home": root / "keras-home",
        "startup_env": {"KERAS_HOME": str(root / "keras-home")},
    }
    return RunTarget(**{**values, **changes})


def test_environment_is_the_envs_own_as_uv_run_makes_it(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin:/bin", "PYTHONHOME": "/opt/py", "HOME": "/home/me"}
    env, overridden = run_environ(base, target(tmp_path), tmp_path / "m.json")
    assert env["PATH"] == f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin"
    assert env["VIRTUAL_ENV"] == str(tmp_path)
    assert "PYTHONHOME" not in env
    assert env["KERAS_BACKEND"] == "jax"
    assert env[METRICS_VARIABLE] == str(tmp_path / "m.json")
    assert "KERAS_HOME" not in env  # its startup file sets it
    assert env["HOME"] == "/home/me"
    assert overridden == {}


def test_the_envs_config_wins_over_the_shells(tmp_path: Path) -> None:
    base = {
        "PATH": "/bin",
        "KERAS_BACKEND": "torch",
        "KERAS_HOME": "/somewhere/else",
        "JAX_ENABLE_X64": "0",
    }
    mine = target(
        tmp_path,
        startup_env={"KERAS_HOME": str(tmp_path / "keras-home"), "JAX_ENABLE_X64": "1"},
    )
    env, overridden = run_environ(base, mine, tmp_path / "m.json")
    assert env["KERAS_BACKEND"] == "jax"
    assert env["KERAS_HOME"] == str(tmp_path / "keras-home")
    assert env["JAX_ENABLE_X64"] == "1"
    assert overridden == {
        "KERAS_BACKEND": "torch",
        "KERAS_HOME": "/somewhere/else",
        "JAX_ENABLE_X64": "0",
    }


def test_same_values_and_empty_ones_are_not_overrides(tmp_path: Path) -> None:
    base = {"KERAS_BACKEND": "jax", "KERAS_HOME": str(tmp_path / "keras-home"), "PATH": ""}
    env, overridden = run_environ(base, target(tmp_path), tmp_path / "m.json")
    assert overridden == {}
    assert env["PATH"] == str(tmp_path / "bin")
    _, overridden = run_environ({"KERAS_BACKEND": ""}, target(tmp_path), tmp_path / "m.json")
    assert overridden == {}


def test_scope_user_env_gets_the_keras_home_it_was_built_with(tmp_path: Path) -> None:
    mine = target(tmp_path, scope="user", keras_home=tmp_path / "then", startup_env={})
    env, overridden = run_environ({"KERAS_HOME": str(tmp_path / "now")}, mine, tmp_path / "m")
    assert env["KERAS_HOME"] == str(tmp_path / "then")
    assert overridden == {"KERAS_HOME": str(tmp_path / "now")}
    env, overridden = run_environ({"KERAS_HOME": str(tmp_path / "then")}, mine, tmp_path / "m")
    assert overridden == {}


def test_find_command(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert find_command("tool", f"{tmp_path / 'bin'}{os.pathsep}/bin") == str(tool)
    assert find_command("no-such-tool-here", str(tmp_path / "bin")) is None
    assert find_command(str(tool), "") == str(tool)
    assert find_command(str(tmp_path / "missing"), "") is None


# --- metrics -------------------------------------------------------------------------------


def test_metrics_of_scalars() -> None:
    data = b'{"loss": 0.25, "backend": "jax", "steps": 8, "ok": true, "note": null}'
    values, warnings = parse_metrics(data)
    assert values == {"loss": 0.25, "backend": "jax", "steps": 8, "ok": True, "note": None}
    assert warnings == []


def test_metrics_leave_out_what_is_not_a_scalar() -> None:
    values, warnings = parse_metrics(b'{"loss": 1.5, "history": [1, 2], "cfg": {"a": 1}}')
    assert values == {"loss": 1.5}
    assert warnings == ["left out history, cfg: not a scalar (a number, text, true/false or null)"]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"[1, 2]", "a JSON array, not one object"),
        (b'"loss"', "a JSON string"),
        (b"0.5", "a JSON number"),
        (b"{loss: 1}", "it is not JSON"),
        (b"", "it is not JSON"),
        (b'{"a": 1}\xff', "not UTF-8"),
        (b"[" * 100_000, "over 64 KiB"),
        (b"[" * 60_000, "nested too deeply"),
        (b'{"a": ' + b"1" * 5000 + b"}", "it is not JSON"),
    ],
)
def test_what_is_not_an_object_of_scalars_is_kboots_error(data: bytes, says: str) -> None:
    with pytest.raises(MetricsError) as info:
        parse_metrics(data)
    assert says in info.value.message


def test_metrics_text_is_printable_and_short() -> None:
    data = json.dumps({"\x1b[31mred": "a\nb", "long": "x" * 500, "lone": "\ud800"}).encode()
    values, _ = parse_metrics(data)
    assert values["?[31mred"] == "a?b"
    assert len(str(values["long"])) == execute.MAX_TEXT
    assert values["lone"] == "?"


def test_metrics_keep_at_most_so_many_keys() -> None:
    values, warnings = parse_metrics(json.dumps({f"k{i}": i for i in range(40)}).encode())
    assert len(values) == MAX_METRICS
    assert warnings == [f"left out {40 - MAX_METRICS} more keys: {MAX_METRICS} at most"]


def test_non_finite_numbers_stay_visible() -> None:
    values, _ = parse_metrics(b'{"loss": NaN, "grad": Infinity}')
    assert math.isnan(float(values["loss"]))  # type: ignore[arg-type]
    assert json_value(values["loss"]) == "nan" and json_value(values["grad"]) == "inf"
    assert metric_text(values["loss"]) == "nan"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | _json.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_give_values_or_kboots_error(data: bytes) -> None:
    try:
        values, warnings = parse_metrics(data)
    except MetricsError as exc:
        assert exc.message
        return
    assert all(isinstance(w, str) for w in warnings)
    for key, value in values.items():
        assert key.isprintable() and len(key) <= execute.MAX_TEXT
        key.encode("utf-8")
        metric_text(value).encode("utf-8")
    json.dumps({k: json_value(v) for k, v in values.items()}, allow_nan=False)


def test_read_metrics_never_raises(tmp_path: Path) -> None:
    assert read_metrics(tmp_path / "none.json") == ({}, [])
    good = tmp_path / "good.json"
    good.write_text('{"loss": 2}')
    assert read_metrics(good) == ({"loss": 2}, [])
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_METRICS_BYTES + 10))
    values, warnings = read_metrics(big)
    assert values == {} and "over 64 KiB" in warnings[0]
    folder = tmp_path / "folder.json"
    folder.mkdir()
    assert read_metrics(folder)[1] == ["the metrics ($KBOOT_METRICS): not a regular file, ignored"]
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # nobody writes it: reading must not wait for a writer
    assert read_metrics(fifo)[1] == ["the metrics ($KBOOT_METRICS): not a regular file, ignored"]


# --- runs in fake environments -------------------------------------------------------------


@pytest.fixture
def fake_env(tmp_path: Path) -> RunTarget:
    """A folder whose bin/python is this test's Python: enough to run commands in."""
    root = tmp_path / "fake-env"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
    return target(root)


def py(code: str) -> list[str]:
    return ["python", "-c", code]


WRITE_METRICS = (
    "import json, os, sys\n"
    "json.dump({'backend': os.environ['KERAS_BACKEND'], 'venv': os.environ['VIRTUAL_ENV'],"
    " 'argv0': sys.argv[0]}, open(os.environ['KBOOT_METRICS'], 'w'))\n"
    "print('hello from', os.environ['KERAS_BACKEND'])\n"
)


def test_a_run_reports_exit_time_memory_metrics_and_log(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    report = run_all([fake_env], py(WRITE_METRICS), {"PATH": "/usr/bin:/bin"}, log_dir=tmp_path)
    (outcome,) = report.outcomes
    assert outcome.ok and outcome.exit_code == 0 and report.exit_code == 0
    assert outcome.metrics == {"backend": "jax", "venv": str(fake_env.path), "argv0": "-c"}
    assert outcome.seconds is not None and 0 < outcome.seconds < 30
    assert outcome.max_rss is not None and outcome.max_rss > 1_000_000  # bytes, not KiB
    assert outcome.log == tmp_path / "fake.log"
    assert outcome.log.read_text() == "hello from jax\n"
    assert outcome.output_tail == ""
    assert report.metric_names == ["backend", "venv", "argv0"]
    json.dumps(report.to_dict(), default=str, allow_nan=False)


def test_peak_memory_is_the_childs_own(tmp_path: Path, fake_env: RunTarget) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small = run_all([fake_env], py("pass"), {}, log_dir=tmp_path / "a").outcomes[0]
    big = run_all([fake_env], py("b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"),
                  {}, log_dir=tmp_path / "b").outcomes[0]  # fmt: skip
    assert small.max_rss is not None and big.max_rss is not None
    assert big.max_rss - small.max_rss > 250 * 2**20


def test_worst_exit_code_and_the_failures_last_lines(tmp_path: Path, fake_env: RunTarget) -> None:
    other = target(fake_env.path, name="other", backend="torch")
    failing = "import sys\nfor i in range(50): print('line', i)\nsys.exit(3)\n"
    prepared = [fake_env, other, Unavailable("broken", ProfileError("no profile 'broken'"))]
    report = run_all(
        prepared,
        py(f"import os\nif os.environ['KERAS_BACKEND'] == 'torch':\n exec({failing!r})\n"),
        {},
        log_dir=tmp_path,
        workers=3,
    )
    ok, failed, not_run = report.outcomes
    assert ok.ok and ok.name == "fake"
    assert (failed.status, failed.exit_code, failed.exit_text) == ("failed", 3, "3")
    assert failed.output_tail.splitlines() == [f"line {i}" for i in range(30, 50)]
    assert (not_run.status, not_run.exit_code, not_run.message) == (
        "not run",
        2,
        "no profile 'broken'",
    )
    assert report.exit_code == 3
    assert [o["status"] for o in report.to_dict()["runs"]] == ["ok", "failed", "not run"]


def test_a_command_not_in_the_environment(tmp_path: Path, fake_env: RunTarget) -> None:
    report = run_all([fake_env], ["no-such-tool-kboot"], {"PATH": "/bin"}, log_dir=tmp_path)
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.exit_code) == ("not found", 127)
    assert outcome.message == (
        f"'no-such-tool-kboot' was not found in fake ({fake_env.bin_dir}) or on your PATH"
    )
    assert outcome.hint and "profile's packages" in outcome.hint
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    again = tmp_path / "again"
    again.mkdir()
    report = run_all([fake_env], [str(script)], {"PATH": "/bin"}, log_dir=again)
    assert (report.outcomes[0].status, report.exit_code) == ("not executable", 126)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGKILL"])  # SIGKILL: the OOM killer's
def test_a_run_killed_by_a_signal(tmp_path: Path, fake_env: RunTarget, name: str) -> None:
    number = getattr(signal, name)
    report = run_all([fake_env], py(f"import os; os.kill(os.getpid(), {int(number)})"),
                     {}, log_dir=tmp_path)  # fmt: skip
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.exit_code) == ("killed", 128 + number)
    assert outcome.exit_text == f"killed ({name})"


def test_the_shells_keras_backend_is_overridden_with_one_warning(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    other = target(fake_env.path, name="other", backend="torch")
    report = run_all([fake_env, other], py(WRITE_METRICS), {"KERAS_BACKEND": "numpy"},
                     log_dir=tmp_path, workers=2)  # fmt: skip
    assert [o.metrics["backend"] for o in report.outcomes] == ["jax", "torch"]
    assert report.warnings == (
        "your shell's KERAS_BACKEND=numpy was overridden: each run uses its environment's "
        "backend (jax, torch)",
    )


def test_bad_metrics_are_a_warning_of_that_run(tmp_path: Path, fake_env: RunTarget) -> None:
    code = "import os; open(os.environ['KBOOT_METRICS'], 'wb').write(b'\\xff{')"
    (outcome,) = run_all([fake_env], py(code), {}, log_dir=tmp_path).outcomes
    assert outcome.ok and outcome.metrics == {}
    assert outcome.warnings == ("the metrics ($KBOOT_METRICS): it is not UTF-8 text (byte 0)",)


def test_no_stale_metrics_from_an_earlier_run(tmp_path: Path, fake_env: RunTarget) -> None:
    (tmp_path / "fake.metrics.json").write_text('{"loss": 1}')
    (outcome,) = run_all([fake_env], py("pass"), {}, log_dir=tmp_path).outcomes
    assert outcome.metrics == {}


def test_one_at_a_time_the_output_is_shown_live(tmp_path: Path, fake_env: RunTarget) -> None:
    """The command prints `first`, then waits until the echo has shown it: were the output
    shown only at the end, it would give up after 60 s and fail."""
    shown = tmp_path / "shown"
    code = (
        "import pathlib, sys, time\nprint('first', flush=True)\n"
        "deadline = time.monotonic() + 60\n"
        f"while not pathlib.Path({str(shown)!r}).exists():\n"
        "    if time.monotonic() > deadline: sys.exit('first was not shown while I ran')\n"
        "    time.sleep(0.02)\n"
        "print('second')\n"
    )
    seen: list[bytes] = []

    def echo(chunk: bytes) -> None:
        seen.append(chunk)
        if b"first" in b"".join(seen):
            shown.touch()

    report = run_all([fake_env], py(code), {}, log_dir=tmp_path, echo=echo)
    assert report.outcomes[0].ok, report.outcomes[0].output_tail
    assert b"".join(seen) == b"first\nsecond\n"
    seen.clear()
    (tmp_path / "two").mkdir()
    other = target(fake_env.path, name="other")
    both = run_all([fake_env, other], py("print(1)"), {}, workers=2, echo=seen.append,
                   log_dir=tmp_path / "two")  # fmt: skip
    assert [o.status for o in both.outcomes] == ["ok", "ok"]
    assert seen == []  # several at once: the logs only


@pytest.fixture
def clean_cancel() -> Iterator[None]:
    yield
    interrupts.reset()


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_stops_every_run(
    tmp_path: Path, fake_env: RunTarget, clean_cancel: None, workers: int
) -> None:
    other = target(fake_env.path, name="other")
    marker, finished = tmp_path / "started", tmp_path / "finished"
    code = (
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n"
        f"pathlib.Path({str(finished)!r}).touch()\n"
    )
    threading.Thread(target=_when_it_exists, args=(marker, interrupts.cancel), daemon=True).start()
    report = run_all([fake_env, other], py(code), {}, log_dir=tmp_path, workers=workers)
    assert marker.exists()
    assert not finished.exists()  # stopped: not waited for until its 60 s were over
    assert report.interrupted and report.exit_code == 130
    first, second = report.outcomes
    assert first.status == "interrupted" and first.message and "(cancelled)" in first.message
    # one at a time the second never started; at once it was stopped too
    assert second.status == ("not started" if workers == 1 else "interrupted")


def _when_it_exists(path: Path, then: Callable[[], object], timeout: float = 120) -> None:
    """Call `then` once `path` exists (or after `timeout` s: the test then fails on its own)."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    then()


def test_a_sigint_cancels_the_runs_and_exits_130(tmp_path: Path, fake_env: RunTarget) -> None:
    """Through the real signal handler, in a process of its own."""
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = _run_in_own_process(tmp_path, fake_env, code, names=("fake", "other"))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    data = json.loads(out)
    assert (data["interrupted"], data["exit_code"], data["ok"]) == (True, 130, False)
    assert [run["status"] for run in data["runs"]] == ["interrupted", "interrupted"]


#: Ends at once in the environment called `done`; elsewhere waits, and when stopped by
#: SIGINT or SIGTERM notes where it was in its metrics, as a training script would.
STOPPABLE = """\
import json, os, signal, sys, time
name = os.path.basename(os.environ["KBOOT_METRICS"]).split(".")[0]
if name == "done":
    print("done at once"); sys.exit(0)
def stop(number, frame):
    json.dump({"stopped_at": "step 3"}, open(os.environ["KBOOT_METRICS"], "w"))
    print("stopping"); sys.exit(1)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_reports_what_finished_what_stopped_and_what_did_not_start(
    tmp_path: Path, fake_env: RunTarget, signum: int
) -> None:
    """One at a time: `broken` could not be made ready, `done` ended, `fake` was running
    when the signal came, `other` never started. The report (what `--json` prints) has
    all four, and the exit code is 130."""
    names = ("broken", "done", "fake", "other")
    proc = _run_in_own_process(tmp_path, fake_env, STOPPABLE, names=names, jobs=1)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    data = json.loads(out)
    assert (data["ok"], data["exit_code"], data["interrupted"]) == (False, 130, True), out
    broken, done, stopped, other = data["runs"]
    assert (broken["status"], broken["exit_code"], broken["error"]) == ("not run", 2, "no such")
    assert (done["status"], done["exit_code"], done["ok"]) == ("ok", 0, True)
    assert Path(done["log"]).read_text() == "done at once\n"
    name = signal.Signals(signum).name
    assert (stopped["status"], stopped["exit_code"]) == ("interrupted", 130), out
    assert f"interrupted ({name}) while it ran" in stopped["error"]
    assert 0 < stopped["seconds"] < 60
    assert stopped["metrics"] == {"stopped_at": "step 3"}  # what it wrote as it stopped
    assert stopped["output_tail"] == "ready\nstopping"
    assert Path(stopped["log"]) == tmp_path / "fake.log"
    assert (other["status"], other["exit_code"], other["log"], other["seconds"]) == (
        "not started", 130, None, None)  # fmt: skip
    assert f"interrupted ({name}) before it started" in other["error"]
    assert not (tmp_path / "other.log").exists()


def test_an_interrupt_of_runs_at_once_reports_each(tmp_path: Path, fake_env: RunTarget) -> None:
    proc = _run_in_own_process(tmp_path, fake_env, STOPPABLE, names=("fake", "other"))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    runs = json.loads(out)["runs"]
    assert [run["status"] for run in runs] == ["interrupted", "interrupted"]
    assert [run["metrics"] for run in runs] == [{"stopped_at": "step 3"}] * 2
    assert [run["output_tail"] for run in runs] == ["ready\nstopping"] * 2


def test_a_second_signal_kills_at_once_and_the_report_still_comes(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    """A command that ignores the first signal: the second one kills it (long before the
    300 s grace period), and the report is still printed whole."""
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + (
        "print('ready', flush=True); time.sleep(600)\n")  # fmt: skip
    proc = _run_in_own_process(tmp_path, fake_env, code, names=("fake", "other"), grace=300)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # in its grace period
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert [run["status"] for run in json.loads(out)["runs"]] == ["interrupted"] * 2


def _run_in_own_process(
    tmp_path: Path,
    fake_env: RunTarget,
    code: str,
    names: tuple[str, ...] = ("fake",),
    grace: float = interrupts.GRACE_SECONDS,
    jobs: int | None = None,
) -> subprocess.Popen[str]:
    """run_all of `python -c code` on environments called `names` (`jobs` at once, by
    default all; one called `broken` is one that could not be made ready), with kboot's
    real signal handlers and a grace period of `grace` s, in a process of its own; prints
    the report as JSON. Returns once every run has started (the command prints `ready`,
    or `done` in an environment called `done`); one at a time, once the first has."""
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from bootstrap.system import interrupts\n"
        "import json\n"
        "from bootstrap.run.execute import RunTarget, Unavailable, run_all\n"
        "from bootstrap.system.errors import ProfileError\n"
        f"interrupts.GRACE_SECONDS = {grace!r}\n"
        "interrupts.install_handlers()\n"
        f"root = Path({str(fake_env.path)!r})\n"
        "targets = [RunTarget(name, root, root / 'bin', 'jax', 'env', root / 'kh')\n"
        "           if name != 'broken' else Unavailable(name, ProfileError('no such'))\n"
        "           for name in sys.argv[4:]]\n"
        "report = run_all(targets, ['python', '-c', sys.argv[2]], {}, log_dir=Path(sys.argv[1]),\n"
        "                 workers=int(sys.argv[3]))\n"
        "print(json.dumps(report.to_dict())); sys.exit(report.exit_code)\n"
    )
    workers = str(jobs or len(names))
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), code, workers, *names],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    runnable = [name for name in names if name != "broken"]
    if jobs == 1:  # one at a time: up to the first that waits
        runnable = runnable[: 2 if runnable[0] == "done" else 1]
    awaited = {tmp_path / f"{n}.log": "done" if n == "done" else "ready" for n in runnable}
    deadline = time.monotonic() + 120
    while not all(log.exists() and word in log.read_text() for log, word in awaited.items()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.02)
    return proc


def test_ctrl_c_reaches_the_command_so_it_can_save_its_work(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    saved = tmp_path / "checkpoint"
    code = (
        "import pathlib, time\n"
        "try:\n"
        "    print('ready', flush=True); time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        f"    time.sleep(0.5); pathlib.Path({str(saved)!r}).write_text('saved')\n"
    )
    proc = _run_in_own_process(tmp_path, fake_env, code, grace=120)  # time to save, if slow
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert saved.read_text() == "saved"  # the script's own handler ran to its end


def test_a_second_ctrl_c_kills_a_command_that_ignores_the_first(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    """The command notes the first Ctrl-C and goes on; the second one kills it at once,
    long before its grace period (here 300 s) is over."""
    first = tmp_path / "first-ctrl-c"
    code = (
        "import pathlib, signal, time\n"
        f"signal.signal(signal.SIGINT, lambda *_: pathlib.Path({str(first)!r}).touch())\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    proc = _run_in_own_process(tmp_path, fake_env, code, grace=300)
    proc.send_signal(signal.SIGINT)
    _when_it_exists(first, lambda: None)  # kboot passed the first one on: it was handled
    assert first.exists()
    assert proc.poll() is None  # still in its grace period
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)  # not the 300 s grace period
    assert proc.returncode == 130, out


def test_a_command_that_ignores_the_signal_is_killed_after_the_grace_period(
    tmp_path: Path, fake_env: RunTarget, clean_cancel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interrupts, "GRACE_SECONDS", 1.0)
    ready, finished = tmp_path / "ready", tmp_path / "finished"
    code = (
        "import pathlib, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)\n"
        f"pathlib.Path({str(finished)!r}).touch()\n"
    )
    signalled: list[float] = []

    def signal_it() -> None:
        signalled.append(time.monotonic())
        interrupts.cancel(signal.SIGINT)

    threading.Thread(target=_when_it_exists, args=(ready, signal_it), daemon=True).start()
    report = run_all([fake_env], py(code), {}, log_dir=tmp_path)
    assert report.interrupted and report.outcomes[0].status == "interrupted"
    assert ready.exists()
    assert time.monotonic() - signalled[0] >= interrupts.GRACE_SECONDS  # it had its grace
    assert not finished.exists()  # then it was killed, not waited for until its 60 s were over


# --- rendering -----------------------------------------------------------------------------


def used(*backends: str) -> tuple[execute.KerasReport, ...]:
    """What processes of a run reported: one per backend given."""
    return tuple(execute.KerasReport(100 + i, name) for i, name in enumerate(backends))


def fake_report(tmp_path: Path) -> RunReport:
    ok = execute.RunOutcome("numpy", "ok", 0, "numpy", tmp_path, "existing", 1.5, 300 * 2**20,
                            {"loss": 0.123456789, "note": "a|b"}, tmp_path / "numpy.log",
                            keras_reports=used("numpy"))  # fmt: skip
    failed = execute.RunOutcome(
        "jax-cpu", "failed", 1, "jax", tmp_path, "created", 2.0, 2**30, {"loss": float("nan")},
        tmp_path / "jax-cpu.log", output_tail="E   assert 'jax' != 'jax'\n```fence```",
        keras_reports=used("jax", "jax"),
    )  # fmt: skip
    missing = execute.RunOutcome("tf-cpu", "not found", 127, "tensorflow", message="'x' was not "
                             "found", hint="install it")  # fmt: skip
    return RunReport(("python", "-m", "pytest"), (ok, failed, missing), tmp_path,
                     ("your shell's KERAS_BACKEND=torch was overridden",))  # fmt: skip


def test_markdown_table_for_a_ci_summary(tmp_path: Path) -> None:
    text = run_markdown(fake_report(tmp_path))
    lines = text.splitlines()
    assert lines[0] == "### kboot run: `python -m pytest`"
    assert lines[2] == "| environment | backend | exit | seconds | peak memory | loss | note |"
    assert lines[4] == "| numpy | numpy | ✅ 0 | 1.50 | 300 MiB | 0.123457 | a\\|b |"
    assert lines[5] == "| jax-cpu | jax | ❌ 1 | 2.00 | 1024 MiB | nan | - |"
    assert lines[6] == "| tf-cpu | tensorflow | ❌ not found | - | - | - | - |"
    assert "1 of 3 runs passed." in lines
    assert (
        f"<details><summary>jax-cpu: exit 1, last lines of {tmp_path}/jax-cpu.log:</summary>"
        in lines
    )
    assert "````text\nE   assert 'jax' != 'jax'\n```fence```\n````" in text
    assert "'x' was not found" in text and "hint: install it" in text
    assert "> warning: your shell's KERAS_BACKEND=torch was overridden" in lines


def test_text_table_with_failures_under_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render_run(fake_report(tmp_path))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["ENV", "BACKEND", "EXIT", "SECONDS", "PEAK", "MEM", "LOSS", "NOTE"]
    assert lines[1].split() == ["numpy", "numpy", "0", "1.50", "300", "MiB", "0.123457", "a|b"]
    table_end = out.index("tf-cpu")
    assert out.index("E   assert 'jax' != 'jax'") > table_end
    assert "tf-cpu: not found: 'x' was not found" in out
    assert out.rstrip().endswith(f"1 of 3 runs passed; logs in {tmp_path}")
    assert "warning: your shell's KERAS_BACKEND=torch was overridden" in err


def interrupted_report(tmp_path: Path) -> RunReport:
    done = execute.RunOutcome("numpy", "ok", 0, "numpy", tmp_path, "existing", 1.5,
                              log=tmp_path / "numpy.log", keras_reports=used("numpy"))  # fmt: skip
    stopped = execute.RunOutcome("jax-cpu", "interrupted", 130, "jax", tmp_path, "existing", 4.0,
                                 log=tmp_path / "jax-cpu.log", output_tail="epoch 3/10",
                                 message="kboot was interrupted (SIGINT) while it ran")  # fmt: skip
    later = execute.RunOutcome("torch-cpu", "not started", 130, "torch", message="kboot was "
                               "interrupted (SIGINT) before it started")  # fmt: skip
    return RunReport(("python", "t.py"), (done, stopped, later), tmp_path, interrupted=True)


def test_an_interrupted_table_shows_what_finished_and_what_was_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = interrupted_report(tmp_path)
    assert report.exit_code == 130  # not the worst run's: the interrupt's
    render_run(report)
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:4]]
    assert [row[:3] for row in rows] == [["numpy", "numpy", "0"],
                                         ["jax-cpu", "unknown", "(set:"],
                                         ["torch-cpu", "torch", "not"]]  # fmt: skip
    assert "interrupted" in out.splitlines()[2] and "not started" in out.splitlines()[3]
    assert f"jax-cpu: interrupted, last lines of {tmp_path}/jax-cpu.log:\n  epoch 3/10" in out
    assert "torch-cpu: not started: kboot was interrupted (SIGINT) before it started" in out
    assert out.rstrip().endswith(
        f"interrupted: 1 of 3 runs passed, 1 interrupted, 1 not started; logs in {tmp_path}"
    )
    markdown = run_markdown(report)
    assert "| jax-cpu | unknown (set: jax) | ❌ interrupted |" in markdown
    assert "interrupted: 1 of 3 runs passed, 1 interrupted, 1 not started." in markdown
    assert "<details><summary>torch-cpu: not started" not in markdown  # nothing to unfold
    data = report.to_dict()
    assert (data["interrupted"], data["exit_code"]) == (True, 130)


# --- the backend that ran ------------------------------------------------------------------


def backend_report(tmp_path: Path) -> RunReport:
    """One run of each kind: the environment's backend, another one, several, none, and a
    command that never started."""

    def outcome(name: str, backend: str, *ran: str, **changes: Any) -> execute.RunOutcome:
        values: dict[str, Any] = {"status": "ok", "exit_code": 0, "seconds": 1.0,
                                  "keras_reports": used(*ran), **changes}  # fmt: skip
        return execute.RunOutcome(name, backend=backend, path=tmp_path, **values)

    return RunReport(("python", "t.py"), (
        outcome("same", "numpy", "numpy"),
        outcome("other", "numpy", "jax"),
        outcome("several", "torch", "torch", "jax"),
        outcome("silent", "jax"),
        outcome("missing", "tensorflow", status="not found", exit_code=127, message="no"),
    ), tmp_path)  # fmt: skip


def test_json_gives_the_configured_and_the_used_backend_apart(tmp_path: Path) -> None:
    runs = {run["name"]: run for run in backend_report(tmp_path).to_dict()["runs"]}
    fields = ("backend", "backends_used", "backend_mismatch")
    assert {name: tuple(run[f] for f in fields) for name, run in runs.items()} == {
        "same": ("numpy", ["numpy"], False),
        "other": ("numpy", ["jax"], True),
        "several": ("torch", ["jax", "torch"], True),
        "silent": ("jax", None, None),  # unknown, not guessed
        "missing": ("tensorflow", None, None),
    }
    assert runs["other"]["keras_processes"] == [{"pid": 100, "backend": "jax", "floatx": None,
                                                 "image_data_format": None,
                                                 "keras_version": None}]  # fmt: skip
    json.dumps(backend_report(tmp_path).to_dict(), allow_nan=False)


def test_the_table_shows_the_backend_that_ran_and_flags_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    render_run(backend_report(tmp_path))
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:6]}
    assert out.splitlines()[0].split() == ["ENV", "BACKEND", "EXIT", "SECONDS", "PEAK", "MEM"]
    assert rows["same"].split()[1:3] == ["numpy", "0"]
    assert "jax (set: numpy)" in rows["other"]
    assert "jax, torch (set: torch)" in rows["several"]
    assert "unknown (set: jax)" in rows["silent"]
    assert rows["missing"].split()[1] == "tensorflow"  # it never started
    assert "note: other: Keras ran on jax, not on the environment's numpy" in out
    assert "note: several: Keras ran on jax, torch, not on the environment's torch" in out
    assert "note: unknown: no process of that environment reported its backend" in out

    lines = run_markdown(backend_report(tmp_path)).splitlines()
    assert lines[4].startswith("| same | numpy | ✅ 0 |")
    assert lines[5].startswith("| other | ⚠️ jax (set: numpy) | ✅ 0 |")
    assert lines[7].startswith("| silent | unknown (set: jax) | ✅ 0 |")
    assert any(line.startswith("> note: other: Keras ran on jax") for line in lines)


def test_a_metric_named_backend_is_not_a_second_backend_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = execute.RunOutcome("numpy", "ok", 0, "numpy", metrics={"backend": "numpy"},
                             keras_reports=used("numpy"))  # fmt: skip
    render_run(RunReport(("x",), (run,), tmp_path))
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split() == ["ENV", "BACKEND", "EXIT", "SECONDS", "PEAK", "MEM", "BACKEND",
                              "(METRIC)"]  # fmt: skip
    assert "| backend (metric) |" in run_markdown(RunReport(("x",), (run,), tmp_path))


def report_file(folder: Path, name: str, document: Any) -> None:
    (folder / name).write_text(json.dumps(document))


def test_reports_are_read_from_this_environments_processes_only(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    folder = tmp_path / "reports"
    folder.mkdir()
    mine = {"prefix": str(env), "backend": "jax", "floatx": "float32", "keras": "3.15.1"}
    report_file(folder, "12-a.json", {**mine, "pid": 12})
    report_file(folder, "7-b.json", {**mine, "pid": 7, "backend": "torch"})
    report_file(folder, "8-c.json", {**mine, "pid": 8, "prefix": str(tmp_path / "other-env")})
    report_file(folder, ".9-d.json", {**mine, "pid": 9})  # one still being written
    report_file(folder, "10-e.json", [1, 2])
    report_file(folder, "11-f.json", {**mine, "pid": "11"})
    (folder / "13-g.json").write_bytes(b"\xff not json")
    (folder / "14-h.json").symlink_to(folder / "12-a.json")
    reports = execute.read_keras_reports(folder, env)
    assert [(r.pid, r.backend) for r in reports] == [(7, "torch"), (12, "jax")]
    assert reports[1] == execute.KerasReport(12, "jax", "float32", None, "3.15.1")
    assert execute.read_keras_reports(tmp_path / "none", env) == ()


def test_the_report_folder_reaches_the_command_and_no_other(tmp_path: Path) -> None:
    inherited = {execute.KERAS_REPORT_VARIABLE: "/an/outer/run"}
    env, _ = run_environ(inherited, target(tmp_path), tmp_path / "m.json")
    assert execute.KERAS_REPORT_VARIABLE not in env
    env, _ = run_environ(inherited, target(tmp_path), tmp_path / "m.json", tmp_path / "r")
    assert env[execute.KERAS_REPORT_VARIABLE] == str(tmp_path / "r")


#: A stand-in for Keras: it reports the backend it would pick, as Keras 3 does.
FAKE_KERAS = """\
import os
__version__ = "3.99.0"


class config:
    backend = staticmethod(lambda: os.environ.get("KERAS_BACKEND") or "tensorflow")
    floatx = staticmethod(lambda: "float32")
    image_data_format = staticmethod(lambda: "channels_last")
"""


@pytest.fixture(scope="module")
def reporting_env(tmp_path_factory: pytest.TempPathFactory) -> RunTarget:
    """A real virtualenv with kboot's startup file and a stand-in keras (no network)."""
    from bootstrap.install.interpreters import running_interpreter
    from bootstrap.install.venv import VirtualEnv

    root = tmp_path_factory.mktemp("reporting") / "env"
    env = VirtualEnv.create(root, running_interpreter())
    env.write_startup_env({"KERAS_HOME": str(root / "keras-home")})
    (env.site_packages / "keras").mkdir()
    (env.site_packages / "keras" / "__init__.py").write_text(FAKE_KERAS)
    return target(root, name="numpy", backend="numpy", bin_dir=env.bin_dir)


CHOOSES_JAX = "import os\nos.environ['KERAS_BACKEND'] = 'jax'\nimport keras\n"


def test_a_command_that_chooses_another_backend_is_flagged(
    tmp_path: Path, reporting_env: RunTarget
) -> None:
    report = run_all([reporting_env], py(CHOOSES_JAX), {}, log_dir=tmp_path)
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.exit_code, report.exit_code) == ("ok", 0, 0)  # a warning
    assert (outcome.backend, outcome.backends_used, outcome.backend_mismatch) == (
        "numpy", ("jax",), True)  # fmt: skip
    (process,) = outcome.keras_reports
    assert (process.floatx, process.image_data_format, process.keras_version) == (
        "float32", "channels_last", "3.99.0")  # fmt: skip
    assert any("Keras ran on jax, not on the environment's numpy" in w for w in outcome.warnings)


def test_strict_backend_fails_the_run(tmp_path: Path, reporting_env: RunTarget) -> None:
    for name in "abc":
        (tmp_path / name).mkdir()
    report = run_all([reporting_env], py(CHOOSES_JAX), {}, log_dir=tmp_path / "a",
                     strict_backend=True)  # fmt: skip
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.exit_code, report.exit_code) == ("wrong backend", 1, 1)
    assert "(--strict-backend)" in (outcome.message or "")
    same = run_all([reporting_env], py("import keras"), {}, log_dir=tmp_path / "b",
                   strict_backend=True).outcomes[0]  # fmt: skip
    silent = run_all([reporting_env], py("pass"), {}, log_dir=tmp_path / "c",
                     strict_backend=True).outcomes[0]  # fmt: skip
    assert (same.status, same.backends_used, same.backend_mismatch) == ("ok", ("numpy",), False)
    assert (silent.status, silent.backends_used, silent.backend_mismatch) == ("ok", None, None)


CHILDREN = """\
import os, subprocess, sys
import keras
subprocess.run([sys.executable, "-c", "import os; os.environ['KERAS_BACKEND'] = 'torch'; "
                "import keras"], check=True)
subprocess.run([sys.executable, "-c", "pass"], check=True)  # no keras: no report
if os.fork() == 0:
    sys.exit(0)  # a forked child reports too, in its own file
os.wait()
"""


def test_every_process_that_imported_keras_reports(
    tmp_path: Path, reporting_env: RunTarget
) -> None:
    (outcome,) = run_all([reporting_env], py(CHILDREN), {}, log_dir=tmp_path).outcomes
    assert outcome.ok, outcome.output_tail
    assert outcome.backends_used == ("numpy", "torch")
    assert sorted(r.backend for r in outcome.keras_reports) == ["numpy", "numpy", "torch"]
    assert len({r.pid for r in outcome.keras_reports}) == 3
    assert outcome.backend_mismatch is True


def test_a_process_killed_before_its_exit_reports_nothing(
    tmp_path: Path, reporting_env: RunTarget
) -> None:
    code = "import os, signal, keras; os.kill(os.getpid(), signal.SIGTERM)"
    (outcome,) = run_all([reporting_env], py(code), {}, log_dir=tmp_path).outcomes
    assert outcome.status == "killed", outcome.output_tail
    assert (outcome.backends_used, outcome.backend_mismatch) == (None, None)


def test_an_environment_built_before_the_report_says_so(
    tmp_path: Path, reporting_env: RunTarget
) -> None:
    from dataclasses import replace

    old = replace(reporting_env, reports_backend=False)
    (outcome,) = run_all([old], py("pass"), {}, log_dir=tmp_path).outcomes
    assert any("built by an older kboot" in w for w in outcome.warnings)
    assert execute._reports_backend(tmp_path / "no-such.pth") is False


@pytest.mark.parametrize("version", ["3.6", "3.8"])
def test_the_startup_file_runs_on_old_pythons(tmp_path: Path, version: str) -> None:
    """Keras 2 environments run Python 3.6: the startup file must too (and stay quiet)."""
    import pwd

    from bootstrap.install.venv import _STARTUP_CODE

    pyenv = Path(os.environ.get("PYENV_ROOT") or Path(pwd.getpwuid(os.getuid()).pw_dir) / ".pyenv")
    python = next(iter(sorted(pyenv.glob(f"versions/{version}.*/bin/python"))), None)
    if python is None:
        pytest.skip(f"no Python {version} in {pyenv}/versions")
    code = _STARTUP_CODE % ascii(json.dumps({}))
    fake = tmp_path / "site"
    (fake / "keras").mkdir(parents=True)
    (fake / "keras" / "__init__.py").write_text(FAKE_KERAS)
    (tmp_path / "r").mkdir()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(fake),
           execute.KERAS_REPORT_VARIABLE: str(tmp_path / "r")}  # fmt: skip
    done = subprocess.run([str(python), "-c", f"exec({code!a}, {{}})\nimport keras"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    (report,) = [json.loads(p.read_text()) for p in (tmp_path / "r").iterdir()]
    assert report["backend"] == "tensorflow"


# --- the CLI -------------------------------------------------------------------------------


def kboot(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "needs `-- COMMAND` after the profiles"),
        (["numpy"], "needs `-- COMMAND` after the profiles"),
        (["numpy", "python", "train.py"], "needs `-- COMMAND` after the profiles"),
        (["numpy", "--"], "no COMMAND after --"),
        (["--", "python", "train.py"], "no PROFILE to run in"),
        (["numpy", "numpy", "--", "python"], "numpy given more than once"),
        (["numpy", "--json", "--markdown", "--", "python"], "choose one"),
    ],
)
def test_usage_errors_show_an_example(
    capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code, _, err = kboot(capsys, "run", *args)
    assert code == 2, err
    assert says in err
    assert "Traceback" not in err
    if "given more than once" not in says and "choose one" not in says:
        assert "kboot run numpy jax-cpu -- python train.py" in err


def test_help_teaches_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = kboot(capsys, "run", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Usage: kboot run [OPTIONS] PROFILE... -- COMMAND [ARGS]..." in text
    assert "kboot run numpy jax-cpu tf-cpu torch-cpu -- python train.py" in text
    assert "$KBOOT_METRICS" in text and "--markdown" in text
    for code_meaning in ("128+N", "127", "126", "130"):
        assert code_meaning in text


@pytest.mark.parametrize("columns", ["80", "200"])
def test_help_fits_in_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    """Wrapped text follows the terminal; the examples are kept as written, so they must
    fit an 80-column terminal themselves."""
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = kboot(capsys, "run", "--help")
    assert code == 0 and "kboot run jax-cpu torch-cpu --markdown" in out
    examples = [line for line in out.splitlines() if line.strip().startswith("kboot run ")]
    assert len(examples) == 3
    too_wide = [line for line in (out.splitlines() if columns == "80" else examples)
                if len(line) > 80]  # fmt: skip
    assert too_wide == []


def test_options_after_the_double_dash_belong_to_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--help` and `--json` after `--` are the command's; an unknown profile is its row.
    Nothing started: no log folder is made anywhere."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code, out, err = kboot(capsys, "run", "no-such-profile-x", "--json", "--", "python", "--help")
    assert code == 2, err
    data = json.loads(out)
    (row,) = data["runs"]
    assert (row["name"], row["status"], row["exit_code"]) == ("no-such-profile-x", "not run", 2)
    assert "no-such-profile-x" in row["error"]
    assert data["command"] == ["python", "--help"]
    assert data["log_dir"] is None
    assert not run_logs_dir().exists()
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == []


def test_a_run_where_nothing_started_leaves_no_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--logs DIR that kboot had to make is removed again when no run left a log; one
    that existed stays."""
    code, out, _ = kboot(capsys, "run", "no-such-x", "--logs", str(tmp_path / "new" / "logs"),
                         "--", "python")  # fmt: skip
    assert code == 2
    assert "no logs (no run started)" in out
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    kboot(capsys, "run", "no-such-x", "--logs", str(tmp_path / "mine"), "--", "python")
    assert (tmp_path / "mine").is_dir()


def test_logs_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    made = run_logs.open_asked(Path("sub/../a/b"))  # printed absolute, without `..`
    assert made.path == tmp_path / "a" / "b" and made.path.is_dir()
    assert made.made == (tmp_path / "a", tmp_path / "a" / "b")
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o700  # a run's output is private
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot use the folder"):
        run_logs.open_asked(tmp_path / "file")
    # a folder that holds anything gets a new subfolder: kboot overwrites no file
    (tmp_path / "a" / "b" / "numpy.log").write_text("the user's")
    again = run_logs.open_asked(tmp_path / "a" / "b")
    assert again.path.parent == tmp_path / "a" / "b" and again.path.name.startswith("run-")
    assert list(again.path.iterdir()) == []
    assert run_logs.close(again) is None and not again.path.exists()  # nothing ran there
    assert (tmp_path / "a" / "b" / "numpy.log").read_text() == "the user's"
    assert run_logs.close(made) == tmp_path / "a" / "b"  # it holds a log: kept


def test_logs_in_a_folder_others_can_change_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could swap what kboot writes there
    code, _, err = kboot(capsys, "run", "numpy", "--logs", str(shared / "logs"), "--", "python")
    assert code == 2
    assert "--logs" in err and "writable by other users" in err
    assert not (shared / "logs").exists()


def test_each_run_gets_a_private_folder_and_the_newest_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    folders = []
    for _ in range(5):
        folder = run_logs.open_default(root, keep=3)
        (folder.path / "numpy.log").write_text("output")
        assert run_logs.close(folder) == folder.path
        folders.append(folder.path)
        time.sleep(0.01)  # several in one second: the marker's time orders them
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o700 for f in folders[2:])
    assert set(root.iterdir()) == set(folders[2:])  # the newest 3
    assert (folders[-1] / run_logs.MARKER).is_file()


def test_pruning_deletes_only_what_proves_to_be_kboots(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir(mode=0o700)

    def old(name: str, *files: str) -> Path:
        folder = root / name
        folder.mkdir()
        for file in files:
            (folder / file).write_text("x")
        return folder

    kboots = old("run-20200101-000000-aaaaaaaa", run_logs.MARKER, "numpy.log")
    no_marker = old("run-20200101-000001-bbbbbbbb", "numpy.log")
    other_file = old("run-20200101-000002-cccccccc", run_logs.MARKER, "notes.txt")
    other_name = old("my-run-20200101", run_logs.MARKER, "numpy.log")
    elsewhere = old("elsewhere", run_logs.MARKER, "numpy.log")
    link = root / "run-20200101-000003-dddddddd"
    link.symlink_to(elsewhere)
    linked_log = old("run-20200101-000004-eeeeeeee", run_logs.MARKER)
    (linked_log / "numpy.log").symlink_to(elsewhere / "numpy.log")
    running = run_logs.open_default(root, keep=100)  # a kboot still runs in it
    (running.path / "numpy.log").write_text("x")
    try:
        removed = run_logs.prune(root, keep=0)
    finally:
        run_logs.close(running)
    assert removed == [kboots]
    for kept in (no_marker, other_file, other_name, elsewhere, link, linked_log, running.path):
        assert os.path.lexists(kept), kept
    assert (elsewhere / "numpy.log").read_text() == "x"  # never through a link
    assert run_logs.prune(root, keep=0) == [running.path]  # done: it goes now


def test_a_prune_killed_at_an_unlink_is_finished_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the first file went: the marker goes last, so the folder still proves
    to be kboot's, the next prune deletes the rest, and nothing else is touched."""
    root = tmp_path / "runs"
    root.mkdir(mode=0o700)
    folder = root / "run-20200101-000000-aaaaaaaa"
    folder.mkdir()
    for name in (run_logs.MARKER, "jax.log", "numpy.log"):
        (folder / name).write_text("x")
    real_unlink = Path.unlink
    calls: list[str] = []

    def killed_after_one(self: Path, missing_ok: bool = False) -> None:
        calls.append(self.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("SIGKILL, as far as this prune knows")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_logs.prune(root, keep=0)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert run_logs.MARKER not in calls  # the marker was to go last
    assert (folder / run_logs.MARKER).is_file()
    assert run_logs.prune(root, keep=0) == [folder]
    assert not folder.exists() and root.is_dir()
    emptied = root / "run-20200101-000001-bbbbbbbb"  # close() killed before its rmdir
    emptied.mkdir()
    assert run_logs.prune(root, keep=0) == [emptied]


def test_an_existing_log_is_not_overwritten(tmp_path: Path, fake_env: RunTarget) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "fake.log").symlink_to(target)
    (outcome,) = run_all([fake_env], py("print('x')"), {}, log_dir=tmp_path / "logs").outcomes
    assert (outcome.status, outcome.exit_code) == ("not run", 2)
    assert "exists already" in (outcome.message or "")
    assert target.read_text() == "keep me"


# --- real environments ---------------------------------------------------------------------

# the README's training script, as written there: the README cannot drift from this test
(TRAIN,) = [b for b in readme_blocks("python") if b.startswith("# train.py")]

LIBRARY = """\
import keras
from keras import ops


def normalize(x):
    x = ops.convert_to_tensor(x, dtype="float32")
    return x / ops.sqrt(ops.sum(x * x))
"""

LIBRARY_TESTS = """\
import keras
from keras import ops

from tinylib import normalize


def test_unit_length():
    assert abs(float(ops.sum(normalize([3.0, 4.0]) ** 2)) - 1.0) < 1e-6


def test_not_on_jax():
    assert keras.config.backend() != "jax", "fails on jax on purpose"
"""


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One kboot home for this module's real environments: each build costs 5-30 s."""
    return tmp_path_factory.mktemp("run-kboot-home")


def kboot_at(
    home: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "KBOOT_HOME": str(home), **(env or {})}
    environ.setdefault("UV_CACHE_DIR", str(platformdirs.user_cache_path("uv")))
    return subprocess.run([sys.executable, "-m", "bootstrap", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip


@pytest.mark.integration
@pytest.mark.needs("torch-cpu-wheels", "local-index")
def test_a_training_script_on_four_backends(tmp_path: Path, shared_home: Path) -> None:
    made = kboot_at(shared_home, tmp_path, "create", "torch-cpu", "--index-url", LOCAL_INDEX,
                    "--find-links", str(TORCH_WHEELS))  # fmt: skip
    assert made.returncode == 0, made.stderr
    (tmp_path / "train.py").write_text(TRAIN)
    proc = kboot_at(
        shared_home, tmp_path, "run", "numpy", "jax-cpu", "tf-cpu", "torch-cpu", "--json",
        "--logs", "logs", "--", "python", "train.py", env={"KERAS_BACKEND": "tensorflow"},
    )  # fmt: skip
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, (proc.stderr, data)
    runs = {row["name"]: row for row in data["runs"]}
    assert list(runs) == ["numpy", "jax-cpu", "tf-cpu", "torch-cpu"]
    expected = {"numpy": "numpy", "jax-cpu": "jax", "tf-cpu": "tensorflow", "torch-cpu": "torch"}
    for name, backend in expected.items():
        row = runs[name]
        assert (row["status"], row["exit_code"], row["backend"]) == ("ok", 0, backend), row
        # what Keras really used: the shell's KERAS_BACKEND did not win
        assert (row["backends_used"], row["backend_mismatch"]) == ([backend], False), row
        assert isinstance(row["metrics"]["loss"], float) and math.isfinite(row["metrics"]["loss"])
        assert row["metrics"]["trained"] is (backend != "numpy")
        assert row["peak_memory_bytes"] > 50 * 2**20
        assert Path(row["log"]) == tmp_path / "logs" / f"{name}.log"
        assert "loss " in Path(row["log"]).read_text()  # the script's own output
    assert runs["torch-cpu"]["action"] == "existing"  # built above, used as it is
    assert data["metrics"] == ["loss", "trained"]
    assert any("KERAS_BACKEND=tensorflow was overridden" in w for w in data["warnings"])

    # again: every environment exists now, none is rebuilt
    again = kboot_at(shared_home, tmp_path, "run", "jax-cpu", "numpy", "--json", "--logs",
                     "logs", "--", "python", "train.py")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert [r["action"] for r in json.loads(again.stdout)["runs"]] == ["existing", "existing"]
    assert "install" not in again.stderr


@pytest.mark.integration
def test_a_librarys_tests_on_several_backends(
    tmp_path: Path, shared_home: Path, write_profile: Any
) -> None:
    user_profiles = Path(os.environ["KBOOT_PROFILES"])  # the test's own, see conftest
    write_profile("kt-numpy", 'backend = "numpy"\npackages = ["numpy", "scipy", "jax", '
                  '"pytest"]\n', folder=user_profiles)  # fmt: skip
    write_profile("kt-jax", 'backend = "jax"\npackages = ["jax", "pytest"]\n',
                  folder=user_profiles)  # fmt: skip
    library = tmp_path / "tinylib"
    library.mkdir()
    (library / "tinylib.py").write_text(LIBRARY)
    (library / "test_tinylib.py").write_text(LIBRARY_TESTS)
    command = ["--", "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    own_tmp = {"TMPDIR": str(tmp_path)}  # the logs' folders

    proc = kboot_at(shared_home, library, "run", "kt-numpy", "kt-jax", *command, env=own_tmp)
    assert proc.returncode == 1, proc.stderr  # pytest's "tests failed", the worst run's
    table, _, below = proc.stdout.partition("\n\n")
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["ENV", "BACKEND", "EXIT", "SECONDS", "PEAK", "MEM"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [("kt-numpy", "numpy", "0"),
                                                      ("kt-jax", "jax", "1")]  # fmt: skip
    assert below.startswith("kt-jax: exit 1, last lines of ")
    assert "AssertionError: fails on jax on purpose" in below
    assert "1 failed, 1 passed" in below
    assert "kt-numpy:" not in below

    markdown = kboot_at(
        shared_home, library, "run", "kt-numpy", "kt-jax", "--markdown", *command, env=own_tmp
    )
    assert markdown.returncode == 1, markdown.stderr
    lines = markdown.stdout.splitlines()
    assert lines[0] == "### kboot run: `python -m pytest -q -p no:cacheprovider`"
    assert lines[4].startswith("| kt-numpy | numpy | ✅ 0 | ")
    assert lines[5].startswith("| kt-jax | jax | ❌ 1 | ")
    assert "fails on jax on purpose" in markdown.stdout
    assert "<details><summary>kt-jax: exit 1" in markdown.stdout

    # an environment that cannot be built is its row; the others still run
    write_profile("kt-bad", 'backend = "numpy"\npackages = ["numpy", "kboot-no-such-package-x"]\n',
                  folder=user_profiles)  # fmt: skip
    bad = kboot_at(shared_home, library, "run", "kt-numpy", "kt-bad", "--json", "--", "python",
                   "-c", "pass", env=own_tmp)  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    ok_row, bad_row = json.loads(bad.stdout)["runs"]
    assert (ok_row["status"], bad_row["status"], bad_row["exit_code"]) == ("ok", "not run", 1)
    assert "kboot-no-such-package-x" in bad_row["error"]
    assert not (shared_home / "envs" / "kt-bad").exists()

    missing = kboot_at(
        shared_home, library, "run", "kt-numpy", "--", "no-such-tool-kboot", env=own_tmp
    )
    assert missing.returncode == 127, missing.stderr
    assert "kt-numpy: not found: 'no-such-tool-kboot' was not found in kt-numpy" in missing.stdout


#: As several keras-io guides begin: the script picks its backend itself.
PICKS_JAX = """\
import os

os.environ["KERAS_BACKEND"] = "jax"
import keras

print("ran on", keras.config.backend())
"""


@pytest.mark.integration
def test_the_backend_a_script_picks_itself_is_shown_and_flagged(
    tmp_path: Path, shared_home: Path
) -> None:
    (tmp_path / "guide.py").write_text(PICKS_JAX)
    own_tmp = {"TMPDIR": str(tmp_path)}  # the logs' folders
    proc = kboot_at(shared_home, tmp_path, "run", "numpy", "--json", "--", "python", "guide.py",
                    env=own_tmp)  # fmt: skip
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, (proc.stderr, data)  # a warning, not a failure
    (row,) = data["runs"]
    assert (row["status"], row["backend"], row["backends_used"], row["backend_mismatch"]) == (
        "ok", "numpy", ["jax"], True)  # fmt: skip
    (process,) = row["keras_processes"]
    assert process["keras_version"].startswith("3.") and process["floatx"] == "float32"
    assert "Keras ran on jax, not on the environment's numpy" in proc.stderr
    assert "ran on jax" in Path(row["log"]).read_text()

    strict = kboot_at(shared_home, tmp_path, "run", "numpy", "--strict-backend", "--", "python",
                      "guide.py", env=own_tmp)  # fmt: skip
    assert strict.returncode == 1, strict.stderr
    header, first = strict.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ENV", "BACKEND", "EXIT"]  # one BACKEND column
    assert first.split()[:6] == ["numpy", "jax", "(set:", "numpy)", "wrong", "backend"]
    assert "note: numpy: Keras ran on jax, not on the environment's numpy" in strict.stdout

    # the environment's own backend when the script leaves it alone; unknown without keras
    own = kboot_at(shared_home, tmp_path, "run", "numpy", "--json", "--strict-backend", "--",
                   "python", "-c", "import keras", env=own_tmp)  # fmt: skip
    assert own.returncode == 0, own.stderr
    (row,) = json.loads(own.stdout)["runs"]
    assert (row["backends_used"], row["backend_mismatch"]) == (["numpy"], False)
    silent = kboot_at(shared_home, tmp_path, "run", "numpy", "--", "python", "-c", "import json",
                      env=own_tmp)  # fmt: skip
    assert silent.returncode == 0, silent.stderr
    assert silent.stdout.splitlines()[1].split()[:4] == ["numpy", "unknown", "(set:", "numpy)"]


def test_ctrl_c_leaves_nothing_the_command_started_running(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    """A process the command started goes too, even one that ignores Ctrl-C."""
    pid_file = tmp_path / "background.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['/bin/sh', '-c', 'trap \"\" INT; exec /bin/sleep 300'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    # a grace period longer than the wait below: the command ended, nothing waits it out
    proc = _run_in_own_process(tmp_path, fake_env, code, grace=300)
    background = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    deadline = time.monotonic() + 60
    while _running(background):
        assert time.monotonic() < deadline, "the command's background process still runs"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return b") Z " not in Path(f"/proc/{pid}/stat").read_bytes()  # a zombie is gone
    except FileNotFoundError:
        return False


def test_a_background_process_does_not_hold_kboot_up(tmp_path: Path, fake_env: RunTarget) -> None:
    """Without a signal, a command that leaves something running ends when it ends (the
    spawner's report pipe is not inherited)."""
    pid_file = tmp_path / "background.pid"
    command = ["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}"]
    report = run_all([fake_env], command, {"PATH": "/usr/bin:/bin"}, log_dir=tmp_path)
    assert report.exit_code == 0
    background = int(pid_file.read_text())
    try:
        assert _running(background)  # run_all came back while it still runs
    finally:
        os.kill(background, signal.SIGKILL)


def test_a_signal_while_the_main_thread_holds_the_children_lock_does_not_hang() -> None:
    """The handler runs in the main thread between two bytecodes: it may find the lock
    held by that same thread (register, unregister, in_grace)."""
    script = (
        "import os, signal\nfrom bootstrap.system import interrupts\n"
        "interrupts.install_handlers()\n"
        "try:\n"
        "    with interrupts._children_lock:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        sum(range(1000))\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.stdout.strip() == "interrupted", proc.stderr


#: Writes a fixed file name in the current folder, waits for the other run to start (or
#: 3 s), reads the file back and reports whether it read its own.
SHARED_FILE = (
    "import glob, json, os, time\n"
    "me = os.environ['VIRTUAL_ENV']\n"
    "open('shared.txt', 'w').write(me)\n"
    "open('started-' + os.path.basename(me), 'w').close()\n"
    "deadline = time.time() + 3\n"
    "while time.time() < deadline and len(glob.glob('started-*')) < 2:\n"
    "    time.sleep(0.05)\n"
    "json.dump({'own': open('shared.txt').read() == me}, open(os.environ['KBOOT_METRICS'], 'w'))\n"
)


@pytest.mark.integration
def test_runs_go_one_at_a_time_so_none_reads_anothers_files(tmp_path: Path) -> None:
    """keras-io's timeseries example writes and reads best_model.keras in the current
    folder: runs at once read each other's. One at a time (the default), each reads its
    own; `--jobs 2` shares the folder, as documented."""
    for name in ("run-a", "run-b"):
        created(kboot_process("create", "numpy", "--name", name, "--no-smoke", "--json"))
    script = tmp_path / "shared.py"
    script.write_text(SHARED_FILE, encoding="utf-8")
    alone = tmp_path / "alone"
    alone.mkdir()
    proc = kboot_process("run", "run-a", "run-b", "--json", "--", "python", str(script), cwd=alone)
    assert proc.returncode == 0, proc.stderr
    assert [o["metrics"]["own"] for o in json.loads(proc.stdout)["runs"]] == [True, True]
    together = tmp_path / "together"
    together.mkdir()
    both = ["run-a", "run-b", "--jobs", "2", "--json", "--", "python", str(script)]
    proc = kboot_process("run", *both, cwd=together)
    assert proc.returncode == 0, proc.stderr
    assert False in [o["metrics"]["own"] for o in json.loads(proc.stdout)["runs"]]


@pytest.mark.integration
def test_ctrl_c_on_kboot_run_json_prints_what_finished_and_what_was_stopped(
    tmp_path: Path, isolated: Path
) -> None:
    """The real CLI: `run-a` ends, `run-b` is running when Ctrl-C comes. stdout is one
    JSON document with both, kboot exits 130, and the logs are in kboot's own log folder
    (absolute, normalised, private), where the next runs keep the newest."""
    for name in ("run-a", "run-b"):
        created(kboot_process("create", "numpy", "--name", name, "--no-smoke", "--json"))
    code = (
        "import os, sys, time\n"
        "if os.environ['VIRTUAL_ENV'].endswith('run-a'): sys.exit(print('finished'))\n"
        "print('rea' + 'dy', flush=True)\n"  # kboot's progress line shows this code
        "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    sys.exit('stopped')\n"
    )
    proc = start_kboot("run", "--json", "run-a", "run-b", "--", "python", "-c", code,
                       until="ready")  # fmt: skip
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "kboot: interrupted" in err
    data = json.loads(out)
    assert (data["ok"], data["exit_code"], data["interrupted"]) == (False, 130, True)
    ran, stopped = data["runs"]
    assert (ran["name"], ran["status"], ran["exit_code"]) == ("run-a", "ok", 0)
    assert (stopped["name"], stopped["status"], stopped["exit_code"]) == (
        "run-b", "interrupted", 130)  # fmt: skip
    log_dir = Path(data["log_dir"])
    runs = isolated / ".local" / "state" / "kboot" / "log" / "runs"
    assert log_dir.parent == runs and str(log_dir) == os.path.realpath(log_dir)
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    assert Path(ran["log"]).read_text() == "finished\n"
    assert Path(stopped["log"]).read_text() == "ready\nstopped\n"  # it had its say
    assert sorted(p.name for p in log_dir.iterdir()) == [".kboot-run", "run-a.log", "run-b.log"]
