"""Step 2: the boot decision. Configuration + client → which server and file, or why nothing.

One pure function (DESIGN.md §2 "Boot file choice"): host entry > iPXE client → iPXE file >
subnet's architecture table > global architecture table > no answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Literal

from proxydhcp.config import IPXE_KEY, HostSettings, Settings, SubnetSettings
from proxydhcp.dhcp.arch import arch_name, is_uefi
from proxydhcp.dhcp.packet import ZERO
from proxydhcp.pxe.classify import DHCP_PORT, ClientInfo, Ignore

OfferStyle = Literal["bios", "binl", "http"]
_ZERO = ZERO


@dataclass(frozen=True)
class Receiver:
    """The interface a request came in on: its address and, when known, its network."""

    local_ip: IPv4Address
    local_network: IPv4Network | None = None


@dataclass(frozen=True)
class BootDecision:
    boot_file: str
    next_server: IPv4Address  # siaddr: the TFTP server
    server_ip: IPv4Address  # option 54: this server, as seen on the receiving interface
    subnet: IPv4Network
    rule: str  # which rule chose the file, for logs and `explain`
    arch_key: str
    offer_style: OfferStyle
    # decide() fills instances through __dict__: a __post_init__ or a default here would be skipped.


def client_address(client: ClientInfo, receiver: Receiver) -> IPv4Address:
    """The address that places the client in a subnet: the relay's giaddr; on 67 the receiving
    interface's address (the client has none yet); on 4011 its ciaddr, else the packet source."""
    giaddr = client.giaddr  # `is _ZERO` first: decode shares it; IPv4Address.__eq__ runs in Python
    if not (giaddr is _ZERO or giaddr == _ZERO):
        return giaddr
    if client.port == DHCP_PORT:
        return receiver.local_ip
    ciaddr = client.ciaddr
    return client.source_ip if ciaddr is _ZERO or ciaddr == _ZERO else ciaddr


def offer_style(
    client: ClientInfo, uefi_mode: Mapping[str, str] | None = None, arch_key: str = ""
) -> OfferStyle:
    # UEFI firmware forks drop PXE10 proxy offers, so arch ≥ 6 gets the BINL redirect to 4011
    # unless `server.uefi_mode` says "direct" for its architecture (or as the default).
    if client.http:
        return "http"
    if not is_uefi(client.arch):
        return "bios"
    if uefi_mode:
        mode = uefi_mode.get(arch_key) or uefi_mode.get("default")
        if mode == "direct":
            return "bios"
    return "binl"


class _Tables:
    """Lookups derived from one Settings object, built on its first use: subnets as integer masks
    (most specific first, the first listed winning ties, as `Settings.subnet_for`), hosts by MAC
    (the first entry, as `Settings.host_for`), and the rule labels. Settings are treated as immutable
    (the server swaps them whole on reload); replacing or resizing the subnet/host lists is noticed."""

    __slots__ = ("host_count", "host_list", "hosts", "subnet_count", "subnet_list", "subnets", "subnets6")

    def __init__(self, settings: Settings) -> None:
        self.subnet_list, self.subnet_count = settings.subnet, len(settings.subnet)
        self.host_list, self.host_count = settings.host, len(settings.host)
        ranked = sorted(settings.subnet, key=lambda entry: -entry.cidr.prefixlen)  # stable: ties keep order
        # One table per family: an IPv4 address as an int must never match an IPv6 prefix's mask.
        self.subnets: tuple[tuple[int, int, SubnetSettings, str], ...] = tuple(
            (int(e.cidr.network_address), int(e.cidr.netmask), e, f"subnet {e.cidr}")
            for e in ranked
            if e.cidr.version == 4
        )
        self.subnets6: tuple[tuple[int, int, SubnetSettings, str], ...] = tuple(
            (int(e.cidr.network_address), int(e.cidr.netmask), e, f"subnet {e.cidr}")
            for e in ranked
            if e.cidr.version == 6
        )
        self.hosts: dict[str, HostSettings] = {}
        for entry in settings.host:
            self.hosts.setdefault(entry.mac, entry)

    def fresh(self, settings: Settings) -> bool:
        return (
            settings.subnet is self.subnet_list
            and len(settings.subnet) == self.subnet_count
            and settings.host is self.host_list
            and len(settings.host) == self.host_count
        )

    def subnet_for(self, address: IPv4Address | IPv6Address) -> tuple[SubnetSettings, str] | None:
        value = int(address)
        for network, mask, subnet, label in self.subnets if address.version == 4 else self.subnets6:
            if value & mask == network:
                return subnet, label
        return None


# id(settings) → (settings, tables); holding the settings keeps its id from being reused. Bounded.
_TABLES: dict[int, tuple[Settings, _Tables]] = {}
_TABLES_MAX = 16


def _tables(settings: Settings) -> _Tables:
    entry = _TABLES.get(id(settings))
    if entry is not None and entry[0] is settings and entry[1].fresh(settings):
        return entry[1]
    if len(_TABLES) >= _TABLES_MAX:
        _TABLES.clear()
    tables = _Tables(settings)
    _TABLES[id(settings)] = (settings, tables)
    return tables


def subnet_index(settings: Settings, address: int) -> int:
    """Which enabled subnet `address` (as an int) falls in, as its position in the lookup order;
    -1 if none. The same choice `decide` makes (`memo` keys requests on it)."""
    for i, (network, mask, _, _) in enumerate(_tables(settings).subnets):
        if address & mask == network:
            return i
    return -1


def decide(client: ClientInfo, settings: Settings, receiver: Receiver) -> BootDecision | Ignore:
    tables = _tables(settings)
    address = client_address(client, receiver)
    found = None if address is _ZERO or address == _ZERO else tables.subnet_for(address)
    if found is None:
        where = (
            str(receiver.local_network)
            if not client.relayed and client.port == DHCP_PORT and receiver.local_network
            else f"of {address}"
        )
        return Ignore(f"subnet {where} not enabled")
    subnet, _ = found
    arch_key = arch_name(client.arch if client.arch is not None else 0)
    chosen = choose_boot_file(settings, found, arch_key, client.mac, client.is_ipxe)
    if isinstance(chosen, Ignore):
        return chosen
    boot_file, rule, host = chosen
    style = offer_style(client, settings.server.uefi_mode, arch_key)
    if style == "http" and "://" not in boot_file:
        # EDK II HttpBootDxe accepts a proxy offer only if the boot file parses as a URI.
        return Ignore(f"boot file for {arch_key} is not a URL")
    server_ip = settings.server.server_ip or receiver.local_ip
    subnet_next = subnet.next_server if isinstance(subnet.next_server, IPv4Address) else None
    next_server = (host.next_server if host is not None else None) or subnet_next or server_ip
    # BootDecision(...) by its __dict__, as classify builds ClientInfo: the frozen __init__ costs more.
    decision: BootDecision = object.__new__(BootDecision)
    object.__setattr__(
        decision,
        "__dict__",
        {
            "boot_file": boot_file,
            "next_server": next_server,
            "server_ip": server_ip,
            "subnet": subnet.cidr,
            "rule": rule,
            "arch_key": arch_key,
            "offer_style": style,
        },
    )
    return decision


def find_subnet(settings: Settings, address: IPv4Address | IPv6Address) -> tuple[SubnetSettings, str] | None:
    """The enabled subnet (of the address's family) holding `address`, and its rule label; the one
    lookup both the DHCPv4 and the DHCPv6 decisions use."""
    return _tables(settings).subnet_for(address)


def choose_boot_file(
    settings: Settings, found: tuple[SubnetSettings, str], arch_key: str, mac: str | None, is_ipxe: bool
) -> tuple[str, str, HostSettings | None] | Ignore:
    """The boot-table choice shared by DHCPv4 and DHCPv6 (DESIGN.md §2): host entry > iPXE file >
    subnet table > global table. Returns (boot file, rule, host entry) or why none."""
    subnet, subnet_label = found
    host = _tables(settings).hosts.get(mac) if mac is not None else None
    if host is not None and host.ignore:
        return Ignore(f"host {mac} ignored")
    chosen = _choose_file(is_ipxe, settings, subnet, arch_key, subnet_label)
    if host is not None and host.boot_file:
        chosen = (host.boot_file, f"host {mac}")
    if chosen is None:
        return Ignore(f"no boot file for {arch_key}")
    return chosen[0], chosen[1], host


def _choose_file(
    is_ipxe: bool, settings: Settings, subnet: SubnetSettings, arch_key: str, subnet_label: str
) -> tuple[str, str] | None:
    # A client already running iPXE gets the iPXE script, which breaks the chainload loop;
    # without an `ipxe` key it falls through to the architecture table.
    for key in (IPXE_KEY, arch_key) if is_ipxe else (arch_key,):
        table = subnet.boot
        if key in table:
            return table[key], f"{subnet_label} {key}"
        table = settings.boot
        if key in table:
            return table[key], f"global {key}"
    return None
