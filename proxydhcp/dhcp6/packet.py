"""DHCPv6 message codec (RFC 8415 §8-9, §21; RFC 5970 options 59-62).

`decode` is total: any bytes give a `Message` or a `RelayMessage`, or raise `MalformedDhcp6` whose
`kind` (a `Malformation`) says what was wrong, for counters and tests, and whose text is a log line.
Options are kept as raw (code, bytes) pairs in wire order; `proxydhcp.dhcp6.options` reads them with
length-checked getters. A Relay-Forward/Relay-Reply carries its inner message (option 9) decoded, so
a relay chain is a tree of values; its depth is bounded (`MAX_RELAY_DEPTH`) so hostile nesting costs
nothing but a `MalformedDhcp6`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum
from ipaddress import IPv6Address

from proxydhcp.errors import MalformedPacket
from proxydhcp.outcome import Reason

# RFC 8415 §7.6 HOP_COUNT_LIMIT: a relay drops a message that has been relayed this many times, so no
# honest message nests deeper; the bound also caps the recursion of decode on hostile input.
MAX_RELAY_DEPTH = 8
HEADER_LEN = 4  # msg-type + transaction-id
RELAY_HEADER_LEN = 34  # msg-type + hop-count + link-address + peer-address
MAX_MESSAGE = 65535


class MessageType(IntEnum):
    """RFC 8415 §7.3."""

    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11
    RELAY_FORW = 12
    RELAY_REPL = 13


RELAY_TYPES = frozenset({MessageType.RELAY_FORW, MessageType.RELAY_REPL})


class Opt(IntEnum):
    """Option codes used here (RFC 8415 §21, RFC 5970 §3)."""

    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IA_TA = 4
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    RELAY_MSG = 9
    AUTH = 11
    UNICAST = 12
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    USER_CLASS = 15
    VENDOR_CLASS = 16
    VENDOR_OPTS = 17
    INTERFACE_ID = 18
    RECONF_MSG = 19
    IA_PD = 25
    IAPREFIX = 26
    BOOTFILE_URL = 59
    BOOTFILE_PARAM = 60
    CLIENT_ARCH_TYPE = 61
    NII = 62


# Options that would grant or describe an address or prefix: never in a proxy answer.
IA_OPTIONS = frozenset({Opt.IA_NA, Opt.IA_TA, Opt.IAADDR, Opt.IA_PD, Opt.IAPREFIX})


class Malformation(Enum):
    """Why bytes are not a DHCPv6 message (the `kind` of `MalformedDhcp6`)."""

    TOO_SHORT = "too short"
    TOO_LONG = "too long"
    BAD_MESSAGE_TYPE = "unknown message type"
    OPTION_TRUNCATED = "option header truncated"
    OPTION_OVERRUN = "option overruns the message"
    NO_RELAY_MSG = "relay message without option 9"
    RELAY_TOO_DEEP = "relay nesting too deep"
    BAD_OPTION = "bad option value"


class MalformedDhcp6(MalformedPacket):
    """Bytes that are not a DHCPv6 message, or an option whose value is not what its code says; its
    `reason` (records, metrics) is the IPv4 codec's where the kind is the same."""

    def __init__(self, kind: Malformation, detail: str = "") -> None:
        self.kind = kind
        super().__init__(f"DHCPv6 {kind.value}" + (f": {detail}" if detail else ""), _REASONS[kind])


_REASONS = {
    Malformation.TOO_SHORT: Reason.TOO_SHORT,
    Malformation.TOO_LONG: Reason.MALFORMED,
    Malformation.BAD_MESSAGE_TYPE: Reason.BAD_MESSAGE_TYPE,
    Malformation.OPTION_TRUNCATED: Reason.OPTION_OVERRUN,
    Malformation.OPTION_OVERRUN: Reason.OPTION_OVERRUN,
    Malformation.NO_RELAY_MSG: Reason.BAD_RELAY,
    Malformation.RELAY_TOO_DEEP: Reason.BAD_RELAY,
    Malformation.BAD_OPTION: Reason.BAD_OPTION_LENGTH,
}


Options = tuple[tuple[int, bytes], ...]


def _option_get(options: Options, code: int) -> bytes | None:
    for key, value in options:
        if key == code:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Message:
    """A client/server message (RFC 8415 §8): every type except the two relay messages."""

    msg_type: int
    transaction_id: int  # 24 bits
    options: Options = ()

    def option(self, code: int) -> bytes | None:
        """The first option `code`, or None (RFC 8415 lets most appear once; we read the first)."""
        return _option_get(self.options, code)

    def has_option(self, code: int) -> bool:
        return any(key == code for key, _ in self.options)

    def encode(self) -> bytes:
        if not 0 <= self.msg_type <= 255 or self.msg_type in RELAY_TYPES:
            raise ValueError(f"not a client/server message type: {self.msg_type}")
        if not 0 <= self.transaction_id < 1 << 24:
            raise ValueError(f"transaction id out of range: {self.transaction_id}")
        head = bytes([self.msg_type]) + self.transaction_id.to_bytes(3, "big")
        return _check_size(head + encode_options(self.options))

    @property
    def type_name(self) -> str:
        return _type_name(self.msg_type)


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """Relay-Forward or Relay-Reply (RFC 8415 §9) with its inner message (option 9) decoded.

    `options` holds every option but 9 (Interface-ID among them); encode puts 9 back last."""

    msg_type: int
    hop_count: int
    link_address: IPv6Address
    peer_address: IPv6Address
    inner: Message | RelayMessage
    options: Options = ()

    def option(self, code: int) -> bytes | None:
        return _option_get(self.options, code)

    def has_option(self, code: int) -> bool:
        return any(key == code for key, _ in self.options)

    def innermost(self) -> Message:
        node: Message | RelayMessage = self.inner
        while isinstance(node, RelayMessage):
            node = node.inner
        return node

    def encode(self) -> bytes:
        if self.msg_type not in RELAY_TYPES:
            raise ValueError(f"not a relay message type: {self.msg_type}")
        if not 0 <= self.hop_count <= 255:
            raise ValueError(f"hop count out of range: {self.hop_count}")
        head = bytes([self.msg_type, self.hop_count]) + self.link_address.packed + self.peer_address.packed
        body = encode_options((*self.options, (Opt.RELAY_MSG, self.inner.encode())))
        return _check_size(head + body)

    @property
    def type_name(self) -> str:
        return _type_name(self.msg_type)


Dhcp6Packet = Message | RelayMessage


def _type_name(value: int) -> str:
    try:
        return MessageType(value).name
    except ValueError:
        return str(value)


def _check_size(data: bytes) -> bytes:
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes does not fit a UDP datagram")
    return data


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in options:
        if not 0 <= code <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError(f"option {code} of {len(value)} bytes cannot be encoded")
        out += code.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value
    return bytes(out)


def decode_options(data: bytes | memoryview, offset: int = 0) -> Options:
    """The (code, value) pairs of an option area (also used for options nested in IA, vendor opts)."""
    out: list[tuple[int, bytes]] = []
    end = len(data)
    while offset < end:
        if end - offset < 4:
            raise MalformedDhcp6(Malformation.OPTION_TRUNCATED, f"{end - offset} stray byte(s)")
        code = int.from_bytes(data[offset : offset + 2], "big")
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4
        if length > end - offset:
            raise MalformedDhcp6(
                Malformation.OPTION_OVERRUN, f"option {code} says {length} bytes, {end - offset} left"
            )
        out.append((code, bytes(data[offset : offset + length])))
        offset += length
    return tuple(out)


def decode(data: bytes) -> Dhcp6Packet:
    """Any bytes → a message, or MalformedDhcp6. Never raises anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("decode takes bytes")
    if len(data) > MAX_MESSAGE:
        raise MalformedDhcp6(Malformation.TOO_LONG, f"{len(data)} bytes")
    return _decode(bytes(data), 0)


def _decode(data: bytes, depth: int) -> Dhcp6Packet:
    if not data:
        raise MalformedDhcp6(Malformation.TOO_SHORT, "empty")
    msg_type = data[0]
    if msg_type in RELAY_TYPES:
        if depth >= MAX_RELAY_DEPTH:
            raise MalformedDhcp6(Malformation.RELAY_TOO_DEEP, f"more than {MAX_RELAY_DEPTH} levels")
        if len(data) < RELAY_HEADER_LEN:
            raise MalformedDhcp6(Malformation.TOO_SHORT, f"relay message of {len(data)} bytes")
        options = decode_options(data, RELAY_HEADER_LEN)
        inner_bytes = _option_get(options, Opt.RELAY_MSG)
        if inner_bytes is None:
            raise MalformedDhcp6(Malformation.NO_RELAY_MSG)
        inner = _decode(inner_bytes, depth + 1)
        return RelayMessage(
            msg_type,
            data[1],
            IPv6Address(data[2:18]),
            IPv6Address(data[18:34]),
            inner,
            tuple(o for o in options if o[0] != Opt.RELAY_MSG),
        )
    if msg_type == 0:  # reserved; unassigned types decode (classify ignores them)
        raise MalformedDhcp6(Malformation.BAD_MESSAGE_TYPE, str(msg_type))
    if len(data) < HEADER_LEN:
        raise MalformedDhcp6(Malformation.TOO_SHORT, f"{len(data)} bytes")
    return Message(msg_type, int.from_bytes(data[1:4], "big"), decode_options(data, HEADER_LEN))


def dump(pkt: Dhcp6Packet, indent: str = "") -> str:
    """A stable text rendering (golden files, explain, debug logs)."""
    lines: list[str] = []
    if isinstance(pkt, RelayMessage):
        lines.append(
            f"{indent}{pkt.type_name} hops={pkt.hop_count} link={pkt.link_address} peer={pkt.peer_address}"
        )
        lines.extend(_dump_options(pkt.options, indent + "  "))
        lines.append(f"{indent}  relay-msg:")
        lines.append(dump(pkt.inner, indent + "    ").rstrip("\n"))
    else:
        lines.append(f"{indent}{pkt.type_name} xid=0x{pkt.transaction_id:06x}")
        lines.extend(_dump_options(pkt.options, indent + "  "))
    return "\n".join(lines) + "\n"


def _dump_options(options: Options, indent: str) -> list[str]:
    out = []
    for code, value in options:
        try:
            name = Opt(code).name.lower().replace("_", "-")
        except ValueError:
            name = f"option-{code}"
        text = value.hex()
        if code == Opt.BOOTFILE_URL and value.isascii() and value.decode().isprintable():
            text = repr(value.decode())  # a URL is read, not decoded by hand
        out.append(f"{indent}{code} {name}: {text}")
    return out
