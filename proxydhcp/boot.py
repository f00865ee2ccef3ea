"""The boot file choice, for every protocol family (DESIGN.md §2 "Boot file choice"): a host entry >
a client already running iPXE → the iPXE file > the subnet's architecture table > the global
architecture table > no answer. Pure; the DHCPv4 policy (`pxe/policy.py`) and the DHCPv6 one
(`pxe6/policy.py`) call it, so the rule exists once.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from proxydhcp.config import IPXE_KEY, Settings, SubnetSettings, SubnetView
from proxydhcp.outcome import Ignore, Reason


class BootChoice(NamedTuple):
    """The file and the rule that chose it: an immutable value, built by keyword (a NamedTuple: one
    per answered request)."""

    boot_file: str
    rule: str  # which rule chose the file, for logs and `explain`
    # The host's or the subnet's TFTP server, when one is set (a host's is IPv4: a DHCPv4 policy's).
    next_server: IPv4Address | IPv6Address | None


def choose_boot_file(
    settings: Settings, subnet: SubnetSettings | SubnetView, *, mac: str | None, arch_key: str, is_ipxe: bool
) -> BootChoice | Ignore:
    """The file for a client of `subnet` (an enabled one) with MAC `mac` (None: a DHCPv6 client whose
    DUID carries none) and architecture `arch_key`."""
    lookup = settings.lookup
    host = lookup.hosts.get(mac) if mac is not None else None
    if host is not None and host.ignore:
        return Ignore(Reason.HOST_IGNORED, host.mac, subnet.cidr)
    next_server = (host.next_server if host is not None else None) or subnet.next_server
    if host is not None and host.boot_file:
        return BootChoice(boot_file=host.boot_file, rule=f"host {mac}", next_server=next_server)
    # A client already running iPXE gets the iPXE script, which breaks the chainload loop;
    # without an `ipxe` key it falls through to the architecture table.
    # The tables read once: a pydantic model's attribute costs a __getattr__ hook.
    subnet_boot, global_boot = subnet.boot, lookup.boot
    for key in (IPXE_KEY, arch_key) if is_ipxe else (arch_key,):
        if key in subnet_boot:
            return BootChoice(
                boot_file=subnet_boot[key], rule=f"subnet {subnet.cidr} {key}", next_server=next_server
            )
        if key in global_boot:
            return BootChoice(boot_file=global_boot[key], rule=f"global {key}", next_server=next_server)
    return Ignore(Reason.NO_BOOT_FILE, arch_key, subnet.cidr)
