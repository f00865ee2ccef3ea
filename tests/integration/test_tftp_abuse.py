"""Hostile TFTP peers against the real server (in-process, loopback; 127.0.0.0/8 gives many client
addresses): caps per client and overall, bounded sending to silent (spoofed) clients, option values
validated, odd names and modes answered with a fixed ERROR or silence, and the server keeps serving."""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxydhcp.tftp.packet import BUSY_MESSAGE, ERROR_MESSAGES
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

TIMEOUT, GIVE_UP = 0.25, 2.0  # short, so abandonment is observable within the test
FIXED_MESSAGES = {*ERROR_MESSAGES.values(), BUSY_MESSAGE}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    root = tmp_path / "root"
    root.mkdir()
    contents = {"big.bin": os.urandom(400_000), "small.bin": os.urandom(3000)}
    for name, data in contents.items():
        (root / name).write_bytes(data)
    running = start_server(
        root, contents, max_transfers=6, max_transfers_per_client=3, timeout=TIMEOUT, give_up=GIVE_UP
    )
    try:
        yield running
    finally:
        stop_server(running)


def collect(sock: socket.socket, seconds: float) -> list[bytes]:
    """Every datagram arriving within `seconds` (bounded: at most 100,000)."""
    return [data for data, _ in replies(sock, seconds, limit=100_000)]


def first_reply(sock: socket.socket, wait: float = 2.0) -> bytes | None:
    sock.setblocking(False)
    if not select.select([sock], [], [], wait)[0]:
        return None
    return sock.recv(70000)


def error_of(data: bytes) -> tuple[int, str] | None:
    if data[:2] != b"\0\5":
        return None
    return struct.unpack("!H", data[2:4])[0], data[4:].split(b"\0")[0].decode("ascii", "replace")


def assert_still_serving(server: RunningServer) -> None:
    got = fetch(server.port, "small.bin", host="127.0.0.1", options={"blksize": "1468"})
    assert got.data == server.contents["small.bin"]


def test_caps_per_client_and_overall(server: RunningServer) -> None:
    """max_transfers_per_client=3, max_transfers=6: the 4th RRQ from one address and the 7th overall
    are refused with ERROR 0 "Too many transfers"; abandoned transfers free their slots."""
    held: list[socket.socket] = []
    outcomes: dict[str, list[str]] = {}
    try:
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            for _ in range(4):
                sock = client(address)
                held.append(sock)
                sock.sendto(rrq(b"big.bin"), ("127.0.0.1", server.port))
                reply = first_reply(sock)
                assert reply is not None, f"no reply to {address}"
                err = error_of(reply)
                outcomes.setdefault(address, []).append(
                    "busy" if err == (0, BUSY_MESSAGE) else reply[:2].hex()
                )
        print("outcomes", outcomes)
        assert outcomes["127.0.0.2"] == ["0003", "0003", "0003", "busy"]
        assert outcomes["127.0.0.3"] == ["0003", "0003", "0003", "busy"]
        assert outcomes["127.0.0.4"] == ["busy"] * 4  # 6 overall are running
        assert server.server.active == 6
        # Nobody ACKs: every transfer is abandoned within give_up (+ one backoff interval).
        deadline = time.monotonic() + GIVE_UP + 3
        while server.server.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.server.active == 0, "silent transfers were not abandoned"
        timed_out = [s for s in server.finished if s.outcome_text == "timed out"]
        assert len(timed_out) == 6
    finally:
        for sock in held:
            sock.close()
    assert_still_serving(server)


@pytest.mark.parametrize(
    "options,expect_first",
    [({}, "0003"), ({"blksize": "1468", "windowsize": "16"}, "0006")],
    ids=["lockstep", "window16-oack"],
)
def test_silent_client_gets_a_bounded_amount(
    server: RunningServer, options: dict[str, str], expect_first: str
) -> None:
    """An RRQ from a spoofed (silent) source: the server resends with backoff and gives up after
    give_up; a windowed RRQ gets only its small OACK until the client ACKs, so no amplification."""
    sock = client("127.0.0.5")
    try:
        request = rrq(b"big.bin", options=options)
        sock.sendto(request, ("127.0.0.1", server.port))
        got = collect(sock, GIVE_UP + 4)
    finally:
        sock.close()
    assert got and got[0][:2].hex() == expect_first
    assert all(p[:2].hex() == expect_first for p in got), "only the first packet is ever resent"
    sent = sum(len(p) for p in got)
    # Backoff 0.25, 0.5, 1, 2 s... within give_up: at most 1 + log2(give_up/timeout) + 1 sends.
    assert len(got) <= 5, f"{len(got)} packets to a silent client"
    print(f"silent client ({'+'.join(options) or 'no options'}): {len(got)} packets, {sent} bytes "
          f"for a {len(request)}-byte RRQ (x{sent / len(request):.1f})")  # fmt: skip
    # Lockstep: only block 1 (516 bytes), never a window; windowed: only the OACK, however big the window.
    assert max(len(p) for p in got) <= (516 if not options else 64)
    stats = server.wait_finished(1, timeout=5)
    assert [s.outcome_text for s in stats] == ["timed out"]


@pytest.mark.parametrize(
    "options,oack",
    [
        # The combination that broke other PXE TFTP servers (bootmgfw's msftwindow next to windowsize).
        ({"blksize": "1468", "windowsize": "4", "msftwindow": "31"}, {"blksize": "1468", "windowsize": "4"}),
        ({"blksize": "99999999999999999999", "windowsize": "-1"}, {}),
        ({"blksize": "-512", "windowsize": "0", "timeout": "0"}, {}),
        ({"blksize": "abc", "windowsize": "1e3", "timeout": "9999"}, {}),
        ({"blksize": "7", "windowsize": "65536", "tsize": "x"}, {}),
        ({"blksize": "١٤٦٨", "timeout": " 1"}, {}),  # non-ASCII digits, padded value
        (
            {"blksize": "65464", "windowsize": "65535"},
            {"blksize": "1468", "windowsize": "16"},
        ),  # clamped to caps
        ({"tsize": "0", "timeout": "255", "x" * 300: "y" * 300}, {"tsize": "3000", "timeout": "255"}),
    ],
)
def test_option_values_validated(
    server: RunningServer, options: dict[str, str], oack: dict[str, str]
) -> None:
    got = fetch(server.port, "small.bin", options=options)
    assert got.oack == oack
    assert got.data == server.contents["small.bin"]


def test_duplicated_options_first_wins(server: RunningServer) -> None:
    raw = b"\0\1small.bin\0octet\0blksize\0001000\0BLKSIZE\0008\0blksize\00065464\0"
    sock = client()
    try:
        sock.sendto(raw, ("127.0.0.1", server.port))
        reply = first_reply(sock)
        assert reply is not None and reply[:2] == b"\0\6"
        fields = reply[2:].split(b"\0")[:-1]
        assert fields == [b"blksize", b"1000"]
    finally:
        sock.close()


@pytest.mark.parametrize(
    "raw,expect",
    [
        (b"\0\1small.bin\0mail\0", (4, "Illegal TFTP operation")),
        (b"\0\1small.bin\0\0", (4, "Illegal TFTP operation")),
        (b"\0\1small.bin\0octet\xff\0", (4, "Illegal TFTP operation")),
        (b"\0\1" + b"a" * 2000 + b"\0octet\0", (2, "Access violation")),
        (b"\0\1" + b"../" * 300 + b"etc/passwd\0octet\0", (2, "Access violation")),
        (b"\0\1../../../../etc/passwd\0octet\0", (2, "Access violation")),
        (b"\0\1small.bin\xff\xfe\0octet\0", (1, "File not found")),
        (b"\0\1/\0octet\0", (1, "File not found")),
        (b"\0\1%s%s%n\0octet\0", (1, "File not found")),
        (b"\0\2small.bin\0octet\0", (2, "Access violation")),  # WRQ: read-only server
        (b"\0\1small\0.bin\0octet\0", (4, "Illegal TFTP operation")),  # NUL in the name: ".bin" is the mode
        (b"\0\1\0octet\0", None),  # empty name: malformed, silence
        (b"\0\1small.bin", None),  # unterminated
        (b"\0\1", None),
        (b"\0\7junk", None),
        (b"\0\4\0\1", None),  # ACK on the request port
        (b"\0\3\0\1data", None),
        (b"\0\5\0\1err\0", None),
        (b"\x00", None),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None,
)
def test_odd_requests_get_fixed_error_or_silence(
    server: RunningServer, caplog: pytest.LogCaptureFixture, raw: bytes, expect: tuple[int, str] | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="proxydhcp")
    sock = client()
    try:
        sock.sendto(raw, ("127.0.0.1", server.port))
        got = collect(sock, 0.6)
    finally:
        sock.close()
    if expect is None:
        assert got == [], f"expected silence, got {got!r}"
    else:
        assert len(got) == 1, got
        assert error_of(got[0]) == expect
    for data in got:
        err = error_of(data)
        assert err is not None and err[1] in FIXED_MESSAGES, "only fixed texts reach the peer"
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert_still_serving(server)


def test_random_garbage_storm_then_serving(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    """5,000 random and truncated requests from many addresses: no traceback, nothing held, still serving."""
    caplog.set_level(logging.INFO, logger="proxydhcp")
    rng = os.urandom
    socks = [client(f"127.0.1.{i}") for i in range(1, 9)]
    try:
        for i in range(5000):
            kind = i % 4
            if kind == 0:
                data = rng(1 + i % 600)
            elif kind == 1:
                data = b"\0\1" + rng(i % 100)
            elif kind == 2:
                data = rrq(b"big.bin")[: 2 + i % 14]
            else:
                data = b"\0\1" + rng(8).replace(b"\0", b"x") + b"\0octet\0blksize\0" + rng(4) + b"\0"
            socks[i % 8].sendto(data, ("127.0.0.1", server.port))
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.5)
    assert_still_serving(server)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    deadline = time.monotonic() + 2
    while server.server.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.server.active == 0
