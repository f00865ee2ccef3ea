"""The DHCPv6 pipeline for one datagram, no I/O: decode → classify6 → decide6 (`boot.choose_boot_file`)
→ build_reply6 → Relay-Reply wrapping → destination. The DHCPv6 `run` beside `pxe.pipeline.run`:
the same kind of typed result (`Answered6` | `Ignored6(stage, reason, detail)`, with the same
`Stage` and `Reason`), and `record6` turns it into the same `events.DecisionRecord` (port 547 or
4011, RFC 8415 message type names), so logs, counters and metrics need no second rule.

`serve` (`serve/service6.py`), `explain -6` (`pxe6/explain.py`), `probe -6` and the fuzzer call `run6`.
Destinations (issue 20, RFC 8415 §19.3): every answer goes to the request's source address and port,
with its scope (a link-local 4011 Request from `[fe80::…%if]:4011` is answered there, from 4011); a
Relay-Reply goes to the relay that sent the Relay-Forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from proxydhcp.config import Settings
from proxydhcp.dhcp6 import packet as dhcp6
from proxydhcp.dhcp6.packet import MalformedDhcp6, Message, RelayMessage
from proxydhcp.events import DecisionRecord, answer_record, ignored_record
from proxydhcp.outcome import Ignore, Reason, Stage
from proxydhcp.pxe6.classify import PXE6_PORT, Client6, classify6
from proxydhcp.pxe6.policy import BootDecision6, Receiver6, decide6
from proxydhcp.pxe6.reply import build_reply6, wrap_relay_reply

__all__ = ["REPEATS", "Answered6", "Ignored6", "Source6", "record6", "run6", "source_text"]

# (host, port, flowinfo, scope_id): what recvfrom gives on an AF_INET6 socket and sendto takes.
Source6 = tuple[str, int, int, int]

# EDK II's PxeBcRequestBootService configures its UDP read instance only after sending the 4011 Request
# (UdpWrite, then Udp6Read->Configure, then UdpRead): a Reply that arrives in between is lost, and
# the firmware gives PXE-E16 about 3 s later without retrying. Under QEMU/TCG the proxy answers in
# under a millisecond and lost that race in one OVMF run of four here, so the 4011 Reply is sent again
# within the firmware's wait; a copy that arrives after the firmware moved on is dropped by it.
REPEATS = (0.25, 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answered6:
    """A DHCPv6 request the service answers: what it asked, who it is, what was decided, the reply
    (wrapped in Relay-Replies when relayed), where it goes, and after which delays it goes again."""

    request: Message | RelayMessage
    client: Client6
    decision: BootDecision6
    reply: Message | RelayMessage
    destination: Source6
    repeat: tuple[float, ...] = ()  # seconds: see REPEATS

    @property
    def message(self) -> Message:
        """The proxy's own Advertise or Reply (inside the Relay-Replies)."""
        reply = self.reply
        return reply.innermost() if isinstance(reply, RelayMessage) else reply


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored6:
    """A DHCPv6 datagram that gets no reply: the stage that decided, why, and what was known by then."""

    stage: Stage
    reason: Reason
    detail: str = ""
    subnet: IPv6Network | None = None  # the enabled prefix of a client the policy turned away
    request: Message | RelayMessage | None = None  # None: it did not decode
    client: Client6 | None = None  # None: turned away before the policy

    def __str__(self) -> str:
        return self.reason.describe(self.detail)


def _host(text: str) -> IPv6Address:
    return IPv6Address(text.partition("%")[0])


def source_text(source: Source6) -> str:
    """`[address%scope]:port`, as records show an IPv6 peer."""
    scope = f"%{source[3]}" if source[3] else ""
    return f"[{source[0].partition('%')[0]}{scope}]:{source[1]}"


def run6(
    data: bytes,
    *,
    port: int,
    source: Source6,
    receiver: Receiver6,
    settings: Settings,
    server_duid: bytes,
) -> Answered6 | Ignored6:
    """The pipeline for one datagram received on the logical listener `port` (547 or 4011) from
    `source`; `server_duid` is this host's DUID. Raises only on bugs."""
    try:
        request = dhcp6.decode(data)
    except MalformedDhcp6 as exc:
        return Ignored6(stage=Stage.DECODE, reason=exc.reason, detail=str(exc))
    client = classify6(request, port=port, source=_host(source[0]), server_duid=server_duid)
    if isinstance(client, Ignore):
        return Ignored6(stage=Stage.CLASSIFY, reason=client.reason, detail=client.detail, request=request)
    decision = decide6(client, settings, receiver)
    if isinstance(decision, Ignore):
        subnet = decision.subnet if isinstance(decision.subnet, IPv6Network) else None
        return Ignored6(
            stage=Stage.POLICY,
            reason=decision.reason,
            detail=decision.detail,
            subnet=subnet,
            request=request,
            client=client,
        )
    server = settings.server
    reply = build_reply6(
        client, decision, server_duid, preference=server.dhcp6_preference, params=server.boot_file_params
    )
    return Answered6(
        request=request,
        client=client,
        decision=decision,
        reply=wrap_relay_reply(request, reply),
        destination=(source[0].partition("%")[0], source[1], 0, source[3]),
        repeat=REPEATS if port == PXE6_PORT else (),
    )


def _who(client: Client6) -> str | None:
    """The MAC of a DUID-LL/LLT, else the DUID in hex: what identifies the client in records."""
    if client.mac is not None:
        return client.mac
    return None if client.client_id is None else "duid:" + client.client_id.hex()


def _inner(request: Message | RelayMessage) -> Message:
    return request.innermost() if isinstance(request, RelayMessage) else request


def record6(result: Answered6 | Ignored6, *, port: int, iface: str, source: str) -> DecisionRecord:
    """The decision record of one datagram's result (`source` is its `source_text`)."""
    if isinstance(result, Answered6):
        client, decision = result.client, result.decision
        return answer_record(
            port=port,
            iface=iface,
            source=source,
            mac=_who(client),
            xid=client.transaction_id,
            msg_type=_inner(result.request).type_name,
            arch=decision.arch_key,
            subnet=str(decision.subnet),
            boot_file=decision.url,
            server=None if decision.server is None else str(decision.server),
            destination=source_text(result.destination),
            rule=decision.rule,
        )
    request, known = result.request, result.client
    inner = None if request is None else _inner(request)
    return ignored_record(
        result,
        port=port,
        iface=iface,
        source=source,
        mac=None if known is None else _who(known),
        xid=None if inner is None else inner.transaction_id,
        msg_type=None if inner is None else inner.type_name,
        subnet=None if result.subnet is None else str(result.subnet),
    )
