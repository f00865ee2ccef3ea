"""Step 2: the boot decision. Configuration + client → which server and file, or why nothing.

One pure function (DESIGN.md §2 "Boot file choice"): host entry > iPXE client → iPXE file >
subnet's architecture table > global architecture table > no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from proxydhcp.config import IPXE_KEY, Settings, SubnetSettings
from proxydhcp.dhcp.arch import arch_name, is_uefi
from proxydhcp.pxe.classify import DHCP_PORT, ClientInfo, Ignore

OfferStyle = Literal["bios", "binl", "http"]
_ZERO = IPv4Address(0)


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


def client_address(client: ClientInfo, receiver: Receiver) -> IPv4Address:
    """The address that places the client in a subnet: the relay's giaddr; on 67 the receiving
    interface's address (the client has none yet); on 4011 its ciaddr, else the packet source."""
    if client.relayed:
        return client.giaddr
    if client.port == DHCP_PORT:
        return receiver.local_ip
    return client.ciaddr if client.ciaddr != _ZERO else client.source_ip


def offer_style(client: ClientInfo) -> OfferStyle:
    # UEFI firmware forks drop PXE10 proxy offers, so arch ≥ 6 gets the BINL redirect to 4011.
    if client.http:
        return "http"
    return "binl" if is_uefi(client.arch) else "bios"


def decide(client: ClientInfo, settings: Settings, receiver: Receiver) -> BootDecision | Ignore:
    address = client_address(client, receiver)
    subnet = settings.subnet_for(address) if address != _ZERO else None
    if subnet is None:
        where = (
            str(receiver.local_network)
            if not client.relayed and client.port == DHCP_PORT and receiver.local_network
            else f"of {address}"
        )
        return Ignore(f"subnet {where} not enabled")
    arch_key = arch_name(client.arch if client.arch is not None else 0)
    host = settings.host_for(client.mac)
    if host is not None and host.ignore:
        return Ignore(f"host {client.mac} ignored")
    chosen = _choose_file(client, settings, subnet, arch_key)
    if host is not None and host.boot_file:
        chosen = (host.boot_file, f"host {client.mac}")
    if chosen is None:
        return Ignore(f"no boot file for {arch_key}")
    boot_file, rule = chosen
    if len(boot_file.encode()) > 127:
        return Ignore(f"boot file for {arch_key} is longer than 127 bytes")  # the header `file` field
    style = offer_style(client)
    if style == "http" and "://" not in boot_file:
        # EDK II HttpBootDxe accepts a proxy offer only if the boot file parses as a URI.
        return Ignore(f"boot file for {arch_key} is not a URL")
    server_ip = settings.server.server_ip or receiver.local_ip
    next_server = (host.next_server if host is not None else None) or subnet.next_server or server_ip
    return BootDecision(
        boot_file=boot_file,
        next_server=next_server,
        server_ip=server_ip,
        subnet=subnet.cidr,
        rule=rule,
        arch_key=arch_key,
        offer_style=style,
    )


def _choose_file(
    client: ClientInfo, settings: Settings, subnet: SubnetSettings, arch_key: str
) -> tuple[str, str] | None:
    tables = ((f"subnet {subnet.cidr}", subnet.boot), ("global", settings.boot))
    # A client already running iPXE gets the iPXE script, which breaks the chainload loop;
    # without an `ipxe` key it falls through to the architecture table.
    keys = (IPXE_KEY, arch_key) if client.is_ipxe else (arch_key,)
    for key in keys:
        for label, table in tables:
            if key in table:
                return table[key], f"{label} {key}"
    return None
