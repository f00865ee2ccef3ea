"""One read transfer's endpoint (RFC 1350 TID): its own UDP socket, its timer, its block source.

The socket is non-blocking and registered with `loop.add_reader`, so an ACK is handled synchronously
in the readiness callback and the next window is sent in the same wakeup, with no coroutine hop and
no transport layer. DATA headers are pre-built, payloads are slices of the source's buffer. Each
transfer has one timer; progress only moves a deadline, and the timer re-arms itself lazily when it
fires early. The decisions (which blocks, when to resend or give up) are `transfer.ReadTransfer`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxydhcp.errors import MalformedPacket
from proxydhcp.tftp import transfer as tx
from proxydhcp.tftp.files import Source
from proxydhcp.tftp.packet import Error, ErrorCode, data_headers, decode

log = logging.getLogger("proxydhcp.tftp")

MAX_DATAGRAM = 65536
DRAIN = 64  # datagrams read per wakeup at most, so one busy socket cannot starve the loop

# TransferStats.outcome values besides "completed", "timed out" and "error: ...":
ABORTED = "aborted by client"  # the client sent ERROR during the transfer
PROBE = "probe"  # ERROR right after the OACK: a tsize probe (UEFI Mtftp4GetInfo, R-62), not a failure


@dataclass
class TransferStats:
    client: tuple[str, int]
    filename: str
    bytes: int
    blksize: int
    windowsize: int
    retransmits: int
    duration: float
    outcome: str

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration / 1e6 if self.duration > 0 else 0.0


def transfer_socket(local: str) -> socket.socket:
    """A fresh non-blocking socket on `local`, port chosen by the kernel: a new TID (RFC 1350)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((local, 0))
    except OSError:
        sock.close()
        raise
    return sock


class Transfer:
    """One read transfer's I/O: its socket, its timer, its source; the decisions are `state`'s."""

    __slots__ = (
        "_filling",
        "_loop",
        "_timer",
        "client",
        "done",
        "filename",
        "oack",
        "on_done",
        "sock",
        "source",
        "started",
        "state",
    )

    def __init__(
        self,
        on_done: Callable[[Transfer, TransferStats], None],
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        client: tuple[str, int],
        filename: str,
        source: Source,
        state: tx.ReadTransfer,
        oack: bytes | None,
    ) -> None:
        self.on_done = on_done
        self._loop = loop
        self.sock = sock
        self.client = client
        self.filename = filename
        self.source = source
        self.state = state
        self.oack = oack
        self.started = time.monotonic()
        self.done = False
        self._filling = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self._send_first()
        self._arm()

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self.state.deadline(), self._on_timer)

    def _send_first(self) -> None:
        if self.oack is not None and self.state.oack_pending:
            self._send(self.oack)
        else:
            self._send_window()

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.client)
        except (BlockingIOError, InterruptedError):
            pass  # lost like any datagram: the timer resends
        except OSError as exc:
            log.debug("send to %s:%d failed: %s", self.client[0], self.client[1], exc)

    def _send_window(self) -> None:
        state = self.state
        first, last = state.take_window()
        blksize = state.blksize
        base = (first - 1) * blksize
        view = self.source.view(base, min(last * blksize, state.size))
        if view is None:
            if self.source.size < state.size:  # a read found the end of file early: it shrank
                log.warning("%r changed during the transfer to %s:%d", self.filename, *self.client)
                self._send(Error.of(ErrorCode.NOT_DEFINED).encode())
                self.finish("error: file changed")
                return
            self._fill(base, min((first - 1 + max(state.windowsize, 1)) * blksize, state.size))
            return
        headers = data_headers()
        sendto = self.sock.sendto
        client = self.client
        offset = 0
        try:
            for block in range(first, last + 1):
                sendto(headers[block & 0xFFFF] + view[offset : offset + blksize], client)
                offset += blksize
        except (BlockingIOError, InterruptedError):
            pass  # the socket buffer is full: the rest of the window goes on the next timeout
        except OSError as exc:
            log.debug("send to %s:%d failed: %s", client[0], client[1], exc)
        finally:
            view.release()

    def _fill(self, start: int, end: int) -> None:
        if self._filling:
            return
        self._filling = True
        task = self._loop.create_task(self.source.fill(start, end))
        task.add_done_callback(self._filled)

    def _filled(self, task: asyncio.Task[None]) -> None:
        self._filling = False
        if self.done:
            return
        if task.cancelled() or task.exception() is not None:
            log.warning(
                "reading %r failed: %s", self.filename, None if task.cancelled() else task.exception()
            )
            self._send(Error.of(ErrorCode.NOT_DEFINED).encode())
            self.finish("error: read failed")
            return
        self._send_window()

    def _on_readable(self) -> None:
        sock = self.sock
        state = self.state
        client = self.client
        for _ in range(DRAIN):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if addr != client:
                self._wrong_tid(addr)
                continue
            if len(data) == 4 and data[1] == 4 and data[0] == 0:  # ACK: the hot path, no decode
                result = state.on_ack((data[2] << 8) | data[3], self._loop.time())
                if result == tx.PROGRESS:
                    self._send_window()
                elif result == tx.COMPLETE:
                    self.finish("completed")
                    return
                continue
            self._other_packet(data)
            if self.done:
                return

    def _wrong_tid(self, addr: tuple[str, int]) -> None:
        log.debug("packet for %s:%d's transfer from %s:%d: unknown TID", *self.client, *addr)
        with contextlib.suppress(OSError):
            self.sock.sendto(Error.of(ErrorCode.UNKNOWN_TID).encode(), addr)

    def _other_packet(self, data: bytes) -> None:
        try:
            packet = decode(data)
        except MalformedPacket as exc:
            log.debug("ignored malformed datagram from %s:%d: %s", *self.client, exc)
            return
        if isinstance(packet, Error):
            log.debug("%s:%d sent ERROR %d %r", *self.client, packet.code, packet.message)
            self.finish(ABORTED)
        else:
            log.debug("ignored %s from %s:%d during a read", type(packet).__name__, *self.client)

    def _on_timer(self) -> None:
        self._timer = None
        if self.done:
            return
        state = self.state
        now = self._loop.time()
        if now < state.deadline():  # progress moved the deadline since the timer was set
            self._arm()
            return
        result = state.on_timeout(now)
        if result == tx.GIVE_UP:
            self.finish("timed out")
            return
        if result == tx.ASSUME_DONE:
            log.debug("%s:%d never sent the final ACK for %s", *self.client, self.filename)
            self.finish("completed")
            return
        self._send_first()
        self._arm()

    def finish(self, outcome: str) -> None:
        if self.done:
            return
        self.done = True
        if outcome == ABORTED and self.state.probe_abort:
            outcome = PROBE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.source.close()
        state = self.state
        sent = state.size if outcome == "completed" else min(state.acked * state.blksize, state.size)
        stats = TransferStats(
            client=self.client,
            filename=self.filename,
            bytes=sent,
            blksize=state.blksize,
            windowsize=state.windowsize,
            retransmits=state.retransmits,
            duration=time.monotonic() - self.started,
            outcome=outcome,
        )
        self.on_done(self, stats)
