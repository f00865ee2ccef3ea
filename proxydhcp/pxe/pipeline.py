"""The whole DHCP/PXE pipeline for one datagram, no I/O: decode → classify → decide → build_reply →
delivery. `serve`, `explain`, `diagnose` and the benchmarks all call `run`; its typed result says
what was answered, or at which stage and why nothing was, and `record` turns that into the one
`events.DecisionRecord` per datagram that the log line and the metrics come from.

A second protocol family (DHCPv6) adds its own run beside this one, with the same `Stage`, `Reason`
and `DecisionRecord`, and the same boot-file rule (`boot.choose_boot_file`).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

from proxydhcp.config import Settings
from proxydhcp.dhcp.codes import MessageType
from proxydhcp.dhcp.delivery import Destination, dotted, network_text, offer_destination, pxe_destination
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.errors import MalformedPacket
from proxydhcp.events import DecisionRecord, answer_record, ignored_record
from proxydhcp.outcome import Ignore, Reason, Stage
from proxydhcp.pxe.classify import DHCP_PORT, ClientInfo, classify
from proxydhcp.pxe.policy import BootDecision, Receiver, decide
from proxydhcp.pxe.reply import build_reply


class Answered(NamedTuple):
    """A request the service answers: what it asked, who it is, what was decided, the reply and
    where the reply goes. Immutable, built by keyword; a NamedTuple, as every value the pipeline
    builds per request (a frozen dataclass costs twice as much to build)."""

    request: DhcpPacket
    client: ClientInfo
    decision: BootDecision
    reply: DhcpPacket
    destination: Destination


class Ignored(NamedTuple):
    """A datagram that gets no reply: the stage that decided, why, and what was known by then."""

    stage: Stage
    reason: Reason
    detail: str = ""
    subnet: IPv4Network | None = None  # the enabled subnet of a client the policy turned away
    request: DhcpPacket | None = None  # None: it did not decode
    client: ClientInfo | None = None  # None: turned away before the policy

    def __str__(self) -> str:
        return self.reason.describe(self.detail)


def _ignored(stage: Stage, ignore: Ignore, request: DhcpPacket, client: ClientInfo | None = None) -> Ignored:
    subnet = ignore.subnet if isinstance(ignore.subnet, IPv4Network) else None
    return Ignored(
        stage=stage,
        reason=ignore.reason,
        detail=ignore.detail,
        subnet=subnet,
        request=request,
        client=client,
    )


def run(
    data: bytes,
    *,
    port: int,
    source: tuple[IPv4Address, int],
    receiver: Receiver,
    settings: Settings,
) -> Answered | Ignored:
    """The pipeline for one datagram received on the logical listener `port` (67 or 4011) from
    `source` (address, port). Raises only on bugs."""
    try:
        request = DhcpPacket.decode(data)
    except MalformedPacket as exc:
        return Ignored(stage=Stage.DECODE, reason=exc.reason, detail=str(exc))
    client = classify(request, port=port, source_ip=source[0])
    if isinstance(client, Ignore):
        return _ignored(Stage.CLASSIFY, client, request)
    decision = decide(client, settings, receiver)
    if isinstance(decision, Ignore):
        return _ignored(Stage.POLICY, decision, request, client)
    if port == DHCP_PORT:
        destination = offer_destination(request)
    else:
        destination = pxe_destination(request, source[0], source[1])
    return Answered(
        request=request,
        client=client,
        decision=decision,
        reply=build_reply(request, client, decision),
        destination=destination,
    )


_MESSAGE_TYPE_NAMES = {member.value: member.name for member in MessageType}


def message_type_name(value: int | None) -> str | None:
    """Option 53 as the record names it: the MessageType name, or the number when unknown."""
    if value is None:
        return None
    return _MESSAGE_TYPE_NAMES.get(value) or str(value)


def record(
    result: Answered | Ignored, *, port: int, iface: str, source: str, destination: str | None = None
) -> DecisionRecord:
    """The decision record of one datagram's result (`source` is its "ip:port"; `destination` the
    answer's destination address as text when the caller has converted it already)."""
    if isinstance(result, Answered):
        client, decision = result.client, result.decision
        address = dotted(result.destination.address) if destination is None else destination
        return answer_record(
            port=port,
            iface=iface,
            source=source,
            mac=client.mac,
            xid=client.xid,
            msg_type=message_type_name(client.message_type),
            arch=decision.arch_key,
            subnet=decision.subnet_text,
            boot_file=decision.boot_file,
            server=decision.next_server_text,
            destination=result.destination.text(address),
            rule=decision.rule,
        )
    request = result.request
    return ignored_record(
        result,
        port=port,
        iface=iface,
        source=source,
        mac=None if request is None else request.mac,
        xid=None if request is None else request.xid,
        msg_type=None if request is None else message_type_name(request.message_type),
        subnet=None if result.subnet is None else network_text(result.subnet),
    )
