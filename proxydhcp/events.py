"""One decision record per DHCP packet: what came in, and what was answered or why nothing was.

`pipeline.py` builds a `DecisionRecord` for every datagram and `server.py` passes it to `record()`,
which writes one log line (logger `proxydhcp.dhcp`; with `--log-format json` one JSON object, the
record's fields as keys), bumps the in-process counters and hands it to the registered sinks
(Prometheus metrics, tests). Nothing here keeps per-client state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from operator import attrgetter
from typing import Any

from proxydhcp.log import emit_fast, text_value

log = logging.getLogger("proxydhcp.dhcp")


class Outcome(StrEnum):
    ANSWER = "answer"
    IGNORE = "ignore"  # a decodable packet that gets no reply on purpose
    MALFORMED = "malformed"  # bytes that are not a DHCP message
    ERROR = "error"  # a bug or a send failure: logged with a traceback, no reply


class Stage(StrEnum):
    """The pipeline step that decided (DESIGN.md §2 / ARCHITECTURE.md)."""

    DECODE = "decode"
    CLASSIFY = "classify"
    POLICY = "policy"
    SEND = "send"


# Not frozen: a frozen dataclass's __init__ sets each of the 16 fields through object.__setattr__,
# 1.4 µs of every packet. Treat records as values all the same (dataclasses.replace to vary one):
# the log handler renders a record's line after record() returns, at the end of the loop iteration.
@dataclass(slots=True)
class DecisionRecord:
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
    reason: str | None = None
    boot_file: str | None = None
    server: str | None = None
    destination: str | None = None
    rule: str | None = None
    delay_ms: int | None = None

    @property
    def level(self) -> int:
        """Answers at info; what is not PXE traffic (a busy LAN is full of it) and garbage at debug;
        a PXE client turned away by policy at info, since an admin wonders why it did not boot."""
        if self.outcome is Outcome.ANSWER:
            return logging.INFO
        if self.outcome is Outcome.ERROR:
            return logging.ERROR
        if self.outcome is Outcome.IGNORE and self.stage is Stage.POLICY and not _is_quiet(self.reason):
            return logging.INFO
        return logging.DEBUG

    def message(self) -> str:
        """The human part of the line; the fields carry the details (the text format appends them)."""
        what = self.msg_type or "packet"
        if self.outcome is Outcome.ANSWER:
            return f"answered {what}: {self.boot_file}"
        return f"{self.outcome.value} {what}: {self.reason}"

    def fields(self) -> dict[str, Any]:
        """The structured fields of the log line (None values left out), in declaration order."""
        # Once per logged packet: one C-level getter for every slot, no dataclasses.asdict (deep copy).
        out = {k: v for k, v in zip(_FIELD_NAMES, _get_fields(self), strict=True) if v is not None}
        out["outcome"] = self.outcome.value
        out["stage"] = self.stage.value
        if self.xid is not None:
            out["xid"] = f"0x{self.xid:08x}"
        return out

    def text_fields(self) -> str:
        """`log.text_pairs(self.fields())`, rendered without the intermediate dict (every packet's line
        at info goes through here)."""
        if self.outcome is Outcome.ANSWER and self.reason is None and self.delay_ms is None:
            line = _answer_text(self)
            if line is not None:
                return line
        values = _get_fields(self)
        pairs = [f"outcome={values[0].value}", f"stage={values[1].value}"]
        for key, value in zip(_FIELD_NAMES[2:], values[2:], strict=True):
            if value is None:
                continue
            if key == "xid":
                pairs.append(f"xid=0x{value:08x}")
                continue
            pairs.append(f"{key}={text_value(value)}")
        return " ".join(pairs)


_FIELD_NAMES = tuple(f.name for f in dataclass_fields(DecisionRecord))
_get_fields = attrgetter(*_FIELD_NAMES)


# An answer's line is mostly the decision, which a boot storm repeats: (port, iface, msg_type, arch,
# subnet, boot_file, server, rule) → the rendered text around the per-client source, mac, xid and
# destination. Bounded.
_ANSWER_PARTS: dict[tuple[object, ...], tuple[str, str, str]] = {}
_ANSWER_PARTS_MAX = 256


def _answer_text(rec: DecisionRecord) -> str | None:
    """`text_fields` of an answer with every field but reason and delay_ms set; None otherwise."""
    mac, xid, destination = rec.mac, rec.xid, rec.destination
    key = (rec.stage, rec.port, rec.iface, rec.msg_type, rec.arch, rec.subnet, rec.boot_file, rec.server,
           rec.rule)  # fmt: skip
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
    head, middle, tail = parts
    return (
        f"{head} source={text_value(rec.source)} mac={text_value(mac)} xid=0x{xid:08x} {middle} "
        f"destination={text_value(destination)} {tail}"
    )


# Subnet misses are logged at debug (DESIGN.md §2): a proxy serving one subnet on a shared segment
# hears every other subnet's relayed PXE clients.
_QUIET_PREFIXES = ("subnet", "not in an enabled subnet", "no enabled subnet")


def _is_quiet(reason: str | None) -> bool:
    return reason is not None and reason.lower().startswith(_QUIET_PREFIXES)


def reason_key(reason: str | None) -> str:
    """A low-cardinality key for a reason: its text up to the first ':' or '(' (values such as a MAC or
    an address come after those), at most 48 characters."""
    if not reason:
        return "-"
    cut = len(reason)
    for mark in (":", "(", "="):
        pos = reason.find(mark)
        if pos != -1:
            cut = min(cut, pos)
    return reason[:cut].strip()[:48] or "-"


_ANSWER = Outcome.ANSWER.value


class Counters:
    """Packets by (outcome, reason key); bounded so hostile input cannot grow it."""

    MAX_KEYS = 128

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, rec: DecisionRecord) -> None:
        if rec.outcome is Outcome.ANSWER:  # every answered packet: no enum property, one dict lookup
            key = (_ANSWER, rec.msg_type or "-")
        else:
            key = (rec.outcome.value, reason_key(rec.reason))
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
    level = rec.level
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
