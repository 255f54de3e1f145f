"""Credentials in URLs never reach a record, a log line, `--json` or an error message.

`https://user:token@host/simple` becomes `https://user:****@host/simple`, and a URL
that carries a token alone (`https://token@host/`) becomes `https://****@host/`, as pip
shows them. The installers still get the real URL; only what kboot writes or prints is
redacted.
"""

from __future__ import annotations

import re

MASK = "****"
# scheme://userinfo@ where userinfo holds no '/', whitespace or '@'
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")


def _mask(match: re.Match[str]) -> str:
    user, sep, _ = match.group("userinfo").partition(":")
    shown = f"{user}:{MASK}" if sep else MASK
    return f"{match.group('scheme')}{shown}@"


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it masked."""
    if "@" not in text:
        return text
    return _USERINFO.sub(_mask, text)


def has_credentials(url: str) -> bool:
    return redact(url) != url
