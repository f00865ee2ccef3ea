"""Streaming pcap / pcapng reader: frames → IPv4 UDP datagrams.

dpkt reads the file record by record (memory does not grow with the capture). Link layers are
parsed by hand with bounds checks, so a truncated or hostile frame is counted and skipped, never
raised: Ethernet (with 802.1Q/QinQ tags), Linux cooked SLL and SLL2, raw IP, BSD loopback.
IPv4 fragments are counted, not reassembled (a fragmented TFTP DATA is itself a finding).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, BinaryIO

import dpkt

from proxydhcp.errors import ProxyDhcpError

# pcap LINKTYPE_* values handled here.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_BSD,
        LINKTYPE_RAW,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
VLAN_TAGS = frozenset({0x8100, 0x88A8, 0x9100})
IPPROTO_UDP = 17

_PCAP_MAGICS = {b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class CaptureError(ProxyDhcpError):
    """The file is not a readable pcap/pcapng capture (the message says why)."""


@dataclass(frozen=True, slots=True)
class Datagram:
    """One IPv4 UDP datagram as seen on the wire."""

    frame: int  # 1-based frame number, as Wireshark counts
    ts: float
    src: IPv4Address
    sport: int
    dst: IPv4Address
    dport: int
    payload: bytes
    src_mac: str | None  # link-layer source, when the link type has one
    wire_len: int | None = None  # the payload's length on the wire, when the capture cut it short


@dataclass(frozen=True, slots=True)
class Datagram6:
    """One IPv6 UDP datagram of the DHCPv6 proxy flow (546, 547, 4011) or a TFTP request (69)."""

    frame: int
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    src_mac: str | None


DHCP6_PORTS = frozenset({546, 547, 4011})
MAX_DATAGRAMS6 = 100_000  # kept for diagnose/dhcp6 (a boot's DHCPv6 is a few dozen datagrams)


@dataclass(slots=True)
class CaptureStats:
    """What was in the capture besides the datagrams yielded (for the report's notes)."""

    linktype: int = -1
    frames: int = 0
    ipv4_udp: int = 0
    ipv4_fragments: int = 0
    ipv6: int = 0
    dhcpv6: int = 0
    tftp_v6: int = 0
    undecodable: int = 0
    truncated: bool = False
    cut_short: int = 0  # UDP datagrams cut by the snap length (their sizes come from the UDP header)
    first_ts: float | None = None
    fragment_pairs: dict[tuple[IPv4Address, IPv4Address], int] = field(default_factory=dict)
    datagrams6: list[Datagram6] = field(default_factory=list)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _link_to_ip(linktype: int, buf: bytes) -> tuple[int, bytes, str | None] | None:
    """Strip the link layer: (ethertype, network payload, source MAC) or None if not IP."""
    if linktype == LINKTYPE_ETHERNET:
        if len(buf) < 14:
            return None
        src: str | None = _mac(buf[6:12])
        etype, off = struct.unpack_from("!H", buf, 12)[0], 14
        while etype in VLAN_TAGS and len(buf) >= off + 4:
            etype, off = struct.unpack_from("!H", buf, off + 2)[0], off + 4
        return etype, buf[off:], src
    if linktype == LINKTYPE_LINUX_SLL:
        if len(buf) < 16:
            return None
        halen = struct.unpack_from("!H", buf, 4)[0]
        src = _mac(buf[6:12]) if halen == 6 else None
        return struct.unpack_from("!H", buf, 14)[0], buf[16:], src
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(buf) < 20:
            return None
        halen = buf[11]
        src = _mac(buf[12:18]) if halen == 6 else None
        return struct.unpack_from("!H", buf, 0)[0], buf[20:], src
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not buf:
            return None
        version = buf[0] >> 4
        return (ETH_IPV4 if version == 4 else ETH_IPV6 if version == 6 else 0), buf, None
    if linktype == LINKTYPE_NULL:
        if len(buf) < 4:
            return None
        family = buf[0] if buf[0] else buf[3]  # host byte order of the capturing machine
        return (ETH_IPV4 if family == 2 else ETH_IPV6 if family in (24, 28, 30) else 0), buf[4:], None
    return None


def _ipv6_udp_ports(buf: bytes) -> tuple[int, int] | None:
    """Ports of an IPv6 UDP datagram without extension headers (enough to count DHCPv6/TFTP)."""
    if len(buf) < 48 or buf[6] != IPPROTO_UDP:
        return None
    sport, dport = struct.unpack_from("!HH", buf, 40)
    return sport, dport


def _open_reader(fh: BinaryIO, path: Path) -> Any:
    magic = fh.read(4)
    fh.seek(0)
    try:
        if magic == _PCAPNG_MAGIC:
            return dpkt.pcapng.Reader(fh)
        if magic in _PCAP_MAGICS:
            return dpkt.pcap.Reader(fh)
    except (dpkt.Error, ValueError, struct.error, EOFError) as exc:
        raise CaptureError(f"{path}: damaged capture header ({exc.__class__.__name__})") from None
    raise CaptureError(f"{path}: not a pcap or pcapng file")


def read_datagrams(
    path: Path, stats: CaptureStats, progress: Callable[[int, int], None] | None = None
) -> Iterator[Datagram]:
    """Yield every IPv4 UDP datagram of the capture, filling `stats` as it goes.

    Raises CaptureError when the file cannot be opened or is not a capture; damage after the
    header ends the iteration and sets `stats.truncated`.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror or exc}") from None
    with fh:
        size = max(path.stat().st_size, 1)
        reader = _open_reader(fh, path)
        stats.linktype = int(reader.datalink())
        if stats.linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(f"{path}: unsupported link type {stats.linktype}")
        records = iter(reader)
        while True:
            try:
                ts, buf = next(records)
            except StopIteration:
                return
            except (dpkt.Error, ValueError, struct.error, EOFError, IndexError):
                stats.truncated = True  # a cut-off last record (capture stopped mid-write)
                return
            stats.frames += 1
            if stats.first_ts is None:
                stats.first_ts = float(ts)
            if progress is not None and stats.frames % 256 == 0:
                progress(fh.tell(), size)
            dgram = _decode_frame(stats, float(ts), bytes(buf))
            if dgram is not None:
                yield dgram


def _decode_frame(stats: CaptureStats, ts: float, buf: bytes) -> Datagram | None:
    link = _link_to_ip(stats.linktype, buf)
    if link is None:
        return None
    etype, ip, src_mac = link
    if etype == ETH_IPV6:
        stats.ipv6 += 1
        ports = _ipv6_udp_ports(ip)
        if ports is not None:
            if {546, 547} & set(ports):
                stats.dhcpv6 += 1
            if 69 in ports:
                stats.tftp_v6 += 1
            if (DHCP6_PORTS & set(ports) or ports[1] == 69) and len(stats.datagrams6) < MAX_DATAGRAMS6:
                plen = struct.unpack_from("!H", ip, 4)[0]
                udp = ip[40 : 40 + plen]
                ulen = struct.unpack_from("!H", udp, 4)[0]
                payload = udp[8 : ulen if 8 <= ulen <= len(udp) else len(udp)]
                src6, dst6 = str(IPv6Address(ip[8:24])), str(IPv6Address(ip[24:40]))
                stats.datagrams6.append(
                    Datagram6(stats.frames, ts, src6, ports[0], dst6, ports[1], payload, src_mac)
                )
        return None
    if etype != ETH_IPV4:
        return None
    if len(ip) < 20 or ip[0] >> 4 != 4:
        stats.undecodable += 1
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    frag = struct.unpack_from("!H", ip, 6)[0]
    if ihl < 20 or len(ip) < ihl:
        stats.undecodable += 1
        return None
    src, dst = IPv4Address(ip[12:16]), IPv4Address(ip[16:20])
    if ip[9] != IPPROTO_UDP:
        return None
    if frag & 0x3FFF:  # MF set or a non-zero offset
        stats.ipv4_fragments += 1
        key = (src, dst)
        stats.fragment_pairs[key] = stats.fragment_pairs.get(key, 0) + 1
        return None
    end = min(len(ip), total) if total >= ihl else len(ip)
    udp = ip[ihl:end]
    if len(udp) < 8:
        stats.undecodable += 1
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", udp, 0)
    payload = udp[8 : ulen if 8 <= ulen <= len(udp) else len(udp)]
    stats.ipv4_udp += 1
    wire_len = None
    if ulen - 8 > len(payload) and total == ihl + ulen:  # cut by the snap length, headers consistent
        wire_len = ulen - 8
        stats.cut_short += 1
    return Datagram(stats.frames, ts, src, sport, dst, dport, payload, src_mac, wire_len)
