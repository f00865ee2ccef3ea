"""tests/e2e/wire.py's IPv6 reader, on a real OVMF PXE-over-IPv6 capture: the e2e assertions of issue 20
(which file each proxy answer names, option 16, the 4011 Reply's addresses) read the wire through it,
so a decoder that saw nothing would make them pass or fail for the wrong reason."""

from __future__ import annotations

from pathlib import Path

from tests.e2e import wire

CAPTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ovmf-pxev6-dnsmasq-proxydhcp.pcap"


def test_dhcpv6_messages_and_tftp_over_ipv6_are_decoded() -> None:
    dgs = wire.read(CAPTURE, ipv6=True)
    proxy = [d.dhcp6 for d in dgs if d.dhcp6 and 59 in d.dhcp6.options]
    advertise = next(m for m in proxy if m.name == "ADVERTISE")
    assert advertise.codes == (2, 1, 59, 16)
    assert advertise.boot_file_url() == "tftp://[fd77::2]/ipxe.efi"
    assert advertise.vendor_class() == (343, [b"PXEClient"])
    solicit = next(d.dhcp6 for d in dgs if d.dhcp6 and d.dhcp6.name == "SOLICIT" and 16 in d.dhcp6.options)
    assert solicit.vendor_class() == (343, [b"PXEClient:Arch:00007:UNDI:003000"])
    request = next(d for d in dgs if d.dhcp6 and d.dhcp6.name == "REQUEST" and d.dport == 4011)
    assert (request.src, request.sport, request.dst) == ("fd77::10d", 4011, "fd77::2")
    assert request.dhcp6 is not None and request.dhcp6.xid == advertise.xid  # EDK II reuses the Solicit's
    reply = next(d for d in dgs if d.dhcp6 and d.dhcp6.name == "REPLY" and d.sport == 4011)
    assert (reply.src, reply.dst, reply.dport) == ("fd77::2", "fd77::10d", 4011)
    assert wire.rrq_names(dgs) == ["ipxe.efi", "ipxe.efi"]
    assert "DHCPv6 ADVERTISE" in (wire.describe(next(d for d in dgs if d.dhcp6 is advertise)) or "")


def test_the_ipv4_reader_skips_ipv6_and_a_truncated_option_is_no_message() -> None:
    assert wire.read(CAPTURE) == []
    whole = bytes([2, 0, 0, 1]) + (59).to_bytes(2, "big") + (4).to_bytes(2, "big") + b"tftp"
    assert wire._decode_dhcp6(whole) is not None
    assert wire._decode_dhcp6(whole[:-1]) is None
