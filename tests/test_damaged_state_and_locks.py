"""Issue 15, shared lab machines: what another user (or a damaged disk) leaves behind
ends in kboot's own message, never an internal error; and no one can hang root's kboot."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrap.install import installers
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.model import Sources
from bootstrap.system.errors import LockedError
from bootstrap.system.process_lock import keep_private, lock_holder, wait_until_free
from bootstrap.system.runner import CommandResult
from helpers import created, kboot, other_user

ENV = "numpy"


def damage_record(record: Path, where: tuple[str, ...], value: Any) -> None:
    data = json.loads(record.read_text(encoding="utf-8"))
    holder = data
    for key in where[:-1]:
        holder = holder[key]
    if value is KeyError:
        del holder[where[-1]]
    else:
        holder[where[-1]] = value
    record.write_text(json.dumps(data), encoding="utf-8")


def plain_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "kboot: error: " in proc.stderr, proc.stderr
    for name in names:
        assert name in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("profile", "path"), KeyError),  # Profile.from_dict: KeyError
        (("profile", "packages"), 7),  # Profile.from_dict: tuple(7)
        (("smoke", "devices"), 3),  # SmokeReport.from_dict: tuple(3)
        (("smoke", "seconds"), "soon"),  # SmokeReport.from_dict: float("soon")
    ],
)
def test_list_and_check_of_a_damaged_record_say_so(
    tmp_path: Path, where: tuple[str, ...], value: Any
) -> None:
    """(16) nested fields of the wrong type: `list` shows the environment as broken and
    `check` fails with kboot's message naming the record, no "internal error"."""
    created(kboot("create", ENV, "--json"))
    record = tmp_path / "kboot-home" / "envs" / ENV / "kboot-env.json"
    damage_record(record, where, value)
    listed = kboot("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "internal error" not in listed.stderr
    health = {e["name"]: e["health"] for e in json.loads(listed.stdout)}
    assert health[ENV].startswith("broken"), health
    text = kboot("list")
    assert text.returncode == 0 and "internal error" not in text.stderr, text.stderr
    plain_error(kboot("check", ENV), str(record), where[0])


@pytest.mark.integration
def test_check_of_an_env_whose_pyvenv_cfg_version_is_not_a_number(tmp_path: Path) -> None:
    created(kboot("create", ENV, "--json"))
    cfg = tmp_path / "kboot-home" / "envs" / ENV / "pyvenv.cfg"
    lines = cfg.read_text(encoding="utf-8").splitlines()
    cfg.write_text(
        "\n".join(
            "version_info = 3.x" if line.startswith("version_info") else line for line in lines
        ),
        encoding="utf-8",
    )
    checked = kboot("check", ENV)
    assert "internal error" not in checked.stderr and "Traceback" not in checked.stderr, (
        checked.stderr
    )
    assert checked.returncode == 1, checked.stderr
    assert str(cfg) in checked.stderr, checked.stderr


# --- (6) uv's lock on an environment: nobody else can hold kboot up ---------------------------


def hold(path: Path, seconds: float, user: str | None = None) -> subprocess.Popen[str]:
    """`flock PATH sleep SECONDS` (as `user`), returned once the lock is held; only the
    flock process holds it (`--close`), and `release` stops its whole group."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    command = ["sh", "-c", f"echo held; exec sleep {seconds}"]
    proc = subprocess.Popen(
        [*prefix, "flock", "--nonblock", "--close", str(path), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read() if proc.stderr else line
    return proc


needs_flock = pytest.mark.needs("flock")


def release(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()


def test_keep_private_makes_uv_s_lock_file_0600(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    keep_private(lock)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.chmod(0o666)  # as uv leaves it
    keep_private(lock)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere"
    target.write_text("x", encoding="utf-8")
    target.chmod(0o644)
    (tmp_path / "link").symlink_to(target)
    keep_private(tmp_path / "link")  # never through a link
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@needs_flock
def test_a_held_lock_is_waited_for_a_bounded_time_and_its_holder_named(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    lock.touch()
    holder = hold(lock, 30)
    try:
        assert lock_holder(lock) == f"pid {holder.pid} (user {pwd.getpwuid(os.getuid()).pw_name})"
        started = time.monotonic()
        with pytest.raises(LockedError) as info:
            wait_until_free(lock, wait=1, what="uv cannot install into /e")
        assert time.monotonic() - started < 5
        assert str(lock) in info.value.message and f"pid {holder.pid}" in info.value.message
    finally:
        release(holder)
    wait_until_free(lock, wait=0, what="x")  # free: at once
    wait_until_free(tmp_path / "none", wait=0, what="x")  # none yet: uv makes it


def test_uv_runs_with_its_lock_wait_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv waits five minutes by default for `<env>/.lock`, then goes on: now at most
    UV_LOCK_WAIT, after kboot's own bounded wait, and the lock file is 0600 before uv runs."""
    seen: dict[str, Any] = {}

    def fake_run(cmd: list[str], **kwargs: Any) -> CommandResult:
        seen["env"] = kwargs.get("env") or {}
        seen["mode"] = stat.S_IMODE((tmp_path / ".lock").stat().st_mode)
        return CommandResult(tuple(cmd), 0, "", "", 0.0)

    monkeypatch.setattr(installers, "run", fake_run)
    env = VirtualEnv(tmp_path, tmp_path / "bin" / "python", tmp_path / "bin", tmp_path, (3, 11))
    installers.install(installers.UvInstaller(), env, ["six"], Sources(), python_version="3.11")
    assert seen["env"]["UV_LOCK_TIMEOUT"] == str(int(installers.UV_LOCK_WAIT))
    assert seen["mode"] == 0o600


@pytest.mark.integration
@needs_flock
@pytest.mark.needs("second-user")
def test_another_user_cannot_hang_root_s_kboot(shared_tmp: Path) -> None:
    """(6) `runuser -u alice -- flock <env>/.lock sleep ...` made root's `kboot kernel` hang
    silently: the lock file was 0666. Now it is 0600 (alice cannot open it), and where she
    holds it anyway (an environment an older kboot built), kboot stops within a bound and
    names the lock and its holder."""
    env = shared_tmp / "env"
    created(kboot("create", ENV, "--dest", str(env), "--json"))
    lock = env / ".lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    with other_user() as alice:
        refused = subprocess.run(
            alice.argv("flock", "--nonblock", str(lock), "true"),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "ermission denied" in refused.stderr, refused
        lock.chmod(0o666)  # as uv (and kboot before this fix) left it
        holder = hold(lock, 120, alice.name)
        try:
            started = time.monotonic()
            proc = kboot("kernel", str(env), timeout=90)
            took = time.monotonic() - started
        finally:
            holder.kill()
            holder.wait()
    assert took < installers.UV_LOCK_WAIT + 30, took
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "internal error" not in proc.stderr
    assert str(lock) in proc.stderr and alice.name in proc.stderr, proc.stderr
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
