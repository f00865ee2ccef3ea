"""Per-client state built from a stream of datagrams: DHCP timeline, responders, TFTP transfers.

Only summaries are kept (bounded lists), so memory depends on the number of clients, not on the
length of the capture. TFTP is matched to a client by the IP address learned from its DHCP ACKs and
ciaddr, else by the link-layer source of the RRQ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

from proxydhcp.dhcp import options as dopt
from proxydhcp.dhcp.codes import BOOTREPLY, MessageType, Opt
from proxydhcp.dhcp.packet import MIN_PACKET_SIZE, DhcpPacket
from proxydhcp.diagnose.capture import Datagram
from proxydhcp.errors import MalformedPacket
from proxydhcp.tftp import packet as tftp

MAX_EVENTS = 200  # per client; later events are counted, not kept
MAX_TRANSFERS = 64  # per client
MAX_MARKS = 400  # per client
BROADCAST = IPv4Address("255.255.255.255")
ZERO = IPv4Address(0)
DHCP_PORTS = frozenset({67, 68, 4011})
TFTP_PORT = 69


@dataclass(slots=True)
class Event:
    ts: float
    frame: int
    kind: str
    src: str
    dst: str
    detail: str


@dataclass(frozen=True, slots=True)
class DhcpMark:
    """One DHCP message of a client's, reduced to what the later-stage checks read: which program
    asked (firmware or iPXE) and who answered with what, in time order."""

    ts: float
    kind: str  # MessageType name
    request: bool
    port: int  # the server side's port (67 or 4011)
    ipxe: bool = False
    arch: int | None = None
    vendor: str = ""
    server: IPv4Address = ZERO
    address: bool = False  # a reply granting an address (yiaddr set)
    boot_file: str = ""


@dataclass(slots=True)
class Responder:
    """Everything one DHCP server (keyed by option 54, else source IP) told one client."""

    server: IPv4Address
    src: IPv4Address
    address_granting: bool = False
    offers: int = 0
    acks: int = 0
    acks_4011: int = 0
    naks: int = 0
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    has_54: bool = False
    vendor_class: str = ""
    sub43: tuple[int, ...] | None = None  # PXE sub-option codes of option 43, None if absent
    opt66: str = ""
    opt67: str = ""
    file: str = ""
    echoed_97: bool = True
    min_size: int = 1 << 16
    first_ts: float = 0.0

    @property
    def pxe(self) -> bool:
        return self.vendor_class.startswith("PXEClient")

    @property
    def is_proxy(self) -> bool:
        return not self.address_granting and self.pxe

    @property
    def boot_file(self) -> str:
        return self.file or self.opt67


@dataclass(slots=True)
class Request4011:
    server: IPv4Address
    src_port: int
    xid: int = 0
    count: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    answered: bool = False
    misaddressed: int = 0  # ACKs sent to the wrong address/port
    boot_item: bool = False  # carries 43.71 (PXE boot-server discovery, R-04)


@dataclass(slots=True)
class Transfer:
    """One TFTP read, from RRQ to its last packet."""

    client: IPv4Address
    client_port: int
    server: IPv4Address
    filename: str
    requested: dict[str, str]
    first_ts: float
    last_ts: float
    server_port: int | None = None
    rrq_count: int = 1
    oack: dict[str, str] | None = None
    blksize: int = 512
    blocks: int = 0  # distinct blocks received (32-bit, survives rollover)
    bytes: int = 0
    last_len: int = -1
    retransmits: int = 0
    dup_acks: int = 0
    apprentice: int = 0  # DATA resent right after a duplicate ACK (RFC 1123 §4.2.3.1)
    complete: bool = False
    error: tuple[int, str] | None = None
    error_from_client: bool = False
    probe: bool = False  # client aborted right after the OACK: EDK II tsize probe
    _last_ack: int = -1
    _last_ack_dup_ts: float | None = None

    @property
    def answered(self) -> bool:
        return self.server_port is not None or self.error is not None

    @property
    def duration(self) -> float:
        return max(0.0, self.last_ts - self.first_ts)


@dataclass(slots=True)
class Client:
    mac: str | None
    first_ts: float
    last_ts: float
    arch: int | None = None
    vendor_class: str = ""
    ipxe: bool = False
    sent_97: bool = False
    discovers: int = 0
    discovers_after_offer: int = 0
    discovers_after_43: int = 0  # DISCOVERs after a proxy offer carrying option 43
    requests: int = 0
    declines: list[IPv4Address] = field(default_factory=list)
    relayed: bool = False
    addresses: list[IPv4Address] = field(default_factory=list)
    lease_server: IPv4Address | None = None
    responders: dict[IPv4Address, Responder] = field(default_factory=dict)
    req4011: dict[IPv4Address, Request4011] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    dropped_transfers: int = 0
    events: list[Event] = field(default_factory=list)
    dropped_events: int = 0
    marks: list[DhcpMark] = field(default_factory=list)
    violations: list[tuple[str, str, str]] = field(default_factory=list)  # (check, severity, message)
    _violation_keys: set[tuple[str, str]] = field(default_factory=set)
    _pxe_offer_ts: float | None = None  # first offer with 60=PXEClient (proxy or server)
    _last_offer_ts: float | None = None
    _43_offer_ts: float | None = None

    def add_mark(self, mark: DhcpMark) -> None:
        if len(self.marks) < MAX_MARKS:
            self.marks.append(mark)

    def add_event(self, event: Event) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        else:
            self.dropped_events += 1

    def violation(self, check: str, severity: str, message: str, key: str = "") -> None:
        """Record a protocol problem once per (check, key): the first example is kept."""
        if (check, key) not in self._violation_keys and len(self.violations) < 32:
            self._violation_keys.add((check, key))
            self.violations.append((check, severity, message))


def _fmt_opts(opts: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in opts.items())


def _text(value: bytes | None) -> str:
    return "" if value is None else value.rstrip(b"\0").decode("ascii", "replace")


class Timeline:
    """Consumes datagrams, keeps per-client summaries."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.ip_to_key: dict[IPv4Address, str] = {}
        self.active: dict[tuple[IPv4Address, int], tuple[str, Transfer]] = {}
        self.dhcp_packets = 0
        self.malformed_dhcp = 0
        self.tftp_packets = 0
        self.malformed_tftp = 0
        self.last_ts: float | None = None
        self.first_ts: float | None = None
        self._seen = 0

    def _sweep(self, now: float) -> None:
        """Forget transfers idle for a minute (their summaries stay with the client)."""
        stale = [k for k, (_, t) in self.active.items() if now - t.last_ts > 60.0]
        for k in stale:
            del self.active[k]

    # -- dispatch --------------------------------------------------------------------------------
    def feed(self, d: Datagram) -> None:
        if self.first_ts is None:
            self.first_ts = d.ts
        self.last_ts = d.ts
        self._seen += 1
        if self._seen % 4096 == 0:
            self._sweep(d.ts)
        if d.sport in DHCP_PORTS and d.dport in DHCP_PORTS:
            self._dhcp(d)
        elif d.dport == TFTP_PORT or (d.dst, d.dport) in self.active or (d.src, d.sport) in self.active:
            self._tftp(d)

    def _client(self, key: str, mac: str | None, ts: float) -> Client:
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = Client(mac=mac, first_ts=ts, last_ts=ts)
        client.last_ts = max(client.last_ts, ts)
        return client

    def _learn_ip(self, ip: IPv4Address, key: str) -> None:
        if ip not in (ZERO, BROADCAST):
            self.ip_to_key[ip] = key

    # -- DHCP ------------------------------------------------------------------------------------
    def _dhcp(self, d: Datagram) -> None:
        try:
            pkt = DhcpPacket.decode(d.payload)
        except MalformedPacket:
            self.malformed_dhcp += 1
            return
        if pkt.htype != 1 or len(pkt.chaddr) != 6:
            self.malformed_dhcp += 1
            return
        self.dhcp_packets += 1
        key = pkt.mac
        client = self._client(key, pkt.mac, d.ts)
        mtype = pkt.message_type
        try:
            name = MessageType(mtype).name if mtype is not None else "BOOTP"
        except ValueError:
            name = f"type{mtype}"
        if pkt.op == BOOTREPLY:
            detail = self._reply(client, pkt, d, name)
        else:
            detail = self._request(client, pkt, d, name, key)
        if pkt.giaddr != ZERO:
            detail += f" giaddr={pkt.giaddr}"
        client.add_event(
            Event(d.ts, d.frame, name, f"{d.src}:{d.sport}", f"{d.dst}:{d.dport}", detail.strip())
        )

    def _request(self, client: Client, pkt: DhcpPacket, d: Datagram, name: str, key: str) -> str:
        try:
            arch = dopt.client_arch(pkt)
        except MalformedPacket:
            arch = None
        if arch is not None and client.arch is None:
            client.arch = arch  # the first one: a firmware falling back to HTTP boot asks as arch 16 later
        vendor = _text(pkt.option(Opt.VENDOR_CLASS))
        if vendor and not client.vendor_class.startswith("PXEClient:Arch"):
            client.vendor_class = vendor
        if dopt.is_ipxe(pkt):
            client.ipxe = True
        if pkt.option(Opt.CLIENT_UUID):
            client.sent_97 = True
        if pkt.giaddr != ZERO:
            client.relayed = True
        if pkt.ciaddr != ZERO:
            self._learn_ip(pkt.ciaddr, key)
        mtype = pkt.message_type
        parts = [f"xid=0x{pkt.xid:08x}"]
        if arch is not None:
            parts.append(f"arch={arch}")
        if dopt.is_ipxe(pkt):
            parts.append("ipxe")
        if pkt.ciaddr != ZERO:
            parts.append(f"ciaddr={pkt.ciaddr}")
        client.add_mark(DhcpMark(d.ts, name, True, d.dport, ipxe=dopt.is_ipxe(pkt), arch=arch, vendor=vendor))
        if mtype == MessageType.DISCOVER:
            client.discovers += 1
            if client._last_offer_ts is not None and d.ts > client._last_offer_ts:
                client.discovers_after_offer += 1
            if client._43_offer_ts is not None and d.ts > client._43_offer_ts:
                client.discovers_after_43 += 1
        elif mtype == MessageType.REQUEST:
            if d.dport == 4011:
                req = client.req4011.get(d.dst)
                if req is None or (req.answered and req.xid != pkt.xid):
                    # a new boot stage (e.g. iPXE after the firmware) starts a fresh request
                    req = client.req4011[d.dst] = Request4011(d.dst, d.sport, pkt.xid, first_ts=d.ts)
                req.count += 1
                req.src_port = d.sport
                req.last_ts = d.ts
                sub43 = pkt.option(Opt.VENDOR_SPECIFIC)
                if sub43 and _has_sub71(sub43):
                    req.boot_item = True
                    parts.append("boot-item")
                if req.count > 1:
                    parts.append(f"(retry {req.count - 1})")
            else:
                client.requests += 1
                sid = pkt.option(Opt.SERVER_ID)
                if sid is not None and len(sid) == 4:
                    parts.append(f"server={IPv4Address(sid)}")
        elif mtype == MessageType.DECLINE:
            req_ip = pkt.option(Opt.REQUESTED_IP)
            declined = IPv4Address(req_ip) if req_ip and len(req_ip) == 4 else pkt.ciaddr
            client.declines.append(declined)
            parts.append(f"address={declined}")
        return " ".join(parts)

    def _reply(self, client: Client, pkt: DhcpPacket, d: Datagram, name: str) -> str:
        sid_raw = pkt.option(Opt.SERVER_ID)
        server = IPv4Address(sid_raw) if sid_raw is not None and len(sid_raw) == 4 else d.src
        resp = client.responders.get(server)
        if resp is None:
            resp = client.responders[server] = Responder(server=server, src=d.src, first_ts=d.ts)
        resp.has_54 = resp.has_54 or sid_raw is not None
        mtype = pkt.message_type
        vendor = _text(pkt.option(Opt.VENDOR_CLASS))
        if vendor:
            resp.vendor_class = vendor
        if pkt.yiaddr != ZERO and d.sport != 4011:
            resp.address_granting = True
            resp.yiaddr = pkt.yiaddr
        if pkt.siaddr != ZERO:
            resp.siaddr = pkt.siaddr
        o43 = pkt.option(Opt.VENDOR_SPECIFIC)
        if o43 is not None:
            try:
                resp.sub43 = tuple(dopt.decode_pxe_suboptions(o43))
            except MalformedPacket:
                resp.sub43 = ()
        if pkt.option(Opt.TFTP_SERVER):
            resp.opt66 = _text(pkt.option(Opt.TFTP_SERVER))
        if pkt.option(Opt.BOOTFILE):
            resp.opt67 = _text(pkt.option(Opt.BOOTFILE))
        if pkt.file:
            resp.file = pkt.file.decode("ascii", "replace")
        resp.min_size = min(resp.min_size, len(d.payload))
        is_pxe_reply = vendor.startswith("PXEClient")
        proxy_reply = pkt.yiaddr == ZERO or d.sport == 4011
        if is_pxe_reply and proxy_reply and client.sent_97 and not pkt.option(Opt.CLIENT_UUID):
            resp.echoed_97 = False
        self._check_addressing(client, pkt, d, mtype)
        client.add_mark(
            DhcpMark(
                d.ts,
                name,
                False,
                d.sport,
                vendor=vendor,
                server=server,
                address=pkt.yiaddr != ZERO,
                boot_file=_text(pkt.file or pkt.option(Opt.BOOTFILE)),
            )
        )
        if mtype == MessageType.OFFER:
            resp.offers += 1
            client._last_offer_ts = d.ts
            if is_pxe_reply and client._pxe_offer_ts is None:
                client._pxe_offer_ts = d.ts
            if o43 is not None and is_pxe_reply and pkt.yiaddr == ZERO:
                client._43_offer_ts = client._43_offer_ts or d.ts
        elif mtype == MessageType.ACK:
            if d.sport == 4011:
                resp.acks_4011 += 1
                req = client.req4011.get(d.src)
                if req is not None:
                    if d.dst == BROADCAST or d.dport != req.src_port:
                        req.misaddressed += 1
                    else:
                        req.answered = True
            else:
                resp.acks += 1
                if pkt.yiaddr != ZERO:
                    client.lease_server = server
                    if pkt.yiaddr not in client.addresses:
                        client.addresses.append(pkt.yiaddr)
                    self._learn_ip(pkt.yiaddr, pkt.mac)
        elif mtype == MessageType.NAK:
            resp.naks += 1
        parts = [f"from {server}"]
        if pkt.yiaddr != ZERO:
            parts.append(f"yiaddr={pkt.yiaddr}")
        if pkt.siaddr != ZERO:
            parts.append(f"siaddr={pkt.siaddr}")
        if vendor:
            parts.append(f"60={vendor}")
        if o43 is not None:
            parts.append("43=" + (",".join(map(str, resp.sub43)) if resp.sub43 else "?"))
        if pkt.option(Opt.TFTP_SERVER):
            parts.append(f"66={resp.opt66}")
        if pkt.option(Opt.BOOTFILE):
            parts.append(f"67={resp.opt67}")
        if pkt.file:
            parts.append(f"file={pkt.file.decode('ascii', 'replace')}")
        if len(d.payload) < MIN_PACKET_SIZE:
            parts.append(f"size={len(d.payload)}")
        return " ".join(parts)

    def _check_addressing(self, client: Client, pkt: DhcpPacket, d: Datagram, mtype: int | None) -> None:
        if len(d.payload) < MIN_PACKET_SIZE:
            client.violation(
                "short-reply",
                "warning",
                f"{d.src} sent replies shorter than 300 bytes (the BOOTP minimum; some PXE ROMs drop "
                "shorter ones, R-24), e.g. frame " + str(d.frame) + f" ({len(d.payload)} bytes)",
                str(d.src),
            )
        if d.sport == 4011:
            req = client.req4011.get(d.src)
            if d.dst == BROADCAST or (req is not None and d.dport != req.src_port):
                where = f"{d.dst}:{d.dport}"
                expected = f"port {req.src_port}" if req else "address and port"
                client.violation(
                    "4011-reply-misaddressed",
                    "error",
                    f"{d.src} answered the port-4011 request to {where} instead of the request's source "
                    f"{expected} (frame {d.frame}); the client never sees it (R-12)",
                    str(d.src),
                )
        if pkt.giaddr != ZERO and d.dport == 68 and d.dst == BROADCAST and d.src != pkt.giaddr:
            client.violation(
                "relay-broadcast",
                "error",
                f"{d.src} answered a relayed request (giaddr {pkt.giaddr}) by broadcast instead of unicast "
                f"to {pkt.giaddr}:67 (frame {d.frame}); the client on the other segment never sees it (R-20)",
                str(d.src),
            )

    # -- TFTP ------------------------------------------------------------------------------------
    def _key_for_ip(self, ip: IPv4Address, src_mac: str | None) -> tuple[str, str | None]:
        key = self.ip_to_key.get(ip)
        if key is not None:
            return key, self.clients[key].mac if key in self.clients else None
        if src_mac is not None:
            self.ip_to_key[ip] = src_mac
            return src_mac, src_mac
        return f"ip {ip}", None

    def _tftp(self, d: Datagram) -> None:
        try:
            pkt = tftp.decode(d.payload)
        except MalformedPacket:
            self.malformed_tftp += 1
            return
        self.tftp_packets += 1
        if isinstance(pkt, tftp.Request):
            if d.dport == TFTP_PORT and pkt.opcode is tftp.Opcode.RRQ:
                self._rrq(d, pkt)
            return
        from_server = (d.dst, d.dport) in self.active
        entry = self.active.get((d.dst, d.dport)) if from_server else self.active.get((d.src, d.sport))
        if entry is None:
            return
        key, t = entry
        client = self.clients[key]
        client.last_ts = max(client.last_ts, d.ts)
        t.last_ts = d.ts
        if from_server:
            if t.server_port is None:
                t.server_port = d.sport
            elif d.sport != t.server_port:
                return  # another TID: not this transfer
            self._from_server(client, t, pkt, d)
        elif d.dport == t.server_port:
            self._from_client(client, t, pkt, d)

    def _rrq(self, d: Datagram, req: tftp.Request) -> None:
        key, mac = self._key_for_ip(d.src, d.src_mac)
        client = self._client(key, mac, d.ts)
        opts = {k.lower(): v for k, v in req.options}
        prev = self.active.get((d.src, d.sport))
        src, dst = f"{d.src}:{d.sport}", f"{d.dst}:{d.dport}"
        if prev is not None and prev[1].filename == req.filename and not prev[1].answered:
            prev[1].rrq_count += 1
            prev[1].last_ts = d.ts
            client.add_event(Event(d.ts, d.frame, "TFTP-RRQ", src, dst, f"{req.filename} (retransmitted)"))
            return
        t = Transfer(d.src, d.sport, d.dst, req.filename, opts, d.ts, d.ts)
        self.active[(d.src, d.sport)] = (key, t)
        if len(client.transfers) < MAX_TRANSFERS:
            client.transfers.append(t)
        else:
            client.dropped_transfers += 1
        client.add_event(Event(d.ts, d.frame, "TFTP-RRQ", src, dst, f"{req.filename} {_fmt_opts(opts)}"))

    def _from_server(self, client: Client, t: Transfer, pkt: tftp.Packet, d: Datagram) -> None:
        src, dst = f"{d.src}:{d.sport}", f"{d.dst}:{d.dport}"
        if isinstance(pkt, tftp.OAck):
            t.oack = {k.lower(): v for k, v in pkt.options}
            blk = t.oack.get("blksize", "")
            if blk.isdigit():
                t.blksize = int(blk)
            client.add_event(Event(d.ts, d.frame, "TFTP-OACK", src, dst, _fmt_opts(t.oack)))
        elif isinstance(pkt, tftp.Data):
            if pkt.block == (t.blocks + 1) & 0xFFFF:
                t.blocks += 1
                size = len(pkt.payload) if d.wire_len is None else d.wire_len - 4  # 4: TFTP header
                t.bytes += size
                t.last_len = size
                if size < t.blksize:
                    t.complete = True
                    client.add_event(
                        Event(
                            d.ts,
                            d.frame,
                            "TFTP-DONE",
                            src,
                            dst,
                            f"{t.filename}: {t.bytes} bytes in {t.blocks} blocks, {t.duration:.3f}s",
                        )
                    )
            else:
                t.retransmits += 1
                if t._last_ack_dup_ts is not None and d.ts - t._last_ack_dup_ts < 0.05:
                    t.apprentice += 1
        elif isinstance(pkt, tftp.Error):
            t.error = (pkt.code, pkt.message)
            client.add_event(Event(d.ts, d.frame, "TFTP-ERROR", src, dst, f"{pkt.code} {pkt.message}"))

    def _from_client(self, client: Client, t: Transfer, pkt: tftp.Packet, d: Datagram) -> None:
        if isinstance(pkt, tftp.Ack):
            if pkt.block == t._last_ack:
                t.dup_acks += 1
                t._last_ack_dup_ts = d.ts
            else:
                t._last_ack_dup_ts = None
            t._last_ack = pkt.block
        elif isinstance(pkt, tftp.Error):
            t.error = (pkt.code, pkt.message)
            t.error_from_client = True
            t.probe = t.oack is not None and t.blocks == 0
            note = " (size probe: normal)" if t.probe else ""
            client.add_event(
                Event(
                    d.ts,
                    d.frame,
                    "TFTP-ERROR",
                    f"{d.src}:{d.sport}",
                    f"{d.dst}:{d.dport}",
                    f"{pkt.code} {pkt.message}{note}",
                )
            )


def _has_sub71(value: bytes) -> bool:
    try:
        return 71 in dopt.decode_pxe_suboptions(value)
    except MalformedPacket:
        return False
