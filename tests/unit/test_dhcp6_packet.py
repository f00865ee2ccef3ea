"""DHCPv6 codec: byte fixtures, every malformation kind, relay nesting, typed option getters, and
Hypothesis properties (total decode; encode(decode(x)) is a fixed point)."""

from __future__ import annotations

import contextlib
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import (
    MAX_RELAY_DEPTH,
    Malformation,
    MalformedDhcp6,
    Message,
    MessageType,
    Opt,
    RelayMessage,
    decode,
    dump,
)
from proxydhcp.errors import MalformedPacket, ProxyDhcpError
from tests.dhcp6_requests import DUID_LLT, PXE_VENDOR, edk2_solicit, opt, relay_forward

# EDK II's PXE Solicit (issue 20 step 2), written out byte by byte.
SOLICIT_HEX = (
    "01" "3a5b7c"  # Solicit, xid
    "0001" "000e" "00010001" "2c9a1b30" "525400123456"  # Client ID: DUID-LLT
    "0008" "0002" "0000"  # Elapsed Time
    "0003" "000c" "00000001" "00000000" "00000000"  # IA_NA
    "0006" "0008" "003b" "003c" "0017" "0010"  # ORO [59, 60, 23, 16]
    "003e" "0003" "010300"  # NII: UNDI 3.0
    "003d" "0002" "0007"  # Client Arch: x64 UEFI
    "0010" "0026" "00000157" "0020"  # Vendor Class: enterprise 343, one item of 32 bytes
) + PXE_VENDOR.hex()  # fmt: skip


def test_edk2_solicit_decodes_to_its_options() -> None:
    data = bytes.fromhex(SOLICIT_HEX)
    assert data == edk2_solicit()
    msg = decode(data)
    assert isinstance(msg, Message)
    assert msg.msg_type == MessageType.SOLICIT and msg.transaction_id == 0x3A5B7C
    assert [code for code, _ in msg.options] == [1, 8, 3, 6, 62, 61, 16]
    assert options.duid(msg.option(Opt.CLIENTID)) == DUID_LLT
    assert options.duid_mac(msg.option(Opt.CLIENTID)) == "52:54:00:12:34:56"
    assert options.oro(msg.option(Opt.ORO)) == (59, 60, 23, 16)
    assert options.client_arch_types(msg.option(Opt.CLIENT_ARCH_TYPE)) == (7,)
    assert options.nii(msg.option(Opt.NII)) == options.Nii(1, 3, 0)
    assert options.elapsed_time(msg.option(Opt.ELAPSED_TIME)) == 0
    vendor = options.vendor_class(msg.option(Opt.VENDOR_CLASS))
    assert vendor == options.VendorClass(343, (PXE_VENDOR,))
    assert options.vendor_arch(vendor.data) == 7
    assert msg.encode() == data
    assert dump(msg).startswith("SOLICIT xid=0x3a5b7c\n  1 clientid: 00010001")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", Malformation.TOO_SHORT),
        (b"\x01", Malformation.TOO_SHORT),
        (b"\x01\x00\x00", Malformation.TOO_SHORT),
        (b"\x00\x00\x00\x00", Malformation.BAD_MESSAGE_TYPE),
        (b"\x01\x00\x00\x01\x00", Malformation.OPTION_TRUNCATED),  # one stray byte
        (b"\x01\x00\x00\x01\x00\x01\x00", Malformation.OPTION_TRUNCATED),  # three
        (b"\x01\x00\x00\x01" + bytes.fromhex("00010005") + b"abcd", Malformation.OPTION_OVERRUN),
        (b"\x01\x00\x00\x01" + bytes.fromhex("0001ffff"), Malformation.OPTION_OVERRUN),
        (b"\x0c\x00" + bytes(31), Malformation.TOO_SHORT),  # relay header is 34 bytes
        (b"\x0c\x00" + bytes(32), Malformation.NO_RELAY_MSG),
        (b"\x0d\x00" + bytes(32) + opt(18, b"x"), Malformation.NO_RELAY_MSG),
        (b"\x0c\x00" + bytes(32) + opt(9, b""), Malformation.TOO_SHORT),  # empty inner message
        (b"\x0c\x00" + bytes(32) + opt(9, b"\x01\x00\x00\x01\xff"), Malformation.OPTION_TRUNCATED),
        (bytes(65536), Malformation.TOO_LONG),
    ],
)
def test_malformed_bytes_have_a_typed_reason(data: bytes, kind: Malformation) -> None:
    with pytest.raises(MalformedDhcp6) as info:
        decode(data)
    assert info.value.kind is kind
    assert isinstance(info.value, MalformedPacket) and isinstance(info.value, ProxyDhcpError)
    assert str(info.value).startswith("DHCPv6 " + kind.value)


def test_unassigned_message_types_decode_and_are_left_to_classify() -> None:
    assert decode(b"\x63\x00\x00\x07").msg_type == 99  # type: ignore[union-attr]


def nested(depth: int) -> bytes:
    data = edk2_solicit()
    for hop in range(depth):
        data = relay_forward(
            data, "2001:db8:1::1" if hop == 0 else "::", hops=hop, interface_id=b"if%d" % hop
        )
    return data


def test_relay_forward_carries_its_inner_message_and_interface_id() -> None:
    pkt = decode(nested(2))
    assert isinstance(pkt, RelayMessage) and pkt.msg_type == MessageType.RELAY_FORW
    assert pkt.hop_count == 1 and pkt.link_address == IPv6Address("::")
    assert pkt.option(Opt.INTERFACE_ID) == b"if1"
    assert not pkt.has_option(Opt.RELAY_MSG)  # option 9 is the decoded `inner`
    assert isinstance(pkt.inner, RelayMessage) and pkt.inner.link_address == IPv6Address("2001:db8:1::1")
    assert pkt.innermost().encode() == edk2_solicit()
    assert pkt.encode() == nested(2)
    assert "relay-msg:" in dump(pkt)


def test_relay_nesting_is_bounded() -> None:
    assert isinstance(decode(nested(MAX_RELAY_DEPTH)), RelayMessage)
    with pytest.raises(MalformedDhcp6) as info:
        decode(nested(MAX_RELAY_DEPTH + 1))
    assert info.value.kind is Malformation.RELAY_TOO_DEEP


def test_hostile_nesting_to_the_datagram_limit_is_cheap() -> None:
    data = edk2_solicit()
    while len(data) < 65000:  # ~1800 levels: decode stops at the bound instead of recursing
        data = relay_forward(data, "::", interface_id=None)
    with pytest.raises(MalformedDhcp6):
        decode(data)


@pytest.mark.parametrize(
    ("getter", "value"),
    [
        (options.duid, b"\x00\x01"),  # a type and no body
        (options.duid, bytes(131)),
        (options.oro, b"\x00\x3b\x00"),
        (options.preference, b""),
        (options.preference, b"\x01\x02"),
        (options.elapsed_time, b"\x00"),
        (options.vendor_class, b"\x00\x00\x01"),
        (options.vendor_class, bytes.fromhex("00000157") + b"\x00"),  # truncated item length
        (options.vendor_class, bytes.fromhex("00000157 0009") + b"PXE"),  # item overruns
        (options.user_class, b"\x00\x05iPXE"),
        (options.client_arch_types, b""),
        (options.client_arch_types, b"\x00\x07\x00"),
        (options.nii, b"\x01\x03"),
        (options.bootfile_url, b"\xff\xfe"),
        (options.bootfile_params, b"\x00\x02\xff\xfe"),
    ],
)
def test_option_getters_reject_wrong_lengths(getter: object, value: bytes) -> None:
    with pytest.raises(MalformedDhcp6) as info:
        getter(value)  # type: ignore[operator]
    assert info.value.kind is Malformation.BAD_OPTION


def test_option_values() -> None:
    assert options.duid_mac(options.duid_ll(bytes.fromhex("020000aabbcc"))) == "02:00:00:aa:bb:cc"
    assert options.duid_mac(bytes.fromhex("0002 00000157 1234")) is None  # DUID-EN: no MAC
    assert options.duid_mac(bytes.fromhex("0003 0006 aabbccddeeff")) is None  # not Ethernet
    assert options.duid_mac(bytes.fromhex("0003 0001 aabbcc")) is None  # short
    assert options.user_class(bytes.fromhex("0004") + b"iPXE") == (b"iPXE",)
    assert options.bootfile_params(options.encode_bootfile_params(["a", "bc"])) == ("a", "bc")
    assert options.vendor_arch([b"HTTPClient:Arch:00016:UNDI:003000"]) == 16
    assert options.vendor_arch([b"PXEClient:Arch:99999"]) is None
    assert options.vendor_arch([b"PXEClient"]) is None
    assert options.preference(b"\xff") == 255
    for absent in (options.duid, options.preference, options.vendor_class, options.nii, options.bootfile_url):
        assert absent(None) is None  # type: ignore[operator]


def test_encode_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError):
        Message(MessageType.RELAY_FORW, 0).encode()
    with pytest.raises(ValueError):
        Message(1, 1 << 24).encode()
    with pytest.raises(ValueError):
        Message(1, 0, ((1, bytes(65536)),)).encode()


# -- properties -------------------------------------------------------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    seed = edk2_solicit()
    relayed = nested(2)
    return st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from([seed, relayed]), st.integers(0, 400), st.binary(max_size=8)).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
        ),
        st.tuples(st.sampled_from([seed, relayed]), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),
    )


@settings(max_examples=400, deadline=None)
@given(_mutations())
def test_decode_is_total_and_reencodes_to_a_fixed_point(data: bytes) -> None:
    try:
        pkt = decode(data)
    except MalformedDhcp6:
        return
    dump(pkt)
    again = decode(pkt.encode())
    assert again == pkt
    if not isinstance(pkt, RelayMessage):
        assert pkt.encode() == data  # a client/server message is kept byte for byte


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_option_getters_are_total(value: bytes) -> None:
    for getter in (
        options.duid, options.oro, options.preference, options.elapsed_time, options.vendor_class,
        options.user_class, options.client_arch_types, options.nii, options.bootfile_url,
        options.bootfile_params, options.duid_mac,
    ):  # fmt: skip
        with contextlib.suppress(MalformedDhcp6):
            getter(value)  # type: ignore[operator]
