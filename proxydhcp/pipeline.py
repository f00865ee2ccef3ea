"""The whole DHCP/PXE pipeline for one datagram, no I/O: decode → classify → decide → build_reply →
delivery, and the `events.DecisionRecord` that says what was answered or why nothing was.

`server.py` runs it in each socket's read callback; `explain`, `diagnose` and the benchmarks can
import it without opening a socket. Every exit is a `Verdict`; it raises only on bugs.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple, cast

from proxydhcp.config import Settings
from proxydhcp.dhcp.arch import arch_name
from proxydhcp.dhcp.delivery import Destination, offer_destination, pxe_destination
from proxydhcp.dhcp.packet import ZERO, DhcpPacket, MessageType
from proxydhcp.errors import MalformedPacket
from proxydhcp.events import DecisionRecord, Outcome, Stage
from proxydhcp.pxe.classify import DHCP_PORT, ClientInfo, Ignore, classify
from proxydhcp.pxe.policy import Receiver, client_address, decide
from proxydhcp.pxe.reply import build_reply

__all__ = ["Verdict", "ip_text", "process_datagram"]


class Verdict(NamedTuple):
    reply: bytes | None
    destination: Destination | None
    record: DecisionRecord


# MessageType(value).name per packet costs an enum lookup; the names of the few valid types, once.
_MSG_NAMES: dict[int, str] = {m.value: m.name for m in MessageType}


def _msg_name(value: int | None) -> str | None:
    if value is None:
        return None
    return _MSG_NAMES.get(value) or str(value)


# Per-packet conversions of values that repeat (the same sources, subnets, servers): cached, bounded.
_CACHE_MAX = 4096
# source text → IPv4Address; "0.0.0.0" maps to the shared ZERO, which the pipeline tests with `is` first.
_ADDRESSES: dict[str, IPv4Address] = {"0.0.0.0": ZERO}
_TEXTS: dict[int, str] = {}  # int(IPv4Address) → dotted text
_NETWORKS: dict[int, tuple[IPv4Network, str]] = {}  # id(network) → (network, text); holds the object


def _address(text: str) -> IPv4Address:
    address = _ADDRESSES.get(text)
    if address is None:
        if len(_ADDRESSES) >= _CACHE_MAX:
            _ADDRESSES.clear()
            _ADDRESSES["0.0.0.0"] = ZERO
        address = _ADDRESSES[text] = IPv4Address(text)
    return address


def ip_text(address: IPv4Address) -> str:
    """`str(address)`, cached: the same few servers and destinations repeat on every packet."""
    key = int(address)
    text = _TEXTS.get(key)
    if text is None:
        if len(_TEXTS) >= _CACHE_MAX:
            _TEXTS.clear()
        text = _TEXTS[key] = str(address)
    return text


def _network_text(network: IPv4Network) -> str:
    entry = _NETWORKS.get(id(network))
    if entry is None or entry[0] is not network:
        if len(_NETWORKS) >= _CACHE_MAX:
            _NETWORKS.clear()
        entry = _NETWORKS[id(network)] = (network, str(network))
    return entry[1]


def _dest_text(destination: Destination) -> str:
    broadcast = " (broadcast)" if destination.broadcast else ""
    return f"{ip_text(destination.address)}:{destination.port}{broadcast}"


def _client_subnet(client: ClientInfo, receiver: Receiver, settings: Settings) -> str | None:
    """The enabled subnet a client turned away by policy belongs to, for its record (None if none)."""
    address = client_address(client, receiver)
    subnet = None if address is ZERO or address == ZERO else settings.subnet_for(address)
    return None if subnet is None else _network_text(cast(IPv4Network, subnet.cidr))  # an IPv4 address's


def process_datagram(
    data: bytes,
    source: tuple[str, int],
    *,
    port: int,
    iface: str,
    receiver: Receiver,
    settings: Settings,
) -> Verdict:
    """The whole pipeline for one datagram, no I/O: the reply bytes and where they go, or None, and
    the record saying why. `port` is the logical listener (67 or 4011). Raises only on bugs."""
    src = f"{source[0]}:{source[1]}"
    try:
        request = DhcpPacket.decode(data)
    except MalformedPacket as exc:
        return Verdict(
            None, None, DecisionRecord(Outcome.MALFORMED, Stage.DECODE, port, iface, src, reason=str(exc))
        )
    source_ip = _address(source[0])
    client = classify(request, port=port, source_ip=source_ip)
    if isinstance(client, Ignore):
        record = DecisionRecord(
            Outcome.IGNORE, Stage.CLASSIFY, port, iface, src, request.mac, request.xid,
            _msg_name(request.message_type), reason=client.reason,
        )  # fmt: skip
        return Verdict(None, None, record)
    decision = decide(client, settings, receiver)
    if isinstance(decision, Ignore):
        record = DecisionRecord(
            Outcome.IGNORE, Stage.POLICY, port, iface, src, client.mac, client.xid,
            _msg_name(client.message_type), arch_name(client.arch) if client.arch is not None else None,
            _client_subnet(client, receiver, settings), decision.reason,
        )  # fmt: skip
        return Verdict(None, None, record)
    reply = build_reply(request, client, decision).encode()
    destination = (
        offer_destination(request)
        if client.port == DHCP_PORT
        else pxe_destination(request, source_ip, source[1])
    )
    # Positional: the keyword/dict form of this constructor cost as much as the policy decision.
    record = DecisionRecord(
        Outcome.ANSWER, Stage.SEND, port, iface, src, client.mac, client.xid, _msg_name(client.message_type),
        decision.arch_key, _network_text(decision.subnet), None, decision.boot_file,
        ip_text(decision.next_server), _dest_text(destination), decision.rule,
    )  # fmt: skip
    return Verdict(reply, destination, record)
