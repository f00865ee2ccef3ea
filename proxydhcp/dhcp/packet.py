"""BOOTP/DHCP message codec (RFC 951, RFC 2131 §2, RFC 2132, RFC 3396), wrapping dpkt.

`DhcpPacket` is an immutable value. `DhcpPacket.decode` is total: any bytes give a packet or raise
`MalformedPacket(reason)`; no dpkt, struct or index error ever leaves this module. dpkt parses the
fixed header (its `__hdr_fmt__` layout, precompiled once: building a dpkt object per packet cost more
than the rest of decode); options are walked here because dpkt's own walker raises a bare IndexError on
a stray byte and silently truncates overrunning options (STYLE.md §1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address

import dpkt

from proxydhcp.dhcp.arch import describe_arch
from proxydhcp.dhcp.codes import BOOTREPLY, BOOTREQUEST, BROADCAST_FLAG, MessageType, Opt
from proxydhcp.dhcp.options import decode_pxe_suboptions
from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import Reason

MAGIC_COOKIE = 0x63825363
HEADER_LEN = 236  # fixed BOOTP header, up to and excluding the magic cookie
OPTIONS_OFFSET = HEADER_LEN + 4
MIN_PACKET_SIZE = 300  # BOOTP minimum (RFC 951/1542); dnsmasq pads every reply to it
ZERO = IPv4Address(0)

# The BOOTP header as dpkt lays it out (RFC 951), magic cookie included: one C call per decode/encode.
_HEADER_FIELDS = (
    "op",
    "hrd",
    "hln",
    "hops",
    "xid",
    "secs",
    "flags",
    "ciaddr",
    "yiaddr",
    "siaddr",
    "giaddr",
    "chaddr",
    "sname",
    "file",
    "magic",
)
if tuple(dpkt.dhcp.DHCP.__hdr_fields__) != _HEADER_FIELDS or dpkt.dhcp.DHCP.__hdr_len__ != OPTIONS_OFFSET:
    raise ImportError(f"unexpected dpkt BOOTP header layout {dpkt.dhcp.DHCP.__hdr_fields__}")
_HEADER = struct.Struct(dpkt.dhcp.DHCP.__hdr_fmt__)
# Plain ints: the option walk compares every code with them (an IntEnum operand costs a subtype check).
_PAD, _END, _OVERLOAD, _MESSAGE_TYPE = int(Opt.PAD), int(Opt.END), int(Opt.OVERLOAD), int(Opt.MESSAGE_TYPE)
_CLIENT_ARCH, _CLIENT_NDI, _CLIENT_UUID = int(Opt.CLIENT_ARCH), int(Opt.CLIENT_NDI), int(Opt.CLIENT_UUID)

# Decoded addresses are mostly 0.0.0.0 or a relay's giaddr: share the objects (bounded, immutable values).
_ADDRESSES: dict[int, IPv4Address] = {0: ZERO}
_ADDRESS_CACHE_SIZE = 1024


def _address(value: int) -> IPv4Address:
    address = _ADDRESSES.get(value)
    if address is None:
        if len(_ADDRESSES) >= _ADDRESS_CACHE_SIZE:
            _ADDRESSES.clear()
            _ADDRESSES[0] = ZERO
        address = _ADDRESSES[value] = IPv4Address(value)
    return address


def split_option(code: int, value: bytes) -> tuple[tuple[int, bytes], ...]:
    """One logical option as wire instances of at most 255 bytes (RFC 3396 §7)."""
    if not value:
        return ((code, b""),)
    if len(value) <= 255:
        return ((code, value[0:255]),)
    return tuple((code, value[i : i + 255]) for i in range(0, len(value), 255))


def _walk_options(
    data: bytes, start: int, where: str, out: list[tuple[int, bytes]], index: dict[int, bytes]
) -> None:
    """Parse an option area from `start`, appending instances to `out` and their RFC 3396
    concatenation to `index`. Bytes after END are padding."""
    i, n = start, len(data)
    while i < n:
        code = data[i]
        if code == _END:
            return
        if code == _PAD:
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedPacket(f"option {code} in {where} has no length byte", Reason.OPTION_OVERRUN)
        end = i + 2 + data[i + 1]
        if end > n:
            length = data[i + 1]
            raise MalformedPacket(
                f"option {code} in {where} overruns the packet ({length} bytes announced)",
                Reason.OPTION_OVERRUN,
            )
        value = data[i + 2 : end]
        out.append((code, value))
        if code in index:
            index[code] += value
        else:
            index[code] = value
        i = end


def _concat_index(options: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    index: dict[int, bytes] = {}
    for code, value in options:
        index[code] = index[code] + value if code in index else bytes(value)
    return index


# Length rules checked at decode time: the options whose odd lengths real servers reject (R-xx §1.5).
def _check_lengths(index: dict[int, bytes]) -> None:
    msg = index.get(_MESSAGE_TYPE)
    if msg is None:
        raise MalformedPacket("missing option 53 (message type)", Reason.NO_MESSAGE_TYPE)
    if len(msg) != 1:
        raise MalformedPacket(f"option 53 has length {len(msg)}, expected 1", Reason.BAD_OPTION_LENGTH)
    arch = index.get(_CLIENT_ARCH)
    if arch is not None and (not arch or len(arch) % 2):
        raise MalformedPacket(
            f"option 93 has length {len(arch)}, expected a non-zero multiple of 2", Reason.BAD_OPTION_LENGTH
        )
    ndi = index.get(_CLIENT_NDI)
    if ndi is not None and len(ndi) != 3:
        raise MalformedPacket(f"option 94 has length {len(ndi)}, expected 3", Reason.BAD_OPTION_LENGTH)
    uuid = index.get(_CLIENT_UUID)
    if uuid is not None and len(uuid) not in (0, 17):
        raise MalformedPacket(f"option 97 has length {len(uuid)}, expected 0 or 17", Reason.BAD_OPTION_LENGTH)


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
    # RFC 3396 concatenation per code, built on first `option()` (or by decode): one scan per packet.
    _index: dict[int, bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Programming errors (a reply we build) are ValueError; decode never gets here with bad values.
        if not (
            0 <= self.op < 0x100
            and 0 <= self.htype < 0x100
            and 0 <= self.hops < 0x100
            and 0 <= self.xid < 0x1_0000_0000
            and 0 <= self.secs < 0x1_0000
            and 0 <= self.flags < 0x1_0000
        ):
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
            raise MalformedPacket(
                f"packet too short ({len(data)} bytes, need at least {OPTIONS_OFFSET})", Reason.TOO_SHORT
            )
        if type(data) is not bytes:
            data = bytes(data)
        # At least 240 bytes, so the fixed-size unpack cannot fail.
        (
            op,
            htype,
            hln,
            hops,
            xid,
            secs,
            flags,
            ciaddr,
            yiaddr,
            siaddr,
            giaddr,
            chaddr,
            sname_raw,
            file_raw,
            magic,
        ) = _HEADER.unpack_from(data)
        if magic != MAGIC_COOKIE:
            raise MalformedPacket(f"bad magic cookie 0x{magic:08x}", Reason.BAD_MAGIC_COOKIE)
        if hln > 16:
            raise MalformedPacket(f"hardware address length {hln} > 16", Reason.BAD_HEADER)
        options: list[tuple[int, bytes]] = []
        index: dict[int, bytes] = {}
        _walk_options(data, OPTIONS_OFFSET, "options", options, index)
        sname = sname_raw.split(b"\0", 1)[0]
        file = file_raw.split(b"\0", 1)[0]
        overload = index.get(_OVERLOAD)
        if overload is not None:
            # RFC 2131 §4.1, RFC 3396: options go on in `file` (1), `sname` (2) or both (3), in that order.
            if len(overload) != 1 or overload[0] not in (1, 2, 3):
                raise MalformedPacket(f"bad option 52 (overload) {overload.hex()}", Reason.BAD_OPTION_LENGTH)
            options = [(c, v) for c, v in options if c != _OVERLOAD]
            index = _concat_index(options)
            if overload[0] & 1:
                _walk_options(file_raw, 0, "file", options, index)
                file = b""
            if overload[0] & 2:
                _walk_options(sname_raw, 0, "sname", options, index)
                sname = b""
        _check_lengths(index)
        # Every value is in range by construction (8/16/32-bit fields, hln <= 16, NUL-free sname/file,
        # options 1..254 of <= 255 bytes), so __post_init__ has nothing to check.
        cached = _ADDRESSES.get
        packet = _trusted(
            op,
            xid,
            chaddr[:hln],
            htype,
            hops,
            secs,
            flags,
            cached(ciaddr) or _address(ciaddr),
            cached(yiaddr) or _address(yiaddr),
            cached(siaddr) or _address(siaddr),
            cached(giaddr) or _address(giaddr),
            sname,
            file,
            tuple(options),
            index,
        )
        return packet if cls is DhcpPacket else _rebuilt(cls, packet)

    @classmethod
    def reply_to(
        cls,
        request: DhcpPacket,
        *,
        flags: int,
        ciaddr: IPv4Address,
        siaddr: IPv4Address,
        file: bytes,
        options: tuple[tuple[int, bytes], ...],
    ) -> DhcpPacket:
        """A BOOTREPLY to `request`: its xid, chaddr, htype and giaddr; hops, secs, yiaddr and sname
        zero. What comes from `request` was checked when it was built and `options` must be wire
        instances (`split_option` gives them), so only `flags` and `file` are checked here; the packet
        is built as `decode` builds one. Raises ValueError as the constructor does."""
        if not 0 <= flags < 0x1_0000:
            raise ValueError(f"flags {flags} does not fit in 16 bits")
        if len(file) > 128 or b"\0" in file:
            raise ValueError("file must be at most 128 bytes without NUL")
        packet = _trusted(
            BOOTREPLY,
            request.xid,
            request.chaddr,
            request.htype,
            0,
            0,
            flags,
            ciaddr,
            ZERO,
            siaddr,
            request.giaddr,
            b"",
            file,
            options,
            None,
        )
        return packet if cls is DhcpPacket else _rebuilt(cls, packet)

    def encode(self, *, min_size: int = MIN_PACKET_SIZE) -> bytes:
        """Wire bytes: header, magic cookie, options in order, END, zero padding up to `min_size`.
        `sname`/`file` are always NUL-terminated (R-25: some PXE ROMs need it), never overloaded."""
        if len(self.sname) > 63 or len(self.file) > 127:
            raise ValueError("sname/file too long to be NUL-terminated")
        chaddr = self.chaddr
        # The struct pads chaddr/sname/file with NULs to 16/64/128 bytes, as ljust did.
        parts = [
            _HEADER.pack(
                self.op,
                self.htype,
                len(chaddr),
                self.hops,
                self.xid,
                self.secs,
                self.flags,
                int(self.ciaddr),
                int(self.yiaddr),
                int(self.siaddr),
                int(self.giaddr),
                chaddr,
                self.sname,
                self.file,
                MAGIC_COOKIE,
            )
        ]
        append = parts.append
        for code, value in self.options:
            append(_OPTION_HEAD(code, len(value)))
            append(value)
        append(_END_BYTE)
        return b"".join(parts).ljust(min_size, b"\0")

    # -- accessors ---------------------------------------------------------------------------------

    def option(self, code: int) -> bytes | None:
        """The value of option `code`, repeated instances concatenated (RFC 3396); None if absent."""
        index = self._index
        if index is None:
            index = _concat_index(self.options)
            object.__setattr__(self, "_index", index)
        return index.get(code)

    def has_option(self, code: int) -> bool:
        index = self._index
        if index is None:
            return any(c == code for c, _ in self.options)
        return code in index

    @property
    def message_type(self) -> int | None:
        value = self.option(_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    @property
    def mac(self) -> str:
        return self.chaddr.hex(":")

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


_SET_OP, _SET_XID, _SET_CHADDR, _SET_HTYPE, _SET_HOPS, _SET_SECS, _SET_FLAGS = (
    getattr(DhcpPacket, name).__set__ for name in ("op", "xid", "chaddr", "htype", "hops", "secs", "flags")
)
_SET_CIADDR, _SET_YIADDR, _SET_SIADDR, _SET_GIADDR, _SET_SNAME, _SET_FILE, _SET_OPTIONS, _SET_INDEX = (
    getattr(DhcpPacket, name).__set__
    for name in ("ciaddr", "yiaddr", "siaddr", "giaddr", "sname", "file", "options", "_index")
)


def _trusted(
    op: int,
    xid: int,
    chaddr: bytes,
    htype: int,
    hops: int,
    secs: int,
    flags: int,
    ciaddr: IPv4Address,
    yiaddr: IPv4Address,
    siaddr: IPv4Address,
    giaddr: IPv4Address,
    sname: bytes,
    file: bytes,
    options: tuple[tuple[int, bytes], ...],
    index: dict[int, bytes] | None,
) -> DhcpPacket:
    """A DhcpPacket from values the caller has already checked (what `__post_init__` checks), set
    straight into its slots: the frozen `__init__` plus validation cost more than the rest of decode.
    For the codec's own constructors only (`decode`, `reply_to`)."""
    packet: DhcpPacket = object.__new__(DhcpPacket)
    _SET_OP(packet, op)
    _SET_XID(packet, xid)
    _SET_CHADDR(packet, chaddr)
    _SET_HTYPE(packet, htype)
    _SET_HOPS(packet, hops)
    _SET_SECS(packet, secs)
    _SET_FLAGS(packet, flags)
    _SET_CIADDR(packet, ciaddr)
    _SET_YIADDR(packet, yiaddr)
    _SET_SIADDR(packet, siaddr)
    _SET_GIADDR(packet, giaddr)
    _SET_SNAME(packet, sname)
    _SET_FILE(packet, file)
    _SET_OPTIONS(packet, options)
    _SET_INDEX(packet, index)
    return packet


def _rebuilt(cls: type[DhcpPacket], packet: DhcpPacket) -> DhcpPacket:
    """`packet` as an instance of a subclass, through the subclass's own constructor."""
    return cls(**{f.name: getattr(packet, f.name) for f in fields(DhcpPacket) if f.init})


_OPTION_HEAD = struct.Struct("BB").pack
_END_BYTE = bytes((_END,))


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
        try:
            subs = decode_pxe_suboptions(value)
        except MalformedPacket:
            return _render_bytes(value)
        return "pxe " + " ".join(f"{k}={v.hex()}" for k, v in subs.items()) if subs else _render_bytes(value)
    return _render_bytes(value)
