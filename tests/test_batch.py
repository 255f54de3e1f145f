"""`create_many` with a fake `create_environment`: order, isolation of failures, exit codes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bootstrap.envs.plan import CreateRequest
from bootstrap.fleet import batch
from bootstrap.fleet.batch import BatchItem, create_many, exit_code
from bootstrap.profiles.model import Profile
from bootstrap.system.errors import (
    InstallError,
    KbootError,
    ProfileError,
    SmokeError,
    UsageError,
)
from bootstrap.system.jobs import default_jobs
from bootstrap.system.progress import RecordingReporter, Reporter


@dataclass(frozen=True)
class FakeResult:
    name: str
    action: str = "created"
    changes: tuple[str, ...] = ()
    changed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "changed": self.changed}


@dataclass
class FakeCreate:
    """Stands in for create_environment: fails for the labels in `failures`."""

    failures: Mapping[str, KbootError] = field(default_factory=dict)
    delays: Mapping[str, float] = field(default_factory=dict)
    #: label -> another label it waits for (started) before it goes on
    waits_for: Mapping[str, str] = field(default_factory=dict)
    started: dict[str, threading.Event] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    reporters: list[Reporter | None] = field(default_factory=list)
    environs: list[Mapping[str, str] | None] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self,
        request: CreateRequest,
        *,
        reporter: Reporter | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> FakeResult:
        label = request.name or ""
        with self.lock:
            self.started.setdefault(label, threading.Event()).set()
            self.calls.append(label)
            self.reporters.append(reporter)
            self.environs.append(environ)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            if label in self.waits_for:  # until that job runs too: side by side for certain
                other = self.started.setdefault(self.waits_for[label], threading.Event())
                assert other.wait(120), f"{self.waits_for[label]} never started"
            time.sleep(self.delays.get(label, 0.01))
            if label in self.failures:
                raise self.failures[label]
            return FakeResult(label)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def profile() -> Profile:
    return Profile(name="numpy", path=Path("/profiles/numpy.toml"), backend="numpy")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCreate:
    created = FakeCreate()
    monkeypatch.setattr(batch, "create_environment", created)
    return created


def job(label: str, profile: Profile) -> tuple[str, Callable[[], CreateRequest]]:
    return label, lambda: CreateRequest(profile=profile, name=label)


def reporters() -> Callable[[str], Reporter]:
    return lambda label: RecordingReporter()


def test_results_come_back_in_the_order_of_the_jobs(fake: FakeCreate, profile: Profile) -> None:
    # the first job finishes last: it waits until the last one has started
    fake.delays = {"a": 0.3, "b": 0.1, "c": 0.0, "d": 0.05}
    fake.waits_for = {"a": "d"}
    labels = ["a", "b", "c", "d"]
    items = create_many([job(x, profile) for x in labels], reporter_for=reporters(), workers=4)
    assert [item.label for item in items] == labels
    assert [item.result.name for item in items if item.result] == labels
    assert all(item.ok and item.status == "created" for item in items)
    assert sorted(fake.calls) == labels
    assert fake.most_at_once > 1  # they did run side by side
    assert exit_code(items) == 0


def test_one_failure_does_not_stop_the_others(fake: FakeCreate, profile: Profile) -> None:
    fake.failures = {"b": InstallError("installing b failed", hint="check the network")}
    fake.delays = {"b": 0.0, "a": 0.1, "c": 0.1}
    items = create_many(
        [job(x, profile) for x in ("a", "b", "c")], reporter_for=reporters(), workers=3
    )
    assert [item.label for item in items] == ["a", "b", "c"]
    assert [item.ok for item in items] == [True, False, True]
    assert sorted(fake.calls) == ["a", "b", "c"]
    failed = items[1]
    assert failed.result is None
    assert isinstance(failed.error, InstallError)
    assert failed.status == "failed"
    assert failed.seconds >= 0
    assert exit_code(items) == 1


def test_exit_code_is_the_highest_of_the_failures(fake: FakeCreate, profile: Profile) -> None:
    fake.failures = {
        "a": SmokeError("smoke test failed for a"),
        "c": UsageError("bad name"),
    }
    items = create_many(
        [job(x, profile) for x in ("a", "b", "c", "d")], reporter_for=reporters(), workers=2
    )
    assert [item.ok for item in items] == [False, True, False, True]
    assert exit_code(items) == 2


def test_exit_code_of_nothing_or_all_ok_is_zero(fake: FakeCreate, profile: Profile) -> None:
    assert exit_code([]) == 0
    items = create_many([job(x, profile) for x in ("a", "b")], reporter_for=reporters())
    assert exit_code(items) == 0


def test_a_request_that_cannot_be_made_is_a_failed_job(fake: FakeCreate, profile: Profile) -> None:
    def bad_profile() -> CreateRequest:
        raise ProfileError("/profiles/bad.toml: key 'floatx' has invalid value 'float8'")

    items = create_many(
        [job("a", profile), ("bad", bad_profile), job("c", profile)],
        reporter_for=reporters(),
        workers=3,
    )
    assert [item.ok for item in items] == [True, False, True]
    assert "bad" not in fake.calls  # never got as far as creating
    bad = items[1]
    assert isinstance(bad.error, ProfileError)
    assert bad.error.exit_code == 2
    assert exit_code(items) == 2


def test_workers_1_runs_one_at_a_time_in_order(fake: FakeCreate, profile: Profile) -> None:
    fake.delays = {"a": 0.05, "b": 0.0, "c": 0.02}
    fake.failures = {"b": InstallError("b failed")}
    main = threading.get_ident()
    seen: list[int] = []

    def reporter_for(label: str) -> Reporter:
        seen.append(threading.get_ident())
        return RecordingReporter()

    items = create_many(
        [job(x, profile) for x in ("a", "b", "c")], reporter_for=reporter_for, workers=1
    )
    assert fake.calls == ["a", "b", "c"]
    assert fake.most_at_once == 1
    assert seen == [main, main, main]  # no pool: all in the calling thread
    assert [item.ok for item in items] == [True, False, True]


def test_a_single_job_runs_in_the_calling_thread(fake: FakeCreate, profile: Profile) -> None:
    seen: list[int] = []

    def reporter_for(label: str) -> Reporter:
        seen.append(threading.get_ident())
        return RecordingReporter()

    [item] = create_many([job("only", profile)], reporter_for=reporter_for)
    assert item.ok
    assert seen == [threading.get_ident()]


def test_each_job_gets_its_own_reporter_and_the_environ(fake: FakeCreate, profile: Profile) -> None:
    asked: list[str] = []
    made: dict[str, Reporter] = {}

    def reporter_for(label: str) -> Reporter:
        asked.append(label)
        made[label] = RecordingReporter()
        return made[label]

    environ = {"KBOOT_HOME": "/k"}
    create_many(
        [job(x, profile) for x in ("a", "b")],
        reporter_for=reporter_for,
        environ=environ,
        workers=1,
    )
    assert asked == ["a", "b"]
    assert fake.reporters == [made["a"], made["b"]]
    assert fake.environs == [environ, environ]


def test_to_dict_of_a_failure() -> None:
    error = InstallError("installing keras failed", hint="check the network")
    item = BatchItem("lab", None, error, 1.23456)
    assert not item.ok
    assert item.status == "failed"
    assert item.to_dict() == {
        "ok": False,
        "name": "lab",
        "changed": False,
        "seconds": 1.235,
        "error": "installing keras failed",
        "hint": "check the network",
        "kind": "InstallError",
        "exit_code": 1,
    }
    usage = BatchItem("bad", None, ProfileError("bad profile"), 0.0).to_dict()
    assert usage["ok"] is False
    assert usage["hint"] is None
    assert usage["exit_code"] == 2
    assert usage["kind"] == "ProfileError"


def test_to_dict_of_a_success() -> None:
    result: Any = FakeResult("lab", action="unchanged", changed=False)
    item = BatchItem("lab", result, None, 0.5)
    assert item.ok
    assert item.status == "unchanged"
    assert item.to_dict() == {
        "ok": True,
        "seconds": 0.5,
        **result.to_dict(),
    }


def test_default_jobs_is_between_one_and_four() -> None:
    assert default_jobs(1) == 1
    assert default_jobs(2) == 2
    assert default_jobs(100) == 4
    assert default_jobs(0) == 1
