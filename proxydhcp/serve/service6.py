"""The DHCPv6 side of `serve`: one endpoint per (interface, 547 or 4011) on IPv6, each datagram through
`pxe6.pipeline.run6` and logged as one `events.DecisionRecord` (`record6`), as on IPv4.

Started by `serve.service.ProxyDhcpService` when an IPv6 prefix is enabled; it reads the service's current
settings on every datagram, so SIGHUP reloads apply here too. No per-client state: a flood of
Solicits from any number of DUIDs costs one pipeline run each and no memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network

from proxydhcp import events
from proxydhcp.config import Settings
from proxydhcp.pxe6.classify import DHCP6_PORT, PXE6_PORT
from proxydhcp.pxe6.pipeline import Answered6, Source6, record6, run6, source_text
from proxydhcp.pxe6.policy import Receiver6, interface_addresses6
from proxydhcp.serve import sockets6
from proxydhcp.serve.endpoint import RECV_BATCH, RECV_SIZE, SEND_BACKLOG, Ancillary, WarningLimiter
from proxydhcp.serve.sockets import InterfaceError

log = logging.getLogger("proxydhcp.server")

REFRESH_INTERVAL = 2.0  # seconds between re-reads of addresses while an interface has no global one
ANC_SIZE = socket.CMSG_SPACE(sockets6.IN6_PKTINFO.size)


def ipv6_prefixes(settings: Settings) -> list[IPv6Network]:
    return [s.cidr for s in settings.subnet if isinstance(s.cidr, IPv6Network)]


class Dhcp6Endpoint:
    """One bound AF_INET6 socket (interface, logical port 547 or 4011), read by the loop in batches."""

    def __init__(
        self, owner: Dhcp6Service, iface: sockets6.Interface6, port: int, sock: socket.socket
    ) -> None:
        self.owner = owner
        self.port = port
        self.sock: socket.socket | None = sock
        self.warnings = WarningLimiter(log)
        self.set_interface(iface)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[tuple[bytes, Source6, Ancillary]] = collections.deque()

    def set_interface(self, iface: sockets6.Interface6) -> None:
        self.iface = iface
        self.receiver = Receiver6(iface.name, interface_addresses6(iface.addresses))

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

    def readable(self) -> None:
        for _ in range(RECV_BATCH):
            sock = self.sock
            if sock is None:
                return
            try:
                data, anc, _, addr = sock.recvmsg(RECV_SIZE, ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.warnings.warn(
                    ("receive", exc.errno), "%s:%d: receive failed: %s", self.iface.name, self.port, exc
                )
                continue
            self.owner.handle(self, data, addr, anc)

    def send(self, data: bytes, dest: Source6, ancillary: Ancillary) -> None:
        """Send now, or queue behind earlier sends the kernel could not take (a burst of answers
        fills the socket buffer: EAGAIN); past SEND_BACKLOG they are dropped. Never raises."""
        sock = self.sock
        if sock is None:
            return
        if self._backlog:
            self._queue(data, dest, ancillary)
            return
        try:
            sock.sendmsg((data,), ancillary, 0, dest)
        except (BlockingIOError, InterruptedError):
            self._queue(data, dest, ancillary)
        except OSError as exc:  # an unreachable client: it retransmits
            self._failed(dest, exc)

    def _failed(self, dest: Source6, exc: OSError) -> None:
        self.warnings.warn(
            ("send", exc.errno), "%s:%d: send to [%s]:%d failed: %s", self.iface.name, self.port,
            dest[0], dest[1], exc,
        )  # fmt: skip

    def _queue(self, data: bytes, dest: Source6, ancillary: Ancillary) -> None:
        if len(self._backlog) >= SEND_BACKLOG:
            self.warnings.warn(
                ("queue", 0), "%s:%d: send queue full, answer dropped", self.iface.name, self.port
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
                sock.sendmsg((data,), ancillary, 0, dest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(dest, exc)
            backlog.popleft()
        if sock is not None and self._loop is not None:
            self._loop.remove_writer(sock.fileno())


class Dhcp6Service:
    """The DHCPv6 endpoints of one running service; `settings` is read per datagram."""

    def __init__(self, settings: Callable[[], Settings], serving: Callable[[], bool]) -> None:
        self._settings = settings
        self._serving = serving
        self.endpoints: list[Dhcp6Endpoint] = []
        self.duid = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refreshed = 0.0

    def start(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> list[sockets6.Interface6]:
        """Bind 547 (joined to ff02::1:2) and 4011 on each served interface. Raises InterfaceError or
        OSError (the caller turns them into a StartupError); on failure nothing stays open."""
        chosen = sockets6.select_interfaces6(
            sockets6.interfaces6(), settings.server.interfaces, ipv6_prefixes(settings)
        )
        if not chosen:
            raise InterfaceError("none of the configured interfaces has an IPv6 address")
        self.duid = sockets6.server_duid(chosen)
        self._loop = loop
        ports: list[tuple[int, int, IPv6Address | None]] = [(PXE6_PORT, settings.server.pxe_port, None)]
        if not settings.server.colocated:
            ports.insert(0, (DHCP6_PORT, settings.server.dhcp6_port, sockets6.ALL_DHCP_SERVERS))
        try:
            for logical, number, group in ports:
                for iface in chosen:
                    sock = sockets6.open_udp6(number, iface, join=group)
                    endpoint = Dhcp6Endpoint(self, iface, logical, sock)
                    self.endpoints.append(endpoint)
                    endpoint.open(loop)
        except BaseException:
            self.close()
            raise
        return chosen

    def _refresh_soon(self) -> None:
        # An interface served before its global address arrived (SLAAC after start, DAD still
        # running): re-read the addresses, at most every REFRESH_INTERVAL, instead of waiting for SIGHUP.
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_INTERVAL:
            self._refreshed = now
            self.refresh()

    def refresh(self) -> None:
        """Re-read the interfaces' addresses (on reload, and see `_refresh_soon`)."""
        current = {i.name: i for i in sockets6.interfaces6()}
        for endpoint in self.endpoints:
            fresh = current.get(endpoint.iface.name)
            if fresh is not None:
                endpoint.set_interface(fresh)

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints.clear()

    def handle(self, endpoint: Dhcp6Endpoint, data: bytes, source: Source6, ancdata: Ancillary) -> None:
        """One datagram, start to finish. Never raises."""
        if not self._serving():
            return
        if not endpoint.receiver.addresses:
            self._refresh_soon()
        port, iface = endpoint.port, endpoint.iface.name
        try:
            result = run6(
                data, port=port, source=source, receiver=endpoint.receiver, settings=self._settings(),
                server_duid=self.duid,
            )  # fmt: skip
            rec = record6(result, port=port, iface=iface, source=source_text(source))
            if isinstance(result, Answered6):
                wire = result.reply.encode()
                local = sockets6.destination_of(ancdata)
                # A unicast request (4011, a relay) is answered from the address it was sent to; a
                # multicast Solicit from the kernel's choice (link-local, on the client's link).
                ancillary = (
                    sockets6.source_ancillary(local, endpoint.iface.index)
                    if local is not None and not local.is_multicast
                    else []
                )
                endpoint.send(wire, result.destination, ancillary)
                loop = self._loop
                if loop is not None:
                    for delay in result.repeat:  # see pxe6.pipeline.REPEATS
                        loop.call_later(delay, endpoint.send, wire, result.destination, ancillary)
        except Exception as exc:
            events.record_error(port=port, iface=iface, source=source_text(source), exc=exc)
            return
        events.record(rec)
