"""RFC 2131 §4.1 destinations (R-12, R-20)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxydhcp.dhcp.delivery import Destination, dotted, network_text, offer_destination, pxe_destination
from proxydhcp.dhcp.packet import DhcpPacket

MAC = bytes.fromhex("525400123456")
Z = "0.0.0.0"


def req(giaddr: str = Z, ciaddr: str = Z, flags: int = 0, yiaddr: str = Z) -> DhcpPacket:
    return DhcpPacket(
        op=1,
        xid=7,
        chaddr=MAC,
        flags=flags,
        giaddr=IPv4Address(giaddr),
        ciaddr=IPv4Address(ciaddr),
        yiaddr=IPv4Address(yiaddr),
        options=((53, b"\x01"),),
    )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (req(), ("255.255.255.255", 68, True)),
        (req(flags=0x8000), ("255.255.255.255", 68, True)),
        (req(yiaddr="10.0.0.9"), ("255.255.255.255", 68, True)),  # never unicast to yiaddr
        (req(giaddr="10.78.0.1"), ("10.78.0.1", 67, False)),
        (req(giaddr="10.78.0.1", flags=0x8000), ("10.78.0.1", 67, False)),
        (req(giaddr="10.78.0.1", ciaddr="10.78.0.9"), ("10.78.0.1", 67, False)),  # relay wins
        (req(ciaddr="10.77.0.9"), ("10.77.0.9", 68, False)),
        (req(ciaddr="10.77.0.9", flags=0x8000), ("10.77.0.9", 68, False)),
    ],
)
def test_offer_destination(request_: DhcpPacket, expected: tuple[str, int, bool]) -> None:
    address, port, broadcast = expected
    assert offer_destination(request_) == Destination(IPv4Address(address), port, broadcast)


def test_offer_destination_custom_ports() -> None:
    assert offer_destination(req(giaddr="10.78.0.1"), server_port=1067) == Destination(
        IPv4Address("10.78.0.1"), 1067, False
    )
    assert offer_destination(req(), client_port=1068).port == 1068


@pytest.mark.parametrize(
    ("source", "port"),
    [("10.77.0.9", 4011), ("10.77.0.9", 68), ("10.78.0.20", 4011), ("10.77.0.9", 50000)],
)
def test_pxe_destination_is_the_source(source: str, port: int) -> None:
    dest = pxe_destination(req(ciaddr="10.77.0.99", flags=0x8000), IPv4Address(source), port)
    assert dest == Destination(IPv4Address(source), port, False)
    assert str(dest) == f"{source}:{port}"


def test_destination_str() -> None:
    assert str(offer_destination(req())) == "255.255.255.255:68 (broadcast)"


def test_pxe_destination_from_zero_source_goes_to_ciaddr() -> None:
    # A REQUEST sent from 0.0.0.0:68 with ciaddr set: answering 0.0.0.0:68 would reach this host.
    dest = pxe_destination(req(ciaddr="10.77.0.60"), IPv4Address(0), 68)
    assert dest == Destination(IPv4Address("10.77.0.60"), 68, False)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_address_texts_equal_str(value: int, prefixlen: int) -> None:
    network = IPv4Network((value, prefixlen), strict=False)
    assert dotted(IPv4Address(value)) == str(IPv4Address(value))
    assert network_text(network) == str(network)
