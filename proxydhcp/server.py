"""`proxydhcp serve`: asyncio endpoints on ports 67 and 4011 per interface, TFTP, signals, lifecycle.

Each datagram runs the pure pipeline synchronously in the socket's read callback (decode → classify
→ decide → build_reply → delivery → sendto): no task per packet and no per-client state, and a
wakeup drains a batch of datagrams, so a boot storm costs one short function call per DISCOVER.
Nothing in that path raises into the loop: every exit is one `events.DecisionRecord`.

Signals: SIGTERM/SIGINT stop answering DHCP and give TFTP transfers in flight a grace period;
SIGHUP reloads the configuration (the same file and flags as at start) and swaps it atomically.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from proxydhcp import events, sockets
from proxydhcp.config import Settings, TftpSettings, load_settings
from proxydhcp.dhcp.arch import arch_name
from proxydhcp.dhcp.delivery import Destination, offer_destination, pxe_destination
from proxydhcp.dhcp.packet import ZERO, DhcpPacket, MessageType
from proxydhcp.errors import ConfigError, MalformedPacket
from proxydhcp.events import DecisionRecord, Outcome, Stage
from proxydhcp.log import flush_logs, setup_logging
from proxydhcp.privileges import PrivilegeError, drop_privileges
from proxydhcp.pxe.classify import DHCP_PORT, PXE_PORT, ClientInfo, Ignore, classify
from proxydhcp.pxe.policy import Receiver, client_address, decide
from proxydhcp.pxe.reply import build_reply
from proxydhcp.tftp.server import TftpConfig, TftpServer, TransferStats

if TYPE_CHECKING:
    from proxydhcp.metrics import Metrics  # imported lazily: prometheus_client only when enabled

log = logging.getLogger("proxydhcp.server")

STOP_GRACE = 10.0  # seconds TFTP transfers in flight get to finish after SIGTERM
# Settings that only a restart can apply (sockets are bound and privileges dropped at start).
_RESTART_KEYS = (
    "server.interfaces",
    "server.colocated",
    "server.dhcp_port",
    "server.pxe_port",
    "server.user",
    "tftp",
)


class StartupError(Exception):
    """The service cannot start; the message is one line for the admin. Exit code 2."""


# sendmsg ancillary data: [] lets the kernel pick the source address; else IP_PKTINFO naming it.
Ancillary = list[tuple[int, int, bytes]]


class Local(NamedTuple):
    """Whom a request was addressed to: the Receiver its pipeline sees (option 54, siaddr default) and
    the ancillary data that sends the reply from that same address."""

    receiver: Receiver
    ancillary: Ancillary


class Verdict(NamedTuple):
    reply: bytes | None
    destination: Destination | None
    record: DecisionRecord


# MessageType(value).name per packet costs an enum lookup; the names of the few valid types, once.
_MSG_NAMES: dict[int, str] = {m.value: m.name for m in MessageType}


def _msg_name(value: int | None) -> str | None:
    if value is None:
        return None
    return _MSG_NAMES.get(value) or str(value)


# Per-packet conversions of values that repeat (the same sources, subnets, servers): cached, bounded.
_CACHE_MAX = 4096
# source text → IPv4Address; "0.0.0.0" maps to the shared ZERO, which the pipeline tests with `is` first.
_ADDRESSES: dict[str, IPv4Address] = {"0.0.0.0": ZERO}
_TEXTS: dict[int, str] = {}  # int(IPv4Address) → dotted text
_NETWORKS: dict[int, tuple[IPv4Network, str]] = {}  # id(network) → (network, text); holds the object


def _address(text: str) -> IPv4Address:
    address = _ADDRESSES.get(text)
    if address is None:
        if len(_ADDRESSES) >= _CACHE_MAX:
            _ADDRESSES.clear()
            _ADDRESSES["0.0.0.0"] = ZERO
        address = _ADDRESSES[text] = IPv4Address(text)
    return address


def _ip_text(address: IPv4Address) -> str:
    key = int(address)
    text = _TEXTS.get(key)
    if text is None:
        if len(_TEXTS) >= _CACHE_MAX:
            _TEXTS.clear()
        text = _TEXTS[key] = str(address)
    return text


def _network_text(network: IPv4Network) -> str:
    entry = _NETWORKS.get(id(network))
    if entry is None or entry[0] is not network:
        if len(_NETWORKS) >= _CACHE_MAX:
            _NETWORKS.clear()
        entry = _NETWORKS[id(network)] = (network, str(network))
    return entry[1]


def _dest_text(destination: Destination) -> str:
    broadcast = " (broadcast)" if destination.broadcast else ""
    return f"{_ip_text(destination.address)}:{destination.port}{broadcast}"


def _client_subnet(client: ClientInfo, receiver: Receiver, settings: Settings) -> str | None:
    """The enabled subnet a client turned away by policy belongs to, for its record (None if none)."""
    address = client_address(client, receiver)
    subnet = None if address is ZERO or address == ZERO else settings.subnet_for(address)
    return None if subnet is None else _network_text(subnet.cidr)


def process_datagram(
    data: bytes,
    source: tuple[str, int],
    *,
    port: int,
    iface: str,
    receiver: Receiver,
    settings: Settings,
) -> Verdict:
    """The whole pipeline for one datagram, no I/O: the reply bytes and where they go, or None, and
    the record saying why. `port` is the logical listener (67 or 4011). Raises only on bugs."""
    src = f"{source[0]}:{source[1]}"
    try:
        request = DhcpPacket.decode(data)
    except MalformedPacket as exc:
        return Verdict(
            None, None, DecisionRecord(Outcome.MALFORMED, Stage.DECODE, port, iface, src, reason=str(exc))
        )
    source_ip = _address(source[0])
    client = classify(request, port=port, source_ip=source_ip)
    if isinstance(client, Ignore):
        record = DecisionRecord(
            Outcome.IGNORE, Stage.CLASSIFY, port, iface, src, request.mac, request.xid,
            _msg_name(request.message_type), reason=client.reason,
        )  # fmt: skip
        return Verdict(None, None, record)
    decision = decide(client, settings, receiver)
    if isinstance(decision, Ignore):
        record = DecisionRecord(
            Outcome.IGNORE, Stage.POLICY, port, iface, src, client.mac, client.xid,
            _msg_name(client.message_type), arch_name(client.arch) if client.arch is not None else None,
            _client_subnet(client, receiver, settings), decision.reason,
        )  # fmt: skip
        return Verdict(None, None, record)
    reply = build_reply(request, client, decision).encode()
    destination = (
        offer_destination(request)
        if client.port == DHCP_PORT
        else pxe_destination(request, source_ip, source[1])
    )
    # Positional: the keyword/dict form of this constructor cost as much as the policy decision.
    record = DecisionRecord(
        Outcome.ANSWER, Stage.SEND, port, iface, src, client.mac, client.xid, _msg_name(client.message_type),
        decision.arch_key, _network_text(decision.subnet), None, decision.boot_file,
        _ip_text(decision.next_server), _dest_text(destination), decision.rule,
    )  # fmt: skip
    return Verdict(reply, destination, record)


class DhcpEndpoint:
    """One bound socket: (interface, logical port), read straight by the event loop.

    No DatagramProtocol: the loop calls `readable` when the socket has data, and it drains up to
    RECV_BATCH datagrams with recvmsg until EAGAIN, so a storm costs one wakeup per batch, not per
    packet; replies go out on the same socket (so by the receiving interface). A send the kernel
    cannot take now (EAGAIN) waits in a bounded queue for writability.

    An interface may have several addresses: a request unicast to one of them (a 4011 REQUEST, a
    relay's helper address) is answered as that address, in option 54 and as the IP source (iPXE
    drops a ProxyDHCPACK whose 54 is not the server it asked). The socket's IP_PKTINFO tells each
    datagram's destination; broadcasts get the interface's primary address.
    """

    def __init__(
        self,
        service: ProxyDhcpService,
        iface: sockets.Interface,
        port: int,
        sock: socket.socket | None = None,
    ) -> None:
        self.service = service
        self.sock = sock
        self.port = port
        self.warnings = WarningLimiter(log)
        self.set_interface(iface)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[_Send] = collections.deque()
        self._held: list[_Send] | None = None  # replies of the batch being read

    def set_interface(self, iface: sockets.Interface) -> None:
        """(Re)learn the interface's primary address (at start, on reload)."""
        self.iface = iface
        self.receiver = _receiver(iface)
        self.default = Local(self.receiver, [])  # broadcasts: the primary address, the kernel's source
        self._locals: dict[bytes, Local] = {}  # IP_PKTINFO bytes → Local: the same few repeat

    def local_for(self, info: bytes) -> Local:
        """The Local of a datagram whose IP_PKTINFO data is `info` (memoised: one dict lookup a packet)."""
        local = self._locals.get(info)
        if local is not None:
            return local
        address = sockets.unicast_destination(info)
        if address is None:
            local = self.default
        else:
            network = self.iface.network
            receiver = (
                self.receiver
                if address == self.receiver.local_ip
                else Receiver(address, network if network is not None and address in network else None)
            )
            local = Local(receiver, sockets.pktinfo_source(address))
        if len(self._locals) >= _LOCALS_MAX:
            self._locals.clear()
        self._locals[info] = local
        return local

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.sock is not None
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self.readable)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
        self._backlog.clear()
        sock.close()

    @property
    def closed(self) -> bool:
        return self.sock is None

    def readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        recvmsg, handle, locals_, default = sock.recvmsg, self.service.handle, self._locals, self.default
        # Replies are held and sent together after the batch (or every SEND_BATCH): the first one
        # wakes the client, the rest find it awake, instead of a wakeup (and a preemption of this
        # process) per reply.
        held = self._held = []
        try:
            for _ in range(RECV_BATCH):
                try:
                    data, anc, _, addr = recvmsg(RECV_SIZE, ANC_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # a queued socket error (ICMP): not fatal, the next read goes on
                    self.warnings.warn(
                        ("receive", exc.errno), "%s:%d: receive failed: %s", self.iface.name, self.port, exc
                    )
                    continue
                if anc:
                    info = anc[0][2]
                    local = locals_.get(info) or self.local_for(info)
                else:
                    local = default  # no IP_PKTINFO (not enabled on this socket)
                handle(self, data, addr, local)
                if self.sock is None:  # closed by a stop from inside the batch
                    return
                if len(held) >= SEND_BATCH:
                    self._held = None
                    self._send_all(held)
                    held = self._held = []
        finally:
            self._held = None
            self._send_all(held)

    def _send_all(self, held: list[_Send]) -> None:
        for data, dest, ancillary in held:
            self.send(data, dest, ancillary)

    def send(self, data: bytes, dest: tuple[str, int], ancillary: Ancillary | None = None) -> None:
        """Send now (held until the end of the batch when called from one), or queue behind earlier
        sends the kernel could not take yet; `ancillary` (Local.ancillary) sets the source address.
        Never raises."""
        if self._held is not None:
            self._held.append((data, dest, ancillary))
            return
        sock = self.sock
        if sock is None:
            return
        if self._backlog:
            self._queue(data, dest, ancillary)
            return
        try:
            if ancillary:
                sock.sendmsg((data,), ancillary, 0, dest)
            else:
                sock.sendto(data, dest)
        except (BlockingIOError, InterruptedError):
            self._queue(data, dest, ancillary)
        except OSError as exc:
            self._send_failed(dest, exc)  # no route to a relay, an unreachable client: not fatal

    def _send_failed(self, dest: tuple[str, int], exc: OSError) -> None:
        self.warnings.warn(
            ("send", exc.errno), "%s:%d: send to %s:%d failed: %s", self.iface.name, self.port, *dest, exc
        )

    def _queue(self, data: bytes, dest: tuple[str, int], ancillary: Ancillary | None) -> None:
        if len(self._backlog) >= SEND_BACKLOG:
            self.warnings.warn(
                ("queue", 0),
                "%s:%d: send queue full, reply to %s:%d dropped",
                self.iface.name,
                self.port,
                *dest,
            )
            return
        if not self._backlog and self._loop is not None and self.sock is not None:
            self._loop.add_writer(self.sock.fileno(), self._writable)
        self._backlog.append((data, dest, ancillary))

    def _writable(self) -> None:
        sock, backlog = self.sock, self._backlog
        while sock is not None and backlog:
            data, dest, ancillary = backlog[0]
            try:
                if ancillary:
                    sock.sendmsg((data,), ancillary, 0, dest)
                else:
                    sock.sendto(data, dest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._send_failed(dest, exc)
            backlog.popleft()
        if sock is not None and self._loop is not None:
            self._loop.remove_writer(sock.fileno())


# Datagrams read per wakeup before the loop gets a turn (TFTP, signals, timers); a DHCP message
# fits in far less than RECV_SIZE (one Ethernet frame; 576 bytes is the minimum a client accepts).
RECV_BATCH = 128
SEND_BATCH = 16  # replies held at most while reading a batch: bounds the latency they add
RECV_SIZE = 65535
ANC_SIZE = socket.CMSG_SPACE(sockets.PKTINFO.size)  # room for one IP_PKTINFO per datagram
SEND_BACKLOG = 4096  # replies waiting for a full send buffer; past it they are dropped (clients retry)
_LOCALS_MAX = 256  # distinct IP_PKTINFO values remembered per endpoint
WARN_INTERVAL = 10.0  # seconds: at most one warning per endpoint, kind and errno in that time
_Send = tuple[bytes, tuple[str, int], "Ancillary | None"]


class WarningLimiter:
    """At most one warning per key every `interval` seconds, so a stream of ICMP errors or a dead
    route cannot flood the log; the next warning that gets through counts those suppressed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = WARN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}  # key → (time of the last warning, suppressed)

    def warn(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` at WARNING unless `key` was warned about less than `interval` ago (then
        count it). Returns whether it was logged."""
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is None and len(self._seen) >= 256:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            msg += " (%d more like it suppressed in the last %.0f s)"
            args = (*args, seen[1], now - seen[0])
        self.logger.warning(msg, *args)
        return True


def _receiver(iface: sockets.Interface) -> Receiver:
    assert iface.address is not None  # select_interfaces only returns interfaces with an address
    return Receiver(iface.address, iface.network)


class ProxyDhcpService:
    """The running service: its settings (swapped whole on reload), DHCP endpoints and TFTP server."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_file: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.overrides = dict(overrides or {})
        self.listeners: list[DhcpEndpoint] = []
        self.tftp: TftpServer | None = None
        self.serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_start: list[Callable[[tuple[str, int], str], None]] = []
        self.on_transfer: list[Callable[[TransferStats], None]] = []

    # -- packets ---------------------------------------------------------------------------------

    def handle(
        self, endpoint: DhcpEndpoint, data: bytes, source: tuple[str, int], local: Local | None = None
    ) -> None:
        """One datagram, start to finish; `local` is the address it was sent to (default: the
        interface's primary address). Never raises."""
        if not self.serving:
            return
        settings = self.settings  # one consistent snapshot even if SIGHUP swaps it meanwhile
        if local is None:
            local = endpoint.default
        try:
            verdict = process_datagram(
                data, source, port=endpoint.port, iface=endpoint.iface.name, receiver=local.receiver,
                settings=settings,
            )  # fmt: skip
            reply, destination, rec = verdict
            if reply is not None and destination is not None:
                dest = (_ip_text(destination.address), destination.port)
                delay = settings.server.reply_delay_ms
                if delay and endpoint.port == DHCP_PORT and self._loop is not None:
                    self._loop.call_later(
                        delay / 1000, self._send_later, endpoint, reply, dest, local.ancillary
                    )
                    rec = dataclasses.replace(rec, delay_ms=delay)
                else:
                    endpoint.send(reply, dest, local.ancillary)
        except Exception as exc:
            rec = DecisionRecord(
                Outcome.ERROR,
                Stage.POLICY,
                port=endpoint.port,
                iface=endpoint.iface.name,
                source=f"{source[0]}:{source[1]}",
                reason=f"internal error: {type(exc).__name__}: {exc}",
            )
            events.record(rec, exc_info=exc)
            return
        events.record(rec)

    def _send_later(
        self, endpoint: DhcpEndpoint, reply: bytes, dest: tuple[str, int], ancillary: Ancillary
    ) -> None:
        if self.serving:
            endpoint.send(reply, dest, ancillary)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every socket (raises StartupError with a one-line reason) and start TFTP."""
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        try:
            chosen = sockets.select_interfaces(
                sockets.interfaces(), settings.server.interfaces, [s.cidr for s in settings.subnet]
            )
        except sockets.InterfaceError as exc:
            raise StartupError(str(exc)) from None
        ports = [(PXE_PORT, settings.server.pxe_port, "pxe")]
        if not settings.server.colocated:
            ports.insert(0, (DHCP_PORT, settings.server.dhcp_port, "dhcp"))
        opened: list[tuple[sockets.Interface, int, socket.socket]] = []
        try:
            for logical, number, role in ports:
                for iface in chosen:
                    try:
                        opened.append((iface, logical, sockets.open_udp(number, iface.name, pktinfo=True)))
                    except OSError as exc:
                        raise StartupError(sockets.bind_error_message(exc, number, role)) from None
            for iface, logical, sock in opened:
                endpoint = DhcpEndpoint(self, iface, logical, sock)
                self.listeners.append(endpoint)
                endpoint.open(self._loop)
        except BaseException:
            for _, _, sock in opened:
                sock.close()
            self._close_listeners()
            raise
        try:
            await self._start_tftp(settings)
        except BaseException:
            self._close_listeners()
            raise
        self.serving = True
        names = ", ".join(f"{i.name} ({i.address})" for i in chosen)
        bound = "/".join(str(n) for _, n, _ in ports)
        mode = " (co-located: 4011 only)" if settings.server.colocated else ""
        fields = {"interfaces": [i.name for i in chosen], "subnets": [str(s.cidr) for s in settings.subnet]}
        log.info("serving proxyDHCP on %s, UDP %s%s", names, bound, mode, extra={"fields": fields})
        if not settings.subnet:
            log.warning(
                "no subnet is enabled, so no client will be answered; add --subnet CIDR or [[subnet]]"
            )

    async def _start_tftp(self, settings: Settings) -> None:
        if not settings.tftp.enabled:
            log.info("TFTP is off (--no-tftp / tftp.enabled = false)")
            return
        cfg = settings.tftp
        if cfg.root is None:
            log.info("TFTP is off: no --tftp-root / tftp.root given; serving proxyDHCP only")
            return
        if not cfg.root.is_dir():
            raise StartupError(f"tftp.root: not a directory: {cfg.root}")
        server = TftpServer(
            tftp_config(cfg, cfg.root), on_transfer=self._transfer_done, on_start=self._transfer_started
        )
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(sockets.bind_error_message(exc, cfg.port, "tftp")) from None
        self.tftp = server

    def _transfer_started(self, client: tuple[str, int], filename: str) -> None:
        for callback in self.on_start:
            callback(client, filename)

    def _transfer_done(self, stats: TransferStats) -> None:
        for callback in self.on_transfer:
            callback(stats)

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop answering DHCP at once; let TFTP transfers in flight finish within `grace` seconds."""
        was_serving, self.serving = self.serving, False
        self._close_listeners()
        if self.tftp is not None:
            active = self.tftp.active
            if active:
                log.info("waiting up to %.0f s for %d TFTP transfer(s) in flight", grace, active)
            await self.tftp.close(grace=grace)
            self.tftp = None
        if was_serving:
            log.info("stopped")

    def reload(self) -> bool:
        """Re-read the configuration the service started with and swap it in; an invalid one is
        refused and the running one stays. Returns whether the new one took effect."""
        try:
            new = load_settings(self.config_file, self.overrides)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        old_dump, new_dump = self.settings.model_dump(), new.model_dump()
        for key in _RESTART_KEYS:
            section, _, name = key.partition(".")
            before = old_dump[section].get(name) if name else old_dump[section]
            after = new_dump[section].get(name) if name else new_dump[section]
            if before != after:
                log.warning("reload: %s changed; it takes effect only after a restart", key)
        # Addresses may have changed since start (DHCP renumbering): re-read those of our interfaces.
        with contextlib.suppress(OSError):
            current = {i.name: i for i in sockets.interfaces()}
            for listener in self.listeners:
                fresh = current.get(listener.iface.name)
                if fresh is not None and fresh.address is not None:
                    listener.set_interface(fresh)
        if new.log != self.settings.log:
            setup_logging(new.log.format, new.log.level)
        self.settings = new  # one reference swap: a packet sees the old or the new settings, never a mix
        log.info(
            "configuration reloaded: %d subnet(s), %d host(s)",
            len(new.subnet),
            len(new.host),
            extra={"fields": {"subnets": [str(s.cidr) for s in new.subnet]}},
        )
        return True


def tftp_config(cfg: TftpSettings, root: Path) -> TftpConfig:
    """`[tftp]` settings → the TFTP package's own config (it imports nothing from config.py).
    Every TftpSettings field but `enabled` and `root` (checked by the caller) maps to one here;
    `cache_bytes` keeps TftpConfig's default."""
    return TftpConfig(
        root=root,
        address=str(cfg.address),
        port=cfg.port,
        max_blksize=cfg.max_blksize,
        max_windowsize=cfg.max_windowsize,
        max_transfers=cfg.max_transfers,
        max_transfers_per_client=cfg.max_transfers_per_client,
        timeout=cfg.timeout,
        give_up=cfg.give_up,
    )


def _tftp_outcome(outcome: str) -> str:
    """TFTP's free-text outcome → the metrics vocabulary: "completed", "probe" (Metrics counts it
    apart, R-62) or one of metrics.TFTP_FAILURES."""
    if outcome in ("completed", "probe"):
        return outcome
    for word, label in (
        ("timeout", "timeout"),
        ("timed out", "timeout"),
        ("client", "client_error"),
        ("file", "file_error"),
        ("refused", "refused"),
        ("shutting down", "aborted"),
    ):
        if word in outcome:
            return label
    return outcome


def tftp_metrics_hooks(
    registry: Metrics,
) -> tuple[Callable[[tuple[str, int], str], None], Callable[[TransferStats], None]]:
    """The (on_start, on_transfer) pair that feeds TFTP transfers into `registry`."""

    def started(client: tuple[str, int], filename: str) -> None:
        registry.tftp_started()

    def finished(st: TransferStats) -> None:
        registry.tftp_finished(st.bytes, st.retransmits, st.duration, _tftp_outcome(st.outcome))

    return started, finished


def _start_metrics(settings: Settings, service: ProxyDhcpService) -> None:
    """Serve Prometheus metrics when `metrics.listen` is set; decision records and TFTP transfer
    stats feed them. Raises StartupError on a bad address or a busy port."""
    if not settings.metrics.listen:
        return
    from proxydhcp import metrics

    try:
        registry = metrics.start(settings.metrics.listen)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"metrics.listen {settings.metrics.listen}: cannot bind: {exc.strerror}") from None
    events.add_sink(metrics.observe_decision)
    registry.set_active_transfers(lambda: service.tftp.active if service.tftp is not None else 0)
    on_start, on_transfer = tftp_metrics_hooks(registry)
    service.on_start.append(on_start)
    service.on_transfer.append(on_transfer)
    log.info("metrics on http://%s/metrics", settings.metrics.listen)


async def serve(settings: Settings, config_file: Path | None, overrides: Mapping[str, Any] | None) -> int:
    service = ProxyDhcpService(settings, config_file=config_file, overrides=overrides)
    try:
        _start_metrics(settings, service)  # before start(), so TFTP's first transfer is counted
        await service.start()
    except StartupError as exc:
        print(f"proxydhcp: {exc}", file=sys.stderr, flush=True)
        await service.stop(grace=0)
        return 2
    if settings.server.user:
        try:
            who = drop_privileges(settings.server.user)
        except PrivilegeError as exc:
            print(f"proxydhcp: {exc}", file=sys.stderr, flush=True)
            await service.stop(grace=0)
            return 2
        log.info("dropped privileges to %s (uid %d, gid %d)", who.user, who.uid, who.gid)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_stop(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s: stopping", signal.Signals(signum).name)
            stop.set()
        elif service.tftp is not None:
            log.info("%s again: not waiting for transfers", signal.Signals(signum).name)
            for task in asyncio.all_tasks(loop):
                if task.get_name() == "proxydhcp-stop":
                    task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    try:
        await stop.wait()
        stopper = asyncio.create_task(service.stop(), name="proxydhcp-stop")
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return 0


def run_service(
    settings: Settings, config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> int:
    """Entry point of `proxydhcp serve`: runs until SIGTERM/SIGINT; returns the exit code."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(serve(settings, config_file, overrides))
    finally:
        flush_logs()  # lines batched for a loop iteration that will not come
