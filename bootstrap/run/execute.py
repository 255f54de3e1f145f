"""`kboot run PROFILE... -- COMMAND`: one command in several environments, side by side.

What is missing is created through `create`'s own machinery (the batch); an existing
kboot environment of that name is used as it is. Each run gets what `uv run` gives: the
environment's `bin` first on PATH and VIRTUAL_ENV; and the environment's own Keras
settings win over the shell's (KERAS_BACKEND, and whatever its startup file sets, such as
KERAS_HOME), with a warning when one was overridden. A run's output goes to a log file;
its exit status, wall time and peak memory are measured by `runner.run_logged`, and the
command may report metrics: one JSON object of scalar values, written to the file that
$KBOOT_METRICS names. A metrics file is data from the user's code: anything but such an
object is a warning, never a crash.

The backend shown is the one Keras really used: the environment's startup file (see
install/venv.py) makes each of its processes that imported keras write, at exit, the
backend in use into a private folder that `$_KBOOT_KERAS_REPORT` names for this run. A
command may choose another backend than its environment's (a script that sets
KERAS_BACKEND itself): that is flagged, and fails the run only with `strict_backend`.
Nothing reported (keras never imported, the process killed, an environment built before
kboot reported backends) is unknown, never guessed.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from bootstrap.run import logs as run_logs
from bootstrap.system import interrupts, runner
from bootstrap.system.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    EnvironmentStateError,
    KbootError,
    MetricsError,
    UsageError,
)
from bootstrap.system.paths import KERAS_REPORT_VARIABLE
from bootstrap.system.progress import RecordingReporter, Reporter

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

if TYPE_CHECKING:
    from bootstrap.profiles.model import Profile
    from bootstrap.state.ledger import Ledger

#: The variable that names the file a command may write its metrics into.
METRICS_VARIABLE = "KBOOT_METRICS"
MAX_METRICS_BYTES = 64 * 1024
MAX_METRICS = 32  # keys kept of one metrics file: each becomes a column
MAX_TEXT = 200  # characters kept of a metric's name or text value
TAIL_LINES = 20  # of a failed run's output, shown under the table
_TAIL_BYTES = 64 * 1024
MAX_KERAS_REPORTS = 256  # processes' reports read for one run (pytest -n 64 stays far below)
_MAX_REPORT_BYTES = 4096
#: Statuses of a run whose command never started: nothing could report a backend.
NOT_STARTED = ("not found", "not executable", "not run", "not started")

Scalar: TypeAlias = str | int | float | bool | None


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTarget:
    """An environment ready to run a command in."""

    name: str
    path: Path
    bin_dir: Path
    backend: str
    scope: str  # env | user: where its keras.json lives
    keras_home: Path
    startup_env: Mapping[str, str] = field(default_factory=dict)  # what its startup file sets
    action: str = "existing"  # existing | created (by this run)
    warnings: tuple[str, ...] = ()
    reports_backend: bool = True  # False: its startup file predates the backend report


@dataclass(frozen=True)
class KerasReport:
    """What one process of a run reported at its exit: the Keras it really used."""

    pid: int
    backend: str
    floatx: str | None = None
    image_data_format: str | None = None
    keras_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "backend": self.backend,
            "floatx": self.floatx,
            "image_data_format": self.image_data_format,
            "keras_version": self.keras_version,
        }


@dataclass(frozen=True)
class Unavailable:
    """An environment that could not be made ready (a bad profile, a failed create...)."""

    label: str
    error: KbootError


Prepared: TypeAlias = RunTarget | Unavailable


@dataclass(frozen=True)
class RunOutcome:
    name: str
    # ok | failed | killed | wrong backend | not found | not executable | not run; and at
    # an interrupt: interrupted (it was running), not started
    status: str
    exit_code: int  # as a shell reports it: 128+N for signal N; 127, 126; kboot's own code
    backend: str | None = None  # the environment's configured backend
    path: Path | None = None
    action: str | None = None  # existing | created; None when it could not be made ready
    seconds: float | None = None
    max_rss: int | None = None  # peak resident memory in bytes
    metrics: Mapping[str, Scalar] = field(default_factory=dict)
    log: Path | None = None
    output_tail: str = ""  # the last lines of a failed run's output
    message: str | None = None  # why it did not run, or did not start
    hint: str | None = None
    warnings: tuple[str, ...] = ()
    keras_reports: tuple[KerasReport, ...] = ()  # one per process that imported keras

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def backends_used(self) -> tuple[str, ...] | None:
        """The backends Keras really used in the run's processes (sorted, usually one);
        None when none reported (keras never imported, killed, or not known)."""
        if not self.keras_reports:
            return None
        return tuple(sorted({report.backend for report in self.keras_reports}))

    @property
    def backend_mismatch(self) -> bool | None:
        """True when a process used another backend than the environment's; None: unknown."""
        used = self.backends_used
        if used is None or self.backend is None:
            return None
        return used != (self.backend,)

    @property
    def exit_text(self) -> str:
        """The exit status for a table cell: `0`, `1`, `killed (SIGKILL)`, `not found`."""
        if self.status in ("ok", "failed"):
            return str(self.exit_code)
        if self.status == "killed":
            return f"killed ({_signal_name(self.exit_code - 128)})"
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "exit_code": self.exit_code,
            "backend": self.backend,
            "backends_used": None if self.backends_used is None else list(self.backends_used),
            "backend_mismatch": self.backend_mismatch,
            "keras_processes": [report.to_dict() for report in self.keras_reports],
            "path": str(self.path) if self.path else None,
            "action": self.action,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "peak_memory_bytes": self.max_rss,
            "metrics": {key: json_value(value) for key, value in self.metrics.items()},
            "log": str(self.log) if self.log else None,
            "output_tail": self.output_tail if not self.ok else None,
            "error": self.message,
            "hint": self.hint,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class RunReport:
    command: tuple[str, ...]
    outcomes: tuple[RunOutcome, ...]
    log_dir: Path | None  # None: no run left a log
    warnings: tuple[str, ...] = ()
    interrupted: bool = False  # Ctrl-C, SIGTERM or SIGHUP stopped the runs

    @property
    def exit_code(self) -> int:
        """The worst run's: the highest exit code among them (0 when every run passed);
        130 when the runs were interrupted."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return max((outcome.exit_code for outcome in self.outcomes), default=EXIT_OK)

    @property
    def metric_names(self) -> list[str]:
        """Every metric any run reported, in the order they first appear."""
        names: dict[str, None] = {}
        for outcome in self.outcomes:
            names.update(dict.fromkeys(outcome.metrics))
        return list(names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "command": list(self.command),
            "log_dir": None if self.log_dir is None else str(self.log_dir),
            "metrics": self.metric_names,
            "runs": [outcome.to_dict() for outcome in self.outcomes],
            "warnings": list(self.warnings),
        }


def json_value(value: Scalar) -> Scalar:
    """JSON has no NaN or infinity: those (a diverged loss) become the strings nan, inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- metrics -------------------------------------------------------------------------------


def parse_metrics(data: bytes) -> tuple[dict[str, Scalar], list[str]]:
    """One JSON object of scalar values -> (the values, warnings about what was left out).

    Raises MetricsError, and nothing else, for anything that is not such an object.
    Names and text are cut to MAX_TEXT printable characters (a metrics file may hold
    terminal escapes or lone surrogates); at most MAX_METRICS keys are kept.
    """
    if len(data) > MAX_METRICS_BYTES:
        raise MetricsError(f"it is over {MAX_METRICS_BYTES // 1024} KiB: ignored")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MetricsError(f"it is not UTF-8 text (byte {exc.start})") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise MetricsError("it is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers of over 4300 digits
        raise MetricsError(f"it is not JSON: {_clean(str(exc))}") from None
    if not isinstance(document, dict):
        raise MetricsError(
            f"it holds a JSON {_json_type(document)}, not one object of scalar values "
            '(e.g. {"loss": 0.12, "backend": "jax"})'
        )
    values: dict[str, Scalar] = {}
    nested, extra = [], 0
    for key, value in document.items():
        name = _clean(key) or "?"
        if isinstance(value, dict | list):
            nested.append(name)
        elif len(values) >= MAX_METRICS:
            extra += 1
        else:
            values[name] = _clean(value) if isinstance(value, str) else value
    warnings = []
    if nested:
        warnings.append(
            f"left out {', '.join(nested[:5])}{'...' if len(nested) > 5 else ''}: "
            "not a scalar (a number, text, true/false or null)"
        )
    if extra:
        warnings.append(f"left out {extra} more keys: {MAX_METRICS} at most")
    return values, warnings


def _clean(text: str) -> str:
    """Printable, encodable, and not too long."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates from \\ud800
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "true/false" if isinstance(value, bool) else "number"


def read_metrics(path: Path) -> tuple[dict[str, Scalar], list[str]]:
    """What a run wrote to its metrics file, and warnings; never raises. No file: none."""
    try:
        # O_NONBLOCK: a FIFO put there must not hold kboot up; only a regular file is read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _NOFOLLOW)  # no link
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"the metrics ($KBOOT_METRICS): cannot read it: {exc.strerror}"]
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {}, ["the metrics ($KBOOT_METRICS): not a regular file, ignored"]
        data = os.read(fd, MAX_METRICS_BYTES + 1)
        values, notes = parse_metrics(data)
    except OSError as exc:
        return {}, [f"the metrics ($KBOOT_METRICS): cannot read it: {exc.strerror}"]
    except MetricsError as exc:
        return {}, [f"the metrics ($KBOOT_METRICS): {exc.message}"]
    finally:
        os.close(fd)
    return values, [f"the metrics ($KBOOT_METRICS): {note}" for note in notes]


# --- the backend that ran ------------------------------------------------------------------


def read_keras_reports(folder: Path, env_root: Path) -> tuple[KerasReport, ...]:
    """The backends reported into `folder` by processes of the environment at `env_root`
    (a process of another environment the command started reports its own: left out).
    Never raises: a file that is not such a report is skipped. Sorted by pid."""
    try:
        files = sorted(folder.iterdir())
    except OSError:
        return ()
    mine = os.path.realpath(env_root)
    reports: list[KerasReport] = []
    for path in files:
        if len(reports) >= MAX_KERAS_REPORTS:
            break
        if path.name.startswith(".") or path.suffix != ".json":  # .NAME: being written
            continue
        found = parse_keras_report(_read_small(path, _MAX_REPORT_BYTES))
        if found is not None and os.path.realpath(found[0]) == mine:
            reports.append(found[1])
    return tuple(sorted(reports, key=lambda report: report.pid))


def _read_small(path: Path, limit: int) -> bytes:
    """A regular file's first bytes (b"" for anything else); never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _NOFOLLOW)
    except OSError:
        return b""
    try:
        return os.read(fd, limit + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)


def parse_keras_report(data: bytes) -> tuple[str, KerasReport] | None:
    """One process's report (see install/venv.py) -> (its sys.prefix, the report); None
    for anything else."""
    try:
        document = json.loads(data.decode("ascii"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(document, dict):
        return None
    pid, prefix, backend = document.get("pid"), document.get("prefix"), document.get("backend")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if not (isinstance(prefix, str) and prefix and isinstance(backend, str) and backend):
        return None

    def text(key: str) -> str | None:
        value = document.get(key)
        return _clean(value) if isinstance(value, str) and value else None

    report = KerasReport(
        pid=pid,
        backend=_clean(backend),
        floatx=text("floatx"),
        image_data_format=text("image_data_format"),
        keras_version=text("keras"),
    )
    return prefix, report


def backend_warning(outcome: RunOutcome) -> str | None:
    """What to say when the run's Keras used another backend than its environment's."""
    if not outcome.backend_mismatch:
        return None
    used = ", ".join(outcome.backends_used or ())
    return (
        f"Keras ran on {used}, not on the environment's {outcome.backend}: the command "
        "chose its backend itself (e.g. it sets KERAS_BACKEND before importing keras)"
    )


# --- one run -------------------------------------------------------------------------------


def run_environ(
    base: Mapping[str, str], target: RunTarget, metrics: Path, keras_report: Path | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The command's environment, and the shell's values it overrides (name -> value).

    As `uv run` does: the environment's bin first on PATH, VIRTUAL_ENV, no PYTHONHOME.
    The environment's config wins: KERAS_BACKEND is always its backend, and a variable
    its startup file would set (KERAS_HOME, JAX_ENABLE_X64...) but that the shell sets
    otherwise (the startup file defers to the shell) is set to the environment's value.
    `keras_report` is the folder where its processes report their backend (a value
    inherited from an outer `kboot run` is never passed on).
    """
    env = dict(base)
    env.pop("PYTHONHOME", None)
    env.pop(KERAS_REPORT_VARIABLE, None)
    env["VIRTUAL_ENV"] = str(target.path)
    env["PATH"] = os.pathsep.join(
        [str(target.bin_dir), *([base["PATH"]] if base.get("PATH") else [])]
    )
    wanted = {**target.startup_env, "KERAS_BACKEND": target.backend}
    if target.scope == "user":  # its keras.json is in the user's Keras home of the time
        from bootstrap.system.paths import user_keras_home

        if Path(user_keras_home(base)) != target.keras_home:
            wanted["KERAS_HOME"] = str(target.keras_home)
    overridden = {}
    for name, value in wanted.items():
        current = base.get(name) or None  # an empty one counts as unset, as in the startup file
        if current is not None and not _same(name, current, value):
            overridden[name] = current
        if name == "KERAS_BACKEND" or current is not None or name not in target.startup_env:
            env[name] = value  # else its startup file sets it
    env[METRICS_VARIABLE] = str(metrics)
    if keras_report is not None:
        env[KERAS_REPORT_VARIABLE] = str(keras_report)
    return env, overridden


def _same(name: str, current: str, value: str) -> bool:
    if name == "KERAS_HOME":
        return Path(current).expanduser().absolute() == Path(value).absolute()
    return current == value


def find_command(name: str, search_path: str) -> str | None:
    """The program `name` stands for: a path as given, else the first on `search_path`."""
    if os.sep in name or (os.altsep and os.altsep in name):
        return name if os.path.lexists(name) else None
    return shutil.which(name, path=search_path)


def run_one(
    target: RunTarget,
    command: Sequence[str],
    environ: Mapping[str, str],
    *,
    log: Path,
    metrics: Path,
    reporter: Reporter,
    echo: Callable[[bytes], None] | None = None,
    keras_report: Path | None = None,
    strict_backend: bool = False,
) -> RunOutcome:
    """Run `command` in one environment; its output goes to `log`, and its processes
    report the backend they used into the new folder `keras_report`."""
    if keras_report is not None:
        keras_report.mkdir(mode=0o700)
    env, overridden = run_environ(environ, target, metrics, keras_report)
    warnings = [*target.warnings]
    if not target.reports_backend:
        warnings.append(
            f"{target.name} was built by an older kboot: the backend its command really "
            f"uses is not known (kboot create {target.name} --force rebuilds it)"
        )
    warnings += [
        f"your shell's {name}={value} was overridden with the environment's "
        f"{name}={env.get(name, target.startup_env.get(name))}"
        for name, value in overridden.items()
        if name != "KERAS_BACKEND"  # one warning for all runs, see run_all
    ]
    for warning in warnings:
        reporter.warn(warning)
    base = RunOutcome(
        name=target.name,
        status="not run",
        exit_code=EXIT_OK,
        backend=target.backend,
        path=target.path,
        action=target.action,
        log=log,
        warnings=tuple(warnings),
    )
    program = find_command(command[0], env["PATH"])
    if program is None:  # no log: the command never started
        return replace(
            base,
            status="not found",
            exit_code=runner.EXIT_NOT_FOUND,
            log=None,
            message=f"{command[0]!r} was not found in {target.name} ({target.bin_dir}) "
            "or on your PATH",
            hint="install it into the environment (add it to the profile's packages)",
        )
    try:  # a new file: kboot writes no file it did not make (nor through a link)
        os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644))
    except FileExistsError:
        return replace(
            base,
            exit_code=EXIT_USAGE,
            log=None,
            message=f"{log} exists already: kboot does not overwrite a file it did not make",
            hint="give --logs a new or empty folder (an existing one gets a new subfolder)",
        )
    if echo is not None:
        env.setdefault("PYTHONUNBUFFERED", "1")  # shown live: Python would buffer a file
    reporter.info(f"running {shlex.join(command)}")
    if program != command[0] and Path(program).parent != target.bin_dir:
        # fine for make or bash; for a Python tool (pytest) it means another interpreter
        reporter.info(f"{command[0]} is not in this environment: {program} runs")
    try:
        done = runner.run_logged(command, output=log, env=env, executable=program, echo=echo)
    except CommandError as exc:
        missing = exc.returncode == runner.EXIT_NOT_FOUND
        return replace(
            base,
            status="not found" if missing else "not executable",
            exit_code=exc.returncode,
            message=exc.message,
        )
    values, metric_warnings = read_metrics(metrics)
    for warning in metric_warnings:
        reporter.warn(warning)
    reports = read_keras_reports(keras_report, target.path) if keras_report else ()
    if done.returncode < 0:
        status, code = "killed", 128 - done.returncode
        reporter.info(f"killed by {_signal_name(-done.returncode)} after {done.seconds:.1f} s")
    else:
        status, code = ("ok" if done.returncode == 0 else "failed"), done.returncode
        reporter.info(f"exit {code} after {done.seconds:.1f} s")
    outcome = replace(
        base,
        status=status,
        exit_code=code,
        seconds=done.seconds,
        max_rss=done.max_rss,
        metrics=values,
        warnings=(*base.warnings, *metric_warnings),
        keras_reports=reports,
    )
    mismatch = backend_warning(outcome)
    if mismatch:
        reporter.warn(mismatch)
        outcome = replace(outcome, warnings=(*outcome.warnings, mismatch))
        if strict_backend and outcome.ok:
            used = ", ".join(outcome.backends_used or ())
            outcome = replace(
                outcome,
                status="wrong backend",
                exit_code=EXIT_FAILED,
                message=f"{mismatch} (--strict-backend)",
                hint=f"let the environment choose its backend, or run it in a {used} one",
            )
    return replace(outcome, output_tail="" if outcome.ok else output_tail(log))


def output_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log, read from its end (a log may be large)."""
    try:
        with log.open("rb") as source:
            size = source.seek(0, os.SEEK_END)
            source.seek(max(0, size - _TAIL_BYTES))
            data = source.read()
    except OSError:
        return ""
    return runner.tail(data.decode("utf-8", "replace"), lines)


# --- several -------------------------------------------------------------------------------


def run_all(
    prepared: Sequence[Prepared],
    command: Sequence[str],
    environ: Mapping[str, str],
    *,
    log_dir: Path | None,
    workers: int = 1,
    reporter_for: Callable[[str], Reporter] | None = None,
    echo: Callable[[bytes], None] | None = None,
    strict_backend: bool = False,
) -> RunReport:
    """Run `command` in every prepared environment; outcomes in the order given.

    One at a time (`workers` 1, or a single environment) the output is also handed to
    `echo` as it comes; several at once, only the log files have it. The logs go into
    `log_dir` (None only when no environment is ready to run in).

    Ctrl-C, SIGTERM or SIGHUP stop the runs (see system/interrupts.py), and the report
    still comes: what finished, as it finished; each run that was stopped as
    `interrupted`, with its time, log, last lines and what it reported; the others as
    `not started`; and `interrupted` set (exit code 130).
    """
    if not command:
        raise UsageError("no COMMAND to run", hint=EXAMPLE)
    reporter_for = reporter_for or (lambda label: RecordingReporter())
    stems = _log_stems([item.name if isinstance(item, RunTarget) else item.label
                        for item in prepared])  # fmt: skip
    one_at_a_time = workers <= 1 or len(prepared) <= 1
    finished = {index: _not_run(item) for index, item in enumerate(prepared)
                if isinstance(item, Unavailable)}  # fmt: skip
    started: dict[int, float] = {}  # index -> when its command started (monotonic)
    ended: dict[int, float] = {}

    def one(index: int) -> None:
        item = prepared[index]
        if isinstance(item, Unavailable):
            return
        assert log_dir is not None, "no folder for the logs"
        interrupts.check()  # cancelled meanwhile (several at once): this one never starts
        started[index] = time.monotonic()
        try:
            finished[index] = run_one(
                item,
                command,
                environ,
                log=log_dir / f"{stems[index]}.log",
                metrics=private / f"{stems[index]}.metrics.json",
                reporter=reporter_for(item.name),
                echo=echo if one_at_a_time else None,
                keras_report=private / f"{stems[index]}.keras",
                strict_backend=strict_backend,
            )
        finally:
            ended[index] = time.monotonic()

    def stopped(index: int, why: str) -> RunOutcome:
        """The outcome of a run that did not finish: stopped while it ran, or never started."""
        item = prepared[index]
        assert isinstance(item, RunTarget)  # the others are finished from the start
        if index not in started or log_dir is None:
            return _stopped(item, why)
        seconds = ended.get(index, time.monotonic()) - started[index]
        reporter_for(item.name).info(f"stopped ({why}) after {seconds:.1f} s")
        return _stopped(item, why, seconds=seconds, log=log_dir / f"{stems[index]}.log",
                        private=private, stem=stems[index])  # fmt: skip

    # the metrics files and backend reports live in kboot's own temporary folder (mode
    # 0700), gone after the runs
    metrics_folder = tempfile.TemporaryDirectory(prefix="kboot-metrics-")
    private = Path(metrics_folder.name)
    pool = None if one_at_a_time else ThreadPoolExecutor(max_workers=workers)
    try:
        why = _each(one, len(prepared), pool)  # the signal that interrupted the runs, if any
        if why is None:
            outcomes = tuple(finished[index] for index in range(len(prepared)))
            return RunReport(tuple(command), outcomes, log_dir, _shell_backend(prepared, environ))
        # what was gathered is reported: a further signal kills what still runs at once,
        # and does not stop the report half-way
        with interrupts.finishing():
            interrupts.cancel()  # the signal handler did already; a bare KeyboardInterrupt not
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            outcomes = tuple(finished.get(i) or stopped(i, why) for i in range(len(prepared)))
            metrics_folder.cleanup()
        return RunReport(tuple(command), outcomes, log_dir, _shell_backend(prepared, environ),
                         interrupted=True)  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        metrics_folder.cleanup()


def _each(work: Callable[[int], None], count: int, pool: ThreadPoolExecutor | None) -> str | None:
    """work(0), ..., work(count - 1), in the pool if any; None, or the name of the signal
    that interrupted them ("cancelled" without a signal)."""
    try:
        if pool is None:
            for index in range(count):
                work(index)
        else:
            list(pool.map(work, range(count)))
    except KeyboardInterrupt as exc:
        return str(exc) if str(exc).startswith("SIG") else "cancelled"
    return None


def _stopped(
    item: RunTarget,
    why: str,
    *,
    seconds: float | None = None,
    log: Path | None = None,
    private: Path | None = None,
    stem: str = "",
) -> RunOutcome:
    """A run an interrupt stopped: `not started`, or with `seconds`, `interrupted` while it
    ran (what it wrote to its log and reported in `private` is kept)."""
    outcome = RunOutcome(
        name=item.name,
        status="not started",
        exit_code=EXIT_INTERRUPTED,
        backend=item.backend,
        path=item.path,
        action=item.action,
        message=f"kboot was interrupted ({why}) before it started",
        warnings=item.warnings,
    )
    if seconds is None or log is None or private is None:
        return outcome
    values, notes = read_metrics(private / f"{stem}.metrics.json")
    return replace(
        outcome,
        status="interrupted",
        seconds=seconds,
        metrics=values,
        log=log if os.path.lexists(log) else None,
        output_tail=output_tail(log),
        message=f"kboot was interrupted ({why}) while it ran: the command got the signal, "
        f"and was killed if it had not ended {interrupts.GRACE_SECONDS:g} s later",
        warnings=(*item.warnings, *notes),
        keras_reports=read_keras_reports(private / f"{stem}.keras", item.path),
    )


def _not_run(item: Unavailable) -> RunOutcome:
    return RunOutcome(
        name=item.label,
        status="not run",
        exit_code=item.error.exit_code,
        message=item.error.message,
        hint=item.error.hint,
    )


def _shell_backend(prepared: Sequence[Prepared], environ: Mapping[str, str]) -> tuple[str, ...]:
    shell = environ.get("KERAS_BACKEND")
    backends = sorted({item.backend for item in prepared if isinstance(item, RunTarget)})
    if not shell or backends in ([], [shell]):
        return ()
    return (
        f"your shell's KERAS_BACKEND={shell} was overridden: each run uses its "
        f"environment's backend ({', '.join(backends)})",
    )


def _log_stems(names: Sequence[str]) -> list[str]:
    """File names for each run's log: the environment's name, made unique."""
    stems: list[str] = []
    for name in names:
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "env"
        candidate, n = stem, 1
        while candidate in stems:
            n += 1
            candidate = f"{stem}-{n}"
        stems.append(candidate)
    return stems


# --- preparing the environments ------------------------------------------------------------

EXAMPLE = "for example: kboot run numpy jax-cpu -- python train.py"


def prepare(
    refs: Sequence[str],
    environ: Mapping[str, str],
    *,
    reporter_for: Callable[[str], Reporter],
    workers: int | None = None,
) -> list[Prepared]:
    """Each PROFILE as an environment to run in, in the order given.

    A name (or path) of an environment kboot made is used as it is; otherwise the profile
    is resolved and the environment it names is used if it exists, else created (all
    missing ones together, as `kboot create A B` does). One that cannot be made ready
    becomes Unavailable, and the others still run.
    """
    from bootstrap.envs.lifecycle import open_ledger
    from bootstrap.envs.names import resolve
    from bootstrap.profiles.catalog import catalog
    from bootstrap.system.paths import envs_dir, kboot_home

    profiles_here = catalog(environ=environ)

    repeated = sorted({ref for ref in refs if refs.count(ref) > 1})
    if repeated:
        raise UsageError(f"{', '.join(repeated)} given more than once")
    ledger = open_ledger(kboot_home(environ), envs_dir(environ))
    paths: dict[int, Path] = {}
    missing: dict[int, Profile] = {}  # index -> the profile to create
    failed: dict[int, Unavailable] = {}
    for index, ref in enumerate(refs):
        try:
            meant = resolve(ref, environ, want="either", profiles=profiles_here, ledger=ledger)
            if not meant.exists:
                assert meant.profile is not None  # a missing one comes with its profile
                missing[index] = meant.profile
                continue
            paths[index] = meant.path
        except KbootError as exc:
            failed[index] = Unavailable(ref, exc)
    _refuse_doubles(
        refs, paths, {i: envs_dir(environ) / p.default_env_name for i, p in missing.items()}
    )
    created: dict[int, Path] = {}
    if missing:
        created, not_created = _create(refs, missing, environ, reporter_for, workers)
        paths.update(created)
        failed.update(not_created)
    prepared: list[Prepared] = []
    for index, ref in enumerate(refs):
        if index in failed:
            prepared.append(failed[index])
            continue
        try:
            target = load_target(paths[index], ledger, environ)
        except KbootError as exc:
            prepared.append(Unavailable(ref, exc))
            continue
        prepared.append(replace(target, action="created" if index in created else "existing"))
    return prepared


def _refuse_doubles(refs: Sequence[str], *groups: Mapping[int, Path]) -> None:
    seen: dict[str, int] = {}
    for group in groups:
        for index, path in group.items():
            key = os.path.realpath(path)
            if key in seen:
                raise UsageError(
                    f"{refs[seen[key]]} and {refs[index]} are the same environment ({path})",
                    hint="give each environment once",
                )
            seen[key] = index


def _create(
    refs: Sequence[str],
    missing: Mapping[int, Profile],
    environ: Mapping[str, str],
    reporter_for: Callable[[str], Reporter],
    workers: int | None,
) -> tuple[dict[int, Path], dict[int, Unavailable]]:
    """Create the missing environments (index -> profile) together: (made, failed)."""
    from bootstrap.envs.plan import CreateRequest
    from bootstrap.fleet.batch import create_many

    # the shell's KERAS_BACKEND is overridden for each run: no "it wins" warning from create
    quiet = {key: value for key, value in environ.items() if key != "KERAS_BACKEND"}
    order = list(missing)
    items = create_many(
        [(refs[i], partial(CreateRequest, profile=missing[i])) for i in order],
        reporter_for=reporter_for,
        environ=quiet,
        workers=workers,
    )
    made, failed = {}, {}
    for index, item in zip(order, items, strict=True):
        if item.result is not None:
            made[index] = Path(item.result.path)
        else:
            assert item.error is not None
            failed[index] = Unavailable(refs[index], item.error)
    return made, failed


def load_target(path: Path, ledger: Ledger, environ: Mapping[str, str]) -> RunTarget:
    """A kboot environment as it is, if it is in a state to run commands."""
    from bootstrap.envs.lifecycle import check_trusted_to_run, open_to_run
    from bootstrap.envs.manage import summarize
    from bootstrap.profiles.model import Profile
    from bootstrap.system.paths import PTH_FILE

    entry = ledger.get(path)
    if entry is None:
        raise EnvironmentStateError(f"{path} is not an environment kboot made")
    if os.path.lexists(path):  # refused as every command refuses it: exit 2, path named
        check_trusted_to_run(path)
    summary = summarize(entry, environ)
    record = summary.record
    if record is None or summary.health.startswith(("broken", "busy", "missing")):
        raise EnvironmentStateError(
            f"{summary.name} cannot run commands: {summary.health}",
            hint="kboot list shows its state; kboot create repairs it",
        )
    env = open_to_run(path)
    warnings = () if summary.health == "ok" else (f"{summary.name}: {summary.health}",)
    return RunTarget(
        name=record.name,
        path=path,
        bin_dir=env.bin_dir,
        backend=Profile.from_dict(record.profile).backend,
        scope=record.scope,
        keras_home=Path(record.keras_home),
        startup_env=dict(record.startup_env),
        warnings=warnings,
        reports_backend=_reports_backend(env.site_packages / PTH_FILE),
    )


def _reports_backend(startup_file: Path) -> bool:
    """Whether an environment's startup file has the backend report (kboot's newer ones)."""
    try:
        with startup_file.open("rb") as source:
            return KERAS_REPORT_VARIABLE.encode() in source.read(256 * 1024)
    except OSError:
        return False


def run_command(
    refs: Sequence[str],
    command: Sequence[str],
    environ: Mapping[str, str],
    *,
    jobs: int | None = None,
    logs: Path | None = None,
    reporter_for: Callable[[str], Reporter] | None = None,
    echo: Callable[[bytes], None] | None = None,
    strict_backend: bool = False,
) -> RunReport:
    """`kboot run`: make the environments ready, then run `command` in each."""
    if not refs:
        raise UsageError("no PROFILE to run in", hint=EXAMPLE)
    if not command:
        raise UsageError("no COMMAND after --", hint=EXAMPLE)
    reporter_for = reporter_for or (lambda label: RecordingReporter())
    folder = run_logs.open_asked(logs) if logs is not None else None  # before any build
    try:
        prepared = prepare(refs, environ, reporter_for=reporter_for, workers=jobs)
        if folder is None and any(isinstance(item, RunTarget) for item in prepared):
            folder = run_logs.open_default()  # none when nothing can start
        report = run_all(
            prepared,
            command,
            environ,
            log_dir=None if folder is None else folder.path,
            # one at a time unless asked, as nox and tox run sessions: the runs share the
            # current folder, and a script that writes best_model.keras there would read
            # another backend's file (building what is missing stays concurrent)
            workers=jobs or 1,
            reporter_for=reporter_for,
            echo=echo,
            strict_backend=strict_backend,
        )
    finally:
        kept = None if folder is None else run_logs.close(folder)  # none: no run left a log
    return replace(report, log_dir=kept)
