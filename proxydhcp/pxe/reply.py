"""Step 3: the proxy OFFER (port 67) or the DHCPACK (port 4011). Pure.

Contents follow PROTOCOL.md §1.2/§1.3 and DESIGN.md §2: never an address (yiaddr 0, no lease
options), xid/chaddr/giaddr copied (iPXE drops replies whose xid or chaddr differ), 54 + 60 + 97
echoed, option 82 echoed verbatim and last (RFC 3046 §2.2).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from proxydhcp.dhcp.codes import BOOTREPLY, BROADCAST_FLAG, MessageType, Opt, PxeSubOpt
from proxydhcp.dhcp.options import encode_pxe_suboptions
from proxydhcp.dhcp.packet import DhcpPacket, split_option
from proxydhcp.pxe.classify import DHCP_PORT, HTTP_VENDOR, PXE_VENDOR, ClientInfo
from proxydhcp.pxe.policy import BootDecision

_NO_ADDRESS = IPv4Address(0)
# Discovery control bit 3: "use the boot file in this offer", no menu, no discovery.
_BIOS_43 = encode_pxe_suboptions({PxeSubOpt.DISCOVERY_CONTROL: b"\x08"})


def build_reply(request: DhcpPacket, client: ClientInfo, decision: BootDecision) -> DhcpPacket:
    offer = client.port == DHCP_PORT
    style = decision.offer_style
    boot_file = decision.boot_file.encode()
    # BINL offers leave the file out so EDK II comes to 4011 for it, as dnsmasq does.
    header_file = b"" if offer and style == "binl" else boot_file
    opts: list[tuple[int, bytes]] = [
        (Opt.MESSAGE_TYPE, bytes((MessageType.OFFER if offer else MessageType.ACK,))),
        (Opt.SERVER_ID, decision.server_ip.packed),
        (Opt.VENDOR_CLASS, HTTP_VENDOR if style == "http" else PXE_VENDOR),
    ]
    if client.uuid is not None:
        opts.extend(split_option(Opt.CLIENT_UUID, client.uuid))
    if offer and style == "bios":
        opts.append((Opt.VENDOR_SPECIFIC, _BIOS_43))
    elif not offer and client.boot_item is not None:
        # A PXE boot-server request must see its 43.71 echoed.
        opts.append((Opt.VENDOR_SPECIFIC, encode_pxe_suboptions({PxeSubOpt.BOOT_ITEM: client.boot_item})))
    if header_file:
        wanted = request.option(Opt.PARAM_REQUEST_LIST) or b""
        # Only when asked (dnsmasq does the same); the header `file` is always filled (rhboot/shim#710).
        if Opt.TFTP_SERVER in wanted and style != "http":
            opts.append((Opt.TFTP_SERVER, str(decision.next_server).encode()))
        if Opt.BOOTFILE in wanted:
            opts.extend(split_option(Opt.BOOTFILE, header_file))
    if request.has_option(Opt.RELAY_AGENT):
        opts.extend(opt for opt in request.options if opt[0] == Opt.RELAY_AGENT)
    return DhcpPacket(
        op=BOOTREPLY,
        xid=request.xid,
        chaddr=request.chaddr,
        htype=request.htype,
        # Offers: the client has no address, and a relay would otherwise unicast to yiaddr 0.0.0.0.
        flags=(request.flags | BROADCAST_FLAG) if offer else request.flags,
        ciaddr=_NO_ADDRESS if offer else request.ciaddr,
        siaddr=_siaddr(offer, decision),
        giaddr=request.giaddr,
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
