"""Hypothesis: the decoder is total, and every PXE request that decodes gets a reply that is never
an address offer."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxydhcp.config import Settings
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import Ignore
from proxydhcp.pxe.classify import ClientInfo, classify
from proxydhcp.pxe.policy import BootDecision, Receiver, decide
from proxydhcp.pxe.reply import build_reply

COOKIE = b"\x63\x82\x53\x63"
LEASE_OPTIONS = {1, 3, 6, 51, 58, 59}
SETTINGS = Settings(
    subnet=[{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}],
    boot={"bios": "undionly.kpxe", "efi-x64": "ipxe.efi", "efi-arm64": "arm64.efi", "ipxe": "boot.ipxe",
          "efi-ia32": "ia32.efi", "efi-x64-http": "http://10.0.0.1/x.efi", "efi-arm32": "arm32.efi"},
)  # fmt: skip
RECEIVER = Receiver(IPv4Address("10.77.0.2"), IPv4Network("10.77.0.0/24"))


def seed_packet() -> bytes:
    """A BIOS DISCOVER like netboot-dhcp.pcap frame 1, the base for mutations."""
    opts = [
        (53, b"\x01"),
        (55, bytes([1, 3, 43, 60, 66, 67])),
        (97, b"\x00" + bytes(range(16))),
        (93, b"\x00\x00"),
        (94, b"\x01\x02\x01"),
        (60, b"PXEClient:Arch:00000:UNDI:002001"),
    ]
    return DhcpPacket(op=1, xid=0x9B4E0557, chaddr=bytes.fromhex("d050994e0557"), flags=0x8000,
                      options=tuple(opts)).encode(min_size=0)  # fmt: skip


SEED = seed_packet()


def decode_or_malformed(data: bytes) -> DhcpPacket | None:
    try:
        packet = DhcpPacket.decode(data)
    except MalformedPacket as exc:
        assert str(exc)  # a reason fit for a log line
        return None
    assert DhcpPacket.decode(packet.encode()) == packet
    return packet


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    decode_or_malformed(data)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_decode_arbitrary_options_after_a_valid_header(tail: bytes) -> None:
    packet = decode_or_malformed(SEED[:240] + tail)
    if packet is not None:
        pipeline_never_raises(packet)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def pipeline_never_raises(packet: DhcpPacket) -> None:
    """Whatever decodes goes through every step without an exception; any reply is no address offer."""
    for port in (67, 4011):
        client = classify(packet, port=port, source_ip=IPv4Address("10.77.0.50"))
        if isinstance(client, Ignore):
            continue
        decision = decide(client, SETTINGS, RECEIVER)
        if isinstance(decision, Ignore):
            continue
        reply = DhcpPacket.decode(build_reply(packet, client, decision).encode())
        assert reply.yiaddr == IPv4Address(0)
        assert not LEASE_OPTIONS & {code for code, _ in reply.options}


@settings(max_examples=1000)
@given(mutated())
def test_decode_mutated_valid_packets(data: bytes) -> None:
    packet = decode_or_malformed(data)
    if packet is not None:
        pipeline_never_raises(packet)


option_values = st.one_of(
    st.tuples(st.just(93), st.binary(min_size=2, max_size=4).filter(lambda b: len(b) % 2 == 0)),
    st.tuples(st.just(97), st.sampled_from([b"", b"\x00" + bytes(16)])),
    st.tuples(st.just(77), st.sampled_from([b"iPXE", b"\x04iPXE", b"pixiecore"])),
    st.tuples(st.just(175), st.binary(max_size=6)),
    st.tuples(st.just(82), st.binary(max_size=20)),
    st.tuples(st.just(43), st.binary(max_size=12)),
    st.tuples(st.integers(1, 254).filter(lambda c: c not in (52, 53, 93, 94, 97)), st.binary(max_size=20)),
)


@settings(max_examples=500)
@given(
    mtype=st.sampled_from([1, 3, 8]),
    vendor=st.sampled_from([b"PXEClient", b"PXEClient:Arch:00007:UNDI:003016", b"HTTPClient:Arch:00016"]),
    extra=st.lists(option_values, max_size=6),
    giaddr=st.integers(0, 2**32 - 1),
    ciaddr=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 0xFFFF),
    port=st.sampled_from([67, 4011]),
)
def test_every_pxe_request_gets_a_non_address_reply(
    mtype: int, vendor: bytes, extra: list[tuple[int, bytes]], giaddr: int, ciaddr: int, flags: int, port: int
) -> None:
    opts = ((53, bytes([mtype])), (60, vendor), *extra)
    request = DhcpPacket(
        op=1,
        xid=1,
        chaddr=bytes(6),
        flags=flags,
        giaddr=IPv4Address(giaddr),
        ciaddr=IPv4Address(ciaddr),
        options=opts,
    )
    decoded = decode_or_malformed(request.encode())
    if decoded is None:
        return
    client = classify(decoded, port=port, source_ip=IPv4Address("10.77.0.50"))
    if isinstance(client, Ignore):
        return
    assert isinstance(client, ClientInfo)
    decision = decide(client, SETTINGS, RECEIVER)
    if isinstance(decision, Ignore):
        assert str(decision).startswith(("no boot file", "subnet", "boot file"))
        return
    assert isinstance(decision, BootDecision)
    wire = build_reply(decoded, client, decision).encode()
    reply = DhcpPacket.decode(wire)
    assert len(wire) >= 300 and reply.yiaddr == IPv4Address(0) and reply.op == 2
    assert not LEASE_OPTIONS & {code for code, _ in reply.options}
    assert reply.xid == decoded.xid and reply.giaddr == decoded.giaddr
    relay = [o for o in decoded.options if o[0] == 82]
    if relay:
        assert list(reply.options[-len(relay) :]) == relay
