"""sockets.py: interface listing, the choice of interfaces, bind errors and real loopback sockets."""

from __future__ import annotations

import errno
import socket
from ipaddress import IPv4Address, IPv4Network

import pytest

from proxydhcp.serve import sockets
from proxydhcp.serve.sockets import Interface, InterfaceError, bind_error_message, select_interfaces


def _if(name: str, address: str | None, loopback: bool = False) -> Interface:
    net = IPv4Network(f"{address}/24", strict=False) if address else None
    return Interface(name, 1, True, loopback, IPv4Address(address) if address else None, net)


AVAILABLE = [
    _if("lo", "127.0.0.1", loopback=True),
    _if("eth0", "10.77.0.2"),
    _if("eth1", "10.9.0.2"),
    _if("eth2", None),
]


def test_loopback_is_listed_with_its_address() -> None:
    lo = [i for i in sockets.interfaces() if i.loopback]
    assert lo and lo[0].address == IPv4Address("127.0.0.1") and lo[0].network == IPv4Network("127.0.0.0/8")


def test_default_is_interfaces_in_enabled_subnets() -> None:
    chosen = select_interfaces(AVAILABLE, [], [IPv4Network("10.77.0.0/24"), IPv4Network("10.78.0.0/24")])
    assert [i.name for i in chosen] == ["eth0"]


def test_all_relayed_means_every_non_loopback_interface_with_an_address() -> None:
    chosen = select_interfaces(AVAILABLE, [], [IPv4Network("10.78.0.0/24")])
    assert [i.name for i in chosen] == ["eth0", "eth1"]


def test_named_interfaces_are_checked() -> None:
    assert [i.name for i in select_interfaces(AVAILABLE, ["eth1", "eth1"], [])] == ["eth1"]
    with pytest.raises(InterfaceError, match="'eth9' does not exist"):
        select_interfaces(AVAILABLE, ["eth9"], [])
    with pytest.raises(InterfaceError, match="'eth2' has no IPv4 address"):
        select_interfaces(AVAILABLE, ["eth2"], [])
    with pytest.raises(InterfaceError, match="no interface"):
        select_interfaces([AVAILABLE[0]], [], [])


@pytest.mark.parametrize(
    ("code", "role", "needle"),
    [
        (errno.EADDRINUSE, "dhcp", "another DHCP server (dhcpd, dnsmasq, kea)"),
        (errno.EADDRINUSE, "dhcp", "--colocated"),
        (errno.EADDRINUSE, "tftp", "--no-tftp"),
        (errno.EADDRINUSE, "tftp", "--tftp-port"),
        (errno.EACCES, "dhcp", "needs root or CAP_NET_BIND_SERVICE"),
        (errno.ENODEV, "pxe", "no such interface"),
    ],
)
def test_bind_error_messages(code: int, role: str, needle: str) -> None:
    message = bind_error_message(OSError(code, "x"), 67, role)
    assert needle in message and "\n" not in message


def test_open_udp_binds_and_a_second_bind_conflicts() -> None:
    first = sockets.open_udp(0, None, address="127.0.0.1")
    try:
        port = first.getsockname()[1]
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * 1024 * 1024
        with pytest.raises(OSError) as info:
            sockets.open_udp(port, None, address="127.0.0.1")
        assert info.value.errno == errno.EADDRINUSE
    finally:
        first.close()


def test_pktinfo_names_the_local_address_a_datagram_was_sent_to() -> None:
    # Every 127/8 address is local on lo: 127.0.0.2 plays a secondary address.
    server = sockets.open_udp(0, None, pktinfo=True)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        server.setblocking(True)
        server.settimeout(5)
        for dst in ("127.0.0.1", "127.0.0.2"):
            client.sendto(b"x", (dst, port))
            _, anc, _, _ = server.recvmsg(100, socket.CMSG_SPACE(sockets.PKTINFO.size))
            assert [(level, kind) for level, kind, _ in anc] == [(socket.IPPROTO_IP, sockets.IP_PKTINFO)]
            assert sockets.unicast_destination(anc[0][2]) == IPv4Address(dst)
            # ... and sendmsg with pktinfo_source answers from that address.
            server.sendmsg((b"y",), sockets.pktinfo_source(IPv4Address(dst)), 0, client.getsockname())
            client.settimeout(5)
            assert client.recvfrom(10) == (b"y", (dst, port))
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize(
    ("spec_dst", "addr", "expected"),
    [
        ("10.77.0.5", "10.77.0.5", "10.77.0.5"),  # unicast to a local address: spec_dst = the destination
        ("10.77.0.2", "255.255.255.255", None),  # broadcast: spec_dst is the kernel's pick to answer from
        ("10.77.0.2", "10.77.0.255", None),  # subnet-directed broadcast
        ("0.0.0.0", "0.0.0.0", None),
    ],
)
def test_unicast_destination(spec_dst: str, addr: str, expected: str | None) -> None:
    info = sockets.PKTINFO.pack(3, IPv4Address(spec_dst).packed, IPv4Address(addr).packed)
    assert sockets.unicast_destination(info) == (IPv4Address(expected) if expected else None)
    assert sockets.unicast_destination(info[:8]) is None  # truncated: not trusted
