"""What happened on the wire: DHCP and TFTP events decoded from a capture (dpkt), independent of
the service's own logs. Used for the success/failure assertions, the silence check, the failure
timeline printed by the tests and the step-by-step output of `make demo`.

Reads captures that are still being written (tcpdump -U): a truncated last record ends the read.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

DHCP_TYPES = {
    1: "DISCOVER",
    2: "OFFER",
    3: "REQUEST",
    4: "DECLINE",
    5: "ACK",
    6: "NAK",
    7: "RELEASE",
    8: "INFORM",
}
DHCP_PORTS = frozenset({67, 68, 4011})
DHCP6_PORTS = frozenset({546, 547, 4011})
DHCP6_TYPES = {1: "SOLICIT", 2: "ADVERTISE", 3: "REQUEST", 7: "REPLY", 11: "INFORMATION-REQUEST"}
TFTP_OPS = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw[:6])


@dataclass(frozen=True)
class Dhcp:
    """The fields of one BOOTP/DHCP datagram the assertions and timelines look at."""

    op: int
    msgtype: int | None
    xid: int
    chaddr: str
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    file: str
    options: dict[int, bytes]

    @property
    def name(self) -> str:
        return DHCP_TYPES.get(self.msgtype or 0, "BOOTP")

    def text(self, code: int) -> str:
        return self.options.get(code, b"").decode("ascii", "replace")

    def arch(self) -> int | None:
        raw = self.options.get(93, b"")
        return int.from_bytes(raw[:2], "big") if len(raw) >= 2 else None

    def user_class(self) -> str:
        return self.text(77)


@dataclass(frozen=True)
class Dhcp6:
    """One DHCPv6 client/server message (no relay messages): its type, transaction ID and options,
    decoded here from the RFC 8415 TLVs, independently of the product's codec."""

    msg_type: int
    xid: int
    codes: tuple[int, ...]  # option codes in wire order
    options: dict[int, bytes]  # the first of each code

    @property
    def name(self) -> str:
        return DHCP6_TYPES.get(self.msg_type, f"type{self.msg_type}")

    def boot_file_url(self) -> str:
        return self.options.get(59, b"").decode("ascii", "replace")

    def vendor_class(self) -> tuple[int, list[bytes]] | None:
        """Option 16: (enterprise number, the class data items)."""
        raw = self.options.get(16)
        if raw is None or len(raw) < 4:
            return None
        items, at = [], 4
        while at + 2 <= len(raw):
            size = int.from_bytes(raw[at : at + 2], "big")
            items.append(raw[at + 2 : at + 2 + size])
            at += 2 + size
        return int.from_bytes(raw[:4], "big"), items


@dataclass(frozen=True)
class Tftp:
    opcode: int
    block: int = 0
    data_len: int = 0
    filename: str = ""
    options: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return TFTP_OPS.get(self.opcode, f"op{self.opcode}")


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram seen on the wire (IPv4, or IPv6 from `read(..., ipv6=True)`)."""

    t: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    eth_src: str
    dhcp: Dhcp | None = None
    tftp: Tftp | None = None
    dhcp6: Dhcp6 | None = None


def _decode_dhcp(payload: bytes) -> Dhcp | None:
    try:
        msg = dpkt.dhcp.DHCP(payload)
    except (dpkt.UnpackError, struct.error, IndexError, ValueError):
        return None
    opts: dict[int, bytes] = {}
    for code, value in msg.opts:
        opts.setdefault(int(code), bytes(value))
    mt = opts.get(53, b"")
    return Dhcp(
        op=msg.op,
        msgtype=mt[0] if mt else None,
        xid=msg.xid,
        chaddr=mac_str(msg.chaddr),
        flags=msg.flags,
        ciaddr=socket.inet_ntoa(struct.pack(">I", msg.ciaddr)),
        yiaddr=socket.inet_ntoa(struct.pack(">I", msg.yiaddr)),
        siaddr=socket.inet_ntoa(struct.pack(">I", msg.siaddr)),
        giaddr=socket.inet_ntoa(struct.pack(">I", msg.giaddr)),
        file=bytes(msg.file).split(b"\0", 1)[0].decode("ascii", "replace"),
        options=opts,
    )


def _decode_dhcp6(payload: bytes) -> Dhcp6 | None:
    if len(payload) < 4 or payload[0] in (12, 13):  # relay messages: not seen on the e2e links
        return None
    codes: list[int] = []
    options: dict[int, bytes] = {}
    at = 4
    while at + 4 <= len(payload):
        code = int.from_bytes(payload[at : at + 2], "big")
        size = int.from_bytes(payload[at + 2 : at + 4], "big")
        if at + 4 + size > len(payload):
            return None  # truncated: not a message this reader can vouch for
        codes.append(code)
        options.setdefault(code, payload[at + 4 : at + 4 + size])
        at += 4 + size
    return Dhcp6(payload[0], int.from_bytes(payload[1:4], "big"), tuple(codes), options)


def _decode_tftp(payload: bytes) -> Tftp | None:
    if len(payload) < 4:
        return None
    opcode = int.from_bytes(payload[:2], "big")
    if opcode in (1, 2, 6):
        parts = payload[2:].split(b"\0")
        words = [p.decode("ascii", "replace") for p in parts]
        if opcode == 6:
            return Tftp(
                opcode, options={k.lower(): v for k, v in zip(words[0::2], words[1::2], strict=False) if k}
            )
        name, rest = (words[0], words[2:]) if len(words) > 1 else (words[0], [])
        opts = {k.lower(): v for k, v in zip(rest[0::2], rest[1::2], strict=False) if k}
        return Tftp(opcode, filename=name, options=opts)
    block = int.from_bytes(payload[2:4], "big")
    if opcode == 3:
        return Tftp(opcode, block=block, data_len=len(payload) - 4)
    if opcode == 4:
        return Tftp(opcode, block=block)
    if opcode == 5:
        return Tftp(opcode, block=block, error=payload[4:].split(b"\0", 1)[0].decode("ascii", "replace"))
    return None


def read(path: Path, ipv6: bool = False) -> list[Datagram]:
    """Every IPv4/UDP datagram of an Ethernet capture, with DHCP decoded on ports 67/68/4011 and
    TFTP decoded on port 69 and on the transfer ports that follow an RRQ. ipv6: the IPv6/UDP
    datagrams instead, with DHCPv6 decoded on ports 546/547/4011."""
    out: list[Datagram] = []
    tftp_peers: set[tuple[str, int]] = set()  # clients that sent an RRQ/WRQ to port 69
    if not path.exists() or path.stat().st_size < 24:
        return out
    with path.open("rb") as fh:
        try:
            reader = dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.UnpackError, struct.error):
            return out
        packets: Iterator[tuple[float, bytes]] = iter(reader)
        while True:
            try:
                ts, frame = next(packets)
            except StopIteration:
                break
            except (dpkt.NeedData, dpkt.UnpackError, struct.error, ValueError):
                break  # the record tcpdump is writing right now
            with contextlib.suppress(dpkt.UnpackError, struct.error, IndexError, ValueError):
                eth = dpkt.ethernet.Ethernet(frame)
                ip = eth.data
                family = dpkt.ip6.IP6 if ipv6 else dpkt.ip.IP
                if not isinstance(ip, family) or not isinstance(ip.data, dpkt.udp.UDP):
                    continue
                udp = ip.data
                if ipv6:
                    src = socket.inet_ntop(socket.AF_INET6, ip.src)
                    dst = socket.inet_ntop(socket.AF_INET6, ip.dst)
                else:
                    src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
                payload = bytes(udp.data)
                dg = Datagram(float(ts), src, udp.sport, dst, udp.dport, payload, mac_str(eth.src))
                if ipv6 and udp.sport in DHCP6_PORTS and udp.dport in DHCP6_PORTS:
                    dg = Datagram(**{**dg.__dict__, "dhcp6": _decode_dhcp6(payload)})
                elif not ipv6 and udp.sport in DHCP_PORTS and udp.dport in DHCP_PORTS:
                    dg = Datagram(**{**dg.__dict__, "dhcp": _decode_dhcp(payload)})
                elif udp.dport == 69 or (src, udp.sport) in tftp_peers or (dst, udp.dport) in tftp_peers:
                    tftp = _decode_tftp(payload)
                    if tftp and tftp.opcode in (1, 2) and udp.dport == 69:
                        tftp_peers.add((src, udp.sport))
                    dg = Datagram(**{**dg.__dict__, "tftp": tftp})
                out.append(dg)
    return out


def rrq_names(dgs: list[Datagram], src: str | None = None) -> list[str]:
    return [d.tftp.filename for d in dgs if d.tftp and d.tftp.opcode == 1 and (src is None or d.src == src)]


def client_ips(dgs: list[Datagram], mac: str) -> set[str]:
    """Addresses a MAC used as IPv4 source (after DHCP), to tell its TFTP apart from others'."""
    return {d.src for d in dgs if d.eth_src == mac and d.src != "0.0.0.0"}


def discovers(dgs: list[Datagram], mac: str) -> list[Datagram]:
    return [
        d
        for d in dgs
        if d.dhcp and d.dhcp.msgtype == 1 and d.dhcp.chaddr == mac and d.dport == 67 and d.dhcp.op == 1
    ]


# -- transfers -------------------------------------------------------------------------------------


@dataclass
class Transfer:
    """One TFTP read, reassembled from RRQ / OACK / DATA / ERROR."""

    client: tuple[str, int]
    server: str
    filename: str
    options: dict[str, str]
    t_start: float
    t_end: float = 0.0
    size: int = 0
    blocks: int = 0
    oack: dict[str, str] = field(default_factory=dict)
    error: str = ""
    complete: bool = False
    last_block: int = -1

    def blksize(self) -> int:
        try:
            return int(self.oack.get("blksize", "512"))
        except ValueError:
            return 512

    def summary(self) -> str:
        took = max(self.t_end - self.t_start, 1e-6)
        opts = " ".join(f"{k}={v}" for k, v in self.oack.items())
        if self.error and not self.size:
            probe = f" (size probe, OACK {opts})" if self.oack else ""
            return f"TFTP {self.filename}: aborted by '{self.error}'{probe}"
        state = "done" if self.complete else "incomplete"
        rate = self.size / took / 1024
        return (
            f"TFTP {self.filename}: {self.size} bytes in {self.blocks} blocks, {took:.2f} s, "
            f"{rate:.0f} KiB/s ({state}{', ' + opts if opts else ''})"
        )


def transfers(dgs: list[Datagram]) -> list[Transfer]:
    """TFTP reads keyed by the client's address and port (the server answers from a new port)."""
    done: list[Transfer] = []
    open_: dict[tuple[str, int], Transfer] = {}
    for d in dgs:
        if not d.tftp:
            continue
        op = d.tftp.opcode
        if op == 1 and d.dport == 69:
            if (d.src, d.sport) in open_:
                done.append(open_.pop((d.src, d.sport)))
            open_[(d.src, d.sport)] = Transfer(
                (d.src, d.sport), d.dst, d.tftp.filename, d.tftp.options, d.t, d.t
            )
            continue
        key = (d.dst, d.dport) if (d.dst, d.dport) in open_ else (d.src, d.sport)
        tr = open_.get(key)
        if tr is None:
            continue
        if op == 6:
            tr.oack = d.tftp.options
        elif op == 3 and key == (d.dst, d.dport):
            if d.tftp.block == tr.last_block:
                continue  # a retransmission
            tr.last_block = d.tftp.block
            tr.blocks += 1
            tr.size += d.tftp.data_len
            tr.t_end = d.t
            if d.tftp.data_len < tr.blksize():
                tr.complete = True
                done.append(open_.pop(key))
        elif op == 5:
            tr.error = d.tftp.error or f"error {d.tftp.block}"
            tr.t_end = d.t
            done.append(open_.pop(key))
    done.extend(open_.values())
    return sorted(done, key=lambda tr: tr.t_start)


# -- one-line summaries ----------------------------------------------------------------------------


def describe(d: Datagram) -> str | None:
    """A one-line summary of a DHCP or TFTP control datagram (None for DATA/ACK and other UDP)."""
    head = f"{d.src}:{d.sport} -> {d.dst}:{d.dport}"
    if d.dhcp6:
        m = d.dhcp6
        bits = [f"DHCPv6 {m.name}", f"xid={m.xid:06x}", "options=" + ",".join(map(str, m.codes))]
        if m.boot_file_url():
            bits.append(f"url={m.boot_file_url()}")
        vendor = m.vendor_class()
        if vendor:
            bits.append(f"16={vendor[0]}:" + "/".join(i.decode("ascii", "replace") for i in vendor[1]))
        return f"{head} {' '.join(bits)}"
    if d.dhcp:
        p = d.dhcp
        bits = [f"DHCP {p.name}", f"xid={p.xid:08x}", f"chaddr={p.chaddr}"]
        if p.yiaddr != "0.0.0.0":
            bits.append(f"yiaddr={p.yiaddr}")
        if p.siaddr != "0.0.0.0":
            bits.append(f"siaddr={p.siaddr}")
        if p.giaddr != "0.0.0.0":
            bits.append(f"giaddr={p.giaddr}")
        if p.file:
            bits.append(f"file={p.file}")
        for code, label in ((66, "66"), (67, "67")):
            if code in p.options:
                bits.append(f"{label}={p.text(code).rstrip(chr(0))}")
        if p.arch() is not None:
            bits.append(f"arch={p.arch()}")
        if p.user_class():
            bits.append(f"user-class={p.user_class()!r}")
        if 60 in p.options:
            bits.append(f"60={p.text(60)}")
        if 43 in p.options:
            bits.append("43=PXE")
        if p.flags & 0x8000:
            bits.append("broadcast")
        return f"{head} {' '.join(bits)}"
    if d.tftp and d.tftp.opcode in (1, 2, 5, 6):
        t = d.tftp
        opts = " ".join(f"{k}={v}" for k, v in t.options.items())
        if t.opcode in (1, 2):
            return f"{head} TFTP {t.name} {t.filename!r} {opts}".rstrip()
        if t.opcode == 6:
            return f"{head} TFTP OACK {opts}"
        return f"{head} TFTP ERROR {t.block} {t.error!r}"
    return None


def timeline(path: Path, t0: float | None = None, limit: int = 120, ipv6: bool = False) -> str:
    """The capture as lines `+seconds src -> dst what`, plus the TFTP transfers it contains."""
    dgs = read(path, ipv6=ipv6)
    if not dgs:
        return f"  ({path.name}: no {'IPv6' if ipv6 else 'IPv4'}/UDP packets)"
    base = t0 if t0 is not None else dgs[0].t
    lines = [f"  +{d.t - base:7.2f}s {text}" for d in dgs if (text := describe(d))]
    if len(lines) > limit:
        lines = [
            *lines[: limit // 2],
            f"  ... {len(lines) - limit} lines left out ...",
            *lines[-limit // 2 :],
        ]
    lines += [f"  {tr.summary()}" for tr in transfers(dgs)]
    return "\n".join(lines)


def nonzero_yiaddr_from(path: Path, server: str, ports: frozenset[int]) -> list[str]:
    """Replies sent by `server` from one of `ports` that offer an address (must be none)."""
    return [
        describe(d) or ""
        for d in read(path)
        if d.dhcp and d.dhcp.op == 2 and d.src == server and d.sport in ports and d.dhcp.yiaddr != "0.0.0.0"
    ]
