"""A small PXE test client: builds DISCOVER/REQUEST packets with the project's own codec and talks
over real UDP sockets created inside a lab network namespace, with bounded waits.

The test process stays in its own namespace; `in_netns` switches only the calling thread for the
moment a socket is created (a socket keeps the namespace it was born in), then switches back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket

CLONE_NEWNET = 0x40000000
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# What a client says about itself (option 93 value, option 60 arch field).
ARCH = {"bios": 0, "efi-ia32": 6, "efi-x64": 7, "efi-x64-9": 9, "efi-arm64": 11}


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body with this thread in network namespace `name` (from `ip netns add`)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def udp_socket(
    netns: str, *, port: int = 68, address: str = "0.0.0.0", device: str | None = None, rcvbuf: int = 1 << 22
) -> socket.socket:
    """A UDP socket inside `netns`, bound to address:port (0 = ephemeral), allowed to broadcast."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if device:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _vendor(arch: int) -> bytes:
    return f"PXEClient:Arch:{arch:05d}:UNDI:003016".encode()


def _pxe_options(
    arch: int | None, *, ipxe: bool, uuid: bytes | None, vendor: bytes | None
) -> list[tuple[int, bytes]]:
    opts: list[tuple[int, bytes]] = [(Opt.MAX_MESSAGE_SIZE, (1472).to_bytes(2, "big"))]
    if arch is not None:
        opts.append((Opt.CLIENT_ARCH, arch.to_bytes(2, "big")))
        opts.append((Opt.CLIENT_NDI, b"\x01\x03\x10"))
    if uuid is not None:
        opts.append((Opt.CLIENT_UUID, uuid))
    opts.append((Opt.VENDOR_CLASS, vendor if vendor is not None else _vendor(arch or 0)))
    if ipxe:
        opts.append((Opt.USER_CLASS, b"iPXE"))
        opts.append((Opt.IPXE_ENCAP, b"\x13\x01\x01"))  # 175.19 (feature: PXE extensions)
    return opts


def default_uuid(mac: str) -> bytes:
    return b"\x00" + mac_bytes(mac).ljust(16, b"\x5a")


def discover(
    mac: str,
    xid: int,
    *,
    arch: int | None = 0,
    ipxe: bool = False,
    uuid: bytes | bool | None = True,
    vendor: bytes | None = None,
    giaddr: str = "0.0.0.0",
    extra: tuple[tuple[int, bytes], ...] = (),
) -> DhcpPacket:
    """A PXE DHCPDISCOVER as firmware sends it (broadcast flag set, 53/55/57/93/94/97/60)."""
    uid = default_uuid(mac) if uuid is True else (uuid or None)
    opts = [
        (Opt.MESSAGE_TYPE, bytes((MessageType.DISCOVER,))),
        (Opt.PARAM_REQUEST_LIST, bytes((1, 3, 43, 60, 66, 67))),
    ]
    opts += _pxe_options(arch, ipxe=ipxe, uuid=uid, vendor=vendor) + list(extra)
    return DhcpPacket(
        op=1, xid=xid, chaddr=mac_bytes(mac), flags=0x8000, giaddr=IPv4Address(giaddr), options=tuple(opts)
    )


def request67(mac: str, xid: int, *, requested: str, server_id: str, arch: int = 0) -> DhcpPacket:
    """The broadcast DHCPREQUEST that takes the corporate server's lease."""
    opts = [
        (Opt.MESSAGE_TYPE, bytes((MessageType.REQUEST,))),
        (Opt.REQUESTED_IP, IPv4Address(requested).packed),
        (Opt.SERVER_ID, IPv4Address(server_id).packed),
        *_pxe_options(arch, ipxe=False, uuid=default_uuid(mac), vendor=None),
    ]
    return DhcpPacket(op=1, xid=xid, chaddr=mac_bytes(mac), flags=0x8000, options=tuple(opts))


def request4011(
    mac: str,
    xid: int,
    *,
    ciaddr: str,
    arch: int | None = 0,
    ipxe: bool = False,
    uuid: bytes | bool | None = True,
    server_id: str | None = None,
) -> DhcpPacket:
    """The unicast DHCPREQUEST to port 4011 after the proxy offer (ciaddr = the leased address)."""
    uid = default_uuid(mac) if uuid is True else (uuid or None)
    opts = [
        (Opt.MESSAGE_TYPE, bytes((MessageType.REQUEST,))),
        (Opt.PARAM_REQUEST_LIST, bytes((1, 3, 43, 60, 66, 67))),
    ]
    if server_id:
        opts.append((Opt.SERVER_ID, IPv4Address(server_id).packed))
    opts += _pxe_options(arch, ipxe=ipxe, uuid=uid, vendor=None)
    return DhcpPacket(op=1, xid=xid, chaddr=mac_bytes(mac), ciaddr=IPv4Address(ciaddr), options=tuple(opts))


@dataclass(frozen=True)
class Received:
    packet: DhcpPacket | None  # None: not decodable
    data: bytes
    source: tuple[str, int]
    at: float


def receive(
    sock: socket.socket,
    window: float,
    *,
    until: Callable[[list[Received]], bool] | None = None,
    limit: int = 100_000,
) -> list[Received]:
    """Every datagram that arrives within `window` seconds (or until `until(got)` holds)."""
    got: list[Received] = []
    deadline = time.monotonic() + window
    sock.setblocking(False)
    while len(got) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        while len(got) < limit:
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                break
            try:
                pkt: DhcpPacket | None = DhcpPacket.decode(data)
            except MalformedPacket:
                pkt = None
            got.append(Received(pkt, data, (source[0], source[1]), time.monotonic()))
        if until is not None and until(got):
            break
    return got


def replies_for(got: list[Received], xid: int, *, source_ip: str | None = None) -> list[Received]:
    return [
        r
        for r in got
        if r.packet is not None
        and r.packet.op == 2
        and r.packet.xid == xid
        and (source_ip is None or r.source[0] == source_ip)
    ]


def exchange(
    sock: socket.socket,
    packet: DhcpPacket | bytes,
    dest: tuple[str, int],
    *,
    window: float = 2.0,
    until: Callable[[list[Received]], bool] | None = None,
) -> list[Received]:
    """Send once, collect what arrives within `window` (or until `until` holds)."""
    data = packet if isinstance(packet, bytes) else packet.encode()
    sock.sendto(data, dest)
    return receive(sock, window, until=until)
