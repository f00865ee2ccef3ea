"""BOOTP/DHCP message codec (RFC 951, RFC 2131 §2, RFC 2132, RFC 3396), wrapping dpkt.

`DhcpPacket` is an immutable value. `DhcpPacket.decode` is total: any bytes give a packet or raise
`MalformedPacket(reason)`; no dpkt, struct or index error ever leaves this module. dpkt parses the
fixed header; options are walked here because dpkt's own walker raises a bare IndexError on a stray
byte and silently truncates overrunning options (STYLE.md §1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

import dpkt

from proxydhcp.dhcp.arch import describe_arch
from proxydhcp.errors import MalformedPacket

MAGIC_COOKIE = 0x63825363
HEADER_LEN = 236  # fixed BOOTP header, up to and excluding the magic cookie
OPTIONS_OFFSET = HEADER_LEN + 4
MIN_PACKET_SIZE = 300  # BOOTP minimum (RFC 951/1542); dnsmasq pads every reply to it
BOOTREQUEST = 1
BOOTREPLY = 2
BROADCAST_FLAG = 0x8000
ZERO = IPv4Address(0)

_DPKT_ERRORS = (dpkt.Error, IndexError, struct.error, ValueError, TypeError)


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    """The option codes this project reads or writes (RFC 2132, 3004, 3046, 4578; iPXE 175)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    VENDOR_SPECIFIC = 43
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    RELAY_AGENT = 82
    CLIENT_ARCH = 93
    CLIENT_NDI = 94
    CLIENT_UUID = 97
    IPXE_ENCAP = 175
    END = 255


def split_option(code: int, value: bytes) -> tuple[tuple[int, bytes], ...]:
    """One logical option as wire instances of at most 255 bytes (RFC 3396 §7)."""
    if not value:
        return ((code, b""),)
    return tuple((code, value[i : i + 255]) for i in range(0, len(value), 255))


def _walk_options(data: bytes, where: str) -> tuple[list[tuple[int, bytes]], bool]:
    """Parse an option area; returns (instances, saw END). Bytes after END are padding."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == Opt.END:
            return out, True
        if code == Opt.PAD:
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedPacket(f"option {code} in {where} has no length byte")
        length = data[i + 1]
        if i + 2 + length > n:
            raise MalformedPacket(f"option {code} in {where} overruns the packet ({length} bytes announced)")
        out.append((code, data[i + 2 : i + 2 + length]))
        i += 2 + length
    return out, False


def _concat(options: Iterable[tuple[int, bytes]], code: int) -> bytes | None:
    parts = [value for c, value in options if c == code]
    return b"".join(parts) if parts else None


# Length rules checked at decode time: the options whose odd lengths real servers reject (R-xx §1.5).
def _check_lengths(options: list[tuple[int, bytes]]) -> None:
    msg = _concat(options, Opt.MESSAGE_TYPE)
    if msg is None:
        raise MalformedPacket("missing option 53 (message type)")
    if len(msg) != 1:
        raise MalformedPacket(f"option 53 has length {len(msg)}, expected 1")
    arch = _concat(options, Opt.CLIENT_ARCH)
    if arch is not None and (not arch or len(arch) % 2):
        raise MalformedPacket(f"option 93 has length {len(arch)}, expected a non-zero multiple of 2")
    ndi = _concat(options, Opt.CLIENT_NDI)
    if ndi is not None and len(ndi) != 3:
        raise MalformedPacket(f"option 94 has length {len(ndi)}, expected 3")
    uuid = _concat(options, Opt.CLIENT_UUID)
    if uuid is not None and len(uuid) not in (0, 17):
        raise MalformedPacket(f"option 97 has length {len(uuid)}, expected 0 or 17")


@dataclass(frozen=True, slots=True)
class DhcpPacket:
    """One BOOTP/DHCP message. `options` holds the wire instances in order, without PAD and END;
    `sname`/`file` are without their NUL padding. An overloaded packet (option 52) is decoded into
    plain options, since `encode` never overloads (R-25)."""

    op: int
    xid: int
    chaddr: bytes
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    file: bytes = b""
    options: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        # Programming errors (a reply we build) are ValueError; decode never gets here with bad values.
        fields = (
            ("op", self.op, 8),
            ("htype", self.htype, 8),
            ("hops", self.hops, 8),
            ("xid", self.xid, 32),
            ("secs", self.secs, 16),
            ("flags", self.flags, 16),
        )
        for name, number, bits in fields:
            if not 0 <= number < (1 << bits):
                raise ValueError(f"{name} {number} does not fit in {bits} bits")
        if len(self.chaddr) > 16:
            raise ValueError("chaddr longer than 16 bytes")
        if len(self.sname) > 64 or b"\0" in self.sname:
            raise ValueError("sname must be at most 64 bytes without NUL")
        if len(self.file) > 128 or b"\0" in self.file:
            raise ValueError("file must be at most 128 bytes without NUL")
        for code, value in self.options:
            if not 0 < code < 255 or len(value) > 255:
                raise ValueError(f"option {code}: bad code or value longer than 255 bytes")

    # -- codec -------------------------------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes) -> DhcpPacket:
        """Parse a datagram. Raises MalformedPacket (only) with a reason fit for a log line."""
        if len(data) < OPTIONS_OFFSET:
            raise MalformedPacket(f"packet too short ({len(data)} bytes, need at least {OPTIONS_OFFSET})")
        try:
            hdr = dpkt.dhcp.DHCP(bytes(data[:OPTIONS_OFFSET]))  # header only: dpkt's option walker is unsafe
        except _DPKT_ERRORS as exc:
            raise MalformedPacket(f"bad BOOTP header: {type(exc).__name__}") from None
        if hdr.magic != MAGIC_COOKIE:
            raise MalformedPacket(f"bad magic cookie 0x{hdr.magic:08x}")
        if hdr.hln > 16:
            raise MalformedPacket(f"hardware address length {hdr.hln} > 16")
        sname_raw, file_raw = bytes(hdr.sname), bytes(hdr.file)
        options, _ = _walk_options(bytes(data[OPTIONS_OFFSET:]), "options")
        sname, file = _nul_strip(sname_raw), _nul_strip(file_raw)
        overload = _concat(options, Opt.OVERLOAD)
        if overload is not None:
            # RFC 2131 §4.1, RFC 3396: options go on in `file` (1), `sname` (2) or both (3), in that order.
            if len(overload) != 1 or overload[0] not in (1, 2, 3):
                raise MalformedPacket(f"bad option 52 (overload) {overload.hex()}")
            options = [(c, v) for c, v in options if c != Opt.OVERLOAD]
            if overload[0] & 1:
                options += _walk_options(bytes(file_raw), "file")[0]
                file = b""
            if overload[0] & 2:
                options += _walk_options(bytes(sname_raw), "sname")[0]
                sname = b""
        _check_lengths(options)
        return cls(
            op=hdr.op,
            htype=hdr.hrd,
            hops=hdr.hops,
            xid=hdr.xid,
            secs=hdr.secs,
            flags=hdr.flags,
            ciaddr=IPv4Address(hdr.ciaddr),
            yiaddr=IPv4Address(hdr.yiaddr),
            siaddr=IPv4Address(hdr.siaddr),
            giaddr=IPv4Address(hdr.giaddr),
            chaddr=bytes(hdr.chaddr[: hdr.hln]),
            sname=sname,
            file=file,
            options=tuple(options),
        )

    def encode(self, *, min_size: int = MIN_PACKET_SIZE) -> bytes:
        """Wire bytes: header, magic cookie, options in order, END, zero padding up to `min_size`.
        `sname`/`file` are always NUL-terminated (R-25: some PXE ROMs need it), never overloaded."""
        if len(self.sname) > 63 or len(self.file) > 127:
            raise ValueError("sname/file too long to be NUL-terminated")
        pkt = dpkt.dhcp.DHCP(
            op=self.op,
            hrd=self.htype,
            hln=len(self.chaddr),
            hops=self.hops,
            xid=self.xid,
            secs=self.secs,
            flags=self.flags,
            ciaddr=int(self.ciaddr),
            yiaddr=int(self.yiaddr),
            siaddr=int(self.siaddr),
            giaddr=int(self.giaddr),
            chaddr=self.chaddr.ljust(16, b"\0"),
            sname=self.sname.ljust(64, b"\0"),
            file=self.file.ljust(128, b"\0"),
            magic=MAGIC_COOKIE,
            opts=[],
        )
        body = bytearray(pkt.pack_hdr())
        for code, value in self.options:
            body += bytes((code, len(value))) + value
        body.append(Opt.END)
        if len(body) < min_size:
            body += bytes(min_size - len(body))
        return bytes(body)

    # -- accessors ---------------------------------------------------------------------------------

    def option(self, code: int) -> bytes | None:
        """The value of option `code`, repeated instances concatenated (RFC 3396); None if absent."""
        return _concat(self.options, code)

    def has_option(self, code: int) -> bool:
        return any(c == code for c, _ in self.options)

    @property
    def message_type(self) -> int | None:
        value = self.option(Opt.MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    @property
    def mac(self) -> str:
        return ":".join(f"{b:02x}" for b in self.chaddr)

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    def dump(self) -> str:
        """Stable, human multi-line text of every field and option (golden tests, explain, diagnose)."""
        op = {BOOTREQUEST: "BOOTREQUEST", BOOTREPLY: "BOOTREPLY"}.get(self.op, "?")
        lines = [
            f"op      {self.op} ({op})",
            f"htype   {self.htype}  hlen {len(self.chaddr)}  hops {self.hops}",
            f"xid     0x{self.xid:08x}",
            f"secs    {self.secs}",
            f"flags   0x{self.flags:04x}{' (broadcast)' if self.broadcast else ''}",
            f"ciaddr  {self.ciaddr}",
            f"yiaddr  {self.yiaddr}",
            f"siaddr  {self.siaddr}",
            f"giaddr  {self.giaddr}",
            f"chaddr  {self.mac}",
            f"sname   {_render_bytes(self.sname)}",
            f"file    {_render_bytes(self.file)}",
            "options",
        ]
        for code, value in self.options:
            try:
                name = Opt(code).name
            except ValueError:
                name = "?"
            lines.append(f"  {code:3d} {name:<18} {describe_option(code, value)}")
        return "\n".join(lines) + "\n"


def _nul_strip(field: bytes) -> bytes:
    return bytes(field).split(b"\0", 1)[0]


def _render_bytes(value: bytes) -> str:
    if not value:
        return '""'
    if all(0x20 <= b < 0x7F for b in value):
        return '"' + value.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "hex " + value.hex(" ")


def _ips(value: bytes) -> str:
    return ", ".join(str(IPv4Address(value[i : i + 4])) for i in range(0, len(value), 4))


def describe_option(code: int, value: bytes) -> str:
    """One option value as text; anything not of the expected shape is shown as hex."""
    n = len(value)
    if code == Opt.MESSAGE_TYPE and n == 1:
        try:
            return f"{MessageType(value[0]).name} ({value[0]})"
        except ValueError:
            return f"unknown ({value[0]})"
    if code in (Opt.SUBNET_MASK, Opt.REQUESTED_IP, Opt.SERVER_ID) and n == 4:
        return _ips(value)
    if code in (Opt.ROUTER, Opt.DNS) and n and n % 4 == 0:
        return _ips(value)
    if code in (Opt.LEASE_TIME, Opt.RENEWAL_TIME, Opt.REBINDING_TIME) and n == 4:
        return str(int.from_bytes(value, "big"))
    if code == Opt.MAX_MESSAGE_SIZE and n == 2:
        return str(int.from_bytes(value, "big"))
    if code == Opt.PARAM_REQUEST_LIST:
        return " ".join(str(b) for b in value)
    if code == Opt.CLIENT_ARCH and n and n % 2 == 0:
        codes = [int.from_bytes(value[i : i + 2], "big") for i in range(0, n, 2)]
        return ", ".join(f"{c} ({describe_arch(c)})" for c in codes)
    if code == Opt.CLIENT_NDI and n == 3:
        return f"type {value[0]} version {value[1]}.{value[2]}"
    if code == Opt.CLIENT_UUID and n == 17:
        return f"type {value[0]} guid {value[1:].hex()}"
    if code == Opt.VENDOR_SPECIFIC and n:
        from proxydhcp.dhcp.options import decode_pxe_suboptions  # options.py imports this module

        try:
            subs = decode_pxe_suboptions(value)
        except MalformedPacket:
            return _render_bytes(value)
        return "pxe " + " ".join(f"{k}={v.hex()}" for k, v in subs.items()) if subs else _render_bytes(value)
    return _render_bytes(value)
