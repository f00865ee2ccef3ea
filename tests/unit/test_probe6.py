"""probe6: the IPv6 address a Boot File URL names (the offer's and the 4011 Reply's, one rule)."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest

from proxydhcp.dhcp6.packet import Message, MessageType, Opt
from proxydhcp.probe6 import _url_server


@pytest.mark.parametrize(
    ("url", "address", "path"),
    [
        (b"tftp://[2001:db8:1::1]/ipxe.efi", IPv6Address("2001:db8:1::1"), "/ipxe.efi"),
        (b"tftp://[fe80::1%25eth0]/boot/x.efi", IPv6Address("fe80::1"), "/boot/x.efi"),
        (b"http://boot.example/ipxe.efi", None, "/ipxe.efi"),
        (b"tftp://192.0.2.1/ipxe.efi", None, "/ipxe.efi"),
        (None, None, ""),
    ],
)
def test_url_server(url: bytes | None, address: IPv6Address | None, path: str) -> None:
    options = () if url is None else ((Opt.BOOTFILE_URL, url),)
    text, parts, server = _url_server(Message(MessageType.ADVERTISE, 1, options))
    assert text == (url or b"").decode() and server == address and parts.path == path
