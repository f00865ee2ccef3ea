"""Typed, length-checked DHCPv6 option values (RFC 8415 §11 DUIDs, §21; RFC 5970 §3) and their encoders.

Each getter takes the raw option value (or None when absent) and returns a value, or raises
`MalformedDhcp6(Malformation.BAD_OPTION, ...)` naming the option: a wrong length never slices blindly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from proxydhcp.dhcp6.packet import Malformation, MalformedDhcp6, Opt

PXE_ENTERPRISE = 343  # Intel: the enterprise number of EDK II's and iPXE's "PXEClient" vendor class
MAX_DUID = 130  # RFC 8415 §11.1: a DUID is at most 128 bytes after its 2-byte type
HWTYPE_ETHERNET = 1


class DuidType(IntEnum):
    LLT = 1
    EN = 2
    LL = 3
    UUID = 4


def _bad(code: int, why: str) -> MalformedDhcp6:
    return MalformedDhcp6(Malformation.BAD_OPTION, f"option {code} {why}")


def _u16s(value: bytes, code: int) -> tuple[int, ...]:
    if len(value) % 2:
        raise _bad(code, f"has odd length {len(value)}")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def _strings(value: bytes, code: int) -> tuple[bytes, ...]:
    """A list of (u16 length, bytes) items, the form of user class, vendor class data and option 60."""
    out: list[bytes] = []
    offset = 0
    while offset < len(value):
        if len(value) - offset < 2:
            raise _bad(code, "has a truncated item length")
        length = int.from_bytes(value[offset : offset + 2], "big")
        offset += 2
        if length > len(value) - offset:
            raise _bad(code, f"item of {length} bytes overruns the option")
        out.append(value[offset : offset + length])
        offset += length
    return tuple(out)


def encode_strings(items: Iterable[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(2, "big") + item for item in items)


def duid(value: bytes | None, code: int = Opt.CLIENTID) -> bytes | None:
    """A Client/Server ID: 3..130 bytes (a 2-byte type and at least one byte)."""
    if value is None:
        return None
    if not 3 <= len(value) <= MAX_DUID:
        raise _bad(code, f"(DUID) has length {len(value)}, expected 3..{MAX_DUID}")
    return value


def duid_mac(value: bytes | None) -> str | None:
    """The Ethernet MAC inside a DUID-LLT or DUID-LL (RFC 8415 §11.2, §11.4), as `aa:bb:...`; None for
    other DUID types or hardware types (the per-MAC host table then does not apply)."""
    if value is None or len(value) < 4:
        return None
    kind = int.from_bytes(value[:2], "big")
    hwtype = int.from_bytes(value[2:4], "big")
    if hwtype != HWTYPE_ETHERNET:
        return None
    if kind == DuidType.LLT and len(value) == 14:
        mac = value[8:14]
    elif kind == DuidType.LL and len(value) == 10:
        mac = value[4:10]
    else:
        return None
    return ":".join(f"{b:02x}" for b in mac)


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL of an Ethernet address (RFC 8415 §11.4)."""
    if len(mac) != 6:
        raise ValueError("an Ethernet MAC has 6 bytes")
    return DuidType.LL.to_bytes(2, "big") + HWTYPE_ETHERNET.to_bytes(2, "big") + mac


def oro(value: bytes | None) -> tuple[int, ...]:
    return () if value is None else _u16s(value, Opt.ORO)


def preference(value: bytes | None) -> int | None:
    if value is None:
        return None
    if len(value) != 1:
        raise _bad(Opt.PREFERENCE, f"has length {len(value)}, expected 1")
    return value[0]


def elapsed_time(value: bytes | None) -> int | None:
    if value is None:
        return None
    if len(value) != 2:
        raise _bad(Opt.ELAPSED_TIME, f"has length {len(value)}, expected 2")
    return int.from_bytes(value, "big")


@dataclass(frozen=True, slots=True)
class VendorClass:
    """Option 16: an enterprise number and its opaque data items."""

    enterprise: int
    data: tuple[bytes, ...]

    def encode(self) -> bytes:
        return self.enterprise.to_bytes(4, "big") + encode_strings(self.data)


def vendor_class(value: bytes | None) -> VendorClass | None:
    if value is None:
        return None
    if len(value) < 4:
        raise _bad(Opt.VENDOR_CLASS, f"has length {len(value)}, expected at least 4")
    return VendorClass(int.from_bytes(value[:4], "big"), _strings(value[4:], Opt.VENDOR_CLASS))


def user_class(value: bytes | None) -> tuple[bytes, ...]:
    return () if value is None else _strings(value, Opt.USER_CLASS)


def client_arch_types(value: bytes | None) -> tuple[int, ...]:
    """Option 61: one or more u16 architecture types (RFC 5970 §3.3; the IANA option-93 registry)."""
    if value is None:
        return ()
    types = _u16s(value, Opt.CLIENT_ARCH_TYPE)
    if not types:
        raise _bad(Opt.CLIENT_ARCH_TYPE, "is empty")
    return types


@dataclass(frozen=True, slots=True)
class Nii:
    """Option 62, Network Interface Identifier (RFC 5970 §3.4): type 1 = UNDI, with its version."""

    type: int
    major: int
    minor: int


def nii(value: bytes | None) -> Nii | None:
    if value is None:
        return None
    if len(value) != 3:
        raise _bad(Opt.NII, f"has length {len(value)}, expected 3")
    return Nii(value[0], value[1], value[2])


def bootfile_url(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(Opt.BOOTFILE_URL, "is not UTF-8") from None


def bootfile_params(value: bytes | None) -> tuple[str, ...]:
    if value is None:
        return ()
    try:
        return tuple(item.decode("utf-8") for item in _strings(value, Opt.BOOTFILE_PARAM))
    except UnicodeDecodeError:
        raise _bad(Opt.BOOTFILE_PARAM, "is not UTF-8") from None


def encode_bootfile_params(params: Sequence[str]) -> bytes:
    return encode_strings(p.encode() for p in params)


def vendor_arch(data: Sequence[bytes]) -> int | None:
    """The `Arch:NNNNN` field of a `PXEClient:Arch:00007:UNDI:003000` vendor class item, or None."""
    for item in data:
        fields = item.split(b":")
        for i, word in enumerate(fields[:-1]):
            if word == b"Arch" and fields[i + 1].isdigit() and len(fields[i + 1]) <= 5:
                arch = int(fields[i + 1])
                return arch if arch <= 0xFFFF else None
    return None
