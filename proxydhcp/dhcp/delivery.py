"""Where a reply goes (RFC 2131 §4.1; R-12, R-20). Pure: the server only sends to what it is told."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from socket import inet_ntoa
from typing import NamedTuple

from proxydhcp.dhcp.packet import DhcpPacket

BROADCAST = IPv4Address("255.255.255.255")
SERVER_PORT = 67
CLIENT_PORT = 68
_NO_ADDRESS = IPv4Address(0)


def dotted(address: IPv4Address) -> str:
    """`str(address)`, at a third of the cost (ipaddress formats in Python): every reply's record has
    three. `int()` rather than `.packed`: one Python-level call instead of two."""
    return inet_ntoa(int(address).to_bytes(4, "big"))


def network_text(network: IPv4Network) -> str:
    """`str(network)`, as `dotted`."""
    return f"{inet_ntoa(int(network.network_address).to_bytes(4, 'big'))}/{network.prefixlen}"


class Destination(NamedTuple):
    """Where one reply goes: an immutable value (a NamedTuple: one per reply)."""

    address: IPv4Address
    port: int
    broadcast: bool = False

    def __str__(self) -> str:
        return self.text(dotted(self.address))

    def text(self, address: str) -> str:
        """`str(self)` from its address already as text (`dotted(self.address)`): serve converts it
        once, for sendto and the record."""
        return f"{address}:{self.port}{' (broadcast)' if self.broadcast else ''}"


def offer_destination(
    request: DhcpPacket, *, server_port: int = SERVER_PORT, client_port: int = CLIENT_PORT
) -> Destination:
    """Destination of a port-67 proxy offer. A relayed request goes back to the relay (giaddr:67);
    a client that has an address gets it at ciaddr:68; otherwise broadcast. A proxy offer has
    yiaddr 0, so the §4.1 "unicast to yiaddr/chaddr" case never applies (R-20)."""
    # Tests by `==` only: IPv4Address has no __ne__, so `!=` costs twice as much.
    if request.giaddr == _NO_ADDRESS:
        if request.ciaddr == _NO_ADDRESS:
            return Destination(BROADCAST, client_port, broadcast=True)
        return Destination(request.ciaddr, client_port)
    return Destination(request.giaddr, server_port)


def pxe_destination(request: DhcpPacket, source_ip: IPv4Address, source_port: int) -> Destination:
    """Destination of a port-4011 ACK: exactly where the request came from (normally client:4011,
    iPXE in co-located mode uses :68). Never broadcast: dnsmasq 2.92's broadcast ACKs broke UEFI (R-12)."""
    if source_ip == _NO_ADDRESS:
        # Sent from 0.0.0.0 (a firmware that has not configured its lease yet) but naming its
        # address in ciaddr (classify refuses the case with neither): 0.0.0.0 would be this host.
        return Destination(request.ciaddr, source_port)
    return Destination(source_ip, source_port)
