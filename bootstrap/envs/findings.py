"""A finding about a Python environment: what `kboot doctor` prints, and what the smoke
test fails on. `errors` is the one rule between them: a finding of severity `error` makes
doctor exit 1 and the smoke test of create, check and list fail."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    code: str
    title: str
    evidence: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "code": self.code,
            "title": self.title,
            "evidence": self.evidence,
            "fix": self.fix,
        }

    def line(self) -> str:
        """One line, as the smoke test reports a problem."""
        text = f"{self.title} ({self.evidence})"
        return f"{text}: {self.fix}" if self.fix else text


def errors(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """The findings that break the environment: doctor's exit 1, the smoke test's failure."""
    return tuple(f for f in findings if f.severity == ERROR)


def severity_rank(findings: Sequence[Finding]) -> list[Finding]:
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(findings, key=lambda f: order[f.severity])
