"""`kboot run`: the command's environment, the metrics file, runs in fake environments
(tiny real commands), the CLI's usage errors, and real environments running a real Keras
training script and a real pytest suite on several backends."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap import interrupts, run
from bootstrap.cli import main
from bootstrap.errors import Interrupted, MetricsError, ProfileError, UsageError
from bootstrap.run import (
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
from bootstrap.run_table import metric_text, render_run, run_markdown
from helpers import readme_blocks

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
    assert len(str(values["long"])) == run.MAX_TEXT
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
        assert key.isprintable() and len(key) <= run.MAX_TEXT
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
    again = run.log_folder(tmp_path / "again")
    report = run_all([fake_env], [str(script)], {"PATH": "/bin"}, log_dir=again)
    assert (report.outcomes[0].status, report.exit_code) == ("not executable", 126)


def test_a_run_killed_by_a_signal(tmp_path: Path, fake_env: RunTarget) -> None:
    report = run_all([fake_env], py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
                     {}, log_dir=tmp_path)  # fmt: skip
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.exit_code) == ("killed", 128 + signal.SIGTERM)
    assert outcome.exit_text == "killed (SIGTERM)"


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
    seen: list[tuple[float, bytes]] = []
    code = "import time\nprint('first', flush=True)\ntime.sleep(1)\nprint('second')\n"
    started = time.monotonic()

    def echo(chunk: bytes) -> None:
        seen.append((time.monotonic() - started, chunk))

    report = run_all([fake_env], py(code), {}, log_dir=tmp_path, echo=echo)
    assert b"".join(chunk for _, chunk in seen) == b"first\nsecond\n"
    assert seen[0][0] < report.outcomes[0].seconds - 0.5  # before the command ended
    seen.clear()
    other = target(fake_env.path, name="other")
    run_all([fake_env, other], py("print(1)"), {}, log_dir=tmp_path, workers=2,
            echo=lambda chunk: seen.append((0, chunk)))  # fmt: skip
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
    marker = tmp_path / "started"
    code = f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n"

    def cancel_once_started() -> None:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupts.cancel()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        run_all([fake_env, other], py(code), {}, log_dir=tmp_path, workers=workers)
    assert marker.exists()
    assert time.monotonic() - started < 20  # not the 60 s the command sleeps


def test_a_sigint_cancels_the_runs_and_exits_130(tmp_path: Path, fake_env: RunTarget) -> None:
    """Through the real signal handler, in a process of its own."""
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = _run_in_own_process(tmp_path, fake_env, code, names=("fake", "other"))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted: interrupted; every run was stopped" in out


def _run_in_own_process(
    tmp_path: Path, fake_env: RunTarget, code: str, names: tuple[str, ...] = ("fake",)
) -> subprocess.Popen[str]:
    """run_all of `python -c code` on environments called `names` (all at once), with
    kboot's real signal handlers, in a process of its own; returns once every run has
    started (the command prints `ready`)."""
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from bootstrap import interrupts\nfrom bootstrap.run import RunTarget, run_all\n"
        "from bootstrap.errors import Interrupted\n"
        "interrupts.install_handlers()\n"
        f"root = Path({str(fake_env.path)!r})\n"
        "targets = [RunTarget(name, root, root / 'bin', 'jax', 'env', root / 'kh')\n"
        "           for name in sys.argv[3:]]\n"
        "try:\n"
        "    run_all(targets, ['python', '-c', sys.argv[2]], {}, log_dir=Path(sys.argv[1]),\n"
        "            workers=len(targets))\n"
        "except Interrupted as exc:\n"
        "    print('interrupted:', exc.message); sys.exit(exc.exit_code)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), code, *names],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    logs, deadline = [tmp_path / f"{name}.log" for name in names], time.monotonic() + 30
    while not all(log.exists() and "ready" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "the runs did not start"
        time.sleep(0.05)
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
    proc = _run_in_own_process(tmp_path, fake_env, code)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, out
    assert saved.read_text() == "saved"  # the script's own handler ran to its end


def test_a_second_ctrl_c_kills_a_command_that_ignores_the_first(
    tmp_path: Path, fake_env: RunTarget
) -> None:
    code = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = _run_in_own_process(tmp_path, fake_env, code)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # still in its grace period
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, out
    assert time.monotonic() - started < interrupts.GRACE_SECONDS  # not the grace period


def test_a_command_that_ignores_the_signal_is_killed_after_the_grace_period(
    tmp_path: Path, fake_env: RunTarget, clean_cancel: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interrupts, "GRACE_SECONDS", 1.0)
    ready = tmp_path / "ready"
    code = (
        "import pathlib, signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)\n"
    )

    def signal_once_started() -> None:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupts.cancel(signal.SIGINT)

    threading.Thread(target=signal_once_started, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        run_all([fake_env], py(code), {}, log_dir=tmp_path)
    assert ready.exists()
    assert interrupts.GRACE_SECONDS <= time.monotonic() - started < 20  # not the 60 s it sleeps


# --- rendering -----------------------------------------------------------------------------


def fake_report(tmp_path: Path) -> RunReport:
    ok = run.RunOutcome("numpy", "ok", 0, "numpy", tmp_path, "existing", 1.5, 300 * 2**20,
                        {"loss": 0.123456789, "note": "a|b"}, tmp_path / "numpy.log")  # fmt: skip
    failed = run.RunOutcome(
        "jax-cpu", "failed", 1, "jax", tmp_path, "created", 2.0, 2**30, {"loss": float("nan")},
        tmp_path / "jax-cpu.log", output_tail="E   assert 'jax' != 'jax'\n```fence```",
    )  # fmt: skip
    missing = run.RunOutcome("tf-cpu", "not found", 127, "tensorflow", message="'x' was not "
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


def test_options_after_the_double_dash_belong_to_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--help` and `--json` after `--` are the command's; an unknown profile is its row."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the logs' folder goes there
    code, out, err = kboot(capsys, "run", "no-such-profile-x", "--json", "--", "python", "--help")
    assert code == 2, err
    data = json.loads(out)
    (row,) = data["runs"]
    assert (row["name"], row["status"], row["exit_code"]) == ("no-such-profile-x", "not run", 2)
    assert "no-such-profile-x" in row["error"]
    assert data["command"] == ["python", "--help"]
    assert Path(data["log_dir"]).parent == tmp_path


def test_logs_folder(tmp_path: Path) -> None:
    assert run.log_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot use the folder"):
        run.log_folder(tmp_path / "file")
    # a folder that holds anything gets a new subfolder: kboot overwrites no file
    (tmp_path / "a" / "b" / "numpy.log").write_text("the user's")
    again = run.log_folder(tmp_path / "a" / "b")
    assert again.parent == tmp_path / "a" / "b" and again.name.startswith("run-")
    assert list(again.iterdir()) == []
    assert (tmp_path / "a" / "b" / "numpy.log").read_text() == "the user's"


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

TORCH_WHEELS = Path(os.environ.get("KBOOT_TEST_TORCH_WHEELS", "/opt/wheels"))
LOCAL_INDEX = os.environ.get("KBOOT_TEST_INDEX_URL", "file:///opt/pypi/simple")

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
def test_a_training_script_on_four_backends(tmp_path: Path, shared_home: Path) -> None:
    wheels = sorted(TORCH_WHEELS.glob("torch-*+cpu-*.whl"))
    assert wheels, f"no CPU torch wheel in {TORCH_WHEELS} (set KBOOT_TEST_TORCH_WHEELS)"
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
        assert row["metrics"]["backend"] == backend  # the shell's KERAS_BACKEND did not win
        assert isinstance(row["metrics"]["loss"], float) and math.isfinite(row["metrics"]["loss"])
        assert row["metrics"]["trained"] is (backend != "numpy")
        assert row["peak_memory_bytes"] > 50 * 2**20
        assert Path(row["log"]) == tmp_path / "logs" / f"{name}.log"
        assert "loss " in Path(row["log"]).read_text()  # the script's own output
    assert runs["torch-cpu"]["action"] == "existing"  # built above, used as it is
    assert data["metrics"] == ["backend", "loss", "trained"]
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
    proc = _run_in_own_process(tmp_path, fake_env, code)
    background = int(pid_file.read_text())
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, out
    assert time.monotonic() - started < interrupts.GRACE_SECONDS
    deadline = time.monotonic() + 5
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
    started = time.monotonic()
    command = ["sh", "-c", "sleep 30 >/dev/null 2>&1 &"]
    report = run_all([fake_env], command, {"PATH": "/usr/bin:/bin"}, log_dir=tmp_path)
    assert report.exit_code == 0
    assert time.monotonic() - started < 10


def test_a_signal_while_the_main_thread_holds_the_children_lock_does_not_hang() -> None:
    """The handler runs in the main thread between two bytecodes: it may find the lock
    held by that same thread (register, unregister, in_grace)."""
    script = (
        "import os, signal\nfrom bootstrap import interrupts\ninterrupts.install_handlers()\n"
        "try:\n"
        "    with interrupts._children_lock:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        sum(range(1000))\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=20
    )
    assert proc.stdout.strip() == "interrupted", proc.stderr
