"""Step 3: the proxy OFFER (port 67) or the DHCPACK (port 4011). Pure.

Contents follow PROTOCOL.md §1.2/§1.3 and DESIGN.md §2: never an address (yiaddr 0, no lease
options), xid/chaddr/giaddr copied (iPXE drops replies whose xid or chaddr differ), 54 + 60 + 97
echoed, option 82 echoed verbatim and last (RFC 3046 §2.2).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from proxydhcp.dhcp.codes import BROADCAST_FLAG, MessageType, Opt, PxeSubOpt
from proxydhcp.dhcp.options import encode_boot_item, encode_pxe_suboptions
from proxydhcp.dhcp.packet import DhcpPacket, split_option
from proxydhcp.pxe.classify import DHCP_PORT, HTTP_VENDOR, PXE_VENDOR, ClientInfo
from proxydhcp.pxe.policy import BootDecision

_NO_ADDRESS = IPv4Address(0)
# Discovery control bit 3: "use the boot file in this offer", no menu, no discovery.
_BIOS_43 = encode_pxe_suboptions({PxeSubOpt.DISCOVERY_CONTROL: b"\x08"})
_OFFER, _ACK = bytes((MessageType.OFFER,)), bytes((MessageType.ACK,))
# The option codes every reply names, as plain ints read once (an enum member costs an attribute lookup).
_MESSAGE_TYPE, _SERVER_ID, _VENDOR_CLASS, _CLIENT_UUID, _VENDOR_SPECIFIC = (
    int(Opt.MESSAGE_TYPE),
    int(Opt.SERVER_ID),
    int(Opt.VENDOR_CLASS),
    int(Opt.CLIENT_UUID),
    int(Opt.VENDOR_SPECIFIC),
)
_PARAM_REQUEST_LIST, _TFTP_SERVER, _BOOTFILE, _RELAY_AGENT = (
    int(Opt.PARAM_REQUEST_LIST),
    int(Opt.TFTP_SERVER),
    int(Opt.BOOTFILE),
    int(Opt.RELAY_AGENT),
)


def build_reply(request: DhcpPacket, client: ClientInfo, decision: BootDecision) -> DhcpPacket:
    offer = client.port == DHCP_PORT
    style = decision.offer_style
    boot_file = decision.boot_file.encode()
    # BINL offers leave the file out so EDK II comes to 4011 for it, as dnsmasq does.
    header_file = b"" if offer and style == "binl" else boot_file
    opts: list[tuple[int, bytes]] = [
        (_MESSAGE_TYPE, _OFFER if offer else _ACK),
        (_SERVER_ID, decision.server_ip.packed),
        (_VENDOR_CLASS, HTTP_VENDOR if style == "http" else PXE_VENDOR),
    ]
    if client.uuid is not None:
        opts.extend(split_option(_CLIENT_UUID, client.uuid))
    if offer and style == "bios":
        opts.append((_VENDOR_SPECIFIC, _BIOS_43))
    elif not offer and client.boot_item is not None:
        # A PXE boot-server request must see its 43.71 echoed.
        opts.append((_VENDOR_SPECIFIC, encode_boot_item(client.boot_item)))
    if header_file:
        wanted = request.option(_PARAM_REQUEST_LIST) or b""
        # Only when asked (dnsmasq does the same); the header `file` is always filled (rhboot/shim#710).
        if _TFTP_SERVER in wanted and style != "http":
            opts.append((_TFTP_SERVER, decision.next_server_text.encode()))
        if _BOOTFILE in wanted:
            opts.extend(split_option(_BOOTFILE, header_file))
    if request.has_option(_RELAY_AGENT):
        opts.extend(opt for opt in request.options if opt[0] == _RELAY_AGENT)
    # Every option above is one wire instance (fixed codes, split_option), as reply_to requires.
    return DhcpPacket.reply_to(
        request,
        # Offers: the client has no address, and a relay would otherwise unicast to yiaddr 0.0.0.0.
        flags=(request.flags | BROADCAST_FLAG) if offer else request.flags,
        ciaddr=_NO_ADDRESS if offer else request.ciaddr,
        siaddr=_siaddr(offer, decision),
        file=header_file,
        options=tuple(opts),
    )


def _siaddr(offer: bool, decision: BootDecision) -> IPv4Address:
    if decision.offer_style == "http":
        return _NO_ADDRESS  # HTTP Boot has no TFTP step; the URL says where to go
    if offer and decision.offer_style == "binl":
        # EDK II sends its 4011 REQUEST to siaddr (else 54): that must be us, whatever the TFTP server.
        return decision.server_ip
    return decision.next_server
