"""Pure HTTP request semantics: the request target → a name under the root, and method + file +
Range / If-Modified-Since → status, byte span and headers (RFC 9110 §13-14, §15.3.7, §15.4.5).

aiohttp parses the request line and headers; this module decides what to answer, with no I/O, so
the rules are tested value by value. Percent-decoding happens here, once, before the root check
(`tftp.files.resolve`): `%2e%2e%2f` is `../` and is refused by the check, `%252e` is a name holding
`%2e`, never decoded again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from urllib.parse import unquote_to_bytes, urlsplit


class Status(enum.IntEnum):
    OK = 200
    PARTIAL = 206
    NOT_MODIFIED = 304
    BAD_REQUEST = 400
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    RANGE_NOT_SATISFIABLE = 416
    SERVER_ERROR = 500
    UNAVAILABLE = 503


METHODS = frozenset({"GET", "HEAD"})


class Refusal(Exception):
    """A request answered with an error status and no file; `reason` goes to the log record."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def target_name(raw_target: str) -> str:
    """The request target (origin-form `/a/b?q`, or absolute-form `http://host/a/b`) → the file name
    to look up under the root, percent-decoded once. Refusal(400) for anything else, undecodable
    UTF-8 or a NUL; the name may still leave the root: the caller checks that (`tftp.files.resolve`)."""
    target = raw_target
    if not target.startswith("/"):
        lowered = target[:8].lower()
        if not (lowered.startswith("http://") or lowered.startswith("https://")):
            raise Refusal(Status.BAD_REQUEST, "request target is not a path")
        try:
            target = urlsplit(target).path or "/"
        except ValueError:
            raise Refusal(Status.BAD_REQUEST, "bad absolute URL") from None
    path = target.split("?", 1)[0].split("#", 1)[0]
    try:
        name = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(Status.BAD_REQUEST, "path is not UTF-8") from None
    if "\0" in name:
        raise Refusal(Status.BAD_REQUEST, "NUL in path")
    if name.endswith("/"):
        raise Refusal(Status.NOT_FOUND, "directory listing refused")
    return name


@dataclass(frozen=True, slots=True)
class Plan:
    """What to send: `status`, bytes `start`..`start + length` of the file (no body for HEAD, 304
    and 416), and the headers that describe them."""

    status: Status
    start: int
    length: int
    headers: dict[str, str]
    body: bool


_DATES: dict[int, str] = {}  # whole seconds → HTTP date: the same few files' mtimes, every request


def http_date(seconds: float) -> str:
    key = int(seconds)
    text = _DATES.get(key)
    if text is None:
        if len(_DATES) >= 4096:
            _DATES.clear()
        text = _DATES[key] = formatdate(key, usegmt=True)
    return text


def plan(
    method: str,
    size: int,
    mtime: float,
    byte_range: slice | None,
    if_modified_since: datetime | None,
    if_range: str | None = None,
) -> Plan:
    """`byte_range` is aiohttp's parsed single Range (None when absent, malformed or multiple: such a
    Range is ignored and the whole file sent, RFC 9110 §14.2). Last-Modified has whole seconds, so
    If-Modified-Since compares whole seconds."""
    last_modified = http_date(int(mtime))
    headers = {"Last-Modified": last_modified, "Accept-Ranges": "bytes"}
    if if_modified_since is not None and int(mtime) <= if_modified_since.timestamp():
        return Plan(Status.NOT_MODIFIED, 0, 0, headers, False)
    # If-Range with anything but our exact Last-Modified date: the file may have changed, send it all.
    if byte_range is not None and (if_range is None or if_range.strip() == last_modified):
        start, stop = byte_range.start, byte_range.stop
        if start is None:
            start = 0
        if start < 0:  # suffix range `bytes=-N`: the last N bytes
            start = max(size + start, 0)
            stop = size
        if stop is None or stop > size:
            stop = size
        if start >= size or stop <= start:
            headers["Content-Range"] = f"bytes */{size}"
            return Plan(Status.RANGE_NOT_SATISFIABLE, 0, 0, headers, False)
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return Plan(Status.PARTIAL, start, stop - start, headers, method == "GET")
    return Plan(Status.OK, 0, size, headers, method == "GET")
