"""Property tests of the TFTP codec and option negotiation: decoding is total, encoding round-trips,
negotiated values always lie within the RFC ranges and the configured caps."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxydhcp.errors import MalformedPacket
from proxydhcp.tftp import packet as tftp
from proxydhcp.tftp.options import MAX_BLKSIZE, MIN_BLKSIZE, WINDOW_LIMIT, negotiate

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that survives NUL-terminated framing: no NUL, any other code point (surrogateescape allowed).
field = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40)
name = field.filter(bool)
option_name = st.sampled_from(["blksize", "BLKSIZE", "windowsize", "timeout", "tsize", "msftwindow"]) | name
option_value = (
    st.sampled_from(["0", "8", "512", "1468", "65464", "65465", "-1", "1e3", " 8", "٣", "9" * 30]) | field
)


@FAST
@given(st.binary(max_size=1600))
@example(b"\x00\x01\x30\x30")  # tcpdump-tftp-heapoverflow.pcap
@example(b"\x00\x01\x00octet\x00")
@example(b"\x00\x05\x00\x01")
@example(b"\x00\x06blksize\x00")
@example(b"\xff\xff")
def test_decode_raises_only_malformed(data: bytes) -> None:
    try:
        tftp.decode(data)
    except MalformedPacket as exc:
        assert str(exc)  # a reason for the log line


@FAST
@given(
    st.sampled_from([tftp.Opcode.RRQ, tftp.Opcode.WRQ]),
    name,
    st.sampled_from(["octet", "netascii", "OCTET", "mail", ""]) | field,
    st.lists(st.tuples(option_name, option_value), max_size=6),
)
def test_request_round_trip(
    opcode: tftp.Opcode, filename: str, mode: str, options: list[tuple[str, str]]
) -> None:
    # The decoder stops at the first empty option name (trailing NUL padding): such a list cannot round-trip.
    options = options[: next((i for i, (n, _) in enumerate(options) if not n), len(options))]
    pkt = tftp.Request(opcode, filename, mode, tuple(options))
    assert tftp.decode(pkt.encode()) == pkt


@FAST
@given(st.integers(0, tftp.MAX_BLOCK), st.binary(max_size=1468))
def test_data_round_trip(block: int, payload: bytes) -> None:
    pkt = tftp.Data(block, payload)
    assert tftp.decode(pkt.encode()) == pkt
    assert pkt.encode()[:4] == tftp.data_header(block)


@FAST
@given(st.integers(0, tftp.MAX_BLOCK))
def test_ack_round_trip(block: int) -> None:
    assert tftp.decode(tftp.Ack(block).encode()) == tftp.Ack(block)


@FAST
@given(
    st.sampled_from(list(tftp.ErrorCode)),
    st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=60),
)
def test_error_round_trip(code: tftp.ErrorCode, message: str) -> None:
    assert tftp.decode(tftp.Error(code, message).encode()) == tftp.Error(code, message)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["blksize", "tsize", "windowsize", "timeout"]), st.from_regex(r"\A[0-9]{1,6}\Z")
        ),
        max_size=4,
    )
)
def test_oack_round_trip(options: list[tuple[str, str]]) -> None:
    pkt = tftp.OAck(tuple(options))
    assert tftp.decode(pkt.encode()) == pkt


@FAST
@given(st.binary(max_size=600))
def test_decode_encode_fixed_point(data: bytes) -> None:
    """Whatever decodes re-encodes to bytes that decode to the same value (the server only re-sends
    what it built, but its logs and tests read decoded peers' packets)."""
    try:
        pkt = tftp.decode(data)
    except MalformedPacket:
        return
    if isinstance(pkt, tftp.Request | tftp.Data | tftp.Ack):
        assert tftp.decode(pkt.encode()) == pkt


@FAST
@given(
    st.lists(st.tuples(option_name, option_value), max_size=8),
    st.booleans(),
    st.none() | st.integers(0, 2**40),
    st.integers(MIN_BLKSIZE, MAX_BLKSIZE),
    st.integers(1, 65535),
    st.none() | st.integers(0, 9000),
)
@example([("blksize", "1468"), ("windowsize", "4"), ("msftwindow", "31")], False, 10_000_000, 1468, 16, 1500)
@example(
    [("blksize", "99999999999999999999"), ("windowsize", "-1"), ("timeout", "0")], False, 1, 1468, 16, None
)
@example([("blksize", "8"), ("BLKSIZE", "65464")], False, 1, 65464, 16, None)
def test_negotiation_stays_in_range(
    options: list[tuple[str, str]],
    netascii: bool,
    size: int | None,
    max_blksize: int,
    max_windowsize: int,
    mtu: int | None,
) -> None:
    result = negotiate(
        tuple(options),
        netascii=netascii,
        size=size,
        max_blksize=max_blksize,
        max_windowsize=max_windowsize,
        mtu=mtu,
    )
    acked = dict(result.oack)
    if "blksize" in acked:
        assert MIN_BLKSIZE <= result.blksize <= max(MIN_BLKSIZE, max_blksize)
        assert mtu is None or mtu - 32 < MIN_BLKSIZE or result.blksize <= mtu - 32
        assert acked["blksize"] == str(result.blksize)
    else:
        assert result.blksize == 512  # without an acknowledged option the RFC 1350 size applies
    if "windowsize" in acked:
        assert 1 <= result.windowsize <= min(max_windowsize, WINDOW_LIMIT)
        assert acked["windowsize"] == str(result.windowsize)
    else:
        assert result.windowsize == 1
    assert result.timeout is None or 1 <= result.timeout <= 255
    names = [n for n, _ in result.oack]
    assert len(names) == len(set(names)), "an option acknowledged twice"
    assert set(names) <= {"blksize", "windowsize", "timeout", "tsize"}
    for n, v in result.oack:
        assert v.isascii() and v.isdigit(), f"OACK value {v!r} for {n} is not a decimal integer"
    if netascii:
        assert "windowsize" not in names and "tsize" not in names
    if size is None:
        assert "tsize" not in names


def test_negotiation_rejects_non_integers() -> None:
    """Values that are not plain decimal integers in range are not acknowledged (the client keeps the
    RFC 1350 default) rather than crashing or being clamped from garbage."""
    for value in ("abc", "-512", "+512", "1e3", "0x200", " 512", "512 ", "٥١٢", "", "9" * 12, "7", "65465"):
        result = negotiate(
            (("blksize", value),), netascii=False, size=1, max_blksize=65464, max_windowsize=16
        )
        assert result.blksize == 512 and result.oack == (), value


@pytest.mark.parametrize("value,expected", [("1468", 1468), ("8", 8), ("65464", 1468)])
def test_negotiation_caps_blksize(value: str, expected: int) -> None:
    result = negotiate((("blksize", value),), netascii=False, size=1, max_blksize=1468, max_windowsize=16)
    assert result.blksize == expected and result.oack == (("blksize", str(expected)),)
