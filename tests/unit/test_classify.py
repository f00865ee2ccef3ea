"""classify: every ignore reason, and what a client looks like when accepted."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.outcome import Ignore
from proxydhcp.pxe.classify import ClientInfo, classify

SRC = IPv4Address("10.77.0.50")
Z = IPv4Address(0)


RequestFactory = Callable[..., DhcpPacket]


def client(pkt: DhcpPacket, port: int = 67) -> ClientInfo:
    result = classify(pkt, port=port, source_ip=Z if port == 67 else SRC)
    assert isinstance(result, ClientInfo), result
    return result


def test_bios_discover(make_request: RequestFactory) -> None:
    c = client(make_request(arch=0))
    assert (c.mac, c.xid, c.message_type, c.port, c.arch) == ("52:54:00:12:34:56", 0x9B4E0557, 1, 67, 0)
    assert c.vendor_class == "PXEClient:Arch:00000:UNDI:002001"
    assert not c.is_ipxe and c.user_class is None and c.uuid == b"\x00" + bytes(range(1, 17))
    assert c.giaddr == c.ciaddr == Z and not c.relayed and not c.http and c.boot_item is None


def test_uefi_request_on_4011(make_request: RequestFactory) -> None:
    c = client(make_request(mtype=3, arch=7, ciaddr="10.77.0.50"), port=4011)
    assert c.port == 4011 and c.arch == 7 and c.ciaddr == SRC and c.source_ip == SRC


def test_inform_on_4011_and_boot_item(make_request: RequestFactory) -> None:
    pkt = make_request(mtype=8, arch=7, extra=((43, b"\x47\x04\x80\x01\x00\x00\xff"),))
    c = client(pkt, port=4011)
    assert c.boot_item == b"\x80\x01\x00\x00"


def test_colocated_ipxe_sends_bare_pxeclient(make_request: RequestFactory) -> None:
    pkt = make_request(mtype=3, arch=0, vendor=b"PXEClient", extra=((77, b"iPXE"), (175, b"\x13\x01\x01")))
    c = client(pkt, port=4011)
    assert c.is_ipxe and c.user_class == b"iPXE" and c.arch == 0


def test_arch_from_option_60_when_93_absent(make_request: RequestFactory) -> None:
    assert client(make_request(arch=None, vendor=b"PXEClient:Arch:00011:UNDI:003000")).arch == 11
    assert client(make_request(arch=None, vendor=b"PXEClient")).arch is None


def test_http_client_and_relay(make_request: RequestFactory) -> None:
    c = client(make_request(arch=16, vendor=b"HTTPClient:Arch:00016:UNDI:003001", giaddr="10.78.0.1"))
    assert c.http and c.relayed and c.giaddr == IPv4Address("10.78.0.1")


def test_missing_uuid_tolerated(make_request: RequestFactory) -> None:
    assert client(make_request(uuid=None)).uuid is None
    assert client(make_request(uuid=b"")).uuid is None


@pytest.mark.parametrize(
    ("fields", "port", "reason"),
    [
        (dict(op=2), 67, "not a BOOTREQUEST"),
        (dict(mtype=3), 67, "not a DISCOVER on port 67"),  # REQUESTs belong to the DHCP server
        (dict(mtype=8), 67, "not a DISCOVER on port 67"),
        (dict(mtype=7), 67, "not a DISCOVER on port 67"),
        (dict(mtype=1), 4011, "unsupported message type on 4011"),
        (dict(mtype=4), 4011, "unsupported message type on 4011"),
        (dict(vendor=b"MSFT 5.0"), 67, "not a PXE client"),
        (dict(vendor=b"pxeclient"), 67, "not a PXE client"),
        (dict(vendor=b""), 67, "not a PXE client"),
        (dict(chaddr=bytes(8)), 67, "hardware address is not 6 bytes"),
        (dict(uuid=b"\x01" + bytes(16)), 67, "bad option: option 97 has type 1, expected 0"),
        (dict(mtype=3, extra=((43, b"\x47\x02\x00\x01"),)), 4011,
         "bad option: option 43.71 has length 2, expected 4"),
        (dict(mtype=3, extra=((43, b"\x47\x09"),)), 4011,
         "bad option: option 43 sub-option 71 overruns the option"),
        (dict(mtype=3, extra=((43, b"\x47\x04\x80\x01\x80\x00"),)), 4011, "PXE BIS not supported"),
    ],
)  # fmt: skip
def test_ignore_reasons(make_request: RequestFactory, fields: dict[str, Any], port: int, reason: str) -> None:
    result = classify(make_request(**fields), port=port, source_ip=SRC)
    assert isinstance(result, Ignore) and str(result) == reason


def test_no_vendor_class_at_all() -> None:
    pkt = DhcpPacket(op=1, xid=1, chaddr=bytes(6), options=((53, b"\x01"),))
    result = classify(pkt, port=67, source_ip=Z)
    assert isinstance(result, Ignore) and str(result) == "not a PXE client"


def test_unknown_listener_is_a_programming_error(make_request: RequestFactory) -> None:
    with pytest.raises(ValueError):
        classify(make_request(), port=68, source_ip=Z)


def test_4011_request_from_nowhere_is_ignored(make_request: RequestFactory) -> None:
    # Source 0.0.0.0 and no ciaddr: the ACK could only be broadcast, which R-12 forbids.
    result = classify(make_request(mtype=3), port=4011, source_ip=Z)
    assert isinstance(result, Ignore) and str(result) == "4011 request without a client address"


def test_4011_request_from_zero_source_with_ciaddr_is_accepted(make_request: RequestFactory) -> None:
    result = classify(make_request(mtype=3, ciaddr="10.77.0.60"), port=4011, source_ip=Z)
    assert isinstance(result, ClientInfo)
