"""Typed option getters, architecture/iPXE detection and the option-43 codec."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from proxydhcp.dhcp import options
from proxydhcp.dhcp.codes import PxeSubOpt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket

MAC = bytes.fromhex("525400123456")


def pkt(*opts: tuple[int, bytes]) -> DhcpPacket:
    return DhcpPacket(op=1, xid=1, chaddr=MAC, options=((53, b"\x01"), *opts))


def test_fixed_width_getters() -> None:
    p = pkt((57, b"\x05\xc0"), (51, b"\x00\x00\x0e\x10"), (54, b"\x0a\x00\x00\x05"), (12, b"host\0"))
    assert options.u8(p, 53) == 1
    assert options.u16(p, 57) == 1472
    assert options.u32(p, 51) == 3600
    assert options.ip(p, 54) == IPv4Address("10.0.0.5")
    assert options.text(p, 12) == "host"
    for getter in (options.u8, options.u16, options.u32, options.ip, options.text):
        assert getter(p, 200) is None


@pytest.mark.parametrize(
    ("getter", "value"),
    [(options.u8, b""), (options.u8, b"\x01\x02"), (options.u16, b"\x01"), (options.u32, b"\x01\x02\x03"),
     (options.ip, b"\x0a\x00\x00")],
)  # fmt: skip
def test_fixed_width_getters_reject_wrong_lengths(getter, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedPacket, match="length"):
        getter(pkt((200, value)), 200)


@pytest.mark.parametrize(
    ("opts", "arch"),
    [
        (((93, b"\x00\x07"),), 7),
        (((93, b"\x00\x09\x00\x07"),), 9),  # a list: the first value counts
        (((93, b"\x00\x0b"), (60, b"PXEClient:Arch:00000:UNDI:002001")), 11),  # 93 wins over 60
        (((60, b"PXEClient:Arch:00007:UNDI:003016"),), 7),
        (((60, b"HTTPClient:Arch:00016:UNDI:003001"),), 16),
        (((60, b"PXEClient:Arch:00000"),), 0),
        (((60, b"PXEClient"),), None),
        (((60, b"PXEClient:Arch:7:UNDI:003016"),), None),
        (((60, b"PXEClient:Arch:99999:UNDI:003016"),), None),
        ((), None),
    ],
)
def test_client_arch(opts: tuple[tuple[int, bytes], ...], arch: int | None) -> None:
    assert options.client_arch(pkt(*opts)) == arch


def test_client_arch_rejects_odd_93() -> None:
    with pytest.raises(MalformedPacket, match="93"):
        options.client_arch(pkt((93, b"\x00")))


def test_client_uuid() -> None:
    uuid = b"\x00" + bytes(range(16))
    assert options.client_uuid(pkt((97, uuid))) == uuid
    assert options.client_uuid(pkt()) is None
    assert options.client_uuid(pkt((97, b""))) is None  # buggy ROMs omit the GUID: tolerated
    with pytest.raises(MalformedPacket, match="type 1"):
        options.client_uuid(pkt((97, b"\x01" + bytes(16))))
    with pytest.raises(MalformedPacket, match="length 16"):
        options.client_uuid(pkt((97, bytes(16))))


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (((77, b"iPXE"),), True),  # iPXE's plain string (not RFC 3004)
        (((77, b"\x04iPXE"),), True),  # RFC 3004 form
        (((77, b"\x03abc\x04iPXE"),), True),
        (((175, b"\x13\x01\x01"),), True),  # option 175 present
        (((175, b""),), True),
        (((77, b"iPXE2"),), False),
        (((77, b"\x04iPX"),), False),
        (((77, b"pixiecore"),), False),
        (((77, b""),), False),
        ((), False),
    ],
)
def test_is_ipxe(opts: tuple[tuple[int, bytes], ...], expected: bool) -> None:
    assert options.is_ipxe(pkt(*opts)) is expected


def test_user_class_and_vendor_class() -> None:
    p = pkt((77, b"iPXE"), (60, b"PXEClient:Arch:00000:UNDI:002001"))
    assert options.user_class(p) == b"iPXE"
    assert options.vendor_class(p) == "PXEClient:Arch:00000:UNDI:002001"
    assert options.vendor_class(pkt()) == "" and options.user_class(pkt()) is None
    assert options.vendor_class(pkt((60, b"\xffX"))) == "\ufffdX"


def test_pxe_suboptions_codec() -> None:
    assert options.encode_pxe_suboptions({6: b"\x08"}) == b"\x06\x01\x08\xff"
    assert options.encode_pxe_suboptions({}) == b"\xff"
    value = options.encode_pxe_suboptions({6: b"\x03", 71: b"\x80\x00\x00\x00", 10: b"\x00PXE"})
    assert options.decode_pxe_suboptions(value) == {6: b"\x03", 71: b"\x80\x00\x00\x00", 10: b"\x00PXE"}
    assert options.decode_pxe_suboptions(b"\x00\x06\x01\x08\xff\x07") == {6: b"\x08"}  # PAD, then END stops
    assert options.decode_pxe_suboptions(b"\x06\x01\x08") == {6: b"\x08"}  # END missing: tolerated
    assert options.decode_pxe_suboptions(b"") == {}


def test_pxe_suboptions_limits() -> None:
    assert len(options.encode_pxe_suboptions({9: bytes(252)})) == 255
    with pytest.raises(ValueError, match="more than 255"):
        options.encode_pxe_suboptions({9: bytes(253)})
    with pytest.raises(ValueError):
        options.encode_pxe_suboptions({255: b""})
    with pytest.raises(ValueError):
        options.encode_pxe_suboptions({0: b""})
    for bad in (b"\x06", b"\x06\x02\x08", b"\x47\x04\x00\x00"):
        with pytest.raises(MalformedPacket, match="overruns"):
            options.decode_pxe_suboptions(bad)


@pytest.mark.parametrize(
    "item", [b"\x80\x00\x00\x00", b"\x00\x00\x00\x00", b"\xff\xff\x7f\xff", b"\x00\x01\x00\x00"]
)
def test_encode_boot_item_is_the_general_encoding(item: bytes) -> None:
    encoded = options.encode_boot_item(item)
    assert encoded == options.encode_pxe_suboptions({PxeSubOpt.BOOT_ITEM: item})
    assert options.decode_pxe_suboptions(encoded) == {PxeSubOpt.BOOT_ITEM: item}


@pytest.mark.parametrize("item", [b"", b"\x00\x00\x00", b"\x00" * 5])
def test_encode_boot_item_refuses_other_lengths(item: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        options.encode_boot_item(item)
