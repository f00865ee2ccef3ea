"""http.server pieces in-process: the log record's two renderings agree, and a big file goes out
whole through zero-copy sendfile under both event loops (asyncio, uvloop)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from proxydhcp.http.connection import bytes_acked
from proxydhcp.http.record import Outcome, RequestStats
from proxydhcp.http.server import HttpConfig, HttpServer
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


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """One keep-alive exchange: the answer's head and body (Content-Length, or none for HEAD)."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:") and not request.startswith(b"HEAD"):
            length = int(line.split(b":", 1)[1])
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_an_answer_kept_whole_is_the_answer_the_plain_path_sends(tmp_path: Path, method: bytes) -> None:
    """The same plain request again within a second gets the kept bytes (`_Answer`, one write): byte
    for byte what the plain path sent; a file replaced under the same name is answered anew (at once
    with `answer_recheck` 0; the bound itself: test_a_kept_answer_sees_a_change_within_its_bound)."""
    (tmp_path / "a.bin").write_bytes(b"first" * 100)
    request = method + b" /a.bin HTTP/1.1\r\nHost: x\r\n\r\n"

    async def exchange() -> tuple[list[tuple[bytes, bytes]], bytes, int, int]:
        server = HttpServer(HttpConfig(root=tmp_path, address="127.0.0.1", port=0, answer_recheck=0))
        answer_again = server._answer_again

        def counted(*args: Any) -> bool:
            fast.append(answer_again(*args))
            return fast[-1]

        server._answer_again = counted  # type: ignore[method-assign,assignment]
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await _ask(reader, writer, b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n")  # into the cache
            pairs = []
            for _ in range(20):  # the two answers in one second (their Date), the second from memory
                server._answers.clear()
                plain = await _ask(reader, writer, request)  # from the cache: plain path, kept
                kept_before = len(server._answers)
                again = await _ask(reader, writer, request)
                pairs.append((plain, again))
                if plain == again:
                    break
            (tmp_path / "new.bin").write_bytes(b"second, longer" * 100)
            os.replace(tmp_path / "new.bin", tmp_path / "a.bin")
            replaced = await _ask(reader, writer, request)
            writer.close()
            return pairs, replaced, kept_before, server.stats.requests
        finally:
            await server.close()

    fast: list[bool] = []
    pairs, replaced, kept, requests = asyncio.run(exchange())
    plain, again = pairs[-1]
    assert kept == 1 and plain == again and plain.startswith(b"HTTP/1.1 200")
    assert fast[len(pairs) - 1] is True  # `again` came from the kept bytes
    assert (b"first" * 100 in plain) == (method == b"GET")
    assert b"Content-Length: 1400" in replaced and (b"second, longer" * 100 in replaced) == (method == b"GET")
    assert requests == 1 + 2 * len(pairs) + 1


def test_a_kept_answer_sees_a_change_within_its_bound(tmp_path: Path) -> None:
    """A kept answer is sent again without a look at its file for `answer_recheck` seconds at most:
    a file replaced under its name is answered anew by the first request after that bound (or
    sooner, when the second of its Date has passed)."""
    (tmp_path / "a.bin").write_bytes(b"first" * 100)
    request = b"GET /a.bin HTTP/1.1\r\nHost: x\r\n\r\n"
    bound = 0.3

    async def exchange() -> tuple[bytes, float, bytes]:
        server = HttpServer(HttpConfig(root=tmp_path, address="127.0.0.1", port=0, answer_recheck=bound))
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for _ in range(3):
                await _ask(reader, writer, request)  # read into the cache, then kept whole
            (tmp_path / "new.bin").write_bytes(b"second, longer" * 100)
            os.replace(tmp_path / "new.bin", tmp_path / "a.bin")
            replaced = time.monotonic()
            soon = await _ask(reader, writer, request)  # within the bound: old or new, never a mix
            await asyncio.sleep(bound - (time.monotonic() - replaced) + 0.01)
            waited = time.monotonic() - replaced
            later = await _ask(reader, writer, request)
            writer.close()
            return soon, waited, later
        finally:
            await server.close()

    soon, waited, later = asyncio.run(exchange())
    assert soon.endswith(b"first" * 100) or soon.endswith(b"second, longer" * 100)
    assert waited >= bound and b"Content-Length: 1400" in later and later.endswith(b"second, longer" * 100)


def test_answers_kept_are_bounded_in_bytes(tmp_path: Path) -> None:
    from proxydhcp.http import server as server_module

    for i in range(8):
        (tmp_path / f"f{i}.bin").write_bytes(bytes([i]) * 60_000)

    async def fetch_all() -> tuple[int, int]:
        server = HttpServer(HttpConfig(root=tmp_path, address="127.0.0.1", port=0))
        await server.start()
        most = 0
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for i in range(8):
                for _ in range(2):
                    answer = await _ask(reader, writer, b"GET /f%d.bin HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                    assert answer.endswith(bytes([i]) * 60_000)
                most = max(most, server._answers_bytes)
            writer.close()
            return most, sum(len(a.wire) for a in server._answers.values())
        finally:
            await server.close()

    limit = server_module.ANSWERS_BYTES
    server_module.ANSWERS_BYTES = 200_000
    try:
        most, counted = asyncio.run(fetch_all())
    finally:
        server_module.ANSWERS_BYTES = limit
    assert 0 < most <= 200_000 and counted <= 200_000


def test_http_metrics_kept_children_count_as_labels_would() -> None:
    """The request counter's children kept per (method, status, outcome): counts as a labels() call
    per request would, several raw keys onto one label set, past the bound too."""
    from prometheus_client import CollectorRegistry

    from proxydhcp.httpboot import HttpMetrics

    registry = CollectorRegistry()
    metrics = HttpMetrics(registry, lambda: 0)
    for i in range(600):  # client-chosen methods: more than the children kept
        metrics.observe(RequestStats(("10.0.0.9", 1), f"X{i % 300}", "/a", 405, 0, 0.01, Outcome.REFUSED))
        metrics.observe(RequestStats(("10.0.0.9", 1), "GET", "/a", 200, 10, 0.01, Outcome.COMPLETED))
    assert len(metrics._children) <= 256

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("proxydhcp_http_requests_total", method="other", status="405", outcome="refused") == 600
    assert value("proxydhcp_http_requests_total", method="GET", status="200", outcome="completed") == 600
    assert value("proxydhcp_http_sent_bytes_total") == 6000


class _Transport:
    """What HttpConnection uses of a transport, recording nothing but its closing."""

    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    abort = close


def _heads_seen(chunks: list[bytes], guard: Any = None) -> tuple[list[tuple[Any, ...]], Any]:
    """Feed `chunks` to one connection; the requests its responder is asked to answer, as tuples."""
    from proxydhcp.http.connection import ConnectionGuard, HttpConnection, Limits, Request

    seen: list[tuple[Any, ...]] = []

    class Responder:
        def answer(self, conn: HttpConnection, request: Request) -> None:
            seen.append((request.method, request.target, request.http11, request.keep_alive,
                         request.range, request.if_modified_since, request.if_range, request.error,
                         request.reason))  # fmt: skip

    async def run() -> Any:
        nonlocal guard
        if guard is None:
            guard = ConnectionGuard(Limits(), type("Counts", (), {"connections": 0})())
        conn = HttpConnection(guard, Responder())
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        for chunk in chunks:
            conn.data_received(chunk)
        conn.connection_lost(None)
        guard.close_all()
        return guard

    return seen, asyncio.run(run())


HEADS = [
    b"GET /s0.bin HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1\r\nUser-Agent: ApacheBench/2.3\r\n"
    b"Accept: */*\r\n\r\n",
    b"GET /a%20b.efi?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\n\r\n",
    b"HEAD /a.bin HTTP/1.1\r\nhost: x\r\nIf-Modified-Since: Mon, 07 Dec 2026 19:58:03 GMT\r\n"
    b"If-Range: Mon, 07 Dec 2026 19:58:03 GMT\r\nrange: bytes=-5\r\n\r\n",
    b"GET http://x/abs/olute HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\nGET /after-a-crlf HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_a_head_kept_is_the_request_the_parser_makes(head: bytes) -> None:
    """A head sent again byte for byte is not parsed again (`ConnectionGuard.heads`): the request it
    gives is the parser's, field for field, on a new connection as on the same one."""
    once, guard = _heads_seen([head])
    assert head in guard.heads  # kept
    again, _ = _heads_seen([head, head, head], guard)
    assert again == once * 3


@pytest.mark.parametrize(
    "chunks",
    [
        [b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"] * 2,  # the connection ends: not kept
        [b"GET /a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"] * 2,  # no HTTP/1.1 after it
        [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /a HTTP/1.1\r\nBad header\r\n\r\n"],  # refused
        [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"] * 2,  # two in one piece
        [b"GET /a HTTP/1.1\r\nHost: x\r\n", b"\r\n"],  # a head in two pieces
        [b"POST /a HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r\n\r\n"] * 2,  # a body that looks like a CRLF
        [b"GET /a HTTP/1.1\r\n\r\nGET /b HT", b"GET /a HTTP/1.1\r\n\r\n"],  # a head after a piece of one
        [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HT", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"],
    ],
)
def test_heads_are_kept_and_used_only_from_a_clean_parser(chunks: list[bytes]) -> None:
    """Only a keep-alive head that came whole and alone is kept; a kept head is used only when the
    parser holds nothing: whatever the pieces, the requests are the parser's own."""
    from proxydhcp.http.connection import ConnectionGuard, Limits

    plain, _ = _heads_seen(chunks, ConnectionGuard(Limits(), type("Counts", (), {"connections": 0})()))
    warm = ConnectionGuard(Limits(), type("Counts", (), {"connections": 0})())
    for chunk in chunks:  # every piece, parsed once alone on a connection of its own (kept if it may be)
        _heads_seen([chunk], warm)
    kept, _ = _heads_seen(chunks, warm)
    assert kept == plain


def test_heads_kept_are_bounded() -> None:
    from proxydhcp.http import connection

    heads = [b"GET /f%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(connection.HEADS_KEPT + 10)]
    big = b"GET /big HTTP/1.1\r\nX: " + b"y" * connection.HEAD_KEPT_SIZE + b"\r\n\r\n"
    _, guard = _heads_seen([*heads, big])
    assert 0 < len(guard.heads) <= connection.HEADS_KEPT and big not in guard.heads
