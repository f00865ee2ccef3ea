"""One HTTP/1.1 connection as an asyncio Protocol (asyncio and uvloop alike), its request heads parsed
by httptools (MagicStack's binding of llhttp, Node.js's parser), and the bounds on every connection.

What the parser does not bound and this module does: the request target (`max_line_size`, 400), each
header field (`max_field_size`, 431), their number (`max_headers`, 431) and the whole head
(`max_head_size`, 431; httptools gathers a header field before handing it over, so the bytes of the
head are counted as they arrive). Only the three header values an answer depends on are kept.
Requests are answered in order: a pipelined one waits in `queue` while an answer is in flight (reading
is paused meanwhile), at most `MAX_PIPELINED` of them. A head the parser rejects gets its error
answer, in order, and the connection closes.

`ConnectionGuard` adds, on one timer for all connections: the number of connections (past it a new
one is reset at once); a deadline for a whole request head, counted from the connection's start or the
end of its previous answer (a client that sends nothing or drips its headers is closed); and a send
watchdog: while an answer is in flight, the bytes the client has acknowledged (TCP_INFO
tcpi_bytes_acked) must grow within `send_timeout`, else its task is cancelled and the connection
reset (a client that stops reading holds nothing but the socket, and that for `send_timeout` at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools

from proxydhcp.http.plan import Status
from proxydhcp.untrusted import printable

log = logging.getLogger("proxydhcp.http")

MAX_PIPELINED = 64  # requests waiting behind an answer in flight; past that the connection is reset
HEADS_KEPT = 256  # request heads whose parse is kept (`ConnectionGuard.heads`), cleared when full
HEAD_KEPT_SIZE = 2048  # bytes of a head at most, to be kept
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked is the u64 at offset 120 (Linux >= 4.1).
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_OFFSET = 120
_TCP_INFO_LEN = _BYTES_ACKED_OFFSET + _BYTES_ACKED.size
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}
_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}


@dataclass(frozen=True, slots=True)
class Limits:
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    max_head_size: int = 64 * 1024
    max_connections: int = 1024
    head_timeout: float = 10.0
    send_timeout: float = 30.0


class Request:
    """One request head, as the answer needs it. `error`: the parser or a bound refused the head
    (`reason` says why); it is answered with that status and the connection closes."""

    __slots__ = ("error", "http11", "if_modified_since", "if_range", "keep_alive", "method", "range",
                 "reason", "target")  # fmt: skip

    def __init__(self, method: str, target: bytes, http11: bool, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.http11 = http11
        self.keep_alive = keep_alive
        self.range: bytes | None = None
        self.if_modified_since: bytes | None = None
        self.if_range: bytes | None = None
        self.error: Status | None = None
        self.reason = ""

    def copy(self) -> Request:
        """A request of its own with the same head (an answer may change its `keep_alive`)."""
        twin = Request(self.method, self.target, self.http11, self.keep_alive)
        twin.range, twin.if_modified_since, twin.if_range = self.range, self.if_modified_since, self.if_range
        twin.error, twin.reason = self.error, self.reason
        return twin


class Responder(Protocol):
    """The server's side: answer `request` on `conn` now (None), or return the coroutine that will
    (the connection runs it as a task and answers nothing else meanwhile)."""

    def answer(self, conn: HttpConnection, request: Request) -> Coroutine[Any, Any, None] | None: ...


class _Refused(Exception):
    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "acked",
        "admitted",
        "clean",
        "client",
        "closing",
        "completed",
        "current",
        "eof",
        "guard",
        "head_size",
        "headers",
        "in_head",
        "limits",
        "on_header",
        "parser",
        "pending",
        "queue",
        "responder",
        "since",
        "sock",
        "spent",
        "task",
        "timed_out",
        "transport",
        "url",
        "write_paused",
    )  # fmt: skip

    def __init__(self, guard: ConnectionGuard, responder: Responder) -> None:
        self.guard = guard
        self.responder = responder
        self.limits = guard.limits
        self.transport: asyncio.Transport | None = None
        self.sock: Any = None
        self.client: tuple[str, int] = ("?", 0)
        self.admitted = False
        self.since = time.monotonic()  # start of the current head deadline, or of the send watchdog
        self.acked: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.timed_out = False  # the guard reset it (the task's outcome is then `timeout`)
        self.write_paused = False
        self.closing = False
        self.eof = False
        self.queue: deque[Request] = deque()
        # The head's fields, name → value as sent; httptools looks `on_header` up once, when the
        # parser is made. Repeated names keep the last value.
        self.headers: dict[bytes, bytes] = {}
        self.on_header = self.headers.__setitem__
        self.parser = httptools.HttpRequestParser(self)
        self.in_head = True
        self.head_size = 0
        self.url = b""
        self.pending: Request | None = None  # the head being parsed
        self.current: Request | None = None  # the request its task answers
        self.spent = False  # the parser has stopped (an error or an upgrade): read no more
        self.clean = True  # the parser is between messages, holding no byte of the next one
        self.completed = 0  # requests parsed

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is no asyncio.Transport subclass, but has the same methods.
        self.transport = cast(asyncio.Transport, transport)
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self.admitted = True
        self.sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = (_unmapped(str(peer[0])), int(peer[1]))

    def data_received(self, data: bytes) -> None:
        if self.closing or self.spent:
            return
        clean = self.clean
        if clean:
            known = self.guard.heads.get(data)
            if known is not None:
                # These very bytes, parsed from this state before, were one whole request and left
                # the parser as it was: that request again, without the parser (`ConnectionGuard`).
                self.queue.append(known.copy())
                self.pump()
                return
        completed = self.completed
        if self.in_head:
            self.head_size += len(data)
        self.clean = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT or an Upgrade header: what follows the head is no HTTP/1.1; answer and close.
            self.spent = True
            self._stop_reading()
            if self.queue:
                self.queue[-1].keep_alive = False
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.reason)
            else:
                self._refuse(Status.BAD_REQUEST, str(exc) or type(exc).__name__)
            return
        if self.in_head and self.head_size > self.limits.max_head_size:
            self._refuse(Status.HEADER_FIELDS_TOO_LARGE, "request head too large")
            return
        if self.completed != completed and self.in_head and data.endswith(b"\r\n\r\n"):
            # A request ended with these bytes (a head ends at its first empty line; a body would
            # leave `in_head` False): the parser is between messages again.
            self.clean = True
            if clean and self.completed == completed + 1 and self.queue and len(data) <= HEAD_KEPT_SIZE:
                self.guard.keep_head(data, self.queue[-1])
        self.pump()

    def eof_received(self) -> bool | None:
        if self.task is not None or self.queue:
            self.eof = True  # the client has said all it will: answer it, then close
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()
        if self.admitted:
            self.guard.forget(self)
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        # The transport holds more than its high-water mark: the client reads slower than we answer.
        # Answer nothing more (the send watchdog now watches it) until it has drained.
        self.write_paused = True
        self.acked = None
        self.since = time.monotonic()
        self._stop_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.since = time.monotonic()
        if self.task is None and not self.closing:
            self._start_reading()
            self.pump()

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_url(self, part: bytes) -> None:
        self.url += part
        if len(self.url) > self.limits.max_line_size:
            raise _Refused(Status.BAD_REQUEST, "request target too long")

    # on_header is `self.headers.__setitem__` (set in __init__): a C call per field, not a Python one.

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser, limits, headers = self.parser, self.limits, self.headers
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refused(Status.VERSION_NOT_SUPPORTED, f"HTTP version {printable(version, 64)}")
        raw = parser.get_method()
        request = Request(
            _METHODS.get(raw) or printable(raw.decode("latin-1"), 16),
            self.url,
            version == "1.1",
            parser.should_keep_alive(),
        )
        self.pending = request
        if headers:
            if len(headers) > limits.max_headers:  # (a repeated name counts once: the head size bounds it)
                raise _Refused(Status.HEADER_FIELDS_TOO_LARGE, "too many header fields")
            total = len(self.url)
            for name, value in headers.items():
                size = len(name)
                field = size + len(value)
                if field > limits.max_field_size:
                    raise _Refused(Status.HEADER_FIELDS_TOO_LARGE, "header field too long")
                total += field + 4  # ": " and CRLF
                if size == 5 or size == 8 or size == 17:  # Range, If-Range, If-Modified-Since
                    key = name.lower()
                    if key == b"range":
                        request.range = value
                    elif key == b"if-modified-since":
                        request.if_modified_since = value
                    elif key == b"if-range":
                        request.if_range = value
            headers.clear()
            # data_received bounds a head still arriving; this one, a head that came in one piece
            if total > limits.max_head_size:
                raise _Refused(Status.HEADER_FIELDS_TOO_LARGE, "request head too large")

    def on_message_complete(self) -> None:
        request = self.pending
        assert request is not None
        self.pending = None
        self.url = b""
        self.in_head = True  # what comes next is the next request's head
        self.head_size = 0
        self.completed += 1
        if len(self.queue) >= MAX_PIPELINED:
            log.debug("closing the connection from %s: more than %d pipelined requests",
                      _hostport(self.client), MAX_PIPELINED)  # fmt: skip
            self.closing = True
            self.queue.clear()
            if self.transport is not None:
                self.transport.abort()
            return
        self.queue.append(request)
        # Answered after the parser returns (pump): a synchronous answer may close the connection.

    # -- answering ---------------------------------------------------------------------------------

    def pump(self) -> None:
        """Answer the queued requests in order, until one needs a task or the transport is full."""
        queue = self.queue
        answered = False
        while queue and self.task is None and not self.write_paused and not self.closing:
            request = queue.popleft()
            work = self.responder.answer(self, request)
            if work is not None:
                self._stop_reading()
                self.acked = None  # the watchdog's next tick takes the baseline (no syscall per request)
                self.since = time.monotonic()
                self.current = request
                self.task = asyncio.get_running_loop().create_task(work)
                self.task.add_done_callback(self._answered)
                return
            answered = True
            if not request.keep_alive:
                self.close()
                return
        if answered:
            self.since = time.monotonic()  # the head deadline of the next request starts now
        if self.eof and not queue and self.task is None and not self.closing:
            self.close()

    def _answered(self, task: asyncio.Task[None]) -> None:
        request, self.current, self.task = self.current, None, None
        self.since = time.monotonic()
        if self.closing:
            return
        if task.cancelled() or task.exception() is not None:  # recorded by the responder
            self.abort()
            return
        if request is not None and not request.keep_alive:
            self.close()
            return
        if self.write_paused:
            return  # resume_writing carries on
        self._start_reading()
        self.pump()

    def close(self) -> None:
        """Close after what the transport holds has gone out."""
        self.closing = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, status: Status, reason: str) -> None:
        """The head cannot be parsed or breaks a bound: answer it after those before it, and close."""
        request = self.pending or Request("", self.url, True, False)
        self.pending = None
        self.headers.clear()
        if not request.method:
            with contextlib.suppress(httptools.HttpParserError, UnicodeDecodeError, AttributeError):
                raw = self.parser.get_method()
                request.method = _METHODS.get(raw) or printable(raw.decode("latin-1"), 16)
        request.target = self.url
        request.keep_alive = False
        request.error, request.reason = status, reason
        self.spent = True  # the parser cannot go on after an error
        self._stop_reading()
        self.queue.append(request)
        self.pump()

    def _stop_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(RuntimeError):
                transport.pause_reading()

    def _start_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.spent:
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bytes_acked(sock: Any) -> int | None:
    """How many bytes the peer has acknowledged on this TCP socket, or None if the kernel won't say."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCP_INFO_LEN:
        return None
    value: int = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_OFFSET)[0]
    return value


class ConnectionGuard:
    """Connection limit, request-head deadline and send watchdog (see the module docstring); one
    timer for all connections, ticking while there are any. `counts` gets `refused_connections`,
    `connections`, `head_timeouts` and `send_timeouts` added to."""

    def __init__(self, limits: Limits, counts: Any) -> None:
        self.limits = limits
        self.counts = counts
        self.connections: set[HttpConnection] = set()
        # The bytes of a whole request head, as a client sent them in one piece → its parse. A client
        # repeats its head byte for byte (the same file again; and every machine of a boot storm
        # sends the same), so the parser and its four callbacks run once per distinct head. Kept
        # only for a keep-alive request parsed with nothing before it and nothing after it (the
        # parser where it started), and used only from that state: the parse is a function of the
        # bytes and the limits. Heads come from clients: bounded in number and size, cleared when full.
        self.heads: dict[bytes, Request] = {}
        self.tick = max(0.05, min(1.0, limits.head_timeout / 4, limits.send_timeout / 4))
        self._timer: asyncio.TimerHandle | None = None

    def admit(self, conn: HttpConnection) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            self.counts.refused_connections += 1
            log.debug("connection refused: %d connections open", len(self.connections))
            return False
        self.connections.add(conn)
        self.counts.connections += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)
        return True

    def keep_head(self, data: bytes, request: Request) -> None:
        if request.keep_alive and request.error is None:
            if len(self.heads) >= HEADS_KEPT:
                self.heads.clear()
            self.heads[data] = request.copy()

    def forget(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)

    def close_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self.connections):
            conn.abort()

    def _check(self) -> None:
        self._timer = None
        now = time.monotonic()
        head, send = self.limits.head_timeout, self.limits.send_timeout
        for conn in list(self.connections):
            if conn.task is not None or conn.write_paused:
                acked = bytes_acked(conn.sock)
                if acked is None:  # no TCP_INFO: fall back to the write buffer moving
                    transport = conn.transport
                    acked = -1 if transport is None else transport.get_write_buffer_size()
                if acked != conn.acked:
                    conn.acked, conn.since = acked, now
                elif now - conn.since > send:
                    self.counts.send_timeouts += 1
                    self._reset(conn, f"no progress sending for {send:.0f} s")
            elif now - conn.since > head:
                self.counts.head_timeouts += 1
                self._reset(conn, f"no complete request within {head:.0f} s")
        if self.connections:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)

    def _reset(self, conn: HttpConnection, why: str) -> None:
        log.debug("closing the connection from %s: %s", _hostport(conn.client), why)
        conn.timed_out = True
        if conn.task is not None:
            conn.task.cancel()  # a task waiting in sendfile or a drain would otherwise wait forever
        self.forget(conn)
        # Linger 0: the close sends RST and frees the kernel's send buffer at once; a plain close
        # behind a zero window leaves an orphan socket holding it, probing for minutes.
        with contextlib.suppress(OSError, AttributeError):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        conn.abort()


def _unmapped(host: str) -> str:
    """An IPv4 peer of a dual-stack listener as itself (::ffff:10.0.0.9 → 10.0.0.9)."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
