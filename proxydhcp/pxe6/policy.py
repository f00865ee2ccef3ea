"""DHCPv6 step 2: the boot decision, by the same boot-file rule as DHCPv4 (`boot.choose_boot_file`).

What differs from IPv4 is only where the client is and how the file is named:
- the client's prefix is the relay's link-address when relayed; on 4011 its source address (when
  global); else the prefix of one of the receiving interface's addresses (`Settings.subnet_for`);
- the file goes out as a Boot File URL (RFC 5970 §3.1): `tftp://[server]/file` for PXEClient; for
  HTTPClient a name becomes a URL on the built-in HTTP server (`httpboot.boot_url`, as over IPv4:
  EDK II HttpBootDxe needs a URL); a URL in the table is used as it is;
- the TFTP server in the URL is the subnet's IPv6 `next_server`, else this host's address in that
  prefix (a link-local address cannot be written in a URL EDK II parses, so the prefix's own address
  is used). A `[[host]]` next_server is IPv4 (DHCPv4's siaddr) and does not apply here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from proxydhcp.boot import choose_boot_file
from proxydhcp.config import Settings
from proxydhcp.dhcp.arch import arch_name
from proxydhcp.httpboot import boot_url, is_url
from proxydhcp.outcome import Ignore, Reason
from proxydhcp.pxe6.classify import PXE6_PORT, Client6


@dataclass(frozen=True, slots=True)
class Receiver6:
    """The interface a DHCPv6 message came in on: its non-link-local addresses (with their prefix
    lengths), in preference order."""

    iface: str
    addresses: tuple[tuple[IPv6Address, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BootDecision6:
    boot_file: str  # as configured
    url: str  # option 59
    server: IPv6Address | None  # the host this service put in the URL; None: a URL from the table
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


def own_address(prefix: IPv6Network, receiver: Receiver6, client: Client6) -> IPv6Address | None:
    """This host as the client can reach it: its address in the prefix; for a relayed client (or one
    on 4011, which has its address), any routable address of the receiving interface."""
    ours = [a for a, _ in receiver.addresses if _routable(a)]
    in_prefix = [a for a in ours if a in prefix]
    if in_prefix:
        return in_prefix[0]
    return ours[0] if ours and (client.relayed or client.port == PXE6_PORT) else None


def decide6(client: Client6, settings: Settings, receiver: Receiver6) -> BootDecision6 | Ignore:
    place = client_place(client, receiver)
    subnet = None if place is None else settings.subnet_for(place)
    if subnet is None or not isinstance(subnet.cidr, IPv6Network):
        where = f"of {place}" if place is not None else f"of {receiver.iface} (no global address)"
        return Ignore(Reason.PREFIX_NOT_ENABLED, where)
    prefix = subnet.cidr
    arch_key = arch_name(client.arch if client.arch is not None else 0)
    choice = choose_boot_file(settings, subnet, mac=client.mac, arch_key=arch_key, is_ipxe=client.is_ipxe)
    if isinstance(choice, Ignore):
        return choice
    boot_file = choice.boot_file
    server: IPv6Address | None = None
    if is_url(boot_file):
        if client.http and not boot_file.startswith(("http://", "https://")):
            return Ignore(Reason.BOOT_FILE_NOT_HTTP_URL, arch_key, prefix)
        url = boot_file
    else:
        if client.http:
            # The built-in HTTP server is this host: the URL names our address, not next_server.
            server = own_address(prefix, receiver, client)
        else:
            next_server = choice.next_server
            server = (
                next_server if isinstance(next_server, IPv6Address) else own_address(prefix, receiver, client)
            )
        if server is None:
            return Ignore(Reason.NO_SERVER_ADDRESS, str(prefix), prefix)
        if client.http:
            http_url = boot_url(settings, server, boot_file)
            if http_url is None:
                return Ignore(Reason.BOOT_FILE_NOT_URL, arch_key, prefix)
            url = http_url
        else:
            url = f"tftp://[{server}]/{boot_file.lstrip('/')}"
    return BootDecision6(
        boot_file=boot_file,
        url=url,
        server=server,
        subnet=prefix,
        rule=choice.rule,
        arch_key=arch_key,
        http=client.http,
    )


def interface_addresses6(pairs: Sequence[tuple[IPv6Address, int]]) -> tuple[tuple[IPv6Address, int], ...]:
    """Order an interface's addresses for `Receiver6`: global first, then ULA; link-local dropped."""
    usable = [(a, n) for a, n in pairs if _routable(a)]
    return tuple(sorted(usable, key=lambda pair: (pair[0].is_private, int(pair[0]))))
