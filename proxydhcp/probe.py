"""`proxydhcp probe`: act as a PXE client on one interface and say whether a client would boot.

It broadcasts a PXE DISCOVER (from 0.0.0.0:68, broadcast flag set so that answers come back by
broadcast), lists every responder, never REQUESTs an address (so it takes no lease), performs the
port-4011 step when the offer calls for it (from the interface's own address), and fetches the boot
file over TFTP with tsize and blksize. Every packet sent and received is fed into the same timeline
and verdict engine as `diagnose`, so the wording of both commands is the same.
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from proxydhcp.dhcp import options as dopt
from proxydhcp.dhcp.arch import HTTP_ARCHES, describe_arch, is_uefi
from proxydhcp.dhcp.codes import BOOTREPLY, MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.diagnose import build_report
from proxydhcp.diagnose.capture import CaptureStats, Datagram
from proxydhcp.diagnose.checks import PXE_ERRORS, family
from proxydhcp.diagnose.report import Report
from proxydhcp.diagnose.timeline import Timeline
from proxydhcp.errors import MalformedPacket, ProxyDhcpError
from proxydhcp.serve import sockets
from proxydhcp.tftp import packet as tftp

BROADCAST = IPv4Address("255.255.255.255")
ZERO = IPv4Address(0)
PRL = bytes([1, 3, 6, 43, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])
TFTP_BLKSIZE = 1432  # what iPXE asks for: below every Ethernet MTU
TFTP_TIMEOUT_S = 2.0
TFTP_TRIES = 3
MAX_FILE = 256 * 1024 * 1024


class ProbeError(ProxyDhcpError):
    """The probe cannot run (no such interface, no address, port 68 busy): the message says why."""


@dataclass(slots=True)
class ProbeResult:
    report: Report
    ready: bool
    summary: str


def _iface(name: str) -> sockets.Interface:
    for iface in sockets.interfaces():
        if iface.name == name:
            return iface
    raise ProbeError(f"interface {name!r} does not exist")


def _iface_mac(name: str) -> bytes:
    try:
        text = Path(f"/sys/class/net/{name}/address").read_text().strip()
        raw = bytes.fromhex(text.replace(":", ""))
        if len(raw) == 6 and any(raw):
            return raw
    except (OSError, ValueError):
        pass
    return b"\x02" + os.urandom(5)  # locally administered


class _Probe:
    def __init__(self, iface: sockets.Interface, arch: int, mac: bytes, timeout: float) -> None:
        self.iface, self.arch, self.mac, self.timeout = iface, arch, mac, timeout
        self.ip = iface.address or ZERO
        self.timeline = Timeline()
        self.t0 = time.monotonic()
        self.xid = int.from_bytes(os.urandom(4), "big")
        self.uuid = b"\x00" + os.urandom(16)
        self.vendor = "HTTPClient" if arch in HTTP_ARCHES else "PXEClient"  # UEFI HTTP boot: no 4011

    # -- recording -------------------------------------------------------------------------------
    def _record(self, src: tuple[IPv4Address, int], dst: tuple[IPv4Address, int], payload: bytes) -> None:
        ts = time.monotonic() - self.t0
        frame = self.timeline.dhcp_packets + self.timeline.tftp_packets + 1
        self.timeline.feed(Datagram(frame, ts, src[0], src[1], dst[0], dst[1], payload, None))

    # -- DHCP ------------------------------------------------------------------------------------
    def _request(
        self, mtype: MessageType, ciaddr: IPv4Address = ZERO, extra: tuple[tuple[int, bytes], ...] = ()
    ) -> bytes:
        undi = "003000" if is_uefi(self.arch) else "002001"
        opts: tuple[tuple[int, bytes], ...] = (
            (Opt.MESSAGE_TYPE, bytes([mtype])),
            (Opt.MAX_MESSAGE_SIZE, (1472).to_bytes(2, "big")),
            (Opt.PARAM_REQUEST_LIST, PRL),
            (Opt.CLIENT_ARCH, self.arch.to_bytes(2, "big")),
            (Opt.CLIENT_NDI, b"\x01\x03\x00"),
            (Opt.CLIENT_UUID, self.uuid),
            (Opt.VENDOR_CLASS, f"{self.vendor}:Arch:{self.arch:05d}:UNDI:{undi}".encode()),
            *extra,
        )
        flags = 0x8000 if ciaddr == ZERO else 0
        return DhcpPacket(
            op=1, xid=self.xid, chaddr=self.mac, flags=flags, ciaddr=ciaddr, options=opts
        ).encode()

    def _collect(self, sock: socket.socket, until: float, port: int, want: MessageType) -> list[DhcpPacket]:
        got: list[DhcpPacket] = []
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                data, (host, sport) = sock.recvfrom(4096)
            except OSError:
                continue
            try:
                pkt = DhcpPacket.decode(data)
            except MalformedPacket:
                continue
            if pkt.op != BOOTREPLY or pkt.xid != self.xid or pkt.chaddr != self.mac:
                continue  # someone else's exchange
            dst = BROADCAST if port == 68 and pkt.broadcast else self.ip
            self._record((IPv4Address(host), sport), (dst, port), data)
            if pkt.message_type == want:
                got.append(pkt)
        return got

    def discover(self) -> list[DhcpPacket]:
        try:
            sock = sockets.open_udp(68, self.iface.name, reuse=True)
        except OSError as exc:
            raise ProbeError(f"cannot bind UDP port 68 on {self.iface.name}: {exc.strerror or exc}") from None
        offers: list[DhcpPacket] = []
        with sock:
            # Two DISCOVERs, as firmware retransmits: the second one catches late or lost answers.
            for until in (self.t0 + self.timeout / 2, self.t0 + self.timeout):
                data = self._request(MessageType.DISCOVER)
                sock.sendto(data, (str(BROADCAST), 67))
                self._record((ZERO, 68), (BROADCAST, 67), data)
                offers += self._collect(sock, until, 68, MessageType.OFFER)
        return offers

    def ask_4011(self, server: IPv4Address, offer: DhcpPacket) -> DhcpPacket | None:
        extra: tuple[tuple[int, bytes], ...] = ()
        o43 = offer.option(Opt.VENDOR_SPECIFIC)
        if o43:
            try:
                menu = dopt.decode_pxe_suboptions(o43).get(9, b"")
            except MalformedPacket:
                menu = b""
            if len(menu) >= 2:  # PXE boot-server discovery: ask for the first menu item, layer 0
                extra = ((Opt.VENDOR_SPECIFIC, bytes([71, 4]) + menu[:2] + b"\0\0" + b"\xff"),)
        try:
            sock = sockets.open_udp(4011, self.iface.name, address=str(self.ip), reuse=True)
        except OSError as exc:
            raise ProbeError(
                f"cannot bind {self.ip}:4011 on {self.iface.name}: {exc.strerror or exc}"
            ) from None
        with sock:
            for wait in (1.0, 2.0, 3.0):  # EDK II's 4011 retry rhythm
                data = self._request(MessageType.REQUEST, ciaddr=self.ip, extra=extra)
                sock.sendto(data, (str(server), 4011))
                self._record((self.ip, 4011), (server, 4011), data)
                acks = self._collect(sock, time.monotonic() + wait, 4011, MessageType.ACK)
                if acks:
                    return acks[0]
        return None

    # -- TFTP ------------------------------------------------------------------------------------
    def fetch(self, server: IPv4Address, filename: str) -> None:
        sock = sockets.open_udp(0, self.iface.name, address=str(self.ip))
        with sock:
            port = sock.getsockname()[1]
            me = (self.ip, port)
            rrq = tftp.Request(
                tftp.Opcode.RRQ, filename, "octet", (("tsize", "0"), ("blksize", str(TFTP_BLKSIZE)))
            ).encode()
            last: tuple[bytes, tuple[str, int]] = (rrq, (str(server), 69))
            peer: tuple[str, int] | None = None
            blksize, expect, received = 512, 1, 0
            tries = 0
            while tries < TFTP_TRIES:
                sock.sendto(*last)
                self._record(me, (IPv4Address(last[1][0]), last[1][1]), last[0])
                deadline = time.monotonic() + TFTP_TIMEOUT_S
                progressed = False
                while (left := deadline - time.monotonic()) > 0 and not progressed:
                    if not select.select([sock], [], [], left)[0]:
                        break
                    data, addr = sock.recvfrom(65536)
                    if addr[0] != str(server) or (peer is not None and addr != peer):
                        continue
                    peer = addr
                    self._record((IPv4Address(addr[0]), addr[1]), me, data)
                    try:
                        pkt = tftp.decode(data)
                    except MalformedPacket:
                        continue
                    if isinstance(pkt, tftp.Error):
                        return
                    if isinstance(pkt, tftp.OAck) and expect == 1:
                        blk = dict((k.lower(), v) for k, v in pkt.options).get("blksize", "512")
                        blksize = int(blk) if blk.isdigit() else 512
                        last = (tftp.Ack(0).encode(), peer)
                        progressed = True
                    elif isinstance(pkt, tftp.Data) and pkt.block == expect & 0xFFFF:
                        received += len(pkt.payload)
                        last = (tftp.Ack(pkt.block).encode(), peer)
                        expect += 1
                        progressed = True
                        if len(pkt.payload) < blksize or received > MAX_FILE:
                            sock.sendto(*last)
                            self._record(me, (IPv4Address(peer[0]), peer[1]), last[0])
                            return
                tries = 0 if progressed else tries + 1


def probe(iface: str, arch: int, mac: str | None = None, timeout: float = 5.0) -> ProbeResult:
    """Probe the segment on `iface` as a client of architecture `arch`. Raises ProbeError."""
    info = _iface(iface)
    if not info.up:
        raise ProbeError(f"interface {iface!r} is down")
    raw_mac = bytes.fromhex(mac.replace(":", "").replace("-", "")) if mac else _iface_mac(iface)
    if len(raw_mac) != 6:
        raise ProbeError(f"--mac: not a MAC address: {mac!r}")
    p = _Probe(info, arch, raw_mac, timeout)
    mac_text = ":".join(f"{b:02x}" for b in raw_mac)
    if p.ip != ZERO:
        p.timeline.ip_to_key[p.ip] = mac_text  # our TFTP traffic belongs to this client (no ACK to learn it)
    offers = p.discover()
    if arch in HTTP_ARCHES:
        return _probe_http(p, offers, iface)
    boot = _boot_source(p, offers)
    if boot is not None:
        server, filename = boot
        p.fetch(server, filename)
    stats = CaptureStats(linktype=1, frames=p.timeline.dhcp_packets + p.timeline.tftp_packets, first_ts=0.0)
    report = build_report(p.timeline, stats, f"probe on {iface}")
    report.notes = [n for n in report.notes if "IPv6" not in n]
    client = next((c for c in report.clients if c.client.mac == mac_text), None)
    if client is None:
        return ProbeResult(report, False, "no client state recorded")
    done = [t for t in client.client.transfers if t.complete and not t.probe]
    granting = any(r.address_granting for r in client.client.responders.values())
    v = client.verdict
    code = f" (firmware would show {v.pxe_error})" if v.pxe_error else ""
    summary = f"NOT READY at {v.step}{code}: {v.cause}"
    ok = False
    if done:
        t = done[0]
        tsize = (t.oack or {}).get("tsize", "")
        if tsize.isdigit() and int(tsize) != t.bytes:
            summary = (
                f"NOT READY at tftp: {t.filename} from {t.server} gave {t.bytes} bytes, tsize said {tsize}"
            )
        elif not granting:
            # The boot service works, but a real client also needs an address (PXE-E52 on BIOS).
            bios, uefi = PXE_ERRORS["only-proxy-offers"]
            shown = uefi if family(client.client) == "uefi" else bios
            summary = (
                f"NOT READY at dhcp (firmware would show {shown}): only proxyDHCP offers arrived; no DHCP "
                f"server offered an address (the boot file {t.filename}, {t.bytes} bytes from {t.server}, "
                "is fine)"
            )
        else:
            ok = True
            summary = f"READY: a {describe_arch(arch)} client would get {t.filename} ({t.bytes} bytes)"
            summary += f" from {t.server}"
    return ProbeResult(report, ok, summary)


def _boot_source(p: _Probe, offers: list[DhcpPacket]) -> tuple[IPv4Address, str] | None:
    """Where a real client would fetch its boot file from, doing the 4011 step when needed."""
    pxe = [o for o in offers if (o.option(Opt.VENDOR_CLASS) or b"").startswith(b"PXEClient")]
    if not pxe:
        return None
    proxies = [o for o in pxe if o.yiaddr == ZERO] or pxe
    offer = proxies[0]
    sid = offer.option(Opt.SERVER_ID)
    server = IPv4Address(sid) if sid and len(sid) == 4 else offer.siaddr
    file = (offer.file or offer.option(Opt.BOOTFILE) or b"").decode("ascii", "replace")
    o43 = offer.option(Opt.VENDOR_SPECIFIC)
    direct = file and offer.siaddr != ZERO and (not is_uefi(p.arch) or not o43)
    if direct:
        return offer.siaddr, file
    if p.ip == ZERO:
        return None  # the 4011 step needs an address: reported by the verdict ("should now ask ...:4011")
    ack = p.ask_4011(server, offer)
    if ack is None:
        return None
    file = (ack.file or ack.option(Opt.BOOTFILE) or b"").decode("ascii", "replace")
    target = ack.siaddr if ack.siaddr != ZERO else server
    return (target, file) if file else None


def _probe_http(p: _Probe, offers: list[DhcpPacket], iface: str) -> ProbeResult:
    """An HTTP boot client: the URL it is offered, fetched over HTTP (probe_http.py)."""
    from proxydhcp.probe_http import fetch, offered_url

    stats = CaptureStats(linktype=1, frames=p.timeline.dhcp_packets, first_ts=0.0)
    report = build_report(p.timeline, stats, f"probe on {iface}")
    report.notes = [n for n in report.notes if "IPv6" not in n]
    url = offered_url(offers)
    if url is None:
        return ProbeResult(report, False, "NOT READY at dhcp: no offer with option 60 HTTPClient and a URL")
    got = fetch(url, p.ip, max(p.timeout, 5.0))
    report.notes.append(f"HTTP: {url}: " + (f"{got.received} bytes" if got.ok else got.error))
    if not got.ok:
        return ProbeResult(report, False, f"NOT READY at http: {url}: {got.error}")
    granting = any(o.yiaddr != ZERO for o in offers)
    if not granting:
        return ProbeResult(
            report,
            False,
            f"NOT READY at dhcp: only proxyDHCP offers arrived; no DHCP server offered an address (the URL "
            f"{url}, {got.received} bytes, is fine)",
        )
    return ProbeResult(
        report, True, f"READY: a {describe_arch(p.arch)} client would get {url} ({got.received} bytes)"
    )
