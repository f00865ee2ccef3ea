"""http.server pieces in-process: the log record's two renderings agree, and a big file goes out
whole through zero-copy sendfile under both event loops (asyncio, uvloop)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from proxydhcp.http.server import HttpConfig, HttpServer, Outcome, RequestStats, bytes_acked
from proxydhcp.log import text_pairs


@pytest.mark.parametrize(
    "stats",
    [
        RequestStats(("10.0.0.9", 5000), "GET", "/a b.efi", 200, 10, 0.5, Outcome.COMPLETED),
        RequestStats(("::1", 5), "GET", "/x\\n", 404, 0, 0.1, Outcome.REFUSED, "no such file"),
    ],
)
def test_text_fields_match_the_fields(stats: RequestStats) -> None:
    assert stats.text_fields() == text_pairs(stats.fields())


def test_bytes_acked_on_a_real_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"x" * 1000)
            assert peer.recv(2000)
            acked = bytes_acked(client)
            assert acked is not None and acked >= 1000


def _loops() -> list[tuple[str, Callable[[Coroutine[Any, Any, bytes]], bytes]]]:
    runners: list[tuple[str, Callable[[Coroutine[Any, Any, bytes]], bytes]]] = [("asyncio", asyncio.run)]
    try:
        import uvloop

        runners.append(("uvloop", uvloop.run))
    except ImportError:
        pass
    return runners


@pytest.mark.parametrize(("name", "runner"), _loops(), ids=[n for n, _ in _loops()])
def test_big_file_whole_through_sendfile(
    tmp_path: Path, name: str, runner: Callable[[Coroutine[Any, Any, bytes]], bytes]
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "big.bin").write_bytes(data)

    async def fetch() -> bytes:
        server = HttpServer(HttpConfig(root=tmp_path, address="127.0.0.1", port=0, memory_file=4096))
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            return body
        finally:
            await server.close()

    response = runner(fetch())
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(data)}".encode() in head
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_http_metrics_have_fixed_label_sets() -> None:
    from prometheus_client import CollectorRegistry

    from proxydhcp.httpboot import HttpMetrics

    registry = CollectorRegistry()
    metrics = HttpMetrics(registry, lambda: 3)
    metrics.observe(RequestStats(("10.0.0.9", 1), "GET", "/a", 200, 1000, 0.01, Outcome.COMPLETED))
    metrics.observe(RequestStats(("10.0.0.9", 1), "BREW", "/a", 405, 0, 0.01, Outcome.REFUSED))
    metrics.observe(RequestStats(("10.0.0.9", 1), "GET", "/a", 418, 0, 0.01, Outcome.REFUSED))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("proxydhcp_http_requests_total", method="GET", status="200", outcome="completed") == 1
    assert value("proxydhcp_http_requests_total", method="other", status="405", outcome="refused") == 1
    assert value("proxydhcp_http_requests_total", method="GET", status="other", outcome="refused") == 1
    assert value("proxydhcp_http_sent_bytes_total") == 1000
    assert value("proxydhcp_http_connections") == 3


def test_serve_listens_dual_stack_when_an_ipv6_prefix_is_enabled(tmp_path: Path) -> None:
    # The DHCPv6 proxy's HTTPClients are offered http://[addr]:port/...: the default listener becomes
    # `::` (both families, as TFTP's), and an address the admin set stays as it is.
    from ipaddress import IPv4Address, IPv6Address

    from proxydhcp.config import load_settings
    from proxydhcp.httpboot import boot_url, http_config

    v4 = load_settings(None, {"subnet": [{"cidr": "10.0.0.0/24"}], "http": {"port": 8080}})
    both = load_settings(None, {"subnet": [{"cidr": "10.0.0.0/24"}, {"cidr": "2001:db8:1::/64"}],
                                "http": {"port": 8080}})  # fmt: skip
    pinned = load_settings(None, {"subnet": [{"cidr": "2001:db8:1::/64"}],
                                  "http": {"port": 8080, "address": "10.0.0.5"}})  # fmt: skip
    assert http_config(v4, tmp_path).address == "0.0.0.0"
    assert http_config(both, tmp_path).address == "::"
    assert http_config(pinned, tmp_path).address == "10.0.0.5"
    assert boot_url(both, IPv6Address("2001:db8:1::1"), "/a b.efi") == "http://[2001:db8:1::1]:8080/a%20b.efi"
    assert boot_url(both, IPv4Address("10.0.0.1"), "x.efi") == "http://10.0.0.1:8080/x.efi"
