"""Faults during a transfer: the file changes under the server, and packet loss.

A file that is truncated, rewritten, deleted or made unreadable mid-transfer must give the client either
the whole old content (served from the in-memory copy or the still-open file) or an ERROR: never a hang,
never a short file that looks complete, never a mix of old and new bytes. Under 10 % and 20 % loss (nft
`numgen random` drops on input, both directions, in namespaces joined by a veth pair) transfers complete
intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.endpoint import TransferStats
from proxydhcp.tftp.server import TftpServer
from tests.integration import dhcpclient as dc
from tests.integration.tftp_fixtures import rrq, start_server, stop_server
from tests.netlab import Lab, have_root_netns

pytestmark = pytest.mark.timeout(180)

HANG = 6.0  # no packet for this long while the transfer is unfinished: the server hung the client


@dataclass
class Outcome:
    data: bytes = b""
    error: tuple[int, str] | None = None
    hung: bool = False
    resends: int = 0  # times the client re-sent its last ACK (or the RRQ) after a timeout
    seconds: float = 0.0
    oack: dict[str, str] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return "hang" if self.hung else "error" if self.error else "complete"


def fetch_robust(
    sock: socket.socket,
    server: tuple[str, int],
    name: str,
    options: dict[str, str] | None = None,
    *,
    retry_after: float = 0.3,
    hang_after: float = HANG,
    deadline: float = 120.0,
    after_block: tuple[int, Callable[[], None]] | None = None,
) -> Outcome:
    """A loss-tolerant RFC 1350/7440 client: re-sends its last ACK (or the RRQ) when nothing comes for
    `retry_after`; reports a hang when the server sends nothing for `hang_after`. `after_block=(n, f)`
    calls f() once block n has arrived, before ACKing it (to change the file mid-transfer)."""
    out = Outcome()
    started = time.monotonic()
    request = rrq(name.encode(), options=options)
    sock.setblocking(False)
    sock.sendto(request, server)
    last_sent, peer = request, None
    target = server
    blksize, window = 512, 1
    expected, in_window = 1, 0
    received = bytearray()
    last_heard = time.monotonic()
    hook_done = after_block is None
    while time.monotonic() - started < deadline:
        ready = select.select([sock], [], [], retry_after)[0]
        now = time.monotonic()
        if not ready:
            if now - last_heard > hang_after:
                out.hung = True
                break
            sock.sendto(last_sent, target)
            out.resends += 1
            continue
        data, addr = sock.recvfrom(70000)
        if peer is None and data[:2] in (b"\0\3", b"\0\5", b"\0\6"):
            peer = target = addr
        if addr != peer:
            continue
        last_heard = now
        opcode = struct.unpack("!H", data[:2])[0]
        if opcode == 5:
            out.error = (
                struct.unpack("!H", data[2:4])[0],
                data[4:].split(b"\0")[0].decode("ascii", "replace"),
            )
            break
        if opcode == 6:
            if expected == 1:
                fields = data[2:].split(b"\0")[:-1]
                out.oack = {k.decode(): v.decode() for k, v in zip(fields[0::2], fields[1::2], strict=True)}
                blksize = int(out.oack.get("blksize", 512))
                window = int(out.oack.get("windowsize", 1))
                last_sent = b"\0\4\0\0"
                sock.sendto(last_sent, peer)
            continue
        if opcode != 3:
            continue
        block = struct.unpack("!H", data[2:4])[0]
        if block != expected & 0xFFFF:
            if (block - expected) & 0xFFFF < 0x8000:  # a gap: ACK the last in-order block (RFC 7440)
                last_sent = struct.pack("!HH", 4, (expected - 1) & 0xFFFF)
                sock.sendto(last_sent, peer)
                in_window = 0
            continue
        if not hook_done and after_block is not None and expected >= after_block[0]:
            after_block[1]()
            hook_done = True
        payload = data[4:]
        received += payload
        in_window += 1
        final = len(payload) < blksize
        if final or in_window >= window:
            last_sent = struct.pack("!HH", 4, block)
            sock.sendto(last_sent, peer)
            in_window = 0
        expected += 1
        if final:
            out.data = bytes(received)
            break
    else:
        out.hung = True
    out.seconds = time.monotonic() - started
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# -- the file changes under the server ---------------------------------------------------------------

SMALL = 300_000  # cached whole in memory (the server's FileCache)
BIG = 24 * 1024 * 1024  # read in chunks (cache budget below makes anything over 512 KiB uncached)


def _truncate(path: Path) -> None:
    os.truncate(path, 100_000)


def _rewrite_smaller(path: Path) -> None:
    """In place (same inode): a smaller file with different bytes, as a careless `cp` does."""
    with path.open("r+b") as f:
        f.truncate(0)
        f.write(b"N" * 200_000)


def _replace(path: Path) -> None:
    """Atomically (new inode, rename over): how package managers update files."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(b"R" * 50_000)
    tmp.replace(path)


def _delete(path: Path) -> None:
    path.unlink()


def _chmod(path: Path) -> None:
    path.chmod(0)


CHANGES = {"truncate": _truncate, "rewrite-smaller": _rewrite_smaller, "replace": _replace,
           "delete": _delete, "chmod-000": _chmod}  # fmt: skip
RESULTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if RESULTS:
        print("\nmid-transfer file changes:\n  " + "\n  ".join(RESULTS))


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["cached", "chunked"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_file_changes_mid_transfer(tmp_path: Path, change: str, size: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    original = os.urandom(size)
    path = root / "f.bin"
    path.write_bytes(original)
    running = start_server(root, {}, cache_bytes=1024 * 1024, timeout=0.5, give_up=5.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out = fetch_robust(
            sock, ("127.0.0.1", running.port), "f.bin", {"blksize": "1468", "windowsize": "8"},
            after_block=(20, lambda: CHANGES[change](path)),
        )  # fmt: skip
    finally:
        sock.close()
        stop_server(running)
    kind = "cached" if size == SMALL else "chunked"
    detail = f"{len(out.data)} bytes" if out.result == "complete" else str(out.error or "")
    RESULTS.append(f"{change:16s} {kind:8s} -> {out.result} {detail} in {out.seconds:.1f} s")
    assert not out.hung, f"{change} ({kind}): the client got nothing for {HANG} s (no ERROR, no data)"
    if out.error is None:
        assert len(out.data) == size, (
            f"{change} ({kind}): a transfer that looks complete but holds {len(out.data)} of {size} bytes"
        )
        assert out.data == original, f"{change} ({kind}): complete, but old and new bytes are mixed"
    else:
        assert out.error[0] in range(0, 9)


# -- packet loss ----------------------------------------------------------------------------------


@dataclass
class NsServer:
    server: TftpServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    finished: list[TransferStats]


def start_in_netns(netns: str, root: Path, address: str, **overrides: object) -> NsServer:
    """The real TftpServer on a thread that lives in `netns` (so its listener and every transfer socket
    are born there)."""
    config = TftpConfig(root=root, address=address, port=69, **overrides)  # type: ignore[arg-type]
    finished: list[TransferStats] = []
    server = TftpServer(config, on_transfer=finished.append)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            dc._setns(fd)  # this thread only, for good: it is ours
        finally:
            os.close(fd)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10) and not failed, f"server did not start: {failed}"
    return NsServer(server, loop, thread, finished)


def stop_ns_server(running: NsServer) -> None:
    asyncio.run_coroutine_threadsafe(running.server.close(), running.loop).result(10)
    running.loop.call_soon_threadsafe(running.loop.stop)
    running.thread.join(10)
    running.loop.close()


def add_loss(node_name: str, percent: int) -> None:
    script = (
        "nft add table inet loss && "
        "nft add chain inet loss inp '{ type filter hook input priority 0; }' && "
        f"nft add rule inet loss inp meta l4proto udp numgen random mod 100 '<' {percent} drop"
    )
    subprocess.run(["ip", "netns", "exec", node_name, "sh", "-c", script], check=True, capture_output=True)


@pytest.mark.netns
@pytest.mark.parametrize("percent", [10, 20])
@pytest.mark.parametrize(
    "options", [{"blksize": "1468"}, {"blksize": "1468", "windowsize": "8"}], ids=["lockstep", "window8"]
)
def test_transfers_complete_under_loss(tmp_path: Path, percent: int, options: dict[str, str]) -> None:
    if not have_root_netns():
        pytest.skip("needs root and `ip netns`")
    root = tmp_path / "root"
    root.mkdir()
    content = os.urandom(int(os.environ.get("LOSS_FILE_BYTES", "120000")))
    (root / "boot.img").write_bytes(content)
    with Lab(prefix="pdf") as lab:
        lab.link("srv", "eth0", "cli", "eth0")
        lab.ns("srv").run(["ip", "addr", "add", "10.79.0.1/24", "dev", "eth0"])
        lab.ns("cli").run(["ip", "addr", "add", "10.79.0.2/24", "dev", "eth0"])
        for node in ("srv", "cli"):  # both directions: DATA/OACK towards the client, ACKs towards the server
            add_loss(lab.ns(node).name, percent)
        running = start_in_netns(lab.ns("srv").name, root, "10.79.0.1", timeout=0.2, give_up=20.0)
        try:
            results = []
            for _ in range(2):
                sock = dc.udp_socket(lab.ns("cli").name, port=0)
                try:
                    results.append(fetch_robust(sock, ("10.79.0.1", 69), "boot.img", options, deadline=60))
                finally:
                    sock.close()
        finally:
            stop_ns_server(running)
    retrans = sum(s.retransmits for s in running.finished)
    summary = ", ".join(f"{r.result} {r.seconds:.1f}s/{r.resends} client resends" for r in results)
    print(f"\n{percent}% loss {'+'.join(options)}: {summary}; server retransmits {retrans}")
    for r in results:
        assert not r.hung and r.error is None, f"{percent}% loss: {r.result} {r.error}"
        assert r.data == content, f"{percent}% loss: {len(r.data)} bytes, content differs"
    assert retrans > 0, "no retransmission at all: the loss rule did not apply"
