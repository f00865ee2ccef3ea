"""Defects found in review, each against the real server on loopback: no ERROR loops with spoofed
sources, memory bounded with many transfers of one big file, no shared port with another server, no
forged log lines, no asyncio noise on aborts, repeated RRQs not started twice."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxydhcp.log import TextFormatter
from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.server import TftpServer
from tests.integration.tftp_fixtures import (
    RunningServer,
    client,
    fetch,
    replies,
    rrq,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    root = tmp_path / "root"
    root.mkdir()
    contents = {"big.bin": os.urandom(3_000_000), "boot.ipxe": b"#!ipxe\n"}
    for name, data in contents.items():
        (root / name).write_bytes(data)
    running = start_server(root, contents, timeout=1.0, give_up=5.0)
    try:
        yield running
    finally:
        stop_server(running)


def start_transfer(server: RunningServer, name: bytes = b"big.bin") -> tuple[socket.socket, tuple[str, int]]:
    """A client socket and the TID of its transfer (block 1 received, not acknowledged)."""
    sock = client()
    sock.settimeout(3)
    sock.sendto(rrq(name), ("127.0.0.1", server.port))
    data, peer = sock.recvfrom(2000)
    assert data[:4] == b"\0\3\0\1"
    return sock, peer


def spoof(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
    """A UDP datagram with any source address and port (a raw socket: needs CAP_NET_RAW)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src[0]), socket.inet_aton(dst[0]),
    )  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (dst[0], 0))


needs_raw = pytest.mark.skipif(os.geteuid() != 0, reason="spoofing a source needs a raw socket (root)")


def tid_errors(caplog: pytest.LogCaptureFixture) -> int:
    return sum("unknown TID" in r.getMessage() for r in caplog.records)


# -- 1: unknown-TID ERROR loops -------------------------------------------------------------------


@needs_raw
@pytest.mark.parametrize("payload", [b"\0\5\0\0x\0", b"\0\4\0\1"], ids=["error", "ack"])
def test_packet_from_its_own_address_is_not_answered(
    server: RunningServer, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    """A datagram whose source is the transfer's own address and port: answered, it would be an ERROR
    the transfer sends itself, answers, and so on at full speed."""
    caplog.set_level(logging.DEBUG, logger="proxydhcp.tftp")
    sock, peer = start_transfer(server)
    with sock:
        spoof(peer, peer, payload)
        time.sleep(1.0)
        assert tid_errors(caplog) == 0
        replies(sock, 0)  # a timer's resend of block 1, perhaps
        sock.sendto(b"\0\4\0\1", peer)  # the transfer goes on
        assert (b"\0\3\0\2", peer) in [(data[:4], addr) for data, addr in replies(sock, 0.5)]


@needs_raw
def test_spoofed_error_between_two_transfers_is_not_answered(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An ERROR "from" one transfer to another: answered with ERROR 5, each would answer the other's."""
    caplog.set_level(logging.DEBUG, logger="proxydhcp.tftp")
    first, peer1 = start_transfer(server)
    second, peer2 = start_transfer(server)
    with first, second:
        spoof(peer2, peer1, b"\0\5\0\0x\0")
        time.sleep(1.0)
        assert tid_errors(caplog) == 0
        # An ACK "from" the other transfer's port: not answered either (it is ours).
        spoof(peer2, peer1, b"\0\4\0\1")
        time.sleep(0.3)
        assert tid_errors(caplog) == 0


def test_error_from_a_stranger_is_not_answered(server: RunningServer) -> None:
    sock, peer = start_transfer(server)
    with sock, client() as stranger:
        stranger.sendto(b"\0\5\0\0go away\0", peer)
        assert replies(stranger, 0.5) == []
        replies(sock, 0)
        sock.sendto(b"\0\4\0\1", peer)
        assert b"\0\3\0\2" in [data[:4] for data, _ in replies(sock, 0.5)]  # not aborted


def test_unknown_tid_errors_are_rate_limited(server: RunningServer) -> None:
    sock, peer = start_transfer(server)
    with sock, client() as stranger:
        for _ in range(20):
            stranger.sendto(b"\0\4\0\0", peer)
        got = replies(stranger, 0.5)
        assert [data for data, _ in got] == [b"\0\5\0\5Unknown transfer ID\0"]


@needs_raw
def test_listener_ignores_its_own_address(server: RunningServer) -> None:
    """An RRQ "from" port 69 itself would start a transfer sending DATA to the listener."""
    before = server.server.stats.started + server.server.stats.refused
    spoof(("127.0.0.1", server.port), ("127.0.0.1", server.port), rrq(b"boot.ipxe"))
    spoof(("127.0.0.1", server.port), ("127.0.0.1", server.port), rrq(b"missing"))
    time.sleep(0.5)
    assert server.server.stats.started + server.server.stats.refused == before


# -- 2: memory with many transfers of one big file ------------------------------------------------

SERVE = """
import asyncio, sys
from pathlib import Path
from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.server import TftpServer

async def main() -> None:
    config = TftpConfig(root=Path(sys.argv[1]), address="127.0.0.1", port=0, timeout=30.0, give_up=60.0,
                        max_transfers_per_client=100)
    server = TftpServer(config)
    await server.start()
    print(server.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.close()

asyncio.run(main())
"""


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _rss_growth(root: Path, name: bytes, mode: bytes, count: int) -> float:
    """RSS growth (MiB) of a server process while `count` clients hold a transfer of `name` open
    (each got its first block, none acknowledges)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        time.sleep(0.3)
        base = _rss_mib(proc.pid)
        for _ in range(count):
            sock = client()
            sock.settimeout(10)
            sock.sendto(rrq(name, mode), ("127.0.0.1", port))
            socks.append(sock)
        for sock in socks:
            data, _ = sock.recvfrom(2000)
            assert data[:4] == b"\0\3\0\1", data[:40]
        time.sleep(1.0)  # the read-ahead of every transfer
        return _rss_mib(proc.pid) - base
    finally:
        for sock in socks:
            sock.close()
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_memory_bounded_for_many_transfers_of_a_big_file(tmp_path: Path) -> None:
    """40 clients start a 40 MB file (too big for the cache) and never ACK: they share its chunks."""
    (tmp_path / "initrd.img").write_bytes(os.urandom(40_000_000))
    growth = _rss_growth(tmp_path, b"initrd.img", b"octet", 40)
    assert growth < 80, f"RSS grew by {growth:.0f} MiB"


def test_memory_bounded_for_many_netascii_transfers(tmp_path: Path) -> None:
    """20 netascii transfers of a 4 MB text file share one converted copy."""
    (tmp_path / "notes.txt").write_bytes(b"a line of text\n" * 270_000)
    growth = _rss_growth(tmp_path, b"notes.txt", b"netascii", 20)
    assert growth < 40, f"RSS grew by {growth:.0f} MiB"


# -- 4: no silent sharing of the port -------------------------------------------------------------


def test_port_in_use_is_a_start_error(tmp_path: Path) -> None:
    async def main() -> None:
        first = TftpServer(TftpConfig(root=tmp_path, address="127.0.0.1", port=0))
        await first.start()
        try:
            second = TftpServer(TftpConfig(root=tmp_path, address="127.0.0.1", port=first.port))
            with pytest.raises(OSError):
                await second.start()
        finally:
            await first.close()

    asyncio.run(main())


def test_port_of_another_server_with_reuseaddr_is_a_start_error(tmp_path: Path) -> None:
    """dnsmasq-like: another server's socket with SO_REUSEADDR on the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]

        async def main() -> None:
            server = TftpServer(TftpConfig(root=tmp_path, address="127.0.0.1", port=port))
            with pytest.raises(OSError):
                await server.start()

        asyncio.run(main())


# -- 5: file names in text logs -------------------------------------------------------------------


def test_file_name_cannot_forge_a_log_line(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="proxydhcp.tftp")
    forged = "x\n12:00:00.000 WARNING proxydhcp.tftp: FORGED\r\x1b[2K/../boot.ipxe"
    assert fetch(server.port, forged).data == b"#!ipxe\n"
    with client() as sock:
        sock.sendto(rrq(b"x\nFORGED/../missing"), ("127.0.0.1", server.port))
        assert replies(sock, 0.5)  # refused
    server.wait_finished(1)
    time.sleep(0.1)
    formatter = TextFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("proxydhcp")]
    assert any("FORGED" in line and "\\n" in line for line in lines)  # logged, escaped
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line, line


# -- 6: aborting while a read is in flight --------------------------------------------------------


def test_abort_during_chunk_read_logs_no_asyncio_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.img").write_bytes(os.urandom(24_000_000))
    running = start_server(root, {}, cache_bytes=1024 * 1024)
    contexts: list[dict[str, Any]] = []
    running.loop.call_soon_threadsafe(
        running.loop.set_exception_handler, lambda _loop, ctx: contexts.append(ctx)
    )
    try:
        for _ in range(8):
            with client() as sock:
                sock.sendto(
                    rrq(b"big.img", options={"blksize": "1468", "windowsize": "16"}),
                    ("127.0.0.1", running.port),
                )
                sock.settimeout(3)
                _, peer = sock.recvfrom(2000)  # the OACK: nothing read yet
                sock.sendto(b"\0\4\0\0", peer)  # the first chunk's read starts...
                sock.sendto(b"\0\5\0\0abort\0", peer)  # ...and the transfer ends during it
        running.wait_finished(8)
        time.sleep(0.5)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.2), running.loop).result(5)
        gc.collect()
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.2), running.loop).result(5)
        assert [s.outcome_text for s in running.finished] == ["aborted by client"] * 8
    finally:
        stop_server(running)
    assert contexts == []
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]


# -- 7: a repeated RRQ ----------------------------------------------------------------------------


def test_repeated_rrq_does_not_start_a_second_transfer(server: RunningServer) -> None:
    """The OACK was lost: the client sends the same RRQ again from the same port."""
    request = rrq(b"big.bin", options={"blksize": "1468"})
    with client() as sock:
        sock.sendto(request, ("127.0.0.1", server.port))
        got = replies(sock, 0.3)
        sock.sendto(request, ("127.0.0.1", server.port))
        got += replies(sock, 1.5)  # the transfer's own timer resends the OACK
        assert {peer for _, peer in got} == {got[0][1]}
        assert all(data[:2] == b"\0\6" for data, _ in got) and len(got) >= 2
    assert server.server.stats.started == 1


def test_repeated_rrq_is_answered_at_once_at_most_once_per_interval(server: RunningServer) -> None:
    """Under load the transfer's timer (1 s, then backoff) is too slow for a lost OACK: the running
    transfer answers a repeat at once, one packet however many repeats (no amplification)."""
    request = rrq(b"big.bin", options={"blksize": "1468"})
    with client() as sock:
        sock.sendto(request, ("127.0.0.1", server.port))
        first = replies(sock, 0.1)
        for _ in range(10):
            sock.sendto(request, ("127.0.0.1", server.port))
        again = replies(sock, 0.3)  # well before the transfer's own 1 s timer
    assert len(first) == 1 and first[0][0][:2] == b"\0\6"
    assert len(again) == 1 and again[0][0][:2] == b"\0\6" and again[0][1] == first[0][1]
    assert server.server.stats.started == 1


def test_rrq_again_after_a_size_probe_starts_at_once(server: RunningServer) -> None:
    """UEFI's tsize probe: OACK, ERROR, then the real RRQ, from the same port, straight away."""
    request = rrq(b"big.bin", options={"tsize": "0", "blksize": "1468"})
    with client() as sock:
        sock.settimeout(2)
        sock.sendto(request, ("127.0.0.1", server.port))
        data, probe = sock.recvfrom(2000)
        assert data[:2] == b"\0\6"
        sock.sendto(b"\0\5\0\10probe\0", probe)
        sock.sendto(request, ("127.0.0.1", server.port))
        got = replies(sock, 0.5)  # before any timer
        assert got and got[0][0][:2] == b"\0\6" and got[0][1] != probe


def test_a_late_repeat_of_the_rrq_does_not_restart_a_transfer_that_moved_on(server: RunningServer) -> None:
    """A client repeats its RRQ while waiting for the OACK; under a flood the repeat can sit in port 69's
    queue until after data has flowed. Taking it for a restart would abandon the live transfer (and
    the client, whose TID is the old one, would hear nothing more): it arrived before that transfer's
    last progress, so it is ignored."""
    request = rrq(b"big.bin")
    with client() as sock, client() as junk:
        sock.settimeout(2)
        sock.sendto(request, ("127.0.0.1", server.port))
        data, tid = sock.recvfrom(2000)
        assert data[:4] == b"\0\3\0\1"
        # Hold the server's loop: what follows queues up in the kernel, in this order.
        server.loop.call_soon_threadsafe(time.sleep, 0.5)
        time.sleep(0.1)
        for _ in range(400):  # a backlog on port 69 (not TFTP requests: ignored)
            junk.sendto(b"\0\7junk", ("127.0.0.1", server.port))
        sock.sendto(request, ("127.0.0.1", server.port))  # the late repeat
        sock.sendto(b"\0\4\0\1", tid)  # then progress on the live transfer
        got = replies(sock, 1.0)
    assert got and {peer for _, peer in got} == {tid}, "only the live transfer talks to the client"
    assert got[0][0][:4] == b"\0\3\0\2"
    assert server.server.stats.started == 1


def test_rrq_again_mid_transfer_starts_over(server: RunningServer) -> None:
    with client() as sock:
        sock.settimeout(2)
        sock.sendto(rrq(b"big.bin"), ("127.0.0.1", server.port))
        _, old = sock.recvfrom(2000)
        sock.sendto(b"\0\4\0\1", old)
        data, _ = sock.recvfrom(2000)
        assert data[:4] == b"\0\3\0\2"
        sock.sendto(rrq(b"big.bin"), ("127.0.0.1", server.port))  # the client started over
        data, new = sock.recvfrom(2000)
        assert new != old and data[:4] == b"\0\3\0\1"
