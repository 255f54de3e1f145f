"""Credentials in URLs never reach a record, a log line, `--json` or an error message.

`https://user:token@host/simple` becomes `https://user:****@host/simple`, and a URL
that carries a token alone (`https://token@host/`) becomes `https://****@host/`, as pip
shows them. The installers still get the real URL; only what kboot writes or prints is
redacted.
"""

from __future__ import annotations

import re

MASK = "****"
# scheme://userinfo@host: the userinfo runs to the *last* '@' before the path, so a
# password holding '@' is masked whole
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#]+)@")
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
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, text)
    return text


def has_credentials(url: str) -> bool:
    return redact(url) != url
