"""The request fast paths: the transfer socket pool, the resolve cache, memoised negotiation, the RRQ
decoder and the deferred transfer log fields; each must behave exactly as the slow path it replaces."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxydhcp.errors import MalformedPacket
from proxydhcp.log import JsonFormatter, TextFormatter
from proxydhcp.outcome import TransferOutcome
from proxydhcp.tftp import endpoint, files
from proxydhcp.tftp.endpoint import OwnSockets, SocketPool, TransferStats
from proxydhcp.tftp.options import NEGOTIATION_CACHE_SIZE, Negotiator, negotiate
from proxydhcp.tftp.packet import OAck, Opcode, Request, decode
from proxydhcp.tftp.server import TransferFields
from proxydhcp.untrusted import printable

A = ("127.0.0.1", 40001)
B = ("127.0.0.1", 40002)


# -- SocketPool ------------------------------------------------------------------------------------


def _in_loop(body: object) -> None:
    async def main() -> None:
        await body(asyncio.get_running_loop())  # type: ignore[operator]

    asyncio.run(main())


def test_pool_reuses_a_socket_for_another_client() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        own = OwnSockets()
        pool = SocketPool(loop, own)
        sock, addr = pool.take("127.0.0.1", A)
        assert addr == sock.getsockname() and addr in own.addresses
        pool.give(sock, addr, A)
        assert len(pool) == 1
        again, addr2 = pool.take("127.0.0.1", B)
        assert again is sock and addr2 == addr and len(pool) == 0
        pool.give(again, addr2, B)
        pool.close()
        assert sock.fileno() == -1 and addr not in own.addresses

    _in_loop(body)


def test_pool_never_gives_a_client_the_socket_it_just_used() -> None:
    """The same client TID on the same server port right away: a delayed datagram of the old transfer
    would pass for one of the new one."""

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pool = SocketPool(loop, OwnSockets())
        sock, addr = pool.take("127.0.0.1", A)
        pool.give(sock, addr, A)
        other, other_addr = pool.take("127.0.0.1", A)
        assert other is not sock and other_addr != addr
        pool.give(other, other_addr, A)
        pool.close()

    _in_loop(body)


def test_pool_live_sockets_have_distinct_ports() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pool = SocketPool(loop, OwnSockets(), limit=4)
        taken = [pool.take("127.0.0.1", ("127.0.0.1", 50000 + i)) for i in range(8)]
        assert len({addr for _, addr in taken}) == 8
        for i, (sock, addr) in enumerate(taken):
            pool.give(sock, addr, ("127.0.0.1", 50000 + i))
        assert len(pool) == 4  # the rest closed: the pool is bounded
        assert sum(sock.fileno() == -1 for sock, _ in taken) == 4
        again = [pool.take("127.0.0.1", B) for _ in range(6)]
        assert len({addr for _, addr in again}) == 6
        for sock, addr in again:
            pool.discard(sock, addr)
        pool.close()

    _in_loop(body)


def test_idle_pooled_socket_drops_what_it_receives() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        pool = SocketPool(loop, OwnSockets())
        sock, addr = pool.take("127.0.0.1", A)
        pool.give(sock, addr, A)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
            late.bind(("127.0.0.1", 0))
            for _ in range(3):
                late.sendto(b"\0\4\0\3", addr)
            await asyncio.sleep(0.1)
            late.setblocking(False)
            with pytest.raises(BlockingIOError):
                late.recv(100)  # nothing answered
        taken, _ = pool.take("127.0.0.1", B)
        assert taken is sock
        with pytest.raises(BlockingIOError):
            sock.recv(100)  # nothing left queued for the next transfer
        pool.discard(sock, addr)
        pool.close()

    _in_loop(body)


def test_socket_given_back_after_close_is_closed() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        own = OwnSockets()
        pool = SocketPool(loop, own)
        sock, addr = pool.take("127.0.0.1", A)
        pool.close()
        pool.give(sock, addr, A)
        assert sock.fileno() == -1 and len(pool) == 0 and not own.addresses

    _in_loop(body)


def test_pool_size_default_is_bounded() -> None:
    assert 0 < endpoint.POOL_SIZE <= 1024


# -- ResolveCache ----------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "boot.efi").write_bytes(b"efi")
    (tmp_path / "secret").write_bytes(b"secret")
    return root


def _open_and_remember(cache: files.ResolveCache, root: Path, name: str, now: float) -> os.stat_result:
    fd, st = files.open_regular(files.resolve(cache.root, name))
    os.close(fd)
    cache.remember(name, st, now)
    return st


def test_resolve_cache_hit_is_the_same_file(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root))
    st = _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    hit = cache.stat("sub/boot.efi", 0.5)
    assert hit is not None and files.file_key(hit) == files.file_key(st)
    assert cache.stat("other", 0.5) is None


def test_resolve_cache_expires(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root), ttl=1.0)
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    assert cache.stat("sub/boot.efi", 1.0) is None
    assert len(cache) == 0


def test_resolve_cache_sees_a_removed_file(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root))
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    (root / "sub" / "boot.efi").unlink()
    assert cache.stat("sub/boot.efi", 0.1) is None


def test_resolve_cache_sees_a_replaced_file(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root))
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    (root / "sub" / "new").write_bytes(b"new")
    os.replace(root / "sub" / "new", root / "sub" / "boot.efi")
    assert cache.stat("sub/boot.efi", 0.1) is None


def test_resolve_cache_sees_a_symlink_out_of_the_root(root: Path, tmp_path: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root))
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    (root / "sub" / "boot.efi").unlink()
    (root / "sub" / "boot.efi").symlink_to(tmp_path / "secret")
    assert cache.stat("sub/boot.efi", 0.1) is None
    # ... and a directory of the path swapped for a symlink out of the root
    (root / "sub" / "boot.efi").unlink()
    (root / "sub" / "boot.efi").write_bytes(b"efi")
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    os.rename(root / "sub", tmp_path / "moved")
    (root / "sub").symlink_to(tmp_path / "moved")
    assert cache.stat("sub/boot.efi", 0.1) is None


def test_resolve_cache_never_serves_a_name_through_a_symlink(root: Path) -> None:
    """Such a name is resolved by realpath each time, as before: its target may change."""
    (root / "link").symlink_to(root / "sub" / "boot.efi")
    (root / "dirlink").symlink_to(root / "sub")
    cache = files.ResolveCache(os.path.realpath(root))
    for name in ("link", "dirlink/boot.efi", "sub/../sub/boot.efi", "sub//boot.efi"):
        _open_and_remember(cache, root, name, 0.0)
        assert cache.stat(name, 0.1) is None


def test_resolve_cache_takes_backslashes_and_leading_slashes(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root))
    for name in ("\\sub\\boot.efi", "/sub/boot.efi"):
        st = _open_and_remember(cache, root, name, 0.0)
        hit = cache.stat(name, 0.1)
        assert hit is not None and hit.st_ino == st.st_ino


def test_resolve_cache_sees_a_changed_mode(root: Path) -> None:
    """ctime moves with chmod: a file made unreadable is opened again (and refused, if not root)."""
    cache = files.ResolveCache(os.path.realpath(root))
    time.sleep(0.02)  # ctime has a clock-tick granularity
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    time.sleep(0.02)
    os.chmod(root / "sub" / "boot.efi", 0o000)
    assert cache.stat("sub/boot.efi", 0.1) is None


def test_resolve_cache_sees_changed_content(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root))
    time.sleep(0.02)
    _open_and_remember(cache, root, "sub/boot.efi", 0.0)
    time.sleep(0.02)
    with open(root / "sub" / "boot.efi", "ab") as f:
        f.write(b"more")
    assert cache.stat("sub/boot.efi", 0.1) is None


def test_resolve_cache_is_bounded(root: Path) -> None:
    cache = files.ResolveCache(os.path.realpath(root), limit=3)
    for i in range(10):
        _open_and_remember(cache, root, f"{'/' * i}sub/boot.efi", 0.0)
        assert len(cache) <= 3


# -- Negotiator ------------------------------------------------------------------------------------

OPTION_SETS = [
    (),
    (("tsize", "0"), ("blksize", "1468")),
    (("BLKSIZE", "9000"), ("windowsize", "32"), ("timeout", "3")),
    (("tsize", "x"), ("msftwindow", "31416")),
    (("windowsize", "4"),),
]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("netascii", [False, True])
@pytest.mark.parametrize("mtu", [None, 1500])
def test_negotiator_equals_negotiate(
    options: tuple[tuple[str, str], ...], netascii: bool, mtu: int | None
) -> None:
    negotiator = Negotiator(1468, 16)
    for _ in range(2):  # computed, then memoised
        got, oack = negotiator(options, netascii=netascii, size=4096, mtu=mtu)
        want = negotiate(options, netascii=netascii, size=4096, max_blksize=1468, max_windowsize=16, mtu=mtu)
        assert got == want
        assert oack == (OAck(want.oack).encode() if want.oack else None)


def test_negotiator_memo_is_bounded() -> None:
    negotiator = Negotiator(1468, 16)
    for size in range(NEGOTIATION_CACHE_SIZE * 3):
        negotiator((("tsize", "0"),), netascii=False, size=size)
        assert len(negotiator._memo) <= NEGOTIATION_CACHE_SIZE
    got, _ = negotiator((("tsize", "0"),), netascii=False, size=7)
    assert got.oack == (("tsize", "7"),)


# -- RRQ decoding ----------------------------------------------------------------------------------


def _reference_request(data: bytes) -> Request:
    """The RRQ/WRQ decoding as specified (the straightforward version of packet._decode_request)."""
    fields = [f.decode("utf-8", "surrogateescape") for f in data[2:].split(b"\0")[:-1]]
    if len(fields) < 2:
        raise MalformedPacket("request without NUL-terminated filename and mode")
    if not fields[0]:
        raise MalformedPacket("request with an empty filename")
    options: list[tuple[str, str]] = []
    rest = fields[2:]
    for i in range(0, len(rest) - 1, 2):
        if not rest[i]:
            break
        options.append((rest[i], rest[i + 1]))
    return Request(Opcode(data[1]), fields[0], fields[1], tuple(options))


_piece = st.sampled_from([b"", b"a", b"tsize", b"0", b"blksize", b"\xff\xfe", b"x" * 40, b"octet"])


@given(opcode=st.sampled_from([1, 2]), pieces=st.lists(_piece, max_size=9), tail=st.binary(max_size=3))
def test_request_decoding_matches_reference(opcode: int, pieces: list[bytes], tail: bytes) -> None:
    data = bytes([0, opcode]) + b"".join(p + b"\0" for p in pieces) + tail.replace(b"\0", b"")
    try:
        want: Request | str = _reference_request(data)
    except MalformedPacket as exc:
        want = str(exc)
    try:
        got: object = decode(data)
    except MalformedPacket as exc:
        got = str(exc)
    assert got == want


def test_unknown_opcode_still_refused() -> None:
    for data in (b"\0\7x", b"\1\1x\0octet\0", b"\xff\xff"):
        with pytest.raises(MalformedPacket, match="unknown opcode"):
            decode(data)


# -- deferred log fields ---------------------------------------------------------------------------


@given(
    name=st.text(max_size=20),
    duration=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    outcome=st.sampled_from(
        [
            (TransferOutcome.COMPLETED, ""),
            (TransferOutcome.TIMEOUT, ""),
            (TransferOutcome.FILE_ERROR, "read failed: Input/output error"),
        ]
    ),
    size=st.integers(min_value=0, max_value=2**40),
)
def test_transfer_fields_text_equals_text_pairs(
    name: str, duration: float, outcome: tuple[TransferOutcome, str], size: int
) -> None:
    stats = TransferStats(("10.0.0.7", 2070), name, size, 1468, 4, 2, duration, *outcome)
    fields = TransferFields(stats, printable(name))
    # The deferred fields render as the plain dict would, in both formats.
    for formatter in (TextFormatter, JsonFormatter):
        deferred = formatter.fast_line(1.5, "INFO", "proxydhcp.tftp", "sent", fields)
        assert deferred == formatter.fast_line(1.5, "INFO", "proxydhcp.tftp", "sent", fields.fields())


_RAISE = """
import logging, resource, sys
from proxydhcp.tftp.server import raise_open_files
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
soft, hard = map(int, sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(raise_open_files(int(sys.argv[3])), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("soft", "hard", "need", "limit", "warned"),
    [(256, 4096, 3000, 3000, False), (256, 1024, 3000, 1024, True), (4096, 8192, 3000, 4096, False)],
    ids=["raised", "capped-by-hard", "already-enough"],
)
def test_open_files_limit_is_raised_toward_what_transfers_need(
    soft: int, hard: int, need: int, limit: int, warned: bool
) -> None:
    """Twin sockets double a long transfer's descriptors: a service started with the common soft limit
    of 1024 would run out long before max_transfers (a child process: limits are per process)."""
    out = subprocess.run(
        [sys.executable, "-c", _RAISE, str(soft), str(hard), str(need)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert out.splitlines()[-1] == f"{limit} {limit}"
    assert ("WARNING open files are limited" in out) == warned
