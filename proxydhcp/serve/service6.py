"""The DHCPv6 side of `serve`: one endpoint per (interface, 547 or 4011) on IPv6, each datagram through
`pxe6.pipeline.run6` and logged as one `events.DecisionRecord` (`record6`), as on IPv4.

Started by `serve.service.ProxyDhcpService` when an IPv6 prefix is enabled; it reads the service's current
settings on every datagram, so SIGHUP reloads apply here too. No per-client state: a flood of
Solicits from any number of DUIDs costs one pipeline run each and no memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network

from proxydhcp import events
from proxydhcp.config import Settings
from proxydhcp.pxe6.classify import DHCP6_PORT, PXE6_PORT
from proxydhcp.pxe6.pipeline import Answered6, Source6, record6, run6, source_text
from proxydhcp.pxe6.policy import Receiver6, interface_addresses6
from proxydhcp.serve import sockets6
from proxydhcp.serve.endpoint import Ancillary, UdpEndpoint
from proxydhcp.serve.sockets import InterfaceError

log = logging.getLogger("proxydhcp.server")

REFRESH_INTERVAL = 2.0  # seconds between re-reads of addresses while an interface has no global one


def ipv6_prefixes(settings: Settings) -> list[IPv6Network]:
    return [s.cidr for s in settings.subnet if isinstance(s.cidr, IPv6Network)]


class Dhcp6Endpoint(UdpEndpoint[sockets6.Interface6, Ancillary]):
    """One bound AF_INET6 socket (interface, logical port 547 or 4011), read by the loop in batches
    (`serve.endpoint.UdpEndpoint`). A datagram's Local is the ancillary data its answer is sent with:
    a unicast request (4011, a relay) is answered from the address it was sent to, a multicast
    Solicit from the kernel's choice (link-local, on the client's link)."""

    PEER = "[%s]:%d"

    def set_interface(self, iface: sockets6.Interface6) -> None:
        super().set_interface(iface)
        self.receiver = Receiver6(iface.name, interface_addresses6(iface.addresses))
        self.default: Ancillary = []  # no IPV6_PKTINFO: the kernel picks the source

    def _local(self, info: bytes) -> Ancillary:
        address = sockets6.unicast_destination(info)
        return [] if address is None else sockets6.source_ancillary(address, self.iface.index)


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

    def handle(self, endpoint: Dhcp6Endpoint, data: bytes, source: Source6, ancillary: Ancillary) -> None:
        """One datagram, start to finish; `ancillary` sends its answer from the address it was sent to
        (`Dhcp6Endpoint`). Never raises."""
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
                endpoint.send(wire, result.destination, ancillary)
                loop = self._loop
                if loop is not None:
                    for delay in result.repeat:  # see pxe6.pipeline.REPEATS
                        loop.call_later(delay, endpoint.send, wire, result.destination, ancillary)
        except Exception as exc:
            events.record_error(port=port, iface=iface, source=source_text(source), exc=exc)
            return
        events.record(rec)
