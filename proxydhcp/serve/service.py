"""`proxydhcp serve`: the service on ports 67 and 4011 per interface, TFTP, metrics, signals, lifecycle.

Each datagram runs the pure pipeline (`pxe.pipeline.run`: decode → classify → decide → build_reply →
delivery) synchronously in its endpoint's read callback (`serve.endpoint.DhcpEndpoint`), then goes
out with sendto: no task per packet and no per-client state, and a wakeup drains a batch of
datagrams, so a boot storm costs one short function call per DISCOVER. A request shaped like one
already answered (the identical machines of a boot storm) gets that answer from `serve.memo.ReplyMemo`,
with its own identity patched in, at half the cost. Nothing in that path raises into the loop:
every exit is one `events.DecisionRecord`.

Signals: SIGTERM/SIGINT stop answering DHCP and give TFTP transfers in flight a grace period;
SIGHUP reloads the configuration (the same file and flags as at start) and swaps it atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxydhcp import eventloop, events, httpboot
from proxydhcp.config import Settings, load_settings
from proxydhcp.dhcp.delivery import dotted
from proxydhcp.errors import ConfigError, ProxyDhcpError
from proxydhcp.log import emit_fast, flush_logs, setup_logging
from proxydhcp.pxe import pipeline
from proxydhcp.pxe.classify import DHCP_PORT, PXE_PORT
from proxydhcp.pxe.pipeline import Answered
from proxydhcp.serve import sockets
from proxydhcp.serve.endpoint import Ancillary, DhcpEndpoint, Local
from proxydhcp.serve.memo import ReplyMemo
from proxydhcp.serve.privileges import PrivilegeError, drop_privileges
from proxydhcp.serve.service6 import Dhcp6Service, ipv6_prefixes
from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.endpoint import TransferStats
from proxydhcp.tftp.server import TftpServer

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
    "http",
)


class StartupError(ProxyDhcpError):
    """The service cannot start; the message is one line for the admin. Exit code 2."""


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
        self.dhcp6: Dhcp6Service | None = None
        self.serving = False
        self.memo = ReplyMemo(settings) if settings.server.reply_memo else None
        self._memo_hits_before = 0  # hits of the memos earlier reloads replaced
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_start: list[Callable[[tuple[str, int], str], None]] = []
        self.on_transfer: list[Callable[[TransferStats], None]] = []
        self.http: Any = None  # http.server.HttpServer when [http] serves (httpboot.start_http)
        self.on_request: list[Callable[[Any], None]] = []  # HTTP RequestStats

    @property
    def memo_hits(self) -> int:
        """Requests answered from the reply memo since the start, across reloads."""
        return self._memo_hits_before + (self.memo.hits if self.memo is not None else 0)

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
        port, iface, receiver = endpoint.port, endpoint.iface.name, local.receiver
        try:
            memo = self.memo
            if memo is not None and memo.settings is not settings:  # reloaded: what was learned may not hold
                self._memo_hits_before += memo.hits
                memo = self.memo = ReplyMemo(settings) if settings.server.reply_memo else None
            # A request shaped like one already answered (a boot storm of identical machines) gets
            # that answer with its own xid, MAC, UUID and address patched in; else the pipeline.
            hit = None if memo is None else memo.answer(data, source, port, iface, receiver)
            reply: bytes | None = None
            dest: tuple[str, int] | None = None
            if hit is not None:
                reply, dest, rec = hit
            else:
                result = pipeline.run(
                    data,
                    port=port,
                    source=(endpoint.address(source[0]), source[1]),
                    receiver=receiver,
                    settings=settings,
                )
                if isinstance(result, Answered):
                    # The destination address as text once, for sendto and the record.
                    dest = (dotted(result.destination.address), result.destination.port)
                    rec = pipeline.record(
                        result, port=port, iface=iface, source=f"{source[0]}:{source[1]}", destination=dest[0]
                    )
                    reply = result.reply.encode()
                    if memo is not None and not memo.skipping:  # skipping: learn would return at once
                        memo.learn(data, source, port, iface, receiver, result, reply, rec)
                else:
                    rec = pipeline.record(result, port=port, iface=iface, source=f"{source[0]}:{source[1]}")
            if reply is not None and dest is not None:
                delay = settings.lookup.reply_delay_ms  # one pydantic attribute read, not two
                if delay and port == DHCP_PORT and self._loop is not None:
                    self._loop.call_later(
                        delay / 1000, self._send_later, endpoint, reply, dest, local.ancillary
                    )
                    rec = rec._replace(delay_ms=delay)
                else:
                    endpoint.send(reply, dest, local.ancillary)
        except Exception as exc:
            events.record_error(port=port, iface=iface, source=f"{source[0]}:{source[1]}", exc=exc)
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
        if not settings.subnet:
            # Nothing would ever be answered: say so instead of listening on every interface.
            raise StartupError(
                "no subnet is enabled, so no client would be answered: add --subnet CIDR"
                ' (e.g. --subnet 192.168.1.0/24) or a [[subnet]] table with cidr = "..." to the config'
            )
        v4_nets = [s.cidr for s in settings.subnet if isinstance(s.cidr, IPv4Network)]
        try:
            # IPv6 prefixes only: no IPv4 listener (service6 serves them).
            chosen = (
                sockets.select_interfaces(sockets.interfaces(), settings.server.interfaces, v4_nets)
                if v4_nets
                else []
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
            self._start_dhcp6(settings)
            await self._start_tftp(settings)
            self.http = await httpboot.start_http(settings, self._http_request)
        except httpboot.HttpStartError as exc:
            self._close_listeners()
            raise StartupError(str(exc)) from None
        except BaseException:
            self._close_listeners()
            raise
        self.serving = True
        names = ", ".join(f"{i.name} ({i.address})" for i in chosen)
        bound = "/".join(str(n) for _, n, _ in ports)
        mode = " (co-located: 4011 only)" if settings.server.colocated else ""
        fields = {"interfaces": [i.name for i in chosen], "subnets": [str(s.cidr) for s in settings.subnet]}
        if chosen:  # none when only IPv6 prefixes are enabled (service6 said what it serves)
            log.info("serving proxyDHCP on %s, UDP %s%s", names, bound, mode, extra={"fields": fields})

    def _start_dhcp6(self, settings: Settings) -> None:
        """The DHCPv6 proxy (service6), when an IPv6 prefix is enabled."""
        if not ipv6_prefixes(settings):
            return
        assert self._loop is not None
        dhcp6 = Dhcp6Service(lambda: self.settings, lambda: self.serving)
        try:
            chosen = dhcp6.start(self._loop, settings)
        except sockets.InterfaceError as exc:
            raise StartupError(f"DHCPv6: {exc}") from None
        except OSError as exc:
            raise StartupError(
                "DHCPv6: " + sockets.bind_error_message(exc, settings.server.dhcp6_port, "dhcp")
            ) from None
        self.dhcp6 = dhcp6
        names = ", ".join(i.name for i in chosen)
        log.info("serving DHCPv6 proxy on %s, UDP %d/%d, DUID %s", names, settings.server.dhcp6_port,
                 settings.server.pxe_port, dhcp6.duid.hex())  # fmt: skip

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
        root = cfg.root
        if ipv6_prefixes(settings) and cfg.address == IPv4Address(0):
            cfg = cfg.model_copy(update={"address": IPv6Address(0)})  # dual stack: IPv6 clients too
        server = TftpServer(
            TftpConfig.from_settings(cfg, root),
            on_transfer=self._transfer_done,
            on_start=self._transfer_started,
            emit=emit_fast,
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

    def _http_request(self, stats: Any) -> None:
        for callback in self.on_request:
            callback(stats)

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        if self.dhcp6 is not None:
            self.dhcp6.close()
            self.dhcp6 = None

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
        if self.http is not None:
            await self.http.close(grace=min(grace, 2.0))
            self.http = None
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
        if not new.subnet:
            log.error("reload refused, keeping the running configuration: the new one enables no subnet")
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
            if self.dhcp6 is not None:
                self.dhcp6.refresh()
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


def tftp_metrics_hooks(
    registry: Metrics,
) -> tuple[Callable[[tuple[str, int], str], None], Callable[[TransferStats], None]]:
    """The (on_start, on_transfer) pair that feeds TFTP transfers into `registry`."""

    def started(client: tuple[str, int], filename: str) -> None:
        registry.tftp_started()

    def finished(st: TransferStats) -> None:
        registry.tftp_finished(st.bytes, st.retransmits, st.duration, st.outcome)

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
    registry.set_memo_hits(lambda: service.memo_hits)
    on_start, on_transfer = tftp_metrics_hooks(registry)
    service.on_start.append(on_start)
    service.on_transfer.append(on_transfer)
    http_metrics = httpboot.HttpMetrics(registry.registry, lambda: service.http.active if service.http else 0)
    service.on_request.append(http_metrics.observe)
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
        return eventloop.run(serve(settings, config_file, overrides))
    finally:
        flush_logs()  # lines batched for a loop iteration that will not come
