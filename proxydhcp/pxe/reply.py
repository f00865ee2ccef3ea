"""Step 3: the proxy OFFER (port 67) or the DHCPACK (port 4011). Pure.

Contents follow PROTOCOL.md §1.2/§1.3 and DESIGN.md §2: never an address (yiaddr 0, no lease
options), xid/chaddr/giaddr copied (iPXE drops replies whose xid or chaddr differ), 54 + 60 + 97
echoed, option 82 echoed verbatim and last (RFC 3046 §2.2).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from proxydhcp.dhcp.options import encode_pxe_suboptions
from proxydhcp.dhcp.packet import BOOTREPLY, BROADCAST_FLAG, DhcpPacket, MessageType, Opt, split_option
from proxydhcp.pxe.classify import DHCP_PORT, HTTP_VENDOR, PXE_VENDOR, ClientInfo
from proxydhcp.pxe.policy import BootDecision

_ZERO = IPv4Address(0)
# Discovery control bit 3: "use the boot file in this offer", no menu, no discovery.
_BIOS_SUBOPTIONS = {6: b"\x08"}


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
        opts.append((Opt.CLIENT_UUID, client.uuid))
    if offer and style == "bios":
        opts.append((Opt.VENDOR_SPECIFIC, encode_pxe_suboptions(_BIOS_SUBOPTIONS)))
    elif not offer and client.boot_item is not None:
        # A PXE boot-server request must see its 43.71 echoed.
        opts.append((Opt.VENDOR_SPECIFIC, encode_pxe_suboptions({71: client.boot_item})))
    wanted = request.option(Opt.PARAM_REQUEST_LIST) or b""
    if header_file:
        # Only when asked (dnsmasq does the same); the header `file` is always filled (rhboot/shim#710).
        if Opt.TFTP_SERVER in wanted and style != "http":
            opts.append((Opt.TFTP_SERVER, str(decision.next_server).encode()))
        if Opt.BOOTFILE in wanted:
            opts.append((Opt.BOOTFILE, header_file))
    opts.extend((code, value) for code, value in request.options if code == Opt.RELAY_AGENT)
    return DhcpPacket(
        op=BOOTREPLY,
        htype=request.htype,
        hops=0,
        xid=request.xid,
        secs=0,
        # Offers: the client has no address, and a relay would otherwise unicast to yiaddr 0.0.0.0.
        flags=(request.flags | BROADCAST_FLAG) if offer else request.flags,
        ciaddr=_ZERO if offer else request.ciaddr,
        yiaddr=_ZERO,
        siaddr=_siaddr(offer, decision),
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        file=header_file,
        options=tuple(opt for code, value in opts for opt in split_option(code, value)),
    )


def _siaddr(offer: bool, decision: BootDecision) -> IPv4Address:
    if decision.offer_style == "http":
        return _ZERO  # HTTP Boot has no TFTP step; the URL says where to go
    if offer and decision.offer_style == "binl":
        # EDK II sends its 4011 REQUEST to siaddr (else 54): that must be us, whatever the TFTP server.
        return decision.server_ip
    return decision.next_server
