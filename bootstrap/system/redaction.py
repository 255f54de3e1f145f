"""Credentials in URLs never reach a record, a log line, `--json` or an error message.

`https://user:token@host/simple` becomes `https://user:****@host/simple`, and a URL
that carries a token alone (`https://token@host/`) becomes `https://****@host/`, as pip
shows them; `user:token@host/simple` without a scheme becomes `user:****@host/simple`
(a token alone without a scheme, `token@host`, cannot be told from an e-mail address and
stays as it is), and `?token=...` in a query string becomes `?token=****`. The installers
still get the real URL; only what kboot writes or prints is redacted, `--debug` lines too.
"""

from __future__ import annotations

import logging
import re
from typing import TextIO

MASK = "****"
# scheme://userinfo@host: the userinfo runs to the *last* '@' before the path, so a
# password holding '@' is masked whole
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#]+)@")
# user:token@host/... with no scheme (a pip.conf line, a uv index spelled without one): only
# with a ':' and a host after the '@', so that an e-mail address (user@host) stays as it is;
# the password runs to the last '@' before a '/' or a space
_BARE_USERINFO = re.compile(
    r"(?<![\w.~%+-])(?P<user>[\w.~%+-]+):(?P<password>[^\s/]+)@(?P<host>[A-Za-z0-9\[][^\s/@]*)"
)
# ?token=... and the like in a query string
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:token|access_token|auth|password|passwd|secret|api_key|apikey|key)=)"
    r"(?P<value>[^&\s#]+)",
    re.IGNORECASE,
)


def _mask(match: re.Match[str]) -> str:
    user, sep, _ = match.group("userinfo").partition(":")
    if "@" in user:  # no ':' before an '@': a token holding '@', not a user name
        user, sep = "", ""
    shown = f"{user}:{MASK}" if sep else MASK
    return f"{match.group('scheme')}{shown}@"


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked."""
    if "@" in text:
        text = _USERINFO.sub(_mask, text)
        text = _BARE_USERINFO.sub(lambda m: f"{m.group('user')}:{MASK}@{m.group('host')}", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, text)
    return text


def has_credentials(url: str) -> bool:
    return redact(url) != url


def has_query_secret(url: str) -> bool:
    """A credential in a query string (`?token=...`), which no installer knows to hide."""
    return "=" in url and _QUERY_SECRET.search(url) is not None


class RedactingFormatter(logging.Formatter):
    """Every line it formats goes through `redact`: arguments, exceptions and all."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def debug_logging(stream: TextIO) -> logging.Handler:
    """`--debug`: kboot's own logger at DEBUG; other libraries (the HTTP clients, filelock,
    virtualenv) keep their WARNING, whose lines log their URLs in full at DEBUG. Every line,
    kboot's or theirs, is redacted on its way out."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("kboot: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("kboot").setLevel(logging.DEBUG)
    return handler
