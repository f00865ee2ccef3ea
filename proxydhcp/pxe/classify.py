"""Step 1 of the pipeline: a decoded request → who the client is, or why it is none of our business.

Pure (DESIGN.md §2, R-02, R-05, R-40): port 67 answers DHCPDISCOVER only (broadcast REQUESTs there
belong to the address-granting server); port 4011 answers REQUEST or INFORM; only PXE (or UEFI HTTP
Boot) clients, recognised by option 60.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import NamedTuple

from proxydhcp.dhcp import options
from proxydhcp.dhcp.codes import BOOTREQUEST, MessageType, Opt, PxeSubOpt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import Ignore, Reason

DHCP_PORT = 67  # logical listener names: the configured port numbers may differ
PXE_PORT = 4011
PXE_VENDOR = b"PXEClient"
HTTP_VENDOR = b"HTTPClient"
BIS_LAYER_BIT = 0x8000
_NO_ADDRESS = IPv4Address(0)
# Plain ints, read once: every request is compared with them (an enum member costs an attribute lookup).
_DISCOVER, _REQUEST, _INFORM = int(MessageType.DISCOVER), int(MessageType.REQUEST), int(MessageType.INFORM)
_VENDOR_CLASS, _VENDOR_SPECIFIC, _BOOT_ITEM = (
    int(Opt.VENDOR_CLASS),
    int(Opt.VENDOR_SPECIFIC),
    int(PxeSubOpt.BOOT_ITEM),
)


class ClientInfo(NamedTuple):
    """Who a request comes from, as the policy reads it: an immutable value, built by keyword. A
    NamedTuple: every request builds one, and a frozen dataclass costs twice as much to build."""

    mac: str
    xid: int
    message_type: int
    port: int  # logical listener: DHCP_PORT (67) or PXE_PORT (4011)
    arch: int | None
    vendor_class: str
    is_ipxe: bool
    user_class: bytes | None
    uuid: bytes | None
    giaddr: IPv4Address
    ciaddr: IPv4Address
    source_ip: IPv4Address
    boot_item: bytes | None  # option 43.71 (type:2, layer:2) of a PXE boot-server request
    http: bool  # option 60 starts with HTTPClient (UEFI HTTP Boot, R-50)

    @property
    def relayed(self) -> bool:
        return self.giaddr != _NO_ADDRESS


def classify(pkt: DhcpPacket, *, port: int, source_ip: IPv4Address) -> ClientInfo | Ignore:
    """`port` names the listener the packet came in on: 67 (DHCP_PORT) or 4011 (PXE_PORT), whatever
    numbers those listeners are configured with. Never raises."""
    if port != DHCP_PORT and port != PXE_PORT:
        raise ValueError(f"port must be {DHCP_PORT} or {PXE_PORT} (the listener), not {port}")
    if pkt.op != BOOTREQUEST:
        return Ignore(Reason.NOT_BOOTREQUEST)
    mtype = pkt.message_type
    if port == DHCP_PORT:
        if mtype != _DISCOVER:
            return Ignore(Reason.NOT_DISCOVER)
    elif mtype != _REQUEST and mtype != _INFORM:
        return Ignore(Reason.UNSUPPORTED_MESSAGE_TYPE)
    elif source_ip == _NO_ADDRESS and pkt.ciaddr == _NO_ADDRESS:
        # The ACK goes back to the request's source; with neither a source nor a ciaddr there
        # is nowhere to send it but broadcast, which R-12 forbids.
        return Ignore(Reason.NO_CLIENT_ADDRESS)
    vendor = pkt.option(_VENDOR_CLASS) or b""
    http = vendor.startswith(HTTP_VENDOR)
    if not (http or vendor.startswith(PXE_VENDOR)):
        return Ignore(Reason.NOT_PXE)
    if len(pkt.chaddr) != 6:
        return Ignore(Reason.BAD_HARDWARE_ADDRESS)
    try:
        arch = options.client_arch(pkt)
        uuid = options.client_uuid(pkt)
        boot_item = _boot_item(pkt) if port == PXE_PORT else None
    except MalformedPacket as exc:
        return Ignore(Reason.BAD_OPTION, str(exc))
    if boot_item is not None and int.from_bytes(boot_item[2:], "big") & BIS_LAYER_BIT:
        return Ignore(Reason.BIS_UNSUPPORTED)  # credentials requested; dnsmasq refuses too
    assert mtype is not None
    return ClientInfo(
        mac=pkt.mac,
        xid=pkt.xid,
        message_type=mtype,
        port=port,
        arch=arch,
        vendor_class=options.vendor_class(pkt),
        is_ipxe=options.is_ipxe(pkt),
        user_class=options.user_class(pkt),
        uuid=uuid,
        giaddr=pkt.giaddr,
        ciaddr=pkt.ciaddr,
        source_ip=source_ip,
        boot_item=boot_item,
        http=http,
    )


def _boot_item(pkt: DhcpPacket) -> bytes | None:
    raw = pkt.option(_VENDOR_SPECIFIC)
    if not raw:
        return None
    item = options.decode_pxe_suboptions(raw).get(_BOOT_ITEM)
    if item is not None and len(item) != 4:
        raise MalformedPacket(f"option 43.71 has length {len(item)}, expected 4", Reason.BAD_OPTION_LENGTH)
    return item
