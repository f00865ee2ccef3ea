"""The asyncio HTTP file server: `connection.HttpConnection` (httptools parsing, the bounds of
`ConnectionGuard`) hands each request head to `HttpServer.answer`, which maps the target to a file
under the root with TFTP's confinement rule and answers with `plan.py`'s semantics.

Small files come from a shared in-memory cache (the TFTP package's FileCache): a name seen a moment
ago (`ResolveCache`) whose bytes are cached is answered at once, head and body in one write, with no
task, open or fstat (the same plain request again within the same second: the very bytes sent
before, one write); a file not yet cached is read in a task. Bigger files go out with sendfile(2) on
a dup of the connection's socket (`zerocopy.py`), zero-copy under asyncio and uvloop alike. One
structured log record and one `RequestStats` per request, its text rendered when the log handler
writes (log.emit_fast).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxydhcp.http import wire, zerocopy
from proxydhcp.http.connection import ConnectionGuard, HttpConnection, Limits, Request
from proxydhcp.http.plan import (
    METHODS,
    Plan,
    Refusal,
    Status,
    http_date,
    parse_http_date,
    parse_range,
    plan,
    target_name,
)
from proxydhcp.http.record import Outcome, RequestStats, hostport
from proxydhcp.log import emit_fast
from proxydhcp.tftp.files import Buffer, FileCache, ResolveCache, file_key, open_regular, resolve
from proxydhcp.tftp.packet import ErrorCode, TftpError
from proxydhcp.untrusted import printable

log = logging.getLogger("proxydhcp.http")

STOP_GRACE = 2.0
ONE_WRITE = 64 * 1024  # a cached body up to this size is joined to its head (one write, one copy)
ANSWERS_KEPT = 1024
ANSWERS_BYTES = 4 * 1024 * 1024  # bytes of answers kept whole for their next asking (`_Answer`)
ANSWER_RECHECK = 0.1  # seconds a kept answer is sent again before its file is looked at anew
# The members every request uses, as plain names: in Python 3.11 an enum class's attribute goes
# through EnumType.__getattr__'s slow hook (~850 instructions each, four per small request).
_OK, _COMPLETED, _ERROR, _TIMEOUT = Status.OK, Outcome.COMPLETED, Outcome.ERROR, Outcome.TIMEOUT


@dataclass(slots=True)
class _Answer:
    """A plain 200 answer to a small cached file, as sent: valid for the same file (`key`) within the
    same wall-clock second (its Date); the name is walked again (`ResolveCache.stat`) when the last
    look (`checked`, monotonic) is `HttpConfig.answer_recheck` seconds old or more."""

    name: str
    key: tuple[int, int, int, int]
    second: int
    wire: bytes  # head and body (a GET) or head alone (HEAD), ready for one write
    sent: int  # bytes of body in `wire`
    shown: str  # the target as the log record shows it
    checked: float


@dataclass
class HttpConfig:
    root: Path
    address: str = "0.0.0.0"
    port: int = 80
    max_connections: int = 1024
    head_timeout: float = 10.0
    """Seconds a connection may take to send a whole request head (from its start, or from the end of
    its previous response: keep-alive idle time counts)."""
    send_timeout: float = 30.0
    """Seconds a response may go without the client acknowledging a byte before it is reset."""
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    max_head_size: int = 64 * 1024
    """Bytes of a whole request head (request line and header fields)."""
    memory_file: int = 1024 * 1024
    """Files up to this size are served from the shared in-memory cache, bigger ones with sendfile."""
    cache_bytes: int = 64 * 1024 * 1024
    answer_recheck: float = ANSWER_RECHECK
    """Seconds a plain answer kept whole (`_Answer`) is sent again without looking at its file; a
    change on disk is seen within them (as nginx's open_file_cache_valid). 0: look every time."""


@dataclass
class ServerStats:
    requests: int = 0
    bytes: int = 0
    connections: int = 0
    refused_connections: int = 0  # over max_connections
    head_timeouts: int = 0
    send_timeouts: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def _is_any6(address: str) -> bool:
    return ":" in address and socket.inet_pton(socket.AF_INET6, address) == bytes(16)


def _dual_stack_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serve `config.root` read-only over HTTP until `close()`. `on_request` gets every RequestStats."""

    def __init__(self, config: HttpConfig, on_request: Callable[[RequestStats], None] | None = None) -> None:
        self.config = config
        self.on_request = on_request
        self.stats = ServerStats()
        self.limits = Limits(
            max_line_size=config.max_line_size,
            max_field_size=config.max_field_size,
            max_headers=config.max_headers,
            max_head_size=config.max_head_size,
            max_connections=config.max_connections,
            head_timeout=config.head_timeout,
            send_timeout=config.send_timeout,
        )
        self.guard = ConnectionGuard(self.limits, self.stats)
        self.cache = FileCache(budget=config.cache_bytes, max_file=config.memory_file)
        self._root = os.path.realpath(config.root)
        self._names = ResolveCache(self._root)
        self._memory_file = config.memory_file
        self._recheck = config.answer_recheck
        # (target, keep-alive, HTTP/1.1, method) → the whole answer last sent for a plain request (no
        # Range or condition) of a small cached file; bounded in number and bytes, cleared when full.
        self._answers: dict[tuple[bytes, bool, bool, str], _Answer] = {}
        self._answers_bytes = 0
        self._server: asyncio.Server | None = None
        self.port = config.port
        self.busy = 0  # answers in flight in a task

    @property
    def active(self) -> int:
        """Open connections."""
        return len(self.guard.connections)

    async def start(self) -> None:
        """Bind and listen (raises OSError). `address` may be IPv4 or IPv6; `::` serves both families
        (as TFTP's `::`): IPv4 clients arrive as ::ffff:a.b.c.d and are logged as a.b.c.d."""
        cfg = self.config
        _raise_open_files(cfg.max_connections + 64)
        guard = self.guard

        def factory() -> HttpConnection:
            return HttpConnection(guard, self)

        loop = asyncio.get_running_loop()
        if _is_any6(cfg.address):
            # asyncio sets IPV6_V6ONLY on every AF_INET6 listener it makes: a dual-stack one is ours.
            sock = _dual_stack_listener(cfg.port)
            self._server = await loop.create_server(factory, sock=sock, backlog=1024)
        else:
            self._server = await loop.create_server(
                factory, host=cfg.address, port=cfg.port, reuse_address=True, backlog=1024
            )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("HTTP serving %s on %s", self._root, hostport((cfg.address, self.port)))

    async def close(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting; give answers in flight `grace` seconds; then reset what is left."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.guard.close_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    # -- one request -----------------------------------------------------------------------------

    def answer(self, conn: HttpConnection, request: Request) -> Coroutine[Any, Any, None] | None:
        """Answer `request` now, or return the coroutine that will (a file to read or sendfile)."""
        started = time.monotonic()
        if request.range is None and request.if_modified_since is None and request.if_range is None:
            known = self._answers.get((request.target, request.keep_alive, request.http11, request.method))
            if known is not None and self._answer_again(conn, request, known, started):
                return None
        try:
            if request.error is not None:
                raise Refusal(request.error, request.reason)
            if request.method not in METHODS:
                raise Refusal(Status.METHOD_NOT_ALLOWED, "method not allowed")
            try:
                name = target_name(request.target.decode("utf-8"))
            except UnicodeDecodeError:
                raise Refusal(Status.BAD_REQUEST, "request target is not UTF-8") from None
            # A name that led to a small cached file a moment ago, still the same file (ResolveCache
            # re-walks it from the root): answered from memory, no open/fstat/close.
            st = self._names.stat(name, started)
            if st is not None and st.st_size <= self._memory_file:
                data = self.cache.get(file_key(st))
                if data is not None:
                    decided = self._plan(request, st)
                    sent = self._write_memory(conn, request, decided, data, name, st, started)
                    self._record(conn, request, decided.status, sent, started, _COMPLETED)
                    return None
            try:
                fd, st = open_regular(resolve(self._root, name))
            except TftpError as exc:
                if exc.code == ErrorCode.FILE_NOT_FOUND:
                    raise Refusal(Status.NOT_FOUND, "no such file") from None
                raise Refusal(Status.FORBIDDEN, "outside the root or not a regular file") from None
        except Refusal as exc:
            self._refuse(conn, request, exc, started)
            return None
        handed = False
        try:
            self._names.remember(name, st, started)
            decided = self._plan(request, st)
            cached: Buffer | None = None
            if decided.body:
                if st.st_size > self._memory_file:
                    handed = True
                    return self._sendfile(conn, request, fd, decided, started)
                cached = self.cache.get(file_key(st))
                if cached is None:
                    handed = True
                    return self._load_and_send(conn, request, fd, st, decided, started)
            sent = self._write_memory(conn, request, decided, cached)
            self._record(conn, request, decided.status, sent, started, Outcome.COMPLETED)
            return None
        finally:
            if not handed:
                os.close(fd)

    @staticmethod
    def _plan(request: Request, st: os.stat_result) -> Plan:
        # Header values are ASCII text; latin-1 decodes any byte, and a stray one fails the parse.
        byte_range = None if request.range is None else parse_range(request.range.decode("latin-1"))
        since = request.if_modified_since
        if_range = request.if_range
        return plan(
            request.method,
            st.st_size,
            st.st_mtime,
            byte_range,
            None if since is None else parse_http_date(since.decode("latin-1")),
            None if if_range is None else if_range.decode("latin-1"),
        )

    def _answer_again(self, conn: HttpConnection, request: Request, known: _Answer, started: float) -> bool:
        """The answer sent for this very request a moment ago, if it still holds: the Date is the same
        second, and the name still leads to the same file (ResolveCache re-walks it: same device,
        inode, ctime; and the same mtime and size as the bytes kept) when it was last seen to more
        than `answer_recheck` seconds ago. One write of bytes ready to go."""
        if known.second != int(time.time()):
            return False
        if started - known.checked >= self._recheck:
            st = self._names.stat(known.name, started)
            if st is None or (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) != known.key:
                return False
            known.checked = started
        transport = conn.transport
        assert transport is not None
        transport.write(known.wire)
        self._record(conn, request, _OK, known.sent, started, _COMPLETED, "", known.shown)
        return True

    def _write_memory(
        self,
        conn: HttpConnection,
        request: Request,
        decided: Plan,
        data: Buffer | None,
        name: str = "",
        st: os.stat_result | None = None,
        seen: float = 0.0,
    ) -> int:
        """Head and (when there is one) body from `data`, in one write for small ones; bytes of body.
        With `name` and `st` (a plain request for a cached file; its lstat at `seen`, monotonic), the
        answer is kept for the next time."""
        transport = conn.transport
        assert transport is not None
        now = time.time()
        head = self._head(request, decided, now)
        if st is not None and decided.status is _OK:
            self._remember(request, name, st, head, data if decided.body else None, now, seen)
        if not decided.body or data is None:
            transport.write(head)
            return 0
        start, length = decided.start, decided.length
        if length == len(data):
            body: Buffer | memoryview = data
        else:
            body = memoryview(data)[start : start + length]
        if length <= ONE_WRITE:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        return length

    def _remember(
        self,
        request: Request,
        name: str,
        st: os.stat_result,
        head: bytes,
        body: Buffer | None,
        now: float,
        seen: float,
    ) -> None:
        """Keep a plain 200 answer (`head`, and `body` for a GET: the whole file) for its next asking."""
        if request.range is not None or request.if_modified_since is not None or request.if_range is not None:
            return
        if len(head) + (0 if body is None else len(body)) > ONE_WRITE:
            return
        wire = head if body is None else head + body
        answers = self._answers
        # Targets come from clients: bounded in number and bytes, cleared when full.
        if len(answers) >= ANSWERS_KEPT or self._answers_bytes + len(wire) > ANSWERS_BYTES:
            answers.clear()
            self._answers_bytes = 0
        key = (request.target, request.keep_alive, request.http11, request.method)
        old = answers.get(key)
        if old is not None:
            self._answers_bytes -= len(old.wire)
        answers[key] = _Answer(
            name, file_key(st), int(now), wire, len(wire) - len(head), self._name(request), seen
        )
        self._answers_bytes += len(wire)

    @staticmethod
    def _head(request: Request, decided: Plan, now: float | None = None) -> bytes:
        status = decided.status
        if status is Status.OK or status is Status.PARTIAL:  # HEAD: the length a GET would send
            length: int | None = decided.length
            content_type: str | None = wire.OCTETS
        else:  # 304 has no length; 416 an empty body
            length = None if status is Status.NOT_MODIFIED else 0
            content_type = None
        return wire.head(
            status, http_date(time.time() if now is None else now), decided.headers, length, content_type,
            request.keep_alive, request.http11,
        )  # fmt: skip

    def _refuse(self, conn: HttpConnection, request: Request, exc: Refusal, started: float) -> None:
        status = exc.status
        body = wire.error_body(status)
        headers = {"Allow": "GET, HEAD"} if status == Status.METHOD_NOT_ALLOWED else {}
        head = wire.head(
            status, http_date(time.time()), headers, len(body), wire.TEXT, request.keep_alive, request.http11
        )
        transport = conn.transport
        if transport is not None:
            transport.write(head if request.method == "HEAD" else head + body)
        self._record(conn, request, status, 0, started, Outcome.REFUSED, exc.reason)

    async def _load_and_send(
        self,
        conn: HttpConnection,
        request: Request,
        fd: int,
        st: os.stat_result,
        decided: Plan,
        started: float,
    ) -> None:
        """A small file not in the cache yet: read it into the cache (once for all who ask), answer."""
        status, sent, outcome, reason = Status.SERVER_ERROR, 0, Outcome.ERROR, ""
        self.busy += 1
        try:
            data = await self.cache.load(file_key(st), fd)
            if conn.closing:
                raise ConnectionResetError("connection lost")
            sent = self._write_memory(conn, request, decided, data)
            status, outcome = decided.status, Outcome.COMPLETED
        except asyncio.CancelledError:
            outcome, reason = self._lost(conn)
            raise
        except ConnectionError:
            outcome, reason = Outcome.ABORTED, "connection lost"
        except OSError as exc:
            reason = f"read error: {exc.strerror or exc}"
            log.warning("cannot read %s for %s: %s", self._name(request), hostport(conn.client), reason)
            self._refuse_late(conn, request)
        finally:
            os.close(fd)
            self.busy -= 1
            self._record(conn, request, status, sent, started, outcome, reason)

    async def _sendfile(
        self, conn: HttpConnection, request: Request, fd: int, decided: Plan, started: float
    ) -> None:
        """A big file: the head through the transport, the body by sendfile(2)."""
        transport = conn.transport
        status, sent, outcome, reason = decided.status, 0, Outcome.ERROR, ""
        self.busy += 1
        try:
            if transport is None or conn.closing:
                raise ConnectionResetError("connection lost")
            transport.write(self._head(request, decided))
            sent = await zerocopy.sendfile(transport, fd, decided.start, decided.length)
            outcome = Outcome.COMPLETED
        except asyncio.CancelledError:
            outcome, reason = self._lost(conn)
            raise
        except ConnectionError:
            outcome, reason = Outcome.ABORTED, "connection lost"
            conn.abort()
        except OSError as exc:  # the head is out: the client sees a short body, and the reset
            reason = f"read error: {exc.strerror or exc}"
            log.warning("cannot read %s for %s: %s", self._name(request), hostport(conn.client), reason)
            conn.abort()
        finally:
            os.close(fd)
            self.busy -= 1
            self._record(conn, request, status, sent, started, outcome, reason)

    @staticmethod
    def _lost(conn: HttpConnection) -> tuple[Outcome, str]:
        if conn.timed_out:
            return Outcome.TIMEOUT, "client stopped reading"
        return Outcome.ABORTED, "connection lost"

    @staticmethod
    def _refuse_late(conn: HttpConnection, request: Request) -> None:
        """A 500 for a request whose file could not be read (nothing of it sent yet)."""
        body = wire.error_body(Status.SERVER_ERROR)
        request.keep_alive = False
        head = wire.head(Status.SERVER_ERROR, http_date(time.time()), {}, len(body), wire.TEXT, False, True)
        if conn.transport is not None and not conn.closing:
            conn.transport.write(head + body)

    @staticmethod
    def _name(request: Request) -> str:
        return printable(request.target.decode("utf-8", "backslashreplace"), 256)

    def _record(
        self,
        conn: HttpConnection,
        request: Request,
        status: int,
        sent: int,
        started: float,
        outcome: Outcome,
        reason: str = "",
        shown: str | None = None,
    ) -> None:
        st = RequestStats(
            conn.client, request.method or "-", self._name(request) if shown is None else shown, int(status),
            sent, time.monotonic() - started, outcome, reason,
        )  # fmt: skip
        s = self.stats
        s.requests += 1
        s.bytes += sent
        s.statuses[st.status] = s.statuses.get(st.status, 0) + 1
        level = logging.WARNING if outcome is _ERROR or outcome is _TIMEOUT else logging.INFO
        if log.isEnabledFor(level):
            msg = st.message()
            if not emit_fast(log, level, msg, st):
                log.log(level, "%s", msg, extra={"fields": st.fields()})
        if self.on_request is not None:
            try:
                self.on_request(st)
            except Exception:
                log.exception("on_request callback failed")


def _raise_open_files(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_standalone(config: HttpConfig) -> int:
    """`proxydhcp http`: serve until SIGINT/SIGTERM; returns the exit code. Uses uvloop when installed
    (the service's default loop; small files are answered faster on it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve(config))
    code: int = uvloop.run(_serve(config))
    return code


async def _serve(config: HttpConfig) -> int:
    server = HttpServer(config)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot bind %s: %s", hostport((config.address, config.port)), exc.strerror or exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: %d connection(s) open", server.active)
    await server.close()
    return 0


__all__ = [
    "HttpConfig",
    "HttpServer",
    "ServerStats",
    "run_standalone",
]
