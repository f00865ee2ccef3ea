"""Step 1 of the pipeline: a decoded request → who the client is, or why it is none of our business.

Pure (DESIGN.md §2, R-02, R-05, R-40): port 67 answers DHCPDISCOVER only (broadcast REQUESTs there
belong to the address-granting server); port 4011 answers REQUEST or INFORM; only PXE (or UEFI HTTP
Boot) clients, recognised by option 60.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from proxydhcp.dhcp import options
from proxydhcp.dhcp.packet import BOOTREQUEST, ZERO, DhcpPacket, MessageType, Opt
from proxydhcp.errors import MalformedPacket

DHCP_PORT = 67  # logical listener names: the configured port numbers may differ
PXE_PORT = 4011
PXE_VENDOR = b"PXEClient"
HTTP_VENDOR = b"HTTPClient"
BIS_LAYER_BIT = 0x8000
# Plain ints for the per-packet comparisons and lookups (enum attribute access costs more).
_DISCOVER, _REQUEST, _INFORM = int(MessageType.DISCOVER), int(MessageType.REQUEST), int(MessageType.INFORM)
_VENDOR_CLASS, _VENDOR_SPECIFIC = int(Opt.VENDOR_CLASS), int(Opt.VENDOR_SPECIFIC)


@dataclass(frozen=True, slots=True)
class Ignore:
    """No reply, and why (a short stable string for logs, counters and tests)."""

    reason: str


@dataclass(frozen=True)
class ClientInfo:
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

    # classify() fills instances through __dict__: a __post_init__ or a default here would be skipped.

    @property
    def relayed(self) -> bool:
        giaddr = self.giaddr  # `is ZERO` first: decode shares ZERO; IPv4Address.__eq__ runs in Python
        return not (giaddr is ZERO or giaddr == ZERO)


def classify(pkt: DhcpPacket, *, port: int, source_ip: IPv4Address) -> ClientInfo | Ignore:
    """`port` names the listener the packet came in on: 67 (DHCP_PORT) or 4011 (PXE_PORT), whatever
    numbers those listeners are configured with. Never raises."""
    if port != DHCP_PORT and port != PXE_PORT:
        raise ValueError(f"port must be {DHCP_PORT} or {PXE_PORT} (the listener), not {port}")
    if pkt.op != BOOTREQUEST:
        return Ignore("not a BOOTREQUEST")
    mtype = pkt.message_type
    if port == DHCP_PORT:
        if mtype != _DISCOVER:
            return Ignore("not a DISCOVER on port 67")
    elif mtype != _REQUEST and mtype != _INFORM:
        return Ignore("unsupported message type on 4011")
    elif (source_ip is ZERO or source_ip == ZERO) and (pkt.ciaddr is ZERO or pkt.ciaddr == ZERO):
        # The ACK goes back to the request's source; with neither a source nor a ciaddr there
        # is nowhere to send it but broadcast, which R-12 forbids.
        return Ignore("4011 request without a client address")
    vendor = pkt.option(_VENDOR_CLASS) or b""
    http = vendor.startswith(HTTP_VENDOR)
    if not (http or vendor.startswith(PXE_VENDOR)):
        return Ignore("not a PXE client")
    if len(pkt.chaddr) != 6:
        return Ignore("hardware address is not 6 bytes")
    try:
        arch = options.client_arch(pkt)
        uuid = options.client_uuid(pkt)
        boot_item = _boot_item(pkt) if port == PXE_PORT else None
    except MalformedPacket as exc:
        return Ignore(f"bad option: {exc}")
    if boot_item is not None and int.from_bytes(boot_item[2:], "big") & BIS_LAYER_BIT:
        return Ignore("PXE BIS not supported")  # credentials requested; dnsmasq refuses too
    assert mtype is not None
    # ClientInfo(...) by its __dict__: one dict instead of the frozen __init__'s object.__setattr__ per
    # field (a third of classify). Every field, by name; ClientInfo has no __post_init__ or defaults.
    client: ClientInfo = object.__new__(ClientInfo)
    object.__setattr__(
        client,
        "__dict__",
        {
            "mac": pkt.mac,
            "xid": pkt.xid,
            "message_type": mtype,
            "port": port,
            "arch": arch,
            "vendor_class": options.vendor_class(pkt),
            "is_ipxe": options.is_ipxe(pkt),
            "user_class": options.user_class(pkt),
            "uuid": uuid,
            "giaddr": pkt.giaddr,
            "ciaddr": pkt.ciaddr,
            "source_ip": source_ip,
            "boot_item": boot_item,
            "http": http,
        },
    )
    return client


def _boot_item(pkt: DhcpPacket) -> bytes | None:
    raw = pkt.option(_VENDOR_SPECIFIC)
    if not raw:
        return None
    item = options.decode_pxe_suboptions(raw).get(71)
    if item is not None and len(item) != 4:
        raise MalformedPacket(f"option 43.71 has length {len(item)}, expected 4")
    return item
