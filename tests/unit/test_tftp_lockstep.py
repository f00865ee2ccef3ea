"""The lockstep fast paths of `endpoint.Transfer` against the general path, datagram for datagram.

One scripted client (in-order ACKs, the OACK's ACK 0, duplicates, stale and never-sent ACKs, a timer
resend and a repeated ACK in backoff, datagrams that are not ACKs, an ERROR, the final ACK) drives the
same transfer three ways: through the connected twin's reader (`_twin_reader`: a closure slicing the
source's region, one writev per block), through `_on_lockstep` on one socket, and through the general
`_on_readable` (on_ack, take_window, view, sendto). Each way must send exactly the same datagrams and
end in the same state, on both event loops, from a cached file and from chunks read from disk (small
chunks, so blocks cross chunk boundaries)."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxydhcp.outcome import TransferOutcome
from proxydhcp.tftp import endpoint, files
from proxydhcp.tftp import transfer as tx
from proxydhcp.tftp.endpoint import Transfer, TransferStats
from proxydhcp.tftp.packet import OAck

BLKSIZE = 24
SIZE = BLKSIZE * 90 + 5  # 91 blocks: over PAIR_MIN_BLOCKS, the last one short
CHUNK = 1000  # blocks 42, 84 cross a chunk boundary
TIMEOUT = 0.05


def _loops() -> list[pytest.param]:
    params = [pytest.param(None, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return params
    return [*params, pytest.param(uvloop.new_event_loop, id="uvloop")]


def ack(n: int) -> bytes:
    return b"\0\4" + (n & 0xFFFF).to_bytes(2, "big")


# A step: bytes to send, "timer" (wait out the deadline, then the transfer's timer), or "wait" (wait out
# a timeout, so that a repeated ACK in backoff may ask for a resend).
Step = bytes | str

COMPLETE_SCRIPT: list[Step] = [
    ack(5),  # before the OACK is acknowledged: not ACK 0, ignored
    ack(0),  # the OACK's: block 1
    ack(0),  # a duplicate: nothing (Sorcerer's Apprentice)
    *[ack(n) for n in range(1, 11)],
    ack(10),  # duplicate
    ack(9),  # stale
    ack(13),  # never sent
    "timer",  # block 11 again, backoff starts
    "wait",
    ack(10),  # repeated in backoff, a timeout after the resend: block 11 at once (RESEND_NOW)
    ack(10),  # again at once: nothing
    *[ack(n) for n in range(11, 50)],  # across the chunk boundary at byte 1000
    b"\0\4\0\x32\0",  # ACK with a trailing byte: malformed, ignored
    b"\0\3\0\x01abc",  # DATA from a reader: ignored
    b"\0",  # too short
    *[ack(n) for n in range(50, 91)],
    ack(91),  # the final ACK: completed
]

ERROR_SCRIPT: list[Step] = [ack(0), *[ack(n) for n in range(1, 70)], b"\0\5\0\0stop\0"]


@dataclass
class Trace:
    received: list[bytes]  # every datagram the client got, in order
    outcome: TransferOutcome | None
    acked: int
    sent: int
    retransmits: int
    twin: bool


def _drain(sock: socket.socket, into: list[bytes]) -> None:
    while True:
        try:
            into.append(sock.recv(65536))
        except BlockingIOError:
            return


async def _run(way: str, source_kind: str, script: list[Step], root: Path) -> Trace:
    loop = asyncio.get_running_loop()
    cache = files.FileCache(budget=SIZE * 4 if source_kind == "memory" else 100)
    source = await files.open_source(str(root), "f.bin", netascii_mode=False, cache=cache)
    assert isinstance(source, files.MemorySource if source_kind == "memory" else files.ChunkedSource)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    sock = endpoint.transfer_socket("127.0.0.1")
    finished: list[TransferStats] = []
    state = tx.ReadTransfer(SIZE, BLKSIZE, oack=True, timeout=TIMEOUT, now=loop.time())
    oack = OAck((("blksize", str(BLKSIZE)), ("tsize", str(SIZE)))).encode()
    transfer = Transfer(
        lambda _t, stats: finished.append(stats),
        loop,
        sock,
        client.getsockname(),
        "f.bin",
        source,
        state,
        oack,
    )
    received: list[bytes] = []
    try:
        transfer.start()
        twin = transfer._peer is not None
        assert twin == (way == "twin")
        # The loop's timer never runs here (no await while a datagram is pending): the script fires it.
        handle = transfer._timer
        assert handle is not None
        handle.cancel()
        reader: Callable[[], None]
        if way == "twin":
            assert transfer._twin_read is not None and transfer._peer is not None
            reader, watched = transfer._twin_read, transfer._peer
        elif way == "one-socket":
            reader, watched = transfer._on_lockstep, sock
        else:
            reader, watched = transfer._on_readable, sock
        server = sock.getsockname()
        for step in script:
            if transfer.done:
                break
            if step in ("timer", "wait"):
                time.sleep(TIMEOUT * 1.5)  # not a timing assertion: past the deadline, whatever the load
                if step == "timer":
                    transfer._on_timer()
                    if transfer._timer is not None:
                        transfer._timer.cancel()
            else:
                assert isinstance(step, bytes)
                client.sendto(step, server)
                # The kernel gives the client's datagrams to the twin when there is one.
                assert select.select([watched], [], [], 2.0)[0], f"{way}: {step!r} did not arrive"
                reader()
            for _ in range(500):  # a block not read yet: the general path fills, then sends
                if not transfer._filling:
                    break
                await asyncio.sleep(0.002)
            assert not transfer._filling
            _drain(client, received)
        select.select([client], [], [], 0.05)
        _drain(client, received)
    finally:
        if not transfer.done:
            transfer.finish(TransferOutcome.ABORTED)
        client.close()
    return Trace(
        received=received,
        outcome=finished[0].outcome if finished else None,
        acked=state.acked,
        sent=state.sent,
        retransmits=state.retransmits,
        twin=twin,
    )


@pytest.mark.parametrize("loop_factory", _loops())
@pytest.mark.parametrize("source_kind", ["memory", "chunked"])
@pytest.mark.parametrize("script", [COMPLETE_SCRIPT, ERROR_SCRIPT], ids=["complete", "client-error"])
def test_lockstep_fast_paths_send_what_the_general_path_sends(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    source_kind: str,
    script: list[Step],
) -> None:
    monkeypatch.setattr(files, "CHUNK", CHUNK)
    data = os.urandom(SIZE)
    (tmp_path / "f.bin").write_bytes(data)
    traces: dict[str, Trace] = {}
    for way in ("general", "one-socket", "twin"):
        if way != "twin":
            monkeypatch.setattr(endpoint, "PAIR_MIN_BLOCKS", 1 << 30)
        else:
            monkeypatch.setattr(endpoint, "PAIR_MIN_BLOCKS", 64)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            traces[way] = runner.run(_run(way, source_kind, script, tmp_path))
    general = traces["general"]
    # The general path itself is right: the OACK, then blocks in order with their bytes.
    assert general.received[0].startswith(b"\0\6")
    blocks = {int.from_bytes(d[2:4], "big"): d[4:] for d in general.received[1:]}
    assert all(d[:2] == b"\0\3" for d in general.received[1:])
    assert all(payload == data[(n - 1) * BLKSIZE : n * BLKSIZE] for n, payload in blocks.items())
    if script is COMPLETE_SCRIPT:
        assert general.outcome is TransferOutcome.COMPLETED and general.acked == 91
        assert general.retransmits == 2  # the timer's resend and the one repeated ACK in backoff
        assert b"".join(blocks[n] for n in range(1, 92)) == data
    else:
        assert general.outcome is TransferOutcome.CLIENT_ERROR and general.acked == 69
    for way in ("one-socket", "twin"):
        fast = traces[way]
        assert fast.received == general.received, way
        assert (fast.outcome, fast.acked, fast.sent, fast.retransmits) == (
            general.outcome,
            general.acked,
            general.sent,
            general.retransmits,
        ), way


@pytest.mark.parametrize("source_kind", ["memory", "chunked"])
def test_region_holds_what_view_gives_and_outlives_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_kind: str
) -> None:
    """`Source.region`: the run of loaded bytes around a span, sliced by the twin's reader instead of a
    view() call per block; None where only view() can answer (not loaded, or across two chunks)."""
    monkeypatch.setattr(files, "CHUNK", CHUNK)
    data = os.urandom(SIZE)
    (tmp_path / "f.bin").write_bytes(data)
    cache = files.FileCache(budget=SIZE * 4 if source_kind == "memory" else 100)

    async def main() -> None:
        source = await files.open_source(str(tmp_path), "f.bin", netascii_mode=False, cache=cache)
        held: list[tuple[int, memoryview]] = []
        for block in range(1, SIZE // BLKSIZE + 2):
            start, end = (block - 1) * BLKSIZE, min(block * BLKSIZE, SIZE)
            found = source.region(start, end)
            if found is None:
                assert source_kind == "chunked"
                crosses = start // CHUNK != (end - 1) // CHUNK
                await source.fill(start, end)
                found = source.region(start, end)
                assert (found is None) == crosses, block
                view = source.view(start, end)
                assert view is not None and bytes(view) == data[start:end]
                if crosses:
                    assert len(view.obj) == end - start  # type: ignore[arg-type]  # the window alone
                    continue
            assert found is not None
            low, region = found
            assert low <= start and end <= low + len(region)
            assert bytes(region[start - low : end - low]) == data[start:end]
            held.append((low, region))
        source.close()
        for low, region in held:  # still readable after the source moved on and closed
            assert bytes(region[:10]) == data[low : low + 10]

    asyncio.run(main())
