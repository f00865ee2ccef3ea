"""DHCPv6 step 3: the proxy's Advertise or Reply, and the Relay-Reply around it. Pure.

Contents (issue 20, measured on OVMF; RFC 5970 §3): Server ID (2), Client ID echoed (1), Preference
(7) when configured, Boot File URL (59), Boot File Parameters (60) when configured, Vendor Class (16,
enterprise 343, `PXEClient` or `HTTPClient`). Option 16 is mandatory: EDK II's PxeBcDhcp6 types an
Advertise without it as a plain DHCP offer and the firmware hangs. Never an IA or an address: EDK II
recognises the proxy's answer precisely by the missing IA (`IsProxyOffer`), and a proxy must not
grant addresses. A relayed request's answer is wrapped in one Relay-Reply per Relay-Forward, each
with that relay's hop count, addresses and Interface-ID (RFC 8415 §19.3).
"""

from __future__ import annotations

from collections.abc import Sequence

from proxydhcp.dhcp6.options import PXE_ENTERPRISE, VendorClass, encode_bootfile_params
from proxydhcp.dhcp6.packet import IA_OPTIONS, Message, MessageType, Opt, RelayMessage
from proxydhcp.pxe.classify import HTTP_VENDOR, PXE_VENDOR
from proxydhcp.pxe6.classify import Client6
from proxydhcp.pxe6.policy import BootDecision6


def build_reply6(
    client: Client6,
    decision: BootDecision6,
    server_duid: bytes,
    *,
    preference: int | None = None,
    params: Sequence[str] = (),
) -> Message:
    opts: list[tuple[int, bytes]] = [(Opt.SERVERID, server_duid)]
    if client.client_id is not None:
        opts.append((Opt.CLIENTID, client.client_id))
    if preference is not None:
        opts.append((Opt.PREFERENCE, bytes((preference,))))
    opts.append((Opt.BOOTFILE_URL, decision.url.encode()))
    if params:
        opts.append((Opt.BOOTFILE_PARAM, encode_bootfile_params(params)))
    vendor = HTTP_VENDOR if decision.http else PXE_VENDOR
    opts.append((Opt.VENDOR_CLASS, VendorClass(PXE_ENTERPRISE, (vendor,)).encode()))
    reply = Message(client.answer.value, client.transaction_id, tuple(opts))
    assert not any(code in IA_OPTIONS for code, _ in reply.options)  # never an address
    return reply


def wrap_relay_reply(request: Message | RelayMessage, reply: Message) -> Message | RelayMessage:
    """The reply wrapped in one Relay-Reply per Relay-Forward of `request`, outermost first."""
    if not isinstance(request, RelayMessage):
        return reply
    inner = wrap_relay_reply(request.inner, reply)
    echoed = tuple((code, value) for code, value in request.options if code == Opt.INTERFACE_ID)
    return RelayMessage(
        MessageType.RELAY_REPL, request.hop_count, request.link_address, request.peer_address, inner, echoed
    )
