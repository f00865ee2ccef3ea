"""Shared helpers for the TFTP integration tests: an in-process server on a thread, and a small client.

The client is deliberately independent of `proxydhcp.tftp` (its own struct packing) and counts blocks
in 64 bits, so it can check rollover and windows against the server.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.endpoint import TransferStats
from proxydhcp.tftp.server import TftpServer

NETASCII_TEXT = b"first line\nsecond line\r\nbare cr\rend\n" * 50


def make_tree(root: Path) -> dict[str, bytes]:
    rng = os.urandom
    contents = {
        "empty": b"",
        "one": b"x",
        "b512": rng(512),
        "b1468x3": rng(1468 * 3),
        "random3m": rng(3 * 1024 * 1024 + 123),
        "text.txt": NETASCII_TEXT,
        "sub/dir/file.bin": rng(5000),
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    secret = root.parent / "secret.txt"
    secret.write_bytes(b"top secret\n")
    (root / "escape").symlink_to(secret)
    (root / "adir").mkdir()
    os.mkfifo(root / "fifo")
    return contents


@dataclass
class RunningServer:
    server: TftpServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    root: Path
    contents: dict[str, bytes]
    finished: list[TransferStats] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def wait_finished(self, count: int, timeout: float = 10.0) -> list[TransferStats]:
        deadline = time.monotonic() + timeout
        while len(self.finished) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.finished)


@dataclass
class Sink:
    items: list[TransferStats] = field(default_factory=list)


def start_server(root: Path, contents: dict[str, bytes], **overrides: object) -> RunningServer:
    settings: dict[str, object] = {"address": "127.0.0.1", "port": 0, **overrides}
    config = TftpConfig(root=root, **settings)  # type: ignore[arg-type]
    finished: list[TransferStats] = []
    server = TftpServer(config, on_transfer=finished.append)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(5), "server did not start"
    return RunningServer(server, loop, thread, root, contents, finished)


def stop_server(running: RunningServer) -> None:
    asyncio.run_coroutine_threadsafe(running.server.close(), running.loop).result(10)
    running.loop.call_soon_threadsafe(running.loop.stop)
    running.thread.join(10)
    running.loop.close()


@pytest.fixture(scope="module")
def tftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("tftp") / "root"
    root.mkdir()
    contents = make_tree(root)
    running = start_server(root, contents, max_blksize=1468, max_windowsize=16)
    try:
        yield running
    finally:
        stop_server(running)


# -- a small client -----------------------------------------------------------------------------


class ClientError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ERROR {code}: {message}")
        self.code = code


@dataclass
class Fetched:
    data: bytes
    oack: dict[str, str]
    server_port: int


def rrq(name: bytes, mode: bytes = b"octet", options: dict[str, str] | None = None) -> bytes:
    body = name + b"\0" + mode + b"\0"
    for key, value in (options or {}).items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    return b"\0\1" + body


def fetch(
    port: int,
    name: str | bytes,
    options: dict[str, str] | None = None,
    mode: bytes = b"octet",
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> Fetched:
    """Read a file (lockstep or windowed); raise ClientError on an ERROR packet."""
    raw = name.encode() if isinstance(name, str) else name
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        sock.sendto(rrq(raw, mode, options), (host, port))
        blksize, window = 512, 1
        received = bytearray()
        expected = 1  # 64-bit block counter
        peer = None
        oack: dict[str, str] = {}
        in_window = 0
        while True:
            data, addr = sock.recvfrom(70000)
            if peer is None:
                peer = addr
            elif addr != peer:
                continue
            opcode = struct.unpack("!H", data[:2])[0]
            if opcode == 5:
                code = struct.unpack("!H", data[2:4])[0]
                raise ClientError(code, data[4:].split(b"\0")[0].decode())
            if opcode == 6:
                fields = data[2:].split(b"\0")[:-1]
                oack = {k.decode(): v.decode() for k, v in zip(fields[0::2], fields[1::2], strict=True)}
                blksize = int(oack.get("blksize", 512))
                window = int(oack.get("windowsize", 1))
                sock.sendto(b"\0\4\0\0", peer)
                continue
            assert opcode == 3, f"unexpected opcode {opcode}"
            block = struct.unpack("!H", data[2:4])[0]
            if block != expected & 0xFFFF:
                # out of order: ACK the last in-order block (RFC 7440)
                sock.sendto(struct.pack("!HH", 4, (expected - 1) & 0xFFFF), peer)
                in_window = 0
                continue
            payload = data[4:]
            received += payload
            in_window += 1
            last = len(payload) < blksize
            if last or in_window >= window:
                sock.sendto(struct.pack("!HH", 4, block), peer)
                in_window = 0
            expected += 1
            if last:
                return Fetched(bytes(received), oack, peer[1])
    finally:
        sock.close()


def udp_peers_on(port: int) -> list[tuple[str, int]]:
    """The remote address of each IPv4 UDP socket bound to `port` (/proc/net/udp): ("0.0.0.0", 0) for an
    unconnected one."""
    peers = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.split(":")[1], 16) == port:
            address, remote_port = remote.split(":")
            peers.append((socket.inet_ntoa(int(address, 16).to_bytes(4, "little")), int(remote_port, 16)))
    return peers


def client(address: str = "127.0.0.1") -> socket.socket:
    """A UDP socket on `address`, any port: one test client TID."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    return sock


def replies(sock: socket.socket, seconds: float, limit: int = 10_000) -> list[tuple[bytes, tuple[str, int]]]:
    """Every datagram (with its source) arriving within `seconds`, at most `limit` of them."""
    got: list[tuple[bytes, tuple[str, int]]] = []
    deadline = time.monotonic() + seconds
    sock.setblocking(False)
    while len(got) < limit:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        while len(got) < limit:
            try:
                got.append(sock.recvfrom(70000))
            except BlockingIOError:
                break
    return got
