"""One bound DHCP socket (interface, logical port 67 or 4011; 547 or 4011 on IPv6) read straight by
the event loop: datagrams drained in batches with `add_reader`, replies held per batch and queued when
the kernel cannot take them, the packet info telling which local address each request was sent to.

`UdpEndpoint` is that socket handling, once for both families; `DhcpEndpoint` (here) adds what IPv4's
IP_PKTINFO means, `service6.Dhcp6Endpoint` what IPv6's IPV6_PKTINFO means. No DHCP parsing here: each
datagram goes to its handler's `handle` (the service, which runs the pipeline).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from ipaddress import IPv4Address
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from proxydhcp.pxe.policy import Receiver
from proxydhcp.serve import sockets, sockets6

__all__ = [
    "ANC_SIZE",
    "RECV_BATCH",
    "RECV_SIZE",
    "SEND_BACKLOG",
    "SEND_BATCH",
    "WARN_INTERVAL",
    "Ancillary",
    "DatagramHandler",
    "DhcpEndpoint",
    "Local",
    "UdpEndpoint",
    "WarningLimiter",
]

# The logger these warnings have always used (admins filter on it), though the code moved here.
log = logging.getLogger("proxydhcp.server")

# Datagrams read per wakeup before the loop gets a turn (TFTP, signals, timers); a DHCP message
# fits in far less than RECV_SIZE (one Ethernet frame; 576 bytes is the minimum a client accepts).
RECV_BATCH = 128
SEND_BATCH = 16  # replies held at most while reading a batch: bounds the latency they add
RECV_SIZE = 65535
# Room for one packet info per datagram: IP_PKTINFO, or on an IPv6 endpoint the larger IPV6_PKTINFO.
ANC_SIZE = socket.CMSG_SPACE(max(sockets.PKTINFO.size, sockets6.IN6_PKTINFO.size))
SEND_BACKLOG = 4096  # replies waiting for a full send buffer; past it they are dropped (clients retry)
_LOCALS_MAX = 256  # distinct packet info values remembered per endpoint
WARN_INTERVAL = 10.0  # seconds: at most one warning per endpoint, kind and errno in that time

# sendmsg ancillary data: [] lets the kernel pick the source address; else IP_PKTINFO naming it.
Ancillary = list[tuple[int, int, bytes]]


class Local(NamedTuple):
    """Whom a request was addressed to: the Receiver its pipeline sees (option 54, siaddr default) and
    the ancillary data that sends the reply from that same address."""

    receiver: Receiver
    ancillary: Ancillary


# A peer: (host, port) on IPv4, (host, port, flowinfo, scope_id) on IPv6, as recvmsg gives it.
_Send = tuple[bytes, tuple[Any, ...], "Ancillary | None"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


IfaceT = TypeVar("IfaceT", bound=_Named)
LocalT = TypeVar("LocalT")
LocalT_contra = TypeVar("LocalT_contra", contravariant=True)


class DatagramHandler(Protocol[LocalT_contra]):
    """What an endpoint hands each datagram to (`service.ProxyDhcpService`, `service6.Dhcp6Service`)
    with its source and Local; it must not raise."""

    def handle(self, endpoint: Any, data: bytes, source: Any, local: LocalT_contra) -> None: ...


class UdpEndpoint(ABC, Generic[IfaceT, LocalT]):
    """One bound socket: (interface, logical port), read straight by the event loop; IPv4's and
    IPv6's, which differ only in what a datagram's packet info means (`set_interface`, `_local`).

    No DatagramProtocol: the loop calls `readable` when the socket has data, and it drains up to
    RECV_BATCH datagrams with recvmsg until EAGAIN, so a storm costs one wakeup per batch, not per
    packet; replies go out on the same socket (so by the receiving interface). A send the kernel
    cannot take now (EAGAIN) waits in a bounded queue for writability.

    Each datagram's packet info (the first ancillary item: IP_PKTINFO or IPV6_PKTINFO, the only one
    the socket asks for) becomes its Local, whom it was addressed to, remembered per distinct value;
    a datagram without one gets `default`.
    """

    PEER = "%s:%d"  # how warnings name a peer (host, port, ...)
    default: LocalT

    def __init__(
        self,
        service: DatagramHandler[LocalT],
        iface: IfaceT,
        port: int,
        sock: socket.socket | None = None,
    ) -> None:
        self.service = service
        self.sock = sock
        self.port = port
        self.warnings = WarningLimiter(log)
        self.set_interface(iface)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[_Send] = collections.deque()
        self._held: list[_Send] | None = None  # replies of the batch being read

    def set_interface(self, iface: IfaceT) -> None:
        """(Re)learn the interface (at start, on reload); subclasses set `default` from it."""
        self.iface = iface
        self._locals: dict[bytes, LocalT] = {}  # packet info bytes → Local: the same few repeat

    @abstractmethod
    def _local(self, info: bytes) -> LocalT:
        """The Local of a datagram whose packet info is `info`."""

    def local_for(self, info: bytes) -> LocalT:
        """The Local of a datagram whose packet info is `info` (memoised: one dict lookup a packet)."""
        local = self._locals.get(info)
        if local is not None:
            return local
        local = self._local(info)
        if len(self._locals) >= _LOCALS_MAX:
            self._locals.clear()
        self._locals[info] = local
        return local

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.sock is not None
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self.readable)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
        self._backlog.clear()
        sock.close()

    @property
    def closed(self) -> bool:
        return self.sock is None

    def readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        recvmsg, handle, locals_, default = sock.recvmsg, self.service.handle, self._locals, self.default
        # Replies are held and sent together after the batch (or every SEND_BATCH): the first one
        # wakes the client, the rest find it awake, instead of a wakeup (and a preemption of this
        # process) per reply.
        held = self._held = []
        try:
            for _ in range(RECV_BATCH):
                try:
                    data, anc, _, addr = recvmsg(RECV_SIZE, ANC_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # a queued socket error (ICMP): not fatal, the next read goes on
                    self.warnings.warn(
                        ("receive", exc.errno), "%s:%d: receive failed: %s", self.iface.name, self.port, exc
                    )
                    continue
                if anc:
                    info = anc[0][2]
                    local = locals_.get(info) or self.local_for(info)
                else:
                    local = default  # no IP_PKTINFO (not enabled on this socket)
                handle(self, data, addr, local)
                if self.sock is None:  # closed by a stop from inside the batch
                    return
                if len(held) >= SEND_BATCH:
                    self._held = None
                    self._send_all(held)
                    held = self._held = []
        finally:
            self._held = None
            self._send_all(held)

    def _send_all(self, held: list[_Send]) -> None:
        for data, dest, ancillary in held:
            self.send(data, dest, ancillary)

    def send(self, data: bytes, dest: tuple[Any, ...], ancillary: Ancillary | None = None) -> None:
        """Send now (held until the end of the batch when called from one), or queue behind earlier
        sends the kernel could not take yet; `ancillary` (Local.ancillary) sets the source address.
        Never raises."""
        if self._held is not None:
            self._held.append((data, dest, ancillary))
            return
        sock = self.sock
        if sock is None:
            return
        if self._backlog:
            self._queue(data, dest, ancillary)
            return
        try:
            _send(sock, data, dest, ancillary)
        except (BlockingIOError, InterruptedError):
            self._queue(data, dest, ancillary)
        except OSError as exc:
            self._send_failed(dest, exc)  # no route to a relay, an unreachable client: not fatal

    def _send_failed(self, dest: tuple[Any, ...], exc: OSError) -> None:
        self.warnings.warn(
            ("send", exc.errno),
            f"%s:%d: send to {self.PEER} failed: %s",
            self.iface.name,
            self.port,
            dest[0],
            dest[1],
            exc,
        )

    def _queue(self, data: bytes, dest: tuple[Any, ...], ancillary: Ancillary | None) -> None:
        if len(self._backlog) >= SEND_BACKLOG:
            self.warnings.warn(
                ("queue", 0),
                f"%s:%d: send queue full, reply to {self.PEER} dropped",
                self.iface.name,
                self.port,
                dest[0],
                dest[1],
            )
            return
        if not self._backlog and self._loop is not None and self.sock is not None:
            self._loop.add_writer(self.sock.fileno(), self._writable)
        self._backlog.append((data, dest, ancillary))

    def _writable(self) -> None:
        sock, backlog = self.sock, self._backlog
        while sock is not None and backlog:
            data, dest, ancillary = backlog[0]
            try:
                _send(sock, data, dest, ancillary)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._send_failed(dest, exc)
            backlog.popleft()
        if sock is not None and self._loop is not None:
            self._loop.remove_writer(sock.fileno())


class DhcpEndpoint(UdpEndpoint[sockets.Interface, Local]):
    """An IPv4 endpoint (interface, logical port 67 or 4011).

    An interface may have several addresses: a request unicast to one of them (a 4011 REQUEST, a
    relay's helper address) is answered as that address, in option 54 and as the IP source (iPXE
    drops a ProxyDHCPACK whose 54 is not the server it asked). The socket's IP_PKTINFO tells each
    datagram's destination; broadcasts get the interface's primary address.
    """

    def set_interface(self, iface: sockets.Interface) -> None:
        """(Re)learn the interface's primary address (at start, on reload)."""
        super().set_interface(iface)
        self.receiver = _receiver(iface)
        self.default = Local(self.receiver, [])  # broadcasts: the primary address, the kernel's source
        self._addresses: dict[str, IPv4Address] = {}  # source text → address: relays and 0.0.0.0 repeat

    def address(self, text: str) -> IPv4Address:
        """A datagram's source address (as recvmsg gives it) as the pipeline takes it; bounded."""
        address = self._addresses.get(text)
        if address is None:
            if len(self._addresses) >= _LOCALS_MAX:
                self._addresses.clear()
            address = self._addresses[text] = IPv4Address(text)
        return address

    def _local(self, info: bytes) -> Local:
        address = sockets.unicast_destination(info)
        if address is None:
            return self.default
        network = self.iface.network
        receiver = (
            self.receiver
            if address == self.receiver.local_ip
            else Receiver(address, network if network is not None and address in network else None)
        )
        return Local(receiver, sockets.pktinfo_source(address))


class WarningLimiter:
    """At most one warning per key every `interval` seconds, so a stream of ICMP errors or a dead
    route cannot flood the log; the next warning that gets through counts those suppressed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = WARN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}  # key → (time of the last warning, suppressed)

    def warn(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` at WARNING unless `key` was warned about less than `interval` ago (then
        count it). Returns whether it was logged."""
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is None and len(self._seen) >= 256:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            msg += " (%d more like it suppressed in the last %.0f s)"
            args = (*args, seen[1], now - seen[0])
        self.logger.warning(msg, *args)
        return True


def _send(sock: socket.socket, data: bytes, dest: tuple[Any, ...], ancillary: Ancillary | None) -> None:
    """One datagram out; `ancillary` (IP_PKTINFO) names the source address, else the kernel picks it."""
    if ancillary:
        sock.sendmsg((data,), ancillary, 0, dest)
    else:
        sock.sendto(data, dest)


def _receiver(iface: sockets.Interface) -> Receiver:
    assert iface.address is not None  # select_interfaces only returns interfaces with an address
    return Receiver(iface.address, iface.network)
