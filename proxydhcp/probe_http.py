"""`probe --arch efi-x64-http` (and the other HTTP boot architectures): the offer an HTTP boot
client takes (option 60 `HTTPClient` and a URL boot file, as EDK II's HttpBootDxe reads it) and the
fetch of that URL, as firmware does it (HEAD for the size, then GET), from the probing interface's
address. Blocking, bounded in time and size.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from urllib.parse import urlsplit

from proxydhcp.dhcp.codes import Opt
from proxydhcp.dhcp.packet import DhcpPacket

MAX_BODY = 256 * 1024 * 1024
CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class HttpFetch:
    url: str
    status: int | None  # None: no HTTP answer at all
    length: int | None  # Content-Length of the GET (or the HEAD)
    received: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error and (self.length is None or self.received == self.length)


def offered_url(offers: list[DhcpPacket]) -> str | None:
    """The boot URL of the first HTTPClient offer (a proxy offer first), option 67 before `file`."""
    http = [o for o in offers if (o.option(Opt.VENDOR_CLASS) or b"").startswith(b"HTTPClient")]
    for offer in sorted(http, key=lambda o: o.yiaddr != IPv4Address(0)):
        raw = offer.option(Opt.BOOTFILE) or offer.file or b""
        url = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        if "://" in url:
            return url
    return None


def fetch(url: str, source: IPv4Address, timeout: float) -> HttpFetch:
    """HEAD then GET `url` from `source` (0.0.0.0: any); the body is counted, not kept."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return HttpFetch(url, None, None, 0, f"not an http:// URL: {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    bind = None if source == IPv4Address(0) else (str(source), 0)
    conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout, source_address=bind)
    try:
        conn.request("HEAD", path)
        head = conn.getresponse()
        head.read()
        if head.status != 200:
            return HttpFetch(url, head.status, None, 0, f"HEAD answered {head.status} {head.reason}")
        conn.request("GET", path)
        resp = conn.getresponse()
        length = resp.length
        received = 0
        while received <= MAX_BODY:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            received += len(chunk)
        if resp.status != 200:
            return HttpFetch(url, resp.status, length, received, f"GET answered {resp.status} {resp.reason}")
        if length is not None and received != length:
            return HttpFetch(url, resp.status, length, received, f"got {received} of {length} bytes")
        return HttpFetch(url, resp.status, length if length is not None else received, received)
    except (OSError, http.client.HTTPException) as exc:
        what = (
            "connection refused"
            if isinstance(exc, ConnectionRefusedError)
            else str(exc) or type(exc).__name__
        )
        if isinstance(exc, socket.timeout):
            what = f"no answer within {timeout:.0f} s"
        return HttpFetch(url, None, None, 0, what)
    finally:
        conn.close()
