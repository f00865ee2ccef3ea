"""The TFTP listener: the port-69 socket, RRQ parsing and refusals, the concurrency caps, and the
dispatch of each accepted read to its own `endpoint.Transfer` (designed for boot storms, R-69).

A request for a cached file starts its transfer synchronously in the readiness callback (no task, no
await); others load the file in a task first. IP_PKTINFO tells which local address an RRQ was sent to
when listening on 0.0.0.0, and the transfer answers from that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import TransferOutcome
from proxydhcp.tftp import transfer as tx
from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.endpoint import (
    DRAIN,
    MAX_DATAGRAM,
    POOL_SIZE,
    OwnSockets,
    SocketPool,
    Transfer,
    TransferStats,
    family_of,
    peer,
    sockaddr,
)
from proxydhcp.tftp.files import (
    FileCache,
    MemorySource,
    ResolveCache,
    Source,
    file_key,
    load_source,
    open_regular,
    resolve,
)
from proxydhcp.tftp.options import Negotiator
from proxydhcp.tftp.packet import (
    BUSY_MESSAGE,
    Error,
    ErrorCode,
    Opcode,
    Request,
    TftpError,
    decode,
)
from proxydhcp.untrusted import printable

log = logging.getLogger("proxydhcp.tftp")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # also the cmsg type (SCM_TIMESTAMPNS)
_TIMESPEC = struct.Struct("@ll")
# Room for IP_PKTINFO (struct in_pktinfo) and the kernel's arrival time (struct timespec).
_ANC_SIZE = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(_TIMESPEC.size)  # in6_pktinfo is 20 bytes
IP_MTU = getattr(socket, "IP_MTU", 14)
_MTU_CACHE_SIZE = 1024


def raise_open_files(need: int) -> int:
    """Raise the soft limit on open files toward `need` (within the hard limit; many distributions
    start services at 1024) and return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.debug("cannot raise the open files limit to %d: %s", target, exc)
            return soft
        soft = target
    if soft < need:
        log.warning(
            "open files are limited to %d by the hard limit, under the %d max_transfers may need", soft, need
        )
    return soft


@dataclass
class ServerStats:
    started: int = 0
    completed: int = 0
    failed: int = 0
    probes: int = 0  # OACK then ERROR: UEFI size probes, not failures
    refused: int = 0  # ERROR sent instead of a transfer
    bytes: int = 0
    retransmits: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class TransferFields:
    """The structured fields of a transfer's log line, rendered only when the log handler writes."""

    __slots__ = ("name", "stats")

    def __init__(self, stats: TransferStats, name: str) -> None:
        self.stats = stats
        self.name = name  # printable(stats.filename)

    def fields(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "client": f"{stats.client[0]}:{stats.client[1]}",
            "file": self.name,
            "bytes": stats.bytes,
            "blksize": stats.blksize,
            "windowsize": stats.windowsize,
            "retransmits": stats.retransmits,
            "duration": round(stats.duration, 4),
            "mbps": round(stats.mb_per_s, 2),
            "outcome": stats.outcome_text,
        }


# A log writer that can write a line without a LogRecord (`log.emit_fast`, which the service and the
# `tftp` command pass in): (logger, level, message, fields) → whether it wrote the line.
Emit = Callable[[logging.Logger, int, str, TransferFields], bool]


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel received the datagram (wall clock, SO_TIMESTAMPNS), if it said."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return None


def _pktinfo_local(ancdata: list[tuple[int, int, bytes]], fallback: str) -> str:
    """The address an RRQ was sent to, from IP_PKTINFO (in_pktinfo: ifindex, spec_dst, addr) or
    IPV6_PKTINFO (in6_pktinfo: addr, ifindex; a link-local one keeps its interface as `%index`)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
            address = ipaddress.IPv6Address(data[:16])
            if address.is_multicast:
                return fallback
            index = int.from_bytes(data[16:20], sys.byteorder)
            return f"{address}%{index}" if address.is_link_local else str(address)
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            addr = data[8:12]
            # A broadcast or multicast RRQ is answered from the interface's own address.
            if 224 <= addr[0] <= 239 or addr[3] == 255:  # 255.255.255.255 included
                return _dotted(data[4:8])
            return _dotted(addr)
    return fallback


_DOTTED: dict[bytes, str] = {}


def _dotted(packed: bytes) -> str:
    """inet_ntoa, memoised: a server sees few local addresses."""
    text = _DOTTED.get(packed)
    if text is None:
        if len(_DOTTED) >= _MTU_CACHE_SIZE:
            _DOTTED.clear()
        text = _DOTTED[packed] = socket.inet_ntoa(packed)
    return text


class TftpServer:
    """Serve files from `config.root`, read-only."""

    def __init__(
        self,
        config: TftpConfig,
        on_transfer: Callable[[TransferStats], None] | None = None,
        *,
        on_start: Callable[[tuple[str, int], str], None] | None = None,
        emit: Emit | None = None,
    ) -> None:
        """`on_start(client, filename)` runs when a transfer begins (after the file opened), and
        `on_transfer(stats)` once when it ends, whatever the outcome. `emit` writes the line of each
        completed transfer when it can (else the logging module does)."""
        self.config = config
        self.emit = emit
        self.on_transfer = on_transfer
        self.on_start = on_start
        self.stats = ServerStats()
        self.cache = FileCache(config.cache_bytes, chunk_budget=config.chunk_bytes)
        self._root = os.path.realpath(config.root)
        self._resolved = ResolveCache(self._root)
        self._negotiate = Negotiator(config.max_blksize, config.max_windowsize)
        self._pool: SocketPool | None = None  # created with the loop, in start()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transfers: set[Transfer] = set()
        self._reserved = 0
        self._per_client: dict[str, int] = {}
        # (client, filename) of every transfer in flight (None: its file is loading), to recognise a
        # retransmitted RRQ whose OACK or first block was lost.
        self._inflight: dict[tuple[tuple[str, int], str], Transfer | None] = {}
        self._own = OwnSockets()
        self._pending: set[asyncio.Task[None]] = set()
        self._mtu: dict[tuple[str, str], int | None] = {}
        self._rbuf = bytearray(MAX_DATAGRAM)  # shared by this server's transfers (one loop)
        self._closing = False

    async def start(self) -> None:
        """Bind the listening socket (OSError on failure) and start serving."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(family_of(self.config.address), socket.SOCK_DGRAM)
        try:
            if sock.family == socket.AF_INET6:
                # `::` serves both families (IPv4 clients appear as ::ffff:a.b.c.d); a specific IPv6
                # address serves IPv6 only, as the kernel decides anyway.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            # No SO_REUSEADDR: another TFTP server (dnsmasq) on the port must be a bind error, not a
            # silent share. SO_REUSEPORT only for our own workers' group.
            if self.config.workers > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with contextlib.suppress(OSError):  # an AF_INET6 socket takes it for its IPv4 clients
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            with contextlib.suppress(OSError):  # arrival times tell a late repeat of an RRQ (_duplicate)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind((self.config.address, self.config.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._pool = SocketPool(self._loop, self._own)
        # Two sockets per long lockstep transfer (endpoint.PAIR_MIN_BLOCKS), a file per chunked one.
        raise_open_files(3 * self.config.max_transfers + POOL_SIZE + 64)
        self._own.listener_port = self.port
        self._own.addresses.add(peer(sock.getsockname()))
        self._loop.add_reader(sock.fileno(), self._on_request)
        log.info("TFTP serving %s on %s:%d", self._root, self.config.address, self.port)

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("server not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def active(self) -> int:
        return self._reserved

    async def close(self, grace: float = 0.0) -> None:
        """Stop accepting; let transfers in flight finish for up to `grace` seconds, then abort them."""
        self._closing = True
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        deadline = time.monotonic() + grace
        while self._reserved and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        for transfer in list(self._transfers):
            transfer.finish(TransferOutcome.ABORTED, "server shutting down")
        if self._pool is not None:
            self._pool.close()

    # -- port 69 ---------------------------------------------------------------------------------

    def _on_request(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(DRAIN):
            try:
                data, ancdata, _flags, client = sock.recvmsg(MAX_DATAGRAM, _ANC_SIZE)
                client = peer(client)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("listener receive error: %s", exc)
                return
            local = _pktinfo_local(ancdata, self.config.address)
            try:
                self._handle_request(data, client, local, _arrival(ancdata))
            except Exception:  # a bug must not kill the listener
                log.exception("unexpected error handling a request from %s:%d", *client)

    def _handle_request(
        self, data: bytes, client: tuple[str, int], local: str, arrived: float | None = None
    ) -> None:
        """One datagram on port 69; `arrived`: when the kernel received it (wall clock), if known."""
        if self._own.owns(client, local):
            log.debug("ignored a datagram from our own socket %s:%d", *client)
            return
        try:
            packet = decode(data)
        except MalformedPacket as exc:
            log.debug("ignored malformed datagram from %s:%d: %s", client[0], client[1], exc)
            return
        if not isinstance(packet, Request):
            log.debug("ignored %s on the request port from %s:%d", type(packet).__name__, *client)
            return
        if packet.opcode is Opcode.WRQ:
            self._refuse(
                local, client, packet.filename, TftpError(ErrorCode.ACCESS_VIOLATION), "write request"
            )
            return
        mode = packet.mode.lower()
        if mode not in ("octet", "netascii"):
            self._refuse(local, client, packet.filename, TftpError(ErrorCode.ILLEGAL_OPERATION), "mode")
            return
        if self._duplicate(client, packet.filename, arrived):  # before the caps: no busy ERROR to a live one
            return
        if self._closing:
            return
        if (
            self._reserved >= self.config.max_transfers
            or self._per_client.get(client[0], 0) >= self.config.max_transfers_per_client
        ):
            self._refuse(
                local, client, packet.filename, TftpError(ErrorCode.NOT_DEFINED, BUSY_MESSAGE), "busy"
            )
            return
        netascii_mode = mode == "netascii"
        assert self._loop is not None
        now = self._loop.time()
        # The storm case: a file requested a moment ago, in the cache, unchanged: no open, no task, no await.
        st: os.stat_result | None = self._resolved.stat(packet.filename, now)
        if st is not None:
            key = file_key(st)
            cached = self.cache.get((*key, 1) if netascii_mode else key)
            if cached is not None:
                self._reserve(client, packet.filename)
                self._begin(packet, client, local, MemorySource(cached), netascii_mode)
                return
        try:
            path = resolve(self._root, packet.filename)
            fd, st = open_regular(path)
        except TftpError as exc:
            self._refuse(local, client, packet.filename, exc, "file")
            return
        self._resolved.remember(packet.filename, st, now)
        self._reserve(client, packet.filename)
        key = file_key(st)
        cached = self.cache.get((*key, 1) if netascii_mode else key)
        if cached is not None:
            os.close(fd)
            self._begin(packet, client, local, MemorySource(cached), netascii_mode)
            return
        task = self._loop.create_task(self._load_then_begin(packet, client, local, fd, st, netascii_mode))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _load_then_begin(
        self,
        request: Request,
        client: tuple[str, int],
        local: str,
        fd: int,
        st: os.stat_result,
        netascii_mode: bool,
    ) -> None:
        try:
            source = await load_source(fd, st, netascii_mode=netascii_mode, cache=self.cache)
        except TftpError as exc:
            self._release(client, request.filename)
            self._refuse(local, client, request.filename, exc, "file")
            return
        except OSError as exc:
            self._release(client, request.filename)
            # An I/O error is no permission problem: code 0 with the fixed text, as on the chunked path
            # (RFC 1350 "Not defined, see error message"; the cause stays in the log, not on the wire).
            log.warning("cannot read %r for %s:%d: %s", request.filename, client[0], client[1], exc)
            self._refuse(local, client, request.filename, TftpError(ErrorCode.NOT_DEFINED), "read")
            return
        except asyncio.CancelledError:
            self._release(client, request.filename)
            raise
        if self._closing:
            source.close()
            self._release(client, request.filename)
            return
        self._begin(request, client, local, source, netascii_mode)

    def _begin(
        self, request: Request, client: tuple[str, int], local: str, source: Source, netascii: bool
    ) -> None:
        assert self._loop is not None and self._pool is not None
        try:
            sock, address = self._pool.take(local, client)
        except OSError as exc:
            source.close()
            self._release(client, request.filename)
            log.warning("cannot open a transfer socket on %s: %s", local, exc)
            return
        negotiated, oack = self._negotiate(
            request.options, netascii=netascii, size=source.size, mtu=self._path_mtu(local, client[0])
        )
        state = tx.ReadTransfer(
            source.size,
            negotiated.blksize,
            negotiated.windowsize,
            oack=bool(negotiated.oack),
            timeout=float(negotiated.timeout) if negotiated.timeout else self.config.timeout,
            give_up=self.config.give_up,
            now=self._loop.time(),
        )
        transfer = Transfer(
            self._finished,
            self._loop,
            sock,
            client,
            request.filename,
            source,
            state,
            oack,
            self._rbuf,
            self._own,
            self._pool,
            address,
        )
        self._transfers.add(transfer)
        self._inflight[(client, request.filename)] = transfer
        self.stats.started += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "RRQ %r from %s:%d mode=%s options=%s -> %s",
                request.filename,
                client[0],
                client[1],
                request.mode,
                request.options,
                negotiated.oack,
            )
        if self.on_start is not None:
            try:
                self.on_start(client, request.filename)
            except Exception:
                log.exception("on_start callback failed")
        transfer.start()

    def _duplicate(self, client: tuple[str, int], filename: str, arrived: float | None = None) -> bool:
        """Whether an RRQ repeats one in flight from the same client address and port (its OACK or first
        block was lost: the running transfer resends it at once). A transfer already under way is
        superseded instead (the client started over), unless the RRQ reached the kernel before that
        transfer's last progress: then it is one of the repeats the client sent while waiting for the
        OACK, late because port 69's queue was long (a flood, a storm), and the transfer goes on."""
        key = (client, filename)
        if key not in self._inflight:
            return False
        running = self._inflight[key]
        if running is None:
            log.debug("ignored a repeated RRQ %r from %s:%d: loading", filename, *client)
            return True
        running.poll()  # an ERROR already queued (a tsize probe's abort) ends it first
        if running.done:
            return False
        if running.state.acked == 0:
            log.debug("repeated RRQ %r from %s:%d: answered by the running transfer", filename, *client)
            running.answer_repeat()
            return True
        if arrived is not None:
            # The arrival on the monotonic clock that transfers use (now minus how long it waited).
            arrived_at = time.monotonic() - max(0.0, time.time() - arrived)
            if arrived_at <= running.state.last_progress:
                log.debug(
                    "ignored a late repeat of RRQ %r from %s:%d: its transfer has moved on since",
                    filename,
                    *client,
                )
                return True
        running.finish(
            TransferOutcome.SUPERSEDED, "superseded by a new request"
        )  # no ERROR: it would go to the new one
        return False

    def _reserve(self, client: tuple[str, int], filename: str) -> None:
        self._reserved += 1
        self._per_client[client[0]] = self._per_client.get(client[0], 0) + 1
        self._inflight[(client, filename)] = None

    def _release(self, client: tuple[str, int], filename: str) -> None:
        self._reserved -= 1
        ip = client[0]
        left = self._per_client.get(ip, 1) - 1
        if left > 0:
            self._per_client[ip] = left
        else:
            self._per_client.pop(ip, None)
        self._inflight.pop((client, filename), None)

    def _refuse(self, local: str, client: tuple[str, int], name: str, exc: TftpError, why: str) -> None:
        """Answer with an ERROR from a fresh TID, as a transfer would (R-60)."""
        self.stats.refused += 1
        log.info(
            "refused %r from %s:%d: %s (%s)",
            name,
            client[0],
            client[1],
            exc.message,
            why,
            extra={
                "fields": {
                    "client": f"{client[0]}:{client[1]}",
                    "file": printable(name),
                    "error": int(exc.code),
                }
            },
        )
        if self._pool is None:
            return
        try:
            sock, address = self._pool.take(local, client)
        except OSError as err:
            log.debug("cannot send ERROR to %s:%d: %s", client[0], client[1], err)
            return
        try:
            sock.sendto(Error(exc.code, exc.message).encode(), sockaddr(client))
        except OSError as err:
            log.debug("cannot send ERROR to %s:%d: %s", client[0], client[1], err)
        self._pool.give(sock, address, client)

    def _path_mtu(self, local: str, client: str) -> int | None:
        """MTU of the route to the client (IP_MTU on a connected socket), cached per address pair."""
        key = (local, client)
        if key in self._mtu:
            return self._mtu[key]
        mtu: int | None
        try:
            family = family_of(client)
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                if local not in ("0.0.0.0", "::"):
                    probe.bind(sockaddr((local, 0)))
                probe.connect(sockaddr((client, 9)))
                if family == socket.AF_INET:
                    mtu = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
                else:
                    # Negotiation takes 32 bytes of IPv4 + UDP + TFTP headers off; IPv6's are 20 more.
                    mtu = probe.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) - 20
        except OSError:
            mtu = None
        if len(self._mtu) >= _MTU_CACHE_SIZE:
            self._mtu.clear()
        self._mtu[key] = mtu
        return mtu

    def _finished(self, transfer: Transfer, stats: TransferStats) -> None:
        self._transfers.discard(transfer)
        self._release(stats.client, stats.filename)
        s = self.stats
        s.bytes += stats.bytes
        s.retransmits += stats.retransmits
        s.outcomes[stats.outcome_text] = s.outcomes.get(stats.outcome_text, 0) + 1
        name = printable(stats.filename)  # the text log must not take a newline from the client
        if stats.outcome is TransferOutcome.COMPLETED:
            s.completed += 1
            if log.isEnabledFor(logging.INFO):  # the storm's common line: no LogRecord when possible
                fields = TransferFields(stats, name)  # formatted when the log handler writes
                msg = f"sent {name} to {stats.client[0]}:{stats.client[1]}"
                if self.emit is None or not self.emit(log, logging.INFO, msg, fields):
                    log.info("sent %s to %s:%d", name, *stats.client, extra={"fields": fields.fields()})
        elif stats.outcome is TransferOutcome.PROBE:
            s.probes += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "size probe of %s by %s:%d",
                    name,
                    *stats.client,
                    extra={"fields": TransferFields(stats, name).fields()},
                )
        else:
            s.failed += 1
            failed = TransferFields(stats, name).fields()
            message = "transfer of %s to %s:%d failed: %s"
            log.log(
                stats.outcome.level,
                message,
                name,
                *stats.client,
                stats.outcome_text,
                extra={"fields": failed},
            )
        if self.on_transfer is not None:
            try:
                self.on_transfer(stats)
            except Exception:
                log.exception("on_transfer callback failed")
