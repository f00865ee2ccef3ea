"""TFTP codec: every packet type from literal bytes, round trips, malformed input."""

from __future__ import annotations

import pytest

from proxydhcp.errors import MalformedPacket
from proxydhcp.tftp.packet import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Opcode,
    Request,
    data_header,
    decode,
)

RRQ = b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001468\x00"


def test_rrq_from_bytes() -> None:
    packet = decode(RRQ)
    assert packet == Request(Opcode.RRQ, "pxelinux.0", "octet", (("tsize", "0"), ("blksize", "1468")))
    assert packet.encode() == RRQ


def test_rrq_without_options_and_wrq() -> None:
    assert decode(b"\x00\x01a\x00netascii\x00") == Request(Opcode.RRQ, "a", "netascii")
    assert decode(b"\x00\x02up\x00octet\x00") == Request(Opcode.WRQ, "up", "octet")


def test_rrq_padding_and_junk_tolerated() -> None:
    # PA-RISC clients pad the RRQ to 516 bytes (dnsmasq 368ceff); a half option is dropped.
    padded = RRQ + b"\x00" * 40
    assert decode(padded) == decode(RRQ)
    assert decode(RRQ + b"windowsize\x00") == decode(RRQ)
    assert decode(RRQ + b"junk-without-nul") == decode(RRQ)


def test_rrq_non_utf8_name_survives() -> None:
    packet = decode(b"\x00\x01caf\xe9\x00octet\x00")
    assert isinstance(packet, Request)
    assert packet.encode() == b"\x00\x01caf\xe9\x00octet\x00"


def test_data() -> None:
    assert decode(b"\x00\x03\x00\x07hello") == Data(7, b"hello")
    assert decode(b"\x00\x03\xff\xff") == Data(65535, b"")
    assert Data(1, b"x").encode() == b"\x00\x03\x00\x01x"
    assert data_header(65536 + 2) == b"\x00\x03\x00\x02"


def test_ack() -> None:
    assert decode(b"\x00\x04\x01\x00") == Ack(256)
    assert Ack(0).encode() == b"\x00\x04\x00\x00"


def test_error() -> None:
    assert decode(b"\x00\x05\x00\x01File not found\x00") == Error(1, "File not found")
    assert decode(b"\x00\x05\x00\x08") == Error(8, "")  # EDK2 tsize probe abort sends a bare code
    assert Error.of(ErrorCode.UNKNOWN_TID).encode() == b"\x00\x05\x00\x05Unknown transfer ID\x00"


def test_oack() -> None:
    raw = b"\x00\x06blksize\x001468\x00tsize\x0042\x00"
    assert decode(raw) == OAck((("blksize", "1468"), ("tsize", "42")))
    assert OAck((("blksize", "1468"), ("tsize", "42"))).encode() == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "too short"),
        (b"\x00", "too short"),  # the nobodd 1-byte case
        (b"\x00\x09abc", "unknown opcode"),
        (b"\x00\x00", "unknown opcode"),
        (b"\x00\x01name-without-nul", "filename and mode"),
        (b"\x00\x01name\x00", "filename and mode"),
        (b"\x00\x01\x00octet\x00", "empty filename"),
        (b"\x00\x03\x00", "DATA too short"),
        (b"\x00\x04\x00", "ACK too short"),
        (b"\x00\x04\x00\x01\x00", "trailing"),
        (b"\x00\x05\x00", "ERROR too short"),
        (b"\x00\x06blksize\x00", "no value"),
    ],
)
def test_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket, match=reason):
        decode(raw)
