"""IPv6 network boot (DHCPv6, RFC 5970) in a capture → per-client timeline and verdict, with the same
`Verdict` fields (verdict/step/cause/fix) and `Client` events as the IPv4 diagnosis.

The sequence judged is EDK II's PXE over IPv6 (issue 20): a PXE Solicit (vendor class 343
`PXEClient`/`HTTPClient`); Advertises from the address server (an IA with an address) and from a
proxy (no IA, option 59, option 16); the client's Request to the address server; for PXEClient the
boot-service Request to [proxy]:4011 and its Reply; TFTP over IPv6. Clients are keyed by their Client
ID; datagrams are decoded with the codec `serve` runs (`proxydhcp.dhcp6`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import (
    MalformedDhcp6,
    Message,
    MessageType,
    Opt,
    RelayMessage,
    decode,
    decode_options,
)
from proxydhcp.diagnose.capture import Datagram6
from proxydhcp.diagnose.checks import Finding, Verdict
from proxydhcp.diagnose.timeline import Client, Event

MAX_EVENTS = 200
_RRQ = 1


@dataclass(slots=True)
class Client6:
    """What one DHCPv6 boot client did and was told."""

    client_id: bytes
    base: Client
    http: bool = False
    solicits: int = 0
    solicit_xids: set[int] = field(default_factory=set)
    address_advertises: int = 0
    server_urls: int = 0  # Advertises with an address and a Boot File URL (the server does PXE itself)
    proxy_advertises: int = 0
    proxy_without_59: int = 0
    proxy_without_16: int = 0
    urls: list[str] = field(default_factory=list)
    leases: set[IPv6Address] = field(default_factory=set)  # from the address server's Reply
    requests_4011: list[tuple[str, str]] = field(default_factory=list)  # (source, destination)
    replies_4011: list[tuple[str, int, str, int]] = field(default_factory=list)  # src, sport, dst, dport
    rrqs: list[str] = field(default_factory=list)


def _addresses_in_ia(msg: Message) -> set[IPv6Address]:
    out: set[IPv6Address] = set()
    ia = msg.option(Opt.IA_NA)
    if ia is None or len(ia) < 12:
        return out
    try:
        for code, value in decode_options(ia, 12):
            if code == Opt.IAADDR and len(value) >= 24:
                out.add(IPv6Address(value[:16]))
    except MalformedDhcp6:
        pass
    return out


def _event(c: Client6, d: Datagram6, kind: str, detail: str) -> None:
    events = c.base.events
    if len(events) < MAX_EVENTS:
        events.append(Event(d.ts, d.frame, kind, f"[{d.src}]:{d.sport}", f"[{d.dst}]:{d.dport}", detail))
    else:
        c.base.dropped_events += 1
    c.base.last_ts = d.ts


def build_clients(datagrams: Iterable[Datagram6]) -> list[Client6]:
    """Every DHCPv6 PXE/HTTP boot client of the capture, in order of appearance."""
    clients: dict[bytes, Client6] = {}
    by_address: dict[str, Client6] = {}
    for d in datagrams:
        if d.dport == 69:
            owner = by_address.get(d.src)
            if owner is not None and len(d.payload) > 2 and d.payload[1] == _RRQ:
                name = d.payload[2:].split(b"\0", 1)[0].decode("utf-8", "replace")
                owner.rrqs.append(name)
                _event(owner, d, "RRQ", f"TFTP read request {name!r} over IPv6")
            continue
        try:
            pkt = decode(d.payload)
        except MalformedDhcp6:
            continue
        msg = pkt.innermost() if isinstance(pkt, RelayMessage) else pkt
        try:
            client_id = options.duid(msg.option(Opt.CLIENTID))
            vendor = options.vendor_class(msg.option(Opt.VENDOR_CLASS))
            arches = options.client_arch_types(msg.option(Opt.CLIENT_ARCH_TYPE))
        except MalformedDhcp6:
            continue
        if client_id is None:
            continue
        c = clients.get(client_id)
        to_client = msg.msg_type in (MessageType.ADVERTISE, MessageType.REPLY)
        if c is None:
            pxe = (
                vendor is not None
                and vendor.enterprise == options.PXE_ENTERPRISE
                and bool(vendor.data)
                and vendor.data[0].startswith((b"PXEClient", b"HTTPClient"))
            )
            if to_client or msg.msg_type != MessageType.SOLICIT or not pxe:
                continue  # a client is known from its PXE Solicit on
            base = Client(options.duid_mac(client_id), d.ts, d.ts)
            c = clients[client_id] = Client6(client_id, base)
        if not to_client:
            by_address[d.src] = c
            if vendor is not None and vendor.data:
                c.base.vendor_class = vendor.data[0].decode("ascii", "replace")
                c.http = vendor.data[0].startswith(b"HTTPClient")
            if c.base.arch is None:
                c.base.arch = arches[0] if arches else (options.vendor_arch(vendor.data) if vendor else None)
            with contextlib.suppress(MalformedDhcp6):
                c.base.ipxe = c.base.ipxe or b"iPXE" in options.user_class(msg.option(Opt.USER_CLASS))
        _feed(c, msg, d)
        for lease in c.leases:  # its TFTP requests come from its lease
            by_address.setdefault(str(lease), c)
    return list(clients.values())


def _feed(c: Client6, msg: Message, d: Datagram6) -> None:
    mtype = msg.msg_type
    ia = any(msg.has_option(code) for code in (Opt.IA_NA, Opt.IA_TA, Opt.IA_PD))
    if mtype == MessageType.SOLICIT:
        c.solicits += 1
        c.solicit_xids.add(msg.transaction_id)
        _event(c, d, "SOLICIT", f"xid=0x{msg.transaction_id:06x} vendor={c.base.vendor_class!r}")
    elif mtype == MessageType.ADVERTISE:
        url = msg.option(Opt.BOOTFILE_URL)
        if ia and _addresses_in_ia(msg):
            c.address_advertises += 1
            if url is not None:
                c.server_urls += 1
                c.urls.append(url.decode("utf-8", "replace"))
            _event(
                c, d, "ADVERTISE", "from the address server: " + ", ".join(map(str, _addresses_in_ia(msg)))
            )
            return
        c.proxy_advertises += 1
        parts = ["proxy (no address)"]
        if url is None:
            c.proxy_without_59 += 1
            parts.append("NO option 59")
        else:
            text = url.decode("utf-8", "replace")
            c.urls.append(text)
            parts.append(f"59={text}")
        if not msg.has_option(Opt.VENDOR_CLASS):
            c.proxy_without_16 += 1
            parts.append("NO option 16")
        _event(c, d, "ADVERTISE", " ".join(parts))
    elif mtype == MessageType.REQUEST and d.dport == 4011:
        c.requests_4011.append((d.src, d.dst))
        _event(c, d, "REQUEST", "boot-service request to 4011")
    elif mtype == MessageType.REQUEST:
        _event(c, d, "REQUEST", "to the address server" if ia else "without IA")
    elif mtype == MessageType.REPLY and d.sport == 4011:
        c.replies_4011.append((d.src, d.sport, d.dst, d.dport))
        url = msg.option(Opt.BOOTFILE_URL)
        if url is not None:
            c.urls.append(url.decode("utf-8", "replace"))
        _event(
            c, d, "REPLY", f"boot-service reply {url.decode('utf-8', 'replace') if url else '(no option 59)'}"
        )
    elif mtype == MessageType.REPLY:
        leased = _addresses_in_ia(msg)
        c.leases |= leased
        _event(c, d, "REPLY", "lease " + ", ".join(map(str, leased)) if leased else "reply")
    else:
        _event(c, d, msg.type_name, "")


def judge6(c: Client6) -> Verdict:
    """The verdict on one DHCPv6 boot client, with the IPv4 verdict's fields."""
    if c.rrqs:
        return Verdict("booted", "TFTP", None, f"requested {c.rrqs[-1]!r} over TFTP on IPv6", "")
    if c.base.ipxe and not c.requests_4011:
        return Verdict(
            "incomplete", "Advertise", None,
            "iPXE: it drops every Advertise without an address, so it cannot boot from a DHCPv6 proxy; "
            "it boots by its DHCPv4 route (dual stack) or an embedded script",
            "enable the IPv4 subnet too (the DHCPv4 proxy answers iPXE), or embed the script in iPXE",
        )  # fmt: skip
    if c.replies_4011:
        src, sport, dst, dport = c.replies_4011[-1]
        if sport != 4011 or dport != 4011:
            return Verdict(
                "failed", "4011 reply", "PXE-E16",
                f"the boot-service Reply went [{src}]:{sport} -> [{dst}]:{dport}; EDK II reads it only "
                "from port 4011 to port 4011",
                "answer from port 4011 to the request's address and port 4011 (proxydhcp does)",
                "dhcp6-4011-ports",
            )  # fmt: skip
        return Verdict(
            "failed", "4011 reply", "PXE-E16",
            f"the boot-service Reply was sent to [{dst}]:{dport} but no TFTP read request followed: "
            "EDK II opens its read only after sending the Request, so a Reply faster than that is lost",
            "send the 4011 Reply again within the firmware's ~3 s wait (proxydhcp repeats it)",
            "dhcp6-4011-reply-lost",
        )  # fmt: skip
    if c.requests_4011:
        return Verdict(
            "failed", "4011 request", "PXE-E16",
            f"the boot-service Request to [{c.requests_4011[-1][1]}]:4011 got no Reply",
            "run the DHCPv6 proxy with this prefix enabled, and let UDP 4011 over IPv6 through",
            "dhcp6-4011-unanswered",
        )  # fmt: skip
    if c.proxy_advertises and c.proxy_without_16 == c.proxy_advertises:
        return Verdict(
            "failed", "Advertise", None,
            "the proxy's Advertise has no vendor class (16) PXEClient: EDK II takes it as a plain DHCPv6 "
            "offer and hangs without a message",
            "send option 16 (enterprise 343, PXEClient) in every answer (proxydhcp does)",
            "dhcp6-no-vendor-class",
        )  # fmt: skip
    if c.proxy_advertises and c.proxy_without_59 == c.proxy_advertises:
        return Verdict(
            "failed", "Advertise", "PXE-E16",
            "the address-less Advertise has no Boot File URL (option 59): nothing to boot",
            "configure a boot file for this architecture and prefix on the proxy",
            "dhcp6-no-bootfile-url",
        )  # fmt: skip
    if not c.proxy_advertises and c.server_urls:
        return Verdict(
            "incomplete", "TFTP", None,
            "the address server's own Advertise named the boot file (it does PXE itself); no TFTP read "
            "request from this client followed in the capture",
            "",
        )  # fmt: skip
    if not c.proxy_advertises:
        repeated = f"Solicit sent {c.solicits} times" if c.solicits > 1 else "one Solicit"
        if not c.address_advertises:
            return Verdict(
                "failed", "Solicit", "PXE-E16",
                f"{repeated}, no Advertise at all: no DHCPv6 server answered",
                "a DHCPv6 server for addresses and the proxy must both answer on this link",
                "dhcp6-no-advertise",
            )  # fmt: skip
        return Verdict(
            "failed", "Solicit", "PXE-E16",
            f"{repeated}; only the address server answered, no Advertise carried a Boot File URL (59)",
            "enable this IPv6 prefix on the DHCPv6 proxy (proxydhcp serve -s PREFIX/64) on this link",
            "dhcp6-no-proxy",
        )  # fmt: skip
    if not c.address_advertises:
        return Verdict(
            "failed", "Solicit", "PXE-E16",
            "the proxy answered, but no DHCPv6 server offered an address (EDK II needs both)",
            "run a DHCPv6 server for addresses on this link (kea, dnsmasq) beside the proxy",
            "dhcp6-no-address",
        )  # fmt: skip
    if c.http:
        return Verdict("incomplete", "HTTP", None, "HTTP boot: the download is not in a UDP capture", "")
    return Verdict(
        "failed", "4011 request", "PXE-E16",
        "both Advertises arrived but no boot-service Request to 4011 followed: EDK II sends it only "
        "when a router advertisement puts the proxy's address on-link",
        "advertise the prefix on-link (radvd, dnsmasq enable-ra) on this link",
        "dhcp6-no-4011-request",
    )  # fmt: skip


def findings6(c: Client6, verdict: Verdict) -> list[Finding]:
    out = []
    if verdict.failure is not None and verdict.verdict == "failed":
        out.append(Finding(verdict.failure, "error", verdict.cause, c.base.mac))
    if c.solicits > 1 and verdict.verdict != "booted":
        out.append(
            Finding("dhcp6-solicit-repeated", "warning", f"Solicit repeated ({c.solicits} times)", c.base.mac)
        )
    return out
