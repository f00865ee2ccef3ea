"""DhcpPacket codec from literal bytes: fields, options, round trip, and every malformed case."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket

COOKIE = b"\x63\x82\x53\x63"
MAC = bytes.fromhex("d050994e0557")


def header(
    *,
    op: int = 1,
    htype: int = 1,
    hlen: int = 6,
    hops: int = 0,
    xid: int = 0x9B4E0557,
    secs: int = 8,
    flags: int = 0x8000,
    addrs: tuple[str, str, str, str] = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0"),
    chaddr: bytes = MAC,
    sname: bytes = b"",
    file: bytes = b"",
) -> bytes:
    ips = b"".join(IPv4Address(a).packed for a in addrs)
    return (
        struct.pack("!BBBBIHH", op, htype, hlen, hops, xid, secs, flags)
        + ips
        + chaddr.ljust(16, b"\0")
        + sname.ljust(64, b"\0")
        + file.ljust(128, b"\0")
    )


# netboot-dhcp.pcap frame 1, options written out by hand.
DISCOVER_OPTS = (
    b"\x35\x01\x01"
    + b"\x37\x04\x01\x03\x2b\x3c"
    + b"\x39\x02\x04\xec"
    + b"\x61\x11\x00" + bytes(range(16))
    + b"\x5d\x02\x00\x00"
    + b"\x5e\x03\x01\x02\x01"
    + b"\x3c\x20PXEClient:Arch:00000:UNDI:002001"
    + b"\xff"
)  # fmt: skip
DISCOVER = header() + COOKIE + DISCOVER_OPTS


def test_decode_discover_fields() -> None:
    p = DhcpPacket.decode(DISCOVER)
    assert p.op == 1 and p.htype == 1 and p.xid == 0x9B4E0557 and p.secs == 8
    assert p.chaddr == MAC and p.mac == "d0:50:99:4e:05:57"
    assert p.broadcast and p.flags == 0x8000
    assert p.ciaddr == p.yiaddr == p.siaddr == p.giaddr == IPv4Address(0)
    assert p.sname == b"" and p.file == b""
    assert p.message_type == MessageType.DISCOVER
    assert [code for code, _ in p.options] == [53, 55, 57, 97, 93, 94, 60]
    assert p.option(Opt.VENDOR_CLASS) == b"PXEClient:Arch:00000:UNDI:002001"
    assert p.option(Opt.CLIENT_ARCH) == b"\x00\x00"
    assert p.option(Opt.ROUTER) is None


def test_round_trip_and_padding() -> None:
    p = DhcpPacket.decode(DISCOVER)
    wire = p.encode()
    assert len(wire) == 240 + len(DISCOVER_OPTS) > 300
    assert DhcpPacket.decode(wire) == p
    small = DhcpPacket(op=2, xid=1, chaddr=MAC, options=((53, b"\x02"),)).encode()
    assert len(small) == 300 and small.endswith(bytes(56))
    assert len(p.encode(min_size=0)) == 240 + len(DISCOVER_OPTS)
    assert p.encode(min_size=0) == DISCOVER


def test_sname_and_file_are_nul_stripped_and_terminated() -> None:
    data = header(sname=b"srv\0junk", file=b"pxelinux.0") + COOKIE + b"\x35\x01\x02\xff"
    p = DhcpPacket.decode(data)
    assert p.sname == b"srv" and p.file == b"pxelinux.0"
    assert p.encode()[108 + len(b"pxelinux.0")] == 0
    with pytest.raises(ValueError):
        DhcpPacket(op=2, xid=1, chaddr=MAC, file=b"x" * 128).encode()


def test_repeated_options_are_concatenated_rfc3396() -> None:
    data = header() + COOKIE + b"\x35\x01\x01\x52\x02ab\x0c\x01x\x52\x02cd\xff"
    p = DhcpPacket.decode(data)
    assert p.option(Opt.RELAY_AGENT) == b"abcd"
    assert p.options.count((82, b"ab")) == 1 and p.options.count((82, b"cd")) == 1
    assert DhcpPacket.decode(p.encode()) == p


def test_pad_bytes_and_missing_end_tolerated() -> None:
    data = header() + COOKIE + b"\x00\x00\x35\x01\x03\x00\x0c\x02hi"
    p = DhcpPacket.decode(data)
    assert p.options == ((53, b"\x03"), (12, b"hi"))


def test_bytes_after_end_are_padding() -> None:
    p = DhcpPacket.decode(header() + COOKIE + b"\x35\x01\x01\xff\x99\x05garbage")
    assert p.options == ((53, b"\x01"),)


def test_overloaded_file_and_sname_become_options() -> None:
    file = b"\x2b\x04\x06\x01\x08\xff"
    sname = b"\x0c\x04host\xff"
    data = header(sname=sname, file=file) + COOKIE + b"\x35\x01\x02\x34\x01\x03\xff"
    p = DhcpPacket.decode(data)
    assert p.file == b"" and p.sname == b""
    assert p.options == ((53, b"\x02"), (43, b"\x06\x01\x08\xff"), (12, b"host"))
    assert DhcpPacket.decode(p.encode()) == p


def test_hlen_zero_and_16() -> None:
    p0 = DhcpPacket.decode(header(hlen=0) + COOKIE + b"\x35\x01\x01\xff")
    assert p0.chaddr == b"" and p0.mac == ""
    p16 = DhcpPacket.decode(header(hlen=16, chaddr=bytes(range(16))) + COOKIE + b"\x35\x01\x01\xff")
    assert p16.chaddr == bytes(range(16))


def test_dump_is_stable_text() -> None:
    text = DhcpPacket.decode(DISCOVER).dump()
    assert "chaddr  d0:50:99:4e:05:57" in text
    assert "53 MESSAGE_TYPE       DISCOVER (1)" in text
    assert "93 CLIENT_ARCH        0 (x86 BIOS)" in text
    assert '60 VENDOR_CLASS       "PXEClient:Arch:00000:UNDI:002001"' in text
    assert text == DhcpPacket.decode(DISCOVER).dump()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x01", "too short"),  # the nobodd 1-byte case
        (DISCOVER[:239], "too short"),
        (header() + b"\0\0\0\0" + DISCOVER_OPTS, "magic cookie"),  # dpkt accepts a zero cookie
        (header() + b"\x63\x82\x53\x64" + DISCOVER_OPTS, "magic cookie"),
        (header() + COOKIE + b"\x35\x01\x01\x3c\x20PXE", "overruns"),  # dpkt silently truncates this
        (header() + COOKIE + b"\x35\x01\x01\x3c", "no length byte"),  # dpkt: bare IndexError
        (header(hlen=17) + COOKIE + b"\x35\x01\x01\xff", "hardware address length"),
        (header(hlen=255) + COOKIE + b"\x35\x01\x01\xff", "hardware address length"),
        (header() + COOKIE + b"\x0c\x02hi\xff", "missing option 53"),
        (header() + COOKIE, "missing option 53"),
        (header() + COOKIE + b"\x35\x02\x01\x01\xff", "option 53 has length 2"),
        (header() + COOKIE + b"\x35\x01\x01\x5d\x00\xff", "option 93"),
        (header() + COOKIE + b"\x35\x01\x01\x5d\x03\x00\x00\x07\xff", "option 93"),
        (header() + COOKIE + b"\x35\x01\x01\x5e\x02\x01\x02\xff", "option 94"),
        (header() + COOKIE + b"\x35\x01\x01\x61\x10" + bytes(16) + b"\xff", "option 97"),
        (header() + COOKIE + b"\x35\x01\x01\x61\x01\x00\xff", "option 97"),
        (header() + COOKIE + b"\x35\x01\x01\x34\x01\x04\xff", "option 52"),
        (header(file=b"\x0c\xffab") + COOKIE + b"\x35\x01\x01\x34\x01\x01\xff", "overruns"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{len(v)}B",
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        DhcpPacket.decode(data)


def test_empty_option_97_is_not_malformed() -> None:
    p = DhcpPacket.decode(header() + COOKIE + b"\x35\x01\x01\x61\x00\xff")
    assert p.option(Opt.CLIENT_UUID) == b""


def test_htype_is_not_checked_by_the_codec() -> None:
    p = DhcpPacket.decode(header(htype=32) + COOKIE + b"\x35\x01\x01\xff")
    assert p.htype == 32


def test_constructor_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        DhcpPacket(op=1, xid=1 << 32, chaddr=MAC)
    with pytest.raises(ValueError):
        DhcpPacket(op=1, xid=1, chaddr=bytes(17))
    with pytest.raises(ValueError):
        DhcpPacket(op=1, xid=1, chaddr=MAC, options=((53, bytes(256)),))
    with pytest.raises(ValueError):
        DhcpPacket(op=1, xid=1, chaddr=MAC, options=((255, b""),))


def test_reply_to_equals_the_constructor() -> None:
    """The reply constructor skips re-checking what the request already carries: it must build what
    the plain constructor builds, field for field and on the wire."""
    request = DhcpPacket.decode(
        header(hops=2, addrs=("0.0.0.0", "0.0.0.0", "0.0.0.0", "10.1.0.1")) + COOKIE + DISCOVER_OPTS
    )
    flags, ciaddr, siaddr, file = 0x8000, IPv4Address("10.1.0.7"), IPv4Address("10.0.0.5"), b"undionly.kpxe"
    opts = ((53, b"\x02"), (54, siaddr.packed), (60, b"PXEClient"))
    reply = DhcpPacket.reply_to(request, flags=flags, ciaddr=ciaddr, siaddr=siaddr, file=file, options=opts)
    plain = DhcpPacket(
        op=2,
        xid=request.xid,
        chaddr=request.chaddr,
        htype=request.htype,
        flags=flags,
        ciaddr=ciaddr,
        siaddr=siaddr,
        giaddr=request.giaddr,
        file=file,
        options=opts,
    )
    assert reply == plain and repr(reply) == repr(plain)
    assert reply.encode() == plain.encode()
    assert reply.option(Opt.SERVER_ID) == IPv4Address("10.0.0.5").packed and reply.has_option(60)
    assert DhcpPacket.decode(reply.encode()) == reply


@pytest.mark.parametrize(("flags", "file"), [(1 << 16, b""), (-1, b""), (0, bytes(129)), (0, b"a\0b")])
def test_reply_to_rejects_what_the_constructor_rejects(flags: int, file: bytes) -> None:
    request = DhcpPacket.decode(DISCOVER)
    for build in (
        lambda: DhcpPacket.reply_to(
            request, flags=flags, ciaddr=request.ciaddr, siaddr=request.siaddr, file=file, options=()
        ),
        lambda: DhcpPacket(op=2, xid=request.xid, chaddr=request.chaddr, flags=flags, file=file),
    ):
        with pytest.raises(ValueError):
            build()


def test_encode_writes_the_header_fields() -> None:
    p = DhcpPacket(
        op=2,
        xid=0x01020304,
        chaddr=MAC,
        flags=0x8000,
        siaddr=IPv4Address("10.0.0.5"),
        giaddr=IPv4Address("10.1.0.1"),
        file=b"undionly.kpxe",
        options=((53, b"\x02"),),
    )
    wire = p.encode()
    assert wire[:4] == b"\x02\x01\x06\x00" and wire[4:8] == b"\x01\x02\x03\x04"
    assert wire[20:24] == IPv4Address("10.0.0.5").packed and wire[24:28] == IPv4Address("10.1.0.1").packed
    assert wire[236:240] == COOKIE and wire[240:244] == b"\x35\x01\x02\xff"
    assert wire[108:121] == b"undionly.kpxe"
