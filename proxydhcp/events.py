"""One decision record per DHCP packet: what came in, and what was answered or why nothing was.

`pxe/pipeline.py` builds a `DecisionRecord` for every datagram and `serve/service.py` passes it to
`record()`, which writes one log line (logger `proxydhcp.dhcp`; with `--log-format json` one JSON object, the
record's fields as keys), bumps the in-process counters and hands it to the registered sinks
(Prometheus metrics, tests). Nothing here keeps per-client state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

from proxydhcp.dhcp.arch import arch_name
from proxydhcp.log import emit_fast, is_bare, text_pairs, text_value
from proxydhcp.outcome import Outcome, Reason, Stage

# The members every answered record names, read once: on Python 3.11 an enum class's attribute goes
# through its metaclass's __getattr__ hook, a module global is one cached load.
_OUTCOME_ANSWER, _STAGE_SEND = Outcome.ANSWER, Stage.SEND

log = logging.getLogger("proxydhcp.dhcp")


class DecisionRecord(NamedTuple):
    """One packet's decision: an immutable value, built by keyword. A NamedTuple rather than a frozen
    dataclass: every packet builds one, and this is a third of the cost (`_replace` varies a field)."""

    outcome: Outcome
    stage: Stage
    port: int  # the logical port: 67 or 4011
    iface: str
    source: str  # ip:port the datagram came from
    mac: str | None = None
    xid: int | None = None
    msg_type: str | None = None
    arch: str | None = None
    subnet: str | None = None
    reason: Reason | None = None  # why there is no reply (None: answered)
    detail: str = ""  # what the reason's log text names (a MAC, an architecture, the codec's message)
    boot_file: str | None = None
    server: str | None = None
    destination: str | None = None
    rule: str | None = None
    delay_ms: int | None = None

    @property
    def level(self) -> int:
        """Answers at info; every other level is the reason's own (`outcome.Reason`)."""
        return logging.INFO if self.reason is None else self.reason.level

    @property
    def reason_text(self) -> str | None:
        return None if self.reason is None else self.reason.describe(self.detail)

    def message(self) -> str:
        """The human part of the line; the fields carry the details (the text format appends them)."""
        what = self.msg_type or "packet"
        if self.outcome is _OUTCOME_ANSWER:
            return f"answered {what}: {self.boot_file}"
        return f"{self.outcome.value} {what}: {self.reason_text}"

    def fields(self) -> dict[str, Any]:
        """The structured fields of the log line (None values left out), in declaration order."""
        out = {k: v for k, v in zip(_FIELD_NAMES, _get_fields(self), strict=True) if v is not None}
        out["outcome"] = self.outcome.value
        out["stage"] = self.stage.value
        del out["detail"]
        if self.reason is not None:
            out["reason"] = self.reason_text
        if self.xid is not None:
            out["xid"] = f"0x{self.xid:08x}"
        return out

    def text_fields(self) -> str:
        """`log.text_pairs(self.fields())`, rendered without the intermediate dict (every packet's line
        at info goes through here)."""
        if self.outcome is _OUTCOME_ANSWER and self.delay_ms is None:
            line = _answer_text(self)
            if line is not None:
                return line
        return text_pairs(self.fields())


_FIELD_NAMES = DecisionRecord._fields
_get_fields = attrgetter(*_FIELD_NAMES)


def answer_record(
    *,
    port: int,
    iface: str,
    source: str,
    mac: str | None,
    xid: int | None,
    msg_type: str | None,
    arch: str | None,
    subnet: str | None,
    boot_file: str | None,
    server: str | None,
    destination: str | None,
    rule: str | None,
) -> DecisionRecord:
    """`DecisionRecord(outcome=Outcome.ANSWER, stage=Stage.SEND, ...)`: the record of every answered
    packet (the pipeline's and the reply memo's), at the record-emission edge. Called by keyword; the
    tuple is built positionally, because a keyword call of a NamedTuple class goes through a kwargs
    dict and costs twice as much (6,000 instructions a record). `test_events` checks it equals the
    keyword-built record."""
    # _make: the tuple's own constructor, without the class call's Python-level __new__ (800 fewer).
    return DecisionRecord._make(
        (
            _OUTCOME_ANSWER,
            _STAGE_SEND,
            port,
            iface,
            source,
            mac,
            xid,
            msg_type,
            arch,
            subnet,
            None,
            "",
            boot_file,
            server,
            destination,
            rule,
            None,
        )
    )


class _Known(Protocol):
    @property
    def arch(self) -> int | None: ...


class Refusal(Protocol):
    """What a pipeline says of a datagram it does not answer: `pxe.pipeline.Ignored` (IPv4) and
    `pxe6.pipeline.Ignored6` alike."""

    @property
    def stage(self) -> Stage: ...
    @property
    def reason(self) -> Reason: ...
    @property
    def detail(self) -> str: ...
    @property
    def client(self) -> _Known | None: ...  # None: turned away before the policy


def ignored_record(
    ignored: Refusal,
    *,
    port: int,
    iface: str,
    source: str,
    mac: str | None,
    xid: int | None,
    msg_type: str | None,
    subnet: str | None,
) -> DecisionRecord:
    """The record of a datagram that gets no reply, for both protocol families: its outcome and level
    are its reason's, the architecture is named when the client got that far. The caller gives what
    its family's request says (`mac`, `xid`, `msg_type`: None when it did not decode) and the subnet
    (or prefix) of a client the policy turned away. Built positionally, as `answer_record` (every
    datagram of a busy LAN that is not PXE traffic comes here); `test_events` checks it equals the
    keyword-built record."""
    known = ignored.client
    reason = ignored.reason
    return DecisionRecord._make(
        (
            reason.outcome,
            ignored.stage,
            port,
            iface,
            source,
            mac,
            xid,
            msg_type,
            None if known is None or known.arch is None else arch_name(known.arch),
            subnet,
            reason,
            ignored.detail,
            None,
            None,
            None,
            None,
            None,
        )
    )


# An answer's line is mostly the decision, which a boot storm repeats: (port, iface, msg_type, arch,
# subnet, boot_file, server, rule) → the rendered text around the per-client source, mac, xid and
# destination. Bounded.
_ANSWER_PARTS: dict[tuple[object, ...], tuple[str, str, str]] = {}
_ANSWER_PARTS_MAX = 256
_QUOTED: dict[str, str] = {}  # destination → text_value(destination), for those that need quoting; bounded


def _answer_text(rec: DecisionRecord) -> str | None:
    """`text_fields` of an answer with every field but delay_ms set; None otherwise."""
    mac, xid, destination = rec.mac, rec.xid, rec.destination
    key = (
        rec.stage,
        rec.port,
        rec.iface,
        rec.msg_type,
        rec.arch,
        rec.subnet,
        rec.boot_file,
        rec.server,
        rec.rule,
    )
    parts = _ANSWER_PARTS.get(key)
    if parts is None:
        if None in key:
            return None
        stage, port, iface, msg_type, arch, subnet, boot_file, server, rule = key
        parts = (
            f"outcome={Outcome.ANSWER.value} stage={stage.value} port={port} iface={text_value(iface)}",
            f"msg_type={text_value(msg_type)} arch={text_value(arch)} subnet={text_value(subnet)} "
            f"boot_file={text_value(boot_file)} server={text_value(server)}",
            f"rule={text_value(rule)}",
        )
        if len(_ANSWER_PARTS) >= _ANSWER_PARTS_MAX:
            _ANSWER_PARTS.clear()
        _ANSWER_PARTS[key] = parts
    if mac is None or xid is None or destination is None:
        return None
    try:
        # f"{xid:08x}" for a 32-bit xid (every DHCPv4 and DHCPv6 one) without a format spec, which
        # costs a third more; any other int renders the generic way.
        xid_hex = xid.to_bytes(4, "big").hex()
    except OverflowError:
        return None
    head, middle, tail = parts
    source = rec.source
    # text_value's test for a bare value (log.is_bare), made once for the per-client source and MAC
    # (their concatenation has a space, a quote or an unprintable character if and only if one of them
    # has): one call a line instead of two. The test above checks the result.
    if source and mac and is_bare(source + mac):
        who = f"source={source} mac={mac}"
    else:
        who = f"source={text_value(source)} mac={text_value(mac)}"
    if not is_bare(destination):
        # Quoted: a broadcast, the same few texts on every line of a DISCOVER storm.
        quoted = _QUOTED.get(destination)
        if quoted is None:
            if len(_QUOTED) >= _ANSWER_PARTS_MAX:
                _QUOTED.clear()
            quoted = _QUOTED[destination] = text_value(destination)
        destination = quoted
    return f"{head} {who} xid=0x{xid_hex} {middle} destination={destination} {tail}"


_ANSWER = Outcome.ANSWER.value


class Counters:
    """Packets by (outcome, message type of an answer or reason label of the rest); bounded."""

    MAX_KEYS = 128

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, rec: DecisionRecord) -> None:
        if rec.outcome is _OUTCOME_ANSWER:  # every answered packet: no enum property, one dict lookup
            key = (_ANSWER, rec.msg_type or "-")
        else:
            key = (rec.outcome.value, rec.reason.label if rec.reason is not None else "-")
        counts = self.counts
        count = counts.get(key)
        if count is None:
            count = 0
            if len(counts) >= self.MAX_KEYS - len(Outcome):  # room for the 'other's
                key = (key[0], "other")
                count = counts.get(key, 0)
        counts[key] = count + 1

    def total(self, outcome: Outcome) -> int:
        return sum(n for (o, _), n in self.counts.items() if o == outcome.value)


Sink = Callable[[DecisionRecord], None]
counters = Counters()
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> None:
    """Register a consumer of every record (the metrics hook point: `proxydhcp.metrics` plugs in here)."""
    if sink not in _sinks:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def record(rec: DecisionRecord, exc_info: BaseException | None = None) -> None:
    """Log one decision, count it and pass it to the sinks. Never raises: a failing sink is logged."""
    reason = rec.reason
    level = logging.INFO if reason is None else reason.level  # `rec.level`, without a property call
    if log.isEnabledFor(level):
        message = rec.message()
        # The fast path writes the same line as the logging machinery would, without a LogRecord;
        # it declines (False) whenever anything but our own handler would see the record.
        if exc_info is not None or not emit_fast(log, level, message, rec):
            log.log(level, "%s", message, extra={"fields": rec.fields()}, exc_info=exc_info)
    counters.add(rec)
    for sink in _sinks:
        try:
            sink(rec)
        except Exception:
            log.exception("metrics sink %r failed", sink)


def record_error(*, port: int, iface: str, source: str, exc: Exception) -> None:
    """Record a datagram whose handling raised (a bug, or a reply the kernel refused), in IPv4's and
    IPv6's serve alike: an INTERNAL_ERROR record naming the exception, logged with its traceback."""
    rec = DecisionRecord(
        outcome=Outcome.ERROR,
        stage=Stage.POLICY,
        port=port,
        iface=iface,
        source=source,
        reason=Reason.INTERNAL_ERROR,
        detail=f"{type(exc).__name__}: {exc}",
    )
    record(rec, exc_info=exc)
