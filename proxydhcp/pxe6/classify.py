"""DHCPv6 step 1: a decoded message → who the PXE/HTTP boot client is, or why it is none of our business.

Pure (RFC 8415 §16, RFC 5970; EDK II `NetworkPkg/UefiPxeBcDxe/PxeBcDhcp6.c`):
- on 547, Solicit gets an Advertise; Request and Information-Request get a Reply, but a Request (or
  an Information-Request) naming another server's ID belongs to that server: the address-granting
  server takes the client's Request, the proxy only sees it in passing (issue 20, step 3);
- on 4011, the boot-service Request EDK II's `PxeBcRequestBootService` sends once it has an address,
  with the Solicit's transaction id, our Server ID and no IA, gets a Reply;
- only clients whose Vendor Class (16) has enterprise 343 and data `PXEClient…` or `HTTPClient…`;
- the architecture is option 61, else the vendor class `Arch:` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv6Address

from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import Dhcp6Packet, MalformedDhcp6, Message, MessageType, Opt, RelayMessage
from proxydhcp.outcome import Ignore, Reason
from proxydhcp.pxe.classify import HTTP_VENDOR, PXE_VENDOR

DHCP6_PORT = 547  # logical listener names, as pxe.classify's DHCP_PORT / PXE_PORT
PXE6_PORT = 4011
_UNSPECIFIED = IPv6Address(0)


class Answer(Enum):
    """Which message the proxy answers with."""

    ADVERTISE = MessageType.ADVERTISE
    REPLY = MessageType.REPLY


@dataclass(frozen=True, slots=True, kw_only=True)
class Client6:
    transaction_id: int
    message_type: int
    port: int  # DHCP6_PORT or PXE6_PORT (logical)
    answer: Answer
    client_id: bytes | None  # echoed verbatim (an Information-Request may lack it)
    mac: str | None  # from a DUID-LLT/LL, for the per-MAC host table
    arch: int | None
    vendor_class: str  # the first vendor-class data item, for logs
    http: bool
    is_ipxe: bool
    oro: tuple[int, ...]
    has_ia: bool  # the request asked for addresses (never granted here: logged)
    source: IPv6Address
    # The relay closest to the client (innermost Relay-Forward): its link-address places the client.
    link_address: IPv6Address | None
    relay_hops: int

    @property
    def relayed(self) -> bool:
        return self.link_address is not None


def classify6(pkt: Dhcp6Packet, *, port: int, source: IPv6Address, server_duid: bytes) -> Client6 | Ignore:
    """`port` is the logical listener (547 or 4011); `server_duid` is ours (a Request naming another
    server is not for us). Never raises."""
    if port not in (DHCP6_PORT, PXE6_PORT):
        raise ValueError(f"port must be {DHCP6_PORT} or {PXE6_PORT} (the listener), not {port}")
    link_address: IPv6Address | None = None
    hops = 0
    msg: Message | RelayMessage = pkt
    if isinstance(msg, RelayMessage):
        if msg.msg_type != MessageType.RELAY_FORW:
            return Ignore(Reason.NOT_RELAY_FORWARD)
        if port != DHCP6_PORT:
            return Ignore(Reason.RELAY_ON_PXE_PORT)
        while isinstance(msg, RelayMessage):
            if msg.msg_type != MessageType.RELAY_FORW:
                return Ignore(Reason.NESTED_NOT_RELAY_FORWARD)
            hops += 1
            # RFC 8415 §19.1.1: a relay sets link-address to an address of the client's link, or
            # leaves it unspecified when it relays from another relay; the innermost one that is set
            # names the client's link.
            if msg.link_address != _UNSPECIFIED:
                link_address = msg.link_address
            msg = msg.inner
        if link_address is None:
            return Ignore(Reason.NO_LINK_ADDRESS)
    mtype = msg.msg_type
    if port == DHCP6_PORT:
        if mtype == MessageType.SOLICIT:
            answer = Answer.ADVERTISE
        elif mtype in (MessageType.REQUEST, MessageType.INFORMATION_REQUEST):
            answer = Answer.REPLY
        else:
            return Ignore(Reason.NOT_SOLICIT_OR_REQUEST, msg.type_name)
    elif mtype in (MessageType.REQUEST, MessageType.INFORMATION_REQUEST):
        answer = Answer.REPLY
    else:
        return Ignore(Reason.NOT_REQUEST_ON_PXE_PORT, msg.type_name)
    try:
        vendor = options.vendor_class(msg.option(Opt.VENDOR_CLASS))
        server_id = options.duid(msg.option(Opt.SERVERID), Opt.SERVERID)
        client_id = options.duid(msg.option(Opt.CLIENTID))
        arches = options.client_arch_types(msg.option(Opt.CLIENT_ARCH_TYPE))
        oro = options.oro(msg.option(Opt.ORO))
        user_class = options.user_class(msg.option(Opt.USER_CLASS))
        options.nii(msg.option(Opt.NII))
    except MalformedDhcp6 as exc:
        return Ignore(Reason.BAD_OPTION, str(exc))
    if vendor is None or vendor.enterprise != options.PXE_ENTERPRISE or not vendor.data:
        return Ignore(Reason.NOT_PXE)
    first = vendor.data[0]
    http = first.startswith(HTTP_VENDOR)
    if not (http or first.startswith(PXE_VENDOR)):
        return Ignore(Reason.NOT_PXE)
    if mtype == MessageType.SOLICIT and server_id is not None:
        return Ignore(Reason.SOLICIT_WITH_SERVER_ID)  # RFC 8415 §16.2: discard
    if mtype == MessageType.REQUEST and server_id is None:
        return Ignore(Reason.REQUEST_WITHOUT_SERVER_ID)  # RFC 8415 §16.4: discard
    if server_id is not None and server_id != server_duid:
        return Ignore(Reason.OTHER_SERVER)
    if mtype != MessageType.INFORMATION_REQUEST and client_id is None:
        return Ignore(Reason.NO_CLIENT_ID)
    arch = arches[0] if arches else options.vendor_arch(vendor.data)
    return Client6(
        transaction_id=msg.transaction_id,
        message_type=mtype,
        port=port,
        answer=answer,
        client_id=client_id,
        mac=options.duid_mac(client_id),
        arch=arch,
        vendor_class=first.decode("ascii", "replace"),
        http=http,
        is_ipxe=b"iPXE" in user_class,
        oro=oro,
        has_ia=any(msg.has_option(code) for code in (Opt.IA_NA, Opt.IA_TA, Opt.IA_PD)),
        source=source,
        link_address=link_address,
        relay_hops=hops,
    )
