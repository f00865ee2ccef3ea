"""TFTP wire codec: RFC 1350 (RRQ, WRQ, DATA, ACK, ERROR) and RFC 2347 (options, OACK).

Packets are values; `decode` is total: any bytes give a packet or `MalformedPacket(reason)`.
No socket or file code here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

from proxydhcp.errors import MalformedPacket, ProxyDhcpError

MAX_BLOCK = 0xFFFF


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8  # RFC 2347


# Fixed texts sent to peers: never Python exception text.
ERROR_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.NOT_DEFINED: "Not defined",
    ErrorCode.FILE_NOT_FOUND: "File not found",
    ErrorCode.ACCESS_VIOLATION: "Access violation",
    ErrorCode.DISK_FULL: "Disk full or allocation exceeded",
    ErrorCode.ILLEGAL_OPERATION: "Illegal TFTP operation",
    ErrorCode.UNKNOWN_TID: "Unknown transfer ID",
    ErrorCode.FILE_EXISTS: "File already exists",
    ErrorCode.NO_SUCH_USER: "No such user",
    ErrorCode.OPTION_REFUSED: "Option negotiation refused",
}

BUSY_MESSAGE = "Too many transfers"


class TftpError(ProxyDhcpError):
    """A refusal to send to the peer as an ERROR packet with a fixed message."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        self.code = code
        self.message = message if message is not None else ERROR_MESSAGES[code]
        super().__init__(f"{code.name}: {self.message}")


Options = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Request:
    """RRQ or WRQ; option names keep the client's spelling (negotiation lowercases them)."""

    opcode: Opcode
    filename: str
    mode: str
    options: Options = ()

    def encode(self) -> bytes:
        parts = [self.filename, self.mode]
        for name, value in self.options:
            parts += [name, value]
        body = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in parts)
        return self.opcode.to_bytes(2, "big") + body


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    payload: bytes

    def encode(self) -> bytes:
        return data_header(self.block) + self.payload


@dataclass(frozen=True, slots=True)
class Ack:
    block: int

    def encode(self) -> bytes:
        return b"\0\4" + self.block.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str

    @classmethod
    def of(cls, code: ErrorCode, message: str | None = None) -> Error:
        return cls(code, message if message is not None else ERROR_MESSAGES[code])

    def encode(self) -> bytes:
        return b"\0\5" + self.code.to_bytes(2, "big") + self.message.encode("ascii", "replace") + b"\0"


@dataclass(frozen=True, slots=True)
class OAck:
    options: Options

    def encode(self) -> bytes:
        return b"\0\6" + b"".join(n.encode() + b"\0" + v.encode() + b"\0" for n, v in self.options)


Packet = Request | Data | Ack | Error | OAck


def _strings(body: bytes) -> list[str]:
    """NUL-terminated strings; an unterminated tail (junk or padding, R-68) is dropped."""
    fields = body.split(b"\0")[:-1]
    return [f.decode("utf-8", "surrogateescape") for f in fields]


_UTF8, _ESCAPE = "utf-8", "surrogateescape"


def _decode_request(opcode: Opcode, data: bytes) -> Request:
    """`data`: the whole datagram (the body starts at offset 2). Runs once per RRQ: no intermediate lists
    of decoded strings."""
    fields = data[2:].split(b"\0")
    count = len(fields) - 1  # the last piece is the unterminated tail
    if count < 2:
        raise MalformedPacket("request without NUL-terminated filename and mode")
    if not fields[0]:
        raise MalformedPacket("request with an empty filename")
    filename = fields[0].decode(_UTF8, _ESCAPE)
    mode = fields[1].decode(_UTF8, _ESCAPE)
    # Trailing NUL padding yields empty names: stop at the first one.
    options: list[tuple[str, str]] = []
    for i in range(2, count - 1, 2):
        name = fields[i]
        if not name:
            break
        options.append((name.decode(_UTF8, _ESCAPE), fields[i + 1].decode(_UTF8, _ESCAPE)))
    return Request(opcode, filename, mode, tuple(options))


def _decode_oack(body: bytes) -> OAck:
    fields = _strings(body)
    if len(fields) % 2:
        raise MalformedPacket("OACK with an option name and no value")
    return OAck(tuple(zip(fields[0::2], fields[1::2], strict=True)))


_OPCODES: dict[int, Opcode] = {int(op): op for op in Opcode}  # a dict lookup, not an Enum call


def decode(data: bytes) -> Packet:
    """Decode one datagram; raise `MalformedPacket` with a reason fit for a log line."""
    if len(data) < 2:
        raise MalformedPacket("packet too short")
    opcode = _OPCODES.get((data[0] << 8) | data[1])
    if opcode is None:
        raise MalformedPacket(f"unknown opcode {int.from_bytes(data[:2], 'big')}")
    if opcode <= Opcode.WRQ:
        return _decode_request(opcode, data)
    body = data[2:]
    if opcode is Opcode.OACK:
        return _decode_oack(body)
    if len(body) < 2:
        raise MalformedPacket(f"{opcode.name} too short")
    number = int.from_bytes(body[:2], "big")
    if opcode is Opcode.DATA:
        return Data(number, bytes(body[2:]))
    if opcode is Opcode.ACK:
        if len(body) != 2:
            raise MalformedPacket("ACK with trailing bytes")
        return Ack(number)
    message = bytes(body[2:]).split(b"\0", 1)[0].decode("ascii", "replace")
    return Error(number, message)


@functools.cache
def _headers() -> tuple[bytes, ...]:
    return tuple(b"\0\3" + n.to_bytes(2, "big") for n in range(MAX_BLOCK + 1))


def data_header(block: int) -> bytes:
    """The 4-byte DATA header of a (wrapped) block number, pre-built once for all transfers."""
    return _headers()[block & MAX_BLOCK]


def data_headers() -> tuple[bytes, ...]:
    """All 65536 DATA headers, indexed by the 16-bit block number."""
    return _headers()
