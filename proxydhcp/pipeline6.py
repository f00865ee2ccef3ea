"""The DHCPv6 pipeline for one datagram, no I/O: decode → classify6 → decide6 (the IPv4 boot table) →
build_reply6 → Relay-Reply wrapping → destination, and the same `events.DecisionRecord` as IPv4.

`serve` runs it from the IPv6 endpoints; `explain`/`diagnose`/tests import it without a socket.
Destinations (issue 20, RFC 8415 §19.3): every answer goes to the request's source address and port,
with its scope (a link-local 4011 Request from `[fe80::…%if]:4011` is answered there, from 4011); a
Relay-Reply goes to the relay that sent the Relay-Forward.
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import NamedTuple

from proxydhcp.config import Settings
from proxydhcp.dhcp6 import packet as dhcp6
from proxydhcp.dhcp6.packet import MalformedDhcp6
from proxydhcp.events import DecisionRecord, Outcome, Stage
from proxydhcp.pxe.classify import Ignore
from proxydhcp.pxe6.classify import PXE6_PORT, Client6, classify6
from proxydhcp.pxe6.policy import Receiver6, client_place, decide6
from proxydhcp.pxe6.reply import build_reply6, wrap_relay_reply

__all__ = ["Source6", "Verdict6", "process_datagram6"]

# (host, port, flowinfo, scope_id): what recvfrom gives on an AF_INET6 socket and sendto takes.
Source6 = tuple[str, int, int, int]


class Verdict6(NamedTuple):
    reply: bytes | None
    destination: Source6 | None
    record: DecisionRecord
    # Send the reply again after these delays (seconds): see `REPEATS`.
    repeat: tuple[float, ...] = ()


# EDK II's PxeBcRequestBootService configures its UDP read instance only after sending the 4011 Request
# (UdpWrite, then Udp6Read->Configure, then UdpRead): a Reply that arrives in between is lost, and
# the firmware gives PXE-E16 about 3 s later without retrying. Under QEMU/TCG the proxy answers in
# under a millisecond and lost that race in one OVMF run of four here, so the 4011 Reply is sent again
# within the firmware's wait; a copy that arrives after the firmware moved on is dropped by it.
REPEATS = (0.25, 1.0)


def _host(text: str) -> IPv6Address:
    return IPv6Address(text.partition("%")[0])


def _src_text(source: Source6) -> str:
    scope = f"%{source[3]}" if source[3] else ""
    return f"[{source[0].partition('%')[0]}{scope}]:{source[1]}"


def process_datagram6(
    data: bytes,
    source: Source6,
    *,
    port: int,
    receiver: Receiver6,
    settings: Settings,
    server_duid: bytes,
) -> Verdict6:
    """`port` is the logical listener (547 or 4011). Raises only on bugs."""
    src = _src_text(source)
    iface = receiver.iface
    try:
        request = dhcp6.decode(data)
    except MalformedDhcp6 as exc:
        return Verdict6(
            None, None, DecisionRecord(Outcome.MALFORMED, Stage.DECODE, port, iface, src, reason=str(exc))
        )
    inner = request.innermost() if isinstance(request, dhcp6.RelayMessage) else request
    client = classify6(request, port=port, source=_host(source[0]), server_duid=server_duid)
    if isinstance(client, Ignore):
        record = DecisionRecord(
            Outcome.IGNORE, Stage.CLASSIFY, port, iface, src, None, inner.transaction_id, inner.type_name,
            reason=client.reason,
        )  # fmt: skip
        return Verdict6(None, None, record)
    decision = decide6(client, settings, receiver)
    who = _who(client)
    arch = decision.arch_key if not isinstance(decision, Ignore) else _arch(client)
    if isinstance(decision, Ignore):
        place = client_place(client, receiver)
        found = None if place is None else settings.subnet_for(place)
        record = DecisionRecord(
            Outcome.IGNORE, Stage.POLICY, port, iface, src, who, client.transaction_id, inner.type_name,
            arch, None if found is None else str(found.cidr), decision.reason,
        )  # fmt: skip
        return Verdict6(None, None, record)
    server = settings.server
    reply = build_reply6(
        client, decision, server_duid, preference=server.dhcp6_preference, params=server.boot_file_params
    )
    wire = wrap_relay_reply(request, reply).encode()
    destination: Source6 = (source[0].partition("%")[0], source[1], 0, source[3])
    record = DecisionRecord(
        Outcome.ANSWER, Stage.SEND, port, iface, src, who, client.transaction_id, inner.type_name, arch,
        str(decision.subnet), None, decision.url, str(decision.server), _src_text(destination), decision.rule,
    )  # fmt: skip
    return Verdict6(wire, destination, record, REPEATS if port == PXE6_PORT else ())


def _who(client: Client6) -> str | None:
    """The MAC of a DUID-LL/LLT, else the DUID in hex: what identifies the client in records."""
    if client.mac is not None:
        return client.mac
    return None if client.client_id is None else "duid:" + client.client_id.hex()


def _arch(client: Client6) -> str | None:
    from proxydhcp.dhcp.arch import arch_name

    return None if client.arch is None else arch_name(client.arch)
