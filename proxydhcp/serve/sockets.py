"""Interfaces, their IPv4 addresses, and the UDP sockets `serve` binds on each of them.

One socket per (interface, port), bound to 0.0.0.0 with SO_BINDTODEVICE: it receives the broadcasts
and the unicasts that arrive on that interface, and whatever it sends leaves by that interface, so a
reply goes out where its request came in (DESIGN.md §2). With IP_PKTINFO the server learns which of
the host's addresses a unicast request was sent to and answers from that one (`unicast_destination`,
`pktinfo_source`); broadcasts are answered from the interface's primary address.
Linux only (SO_BINDTODEVICE, SIOCGIFADDR); stdlib only.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from proxydhcp.errors import ProxyDhcpError

# <linux/sockios.h>, <linux/if.h>
SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
# struct in_pktinfo (<linux/in.h>): ifindex, spec_dst (the local address a reply would use), addr (the
# header's destination). recvmsg gives it per datagram; sendmsg takes one to set the source address.
PKTINFO = struct.Struct("=i4s4s")

# A boot storm of thousands of DISCOVERs arrives faster than one Python loop drains them; the kernel
# queue must hold the burst (2,000 datagrams cost ~2-3 MiB of skb truesize on a veth).
DEFAULT_RCVBUF = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface and its primary IPv4 address (None when it has none)."""

    name: str
    index: int
    up: bool
    loopback: bool
    address: IPv4Address | None = None
    network: IPv4Network | None = None


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))


def interfaces() -> list[Interface]:
    """Every interface of this network namespace, with its primary IPv4 address and network."""
    out: list[Interface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for index, name in socket.if_nameindex():
            try:
                flags = struct.unpack_from("H", _ifreq(probe, SIOCGIFFLAGS, name), 16)[0]
            except OSError:
                continue  # vanished between listing and asking
            address: IPv4Address | None = None
            network: IPv4Network | None = None
            try:
                address = IPv4Address(_ifreq(probe, SIOCGIFADDR, name)[20:24])
                mask = IPv4Address(_ifreq(probe, SIOCGIFNETMASK, name)[20:24])
                network = IPv4Network(f"{address}/{mask}", strict=False)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:  # EADDRNOTAVAIL: no IPv4 address, a normal case
                    raise
                address = None
            out.append(
                Interface(name, index, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK), address, network)
            )
    return out


class InterfaceError(ProxyDhcpError):
    """The configured interfaces cannot be served (the message says which and why)."""


def select_interfaces(
    available: Sequence[Interface], wanted: Sequence[str], subnets: Iterable[IPv4Network]
) -> list[Interface]:
    """The interfaces to serve. `wanted` (names) if given; otherwise every interface whose address is
    in an enabled subnet; if none is (every enabled subnet is relayed), every non-loopback interface
    with an IPv4 address. Each chosen interface needs an IPv4 address: it is the reply's option 54."""
    by_name = {iface.name: iface for iface in available}
    if wanted:
        chosen: list[Interface] = []
        for name in dict.fromkeys(wanted):
            iface = by_name.get(name)
            if iface is None:
                known = ", ".join(sorted(by_name))
                raise InterfaceError(f"interface {name!r} does not exist (have: {known})")
            if iface.address is None:
                raise InterfaceError(f"interface {name!r} has no IPv4 address to answer from")
            chosen.append(iface)
        return chosen
    nets = list(subnets)
    with_address = [i for i in available if i.address is not None and not i.loopback]
    local = [i for i in with_address if i.address is not None and any(i.address in n for n in nets)]
    chosen = local or with_address
    if not chosen:
        raise InterfaceError("no interface with an IPv4 address to serve; name one with --interface")
    return chosen


def open_udp(
    port: int,
    device: str | None,
    *,
    address: str = "0.0.0.0",
    rcvbuf: int = DEFAULT_RCVBUF,
    reuse: bool = False,
    pktinfo: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket bound to `address:port`, tied to `device` when given, allowed to
    broadcast; with `pktinfo`, recvmsg reports each datagram's destination address (IP_PKTINFO).
    Raises OSError from bind (see `bind_error_message`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: sockets tied to different devices never conflict, and without it the
        # bind fails (EADDRINUSE) when a DHCP server on this host holds the port, instead of both
        # silently sharing its broadcasts (dhcpd and dnsmasq set SO_REUSEADDR on theirs).
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if pktinfo:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if device:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
        set_rcvbuf(sock, rcvbuf)
        sock.setblocking(False)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def pktinfo_source(address: IPv4Address) -> list[tuple[int, int, bytes]]:
    """Ancillary data for sendmsg that makes a datagram leave from `address` (a local one)."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, address.packed, bytes(4)))]


def unicast_destination(info: bytes) -> IPv4Address | None:
    """The local address a datagram was sent to, from its IP_PKTINFO data; None when it was not
    unicast to this host (a broadcast). For a local unicast the kernel sets spec_dst to the header's
    destination; for a broadcast spec_dst is the address it would pick to answer (fib_compute_spec_dst)."""
    if len(info) != PKTINFO.size:
        return None
    _, spec_dst, addr = PKTINFO.unpack(info)
    if spec_dst != addr or addr == bytes(4):
        return None
    return IPv4Address(addr)


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for a `size` receive buffer, past net.core.rmem_max when allowed (root/CAP_NET_ADMIN);
    returns what the kernel granted (it doubles the request for bookkeeping)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def bind_error_message(exc: OSError, port: int, role: str) -> str:
    """One line for a failed bind of `role` ("dhcp", "pxe" or "tftp") on `port`: what likely holds
    the port and what to do about it."""
    if exc.errno == errno.EADDRINUSE:
        if role == "dhcp":
            return (
                f"UDP port {port} is already in use: another DHCP server (dhcpd, dnsmasq, kea) likely "
                "holds it; if it runs on this host, give it option 60 PXEClient and use --colocated"
            )
        if role == "tftp":
            return (
                f"UDP port {port} is already in use: another TFTP server (tftpd-hpa, dnsmasq, atftpd) likely "
                "holds it; use --no-tftp to leave TFTP to it, or --tftp-port to move ours"
            )
        return (
            f"UDP port {port} is already in use: another proxyDHCP/PXE service (dnsmasq, a second "
            "proxydhcp) likely holds it"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot bind UDP port {port}: needs root or CAP_NET_BIND_SERVICE (then --user to drop root)"
    if exc.errno == errno.ENODEV:
        return f"cannot bind UDP port {port}: no such interface"
    return f"cannot bind UDP port {port}: {exc.strerror or exc}"
