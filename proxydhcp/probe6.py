"""`proxydhcp probe -6`: act as an EDK II PXE-over-IPv6 (or HTTP boot) client on one interface.

It multicasts the PXE Solicit EDK II sends (options 1, 8, 3, 6, 62, 61, 16; issue 20), lists every
Advertise, never Requests an address (it takes no lease), performs the boot-service Request to
[proxy]:4011 that EDK II sends (from the interface's global address in the URL's prefix, else its
link-local one), and size-probes the boot file over TFTP (RRQ with tsize, then ERROR, as EDK II
does). Every datagram sent and received goes through `diagnose.dhcp6`, so the verdict reads as
`diagnose`'s.
"""

from __future__ import annotations

import os
import select
import socket
import time
from ipaddress import IPv6Address, IPv6Network
from urllib.parse import SplitResult, urlsplit

from proxydhcp.dhcp.arch import HTTP_ARCHES, describe_arch
from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import MalformedDhcp6, Message, MessageType, Opt, decode, encode_options
from proxydhcp.diagnose import build_report
from proxydhcp.diagnose.capture import CaptureStats, Datagram6
from proxydhcp.diagnose.timeline import Timeline
from proxydhcp.probe import ProbeError, ProbeResult, _iface_mac
from proxydhcp.serve import sockets6
from proxydhcp.serve.sockets import SO_BINDTODEVICE

ORO = (59, 60, 23, 16)
TFTP_WAIT_S = 2.0


class _Probe6:
    def __init__(self, iface: sockets6.Interface6, arch: int, mac: bytes, timeout: float) -> None:
        self.iface = iface
        self.arch = arch
        self.http = arch in HTTP_ARCHES
        self.timeout = timeout
        self.duid = options.DuidType.LLT.to_bytes(2, "big") + b"\x00\x01" + bytes(4) + mac
        self.xid = int.from_bytes(os.urandom(3), "big")
        self.started = time.monotonic()
        self.seen: list[Datagram6] = []
        link_local = [a for a, _ in iface.addresses if a.is_link_local]
        if not link_local:
            raise ProbeError(f"interface {iface.name!r} has no IPv6 link-local address yet")
        self.link_local = link_local[0]
        self.source = self.link_local  # the address of the 4011 step, and of TFTP after it

    def _record(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        ts = time.monotonic() - self.started
        source, destination = src[0].partition("%")[0], dst[0].partition("%")[0]
        self.seen.append(
            Datagram6(len(self.seen) + 1, ts, source, src[1], destination, dst[1], payload, None)
        )

    def _socket(self, address: IPv6Address, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.iface.name.encode())
            scope = self.iface.index if address.is_link_local else 0
            sock.bind((str(address), port, 0, scope))
        except OSError as exc:
            sock.close()
            raise ProbeError(
                f"cannot bind UDP [{address}]:{port} on {self.iface.name}: {exc.strerror}"
            ) from None
        return sock

    def _collect(self, sock: socket.socket, seconds: float, stop: float | None = None) -> list[Message]:
        """Messages for our transaction within `seconds`; `stop`: return that long after the first."""
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, src = sock.recvfrom(65535)
            local = sock.getsockname()
            self._record((src[0], src[1]), (local[0], local[1]), data)
            try:
                msg = decode(data)
            except MalformedDhcp6:
                continue
            if isinstance(msg, Message) and msg.transaction_id == self.xid:
                got.append(msg)
                if stop is not None:
                    deadline = min(deadline, time.monotonic() + stop)
        return got

    def _request_options(self) -> list[tuple[int, bytes]]:
        vendor = ("HTTPClient" if self.http else "PXEClient") + f":Arch:{self.arch:05d}:UNDI:003000"
        return [
            (Opt.CLIENTID, self.duid),
            (Opt.ELAPSED_TIME, b"\x00\x00"),
            (Opt.ORO, b"".join(code.to_bytes(2, "big") for code in ORO)),
            (Opt.NII, b"\x01\x03\x00"),
            (Opt.CLIENT_ARCH_TYPE, self.arch.to_bytes(2, "big")),
            (Opt.VENDOR_CLASS, options.VendorClass(options.PXE_ENTERPRISE, (vendor.encode(),)).encode()),
        ]

    def solicit(self) -> list[Message]:
        opts = self._request_options()
        opts.insert(2, (Opt.IA_NA, bytes.fromhex("00000001") + bytes(8)))
        data = bytes([MessageType.SOLICIT]) + self.xid.to_bytes(3, "big") + encode_options(opts)
        sock = self._socket(IPv6Address("::"), 546)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.iface.index)
            dest = ("ff02::1:2", 547, 0, self.iface.index)
            sock.sendto(data, dest)
            self._record((str(self.link_local), 546), ("ff02::1:2", 547), data)
            return [
                m for m in self._collect(sock, self.timeout, stop=1.0) if m.msg_type == MessageType.ADVERTISE
            ]
        finally:
            sock.close()

    def boot_service(self, server: IPv6Address, proxy_duid: bytes) -> Message | None:
        """EDK II's PxeBcRequestBootService: the Solicit's xid, the proxy's Server ID, no IA."""
        own = [a for a, n in self.iface.addresses if not a.is_link_local and server in _net(a, n)]
        source = self.source = own[0] if own else self.link_local
        data = (
            bytes([MessageType.REQUEST]) + self.xid.to_bytes(3, "big")
            + encode_options([(Opt.SERVERID, proxy_duid), *self._request_options()])
        )  # fmt: skip
        sock = self._socket(source, 4011)
        try:
            scope = self.iface.index if server.is_link_local else 0
            sock.sendto(data, (str(server), 4011, 0, scope))
            self._record((str(source), 4011), (str(server), 4011), data)
            replies = self._collect(sock, 3.0, stop=0.0)
            return replies[0] if replies else None
        finally:
            sock.close()

    def tftp_size(self, server: IPv6Address, path: str) -> int | None:
        """RRQ with tsize, then ERROR after the answer (EDK II's size probe): the size, or None."""
        sock = self._socket(self.source, 0)
        try:
            rrq = b"\x00\x01" + path.encode() + b"\x00octet\x00tsize\x000\x00blksize\x001432\x00"
            scope = self.iface.index if server.is_link_local else 0
            sock.sendto(rrq, (str(server), 69, 0, scope))
            if not select.select([sock], [], [], TFTP_WAIT_S)[0]:
                return None
            data, peer = sock.recvfrom(65535)
            local = sock.getsockname()
            self._record((local[0], local[1]), (str(server), 69), rrq)  # answered: the read happened
            sock.sendto(b"\x00\x05\x00\x00probe\x00", peer)
            if data[:2] == b"\x00\x06":  # OACK
                fields = data[2:].split(b"\x00")
                for key, value in zip(fields[::2], fields[1::2], strict=False):
                    if key.lower() == b"tsize" and value.isdigit():
                        return int(value)
                return -1
            return -1 if data[:2] == b"\x00\x03" else None
        finally:
            sock.close()


def _net(address: IPv6Address, prefixlen: int) -> IPv6Network:
    return IPv6Network(f"{address}/{prefixlen}", strict=False)


def _url_server(message: Message) -> tuple[str, SplitResult, IPv6Address | None]:
    """A message's Boot File URL (option 59) as text, its parts, and the IPv6 address it names (None
    when its host is not one: a name, an IPv4 address, nothing)."""
    url = (message.option(Opt.BOOTFILE_URL) or b"").decode("utf-8", "replace")
    parts = urlsplit(url)
    try:
        return url, parts, IPv6Address((parts.hostname or "").partition("%")[0])
    except ValueError:
        return url, parts, None


def probe6(iface: str, arch: int, mac: str | None = None, timeout: float = 5.0) -> ProbeResult:
    """Probe IPv6 network boot on `iface` as a client of architecture `arch`. Raises ProbeError."""
    found = {i.name: i for i in sockets6.interfaces6()}.get(iface)
    if found is None:
        raise ProbeError(f"interface {iface!r} has no IPv6 address (or does not exist)")
    raw_mac = bytes.fromhex(mac.replace(":", "").replace("-", "")) if mac else _iface_mac(iface)
    if len(raw_mac) != 6:
        raise ProbeError(f"--mac: not a MAC address: {mac!r}")
    p = _Probe6(found, arch, raw_mac, timeout)
    advertises = p.solicit()
    proxies = [m for m in advertises if not m.has_option(Opt.IA_NA) and m.option(Opt.BOOTFILE_URL)]
    detail = ""
    for offer in proxies:
        url, parts, server = _url_server(offer)
        if server is None:
            detail = f"the Boot File URL {url!r} does not name an IPv6 address"
            continue
        if p.http or parts.scheme != "tftp":
            detail = f"boot file URL {url} (HTTP boot: no 4011 step, download not probed)"
            break
        reply = p.boot_service(server, offer.option(Opt.SERVERID) or b"")
        if reply is None:
            detail = f"no Reply from [{server}]:4011"
            continue
        booted, target, tftp_server = _url_server(reply)
        if tftp_server is None:
            detail = f"the 4011 Reply's URL {booted!r} does not name an IPv6 address"
            continue
        size = p.tftp_size(tftp_server, target.path.lstrip("/"))
        detail = f"{booted}: " + (
            "no TFTP answer" if size is None else f"{size} bytes" if size >= 0 else "readable"
        )
        break
    stats = CaptureStats(linktype=1, frames=len(p.seen), first_ts=0.0, datagrams6=p.seen)
    report = build_report(Timeline(), stats, f"probe -6 on {iface}")
    report.notes = [n for n in report.notes if "DHCPv4" not in n]
    mac_text = ":".join(f"{b:02x}" for b in raw_mac)
    client = next((c for c in report.clients if c.client.mac == mac_text), None)
    if client is None:
        return ProbeResult(report, False, "NOT READY: no answer recorded")
    v = client.verdict
    granting = any(m.has_option(Opt.IA_NA) for m in advertises)
    ready = granting and (v.verdict == "booted" or (p.http and bool(proxies)))
    if v.verdict == "booted" and not granting:
        summary = (
            "NOT READY at Solicit: the boot service answers, but no DHCPv6 server offered an address "
            f"(EDK II needs both) [{detail}]"
        )
    elif ready:
        summary = f"READY: a {describe_arch(arch)} client over IPv6 would boot {detail}"
    else:
        code = f" (firmware would show {v.pxe_error})" if v.pxe_error else ""
        summary = f"NOT READY at {v.step}{code}: {v.cause}" + (f" [{detail}]" if detail else "")
    return ProbeResult(report, ready, summary)
