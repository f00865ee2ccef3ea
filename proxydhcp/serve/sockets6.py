"""IPv6 interfaces, this host's DHCPv6 DUID, and the UDP sockets of the DHCPv6 proxy (547 and 4011).

One AF_INET6 socket per (interface, port), bound to [::]:port with SO_BINDTODEVICE, as for IPv4
(`sockets.py`); the 547 socket joins ff02::1:2 (All_DHCP_Relay_Agents_and_Servers, RFC 8415 §7.1)
on its interface. IPV6_RECVPKTINFO tells the address each request was sent to, and replies leave
from that address (IPV6_PKTINFO): EDK II reads the 4011 Reply only from the server address it sent
its Request to (`PxeBcRequestBootService` → `UdpRead(ServerIp, 4011)`), while the kernel on its own
would answer a link-local client from a link-local source.

The DUID: DUID-LL (RFC 8415 §11.4) of the MAC of the first served interface (by name). It needs no
state file (the service may run read-only and as an unprivileged user) and is the same across
restarts as long as that NIC is; a proxy binds nothing to its DUID (no leases), so a new one after a
NIC change costs nothing. Linux only; stdlib only.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from proxydhcp.dhcp6.options import duid_ll
from proxydhcp.serve.sockets import SO_BINDTODEVICE, InterfaceError, set_rcvbuf

ALL_DHCP_SERVERS = IPv6Address("ff02::1:2")
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IN6_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo: address, ifindex
RCVBUF = 4 * 1024 * 1024
_IF_INET6 = Path("/proc/net/if_inet6")
_IFA_F_TENTATIVE = 0x40  # an address still in duplicate address detection cannot be bound


@dataclass(frozen=True, slots=True)
class Interface6:
    name: str
    index: int
    mac: bytes | None
    addresses: tuple[tuple[IPv6Address, int], ...]  # (address, prefix length), /proc order

    def in_prefixes(self, prefixes: Iterable[IPv6Network]) -> bool:
        nets = list(prefixes)
        return any(address in net for address, _ in self.addresses for net in nets)


def interfaces6(proc: Path = _IF_INET6) -> list[Interface6]:
    """Every interface with an IPv6 address (tentative ones left out), from /proc/net/if_inet6."""
    found: dict[str, list[tuple[IPv6Address, int]]] = {}
    index: dict[str, int] = {}
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return []  # IPv6 disabled
    for line in lines:
        fields = line.split()
        if len(fields) != 6:
            continue
        hexaddr, ifindex, plen, _scope, flags, name = fields
        if int(flags, 16) & _IFA_F_TENTATIVE:
            continue
        found.setdefault(name, []).append((IPv6Address(bytes.fromhex(hexaddr)), int(plen, 16)))
        index[name] = int(ifindex, 16)
    return [Interface6(name, index[name], _mac(name), tuple(addrs)) for name, addrs in sorted(found.items())]


def _mac(name: str) -> bytes | None:
    try:
        text = Path(f"/sys/class/net/{name}/address").read_text().strip()
    except OSError:
        return None
    raw = bytes.fromhex(text.replace(":", "")) if text else b""
    return raw if len(raw) == 6 and any(raw) else None


def select_interfaces6(
    available: Sequence[Interface6], wanted: Sequence[str], prefixes: Iterable[IPv6Network]
) -> list[Interface6]:
    """`wanted` (names) that have IPv6; else those with an address in an enabled prefix; else (every
    prefix behind a relay) every non-loopback interface with a routable IPv6 address."""
    by_name = {i.name: i for i in available}
    if wanted:
        return [by_name[name] for name in dict.fromkeys(wanted) if name in by_name]
    nets = list(prefixes)
    local = [i for i in available if i.name != "lo" and i.in_prefixes(nets)]
    if local:
        return local
    routable = [
        i for i in available
        if i.name != "lo" and any(not (a.is_link_local or a.is_loopback) for a, _ in i.addresses)
    ]  # fmt: skip
    if not routable:
        raise InterfaceError("no interface with a routable IPv6 address to serve DHCPv6 on")
    return routable


def server_duid(chosen: Sequence[Interface6]) -> bytes:
    """DUID-LL of the first served interface with a MAC, by name (see the module docstring)."""
    for iface in sorted(chosen, key=lambda i: i.name):
        if iface.mac is not None:
            return duid_ll(iface.mac)
    raise InterfaceError("no served IPv6 interface has a MAC address to derive the DHCPv6 DUID from")


def open_udp6(port: int, iface: Interface6, *, join: IPv6Address | None = None) -> socket.socket:
    """A non-blocking AF_INET6 UDP socket on [::]:port tied to `iface`, reporting each datagram's
    destination (IPV6_RECVPKTINFO), joined to `join` on that interface when given."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.name.encode())
        set_rcvbuf(sock, RCVBUF)
        sock.setblocking(False)
        sock.bind(("::", port))
        if join is not None:
            mreq = join.packed + struct.pack("@I", iface.index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
    except BaseException:
        sock.close()
        raise
    return sock


def unicast_destination(info: bytes) -> IPv6Address | None:
    """The local address a datagram was unicast to, from its IPV6_PKTINFO data; None when it was sent
    to a multicast group (a Solicit to ff02::1:2) or the data is not an in6_pktinfo."""
    if len(info) < IN6_PKTINFO.size:
        return None
    address = IPv6Address(IN6_PKTINFO.unpack_from(info)[0])
    return None if address.is_multicast else address


def source_ancillary(address: IPv6Address, ifindex: int) -> list[tuple[int, int, bytes]]:
    """sendmsg ancillary data that makes a datagram leave from `address` by `ifindex`."""
    return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, IN6_PKTINFO.pack(address.packed, ifindex))]
