"""Credentials in URLs are masked in everything kboot writes or prints."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrap.install import installers
from bootstrap.install.installers import source_args, source_environ
from bootstrap.install.venv import VirtualEnv
from bootstrap.profiles.model import Sources
from bootstrap.system.redaction import has_credentials, redact
from bootstrap.system.runner import CommandResult


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://alice:t0k@h/simple", "https://alice:****@h/simple"),
        ("https://t0k@h/simple", "https://****@h/simple"),
        ("https://bob:p@ssw0rd@host/x/", "https://bob:****@host/x/"),  # '@' in the password
        ("https://h/simple?token=abc&x=1", "https://h/simple?token=****&x=1"),
        ("x @ https://a:b@h/x.whl", "x @ https://a:****@h/x.whl"),
        ("two: http://a:1@h1/ and http://b:2@h2/", "two: http://a:****@h1/ and http://b:****@h2/"),
        ("https://mirror.example/simple", "https://mirror.example/simple"),
        ("user@example.com wrote", "user@example.com wrote"),  # no URL, nothing to mask
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown


SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789@!$%", min_size=6, max_size=20)


@given(user=st.from_regex(r"[a-z]{1,8}", fullmatch=True), secret=SECRET)
def test_a_password_never_survives(user: str, secret: str) -> None:
    url = f"https://{user}:{secret}@mirror.example/simple"
    assert redact(url) == f"https://{user}:****@mirror.example/simple"


@given(st.text(max_size=200))
def test_redact_never_fails_and_is_stable(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_credentialed_sources_travel_in_the_environment_not_the_command_line() -> None:
    """Defect 10: a command line is visible to every user of the machine (`ps`)."""
    sources = Sources(
        index_url="https://alice:t0k@h/simple",
        extra_index_urls=("https://public.example/simple",),
        find_links=("/srv/wheels",),
    )
    args = source_args(sources)
    assert not any(has_credentials(a) for a in args)
    assert args == [
        "--extra-index-url",
        "https://public.example/simple",
        "--find-links",
        "/srv/wheels",
    ]
    assert source_environ(sources, "uv") == {"UV_INDEX_URL": "https://alice:t0k@h/simple"}
    assert source_environ(sources, "pip") == {"PIP_INDEX_URL": "https://alice:t0k@h/simple"}
    extra = Sources(extra_index_urls=("https://a.example/s", "https://t@b.example/s"))
    assert source_args(extra) == []
    assert source_environ(extra, "pip") == {
        "PIP_EXTRA_INDEX_URL": "https://a.example/s https://t@b.example/s"
    }


# --- issue 15, item 12: credentials on a shared machine ----------------------------------------

S3 = "S3CR"  # every generated secret starts so: it never occurs in the text around it


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("user:tok@host/simple", "user:****@host/simple"),
        ("--index-url alice:p@ss@h.example/simple", "--index-url alice:****@h.example/simple"),
        ("extra-index-url = bob:t0k@10.0.0.1:8080/s", "extra-index-url = bob:****@10.0.0.1:8080/s"),
        ("alice@example.com wrote", "alice@example.com wrote"),
    ],
)
def test_a_url_without_a_scheme_is_redacted_too(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert has_credentials(text) == (text != shown)


URLISH = st.sampled_from(
    [
        "https://{user}:{secret}@h.example/simple",
        "https://{secret}@h.example/simple/",
        "git+https://{user}:{secret}@h.example/repo.git@v1",
        "{user}:{secret}@h.example/simple",
        "{user}:{secret}@h.example",
        "//{user}:{secret}@h.example/x",
        "pkg @ https://{user}:{secret}@h.example/pkg-1.0-py3-none-any.whl",
        "https://h.example/simple?token={secret}",
        "https://h.example/pkg.whl?x=1&access_token={secret}#sha256=00",
        "h.example/simple?api_key={secret}",
        "https://{user}:{secret}@h.example/simple?password={secret}",
    ]
)


@settings(max_examples=600, deadline=None)
@given(
    form=URLISH,
    user=st.from_regex(r"[a-z][a-z0-9._-]{0,7}", fullmatch=True),
    secret=st.text(alphabet="abcdefXYZ0123456789-._~!$*+%@:", max_size=16).map(S3.__add__),
    before=st.sampled_from(["", " ", "uv: error: ", "'", '"', "(", "=", "\n"]),
    after=st.sampled_from(["", " ", "'", '"', ")", ",", "\n", " and more"]),
)
def test_a_secret_in_any_url_ish_form_never_survives(
    form: str, user: str, secret: str, before: str, after: str
) -> None:
    if "?" in form or "&" in form:  # a query value ends at '&' or '#', as in a real URL
        secret = secret.replace("@", "").replace(":", "")
    if "{user}" not in form:  # a ':' would make its first part a user name, shown by design
        secret = secret.replace(":", "")
    text = before + form.format(user=user, secret=secret) + after
    shown = redact(text)
    assert S3 not in shown, shown
    assert redact(shown) == shown


def capture_install(
    monkeypatch: pytest.MonkeyPatch, requirements: list[str], sources: Sources, tool: str = "uv"
) -> dict[str, Any]:
    """Run `install` with the subprocess helper patched: what the installer would get."""
    seen: dict[str, Any] = {}

    def fake_run(cmd: list[str], **kwargs: Any) -> CommandResult:
        seen["cmd"] = list(cmd)
        seen["env"] = kwargs.get("env")
        if "-r" in cmd:
            listed = Path(cmd[cmd.index("-r") + 1])
            seen["file"] = listed.read_text(encoding="utf-8")
            seen["mode"] = stat.S_IMODE(listed.stat().st_mode)
            seen["folder_mode"] = stat.S_IMODE(listed.parent.stat().st_mode)
        return CommandResult(tuple(cmd), 0, "", "", 0.0)

    monkeypatch.setattr(installers, "run", fake_run)
    env = VirtualEnv(Path("/envs/x"), Path("/envs/x/bin/python"), Path("/b"), Path("/s"), (3, 11))
    installers.install(
        installers.get_installer(tool), env, requirements, sources, python_version="3.11"
    )
    return seen


@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_a_credentialed_requirement_goes_in_a_private_file_not_argv(
    monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    """`pkg @ https://user:tok@host/...` on the command line is visible in `ps`."""
    direct = f"pkg @ https://alice:{S3}et@h.example/pkg-1.0-py3-none-any.whl"
    seen = capture_install(monkeypatch, ["keras>=3", direct, "numpy"], Sources(), tool)
    assert not any(S3 in part for part in seen["cmd"]), seen["cmd"]
    assert "keras>=3" in seen["cmd"] and "numpy" in seen["cmd"]
    assert seen["file"] == direct + "\n"
    assert seen["mode"] == 0o600 and seen["folder_mode"] == 0o700
    assert "--no-cache" not in seen["cmd"] and "--no-cache-dir" not in seen["cmd"]


@pytest.mark.parametrize(("tool", "flag"), [("uv", "--no-cache"), ("pip", "--no-cache-dir")])
@pytest.mark.parametrize(
    ("requirements", "sources"),
    [
        ([f"pkg @ https://h.example/pkg-1.0-py3-none-any.whl?token={S3}"], Sources()),
        (["numpy"], Sources(index_url=f"https://h.example/simple?token={S3}")),
        (["numpy"], Sources(find_links=(f"https://h.example/w/?auth={S3}",))),
    ],
)
def test_a_query_credential_keeps_the_install_out_of_the_cache(
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    flag: str,
    requirements: list[str],
    sources: Sources,
) -> None:
    """uv and pip keep such URLs in their caches, which other users may read."""
    seen = capture_install(monkeypatch, requirements, sources, tool)
    assert flag in seen["cmd"]
    assert not any(S3 in part for part in seen["cmd"]), seen["cmd"]


def test_debug_logs_kboot_s_lines_only_and_each_is_redacted(tmp_path: Path) -> None:
    """`--debug` once turned on DEBUG for every library: their lines carry URLs unredacted."""
    script = f"""
import logging
from bootstrap.cli.app import app
try:
    app(["--debug", "list", "--json"], standalone_mode=False)
finally:
    logging.getLogger("urllib3.connectionpool").debug("GET https://u:{S3}1@h.example/simple")
    logging.getLogger("kboot").debug("run: uv pip install --index-url u:{S3}2@h.example/s")
    logging.getLogger("filelock").warning("https://h.example/s?token={S3}3 is slow")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert S3 not in proc.stderr, proc.stderr
    assert "u:****@h.example/s" in proc.stderr  # kboot's own debug line is there
    assert "token=****" in proc.stderr  # a library's warning too, redacted
    assert "h.example/simple" not in proc.stderr  # a library's debug line is not
