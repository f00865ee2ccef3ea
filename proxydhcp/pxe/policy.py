"""Step 2: the boot decision. Configuration + client → which server and file, or why nothing.

The file comes from `boot.choose_boot_file` (shared with every protocol family); this module adds what
is DHCPv4's own: which subnet the client is in, the TFTP server and server identifier, and how the
offer is shaped for its firmware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Literal, NamedTuple, cast

from proxydhcp.boot import choose_boot_file
from proxydhcp.config import Settings
from proxydhcp.dhcp.arch import arch_name, is_uefi
from proxydhcp.dhcp.delivery import dotted
from proxydhcp.httpboot import URL_MAX, boot_url
from proxydhcp.outcome import Ignore, Reason
from proxydhcp.pxe.classify import DHCP_PORT, ClientInfo

OfferStyle = Literal["bios", "binl", "http"]
_NO_ADDRESS = IPv4Address(0)


@dataclass(frozen=True, slots=True)
class Receiver:
    """The interface a request came in on: its address and, when known, its network."""

    local_ip: IPv4Address
    local_network: IPv4Network | None = None
    # local_ip as text, converted once per interface: the next server of an answer without server_ip.
    local_text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_text", dotted(self.local_ip))


class BootDecision(NamedTuple):
    """What a client is told: an immutable value, built by keyword (a NamedTuple, as `ClientInfo`)."""

    boot_file: str
    next_server: IPv4Address  # siaddr: the TFTP server
    # next_server as text, converted once: the reply's option 66 (when asked) and the record's server.
    next_server_text: str
    server_ip: IPv4Address  # option 54: this server, as seen on the receiving interface
    subnet: IPv4Network
    subnet_text: str  # the subnet as text, as the settings converted it once: the record's subnet
    rule: str  # which rule chose the file, for logs and `explain`
    arch_key: str
    offer_style: OfferStyle


def client_address(client: ClientInfo, receiver: Receiver) -> IPv4Address:
    """The address that places the client in a subnet: the relay's giaddr; on 67 the receiving
    interface's address (the client has none yet); on 4011 its ciaddr, else the packet source."""
    # Tests by `==` only: IPv4Address has no __ne__, so `!=` costs twice as much.
    if client.giaddr == _NO_ADDRESS:
        if client.port == DHCP_PORT:
            return receiver.local_ip
        return client.source_ip if client.ciaddr == _NO_ADDRESS else client.ciaddr
    return client.giaddr


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


def decide(client: ClientInfo, settings: Settings, receiver: Receiver) -> BootDecision | Ignore:
    address = client_address(client, receiver)
    lookup = settings.lookup  # the settings' plain per-request view: one pydantic attribute read
    subnet = None if address == _NO_ADDRESS else lookup.view_for(address)  # plain attributes
    if subnet is None:
        where = (
            str(receiver.local_network)
            if not client.relayed and client.port == DHCP_PORT and receiver.local_network
            else f"of {address}"
        )
        return Ignore(Reason.SUBNET_NOT_ENABLED, where)
    arch_key = arch_name(client.arch if client.arch is not None else 0)
    choice = choose_boot_file(settings, subnet, mac=client.mac, arch_key=arch_key, is_ipxe=client.is_ipxe)
    if isinstance(choice, Ignore):
        return choice
    style = offer_style(client, lookup.uefi_mode, arch_key)
    server_ip = lookup.server_ip
    if server_ip is None:
        server_ip, server_text = receiver.local_ip, receiver.local_text
    else:
        server_text = lookup.server_ip_text
    boot_file = choice.boot_file
    if style == "http" and "://" not in boot_file:
        # EDK II HttpBootDxe accepts a proxy offer only if the boot file parses as a URI: a
        # name becomes a URL on the built-in HTTP server (httpboot.boot_url), else no answer.
        url = boot_url(settings, server_ip, boot_file)
        if url is None:
            return Ignore(Reason.BOOT_FILE_NOT_URL, arch_key, subnet.cidr)
        if len(url.encode()) > URL_MAX:
            return Ignore(Reason.URL_TOO_LONG, arch_key, subnet.cidr)
        boot_file = url
    # The host's or subnet's own TFTP server, else this server: its text converted once per settings.
    if isinstance(choice.next_server, IPv4Address):
        next_server, next_server_text = choice.next_server, dotted(choice.next_server)
    else:
        next_server, next_server_text = server_ip, server_text
    return BootDecision(
        boot_file=boot_file,
        next_server=next_server,
        next_server_text=next_server_text,
        server_ip=server_ip,
        # subnet_for looks an IPv4 address up among the IPv4 subnets only: the cidr is IPv4.
        subnet=cast(IPv4Network, subnet.cidr),
        subnet_text=subnet.cidr_text,
        rule=choice.rule,
        arch_key=arch_key,
        offer_style=style,
    )
