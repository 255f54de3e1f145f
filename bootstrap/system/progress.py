"""How the core reports progress on long steps without printing anything itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol


class Reporter(Protocol):
    def step(self, label: str) -> AbstractContextManager[None]: ...

    def warn(self, message: str) -> None: ...

    def info(self, message: str) -> None: ...


@dataclass
class RecordingReporter:
    """Keeps step timings and warnings; the default when nobody watches (tests, scripts)."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps.append((label, time.monotonic() - started))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def info(self, message: str) -> None:
        self.notes.append(message)
