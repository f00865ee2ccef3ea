"""Prometheus metrics (`--metrics ADDR:PORT`, `[metrics] listen`), in a registry of their own.

A registry per `Metrics` object (not prometheus_client's global one) keeps tests and SIGHUP reloads
independent. Every label value passes through a fixed vocabulary first: a reason string carries MACs,
subnets and option lengths, and one series per MAC would let any host on the segment grow the
server's memory and the scrape without bound: reasons and transfer outcomes are labelled by their
enum member's label, never by their text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from proxydhcp import __version__
from proxydhcp.config import parse_listen
from proxydhcp.dhcp.arch import ARCH_NAMES
from proxydhcp.events import DecisionRecord
from proxydhcp.outcome import Outcome, Reason, TransferOutcome

OTHER = "other"
PORTS = frozenset({"67", "4011", "547"})  # 547: the DHCPv6 proxy (service6); its 4011 shares "4011"
MESSAGE_TYPES = frozenset(
    {"DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM", "none"}
    | {"SOLICIT", "INFORMATION_REQUEST", "RENEW", "REBIND", "CONFIRM", "RELAY_FORW"}  # DHCPv6 (RFC 8415)
)
OUTCOMES = frozenset({"answered", "ignored", "malformed", "error"})
ARCHES = frozenset(ARCH_NAMES.values()) | {"ipxe"}
# The label vocabularies: every value a record or a transfer can produce, and "other".
REASONS = frozenset(reason.label for reason in Reason) | {OTHER}
TFTP_FAILURES = frozenset(outcome.label for outcome in TransferOutcome if outcome.failed)


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def _arch_label(arch: str) -> str:
    key = arch.strip().lower()
    if key.isdigit():
        key = ARCH_NAMES.get(int(key), key)
    return _bounded(key, ARCHES)


_MESSAGE_TYPE_NUMBERS = ("none", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM")


def _message_type_label(message_type: str) -> str:
    """Accepts "DISCOVER", "DHCPDISCOVER", "MessageType.DISCOVER" or "1" (str() of the IntEnum)."""
    key = message_type.strip().upper().removeprefix("MESSAGETYPE.").removeprefix("DHCP")
    if key.isdigit():
        number = int(key)
        key = _MESSAGE_TYPE_NUMBERS[number] if number < len(_MESSAGE_TYPE_NUMBERS) else OTHER
    return "none" if not key or key == "NONE" else _bounded(key, MESSAGE_TYPES)


class Metrics:
    """The service's counters; one instance per process, shared by the DHCP and TFTP sides."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("proxydhcp_build", "Version of the running proxydhcp.", registry=r).info(
            {"version": __version__}
        )
        self._packets = Counter(
            "proxydhcp_dhcp_packets",
            "DHCP packets received, by listener port, message type, outcome and (when not answered) reason.",
            ["port", "message_type", "outcome", "reason"],
            registry=r,
        )
        self._offers = Counter(
            "proxydhcp_offers", "Proxy offers sent on port 67, by client architecture.", ["arch"], registry=r
        )
        self._acks = Counter(
            "proxydhcp_pxe_acks", "DHCPACKs sent on port 4011, by client architecture.", ["arch"], registry=r
        )
        self._tftp_started = Counter(
            "proxydhcp_tftp_transfers_started", "TFTP transfers started.", registry=r
        )
        self._tftp_completed = Counter(
            "proxydhcp_tftp_transfers_completed", "TFTP transfers acknowledged to the last block.", registry=r
        )
        self._tftp_failed = Counter(
            "proxydhcp_tftp_transfers_failed",
            "TFTP transfers that did not complete, by reason.",
            ["reason"],
            registry=r,
        )
        self._tftp_probes = Counter(
            "proxydhcp_tftp_size_probes",
            "Transfers the client ended after the OACK to learn the file size (normal for UEFI).",
            registry=r,
        )
        self._tftp_bytes = Counter(
            "proxydhcp_tftp_sent_bytes", "File bytes sent by finished TFTP transfers.", registry=r
        )
        self._tftp_retransmits = Counter(
            "proxydhcp_tftp_retransmits", "TFTP packets sent again after a timeout.", registry=r
        )
        self._tftp_duration = Histogram(
            "proxydhcp_tftp_transfer_duration_seconds",
            "Duration of finished TFTP transfers.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self._tftp_active = Gauge(
            "proxydhcp_tftp_active_transfers", "TFTP transfers in progress.", registry=r
        )
        self._memo_hits: Callable[[], int] = lambda: 0
        r.register(
            _ScrapedCounter(
                "proxydhcp_reply_memo_hits",
                "DHCP requests answered from the reply memo (the answer to an earlier request of the same "
                "shape, the client's own identity patched in) instead of the whole pipeline.",
                lambda: self._memo_hits(),
            )
        )
        self._server: Any = None
        # Label children by the record values that chose them: .labels() per packet costs more than
        # the rest of the observation. Bounded by the label vocabularies (and a cap, for safety).
        self._packet_children: dict[tuple[Any, ...], Any] = {}
        self._arch_children: dict[tuple[bool, str], Any] = {}

    def observe(self, rec: DecisionRecord) -> None:
        """One decision record → the packet counter, and an offer (67) or ACK (4011) by architecture."""
        outcome = _OUTCOME_LABELS.get(rec.outcome, OTHER)
        answered = outcome == "answered"
        reason = "" if answered or rec.reason is None else rec.reason.label
        key = (rec.port, rec.msg_type, outcome, reason)
        child = self._packet_children.get(key)
        if child is None:
            child = self._packets.labels(
                port=_bounded(str(rec.port), PORTS),
                message_type=_message_type_label(rec.msg_type or "none"),
                outcome=outcome,
                reason=reason,
            )
            if len(self._packet_children) < _CHILDREN_MAX:
                self._packet_children[key] = child
        child.inc()
        if answered:
            arch_key = (rec.port == 4011, rec.arch or OTHER)
            child = self._arch_children.get(arch_key)
            if child is None:
                family = self._acks if arch_key[0] else self._offers
                child = family.labels(arch=_arch_label(arch_key[1]))
                if len(self._arch_children) < _CHILDREN_MAX:
                    self._arch_children[arch_key] = child
            child.inc()

    def dhcp_packet(self, port: str, message_type: str, outcome: str, reason: Reason | None = None) -> None:
        """One received DHCP datagram and what became of it ("answered", "ignored" or "malformed")."""
        outcome = _bounded(outcome, OUTCOMES)
        self._packets.labels(
            port=_bounded(str(port), PORTS),
            message_type=_message_type_label(message_type),
            outcome=outcome,
            reason="" if outcome == "answered" else (reason.label if reason is not None else OTHER),
        ).inc()

    def offer(self, arch: str) -> None:
        self._offers.labels(arch=_arch_label(arch)).inc()

    def ack(self, arch: str) -> None:
        self._acks.labels(arch=_arch_label(arch)).inc()

    def tftp_started(self) -> None:
        self._tftp_started.inc()

    def tftp_finished(self, bytes: int, retransmits: int, duration: float, outcome: TransferOutcome) -> None:
        """One transfer's end: completed, a size probe (counted apart, R-62) or a failure by label."""
        self._tftp_bytes.inc(max(bytes, 0))
        self._tftp_retransmits.inc(max(retransmits, 0))
        if outcome is TransferOutcome.PROBE:
            self._tftp_probes.inc()
            return
        if outcome is TransferOutcome.COMPLETED:
            self._tftp_completed.inc()
        else:
            self._tftp_failed.labels(reason=outcome.label).inc()
        self._tftp_duration.observe(max(duration, 0.0))

    def set_active_transfers(self, count: Callable[[], int]) -> None:
        """Read the number of active transfers at scrape time (no bookkeeping to get out of step)."""
        self._tftp_active.set_function(lambda: float(count()))

    def set_memo_hits(self, count: Callable[[], int]) -> None:
        """Read the reply memo's hits at scrape time: the hot path counts nothing for metrics."""
        self._memo_hits = count

    def start_http(self, listen: str) -> None:
        """Serve /metrics on `listen` (ADDR:PORT) from a daemon thread. Raises ConfigError or OSError."""
        address, port = parse_listen(listen)
        result = start_http_server(port, addr=address, registry=self.registry)
        self._server = result[0] if isinstance(result, tuple) else result

    @property
    def http_address(self) -> tuple[str, int] | None:
        """(address, port) the endpoint is bound to, once started (useful with port 0)."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop_http(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ScrapedCounter(Collector):
    """A counter whose value a function gives at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self._name, self._documentation)]

    def collect(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self._name, self._documentation, value=float(self._read()))]


_CHILDREN_MAX = 4096

# The process-wide instance `serve/service.py` wires up (`start` + `observe_decision` as an events sink).
_current: Metrics | None = None
_OUTCOME_LABELS = {
    Outcome.ANSWER: "answered",
    Outcome.IGNORE: "ignored",
    Outcome.MALFORMED: "malformed",
    Outcome.ERROR: "error",
}


def start(listen: str) -> Metrics:
    """Create the process's Metrics and serve them on `listen`; a second call returns the first."""
    global _current
    if _current is None:
        metrics = Metrics()
        metrics.start_http(listen)
        _current = metrics
    return _current


def current() -> Metrics | None:
    """The process's Metrics once `start` ran (TFTP reports transfers through it), else None."""
    return _current


def observe_decision(rec: DecisionRecord, metrics: Metrics | None = None) -> None:
    """An `events` sink: one decision record → the packet counter, and an offer (67) or ACK (4011)."""
    target = metrics or _current
    if target is not None:
        target.observe(rec)
