"""Disk read errors: a file whose data cannot be read (EIO) mid-file gives the client an ERROR with a
fixed RFC message, quickly, never a hang or Python exception text; the server keeps serving other files.

The failing disk is real: an ext4 filesystem on a loop device, mounted read-only, whose loop device is
then shrunk (`losetup -c` after truncating its backing image) so that it ends in the middle of big.bin's
data. Reads past the new end fail in the block layer ("attempt to access beyond end of device"), and
read(2) returns EIO, as with a dead sector. (device-mapper's `error` target would say the same, but the
kernel here is built without device-mapper.) good.bin is allocated first, below the cut, and stays
readable. Needs root, losetup, mkfs.ext4, filefrag; skipped otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.server import TftpServer

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mount"),
    pytest.mark.skipif(
        any(
            shutil.which(t) is None
            for t in ("losetup", "mkfs.ext4", "filefrag", "mount", "umount", "blockdev")
        ),
        reason="needs losetup, mkfs.ext4, filefrag, mount, blockdev",
    ),
    pytest.mark.skipif(not Path("/dev/loop-control").exists(), reason="no loop device support"),
]

IMAGE = 64 * 1024 * 1024
GOOD = 1024 * 1024
BIG = 24 * 1024 * 1024
CUT = 10 * 1024 * 1024 + 100 * 1024  # reads of big.bin fail from this byte on (4 KiB aligned, mid-chunk)
SECTOR = 512
ERROR_WITHIN = 10.0  # seconds from the RRQ to the ERROR; the good part takes well under 2 s on loopback
HANG = 6.0  # no packet for this long while the transfer is unfinished: the server hung the client
RFC_MESSAGES = {
    "Not defined", "File not found", "Access violation", "Disk full or allocation exceeded",
    "Illegal TFTP operation", "Unknown transfer ID", "File already exists", "No such user",
}  # fmt: skip
CURL_TFTP_ERRORS = range(68, 75)  # CURLE_TFTP_NOTFOUND .. CURLE_TFTP_NOSUCHUSER: the server sent ERROR
CURL_TIMEOUT = 28


def run(*argv: str, timeout: float = 30.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def extents(path: Path) -> list[tuple[int, int, int]]:
    """(logical sector, physical sector, length in sectors) of each extent, from `filefrag -v -b512`."""
    found = []
    for line in run("filefrag", "-v", "-b512", str(path)).splitlines():
        parts = line.replace("..", " ").replace(":", " ").split()
        if len(parts) >= 6 and parts[0].isdigit() and all(p.isdigit() for p in parts[1:6]):
            found.append((int(parts[1]), int(parts[3]), int(parts[5])))
    assert found, f"filefrag found no extents for {path}"
    return found


@dataclass
class FailingDisk:
    root: Path
    good: bytes
    big: bytes
    device: str
    cut_sector: int


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailingDisk]:
    base = tmp_path_factory.mktemp(f"diskerr-{secrets.token_hex(4)}")
    image, mnt = base / "disk.img", base / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(IMAGE)  # sparse
    good, big = os.urandom(GOOD), os.urandom(BIG)
    with ExitStack() as cleanup:  # runs on any failure below, and after the module's tests
        device = run("losetup", "--find", "--show", str(image)).strip()
        cleanup.callback(_detach, device)
        cleanup.callback(lambda: image.unlink(missing_ok=True))
        run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", device, timeout=60)
        run("mount", device, str(mnt))
        cleanup.callback(_unmount, mnt)
        _write(mnt / "good.bin", good)  # allocated first: physically below big.bin
        run("sync")
        _write(mnt / "big.bin", big)
        run("sync")
        good_ext, big_ext = extents(mnt / "good.bin"), extents(mnt / "big.bin")
        cut_logical = CUT // SECTOR
        at = [(lg, ph, n) for lg, ph, n in big_ext if lg <= cut_logical < lg + n]
        assert at, f"no extent of big.bin covers byte {CUT}: {big_ext}"
        cut_sector = at[0][1] + cut_logical - at[0][0]
        # Everything that must stay readable lies below the cut: good.bin and big.bin before CUT.
        below = [ph + n for _, ph, n in good_ext] + [ph + min(n, cut_logical - lg) for lg, ph, n in big_ext
                                                     if lg < cut_logical]  # fmt: skip
        assert max(below) <= cut_sector, (
            f"fragmented layout: good {good_ext}, big {big_ext}, cut {cut_sector}"
        )
        run("umount", str(mnt))
        run("mount", "-o", "ro,noload", device, str(mnt))  # fresh mount: no data pages cached
        # The failure: the device now ends at the cut, mid big.bin.
        os.truncate(image, cut_sector * SECTOR)
        run("losetup", "-c", device)
        assert int(run("blockdev", "--getsz", device)) == cut_sector
        run("blockdev", "--flushbufs", device)
        _check_fault(mnt / "big.bin")
        yield FailingDisk(mnt, good, big, device, cut_sector)


def _detach(device: str) -> None:
    """Detach the loop device; the kernel may finish it just after the last user closes it."""
    run("losetup", "-d", device)
    deadline = time.monotonic() + 5
    while run("losetup", "-n", "-O", "NAME", "-l").split().count(device) and time.monotonic() < deadline:
        time.sleep(0.05)


def _unmount(mnt: Path) -> None:
    """Unmount (lazily if busy): a stuck mount must not outlive the test."""
    if (
        os.path.ismount(mnt)
        and subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode
    ):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _check_fault(path: Path) -> None:
    """The disk really fails at CUT (else the test would measure nothing); reads nothing before it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as failed:
            os.pread(fd, 4096, CUT)
        assert failed.value.errno == errno.EIO
    finally:
        os.close(fd)


# -- the server, on its own loop thread ---------------------------------------------------------------


@dataclass
class Running:
    server: TftpServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (filename, outcome)

    def wait_outcome(self, name: str, timeout: float = 10.0) -> list[tuple[str, str]]:
        """All outcomes so far, once one for `name` is in (or after `timeout`)."""
        deadline = time.monotonic() + timeout
        while all(n != name for n, _ in self.outcomes) and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.outcomes)


def start(root: Path, **overrides: object) -> Running:
    config = TftpConfig(root=root, address="127.0.0.1", port=0, timeout=0.5, give_up=5.0, **overrides)  # type: ignore[arg-type]
    outcomes: list[tuple[str, str]] = []
    server = TftpServer(config, on_transfer=lambda s: outcomes.append((s.filename, s.outcome_text)))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    return Running(server, loop, thread, outcomes)


def stop(running: Running) -> None:
    asyncio.run_coroutine_threadsafe(running.server.close(), running.loop).result(10)
    running.loop.call_soon_threadsafe(running.loop.stop)
    running.thread.join(10)
    running.loop.close()


# Two read paths: a file over the cache's per-file limit is read in chunks during the transfer (the
# error comes mid-transfer); one under it is loaded whole before the first block (the error comes first).
PATHS = {"chunked": {"cache_bytes": 1024 * 1024}, "cached": {"cache_bytes": 64 * 1024 * 1024}}


@pytest.fixture(params=list(PATHS))
def server(request: pytest.FixtureRequest, disk: FailingDisk) -> Iterator[Running]:
    running = start(disk.root, **PATHS[request.param])
    try:
        yield running
    finally:
        stop(running)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tftp_log() -> Iterator[list[logging.LogRecord]]:
    """Records of `proxydhcp.tftp`, taken on the logger itself (another test may stop propagation)."""
    logger = logging.getLogger("proxydhcp.tftp")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- a small windowed client ---------------------------------------------------------------------------


@dataclass
class Outcome:
    data: bytes = b""
    error: tuple[int, str] | None = None
    hung: bool = False
    seconds: float = 0.0


def fetch(port: int, name: str, blksize: int = 1468, window: int = 8) -> Outcome:
    """RFC 1350/2347/7440 read; re-sends its last packet after 0.5 s of silence, gives up (hung) after
    HANG s of silence."""
    out, started = Outcome(), time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        request = b"\0\1" + b"\0".join(
            [name.encode(), b"octet", b"blksize", str(blksize).encode(), b"windowsize", str(window).encode()]
        ) + b"\0"  # fmt: skip
        target: tuple[str, int] = ("127.0.0.1", port)
        sock.sendto(request, target)
        last, peer, expected, in_window, size = request, None, 1, 0, 512
        received, heard = bytearray(), time.monotonic()
        while time.monotonic() - started < 60:
            if not select.select([sock], [], [], 0.5)[0]:
                if time.monotonic() - heard > HANG:
                    out.hung = True
                    break
                sock.sendto(last, target)
                continue
            data, addr = sock.recvfrom(70000)
            if peer is None:
                peer = target = addr
            if addr != peer or len(data) < 4:
                continue
            heard = time.monotonic()
            opcode, number = struct.unpack("!HH", data[:4])
            if opcode == 5:
                out.error = (number, data[4:].split(b"\0")[0].decode("ascii", "replace"))
                break
            if opcode == 6:
                fields = data[2:].split(b"\0")[:-1]
                options = dict(zip(fields[0::2], fields[1::2], strict=True))
                size, window = int(options.get(b"blksize", 512)), int(options.get(b"windowsize", 1))
                last = b"\0\4\0\0"
                sock.sendto(last, peer)
                continue
            if opcode != 3 or number != expected & 0xFFFF:
                if opcode == 3 and (number - expected) & 0xFFFF < 0x8000:  # a gap: ACK what we have
                    last = struct.pack("!HH", 4, (expected - 1) & 0xFFFF)
                    sock.sendto(last, peer)
                    in_window = 0
                continue
            received += data[4:]
            in_window += 1
            final = len(data) - 4 < size
            if final or in_window >= window:
                last = struct.pack("!HH", 4, number)
                sock.sendto(last, peer)
                in_window = 0
            expected += 1
            if final:
                break
        else:
            out.hung = True
        out.data = bytes(received)
    finally:
        sock.close()
    out.seconds = time.monotonic() - started
    return out


# -- the tests ------------------------------------------------------------------------------------------


def _assert_error_reply(out: Outcome, disk: FailingDisk, what: str) -> None:
    assert not out.hung, f"{what}: no ERROR and no data for {HANG} s: the server hung the client"
    assert out.error is not None, f"{what}: transfer 'completed' with {len(out.data)} of {BIG} bytes"
    assert out.seconds < ERROR_WITHIN, f"{what}: ERROR only after {out.seconds:.1f} s"
    code, message = out.error
    # RFC 1350 code 0 ("Not defined, see error message"): an I/O error is no access violation, and the
    # cached (whole file) and chunked (big file) read paths answer alike.
    assert code == 0, f"{what}: ERROR code {code}, expected 0 for a disk read error"
    assert message in RFC_MESSAGES, f"{what}: ERROR text {message!r} is not a fixed RFC message"
    assert len(out.data) < CUT and out.data == disk.big[: len(out.data)], (
        f"{what}: {len(out.data)} bytes received, not a prefix of the file before the bad sectors"
    )


def test_read_error_gives_error_not_hang(
    disk: FailingDisk, server: Running, tftp_log: list[logging.LogRecord]
) -> None:
    port = server.server.port
    first = fetch(port, "big.bin")
    _assert_error_reply(first, disk, "first read")
    again = fetch(port, "big.bin")  # nothing half-read may have been cached as the file
    _assert_error_reply(again, disk, "second read")
    good = fetch(port, "good.bin")
    assert good.error is None and not good.hung, f"good.bin after the failure: {good}"
    assert good.data == disk.good, f"good.bin: {len(good.data)} bytes, content differs"
    print(
        f"\nEIO at byte {CUT}: ERROR {first.error} after {len(first.data)} bytes in {first.seconds:.2f} s;"
        f" again {again.error} in {again.seconds:.2f} s; good.bin intact in {good.seconds:.2f} s"
    )

    # The operator's view: the failure is logged with its cause, briefly, with no traceback.
    big_lines = [r for r in tftp_log if "big.bin" in r.getMessage() and r.levelno >= logging.WARNING]
    for record in tftp_log:
        assert record.exc_info is None and "Traceback" not in record.getMessage(), (
            f"traceback logged: {record.getMessage()}"
        )
    assert any("Input/output error" in r.getMessage() for r in big_lines), (
        f"no warning names the read error: {[r.getMessage() for r in big_lines]}"
    )
    assert len(big_lines) <= 2 * 2, (  # per failed read: the cause, and at most a summary line
        f"{len(big_lines)} warning lines for 2 failed reads: {[r.getMessage() for r in big_lines]}"
    )
    outcomes = server.wait_outcome("good.bin")
    assert ("good.bin", "completed") in outcomes, outcomes
    assert ("big.bin", "completed") not in outcomes, outcomes


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_gets_tftp_error(disk: FailingDisk, server: Running, tmp_path: Path) -> None:
    port = server.server.port
    target = tmp_path / "big.out"
    started = time.monotonic()
    failed = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--tftp-blksize", "1468", "-o", str(target),
         f"tftp://127.0.0.1:{port}/big.bin"],
        capture_output=True, text=True, timeout=40, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert failed.returncode != CURL_TIMEOUT, f"curl timed out: the server hung it ({failed.stderr.strip()})"
    assert failed.returncode in CURL_TFTP_ERRORS, f"curl exit {failed.returncode}: {failed.stderr.strip()}"
    assert seconds < ERROR_WITHIN * 2, f"curl got its ERROR only after {seconds:.1f} s"
    got = target.read_bytes() if target.exists() else b""
    assert len(got) < CUT and got == disk.big[: len(got)]

    good_out = tmp_path / "good.out"
    fine = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "--tftp-blksize", "1468", "-o", str(good_out),
         f"tftp://127.0.0.1:{port}/good.bin"],
        capture_output=True, text=True, timeout=40, check=False,
    )  # fmt: skip
    assert fine.returncode == 0, f"good.bin after the failure: curl exit {fine.returncode}: {fine.stderr}"
    assert good_out.read_bytes() == disk.good
    print(f"\ncurl: exit {failed.returncode} ({failed.stderr.strip()}) in {seconds:.2f} s; good.bin intact")
