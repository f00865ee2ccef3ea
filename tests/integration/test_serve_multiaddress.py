"""Two addresses on the proxy's interface: every reply speaks for the address it was sent to.

    cli (10.77.0.50) ─┐
    relay (10.77.0.9, also 10.78.0.1: the relay agent of 10.78.0.0/24) ─┼─ br0 ─ pxe eth0: 10.77.0.2 (primary)
                                                                        │              + 10.77.0.5 (secondary)

iPXE drops a ProxyDHCPACK whose option 54 differs from the server it asked (dhcp_rx_proxydhcpack), and
a relay configured with helper 10.77.0.5 expects 10.77.0.5 to answer: so a 4011 REQUEST or a relayed
DISCOVER to either address gets 54 (and siaddr, and the IP source) = that address. A broadcast
DISCOVER, addressed to no one, gets the primary.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from proxydhcp.dhcp.codes import Opt
from tests.integration import dhcpclient as dc
from tests.integration.test_serve_corporate import BOOT_FLAGS

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

PRIMARY, SECONDARY, CLIENT, RELAY, GIADDR = "10.77.0.2", "10.77.0.5", "10.77.0.50", "10.77.0.9", "10.78.0.1"
MAC = "52:54:00:77:00:05"


def _topology(lab) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PRIMARY, "cli": CLIENT, "relay": RELAY})
    lab.ns("pxe").run(["ip", "addr", "add", f"{SECONDARY}/24", "dev", "eth0"])  # secondary: added second
    lab.ns("relay").run(["ip", "addr", "add", f"{GIADDR}/24", "dev", "eth0"])
    lab.route("pxe", "10.78.0.0/24", RELAY)


def _ask(sock, packet, dest: tuple[str, int]) -> dc.Received:
    """Send once; the one reply to its xid within 3 s."""
    xid = packet.xid
    got = dc.exchange(sock, packet, dest, window=3.0, until=lambda g: bool(dc.replies_for(g, xid)))
    replies = dc.replies_for(got, xid)
    assert len(replies) == 1 and replies[0].packet is not None, f"expected one reply to {xid:#x}: {got}"
    return replies[0]


def test_each_address_answers_as_itself(lab, start_proxy) -> None:
    _topology(lab)
    proxy = start_proxy("pxe", [
        "--interface", "eth0", "--subnet", "10.77.0.0/24", "--subnet", "10.78.0.0/24", *BOOT_FLAGS,
        "--no-tftp", "-v",
    ])  # fmt: skip
    assert f"eth0 ({PRIMARY})" in proxy.wait_log("serving proxyDHCP")

    # 4011 REQUESTs (as iPXE and EDK II send them: unicast, 54 = the server they mean) to each address.
    sock = dc.udp_socket(lab.ns("cli").name, port=4011, address=CLIENT)
    try:
        for n, server in enumerate((SECONDARY, PRIMARY, SECONDARY)):
            req = dc.request4011(MAC, 0x40110000 + n, ciaddr=CLIENT, arch=7, server_id=server)
            ack = _ask(sock, req, (server, 4011))
            assert ack.packet is not None
            assert ack.source == (server, 4011), f"request to {server}: answered from {ack.source}"
            assert ack.packet.option(Opt.SERVER_ID) == IPv4Address(server).packed
            assert ack.packet.siaddr == IPv4Address(server)  # next-server defaults to the server id
            assert ack.packet.file == b"ipxe.efi"
    finally:
        sock.close()

    # A relay agent with helper address SECONDARY (then PRIMARY): the offer comes back to giaddr:67.
    relay = dc.udp_socket(lab.ns("relay").name, port=67)
    try:
        for n, server in enumerate((SECONDARY, PRIMARY)):
            offer = _ask(relay, dc.discover(MAC, 0x67000000 + n, arch=0, giaddr=GIADDR), (server, 67))
            assert offer.packet is not None
            assert offer.source == (server, 67), f"relayed DISCOVER to {server}: answered from {offer.source}"
            assert offer.packet.option(Opt.SERVER_ID) == IPv4Address(server).packed
            assert offer.packet.giaddr == IPv4Address(GIADDR) and offer.packet.file == b"undionly.kpxe"
    finally:
        relay.close()

    # A broadcast DISCOVER was sent to no address of ours: the primary answers.
    client = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")
    try:
        offer = _ask(client, dc.discover(MAC, 0x670000FF, arch=0), ("255.255.255.255", 67))
        assert offer.packet is not None and offer.packet.option(Opt.SERVER_ID) == IPv4Address(PRIMARY).packed
    finally:
        client.close()
    assert "Traceback" not in proxy.log()
