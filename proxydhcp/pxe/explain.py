"""A dry run of the pipeline: "what would the service answer this client, and why?"

Builds the request real firmware would send (a DISCOVER like PXE ROMs and EDK II, then for UEFI the
port-4011 REQUEST), and runs it through the wire format and `pxe.pipeline.run`, exactly as `serve`
does. No sockets.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import cast

from proxydhcp.config import Settings, normalize_mac
from proxydhcp.dhcp.arch import HTTP_ARCHES, describe_arch
from proxydhcp.dhcp.codes import BOOTREQUEST, BROADCAST_FLAG, MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.pxe.classify import DHCP_PORT, PXE_PORT
from proxydhcp.pxe.pipeline import Answered, Ignored, run
from proxydhcp.pxe.policy import BootDecision, Receiver

_ZERO = IPv4Address(0)
# What EDK II and PXE ROMs ask for: the boot options plus the PXE vendor range 128-135.
_PARAM_REQUEST = bytes(
    [
        1,
        2,
        3,
        4,
        5,
        6,
        12,
        13,
        15,
        17,
        18,
        22,
        23,
        28,
        40,
        41,
        42,
        43,
        50,
        51,
        54,
        58,
        59,
        60,
        66,
        67,
        97,
        128,
        129,
        130,
        131,
        132,
        133,
        134,
        135,
    ]
)


@dataclass(frozen=True)
class Step:
    """One request through the pipeline and its outcome."""

    title: str
    request: DhcpPacket
    source: str
    outcome: Answered | Ignored


@dataclass
class ExplainResult:
    mac: str
    arch: int
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return bool(self.steps) and isinstance(self.steps[-1].outcome, Answered)

    @property
    def ignore_reason(self) -> str | None:
        last = self.steps[-1].outcome if self.steps else None
        return str(last) if isinstance(last, Ignored) else None

    @property
    def decision(self) -> BootDecision | None:
        last = self.steps[-1].outcome if self.steps else None
        return last.decision if isinstance(last, Answered) else None

    def text(self) -> str:
        out = [f"client {self.mac}, arch {self.arch} ({describe_arch(self.arch)})"]
        out += [f"note: {note}" for note in self.notes]
        for step in self.steps:
            out.append("")
            out.append(f"== {step.title} (from {step.source})")
            if isinstance(step.outcome, Ignored):
                out.append(f"ignored: {step.outcome}")
                out.append("no reply is sent")
                continue
            decision, reply, dest = step.outcome.decision, step.outcome.reply, step.outcome.destination
            out.append(f"subnet       {decision.subnet}")
            out.append(f"rule         {decision.rule}")
            out.append(f"offer style  {decision.offer_style}")
            out.append(f"boot file    {decision.boot_file}")
            out.append(f"next server  {decision.next_server}")
            out.append(f"server id    {decision.server_ip}")
            out.append(f"sent to      {dest}")
            out.append(f"reply ({len(reply.encode())} bytes):")
            out.extend("  " + line for line in reply.dump().splitlines())
        out.append("")
        if self.answered:
            final = self.decision
            assert final is not None
            out.append(f"result: boots {final.boot_file} from {final.next_server}")
        else:
            out.append(f"result: no answer ({self.ignore_reason})")
        return "\n".join(out) + "\n"


def synthetic_request(
    *,
    mac: str,
    arch: int,
    message_type: MessageType,
    user_class: str | None = None,
    giaddr: IPv4Address = _ZERO,
    ciaddr: IPv4Address = _ZERO,
) -> DhcpPacket:
    """A request shaped like real firmware's (netboot-dhcp.pcap frame 1; BZ-387 frame 5)."""
    chaddr = bytes.fromhex(mac.replace(":", ""))
    vendor = "HTTPClient" if arch in HTTP_ARCHES else "PXEClient"
    undi = "003016" if arch >= 6 else "002001"
    opts: list[tuple[int, bytes]] = [
        (Opt.MESSAGE_TYPE, bytes((message_type,))),
        (Opt.MAX_MESSAGE_SIZE, (1472).to_bytes(2, "big")),
        (Opt.PARAM_REQUEST_LIST, _PARAM_REQUEST),
        (Opt.CLIENT_ARCH, arch.to_bytes(2, "big")),
        (Opt.CLIENT_NDI, bytes((1, 3, 16)) if arch >= 6 else bytes((1, 2, 1))),
        (Opt.CLIENT_UUID, b"\x00" + bytes(10) + chaddr),
        (Opt.VENDOR_CLASS, f"{vendor}:Arch:{arch:05d}:UNDI:{undi}".encode()),
    ]
    if user_class:
        opts.append((Opt.USER_CLASS, user_class.encode()))  # as iPXE sends it: a plain string
    discover = message_type == MessageType.DISCOVER
    return DhcpPacket(
        op=BOOTREQUEST,
        xid=zlib.crc32(chaddr) ^ message_type,
        chaddr=chaddr,
        hops=1 if giaddr != _ZERO else 0,
        flags=BROADCAST_FLAG if discover else 0,
        ciaddr=ciaddr,
        giaddr=giaddr,
        options=tuple(opts),
    )


def explain(
    settings: Settings,
    *,
    mac: str,
    arch: int,
    user_class: str | None = None,
    giaddr: IPv4Address | None = None,
    client_ip: IPv4Address | None = None,
    local_ip: IPv4Address,
    local_network: IPv4Network | None = None,
) -> ExplainResult:
    """Run a DISCOVER (and, for UEFI/BINL offers, the 4011 REQUEST) through the pipeline.

    `local_ip`/`local_network` describe the interface that would receive the DISCOVER; `giaddr`
    makes it a relayed request; `client_ip` is the address the client has by the time it asks on 4011.
    """
    mac = normalize_mac(mac)
    result = ExplainResult(mac=mac, arch=arch)
    relay = giaddr or _ZERO
    receiver = Receiver(local_ip=local_ip, local_network=local_network)
    if settings.server.colocated:
        # Only 4011 is served: the DHCP server on this host already sent 60=PXEClient.
        result.notes.append("co-located mode: no proxy offer on port 67, only the 4011 step")
        if client_ip is None:
            client_ip = _assumed_client(settings, local_ip)
            result.notes.append(f"client address assumed to be {client_ip} (use --client-ip to set it)")
        _request_4011(result, settings, mac, arch, user_class, client_ip, local_ip)
        return result
    discover = synthetic_request(
        mac=mac, arch=arch, message_type=MessageType.DISCOVER, user_class=user_class, giaddr=relay
    )
    source = f"{relay}:67 (relay)" if relay != _ZERO else "0.0.0.0:68 (broadcast)"
    outcome = _run(discover, DHCP_PORT, (relay, 67 if relay != _ZERO else 68), receiver, settings)
    result.steps.append(Step("DHCPDISCOVER on port 67", discover, source, outcome))
    if isinstance(outcome, Ignored) or outcome.decision.offer_style != "binl":
        return result
    decision = outcome.decision
    if client_ip is None:
        # The client has its lease from the DHCP server by now; any address of the subnet will do.
        client_ip = decision.subnet.broadcast_address - 1
        result.notes.append(f"client address assumed to be {client_ip} (use --client-ip to set it)")
    _request_4011(result, settings, mac, arch, user_class, client_ip, decision.server_ip)
    return result


def _request_4011(
    result: ExplainResult,
    settings: Settings,
    mac: str,
    arch: int,
    user_class: str | None,
    client_ip: IPv4Address,
    server_ip: IPv4Address,
) -> None:
    request = synthetic_request(
        mac=mac, arch=arch, message_type=MessageType.REQUEST, user_class=user_class, ciaddr=client_ip
    )
    # EDK II sends from port 4011 to siaddr:4011; the 4011 listener sees the client's own address.
    outcome = _run(request, PXE_PORT, (client_ip, PXE_PORT), Receiver(local_ip=server_ip), settings)
    result.steps.append(Step(f"DHCPREQUEST to {server_ip}:4011", request, f"{client_ip}:4011", outcome))


def _assumed_client(settings: Settings, local_ip: IPv4Address) -> IPv4Address:
    subnet = settings.subnet_for(local_ip)
    if subnet is None:
        return local_ip
    candidate = cast(IPv4Network, subnet.cidr).broadcast_address - 1
    return candidate if candidate != local_ip else candidate - 1


def assumed_receiver(
    settings: Settings, *, giaddr: IPv4Address | None = None, client_ip: IPv4Address | None = None
) -> tuple[IPv4Address, IPv4Network | None]:
    """The receiving interface `explain` assumes when none is given: `server_ip` when set, else the
    first host of the client's enabled subnet (or of the first enabled subnet)."""
    local = settings.server.server_ip
    if local is None:
        near = settings.subnet_for(client_ip) if client_ip is not None and giaddr is None else None
        subnet = near or next((s for s in settings.subnet if s.cidr.version == 4), None)
        cidr = cast(IPv4Network, subnet.cidr) if subnet else None
        local = next(cidr.hosts(), cidr.network_address) if cidr else _ZERO
    found = settings.subnet_for(local)
    return local, cast(IPv4Network, found.cidr) if found else None


def _run(
    request: DhcpPacket, port: int, source: tuple[IPv4Address, int], receiver: Receiver, settings: Settings
) -> Answered | Ignored:
    # Through the wire format, as `serve` sees it.
    return run(request.encode(), port=port, source=source, receiver=receiver, settings=settings)
