"""Where a reply goes (RFC 2131 §4.1; R-12, R-20). Pure: the server only sends to what it is told."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import NamedTuple

from proxydhcp.dhcp.packet import ZERO, DhcpPacket

BROADCAST = IPv4Address("255.255.255.255")
SERVER_PORT = 67
CLIENT_PORT = 68
# int(address) → dotted text: str(IPv4Address) is slow and a server logs the same few addresses. Bounded.
_TEXT: dict[int, str] = {}
_TEXT_MAX = 1024


def _text(address: IPv4Address) -> str:
    if type(address) is not IPv4Address:
        return str(address)
    key = int(address)
    text = _TEXT.get(key)
    if text is None:
        if len(_TEXT) >= _TEXT_MAX:
            _TEXT.clear()
        text = _TEXT[key] = str(address)
    return text


class Destination(NamedTuple):
    """Where one reply goes. A NamedTuple: a third of a frozen dataclass's construction cost."""

    address: IPv4Address
    port: int
    broadcast: bool

    def __str__(self) -> str:
        return f"{_text(self.address)}:{self.port}{' (broadcast)' if self.broadcast else ''}"


def offer_destination(
    request: DhcpPacket, *, server_port: int = SERVER_PORT, client_port: int = CLIENT_PORT
) -> Destination:
    """Destination of a port-67 proxy offer. A relayed request goes back to the relay (giaddr:67);
    a client that has an address gets it at ciaddr:68; otherwise broadcast. A proxy offer has
    yiaddr 0, so the §4.1 "unicast to yiaddr/chaddr" case never applies (R-20)."""
    # `is ZERO` first: decode shares the ZERO object, and IPv4Address.__eq__/__ne__ run in Python.
    giaddr, ciaddr = request.giaddr, request.ciaddr
    if not (giaddr is ZERO or giaddr == ZERO):
        return Destination(giaddr, server_port, False)
    if not (ciaddr is ZERO or ciaddr == ZERO):
        return Destination(ciaddr, client_port, False)
    return Destination(BROADCAST, client_port, True)


def pxe_destination(request: DhcpPacket, source_ip: IPv4Address, source_port: int) -> Destination:
    """Destination of a port-4011 ACK: exactly where the request came from (normally client:4011,
    iPXE in co-located mode uses :68). Never broadcast: dnsmasq 2.92's broadcast ACKs broke UEFI (R-12)."""
    if source_ip is ZERO or source_ip == ZERO:
        # Sent from 0.0.0.0 (a firmware that has not configured its lease yet) but naming its
        # address in ciaddr (classify refuses the case with neither): 0.0.0.0 would be this host.
        return Destination(request.ciaddr, source_port, False)
    return Destination(source_ip, source_port, False)
