"""`proxydhcp explain -6`: what the DHCPv6 proxy would answer an EDK II PXE-over-IPv6 (or HTTP boot)
client, and why, through `pxe6.pipeline.run6` (the code `serve` runs), no sockets.

Steps: the PXE Solicit on 547 (from link-local, or relayed with a link-address), then for PXEClient
the boot-service Request on 4011 from the client's address (issue 20).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from proxydhcp.config import Settings
from proxydhcp.dhcp.arch import HTTP_ARCHES, describe_arch
from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import Message, MessageType, Opt, RelayMessage, decode, dump
from proxydhcp.events import DecisionRecord
from proxydhcp.pxe6.classify import DHCP6_PORT, PXE6_PORT
from proxydhcp.pxe6.pipeline import Answered6, Ignored6, Source6, record6, run6, source_text
from proxydhcp.pxe6.policy import Receiver6

# The DUID shown in explained answers: the real one is DUID-LL of the serving interface's MAC.
EXAMPLE_DUID = options.duid_ll(bytes.fromhex("020000000000"))
_XID = 0x000001


def edk2_request(
    msg_type: int, mac: bytes, arch: int, *, server_duid: bytes | None = None, user_class: str | None = None
) -> bytes:
    """The message EDK II sends (issue 20): Solicit with IA_NA; the 4011 Request without IA, with the
    proxy's Server ID first and the Solicit's transaction id."""
    vendor = ("HTTPClient" if arch in HTTP_ARCHES else "PXEClient") + f":Arch:{arch:05d}:UNDI:003000"
    duid = options.DuidType.LLT.to_bytes(2, "big") + b"\x00\x01" + bytes(4) + mac
    opts: list[tuple[int, bytes]] = []
    if server_duid is not None:
        opts.append((Opt.SERVERID, server_duid))
    opts += [(Opt.CLIENTID, duid), (Opt.ELAPSED_TIME, b"\x00\x00")]
    if msg_type == MessageType.SOLICIT:
        opts.append((Opt.IA_NA, bytes.fromhex("00000001") + bytes(8)))
    opts += [
        (Opt.ORO, bytes.fromhex("003b003c00170010")),
        (Opt.NII, b"\x01\x03\x00"),
        (Opt.CLIENT_ARCH_TYPE, arch.to_bytes(2, "big")),
        (Opt.VENDOR_CLASS, options.VendorClass(options.PXE_ENTERPRISE, (vendor.encode(),)).encode()),
    ]
    if user_class:
        opts.append((Opt.USER_CLASS, options.encode_strings([user_class.encode()])))
    return Message(msg_type, _XID, tuple(opts)).encode()


@dataclass
class Step6:
    title: str
    source: str
    result: Answered6 | Ignored6
    record: DecisionRecord


@dataclass
class Explain6Result:
    mac: str
    arch: int
    steps: list[Step6] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = [f"client {self.mac}, {describe_arch(self.arch)}, over IPv6 (DHCPv6 proxy, RFC 5970)"]
        out += [f"note: {n}" for n in self.notes]
        for step in self.steps:
            rec, result = step.record, step.result
            out.append("")
            out.append(f"{step.title} from {step.source}")
            if not isinstance(result, Answered6):
                out.append(f"  no answer: {rec.reason_text} (stage {rec.stage.value})")
                continue
            out.append(f"  prefix       {rec.subnet}")
            out.append(f"  rule         {rec.rule}")
            out.append(f"  boot file    {rec.boot_file}")
            out.append(f"  destination  {rec.destination}")
            out.append("  answer:")
            out += ["    " + line for line in dump(result.reply).splitlines()]
        last = self.steps[-1] if self.steps else None
        if last is not None and isinstance(last.result, Answered6):
            out.append("")
            out.append(f"result: boots {last.record.boot_file}")
        elif last is not None:
            out.append("")
            out.append(f"result: not answered ({last.record.reason_text})")
        return "\n".join(out) + "\n"


def explain6(
    settings: Settings,
    *,
    mac: str,
    arch: int,
    user_class: str | None = None,
    link_address: IPv6Address | None = None,
    client_ip: IPv6Address | None = None,
    local_ip: IPv6Address | None = None,
) -> Explain6Result:
    raw = bytes.fromhex(mac.replace(":", ""))
    result = Explain6Result(mac, arch)
    prefixes = [s.cidr for s in settings.subnet if isinstance(s.cidr, IPv6Network)]
    if local_ip is None:
        home = next((p for p in prefixes if link_address is None or link_address in p), None)
        local_ip = next(home.hosts()) if home is not None else None
        if local_ip is not None:
            result.notes.append(f"this host's address assumed to be {local_ip} (use --local-ip to set it)")
    receiver = Receiver6("explain", () if local_ip is None else ((local_ip, 64),))
    solicit = edk2_request(MessageType.SOLICIT, raw, arch, user_class=user_class)
    eui64 = bytes([raw[0] ^ 2, *raw[1:3], 0xFF, 0xFE, *raw[3:6]])
    ll = str(IPv6Address(b"\xfe\x80" + bytes(6) + eui64))
    if link_address is not None:
        relayed = RelayMessage(MessageType.RELAY_FORW, 0, link_address, IPv6Address(ll), decode(solicit))
        source, data = (f"[{link_address}]:547 (relay)", (str(link_address), 547, 0, 0)), relayed.encode()
    else:
        source, data = (f"[{ll}]:546 (multicast to ff02::1:2)", (ll, 546, 0, 1)), solicit
    solicit_step = _step("Solicit on port 547", source[0], data, source[1], DHCP6_PORT, receiver, settings)
    result.steps.append(solicit_step)
    if not isinstance(solicit_step.result, Answered6) or arch in HTTP_ARCHES:
        return result
    if client_ip is None:
        home = next((p for p in prefixes if local_ip is not None and local_ip in p), None)
        client_ip = home.broadcast_address - 1 if home is not None else IPv6Address(ll)
        result.notes.append(f"client address assumed to be {client_ip} (use --client-ip to set it)")
    request = edk2_request(MessageType.REQUEST, raw, arch, server_duid=EXAMPLE_DUID, user_class=user_class)
    scope = 1 if client_ip.is_link_local else 0
    boot = (str(client_ip), 4011, 0, scope)
    result.steps.append(
        _step(
            "boot-service Request on port 4011",
            f"[{client_ip}]:4011",
            request,
            boot,
            PXE6_PORT,
            receiver,
            settings,
        )
    )
    return result


def _step(
    title: str, shown: str, data: bytes, source: Source6, port: int, receiver: Receiver6, settings: Settings
) -> Step6:
    run = run6(data, port=port, source=source, receiver=receiver, settings=settings, server_duid=EXAMPLE_DUID)
    rec = record6(run, port=port, iface=receiver.iface, source=source_text(source))
    return Step6(title, shown, run, rec)
