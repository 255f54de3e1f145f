"""Credentials in URLs are masked in everything kboot writes or prints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrap.installers import source_args, source_environ
from bootstrap.profiles import Sources
from bootstrap.redaction import has_credentials, redact


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
