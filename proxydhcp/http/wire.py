"""The bytes of an HTTP/1.1 response head (RFC 9112 §4-5), from values this server chose: a status,
the plan's headers, a length and whether the connection stays open. No client text reaches a head,
so nothing here escapes anything. Pure: the caller passes the date."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from proxydhcp.http.plan import Status

OCTETS = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
_STATUS_LINES = {s: f"HTTP/1.1 {s.value} {HTTPStatus(s.value).phrase}\r\n" for s in Status}


def head(
    status: Status,
    date: str,
    headers: Mapping[str, str],
    length: int | None,
    content_type: str | None,
    keep_alive: bool,
    http11: bool,
) -> bytes:
    """`length`: the Content-Length (None: none, as for a 304). HTTP/1.1 connections stay open unless
    `Connection: close` is sent; HTTP/1.0 ones close unless `Connection: keep-alive` is."""
    lines = [_STATUS_LINES[status], "Date: ", date, "\r\nServer: proxydhcp\r\n"]
    for name, value in headers.items():
        lines += (name, ": ", value, "\r\n")
    if content_type is not None:
        lines += ("Content-Type: ", content_type, "\r\n")
    if length is not None:
        lines += ("Content-Length: ", str(length), "\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    elif not http11:  # HTTP/1.0 clients (ab -k among them) keep a connection only when told so
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("ascii")


def error_body(status: Status) -> bytes:
    """The short text body of an error answer: `404 Not Found`."""
    return f"{status.value} {HTTPStatus(status.value).phrase}\n".encode("ascii")
