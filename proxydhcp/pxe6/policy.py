"""DHCPv6 step 2: the boot decision, by the same boot table as DHCPv4 (`pxe.policy.choose_boot_file`).

What differs from IPv4 is only where the client is and how the file is named:
- the client's prefix is the relay's link-address when relayed; on 4011 its source address (when
  global); else the prefix of one of the receiving interface's addresses;
- the file goes out as a Boot File URL (RFC 5970 §3.1): `tftp://[server]/file` for PXEClient, the
  boot table's URL as it is for HTTPClient (EDK II HttpBootDxe needs a URL, as over IPv4), a URL in
  the table is always used as it is;
- the server in the URL is the subnet's `next_server`, else this host's address in that prefix (a
  link-local address cannot be written in a URL EDK II parses, so the prefix's own address is used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from proxydhcp.config import Settings, SubnetSettings
from proxydhcp.dhcp.arch import arch_name
from proxydhcp.pxe.classify import Ignore
from proxydhcp.pxe.policy import choose_boot_file, find_subnet
from proxydhcp.pxe6.classify import PXE6_PORT, Client6


@dataclass(frozen=True, slots=True)
class Receiver6:
    """The interface a DHCPv6 message came in on: its non-link-local addresses (with their prefix
    lengths), in preference order."""

    iface: str
    addresses: tuple[tuple[IPv6Address, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BootDecision6:
    boot_file: str  # as configured
    url: str  # option 59
    server: IPv6Address  # the host in the URL
    subnet: IPv6Network
    rule: str
    arch_key: str
    http: bool


def client_place(client: Client6, receiver: Receiver6) -> IPv6Address | None:
    """The address that places the client in a prefix (see the module docstring), or None."""
    if client.link_address is not None:
        return client.link_address
    if client.port == PXE6_PORT and _routable(client.source):
        return client.source
    return receiver.addresses[0][0] if receiver.addresses else None


def _routable(address: IPv6Address) -> bool:
    return not (
        address.is_link_local or address.is_unspecified or address.is_multicast or address.is_loopback
    )


def server_address(subnet: SubnetSettings, receiver: Receiver6, client: Client6) -> IPv6Address | None:
    """The host to name in the URL: the subnet's next_server; this host's address in the prefix; for a
    relayed client, any routable address of the receiving interface (the relay routes to it)."""
    if isinstance(subnet.next_server, IPv6Address):
        return subnet.next_server
    ours = [a for a, _ in receiver.addresses if _routable(a)]
    in_prefix = [a for a in ours if a in subnet.cidr]
    if in_prefix:
        return in_prefix[0]
    return ours[0] if ours and (client.relayed or client.port == PXE6_PORT) else None


def decide6(client: Client6, settings: Settings, receiver: Receiver6) -> BootDecision6 | Ignore:
    place = client_place(client, receiver)
    found = None if place is None else find_subnet(settings, place)
    if found is None:
        where = f"of {place}" if place is not None else f"of {receiver.iface} (no global address)"
        return Ignore(f"prefix {where} not enabled")
    subnet, _ = found
    arch_key = arch_name(client.arch if client.arch is not None else 0)
    chosen = choose_boot_file(settings, found, arch_key, client.mac, client.is_ipxe)
    if isinstance(chosen, Ignore):
        return chosen
    boot_file, rule, _host = chosen
    server = server_address(subnet, receiver, client)
    if server is None:
        return Ignore(f"no address of this host in {subnet.cidr} for the boot file URL")
    if "://" in boot_file:
        url = boot_file
        if client.http and not url.startswith(("http://", "https://")):
            return Ignore(f"boot file for {arch_key} is not an http URL")
    elif client.http:
        # EDK II HttpBootDxe accepts only a URI; the built-in HTTP server is not on this branch.
        return Ignore(f"boot file for {arch_key} is not a URL")
    else:
        url = f"tftp://[{server}]/{boot_file.lstrip('/')}"
    assert isinstance(subnet.cidr, IPv6Network)
    return BootDecision6(boot_file, url, server, subnet.cidr, rule, arch_key, client.http)


def interface_addresses6(pairs: Sequence[tuple[IPv6Address, int]]) -> tuple[tuple[IPv6Address, int], ...]:
    """Order an interface's addresses for `Receiver6`: global first, then ULA; link-local dropped."""
    usable = [(a, n) for a, n in pairs if _routable(a)]
    return tuple(sorted(usable, key=lambda pair: (pair[0].is_private, int(pair[0]))))
