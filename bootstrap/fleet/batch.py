"""Several environments in one call: concurrently, sharing the installer cache.

One failing does not stop the others; every outcome is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrap.envs.create import CreateResult, create_environment
from bootstrap.envs.names import profile_for
from bootstrap.envs.plan import CreateRequest
from bootstrap.install.installers import check_installer
from bootstrap.profiles.catalog import catalog, editable_root, with_editable
from bootstrap.system.errors import EXIT_OK, Interrupted, KbootError, UsageError
from bootstrap.system.jobs import default_jobs
from bootstrap.system.progress import Reporter


@dataclass(frozen=True)
class BatchItem:
    label: str
    result: CreateResult | None
    error: KbootError | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return self.result.action if self.result else "failed"

    def to_dict(self) -> dict[str, Any]:
        if self.result is not None:
            return {"ok": True, "seconds": round(self.seconds, 3), **self.result.to_dict()}
        assert self.error is not None
        return {
            "ok": False,
            "name": self.label,
            "changed": False,
            "seconds": round(self.seconds, 3),
            "error": self.error.message,
            "hint": self.error.hint,
            "kind": type(self.error).__name__,
            "exit_code": self.error.exit_code,
        }


#: A job: its label, and how to make its request (which may itself fail, e.g. a bad profile).
Job = tuple[str, Callable[[], CreateRequest]]


def plan_jobs(
    refs: Sequence[str],
    options: Mapping[str, Any],
    *,
    editable: bool | None,
    cwd: Path,
    environ: Mapping[str, str],
) -> list[Job]:
    """The jobs of one `kboot create REF...`: each REF as this folder names it (no REF: the
    project's default), each a CreateRequest with these `options` (its other fields).
    Relative paths in them are relative to `cwd`."""
    check_installer(options.get("installer", "uv"))
    profiles_here = catalog(cwd)
    refs = list(refs) or [profiles_here.default()]
    repeated = sorted({ref for ref in refs if refs.count(ref) > 1})
    if repeated:
        raise UsageError(f"profile {', '.join(repeated)} given more than once")
    if len(refs) > 1 and (options.get("dest") or options.get("name")):
        raise UsageError("--dest and --name name one environment: give one profile with them")
    project_root = editable_root(profiles_here.project, cwd) if editable else None

    def request_for(ref: str) -> CreateRequest:
        profile = profile_for(ref, environ, cwd, profiles=profiles_here)
        if project_root is not None:
            profile = with_editable(profile, project_root)
        return CreateRequest(profile=profile, keep_editable=editable is None, **options)

    return [(ref, lambda ref=ref: request_for(ref)) for ref in refs]  # type: ignore[misc]


def create_many(
    jobs: Sequence[Job],
    *,
    reporter_for: Callable[[str], Reporter],
    environ: Mapping[str, str] | None = None,
    workers: int | None = None,
) -> list[BatchItem]:
    """Run every job; the results come back in the order of `jobs`."""

    def one(job: Job) -> BatchItem:
        label, make_request = job
        started = time.monotonic()
        try:
            result = create_environment(
                make_request(), reporter=reporter_for(label), environ=environ
            )
        except KbootError as exc:
            return BatchItem(label, None, exc, time.monotonic() - started)
        return BatchItem(label, result, None, time.monotonic() - started)

    if len(jobs) == 1 or workers == 1:
        return [one(job) for job in jobs]
    pool = ThreadPoolExecutor(max_workers=workers or default_jobs(len(jobs)))
    try:
        futures = [pool.submit(one, job) for job in jobs]
        return [future.result() for future in futures]
    except KeyboardInterrupt:
        # the installers got the same Ctrl-C; let every build roll itself back first
        pool.shutdown(wait=True, cancel_futures=True)
        raise Interrupted(
            "interrupted; the environments still being built were rolled back, "
            "finished ones were kept"
        ) from None
    finally:
        pool.shutdown(wait=True)


def exit_code(items: Sequence[BatchItem]) -> int:
    return max((item.error.exit_code for item in items if item.error), default=EXIT_OK)
