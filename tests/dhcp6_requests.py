"""DHCPv6 requests shaped like EDK II's (issue 20: OVMF 2022.11 PXE over IPv6), as wire bytes, for the
unit, property and integration tests."""

from __future__ import annotations

from ipaddress import IPv6Address

MAC = bytes.fromhex("525400123456")
DUID_LLT = bytes.fromhex("00010001") + bytes.fromhex("2c9a1b30") + MAC  # type 1, hw 1, time, MAC
PXE_VENDOR = b"PXEClient:Arch:00007:UNDI:003000"
HTTP_VENDOR = b"HTTPClient:Arch:00016:UNDI:003000"


def opt(code: int, value: bytes) -> bytes:
    return code.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value


def vendor_class(data: bytes, enterprise: int = 343) -> bytes:
    return opt(16, enterprise.to_bytes(4, "big") + len(data).to_bytes(2, "big") + data)


def edk2_solicit(
    xid: int = 0x3A5B7C,
    *,
    duid: bytes = DUID_LLT,
    arch: int | None = 7,
    vendor: bytes | None = PXE_VENDOR,
    ia: bool = True,
    extra: bytes = b"",
) -> bytes:
    """EDK II's PXE Solicit (issue 20 step 2): 1, 8, 3, 6 [59, 60, 23, 16], 62, 61, 16."""
    body = opt(1, duid) + opt(8, b"\x00\x00")
    if ia:
        body += opt(3, bytes.fromhex("00000001") + bytes(8))
    body += opt(6, bytes.fromhex("003b003c00170010")) + opt(62, b"\x01\x03\x00")
    if arch is not None:
        body += opt(61, arch.to_bytes(2, "big"))
    if vendor is not None:
        body += vendor_class(vendor)
    return bytes([1]) + xid.to_bytes(3, "big") + body + extra


def edk2_boot_request(
    server_duid: bytes, xid: int = 0x3A5B7C, *, duid: bytes = DUID_LLT, arch: int = 7
) -> bytes:
    """EDK II's boot-service Request to [proxy]:4011 (issue 20 step 4): the Solicit's xid, 2 (the
    proxy's Server ID) first, then 1, 8, 6, 62, 61, 16; no IA."""
    body = (
        opt(2, server_duid)
        + opt(1, duid)
        + opt(8, b"\x00\x10")
        + opt(6, bytes.fromhex("003b003c00170010"))
        + opt(62, b"\x01\x03\x00")
        + opt(61, arch.to_bytes(2, "big"))
        + vendor_class(PXE_VENDOR)
    )
    return bytes([3]) + xid.to_bytes(3, "big") + body


def relay_forward(inner: bytes, link: str, peer: str = "fe80::5054:ff:fe12:3456", *, hops: int = 0,
                  interface_id: bytes | None = b"eth7") -> bytes:  # fmt: skip
    body = b""
    if interface_id is not None:
        body += opt(18, interface_id)
    body += opt(9, inner)
    return bytes([12, hops]) + IPv6Address(link).packed + IPv6Address(peer).packed + body
