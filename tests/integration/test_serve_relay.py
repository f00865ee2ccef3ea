"""The relay topology and the exact command line of issue 2.

    cli (10.78.0.0/24) ── router (dhcrelay -id eth1 -iu eth0 CORP PXE) ── 10.77.0.0/24:
                                                                          corp, pxe, cli77, spoof

The relayed client gets the proxy offer through giaddr:67 → relay → client and its 4011 ACK routed
back; a local client on 10.77.0.0/24 is answered as well; a relay agent in a subnet that is not
enabled (10.79.0.0/24, "spoof") gets nothing; malformed packets leave the service answering.
"""

from __future__ import annotations

import os
import shutil
from ipaddress import IPv4Address

import pytest

from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from tests.integration import dhcpclient as dc
from tests.integration.conftest import tftp_root
from tests.integration.test_serve_corporate import BOOT_FLAGS, assert_proxy_reply

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

CORP, PXE, ROUTER_A, ROUTER_B, SPOOF, SPOOF_GIADDR = (
    "10.77.0.1", "10.77.0.2", "10.77.0.254", "10.78.0.1", "10.77.0.9", "10.79.0.1",
)  # fmt: skip
MAC = "52:54:00:78:00:50"


def _topology(lab) -> None:
    lab.segment("10.77.0.0/24", {"corp": CORP, "pxe": PXE, "router": ROUTER_A, "spoof": SPOOF, "cli77": None})
    lab.segment("10.78.0.0/24", {"router": ROUTER_B, "cli": None}, bridge="br1")
    lab.router("router")
    for ns in ("corp", "pxe"):
        lab.route(ns, "10.78.0.0/24", ROUTER_A)
    # "spoof" plays a relay agent of 10.79.0.0/24, a subnet nobody enabled: a (wrong) reply to its
    # giaddr would be routed back to it, so silence there means proxydhcp chose not to answer.
    lab.ns("spoof").run(["ip", "addr", "add", f"{SPOOF_GIADDR}/24", "dev", "eth0"])
    lab.route("pxe", "10.79.0.0/24", SPOOF)
    lab.ns("corp").start_dhcpd(
        "eth0",
        [
            ("10.77.0.0/24", "10.77.0.100", "10.77.0.150", CORP),
            ("10.78.0.0/24", "10.78.0.100", "10.78.0.150", ROUTER_B),
        ],
        extra="ping-check false;",
    )
    lab.ns("router").start_dhcrelay("eth1", "eth0", [CORP, PXE])


def _proxy_replies(got: list[dc.Received], xid: int) -> list[DhcpPacket]:
    """Replies of proxydhcp (option 54 = its address: relayed ones all come from the relay)."""
    return [
        r.packet for r in dc.replies_for(got, xid)
        if r.packet is not None and r.packet.option(Opt.SERVER_ID) == IPv4Address(PXE).packed
    ]  # fmt: skip


def _corp_replies(got: list[dc.Received], xid: int) -> list[DhcpPacket]:
    return [
        r.packet for r in dc.replies_for(got, xid)
        if r.packet is not None and r.packet.option(Opt.SERVER_ID) == IPv4Address(CORP).packed
    ]  # fmt: skip


def _lease(lab, ns: str, sock, mac: str, xid: int) -> tuple[IPv4Address, DhcpPacket]:
    """DISCOVER until both offers are in; take the corporate lease (REQUEST/ACK) and configure it."""
    disc = dc.discover(mac, xid, arch=7)
    got = dc.exchange(
        sock, disc, ("255.255.255.255", 67), window=6.0,
        until=lambda g: bool(_proxy_replies(g, xid) and _corp_replies(g, xid)),
    )  # fmt: skip
    offers, proxy = _corp_replies(got, xid), _proxy_replies(got, xid)
    assert offers, f"no corporate offer: {got}"
    assert len(proxy) == 1, f"no (or several) proxy offers: {got}"
    leased = offers[0].yiaddr
    req = dc.request67(mac, xid, requested=str(leased), server_id=CORP)
    got = dc.exchange(sock, req, ("255.255.255.255", 67), window=1.5)
    assert [p for p in _corp_replies(got, xid) if p.message_type == MessageType.ACK]
    assert _proxy_replies(got, xid) == []
    lab.ns(ns).run(["ip", "addr", "add", f"{leased}/24", "dev", "eth0"])
    return leased, proxy[0]


def _ack_file(lab, ns: str, leased: IPv4Address, arch: int, ipxe: bool, xid: int) -> bytes:
    sock = dc.udp_socket(lab.ns(ns).name, port=4011, address=str(leased))
    try:
        req = dc.request4011(MAC, xid, ciaddr=str(leased), arch=arch, ipxe=ipxe)
        got = dc.exchange(sock, req, (PXE, 4011), window=3.0, until=lambda g: bool(dc.replies_for(g, xid)))
        acks = dc.replies_for(got, xid, source_ip=PXE)
        assert len(acks) == 1 and acks[0].packet is not None, f"arch {arch}: {got}"
        assert_proxy_reply(acks[0].packet, MessageType.ACK, req)
        return acks[0].packet.file
    finally:
        sock.close()


MALFORMED = [
    b"",
    b"\x01",
    b"\x01\x01\x06\x00" + bytes(200),  # truncated header
    b"\x01\x01\x06\x00" + bytes(232) + b"\xde\xad\xbe\xef" + b"\x35\x01\x01\xff",  # bad magic cookie
    b"\x01\x01\x06\x00" + bytes(232) + b"\x63\x82\x53\x63" + b"\x35\x01\x01\x3c\xf0PXE",  # option overrun
    os.urandom(400),
]


def test_exact_command_line_local_relayed_and_ignored(lab, start_proxy) -> None:
    _topology(lab)
    root = tftp_root({"undionly.kpxe": b"bios", "ipxe.efi": b"efi"})
    try:
        proxy = start_proxy("pxe", [
            "--interface", "eth0", "--subnet", "10.77.0.0/24", "--subnet", "10.78.0.0/24", *BOOT_FLAGS,
            "--tftp-root", str(root), "-v",
        ])  # fmt: skip

        # Relayed client: the proxy offer travels giaddr:67 → relay → client; then the lease.
        sock = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")
        leased, offer = _lease(lab, "cli", sock, MAC, 0x7801)
        sock.close()
        assert (
            offer.giaddr == IPv4Address(ROUTER_B) and offer.siaddr == IPv4Address(PXE) and offer.file == b""
        )
        lab.route("cli", "10.77.0.0/24", ROUTER_B)
        for n, (arch, ipxe, expected) in enumerate(
            [(0, False, b"undionly.kpxe"), (7, False, b"ipxe.efi"), (9, False, b"ipxe.efi"),
             (11, False, b"arm64.efi"), (7, True, b"boot.ipxe")]
        ):  # fmt: skip
            assert _ack_file(lab, "cli", leased, arch, ipxe, 0x7810 + n) == expected

        # Malformed datagrams on both ports change nothing.
        junk = dc.udp_socket(lab.ns("cli").name, port=0, address=str(leased))
        for data in MALFORMED:
            junk.sendto(data, (PXE, 4011))
            junk.sendto(data, (PXE, 67))
        assert [r for r in dc.receive(junk, 1.0) if r.source[0] == PXE] == []
        junk.close()
        proxy.wait_log("malformed packet: bad magic cookie")

        # Local client on 10.77.0.0/24, after the junk: still answered, on both ports.
        local = dc.udp_socket(lab.ns("cli77").name, port=68, device="eth0")
        leased77, offer77 = _lease(lab, "cli77", local, "52:54:00:77:00:77", 0x7701)
        local.close()
        assert offer77.giaddr == IPv4Address(0)
        assert _ack_file(lab, "cli77", leased77, 11, False, 0x7702) == b"arm64.efi"

        # A relay agent of a subnet that is not enabled: silence, and the reason is logged.
        relay = dc.udp_socket(lab.ns("spoof").name, port=67, address="0.0.0.0")
        for n, arch in enumerate((0, 7, 11)):
            relay.sendto(
                dc.discover(f"52:54:00:79:00:0{n}", 0x7901 + n, arch=arch, giaddr=SPOOF_GIADDR).encode(),
                (PXE, 67),
            )
        assert [r for r in dc.receive(relay, 1.5) if r.source[0] == PXE] == []
        relay.close()
        proxy.wait_log("subnet of 10.79.0.1 not enabled")
        assert proxy.proc.poll() is None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_relayed_subnet_not_enabled_is_silent(lab, start_proxy) -> None:
    _topology(lab)
    proxy = start_proxy("pxe", ["--interface", "eth0", "--subnet", "10.77.0.0/24", *BOOT_FLAGS, "-v"])
    sock = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")
    xid = 0x7A01
    got = dc.exchange(
        sock, dc.discover(MAC, xid, arch=0), ("255.255.255.255", 67), window=3.0,
        until=lambda g: bool(_corp_replies(g, xid)),
    )  # fmt: skip
    assert _corp_replies(got, xid), "the corporate server must answer through the relay (control)"
    got += dc.receive(sock, 1.5)  # a late proxy offer would arrive here
    assert _proxy_replies(got, xid) == []
    sock.close()
    proxy.wait_log("subnet of 10.78.0.1 not enabled")
