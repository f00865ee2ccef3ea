"""Typed, length-checked option getters (RFC 2132, RFC 3004, RFC 4578) and the PXE option-43 codec.

Getters return None when the option is absent and raise MalformedPacket when it has the wrong shape,
never slicing blindly (as netboot `dhcp4/options.go` does).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from typing import Protocol

from proxydhcp.dhcp.codes import Opt, PxeSubOpt
from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import Reason

# Plain ints, read once: every request goes through these getters (an enum member costs an attribute
# lookup, and a subtype check in each comparison).
_VENDOR_CLASS, _USER_CLASS, _CLIENT_ARCH, _CLIENT_UUID, _IPXE_ENCAP = (
    int(Opt.VENDOR_CLASS),
    int(Opt.USER_CLASS),
    int(Opt.CLIENT_ARCH),
    int(Opt.CLIENT_UUID),
    int(Opt.IPXE_ENCAP),
)
_PXE_END, _PXE_PAD = int(PxeSubOpt.END), int(PxeSubOpt.PAD)
_ARCH_IN_VENDOR_CLASS = re.compile(rb"^(?:PXEClient|HTTPClient):Arch:(\d{5})(?::|$)")


class DhcpPacket(Protocol):
    """What the getters read: a decoded packet's options (`packet.DhcpPacket`, which imports this
    module for the option-43 codec, so it is not imported here)."""

    def option(self, code: int) -> bytes | None: ...

    def has_option(self, code: int) -> bool: ...


def _fixed(pkt: DhcpPacket, code: int, size: int) -> bytes | None:
    value = pkt.option(code)
    if value is not None and len(value) != size:
        raise MalformedPacket(
            f"option {code} has length {len(value)}, expected {size}", Reason.BAD_OPTION_LENGTH
        )
    return value


def u8(pkt: DhcpPacket, code: int) -> int | None:
    value = _fixed(pkt, code, 1)
    return None if value is None else value[0]


def u16(pkt: DhcpPacket, code: int) -> int | None:
    value = _fixed(pkt, code, 2)
    return None if value is None else int.from_bytes(value, "big")


def u32(pkt: DhcpPacket, code: int) -> int | None:
    value = _fixed(pkt, code, 4)
    return None if value is None else int.from_bytes(value, "big")


def ip(pkt: DhcpPacket, code: int) -> IPv4Address | None:
    value = _fixed(pkt, code, 4)
    return None if value is None else IPv4Address(value)


def text(pkt: DhcpPacket, code: int) -> str | None:
    """A string option; undecodable bytes are replaced, a trailing NUL (sent by some ROMs) dropped."""
    value = pkt.option(code)
    return None if value is None else value.rstrip(b"\0").decode("ascii", errors="replace")


def client_arch(pkt: DhcpPacket) -> int | None:
    """The client architecture: the first value of option 93, else the `Arch:NNNNN` field of option 60
    (firmware that omits 93 still announces it there, R-xx §1.5); None when neither says."""
    value = pkt.option(_CLIENT_ARCH)
    if value is not None:
        if not value or len(value) % 2:
            raise MalformedPacket(
                f"option 93 has length {len(value)}, expected a non-zero multiple of 2",
                Reason.BAD_OPTION_LENGTH,
            )
        return int.from_bytes(value[:2], "big")
    vendor = pkt.option(_VENDOR_CLASS)
    if vendor is not None:
        match = _ARCH_IN_VENDOR_CLASS.match(vendor)
        if match:
            code = int(match.group(1))
            return code if code <= 0xFFFF else None
    return None


def client_uuid(pkt: DhcpPacket) -> bytes | None:
    """Option 97 (17 bytes: type 0 + GUID), or None when absent or empty: some ROMs omit the GUID and
    must still boot (danderson/pixiecore#21). Any other length or type is malformed."""
    value = pkt.option(_CLIENT_UUID)
    if not value:
        return None
    if len(value) != 17:
        raise MalformedPacket(
            f"option 97 has length {len(value)}, expected 0 or 17", Reason.BAD_OPTION_LENGTH
        )
    if value[0] != 0:
        raise MalformedPacket(f"option 97 has type {value[0]}, expected 0", Reason.BAD_OPTION_LENGTH)
    return value


def user_class(pkt: DhcpPacket) -> bytes | None:
    return pkt.option(_USER_CLASS)


def _rfc3004_classes(value: bytes) -> list[bytes] | None:
    """Split an RFC 3004 user class (length-prefixed items); None if it is not of that form."""
    items: list[bytes] = []
    i = 0
    while i < len(value):
        n = value[i]
        if n == 0 or i + 1 + n > len(value):
            return None
        items.append(value[i + 1 : i + 1 + n])
        i += 1 + n
    return items


def is_ipxe(pkt: DhcpPacket) -> bool:
    """A client already running iPXE: user class "iPXE" (iPXE sends it as a plain string, contrary to
    RFC 3004; the RFC form is accepted too) or option 175 present (R-40)."""
    if pkt.has_option(_IPXE_ENCAP):
        return True
    value = pkt.option(_USER_CLASS)
    if not value:
        return False
    if value == b"iPXE":
        return True
    items = _rfc3004_classes(value)
    return items is not None and b"iPXE" in items


def vendor_class(pkt: DhcpPacket) -> str:
    """Option 60 as text ("" when absent)."""
    return text(pkt, _VENDOR_CLASS) or ""


def encode_pxe_suboptions(subs: dict[int, bytes]) -> bytes:
    """Option 43 PXE sub-options in the given order, then END. The whole value must fit one option
    instance (255 bytes), as dnsmasq enforces ("PXE menu too large"). Raises ValueError."""
    out = bytearray()
    for code, value in subs.items():
        if not 0 < code < 255:
            raise ValueError(f"PXE sub-option code {code} out of range 1..254")
        if len(value) > 255:
            raise ValueError(f"PXE sub-option {code} longer than 255 bytes")
        out += bytes((code, len(value))) + value
    out.append(_PXE_END)
    if len(out) > 255:
        raise ValueError(f"option 43 would be {len(out)} bytes, more than 255")
    return bytes(out)


def encode_boot_item(item: bytes) -> bytes:
    """`encode_pxe_suboptions({PxeSubOpt.BOOT_ITEM: item})` for a 4-byte item (classify checks the
    length), as one concatenation: every 4011 answer to a boot-server request echoes its 43.71."""
    if len(item) != 4:
        raise ValueError(f"PXE boot item must be 4 bytes, not {len(item)}")
    return _BOOT_ITEM_HEAD + item + _PXE_END_BYTE


_BOOT_ITEM_HEAD, _PXE_END_BYTE = bytes((PxeSubOpt.BOOT_ITEM, 4)), bytes((_PXE_END,))


def decode_pxe_suboptions(value: bytes) -> dict[int, bytes]:
    """Parse option 43 as PXE sub-options (PAD skipped, END stops). Raises MalformedPacket."""
    subs: dict[int, bytes] = {}
    i = 0
    while i < len(value):
        code = value[i]
        if code == _PXE_END:
            break
        if code == _PXE_PAD:
            i += 1
            continue
        if i + 1 >= len(value) or i + 2 + value[i + 1] > len(value):
            raise MalformedPacket(f"option 43 sub-option {code} overruns the option", Reason.OPTION_OVERRUN)
        n = value[i + 1]
        subs[code] = subs.get(code, b"") + value[i + 2 : i + 2 + n]
        i += 2 + n
    return subs
