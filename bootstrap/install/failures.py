"""Why an installer failed, as uv or pip stated it: their output read into one line.

uv and pip bury the cause of a failure in their output (a tampered lock's hash mismatch
comes before a hundred expected hashes; pip's bad index URL is a warning above a
traceback). `failure_cause` reads the whole output (not its tail) and returns the cause
as one line that names what it is about (the package==version, the folder, the URL), for
the end of kboot's error message; the caller picks the hint by its `kind`. Text it does
not recognise gives None, never an exception.

The patterns come from real output, kept in tests/installer_output/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

#: Each kind of cause `failure_cause` tells apart.
HASH_MISMATCH = "hash-mismatch"
NO_SPACE = "no-space"
TOO_MANY_FILES = "too-many-open-files"
CACHE_NOT_WRITABLE = "cache-not-writable"
NOT_WRITABLE = "not-writable"
FIND_LINKS_MISSING = "find-links-missing"
BAD_INDEX_URL = "bad-index-url"
NETWORK = "network"
NOT_FOUND = "not-found"  # no such package, or no version of it that fits
CONFLICT = "conflict"
OTHER = "other"  # stated plainly, but none of the above

#: The longest line kboot puts in a message (uv's resolver sentences can be very long).
MAX_LINE = 400

_NETWORK_MARKERS = (
    "Failed to fetch",
    "dns error",
    "Connection refused",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "timed out",
    "Network is unreachable",
    "error sending request",
)


@dataclass(frozen=True)
class Cause:
    kind: str
    line: str  # one line, ends kboot's error message
    subject: str | None = None  # the package (a requirement), folder or URL it names

    @property
    def package(self) -> str | None:
        """The project name of the requirement it names, if it names one."""
        if self.subject is None or self.kind not in (NOT_FOUND, HASH_MISMATCH):
            return None
        found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.subject)
        return found.group(0) if found else None


def failure_cause(text: str) -> Cause | None:
    """The cause uv or pip stated for a failure, or None when the output states none."""
    for reader in _READERS:
        cause = reader(text)
        if cause is not None:
            line = " ".join(cause.line.split())
            if not line:  # an `ERROR:` with nothing after it states nothing
                return None
            if len(line) > MAX_LINE:
                line = line[: MAX_LINE - 3] + "..."
            return Cause(cause.kind, line, cause.subject)
    return None


def _hash_mismatch(text: str) -> Cause | None:
    found = re.search(r"[Hh]ash mismatch for `([^`\n]+)`", text)  # uv
    if found:
        return _mismatch(found.group(1))
    if "DO NOT MATCH THE HASHES" not in text.upper():  # pip
        return None
    found = re.search(r"^\s+([A-Za-z0-9._-]+==[^\s:]+) from ", text, re.MULTILINE)
    return _mismatch(found.group(1) if found else None)


def _mismatch(package: str | None) -> Cause:
    return Cause(HASH_MISMATCH, f"hash mismatch for {package or 'a locked package'}", package)


def _no_space(text: str) -> Cause | None:
    if re.search(r"No space left on device|\[Errno 28\]|os error 28", text):
        return Cause(NO_SPACE, "no space left on the device")
    return None


def _too_many_files(text: str) -> Cause | None:
    if re.search(r"Too many open files|\[Errno 24\]|os error 24|OSError\(24,", text):
        return Cause(TOO_MANY_FILES, "too many open files (the limit of open files is too low)")
    return None


_DENIED = r"(Permission denied|Read-only file system) \(os error \d+\) at path \"([^\"\n]+)\""


def _not_writable(text: str) -> Cause | None:
    found = re.search(_DENIED, text)  # uv
    if found:
        why, path = found.group(1).lower(), found.group(2)
        if "Could not acquire lock" in text or "cache" in path.lower():
            # uv names the temporary file it could not make in the cache's folder
            folder = str(PurePath(path).parent) if PurePath(path).name.startswith(".tmp") else path
            line = f"the installer's cache {folder} is not writable ({why})"
            return Cause(CACHE_NOT_WRITABLE, line, folder)
        return Cause(NOT_WRITABLE, f"cannot write {path} ({why})", path)
    found = re.search(r"\[Errno (?:13|30)\] ([^:\n]+): '([^'\n]+)'", text)  # pip
    if found:
        return Cause(NOT_WRITABLE, f"cannot write {found.group(2)} ({found.group(1).lower()})",
                     found.group(2))  # fmt: skip
    return None


def _find_links_missing(text: str) -> Cause | None:
    found = re.search(r"Failed to read `--find-links` directory: ([^\n]+)", text)  # uv
    if found is None:  # pip ignores a missing one, then finds nothing
        links = re.search(r"^Looking in links: (.+)$", text, re.MULTILINE)
        listed = {link.strip() for link in links.group(1).split(",")} if links else set()
        found = next(
            (
                m
                for m in re.finditer(
                    r"Location '([^'\n]+)' is ignored: it is either a non-existing path", text
                )
                if m.group(1) in listed
            ),
            None,
        )
    if found is None:
        return None
    folder = found.group(1).strip()
    return Cause(FIND_LINKS_MISSING, f"the --find-links folder {folder} does not exist", folder)


def _bad_index_url(text: str) -> Cause | None:
    found = re.search(r"The index url \"([^\"\n]*)\" seems invalid", text)  # pip
    if found is None:
        return None
    url = found.group(1)
    return Cause(BAD_INDEX_URL, f"the --index-url {url!r} is not a URL (it has no scheme)", url)


def _resolution(text: str) -> Cause | None:
    flat = " ".join(text.split())
    because = re.search(r"Because (.+?), we can conclude", flat)  # uv
    if because:
        clause = because.group(1)
        required = re.search(r"you require (\S+?)(?: and |$)", clause)
        subject = required.group(1) if required else None
        missing = re.fullmatch(
            r"(\S+) was not found in the (package registry|provided package locations).*", clause
        )
        if missing:
            where = "package index" if missing.group(2) == "package registry" else "wheel folders"
            return Cause(NOT_FOUND, f"{missing.group(1)} was not found on the {where}",
                         subject or missing.group(1))  # fmt: skip
        nothing = re.fullmatch(r"there is no version of (\S+) .*", clause)
        if nothing:
            return Cause(NOT_FOUND, clause, nothing.group(1))
        return Cause(CONFLICT, clause)
    conflict = re.search(r"The conflict is caused by:\n((?:[ \t]+.+\n?)+)", text)  # pip
    if conflict:
        lines = [line.strip() for line in conflict.group(1).splitlines() if line.strip()]
        return Cause(CONFLICT, "conflicting requirements: " + "; ".join(lines))
    cannot = re.search(r"Cannot install (.+?) because these package versions have conflict", flat)
    if cannot:  # pip, without its list of causes
        return Cause(CONFLICT, f"conflicting requirements: {cannot.group(1)}")
    return None


def _network(text: str) -> Cause | None:
    if any(marker in text for marker in _NETWORK_MARKERS):  # pip then also finds nothing
        return Cause(NETWORK, "the package index could not be reached")
    return None


def _no_match(text: str) -> Cause | None:
    found = re.search(r"No matching distribution found for (\S+)", text)  # pip
    if found:
        return Cause(NOT_FOUND, f"no matching distribution found for {found.group(1)}",
                     found.group(1))  # fmt: skip
    return None


_UV_ERROR = "^(error:|\u00d7) +"  # uv's plain and fancy error lines


def _stated(text: str) -> Cause | None:
    """What else uv or pip say in their own error line: uv's `error:` with its last cause,
    pip's last `ERROR:` line (or, after pip's `ERROR: Exception:`, the traceback's end)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    uv = next((i for i, line in enumerate(lines) if re.match(_UV_ERROR, line)), None)
    if uv is not None:
        head = re.sub(_UV_ERROR, "", lines[uv])
        causes = [
            re.sub(r"^(cause:|Caused by:|[├╰]─▶)\s*", "", line)
            for line in lines[uv + 1 :]
            if re.match(r"(cause:|Caused by:|[├╰]─▶)", line)
        ]
        return Cause(OTHER, f"{head}: {causes[-1]}" if causes else head)
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    if errors == ["Exception:"] and lines[-1] != "ERROR: Exception:":
        return Cause(OTHER, lines[-1])
    if errors and errors[-1] != "Exception:":
        return Cause(OTHER, errors[-1])
    return None


_READERS = (
    _hash_mismatch,
    _no_space,
    _too_many_files,
    _not_writable,
    _find_links_missing,
    _bad_index_url,
    _resolution,
    _network,
    _no_match,
    _stated,
)
