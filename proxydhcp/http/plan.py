"""Pure HTTP request semantics: the request target → a name under the root, and method + file +
Range / If-Modified-Since → status, byte span and headers (RFC 9110 §13-14, §15.3.7, §15.4.5).

httptools (llhttp) parses the request line and headers; this module reads the three header values
the answer depends on (Range, If-Modified-Since, If-Range) and decides what to answer, with no I/O,
so the rules are tested value by value. Percent-decoding happens here, once, before the root check
(`tftp.files.resolve`): `%2e%2e%2f` is `../` and is refused by the check, `%252e` is a name holding
`%2e`, never decoded again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
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
    HEADER_FIELDS_TOO_LARGE = 431
    SERVER_ERROR = 500
    UNAVAILABLE = 503
    VERSION_NOT_SUPPORTED = 505


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


def parse_range(value: str) -> slice | None:
    """A Range header → one byte span as a slice: `bytes=a-b` → a..b+1, `bytes=a-` → a.., the suffix
    `bytes=-n` → -n.. (`bytes=-0`: an empty span, unsatisfiable). None for anything else (another
    unit, several ranges, a malformed or backward span): such a Range is ignored (RFC 9110 §14.2)."""
    unit, sep, spec = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or not first) or not (last.isdigit() or not last):
        return None
    if not first.isascii() or not last.isascii():  # str.isdigit admits other scripts' digits
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        return slice(-suffix, None) if suffix else slice(0, 0)
    start = int(first)
    if not last:
        return slice(start, None)
    stop = int(last) + 1
    return slice(start, stop) if start < stop else None


def parse_http_date(value: str) -> datetime | None:
    """An HTTP date (IMF-fixdate, or the obsolete RFC 850 / asctime forms) → an aware datetime; None
    when it is none (an invalid If-Modified-Since is ignored, RFC 9110 §13.1.3)."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


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
    """`byte_range` is the parsed single Range (`parse_range`; None when absent, malformed or multiple: such a
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
