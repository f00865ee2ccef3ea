"""`proxydhcp serve`: asyncio endpoints on ports 67 and 4011 per interface, TFTP, signals, lifecycle.

Each datagram runs the pure pipeline synchronously inside `datagram_received` (decode → classify →
decide → build_reply → delivery → sendto): no task per packet and no per-client state, so a boot
storm costs one short function call per DISCOVER. Nothing in that path raises into the loop: every
exit is one `events.DecisionRecord`.

Signals: SIGTERM/SIGINT stop answering DHCP and give TFTP transfers in flight a grace period;
SIGHUP reloads the configuration (the same file and flags as at start) and swaps it atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from proxydhcp import events, sockets
from proxydhcp.config import Settings, TftpSettings, load_settings
from proxydhcp.dhcp.arch import arch_name
from proxydhcp.dhcp.delivery import Destination, offer_destination, pxe_destination
from proxydhcp.dhcp.packet import DhcpPacket, MessageType
from proxydhcp.errors import ConfigError, MalformedPacket
from proxydhcp.events import DecisionRecord, Outcome, Stage
from proxydhcp.log import setup_logging
from proxydhcp.privileges import PrivilegeError, drop_privileges
from proxydhcp.pxe.classify import DHCP_PORT, PXE_PORT, ClientInfo, Ignore, classify
from proxydhcp.pxe.policy import Receiver, decide
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


class Verdict(NamedTuple):
    reply: bytes | None
    destination: Destination | None
    record: DecisionRecord


def _msg_name(value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return MessageType(value).name
    except ValueError:
        return str(value)


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
    base: dict[str, Any] = {"port": port, "iface": iface, "source": src}
    try:
        request = DhcpPacket.decode(data)
    except MalformedPacket as exc:
        return Verdict(None, None, DecisionRecord(Outcome.MALFORMED, Stage.DECODE, reason=str(exc), **base))
    base.update(mac=request.mac, xid=request.xid, msg_type=_msg_name(request.message_type))
    source_ip = IPv4Address(source[0])
    client = classify(request, port=port, source_ip=source_ip)
    if isinstance(client, Ignore):
        return Verdict(
            None, None, DecisionRecord(Outcome.IGNORE, Stage.CLASSIFY, reason=client.reason, **base)
        )
    base["arch"] = arch_name(client.arch) if client.arch is not None else None
    decision = decide(client, settings, receiver)
    if isinstance(decision, Ignore):
        return Verdict(
            None, None, DecisionRecord(Outcome.IGNORE, Stage.POLICY, reason=decision.reason, **base)
        )
    reply = build_reply(request, client, decision).encode()
    destination = _destination(request, client, source_ip, source[1])
    record = DecisionRecord(
        Outcome.ANSWER,
        Stage.SEND,
        subnet=str(decision.subnet),
        boot_file=decision.boot_file,
        server=str(decision.next_server),
        destination=str(destination),
        rule=decision.rule,
        **{**base, "arch": decision.arch_key},
    )
    return Verdict(reply, destination, record)


def _destination(
    request: DhcpPacket, client: ClientInfo, source_ip: IPv4Address, source_port: int
) -> Destination:
    if client.port == DHCP_PORT:
        return offer_destination(request)
    return pxe_destination(request, source_ip, source_port)


class DhcpEndpoint(asyncio.DatagramProtocol):
    """One bound socket: (interface, logical port). Hands every datagram to the service."""

    def __init__(self, service: ProxyDhcpService, iface: sockets.Interface, port: int) -> None:
        self.service = service
        self.iface = iface
        self.port = port
        self.receiver = _receiver(iface)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport quacks like asyncio.DatagramTransport without subclassing it.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.service.handle(self, data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # A send that failed (no route to a relay, ICMP unreachable from a gone client): not fatal.
        log.warning("%s:%d: send failed: %s", self.iface.name, self.port, exc)


def _same(endpoint: DhcpEndpoint) -> DhcpEndpoint:
    return endpoint


def _receiver(iface: sockets.Interface) -> Receiver:
    assert iface.address is not None  # select_interfaces only returns interfaces with an address
    return Receiver(iface.address, iface.network)


@dataclasses.dataclass
class _Listener:
    endpoint: DhcpEndpoint
    transport: asyncio.DatagramTransport


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
        self.listeners: list[_Listener] = []
        self.tftp: TftpServer | None = None
        self.serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_start: list[Callable[[tuple[str, int], str], None]] = []
        self.on_transfer: list[Callable[[TransferStats], None]] = []

    # -- packets ---------------------------------------------------------------------------------

    def handle(self, endpoint: DhcpEndpoint, data: bytes, source: tuple[str, int]) -> None:
        """One datagram, start to finish. Never raises."""
        if not self.serving:
            return
        settings = self.settings  # one consistent snapshot even if SIGHUP swaps it meanwhile
        try:
            verdict = process_datagram(
                data,
                source,
                port=endpoint.port,
                iface=endpoint.iface.name,
                receiver=endpoint.receiver,
                settings=settings,
            )
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
        if verdict.reply is not None and verdict.destination is not None and endpoint.transport is not None:
            dest = (str(verdict.destination.address), verdict.destination.port)
            delay = settings.server.reply_delay_ms
            if delay and endpoint.port == DHCP_PORT and self._loop is not None:
                self._loop.call_later(delay / 1000, self._send_later, endpoint, verdict.reply, dest)
                events.record(dataclasses.replace(verdict.record, delay_ms=delay))
                return
            endpoint.transport.sendto(verdict.reply, dest)
        events.record(verdict.record)

    def _send_later(self, endpoint: DhcpEndpoint, reply: bytes, dest: tuple[str, int]) -> None:
        if self.serving and endpoint.transport is not None and not endpoint.transport.is_closing():
            endpoint.transport.sendto(reply, dest)

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
                        opened.append((iface, logical, sockets.open_udp(number, iface.name)))
                    except OSError as exc:
                        raise StartupError(sockets.bind_error_message(exc, number, role)) from None
            for iface, logical, sock in opened:
                endpoint = DhcpEndpoint(self, iface, logical)
                transport, _ = await self._loop.create_datagram_endpoint(
                    functools.partial(_same, endpoint), sock=sock
                )
                self.listeners.append(_Listener(endpoint, transport))
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
            listener.transport.close()
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
                fresh = current.get(listener.endpoint.iface.name)
                if fresh is not None and fresh.address is not None:
                    listener.endpoint.iface = fresh
                    listener.endpoint.receiver = _receiver(fresh)
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
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(settings, config_file, overrides))
