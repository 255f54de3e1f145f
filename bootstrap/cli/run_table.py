"""The table of a `kboot run`, as text (rich) or as markdown (a CI job summary).

Apart from render.py so that `kboot run` does not import every other command's results:
its start-up counts in the time it adds to each run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.markup import escape
from rich.table import Table

from bootstrap.cli.consoles import error_console, out_console, print_table
from bootstrap.run.execute import NOT_STARTED, RunOutcome, RunReport, Scalar, backend_warning
from bootstrap.system.progress import RecordingReporter

HEADERS = ("ENV", "BACKEND", "EXIT", "SECONDS", "PEAK MEM")
_MAX_CELL = 24


class RunProgress(RecordingReporter):
    """One line on stderr per step, note and warning, each starting with the environment's
    name: render.ConsoleReporter's prefixed mode, without importing every command's results
    (kboot run's start-up counts in the time it adds to each run)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.console = error_console()
        self.prefix = f"[bold]{escape(prefix)}[/] "

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        ok = False
        try:
            with super().step(label):
                yield
            ok = True
        finally:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            elapsed = time.monotonic() - started
            self.console.print(f"{self.prefix}{mark} {escape(label)} [dim]({elapsed:.1f} s)[/]")

    def info(self, message: str) -> None:
        super().info(message)
        self.console.print(f"{self.prefix}[dim]{escape(message)}[/]")

    def warn(self, message: str) -> None:
        super().warn(message)
        self.console.print(f"{self.prefix}[yellow]warning:[/] {escape(message)}")


def metric_text(value: Scalar) -> str:
    """A metric as a table cell: short, and the same in text and markdown."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def memory_text(size: int | None) -> str:
    if size is None:
        return "-"
    if size >= 10 * 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def backend_text(outcome: RunOutcome) -> str:
    """The BACKEND cell: the backend Keras really used. `numpy` when it is the environment's;
    `jax (set: numpy)` when the command chose another one; `unknown (set: numpy)` when no
    process reported one (keras never imported, or killed); the configured one when the
    command never started."""
    if outcome.backend is None:
        return "-"
    if outcome.status in NOT_STARTED:
        return outcome.backend
    used = outcome.backends_used
    if used is None:
        return f"unknown (set: {outcome.backend})"
    if not outcome.backend_mismatch:
        return outcome.backend
    return f"{', '.join(used)} (set: {outcome.backend})"


def backend_notes(report: RunReport) -> list[str]:
    """Lines under the table that explain a BACKEND cell other than a plain name."""
    notes = [f"{outcome.name}: {backend_warning(outcome)}"
             for outcome in report.outcomes if outcome.backend_mismatch]  # fmt: skip
    if any(backend_text(outcome).startswith("unknown ") for outcome in report.outcomes):
        notes.append(
            "unknown: no process of that environment reported its backend (it did not import "
            "keras, or did not exit normally)"
        )
    return notes


def metric_header(name: str, fixed: tuple[str, ...] = HEADERS) -> str:
    """A metric's column title; one named like a fixed column (a script's own "backend")
    says it is a metric, so the table never has two BACKEND columns."""
    title = name.upper()
    return f"{title} (METRIC)" if title in (h.upper() for h in fixed) else title


def _row(outcome: RunOutcome, names: list[str]) -> list[str]:
    return [
        outcome.name,
        backend_text(outcome),
        outcome.exit_text,
        "-" if outcome.seconds is None else f"{outcome.seconds:.2f}",
        memory_text(outcome.max_rss),
        *(metric_text(outcome.metrics[n]) if n in outcome.metrics else "-" for n in names),
    ]


def _failure_lines(outcome: RunOutcome) -> list[str]:
    """What to show under the table for a run that did not pass."""
    if outcome.status in ("failed", "killed"):
        head = f"{outcome.name}: exit {outcome.exit_text}, last lines of {outcome.log}:"
        return [head, *(f"  {line}" for line in outcome.output_tail.splitlines())]
    if outcome.status == "interrupted" and outcome.log is not None:
        head = f"{outcome.name}: interrupted, last lines of {outcome.log}:"
        return [head, *(f"  {line}" for line in outcome.output_tail.splitlines())]
    lines = [f"{outcome.name}: {outcome.status}: {outcome.message}"]
    if outcome.hint:
        lines.append(f"  hint: {outcome.hint}")
    return lines


def summary(report: RunReport, *, logs: bool = True) -> str:
    """`2 of 3 runs passed; logs in DIR`, and what an interrupt stopped."""
    passed = sum(1 for outcome in report.outcomes if outcome.ok)
    text = f"{passed} of {len(report.outcomes)} runs passed"
    if report.interrupted:
        counts = {status: sum(1 for o in report.outcomes if o.status == status)
                  for status in ("interrupted", "not started")}  # fmt: skip
        stopped = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        text = f"interrupted: {text}" + (f", {stopped}" if stopped else "")
    if logs:
        text += f"; logs in {report.log_dir}" if report.log_dir else "; no logs (no run started)"
    return text


def render_run(report: RunReport) -> None:
    """The table on stdout, each failure's last lines under it; warnings on stderr."""
    console = out_console()
    names = report.metric_names
    table = Table(box=None, pad_edge=False)
    for header in (*HEADERS, *(metric_header(name) for name in names)):
        table.add_column(escape(header), overflow="fold")
    for outcome in report.outcomes:
        cells = [escape(cell) for cell in _row(outcome, names)]
        style = "green" if outcome.ok else "red"
        cells[2] = f"[{style}]{cells[2]}[/]"
        if outcome.backend_mismatch:
            cells[1] = f"[bold yellow]{cells[1]}[/]"
        table.add_row(*cells)
    print_table(console, table)
    notes = backend_notes(report)
    if notes:
        console.print()
    for note in notes:
        console.print(f"note: {note}", markup=False)
    failed = [outcome for outcome in report.outcomes if not outcome.ok]
    for outcome in failed:
        console.print()
        for line in _failure_lines(outcome):
            console.print(line, markup=False)
    console.print(f"\n{summary(report)}", markup=False)
    errors = error_console()
    for warning in report.warnings:
        errors.print(f"[yellow]warning:[/] {escape(warning)}")


def run_markdown(report: RunReport) -> str:
    """The report as GitHub-flavoured markdown: a table, each failure in a <details>."""
    names = report.metric_names
    fixed = ("environment", "backend", "exit", "seconds", "peak memory")
    headers = [*fixed, *(metric_header(name, fixed).lower() for name in names)]
    lines = [
        f"### kboot run: {_code(' '.join(report.command))}",
        "",
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "---|" * 2 + "---:|" * 3 + "---|" * len(names),
    ]
    for outcome in report.outcomes:
        cells = [_cell(cell) for cell in _row(outcome, names)]
        cells[2] = ("✅ " if outcome.ok else "❌ ") + cells[2]
        if outcome.backend_mismatch:
            cells[1] = "⚠️ " + cells[1]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"{summary(report, logs=False)}."]
    for note in backend_notes(report):
        lines += ["", f"> note: {_cell(note)}"]
    for outcome in report.outcomes:
        if outcome.ok:
            continue
        head, *body = _failure_lines(outcome)
        if not body:  # nothing to unfold
            lines += ["", _html(head)]
            continue
        text = "\n".join(line.removeprefix("  ") for line in body)
        fence = "`" * max(3, _longest_backticks(text) + 1)
        lines += ["", f"<details><summary>{_html(head)}</summary>", ""]
        lines += [f"{fence}text", text, fence, "", "</details>"]
    for warning in report.warnings:
        lines += ["", f"> warning: {_cell(warning)}"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text that stays inside one markdown table cell."""
    return _html(text).replace("|", "\\|").replace("\n", " ")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    """Inline code, whatever backticks the text holds (CommonMark: a longer fence, and a
    space inside when the text starts or ends with one)."""
    text = text.replace("\n", " ")
    fence = "`" * (_longest_backticks(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)
