"""build_reply per firmware type: what each client must see (PROTOCOL.md §1.2/§1.3)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from proxydhcp.config import Settings
from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.options import decode_pxe_suboptions
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.pxe.classify import ClientInfo, classify
from proxydhcp.pxe.policy import BootDecision, Receiver, decide
from proxydhcp.pxe.reply import build_reply

RequestFactory = Callable[..., DhcpPacket]
ME = IPv4Address("10.77.0.2")
LOCAL = Receiver(ME, IPv4Network("10.77.0.0/24"))
LEASE_OPTIONS = {1, 3, 6, 51, 58, 59}
SETTINGS = Settings(
    subnet=[{"cidr": "10.77.0.0/24"}, {"cidr": "10.78.0.0/24", "next_server": "10.78.0.6"}],
    boot={
        "bios": "undionly.kpxe",
        "efi-x64": "ipxe.efi",
        "efi-arm64": "arm64.efi",
        "ipxe": "boot.ipxe",
        "efi-x64-http": "http://10.77.0.2/ipxe.efi",
    },
)


@pytest.fixture
def answer(make_request: RequestFactory) -> Callable[..., tuple[DhcpPacket, DhcpPacket]]:
    """request fields → (request, reply decoded from the wire)."""

    def run(port: int = 67, source: str = "0.0.0.0", **fields: Any) -> tuple[DhcpPacket, DhcpPacket]:
        if port == 4011:
            fields.setdefault("mtype", 3)
        request = DhcpPacket.decode(make_request(**fields).encode())
        client = classify(request, port=port, source_ip=IPv4Address(source))
        assert isinstance(client, ClientInfo), client
        decision = decide(client, SETTINGS, LOCAL)
        assert isinstance(decision, BootDecision), decision
        wire = build_reply(request, client, decision).encode()
        assert len(wire) >= 300
        reply = DhcpPacket.decode(wire)
        check_invariants(request, reply)
        return request, reply

    return run


def check_invariants(request: DhcpPacket, reply: DhcpPacket) -> None:
    assert reply.op == 2 and reply.yiaddr == IPv4Address(0)
    assert not LEASE_OPTIONS & {code for code, _ in reply.options}
    assert (reply.xid, reply.chaddr, reply.htype, reply.giaddr) == (
        request.xid,
        request.chaddr,
        request.htype,
        request.giaddr,
    )
    assert reply.option(Opt.SERVER_ID) == ME.packed
    assert [code for code, _ in reply.options][:3] == [53, 54, 60]
    assert reply.option(Opt.CLIENT_UUID) == request.option(Opt.CLIENT_UUID) or not request.option(97)


def test_bios_offer(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, reply = answer(arch=0)
    assert reply.message_type == MessageType.OFFER and reply.broadcast
    assert reply.option(Opt.VENDOR_CLASS) == b"PXEClient"
    assert reply.option(Opt.VENDOR_SPECIFIC) == b"\x06\x01\x08\xff"  # discovery control 8: use this file
    assert decode_pxe_suboptions(reply.option(Opt.VENDOR_SPECIFIC) or b"") == {6: b"\x08"}
    assert reply.siaddr == ME and reply.file == b"undionly.kpxe" and reply.ciaddr == IPv4Address(0)
    assert reply.encode()[108 + len(b"undionly.kpxe")] == 0  # NUL-terminated
    assert reply.option(Opt.BOOTFILE) == b"undionly.kpxe"  # 55 asked for 66/67
    assert reply.option(Opt.TFTP_SERVER) == b"10.77.0.2"


@pytest.mark.parametrize(("arch", "file"), [(7, b"ipxe.efi"), (9, b"ipxe.efi"), (11, b"arm64.efi")])
def test_uefi_binl_offer_then_ack(
    answer: Callable[..., tuple[DhcpPacket, DhcpPacket]], arch: int, file: bytes
) -> None:
    _, offer = answer(arch=arch)
    assert offer.message_type == MessageType.OFFER and offer.broadcast
    assert offer.option(Opt.VENDOR_CLASS) == b"PXEClient"
    assert offer.option(Opt.VENDOR_SPECIFIC) is None  # no 43: EDK II takes it as BINL and comes to 4011
    assert offer.file == b"" and offer.option(Opt.BOOTFILE) is None
    assert offer.siaddr == ME
    request, ack = answer(port=4011, arch=arch, ciaddr="10.77.0.50", source="10.77.0.50")
    assert ack.message_type == MessageType.ACK and not ack.broadcast
    assert ack.ciaddr == request.ciaddr and ack.siaddr == ME and ack.file == file
    assert ack.option(Opt.VENDOR_SPECIFIC) is None


def test_binl_offer_siaddr_is_us_even_with_another_tftp_server(
    answer: Callable[..., tuple[DhcpPacket, DhcpPacket]],
) -> None:
    _, offer = answer(arch=7, giaddr="10.78.0.1")
    assert offer.siaddr == ME  # the 4011 REQUEST goes to siaddr
    _, ack = answer(port=4011, arch=7, ciaddr="10.78.0.50", source="10.78.0.50", giaddr="10.78.0.1")
    assert ack.siaddr == IPv4Address("10.78.0.6")


def test_ack_echoes_boot_item(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, ack = answer(port=4011, arch=7, source="10.77.0.50", extra=((43, b"\x47\x04\x80\x01\x00\x00\xff"),))
    assert decode_pxe_suboptions(ack.option(Opt.VENDOR_SPECIFIC) or b"") == {71: b"\x80\x01\x00\x00"}


@pytest.mark.parametrize("extra", [((77, b"iPXE"),), ((175, b"\x13\x01\x01"),), ((77, b"\x04iPXE"),)])
def test_ipxe_clients_get_the_script(
    answer: Callable[..., tuple[DhcpPacket, DhcpPacket]], extra: tuple[tuple[int, bytes], ...]
) -> None:
    _, reply = answer(arch=0, extra=extra)
    assert reply.file == b"boot.ipxe" and reply.siaddr == ME


def test_ipxe_efi_offer_then_ack(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, offer = answer(arch=7, extra=((77, b"iPXE"),))
    assert offer.file == b""  # still BINL: iPXE then asks on 4011
    _, ack = answer(port=4011, arch=7, source="10.77.0.50", vendor=b"PXEClient", extra=((77, b"iPXE"),))
    assert ack.file == b"boot.ipxe"


def test_http_client(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, reply = answer(arch=16, vendor=b"HTTPClient:Arch:00016:UNDI:003001")
    assert reply.option(Opt.VENDOR_CLASS) == b"HTTPClient"
    assert reply.file == b"http://10.77.0.2/ipxe.efi" and reply.option(Opt.VENDOR_SPECIFIC) is None
    assert reply.siaddr == IPv4Address(0) and reply.option(Opt.TFTP_SERVER) is None


def test_relayed_offer(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, reply = answer(arch=0, giaddr="10.78.0.1", hops=1, flags=0)
    assert reply.giaddr == IPv4Address("10.78.0.1") and reply.broadcast and reply.hops == 0
    assert reply.siaddr == IPv4Address("10.78.0.6")


def test_option_82_echoed_verbatim_last(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    agent = ((82, b"\x01\x04port"), (82, b"\x02\x03abc"))
    _, reply = answer(arch=0, giaddr="10.78.0.1", extra=agent)
    assert reply.options[-2:] == agent
    _, ack = answer(port=4011, arch=7, source="10.78.0.50", giaddr="10.78.0.1", extra=agent)
    assert ack.options[-2:] == agent


def test_missing_uuid_tolerated(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    for uuid in (None, b""):
        _, reply = answer(arch=7, uuid=uuid)
        assert reply.option(Opt.CLIENT_UUID) is None


def test_no_66_67_unless_asked(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, reply = answer(arch=0, prl=bytes([1, 3, 43, 60]))
    assert reply.option(Opt.BOOTFILE) is None and reply.option(Opt.TFTP_SERVER) is None
    assert reply.file == b"undionly.kpxe"  # the header always carries it
    _, reply = answer(arch=0, prl=bytes([67]))
    assert reply.option(Opt.BOOTFILE) == b"undionly.kpxe" and reply.option(Opt.TFTP_SERVER) is None


def test_request_flags_kept_on_ack(answer: Callable[..., tuple[DhcpPacket, DhcpPacket]]) -> None:
    _, ack = answer(port=4011, arch=7, source="10.77.0.50", flags=0x8000)
    assert ack.broadcast
