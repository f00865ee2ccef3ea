"""Shared builders for the DHCP/PXE unit tests: requests shaped like real firmware's."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from proxydhcp.dhcp.packet import DhcpPacket

MAC = bytes.fromhex("525400123456")
UUID = b"\x00" + bytes(range(1, 17))
PRL = bytes([1, 3, 6, 43, 60, 66, 67, 128, 129, 130])

RequestFactory = Callable[..., DhcpPacket]


def pxe_request(
    *,
    mtype: int = 1,
    arch: int | None = 0,
    vendor: bytes | None = None,
    uuid: bytes | None = UUID,
    prl: bytes = PRL,
    extra: tuple[tuple[int, bytes], ...] = (),
    **fields: Any,
) -> DhcpPacket:
    """A PXE request like netboot-dhcp.pcap frame 1 (BIOS) or BZ-387 frame 1 (UEFI)."""
    if vendor is None:
        vendor = f"PXEClient:Arch:{arch or 0:05d}:UNDI:002001".encode()
    opts: list[tuple[int, bytes]] = [(53, bytes([mtype])), (55, prl), (57, (1472).to_bytes(2, "big"))]
    if uuid is not None:
        opts.append((97, uuid))
    if arch is not None:
        opts.append((93, arch.to_bytes(2, "big")))
    opts += [(94, b"\x01\x02\x01"), (60, vendor), *extra]
    base: dict[str, Any] = {"op": 1, "xid": 0x9B4E0557, "chaddr": MAC, "flags": 0x8000 if mtype == 1 else 0}
    base.update(fields)
    for key in ("ciaddr", "giaddr", "yiaddr", "siaddr"):
        if isinstance(base.get(key), str):
            base[key] = IPv4Address(base[key])
    return DhcpPacket(options=tuple(opts), **base)


@pytest.fixture
def make_request() -> RequestFactory:
    return pxe_request
