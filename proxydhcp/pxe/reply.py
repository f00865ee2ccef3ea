"""Step 3: the proxy OFFER (port 67) or the DHCPACK (port 4011). Pure.

Contents follow PROTOCOL.md §1.2/§1.3 and DESIGN.md §2: never an address (yiaddr 0, no lease
options), xid/chaddr/giaddr copied (iPXE drops replies whose xid or chaddr differ), 54 + 60 + 97
echoed, option 82 echoed verbatim and last (RFC 3046 §2.2).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from proxydhcp.dhcp.options import encode_pxe_suboptions
from proxydhcp.dhcp.packet import (
    BOOTREPLY,
    BROADCAST_FLAG,
    DhcpPacket,
    MessageType,
    Opt,
    _trusted,
    split_option,
)
from proxydhcp.pxe.classify import DHCP_PORT, HTTP_VENDOR, PXE_VENDOR, ClientInfo
from proxydhcp.pxe.policy import BootDecision

_ZERO = IPv4Address(0)
# Discovery control bit 3: "use the boot file in this offer", no menu, no discovery.
_BIOS_SUBOPTIONS = {6: b"\x08"}
# Per-reply constants, as plain ints and bytes (enum attribute access costs more).
_BIOS_43 = encode_pxe_suboptions(_BIOS_SUBOPTIONS)
_OFFER_53, _ACK_53 = bytes((MessageType.OFFER,)), bytes((MessageType.ACK,))
_MESSAGE_TYPE, _SERVER_ID, _VENDOR_CLASS = int(Opt.MESSAGE_TYPE), int(Opt.SERVER_ID), int(Opt.VENDOR_CLASS)
_CLIENT_UUID, _VENDOR_SPECIFIC, _PARAM_REQUEST_LIST = int(Opt.CLIENT_UUID), int(Opt.VENDOR_SPECIFIC), 55
_TFTP_SERVER, _BOOTFILE, _RELAY_AGENT = int(Opt.TFTP_SERVER), int(Opt.BOOTFILE), int(Opt.RELAY_AGENT)


# int(address) → (packed, dotted text): the same few server addresses go into every reply. Bounded.
_ADDRESS_BYTES: dict[int, tuple[bytes, bytes]] = {}
_ADDRESS_BYTES_MAX = 256


def _address_bytes(address: IPv4Address) -> tuple[bytes, bytes]:
    key = int(address)
    found = _ADDRESS_BYTES.get(key)
    if found is None:
        if len(_ADDRESS_BYTES) >= _ADDRESS_BYTES_MAX:
            _ADDRESS_BYTES.clear()
        found = _ADDRESS_BYTES[key] = (address.packed, str(address).encode())
    return found


def _packed(address: IPv4Address) -> bytes:
    return _address_bytes(address)[0] if type(address) is IPv4Address else address.packed


def _dotted(address: IPv4Address) -> bytes:
    return _address_bytes(address)[1] if type(address) is IPv4Address else str(address).encode()


def build_reply(request: DhcpPacket, client: ClientInfo, decision: BootDecision) -> DhcpPacket:
    offer = client.port == DHCP_PORT
    style = decision.offer_style
    boot_file = decision.boot_file.encode()
    # BINL offers leave the file out so EDK II comes to 4011 for it, as dnsmasq does.
    header_file = b"" if offer and style == "binl" else boot_file
    # Every value below but the echoed UUID is at most 255 bytes by construction (one wire instance).
    opts: list[tuple[int, bytes]] = [
        (_MESSAGE_TYPE, _OFFER_53 if offer else _ACK_53),
        (_SERVER_ID, _packed(decision.server_ip)),
        (_VENDOR_CLASS, HTTP_VENDOR if style == "http" else PXE_VENDOR),
    ]
    if client.uuid is not None:
        opts.extend(split_option(_CLIENT_UUID, client.uuid))
    if offer and style == "bios":
        opts.append((_VENDOR_SPECIFIC, _BIOS_43))
    elif not offer and client.boot_item is not None:
        # A PXE boot-server request must see its 43.71 echoed.
        opts.append((_VENDOR_SPECIFIC, encode_pxe_suboptions({71: client.boot_item})))
    if header_file:
        wanted = request.option(_PARAM_REQUEST_LIST) or b""
        # Only when asked (dnsmasq does the same); the header `file` is always filled (rhboot/shim#710).
        if _TFTP_SERVER in wanted and style != "http":
            opts.append((_TFTP_SERVER, _dotted(decision.next_server)))
        if _BOOTFILE in wanted:
            opts.extend(split_option(_BOOTFILE, header_file))
    if request.has_option(_RELAY_AGENT):
        opts.extend(opt for opt in request.options if opt[0] == _RELAY_AGENT)
    if len(header_file) > 128 or b"\0" in header_file:
        raise ValueError("file must be at most 128 bytes without NUL")  # as DhcpPacket.__post_init__
    # Everything else is valid by construction: header fields copied from a valid request, options
    # split to <= 255 bytes with fixed codes. So skip the frozen __init__ and its checks.
    return _trusted(
        BOOTREPLY,
        request.xid,
        request.chaddr,
        request.htype,
        0,
        0,
        # Offers: the client has no address, and a relay would otherwise unicast to yiaddr 0.0.0.0.
        (request.flags | BROADCAST_FLAG) if offer else request.flags,
        _ZERO if offer else request.ciaddr,
        _ZERO,
        _siaddr(offer, decision),
        request.giaddr,
        b"",
        header_file,
        tuple(opts),
        None,
    )


def _siaddr(offer: bool, decision: BootDecision) -> IPv4Address:
    if decision.offer_style == "http":
        return _ZERO  # HTTP Boot has no TFTP step; the URL says where to go
    if offer and decision.offer_style == "binl":
        # EDK II sends its 4011 REQUEST to siaddr (else 54): that must be us, whatever the TFTP server.
        return decision.server_ip
    return decision.next_server
