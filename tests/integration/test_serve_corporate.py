"""proxydhcp beside a corporate DHCP server on one segment (DESIGN.md §1): ISC dhcpd in "corp" knows
nothing about PXE, proxydhcp in "pxe", a PXE client with no address in "cli"."""

from __future__ import annotations

import shutil
from ipaddress import IPv4Address

import pytest

from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.options import decode_pxe_suboptions
from proxydhcp.dhcp.packet import DhcpPacket
from tests.integration import dhcpclient as dc
from tests.integration.conftest import tftp_root

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

CORP, PXE = "10.77.0.1", "10.77.0.2"
MAC = "52:54:00:77:00:50"
BOOT_FLAGS = [
    "--boot-file", "bios=undionly.kpxe", "--boot-file", "efi-x64=ipxe.efi",
    "--boot-file", "efi-arm64=arm64.efi", "--ipxe-boot-file", "boot.ipxe",
]  # fmt: skip


def _from(got: list[dc.Received], source_ip: str, xid: int) -> list[DhcpPacket]:
    return [r.packet for r in dc.replies_for(got, xid, source_ip=source_ip) if r.packet is not None]


def assert_proxy_reply(pkt: DhcpPacket, mtype: MessageType, request: DhcpPacket) -> None:
    """What every proxydhcp reply carries (DESIGN.md §2): never an address, 54 = us, 60, 97 echoed."""
    assert pkt.message_type == mtype
    assert pkt.yiaddr == IPv4Address(0)
    assert pkt.xid == request.xid and pkt.chaddr == request.chaddr
    assert pkt.option(Opt.SERVER_ID) == IPv4Address(PXE).packed
    assert pkt.option(Opt.VENDOR_CLASS) == b"PXEClient"
    assert pkt.option(Opt.CLIENT_UUID) == request.option(Opt.CLIENT_UUID)
    for lease_option in (1, 3, 6, 51, 58, 59):
        assert not pkt.has_option(lease_option)


def test_lease_from_corporate_server_boot_from_proxy(lab, start_proxy) -> None:
    lab.segment("10.77.0.0/24", {"corp": CORP, "pxe": PXE, "cli": None})
    lab.ns("corp").start_dhcpd(
        "eth0", [("10.77.0.0/24", "10.77.0.100", "10.77.0.150", CORP)], extra="ping-check false;"
    )
    root = tftp_root({"undionly.kpxe": b"x" * 1000})
    try:
        start_proxy(
            "pxe", ["--interface", "eth0", "--subnet", "10.77.0.0/24", *BOOT_FLAGS, "--tftp-root", str(root)]
        )
        client = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")

        # DISCOVER: the corporate OFFER (an address) and the proxy OFFER (a boot file, no address).
        disc = dc.discover(MAC, 0x5001, arch=0)
        got = dc.exchange(
            client, disc, ("255.255.255.255", 67), window=5.0,
            until=lambda g: bool(_from(g, CORP, 0x5001) and _from(g, PXE, 0x5001)),
        )  # fmt: skip
        corp_offer, proxy_offer = _from(got, CORP, 0x5001), _from(got, PXE, 0x5001)
        assert len(corp_offer) == 1 and corp_offer[0].message_type == MessageType.OFFER
        leased = corp_offer[0].yiaddr
        assert leased in (IPv4Address("10.77.0.100"), *(IPv4Address(f"10.77.0.{n}") for n in range(101, 151)))
        assert len(proxy_offer) == 1
        offer = proxy_offer[0]
        assert_proxy_reply(offer, MessageType.OFFER, disc)
        assert offer.broadcast
        assert decode_pxe_suboptions(offer.option(Opt.VENDOR_SPECIFIC) or b"") == {6: b"\x08"}
        assert offer.file == b"undionly.kpxe" and offer.siaddr == IPv4Address(PXE)

        # REQUEST (broadcast, 67): the corporate server ACKs; proxydhcp stays silent.
        req = dc.request67(MAC, 0x5001, requested=str(leased), server_id=CORP)
        got = dc.exchange(client, req, ("255.255.255.255", 67), window=1.5)
        acks = _from(got, CORP, 0x5001)
        assert acks and acks[0].message_type == MessageType.ACK and acks[0].yiaddr == leased
        assert _from(got, PXE, 0x5001) == []
        assert not [r for r in got if r.source[0] == PXE]
        client.close()

        # 4011 REQUEST from the leased address: the ACK comes back to that source address and port.
        lab.ns("cli").run(["ip", "addr", "add", f"{leased}/24", "dev", "eth0"])
        cases = [
            (0, False, b"undionly.kpxe"), (7, False, b"ipxe.efi"), (9, False, b"ipxe.efi"),
            (11, False, b"arm64.efi"), (7, True, b"boot.ipxe"), (0, True, b"boot.ipxe"),
        ]  # fmt: skip
        for port in (4011, 68):  # EDK II asks from 4011, iPXE from 68 (DESIGN.md co-located notes)
            sock = dc.udp_socket(lab.ns("cli").name, port=port, address=str(leased))
            try:
                for n, (arch, ipxe, expected) in enumerate(cases):
                    xid = 0x6000 + port * 16 + n
                    req = dc.request4011(MAC, xid, ciaddr=str(leased), arch=arch, ipxe=ipxe)
                    got = dc.exchange(
                        sock, req, (PXE, 4011), window=2.0, until=lambda g, x=xid: bool(_from(g, PXE, x))
                    )
                    ack = _from(got, PXE, xid)
                    assert len(ack) == 1, f"arch {arch} ipxe {ipxe} from :{port}: {got}"
                    assert_proxy_reply(ack[0], MessageType.ACK, req)
                    assert ack[0].file == expected
                    assert ack[0].siaddr == IPv4Address(PXE)
                    assert dc.replies_for(got, xid)[0].source == (PXE, 4011)
            finally:
                sock.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
