"""HTTP boot in the service: the boot URL a DISCOVER with option 60 `HTTPClient` is offered, the
`[http]` settings mapped onto the HTTP package's own config, and its metrics.

EDK II's HttpBootDxe (NetworkPkg/HttpBootDxe/HttpBootDhcp4.c, HttpBootParseDhcp4Packet) takes an
offer with yiaddr 0 and option 60 starting `HTTPClient` as a proxy offer, reads the boot URI from
option 67 or else the header's `file`, and parses it as a URL; a URI whose host is an IP address
(HttpOfferTypeProxyIpUri) pairs with a plain DHCP offer, a host name would need the DHCP offer to
carry DNS servers. So the URL names this server by address. There is no 4011 step (R-50).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proxydhcp.config import Settings

if TYPE_CHECKING:
    from proxydhcp.http.record import RequestStats
    from proxydhcp.http.server import HttpConfig

URL_MAX = 127  # the BOOTP `file` field, NUL-terminated


def is_url(boot_file: str) -> bool:
    return "://" in boot_file


def boot_url(settings: Settings, server: IPv4Address | IPv6Address, boot_file: str) -> str | None:
    """`boot_file` as a URL: as it is when it is one; else on the built-in HTTP server at `server`;
    None when it is no URL and the built-in server is off."""
    if is_url(boot_file):
        return boot_file
    http = settings.http
    if not http.serving or http.port is None:
        return None
    host = f"[{server}]" if isinstance(server, IPv6Address) else str(server)
    port = "" if http.port == 80 else f":{http.port}"
    return f"http://{host}{port}/{quote(boot_file.lstrip('/'), safe='/')}"


def http_root(settings: Settings) -> Path | None:
    return settings.http.root or settings.tftp.root


def http_config(settings: Settings, root: Path) -> HttpConfig:
    """`[http]` settings → the HTTP package's own config (it imports nothing from config.py)."""
    from proxydhcp.http.server import HttpConfig

    cfg = settings.http
    assert cfg.port is not None
    address = cfg.address
    if address == "0.0.0.0" and any(s.cidr.version == 6 for s in settings.subnet):
        address = "::"  # dual stack: the DHCPv6 proxy's HTTPClients too (as TFTP in serve/service.py)
    return HttpConfig(
        root=root,
        address=address,
        port=cfg.port,
        max_connections=cfg.max_connections,
        head_timeout=cfg.head_timeout,
        send_timeout=cfg.send_timeout,
    )


HTTP_STATUSES = frozenset({"200", "206", "304", "400", "403", "404", "405", "416", "431", "500", "505"})
HTTP_METHODS = frozenset({"GET", "HEAD"})
HTTP_OUTCOMES = frozenset({"completed", "refused", "aborted", "timeout", "error"})


class HttpMetrics:
    """The HTTP server's series in the service's registry; every label from a fixed set."""

    def __init__(self, registry: Any, active: Callable[[], int]) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._requests = Counter(
            "proxydhcp_http_requests",
            "HTTP requests answered, by method, status and outcome.",
            ["method", "status", "outcome"],
            registry=registry,
        )
        self._bytes = Counter("proxydhcp_http_sent_bytes", "File bytes sent over HTTP.", registry=registry)
        self._children: dict[tuple[str, int, Any], Any] = {}  # (method, status, outcome) → child
        self._duration = Histogram(
            "proxydhcp_http_request_duration_seconds",
            "Time from a request's head to its last byte handed to the kernel.",
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120),
            registry=registry,
        )
        Gauge("proxydhcp_http_connections", "Open HTTP connections.", registry=registry).set_function(
            lambda: float(active())
        )

    def observe(self, st: RequestStats) -> None:
        key = (st.method, st.status, st.outcome)
        counter = self._children.get(key)
        if counter is None:
            counter = self._child(*key)
        counter.inc()
        self._bytes.inc(max(st.bytes, 0))
        self._duration.observe(max(st.duration, 0.0))

    def _child(self, method: str, status: int, outcome: Any) -> Any:
        """The request counter's child for these labels, kept: labels() validates and locks, a
        per-request cost. Keyed by what the client chose (its method): bounded, cleared when full."""
        if len(self._children) >= 256:
            self._children.clear()
        counter = self._children[(method, status, outcome)] = self._requests.labels(
            method=method if method in HTTP_METHODS else "other",
            status=str(status) if str(status) in HTTP_STATUSES else "other",
            outcome=outcome.value if outcome.value in HTTP_OUTCOMES else "other",
        )
        return counter


class HttpStartError(Exception):
    """The HTTP server cannot start; one line for the admin."""


async def start_http(settings: Settings, on_request: Callable[[RequestStats], None]) -> Any:
    """Start the built-in HTTP server when `[http]` asks for it: an HttpServer, or None when off.
    Raises HttpStartError (no root, not a directory, port busy)."""
    if not settings.http.serving:
        return None
    from proxydhcp.http.server import HttpServer

    root = http_root(settings)
    if root is None:
        raise HttpStartError("http.root: no --http-root (or --tftp-root) to serve over HTTP")
    if not root.is_dir():
        raise HttpStartError(f"http.root: not a directory: {root}")
    server = HttpServer(http_config(settings, root), on_request=on_request)
    try:
        await server.start()
    except OSError as exc:
        raise HttpStartError(
            f"http.port {settings.http.port}: cannot listen on {settings.http.address}: {exc.strerror or exc}"
        ) from None
    return server
