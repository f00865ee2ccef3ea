"""The TFTP server against real Debian clients (curl, tftp-hpa, atftp, busybox) on loopback, and
against a small Python client for what the real ones cannot show (exact errors, rollover, TIDs)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxydhcp.tftp.endpoint import TransferStats
from tests.integration.tftp_fixtures import (
    NETASCII_TEXT,
    ClientError,
    RunningServer,
    fetch,
    rrq,
    start_server,
    stop_server,
    tftp_server,
    udp_peers_on,
)

__all__ = ["tftp_server"]  # the fixture, re-exported for pytest

FILES = ["one", "b512", "b1468x3", "random3m", "sub/dir/file.bin"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def check_out(server: RunningServer, name: str, out: Path) -> None:
    assert out.exists(), f"{name}: no output"
    assert sha(out.read_bytes()) == sha(server.contents[name]), f"{name}: checksum differs"


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("blksize", [512, 1468])
def test_curl(tftp_server: RunningServer, tmp_path: Path, name: str, blksize: int) -> None:
    need("curl")
    out = tmp_path / "out"
    url = f"tftp://127.0.0.1:{tftp_server.port}/{name}"
    result = run(["curl", "-sS", "--tftp-blksize", str(blksize), "-o", str(out), url])
    assert result.returncode == 0, result.stderr
    check_out(tftp_server, name, out)


@pytest.mark.parametrize("name", ["empty", *FILES])
def test_tftp_hpa(tftp_server: RunningServer, tmp_path: Path, name: str) -> None:
    need("tftp")
    out = tmp_path / "out"
    result = run(["tftp", "127.0.0.1", str(tftp_server.port), "-m", "binary", "-c", "get", name, str(out)])
    assert "Error" not in result.stdout + result.stderr
    check_out(tftp_server, name, out)


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["blksize 1468"],
        ["blksize 1468", "tsize 0"],
        ["blksize 1468", "tsize 0", "windowsize 8"],
        ["blksize 8"],
    ],
)
@pytest.mark.parametrize("name", ["empty", "b1468x3", "random3m"])
def test_atftp(tftp_server: RunningServer, tmp_path: Path, name: str, options: list[str]) -> None:
    need("atftp")
    if options == ["blksize 8"] and name == "random3m":
        pytest.skip("400k lockstep blocks: slow, covered by smaller files")
    out = tmp_path / "out"
    argv = ["atftp"]
    for option in options:
        argv += ["--option", option]
    argv += ["-g", "-r", name, "-l", str(out), "127.0.0.1", str(tftp_server.port)]
    result = run(argv)
    assert result.returncode == 0, result.stdout + result.stderr
    check_out(tftp_server, name, out)


@pytest.mark.parametrize("name", ["empty", *FILES])
def test_busybox(tftp_server: RunningServer, tmp_path: Path, name: str) -> None:
    need("busybox")
    out = tmp_path / "out"
    argv = [
        "busybox",
        "tftp",
        "-g",
        "-r",
        name,
        "-l",
        str(out),
        "-b",
        "1468",
        "127.0.0.1",
        str(tftp_server.port),
    ]
    result = run(argv)
    assert result.returncode == 0, result.stdout + result.stderr
    check_out(tftp_server, name, out)


def test_netascii_with_tftp_hpa(tftp_server: RunningServer, tmp_path: Path) -> None:
    need("tftp")
    out = tmp_path / "out"
    run(["tftp", "127.0.0.1", str(tftp_server.port), "-m", "ascii", "-c", "get", "text.txt", str(out)])
    # the client converts CR LF back to LF and CR NUL back to CR: the original text comes back
    assert out.read_bytes() == NETASCII_TEXT


def test_netascii_on_the_wire(tftp_server: RunningServer) -> None:
    got = fetch(
        tftp_server.port, "text.txt", {"tsize": "0", "windowsize": "8", "blksize": "100"}, mode=b"NetASCII"
    )
    assert got.data == NETASCII_TEXT.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    assert got.oack == {"blksize": "100"}  # no tsize, no window in netascii


def test_oack_lists_accepted_options_only(tftp_server: RunningServer) -> None:
    options = {"BLKSIZE": "9000", "tsize": "0", "timeout": "3", "windowsize": "99", "msftwindow": "31416"}
    got = fetch(tftp_server.port, "random3m", options)
    assert got.oack == {"blksize": "1468", "tsize": str(len(got.data)), "timeout": "3", "windowsize": "16"}
    assert got.data == tftp_server.contents["random3m"]
    assert got.server_port != tftp_server.port  # a fresh TID


def test_python_client_windows(tftp_server: RunningServer) -> None:
    for window in ("1", "4", "16"):
        got = fetch(tftp_server.port, "random3m", {"blksize": "1468", "windowsize": window})
        assert got.data == tftp_server.contents["random3m"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../../etc/passwd", 2),
        ("/etc/passwd", 1),
        ("..\\..\\etc\\passwd", 2),
        ("escape", 2),  # a symlink out of the root
        ("adir", 2),
        ("fifo", 2),
        ("missing", 1),
        ("../secret.txt", 2),
    ],
)
def test_refusals(tftp_server: RunningServer, name: str, code: int) -> None:
    with pytest.raises(ClientError) as info:
        fetch(tftp_server.port, name)
    assert info.value.code == code
    assert str(info.value) in (f"ERROR {code}: File not found", f"ERROR {code}: Access violation")


@pytest.mark.parametrize("name", ["../../etc/passwd", "..\\..\\etc\\passwd", "escape", "../secret.txt"])
def test_traversal_with_tftp_hpa(tftp_server: RunningServer, tmp_path: Path, name: str) -> None:
    need("tftp")
    out = tmp_path / "out"
    result = run(["tftp", "127.0.0.1", str(tftp_server.port), "-m", "binary", "-c", "get", name, str(out)])
    assert "Error code" in result.stdout + result.stderr
    assert not out.exists() or out.read_bytes() == b""


def test_write_request_refused(tftp_server: RunningServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(b"\0\2upload\0octet\0", ("127.0.0.1", tftp_server.port))
        data, _ = sock.recvfrom(1000)
    assert data == b"\0\5\0\2Access violation\0"


def test_unknown_mode_refused(tftp_server: RunningServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(rrq(b"one", b"mail"), ("127.0.0.1", tftp_server.port))
        data, _ = sock.recvfrom(1000)
    assert data == b"\0\5\0\4Illegal TFTP operation\0"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\0", b"\0\x09junk", b"\0\1no-terminator", b"\0\4\0\1", b"\xff" * 600, b"\0\3\0\1data"],
    ids=["empty", "one-byte", "bad-opcode", "unterminated", "ack", "ff600", "data"],
)
def test_malformed_gets_no_reply(
    tftp_server: RunningServer, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxydhcp.tftp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(garbage, ("127.0.0.1", tftp_server.port))
        with pytest.raises(TimeoutError):
            sock.recvfrom(1000)
    assert any("ignored" in r.getMessage() for r in caplog.records)
    # and the server still serves
    assert fetch(tftp_server.port, "one").data == b"x"


def test_wrong_tid_gets_error_5_and_transfer_survives(tftp_server: RunningServer) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder,
    ):
        sock.settimeout(3)
        intruder.settimeout(3)
        sock.sendto(rrq(b"b1468x3", options={"blksize": "1468"}), ("127.0.0.1", tftp_server.port))
        data, peer = sock.recvfrom(2000)
        assert data[:2] == b"\0\6"
        intruder.sendto(b"\0\4\0\0", peer)  # an ACK from the wrong port
        reply, _ = intruder.recvfrom(100)
        assert reply == b"\0\5\0\5Unknown transfer ID\0"
        received = b""
        sock.sendto(b"\0\4\0\0", peer)
        for block in range(1, 5):
            data, addr = sock.recvfrom(2000)
            assert addr == peer
            assert struct.unpack("!HH", data[:4]) == (3, block)
            received += data[4:]
            sock.sendto(struct.pack("!HH", 4, block), peer)
    assert received == tftp_server.contents["b1468x3"]


def test_duplicate_ack_does_not_resend(tftp_server: RunningServer) -> None:
    count = len(tftp_server.finished)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.4)
        sock.sendto(rrq(b"random3m"), ("127.0.0.1", tftp_server.port))
        data, peer = sock.recvfrom(2000)
        sock.sendto(b"\0\4\0\1", peer)
        data, _ = sock.recvfrom(2000)
        assert data[:4] == b"\0\3\0\2"
        sock.sendto(b"\0\4\0\1", peer)  # duplicate: no block 2 again before the timer
        with pytest.raises(TimeoutError):
            sock.recvfrom(2000)
        sock.sendto(b"\0\5\0\0done\0", peer)
    assert tftp_server.wait_finished(count + 1)[-1].outcome_text == "aborted by client"


def test_retransmit_on_timeout(tftp_server: RunningServer) -> None:
    count = len(tftp_server.finished)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(rrq(b"b512", options={"timeout": "1"}), ("127.0.0.1", tftp_server.port))
        first, peer = sock.recvfrom(2000)
        started = time.monotonic()
        again, _ = sock.recvfrom(2000)  # no ACK: the OACK is sent again after ~1 s
        assert again == first
        assert 0.8 < time.monotonic() - started < 2.0
        sock.sendto(b"\0\5\0\0bye\0", peer)
    # ERROR before any block was asked: counted as a probe (and waited for, so the next test's
    # probe count starts from a settled value)
    assert tftp_server.wait_finished(count + 1)[-1].outcome_text == "probe"


def test_tsize_probe_logged_at_debug(tftp_server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="proxydhcp.tftp")
    before = tftp_server.server.stats.probes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(
            rrq(b"random3m", options={"tsize": "0", "blksize": "1468"}), ("127.0.0.1", tftp_server.port)
        )
        data, peer = sock.recvfrom(2000)
        assert (
            data
            == b"\0\6tsize\0" + str(len(tftp_server.contents["random3m"])).encode() + b"\0blksize\x001468\0"
        )
        sock.sendto(b"\0\5\0\x08\0", peer)  # EDK2 aborts after reading the size
        me = "{}:{}".format(*sock.getsockname())
    deadline = time.monotonic() + 3
    while tftp_server.server.stats.probes == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tftp_server.server.stats.probes == before + 1
    probe = [r for r in caplog.records if "size probe" in r.getMessage()]
    assert probe and probe[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and me in r.getMessage()]


def test_transfer_record(tftp_server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxydhcp.tftp")
    count = len(tftp_server.finished)
    fetch(tftp_server.port, "b1468x3", {"blksize": "1468", "windowsize": "2"})
    stats = tftp_server.wait_finished(count + 1)[-1]
    assert (stats.filename, stats.bytes, stats.blksize, stats.windowsize) == ("b1468x3", 1468 * 3, 1468, 2)
    assert stats.outcome_text == "completed"
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("file") == "b1468x3"]
    fields = records[-1].fields  # type: ignore[attr-defined]
    assert set(fields) == {
        "client", "file", "bytes", "blksize", "windowsize", "retransmits", "duration", "mbps", "outcome"
    }  # fmt: skip
    assert fields["bytes"] == 1468 * 3


def test_rollover_40mib_at_blksize_512(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    big = os.urandom(40 * 1024 * 1024 + 100)  # 81921 blocks: wraps 65535 -> 0 once
    (root / "big").write_bytes(big)
    running = start_server(root, {"big": big})
    try:
        got = fetch(running.port, "big")  # no options: blksize 512, lockstep
        assert sha(got.data) == sha(big)
        if shutil.which("tftp"):
            out = tmp_path / "out"
            run(
                ["tftp", "127.0.0.1", str(running.port), "-m", "binary", "-c", "get", "big", str(out)],
                timeout=120,
            )
            assert sha(out.read_bytes()) == sha(big)
    finally:
        stop_server(running)


def test_concurrency_cap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"y" * 5000)
    running = start_server(root, {}, max_transfers_per_client=2)
    try:
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        replies = []
        for s in socks:
            s.settimeout(3)
            s.sendto(rrq(b"f"), ("127.0.0.1", running.port))
            replies.append(s.recvfrom(2000)[0])
            time.sleep(0.05)
        assert [r[:2] for r in replies] == [b"\0\3", b"\0\3", b"\0\5"]
        assert replies[2] == b"\0\5\0\0Too many transfers\0"
        assert running.server.active == 2
        for s in socks:
            s.close()
    finally:
        stop_server(running)


def test_hundred_concurrent_clients(tftp_server: RunningServer) -> None:
    """100 asyncio clients at once, each checking every byte."""
    port = tftp_server.port
    names = ["random3m", "b1468x3", "sub/dir/file.bin", "b512"]

    class Client(asyncio.DatagramProtocol):
        def __init__(self, name: str, window: int) -> None:
            self.name, self.window = name, window
            self.data = bytearray()
            self.expected = 1
            self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.transport: asyncio.DatagramTransport | None = None
            self.count = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            transport.sendto(
                rrq(self.name.encode(), options={"blksize": "1468", "windowsize": str(self.window)}),
                ("127.0.0.1", port),
            )

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            assert self.transport is not None
            op, block = struct.unpack("!HH", data[:4])
            if op == 6:
                self.transport.sendto(b"\0\4\0\0", addr)
            elif op == 3 and block == self.expected & 0xFFFF:
                self.data += data[4:]
                self.expected += 1
                self.count += 1
                last = len(data) - 4 < 1468
                if last or self.count % self.window == 0:
                    self.transport.sendto(struct.pack("!HH", 4, block), addr)
                if last and not self.done.done():
                    self.done.set_result(bytes(self.data))
            elif op == 3:
                self.count = 0
                self.transport.sendto(struct.pack("!HH", 4, (self.expected - 1) & 0xFFFF), addr)
            elif op == 5 and not self.done.done():
                self.done.set_exception(ClientError(block, data[4:].decode(errors="replace")))

    async def main() -> list[tuple[str, bytes]]:
        loop = asyncio.get_running_loop()
        clients = []
        for i in range(100):
            client = Client(names[i % len(names)], (1, 4, 8, 16)[i % 4])
            # distinct source addresses: the per-client cap counts by address
            local = (f"127.0.{1 + i // 200}.{2 + i % 200}", 0)
            await loop.create_datagram_endpoint(lambda c=client: c, local_addr=local)  # type: ignore[misc]
            clients.append(client)
        results = await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), 60)
        for c in clients:
            assert c.transport is not None
            c.transport.close()
        return [(c.name, r) for c, r in zip(clients, results, strict=True)]

    results = asyncio.run(main())
    assert len(results) == 100
    for name, data in results:
        assert sha(data) == sha(tftp_server.contents[name]), name


def test_tsize_probe_then_read_counts_one_probe_one_completed(tmp_path: Path) -> None:
    """UEFI's pattern (R-62): RRQ with tsize, ERROR after the OACK, then the real read. The metrics
    wiring `serve` uses must show two starts, one probe, one completed and no failure."""
    from proxydhcp.metrics import Metrics
    from proxydhcp.serve.service import tftp_metrics_hooks
    from tests.unit.test_metrics import scrape, value

    root = tmp_path / "root"
    root.mkdir()
    content = os.urandom(100_000)
    (root / "ipxe.efi").write_bytes(content)
    metrics = Metrics()
    metrics.start_http("127.0.0.1:0")
    running = start_server(root, {"ipxe.efi": content})
    on_start, on_transfer = tftp_metrics_hooks(metrics)
    running.server.on_start = on_start

    def finished(stats: TransferStats) -> None:
        on_transfer(stats)
        running.finished.append(stats)

    running.server.on_transfer = finished
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(rrq(b"ipxe.efi", options={"tsize": "0"}), ("127.0.0.1", running.port))
            data, peer = sock.recvfrom(2000)
            assert data == b"\0\6tsize\0" + str(len(content)).encode() + b"\0"
            sock.sendto(b"\0\5\0\x08\0", peer)
        assert [s.outcome_text for s in running.wait_finished(1)] == ["probe"]
        got = fetch(running.port, "ipxe.efi", {"tsize": "0", "blksize": "1468"})
        assert got.data == content
        assert [s.outcome_text for s in running.wait_finished(2)] == ["probe", "completed"]
        stats = running.server.stats
        assert (stats.started, stats.probes, stats.completed, stats.failed) == (2, 1, 1, 0)
        s = scrape(metrics)
        assert value(s, "proxydhcp_tftp_transfers_started_total") == 2
        assert value(s, "proxydhcp_tftp_size_probes_total") == 1
        assert value(s, "proxydhcp_tftp_transfers_completed_total") == 1
        assert not [k for k, v in s.items() if k[0] == "proxydhcp_tftp_transfers_failed_total" and v]
        assert value(s, "proxydhcp_tftp_transfer_duration_seconds_count") == 1  # probes are not timed
    finally:
        stop_server(running)
        metrics.stop_http()


def test_error_after_first_block_is_not_a_probe(tftp_server: RunningServer) -> None:
    count = len(tftp_server.finished)
    probes = tftp_server.server.stats.probes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(rrq(b"random3m", options={"tsize": "0"}), ("127.0.0.1", tftp_server.port))
        _, peer = sock.recvfrom(2000)
        sock.sendto(b"\0\4\0\0", peer)  # ACK the OACK: the transfer has begun
        data, _ = sock.recvfrom(2000)
        assert data[:4] == b"\0\3\0\1"
        sock.sendto(b"\0\5\0\0stop\0", peer)
    assert tftp_server.wait_finished(count + 1)[-1].outcome_text == "aborted by client"
    assert tftp_server.server.stats.probes == probes


def test_chunked_read_ahead_windowsize_16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache budget too small for the file forces the chunked path; small odd-sized chunks make the
    transfer cross ~30 chunk boundaries inside windows of 16, each served by the read-ahead."""
    from proxydhcp.tftp import files

    monkeypatch.setattr(files, "CHUNK", 100_003)
    root = tmp_path / "root"
    root.mkdir()
    big = os.urandom(3 * 1024 * 1024 + 777)
    (root / "big").write_bytes(big)
    running = start_server(root, {"big": big}, cache_bytes=64 * 1024)
    try:
        got = fetch(running.port, "big", {"blksize": "1468", "windowsize": "16", "tsize": "0"})
        assert sha(got.data) == sha(big)
        if shutil.which("atftp"):
            out = tmp_path / "out"
            argv = ["atftp", "--option", "blksize 1468", "--option", "windowsize 16",
                    "-g", "-r", "big", "-l", str(out), "127.0.0.1", str(running.port)]  # fmt: skip
            result = run(argv)
            assert result.returncode == 0, result.stdout + result.stderr
            assert sha(out.read_bytes()) == sha(big)
        assert running.server.cache.loads == 0  # never went through the whole-file cache
        transfers = 2 if shutil.which("atftp") else 1
        assert [s.outcome_text for s in running.wait_finished(transfers)] == ["completed"] * transfers
    finally:
        stop_server(running)


def test_file_shrinking_mid_transfer_ends_with_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxydhcp.tftp import files

    monkeypatch.setattr(files, "CHUNK", 4096)
    root = tmp_path / "root"
    root.mkdir()
    (root / "big").write_bytes(os.urandom(200_000))
    running = start_server(root, {}, cache_bytes=1024)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(rrq(b"big"), ("127.0.0.1", running.port))
            data, peer = sock.recvfrom(2000)
            assert data[:4] == b"\0\3\0\1"
            os.truncate(root / "big", 1000)
            replies = []
            for block in range(1, 100):
                sock.sendto(struct.pack("!HH", 4, block), peer)
                data, _ = sock.recvfrom(2000)
                replies.append(data[:2])
                if data[:2] == b"\0\5":
                    break
            assert replies[-1] == b"\0\5"
        assert running.wait_finished(1)[0].outcome_text == "error: file changed"
    finally:
        stop_server(running)


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    """`run_standalone(workers=2)`: two processes in one SO_REUSEPORT group; clients from many source
    ports (hashed over both) all get intact files; SIGTERM to the parent stops both."""
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(200_000)
    (root / "f").write_bytes(data)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import sys; from pathlib import Path; from proxydhcp.tftp.standalone import run_standalone; "
        "from proxydhcp.tftp.config import TftpConfig; "
        f"sys.exit(run_standalone(TftpConfig(root=Path({str(root)!r}), address='127.0.0.1', port={port}, "
        "workers=2)))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 15
        while len(udp_peers_on(port)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(udp_peers_on(port)) == 2, "two workers did not both bind the port"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        for i in range(24):  # a fresh source port each: the kernel spreads them over both workers
            got = fetch(port, "f", {"blksize": "1468", "windowsize": str(1 + i % 4)})
            assert got.data == data
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert not Path(f"/proc/{children[0]}").exists(), "the worker outlived the parent (or was not reaped)"
        assert len(udp_peers_on(port)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    from proxydhcp.tftp.config import TftpConfig
    from proxydhcp.tftp.standalone import run_standalone

    assert run_standalone(TftpConfig(root=tmp_path, address="127.0.0.1", port=0, workers=2)) == 2
    assert run_standalone(TftpConfig(root=tmp_path, address="127.0.0.1", port=0, workers=0)) == 2


def test_window_datagrams_are_separate_on_the_wire(tftp_server: RunningServer) -> None:
    """A window may leave as one GSO send: the client must still get one datagram per block, each
    blksize + 4 bytes but the last (checked by reading raw datagrams, not through `fetch`)."""
    data = tftp_server.contents["random3m"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(
            rrq(b"random3m", options={"blksize": "1468", "windowsize": "16"}), ("127.0.0.1", tftp_server.port)
        )
        oack, peer = sock.recvfrom(70000)
        assert oack[:2] == b"\0\6"
        sock.sendto(b"\0\4\0\0", peer)
        got = bytearray()
        for block in range(1, 16 * 4 + 1):  # four windows
            datagram, _ = sock.recvfrom(70000)
            assert struct.unpack("!HH", datagram[:4]) == (3, block)
            assert len(datagram) == 1472
            got += datagram[4:]
            if block % 16 == 0:
                sock.sendto(struct.pack("!HH", 4, block), peer)
        assert bytes(got) == data[: len(got)]
        sock.sendto(b"\0\5\0\0done\0", peer)


def test_gso_refused_by_the_kernel_falls_back_to_single_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """More segments per send than the kernel takes (UDP_MAX_SEGMENTS is 64 or 128) makes the GSO send
    fail with EINVAL: the transfer goes on block by block, intact, with no resend wait. (The OACK,
    longer than an 8-byte block's datagram, must not be cut into segments either.)"""
    from proxydhcp.tftp import endpoint

    monkeypatch.setattr(endpoint, "GSO_MAX_SEGMENTS", 1000)
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(8 * 200 * 15 + 5)  # blksize 8: 12-byte datagrams, 200 per window (fits a rcvbuf)
    (root / "f").write_bytes(data)
    running = start_server(root, {"f": data}, max_windowsize=200)
    try:
        with caplog.at_level(logging.DEBUG, logger="proxydhcp.tftp"):
            started = time.monotonic()
            got = fetch(running.port, "f", {"blksize": "8", "windowsize": "200"})
            took = time.monotonic() - started
        assert got.data == data
        assert got.oack["windowsize"] == "200"
        assert any("GSO send" in r.getMessage() for r in caplog.records), "GSO was not refused: no fallback"
        stats = running.wait_finished(1)
        assert stats[-1].outcome_text == "completed" and stats[-1].retransmits == 0, stats
        assert took < 1.0
    finally:
        stop_server(running)
