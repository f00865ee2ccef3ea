"""Golden dumps of every DHCP frame of the captures in tests/fixtures, plus the round trip.

Regenerate the .txt files with `UPDATE_GOLDEN=1 python3 -m pytest tests/golden` and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket
from tests.fixtures import DHCP_CAPTURES, FIXTURES

GOLDEN = Path(__file__).resolve().parent
DHCP_PORTS = {67, 68, 4011}


def dhcp_frames(path: Path) -> Iterator[tuple[int, str, bytes]]:
    """(frame number, "src:port -> dst:port", UDP payload) of every DHCP/PXE datagram."""
    with path.open("rb") as handle:
        reader = dpkt.pcapng.Reader(handle) if path.suffix == ".pcapng" else dpkt.pcap.Reader(handle)
        for number, (_, frame) in enumerate(reader, start=1):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            udp = ip.data
            if udp.sport in DHCP_PORTS and udp.dport in DHCP_PORTS:
                src = f"{dpkt.utils.inet_to_str(ip.src)}:{udp.sport}"
                dst = f"{dpkt.utils.inet_to_str(ip.dst)}:{udp.dport}"
                yield number, f"{src} -> {dst}", bytes(udp.data)


def render(path: Path) -> str:
    out: list[str] = []
    for number, addresses, payload in dhcp_frames(path):
        out.append(f"### frame {number}  {addresses}  {len(payload)} bytes")
        try:
            out.append(DhcpPacket.decode(payload).dump())
        except MalformedPacket as exc:
            out.append(f"malformed: {exc}\n")
    return "\n".join(out)


@pytest.mark.parametrize("name", DHCP_CAPTURES)
def test_golden_dump(name: str) -> None:
    text = render(FIXTURES / name)
    assert text.count("### frame") > 0
    golden = GOLDEN / (Path(name).stem + ".txt")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.read_text() == text


@pytest.mark.parametrize("name", DHCP_CAPTURES)
def test_round_trip(name: str) -> None:
    for _, _, payload in dhcp_frames(FIXTURES / name):
        packet = DhcpPacket.decode(payload)
        assert DhcpPacket.decode(packet.encode()) == packet
        assert DhcpPacket.decode(packet.encode(min_size=0)) == packet


def test_netboot_capture_frames() -> None:
    """Anchors independent of the golden text: the dnsmasq-style proxy offer of frame 2 (R-xx §1.2)."""
    frames = [DhcpPacket.decode(p) for _, _, p in dhcp_frames(FIXTURES / "netboot-dhcp.pcap")]
    assert len(frames) == 4
    discover, proxy_offer = frames[0], frames[1]
    assert discover.message_type == 1 and discover.option(93) == b"\x00\x00"
    assert proxy_offer.message_type == 2 and str(proxy_offer.yiaddr) == "0.0.0.0"
    assert proxy_offer.option(60) == b"PXEClient" and proxy_offer.option(97) == discover.option(97)
    assert str(frames[3].giaddr) == "192.168.40.1"


def render_pipeline() -> str:
    """What this service would answer each request of the captures (classify → decide → build_reply)."""
    from ipaddress import IPv4Address

    from proxydhcp.config import Settings
    from proxydhcp.dhcp.delivery import offer_destination, pxe_destination
    from proxydhcp.outcome import Ignore
    from proxydhcp.pxe.classify import classify
    from proxydhcp.pxe.policy import Receiver, decide
    from proxydhcp.pxe.reply import build_reply

    settings = Settings(
        subnet=[{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}],
        boot={"bios": "undionly.kpxe", "efi-x64": "ipxe.efi", "efi-arm64": "arm64.efi", "ipxe": "boot.ipxe"},
    )
    receiver = Receiver(IPv4Address("10.77.0.2"))
    out: list[str] = []
    for name in DHCP_CAPTURES:
        for number, addresses, payload in dhcp_frames(FIXTURES / name):
            request = DhcpPacket.decode(payload)
            dport = int(addresses.rsplit(":", 1)[1])
            if request.op != 1 or dport not in (67, 4011):
                continue
            source = IPv4Address(addresses.split(":", 1)[0])
            sport = int(addresses.split(" -> ")[0].rsplit(":", 1)[1])
            out.append(f"### {name} frame {number}  {addresses}")
            client = classify(request, port=dport, source_ip=source)
            decision = client if isinstance(client, Ignore) else decide(client, settings, receiver)
            if isinstance(decision, Ignore):
                out.append(f"ignored: {decision}\n")
                continue
            assert not isinstance(client, Ignore)
            reply = build_reply(request, client, decision)
            dest = offer_destination(request) if dport == 67 else pxe_destination(request, source, sport)
            out.append(f"rule {decision.rule}, style {decision.offer_style}, to {dest}")
            out.append(reply.dump())
    return "\n".join(out)


def test_golden_pipeline() -> None:
    text = render_pipeline()
    golden = GOLDEN / "pipeline.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.read_text() == text
