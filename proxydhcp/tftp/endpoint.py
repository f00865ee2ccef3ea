"""One read transfer's endpoint (RFC 1350 TID): its own UDP socket, its timer, its block source.

The socket is non-blocking and registered with `loop.add_reader`, so an ACK is handled synchronously
in the readiness callback and the next window is sent in the same wakeup, with no coroutine hop and
no transport layer. Each wakeup reads one datagram into a shared buffer: readiness is level-triggered,
so a second queued datagram wakes us again, and a client sends one ACK per window, so trying a second
read would mostly cost a failed syscall and a BlockingIOError. DATA headers are pre-built, payloads are
slices of the source's buffer; a window goes out as one UDP GSO send (a UDP_SEGMENT cmsg: the
kernel cuts it into datagrams) where the kernel and the route allow it, else block by block. Each
transfer has one timer; progress only moves a deadline, and the timer re-arms itself lazily when it
fires early. A long lockstep transfer also gets a connected twin socket on its port for its client's
datagrams (`Transfer._pair`), read by a closure (`Transfer._twin_reader`) that slices each block out of
the source's loaded region and sends header and payload with one writev. The decisions (which blocks,
when to resend or give up) are `transfer.ReadTransfer`'s: one `ack_next` call per lockstep ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import TransferOutcome
from proxydhcp.tftp import transfer as tx
from proxydhcp.tftp.files import Source
from proxydhcp.tftp.packet import Error, ErrorCode, data_headers, decode
from proxydhcp.tftp.transfer import COMPLETE, PROGRESS, RESEND_NOW

log = logging.getLogger("proxydhcp.tftp")

MAX_DATAGRAM = 65536
DRAIN = 64  # RRQs the listener reads per wakeup at most, so a flood cannot starve the transfers

_HEADERS = data_headers()
_OPCODE_BLOCK = struct.Struct("!HH")  # an ACK: opcode 4, block number

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS (Linux 4.18+)
GSO_MAX_BYTES = 65000  # one send is one IP packet before segmentation: under 64 KiB
# Linux: non-blocking from socket(2) on, no fcntl call per transfer.
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_SOCK_TYPE = socket.SOCK_DGRAM | _NONBLOCK | getattr(socket, "SOCK_CLOEXEC", 0)
_NOT_SENT = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOBUFS)

# A lockstep transfer of this many blocks or more gets a connected twin socket (see `Transfer._pair`).
PAIR_MIN_BLOCKS = 64
SO_REUSEPORT = getattr(socket, "SO_REUSEPORT", 15)

TID_ERROR_INTERVAL = 1.0  # seconds between two ERROR 5 replies of one transfer, at least
REPEAT_INTERVAL = 0.5  # seconds between two answers to a repeated RRQ, at least


class OwnSockets:
    """The addresses of this server's own sockets (listener and transfers): never answered, so that a
    spoofed source cannot make the server talk to itself in a loop."""

    __slots__ = ("addresses", "listener_port")

    def __init__(self) -> None:
        self.addresses: set[tuple[str, int]] = set()
        self.listener_port = 0

    def owns(self, addr: tuple[str, int], local: str) -> bool:
        """Whether `addr`, the source of a datagram received on address `local`, is one of ours."""
        return addr in self.addresses or (addr[1] == self.listener_port and addr[0] == local)


@dataclass
class TransferStats:
    client: tuple[str, int]
    filename: str
    bytes: int
    blksize: int
    windowsize: int
    retransmits: int
    duration: float
    outcome: TransferOutcome
    detail: str = ""  # what the outcome's text names (the read error)

    @property
    def outcome_text(self) -> str:
        return self.outcome.describe(self.detail)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration / 1e6 if self.duration > 0 else 0.0


def peer(addr: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    """A socket address as (host, port): an IPv6 one (host, port, flowinfo, scope_id) keeps its scope
    in the host text (`fe80::1%3`), which sendto and bind take back. Every client address in this
    package has this form, so IPv4 and IPv6 transfers compare, key and log them alike."""
    if len(addr) == 2:
        return addr
    scope = addr[3]
    return (f"{addr[0]}%{scope}" if scope else addr[0]), addr[1]


def sockaddr(address: tuple[str, int]) -> tuple[str, int] | tuple[str, int, int, int]:
    """`peer`'s form back to what bind/sendto/connect need: CPython drops a `%scope` in the host text
    of a 2-tuple, so a scoped (link-local) address becomes (host, port, 0, scope)."""
    host = address[0]
    if "%" not in host:
        return address
    bare, _, scope = host.partition("%")
    return bare, address[1], 0, int(scope) if scope.isdigit() else socket.if_nametoindex(scope)


def _peer_recv_into(
    recv_into: Callable[[bytearray], tuple[int, tuple[str, int]]],
) -> Callable[[bytearray], tuple[int, tuple[str, int]]]:
    def recv(buf: bytearray) -> tuple[int, tuple[str, int]]:
        n, addr = recv_into(buf)
        return n, peer(addr)

    return recv


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def transfer_socket(local: str) -> socket.socket:
    """A fresh non-blocking socket on `local`, port chosen by the kernel: a new TID (RFC 1350)."""
    sock = socket.socket(family_of(local), _SOCK_TYPE)
    try:
        if not _NONBLOCK:
            sock.setblocking(False)
        sock.bind(sockaddr((local, 0)))
    except OSError:
        sock.close()
        raise
    return sock


POOL_SIZE = 64  # idle transfer sockets a server keeps bound for the next transfers, at most
_SINK = bytearray(1)  # an idle pooled socket's datagrams are read into this and dropped


def _drop_datagrams(sock: socket.socket) -> None:
    """An idle pooled socket's reader: what reaches it (a late ACK of its last transfer) is dropped."""
    for _ in range(DRAIN):
        try:
            sock.recv_into(_SINK)
        except OSError:
            return


class SocketPool:
    """Transfer sockets kept bound and registered with the loop between transfers: a small-file request
    then costs no socket(), bind(), getsockname(), poll registration or close (a third of its system
    calls). A socket is live in one transfer at a time, so every live transfer still has a port of its
    own (its TID, RFC 1350). The idle socket taken is the one idle longest, and never for the client
    address and port it last served: a delayed datagram of a finished transfer cannot pass for one of a
    new transfer with the same client TID. Pooled sockets stay in `own` (they are the server's)."""

    __slots__ = ("_closed", "_count", "_idle", "_limit", "_loop", "_own")

    def __init__(self, loop: asyncio.AbstractEventLoop, own: OwnSockets, limit: int = POOL_SIZE) -> None:
        self._loop = loop
        self._own = own
        self._limit = limit
        self._idle: dict[str, deque[tuple[socket.socket, tuple[str, int], tuple[str, int]]]] = {}
        self._count = 0
        self._closed = False

    def __len__(self) -> int:
        return self._count

    def take(self, local: str, client: tuple[str, int]) -> tuple[socket.socket, tuple[str, int]]:
        """A socket on address `local` for a transfer to `client`, and its address (OSError if a new
        one cannot be bound). The caller owns it until `give` or `discard`."""
        idle = self._idle.get(local)
        if idle and idle[0][2] != client:
            sock, addr, _ = idle.popleft()
            self._count -= 1
            return sock, addr
        sock = transfer_socket(local)
        bound = peer(sock.getsockname())
        self._own.addresses.add(bound)
        return sock, bound

    def give(self, sock: socket.socket, addr: tuple[str, int], client: tuple[str, int]) -> None:
        """Take back a socket whose transfer (last to `client`) is over, or close it if the pool is full."""
        if self._closed or self._count >= self._limit or sock.fileno() < 0:
            self.discard(sock, addr)
            return
        try:
            self._loop.add_reader(sock.fileno(), _drop_datagrams, sock)  # replaces the transfer's reader
        except Exception:
            self.discard(sock, addr)
            return
        idle = self._idle.get(addr[0])
        if idle is None:
            idle = self._idle[addr[0]] = deque()
        idle.append((sock, addr, client))
        self._count += 1

    def discard(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        """Close a socket for good."""
        if sock.fileno() >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(sock.fileno())
        sock.close()
        self._own.addresses.discard(addr)

    def close(self) -> None:
        """Close every idle socket; sockets given back later are closed at once."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                sock, addr, _ = idle.popleft()
                self.discard(sock, addr)
        self._idle.clear()
        self._count = 0


class Transfer:
    """One read transfer's I/O: its socket, its timer, its source; the decisions are `state`'s."""

    __slots__ = (
        "_dest",
        "_filling",
        "_gso",
        "_gso_cmsg",
        "_loop",
        "_now",
        "_own",
        "_peer",
        "_rbuf",
        "_recv_into",
        "_repeat_at",
        "_sendto",
        "_tid_error_at",
        "_timer",
        "_twin_read",
        "client",
        "done",
        "filename",
        "local",
        "oack",
        "on_done",
        "pool",
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
        rbuf: bytearray | None = None,
        own: OwnSockets | None = None,
        pool: SocketPool | None = None,
        local: tuple[str, int] | None = None,
    ) -> None:
        """`rbuf` (MAX_DATAGRAM bytes) may be shared by the transfers of one event loop: it runs one
        callback at a time, and a datagram is consumed or copied out before the callback returns.
        `own`: the server's sockets, which this transfer never answers. `pool`: where the socket goes
        back when the transfer is over (else it is closed); `local`: its address, if known."""
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
        self._gso = 0  # blocks per GSO send; 0: block by block
        self._gso_cmsg: list[tuple[int, int, bytes]] = []
        self._rbuf = rbuf if rbuf is not None else bytearray(MAX_DATAGRAM)
        self._own = own if own is not None else OwnSockets()
        self._tid_error_at = -TID_ERROR_INTERVAL
        self._repeat_at = -REPEAT_INTERVAL
        self.pool = pool
        self.local: tuple[str, int] = local if local is not None else peer(sock.getsockname())
        # Bound once: the lockstep path runs these once per block.
        self._recv_into = (
            sock.recvfrom_into if sock.family == socket.AF_INET else _peer_recv_into(sock.recvfrom_into)
        )
        self._sendto = sock.sendto
        self._dest = sockaddr(client)  # what sendto takes (self.client is the compared, logged form)
        self._now = loop.time
        self._peer: socket.socket | None = None
        self._twin_read: Callable[[], None] | None = None

    def start(self) -> None:
        state = self.state
        if state.windowsize > 1:
            self._gso = self._enable_gso(state.blksize + 4)
            reader = self._on_readable
        elif state.last_block >= PAIR_MIN_BLOCKS and self._pair():
            reader = self._on_readable  # strangers, and the client's datagrams if the kernel sends them here
        else:
            reader = self._on_lockstep
        if self.done:  # an ERROR the twin took before its connect (see _pair)
            return
        self._loop.add_reader(self.sock.fileno(), reader)
        self._send_first()
        self._arm()

    def _pair(self) -> bool:
        """Open a twin of the transfer socket: same address and port (SO_REUSEPORT, same user only), but
        connected to the client. Linux delivers the client's datagrams to the connected twin (a
        connected socket outscores an unconnected one), which reads and sends them with recv_into and
        send: no address to convert or compare per block (lockstep bench: 0.89x -> 0.92x tftpd-hpa).
        Everything else reaches the unconnected socket, which still answers a stranger with ERROR 5,
        where a lone connected socket would leave the kernel to answer with ICMP. False, and no twin,
        where the kernel refuses (then the transfer socket does it all, as for a short transfer)."""
        twin = socket.socket(self.sock.family, _SOCK_TYPE)
        try:
            if not _NONBLOCK:
                twin.setblocking(False)
            # Set on the transfer socket after its bind: an autobind with SO_REUSEPORT could be given
            # a port another socket of ours holds.
            self.sock.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
            twin.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
            twin.bind(sockaddr(self.local))
            twin.connect(self._dest)
            self._twin_read = self._twin_reader(twin)
            self._loop.add_reader(twin.fileno(), self._twin_read)
        except OSError as exc:
            log.debug("no connected twin for the transfer to %s:%d: %s", *self.client, exc)
            twin.close()
            return False
        self._peer = twin
        # Between its bind and its connect the twin could take anybody's datagram: those go the
        # checked way.
        buf = self._rbuf
        for _ in range(DRAIN):
            try:
                n, addr = twin.recvfrom_into(buf)
            except OSError:
                break
            self._on_datagram(buf, n, peer(addr))
        return True

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self.state.deadline(), self._on_timer)

    def _send_first(self) -> None:
        if self.oack is not None and self.state.oack_pending:
            self._send(self.oack)
        else:
            self._send_window()

    def answer_repeat(self) -> None:
        """The client sent its RRQ again before acknowledging anything: our OACK or first block was
        lost. Resend it now rather than at the timer, whose backoff can outlast the client's patience
        under load; one packet at most per REPEAT_INTERVAL, so repeated RRQs cannot amplify."""
        now = self._now()
        if self.done or now - self._repeat_at < REPEAT_INTERVAL:
            return
        if self.oack is not None and not self.state.oack_pending:
            return  # the client acknowledged our OACK: its repeat is not about a lost answer
        self._repeat_at = now
        self.state.retransmits += 1
        self._send_first()

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self._dest)
        except (BlockingIOError, InterruptedError):
            pass  # lost like any datagram: the timer resends
        except OSError as exc:
            log.debug("send to %s:%d failed: %s", self.client[0], self.client[1], exc)

    def _enable_gso(self, segment: int) -> int:
        """Blocks per GSO send for `segment`-byte datagrams (0: not worth it). The segment size goes
        with each window send, not on the socket: an OACK or ERROR longer than a tiny block must
        not be cut up."""
        per_send = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // segment)
        if per_send < 2:
            return 0
        self._gso_cmsg = [(SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, sys.byteorder))]
        return per_send

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
                self.finish(TransferOutcome.FILE_ERROR, "file changed")
                return
            self._fill(base, min((first - 1 + max(state.windowsize, 1)) * blksize, state.size))
            return
        client = self._dest
        try:
            if first == last:  # lockstep: the common case
                self._sendto(_HEADERS[first & 0xFFFF] + view, client)
            elif self._gso:
                self._send_gso(view, first, last, blksize)
            else:
                self._send_blocks(view, first, last, blksize)
        except OSError as exc:
            if exc.errno not in _NOT_SENT:  # a full buffer loses the rest: the timer resends
                log.debug("send to %s:%d failed: %s", client[0], client[1], exc)
        finally:
            view.release()

    def _send_blocks(self, view: memoryview, first: int, last: int, blksize: int) -> None:
        sendto = self.sock.sendto
        client = self._dest
        offset = 0
        for block in range(first, last + 1):
            sendto(_HEADERS[block & 0xFFFF] + view[offset : offset + blksize], client)
            offset += blksize

    def _send_gso(self, view: memoryview, first: int, last: int, blksize: int) -> None:
        """The window as header/payload pairs gathered into GSO sends of `_gso` datagrams each; every
        datagram but the last is exactly blksize + 4 bytes, the kernel's segment size."""
        sendmsg = self.sock.sendmsg
        client = self._dest
        per_send = self._gso
        cmsg = self._gso_cmsg
        block = first
        while block <= last:
            end = min(block + per_send - 1, last)
            iov: list[bytes | memoryview] = []
            offset = (block - first) * blksize
            for n in range(block, end + 1):
                iov.append(_HEADERS[n & 0xFFFF])
                iov.append(view[offset : offset + blksize])
                offset += blksize
            try:
                sendmsg(iov, cmsg, 0, client)
            except OSError as exc:
                if exc.errno in _NOT_SENT:
                    raise
                # No GSO here (old kernel, no checksum offload, segment over the MTU...): plain sends.
                log.debug("GSO send to %s:%d failed (%s): sending block by block", *client, exc)
                self._gso = 0
                self._send_blocks(view[(block - first) * blksize :], block, last, blksize)
                return
            finally:
                iov.clear()
            block = end + 1

    def _fill(self, start: int, end: int) -> None:
        if self._filling:
            return
        self._filling = True
        task = self._loop.create_task(self.source.fill(start, end))
        task.add_done_callback(self._filled)

    def _filled(self, task: asyncio.Task[None]) -> None:
        self._filling = False
        # Retrieved before anything else: a read failing after an abort must not log "never retrieved".
        failure = None if task.cancelled() else task.exception()
        if self.done:
            return
        if task.cancelled() or failure is not None:
            # The cause goes into the outcome: the listener's one line per transfer reports it.
            cause = "cancelled" if task.cancelled() else _describe(failure)
            self._send(Error.of(ErrorCode.NOT_DEFINED).encode())
            self.finish(TransferOutcome.FILE_ERROR, f"read failed: {cause}")
            return
        self._send_window()

    def poll(self) -> None:
        """Handle the datagrams already queued on the socket, now (bounded)."""
        for _ in range(DRAIN):
            if self.done:
                return
            sockets = [self.sock] if self._peer is None else [self.sock, self._peer]
            ready = select.select(sockets, [], [], 0)[0]
            if not ready:
                return
            if self._peer in ready and self._twin_read is not None:
                self._twin_read()
            else:
                self._on_readable()

    def _on_lockstep(self) -> None:
        """The reader of a windowsize-1 transfer without a twin, where a stranger's datagram gets
        ERROR 5. An ACK goes through the transfer state in one call (ReadTransfer.ack_next: the ACK
        rule and take_window) and its one next block straight out, without the window loop; anything
        else the general way."""
        buf = self._rbuf
        try:
            n, addr = self._recv_into(buf)
        except OSError:
            return
        if addr != self.client:
            self._stray(addr, buf[1] if n >= 2 and buf[0] == 0 else -1)
            return
        if n != 4 or buf[1] != 4 or buf[0]:
            self._on_datagram(buf, n, self.client)
            return
        result, block, _, start, end = self.state.ack_next((buf[2] << 8) | buf[3], self._now())
        if result != PROGRESS:
            if result == COMPLETE:
                self.finish(TransferOutcome.COMPLETED)
            elif result == RESEND_NOW:  # a repeated ACK in backoff (ReadTransfer)
                self._send_window()
            return  # IGNORED: a duplicate (Sorcerer's Apprentice) or a block never sent
        view = self.source.view(start, end)  # windowsize 1: the one block after the ACK
        if view is None:  # not read yet: the general path waits for it
            self._send_window()
            return
        try:
            self._sendto(_HEADERS[block & 0xFFFF] + view, self._dest)
        except OSError as exc:
            if exc.errno not in _NOT_SENT:
                log.debug("send to %s:%d failed: %s", *self.client, exc)

    def _twin_reader(self, twin: socket.socket) -> Callable[[], None]:
        """The reader of the connected twin: `_on_lockstep`'s work for a socket only the client reaches,
        as a closure over what it uses per block (local names, not attribute lookups). Each block's
        bytes are sliced out of the source's current region (one chunk, or the whole cached file)
        without a call into the source until a block falls outside it, and header and payload go out in
        one writev (one datagram, no concatenated copy of the block). The result of each step is the
        general path's: tests/unit/test_tftp_fastpaths.py drives both with the same datagrams."""
        fd = twin.fileno()
        buf = self._rbuf
        recv_into = twin.recv_into
        state = self.state
        ack_next = state.ack_next
        now = self._now
        source = self.source
        headers = _HEADERS
        writev = os.writev
        unpack = _OPCODE_BLOCK.unpack_from
        low = high = 0  # the region: file bytes [low, high) are region[0 : high - low]
        region = memoryview(b"")

        def on_twin_readable() -> None:
            nonlocal low, high, region
            try:
                n = recv_into(buf)
            except OSError:
                return
            opcode, number = unpack(buf)
            if n != 4 or opcode != 4:  # not an ACK: the general path (an ERROR ends the transfer)
                self._on_datagram(buf, n, self.client)
                return
            result, block, _, start, end = ack_next(number, now())
            if result != PROGRESS:
                if result == COMPLETE:
                    region = memoryview(b"")
                    self.finish(TransferOutcome.COMPLETED)
                elif result == RESEND_NOW:  # a repeated ACK in backoff (ReadTransfer)
                    self._send_window()
                return  # IGNORED: a duplicate (Sorcerer's Apprentice) or a block never sent
            if start < low or end > high:
                found = source.region(start, end)
                if found is None:  # not read yet, or across two chunks: the general path
                    self._send_window()
                    return
                low, region = found
                high = low + len(region)
            try:
                writev(fd, (headers[block & 0xFFFF], region[start - low : end - low]))
            except OSError as exc:
                if exc.errno not in _NOT_SENT:
                    log.debug("send to %s:%d failed: %s", *self.client, exc)

        return on_twin_readable

    def _on_readable(self) -> None:
        buf = self._rbuf
        try:
            n, addr = self._recv_into(buf)
        except OSError:  # nothing queued after all, or a socket error: nothing to answer
            return
        self._on_datagram(buf, n, addr)

    def _on_datagram(self, buf: bytearray, n: int, addr: tuple[str, int]) -> None:
        if addr != self.client:
            self._stray(addr, buf[1] if n >= 2 and buf[0] == 0 else -1)
            return
        if n == 4 and buf[1] == 4 and buf[0] == 0:  # ACK: the hot path, no decode
            result = self.state.on_ack((buf[2] << 8) | buf[3], self._now())
            if result in (PROGRESS, RESEND_NOW):
                self._send_window()
            elif result == COMPLETE:
                self.finish(TransferOutcome.COMPLETED)
            return
        self._other_packet(bytes(buf[:n]))

    def _stray(self, addr: tuple[str, int], opcode: int) -> None:
        """A datagram from another TID: ERROR 5 (R-60), but never in answer to an ERROR (RFC 1350: ERRORs
        are not answered; two servers would bounce them forever), never to one of our own sockets, and
        at most once per TID_ERROR_INTERVAL."""
        if opcode == 5 or self._own.owns(addr, self.local[0]):
            log.debug(
                "ignored %s from %s:%d for %s:%d's transfer",
                "ERROR" if opcode == 5 else "packet",
                *addr,
                *self.client,
            )
            return
        now = self._now()
        if now - self._tid_error_at < TID_ERROR_INTERVAL:
            return
        self._tid_error_at = now
        log.debug("packet for %s:%d's transfer from %s:%d: unknown TID", *self.client, *addr)
        with contextlib.suppress(OSError):
            self.sock.sendto(Error.of(ErrorCode.UNKNOWN_TID).encode(), sockaddr(addr))

    def _other_packet(self, data: bytes) -> None:
        try:
            packet = decode(data)
        except MalformedPacket as exc:
            log.debug("ignored malformed datagram from %s:%d: %s", *self.client, exc)
            return
        if isinstance(packet, Error):
            log.debug("%s:%d sent ERROR %d %r", *self.client, packet.code, packet.message)
            self.finish(TransferOutcome.CLIENT_ERROR)
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
            self.finish(TransferOutcome.TIMEOUT)
            return
        if result == tx.ASSUME_DONE:
            log.debug("%s:%d never sent the final ACK for %r", *self.client, self.filename)
            self.finish(TransferOutcome.COMPLETED)
            return
        self._send_first()
        self._arm()

    def finish(self, outcome: TransferOutcome, detail: str = "") -> None:
        if self.done:
            return
        self.done = True
        if outcome is TransferOutcome.CLIENT_ERROR and self.state.probe_abort:
            outcome = TransferOutcome.PROBE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._peer is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._peer.fileno())
            self._peer.close()
            self._peer = self._twin_read = None
        if self.pool is not None:
            self.pool.give(self.sock, self.local, self.client)
        else:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self.source.close()
        state = self.state
        sent = (
            state.size
            if outcome is TransferOutcome.COMPLETED
            else min(state.acked * state.blksize, state.size)
        )
        stats = TransferStats(
            client=self.client,
            filename=self.filename,
            bytes=sent,
            blksize=state.blksize,
            windowsize=state.windowsize,
            retransmits=state.retransmits,
            duration=time.monotonic() - self.started,
            outcome=outcome,
            detail=detail,
        )
        self.on_done(self, stats)


def _describe(exc: BaseException | None) -> str:
    """An OSError's text without its errno number (`Input/output error`), else the exception's."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
