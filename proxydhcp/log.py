"""Logging setup: human text by default, one JSON object per line with `--log-format json`.

Modules log through `logging.getLogger("proxydhcp.<subsystem>")` with lazy `%s` arguments and put
structured fields in `extra={"fields": {...}}`; the JSON formatter emits them as top-level keys, the
text formatter appends them as `key=value` pairs.

A boot storm logs one line per packet, tens of thousands a second: the handler buffers lines and
writes them in one write per event-loop iteration (immediately when no loop runs in the thread), and
`emit_fast` lets the per-packet decision line skip the LogRecord machinery when nothing but that
handler would see it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol, TextIO, TypeGuard, cast

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {
    n: logging.getLevelName(n) for n in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
}
FLUSH_BYTES = 64 * 1024  # a buffer this large is written at once, without waiting for the loop


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, "fields", None)
    return value if isinstance(value, dict) else {}


class StructuredFields(Protocol):
    """What `emit_fast` logs, rendered when the handler writes: the fields as a dict. An object may
    also have `text_fields()`, the text format's `key=value` pairs, equal to `text_pairs(fields())`
    (the decision record renders them faster)."""

    def fields(self) -> dict[str, Any]: ...


Fields = Mapping[str, Any] | StructuredFields


def is_bare(text: str) -> bool:
    """Whether the text format writes `text` bare: not empty, no space or quote, nothing unprintable
    (a client-chosen value with a newline must not forge a log line)."""
    return bool(text) and text.isprintable() and " " not in text and '"' not in text


def text_value(value: Any) -> str:
    """A field value in the text format: bare (`is_bare`), or else JSON-quoted."""
    text = value if type(value) is str else str(value)
    # encode_basestring_ascii(text) is exactly json.dumps(text), without the call overhead.
    return text if is_bare(text) else encode_basestring_ascii(text)


def text_pairs(fields: Mapping[str, Any]) -> str:
    """The text format's `key=value` pairs of `fields`, None values left out."""
    return " ".join(f"{key}={text_value(value)}" for key, value in fields.items() if value is not None)


_stamp_cache: list[Any] = [-1, ""]  # [whole second, "HH:MM:SS"]: strftime once a second, not per line


_MSECS = tuple(f".{n:03d} " for n in range(1000))  # a line's ".mmm " after its HH:MM:SS
_PADDED = {name: f"{name:<7} " for name in _LEVEL_NAMES.values()}


_MAPPING_TYPES: dict[type, bool] = {}  # type → isinstance(x, Mapping): an ABC check costs 2k instructions


def _is_mapping(source: object) -> TypeGuard[Mapping[str, Any]]:
    kind = type(source)
    known = _MAPPING_TYPES.get(kind)
    if known is None:
        if len(_MAPPING_TYPES) >= 64:
            _MAPPING_TYPES.clear()
        known = _MAPPING_TYPES[kind] = isinstance(source, Mapping)
    return known


def _stamp(created: float) -> str:
    second = int(created)
    if _stamp_cache[0] != second:
        _stamp_cache[0], _stamp_cache[1] = second, time.strftime("%H:%M:%S", time.localtime(created))
    return str(_stamp_cache[1])


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = self._head(record.created, record.levelname, record.name, record.getMessage())
        pairs = text_pairs(fields_of(record))
        if pairs:
            line += " " + pairs
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    @staticmethod
    def _head(created: float, levelname: str, name: str, msg: str) -> str:
        msecs = int((created - int(created)) * 1000)
        # Looked up, not formatted: a format spec costs as much as the rest of the line's head.
        stamp = f"{_stamp(created)}{_MSECS[msecs] if 0 <= msecs < 1000 else f'.{msecs:03d} '}"
        return f"{stamp}{_PADDED.get(levelname) or f'{levelname:<7} '}{name}: {msg}"

    @classmethod
    def fast_line(cls, created: float, levelname: str, name: str, msg: str, source: Fields) -> str:
        """What `format` writes for such a record (no traceback), from its parts."""
        if not _is_mapping(source):
            return cls.object_line(created, levelname, name, msg, cast(StructuredFields, source))
        line = cls._head(created, levelname, name, msg)
        pairs = text_pairs(source)
        return f"{line} {pairs}" if pairs else line

    @classmethod
    def object_line(
        cls, created: float, levelname: str, name: str, msg: str, source: StructuredFields
    ) -> str:
        """`fast_line` of an object that renders its fields (what `emit_fast` defers)."""
        line = cls._head(created, levelname, name, msg)
        text_fields = getattr(source, "text_fields", None)
        pairs = text_fields() if text_fields is not None else text_pairs(source.fields())
        return f"{line} {pairs}" if pairs else line


_json = json.JSONEncoder(default=str, separators=(",", ":"))  # one encoder, not one per json.dumps


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = self._data(
            record.created, record.levelname, record.name, record.getMessage(), fields_of(record)
        )
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return _json.encode(data)

    @staticmethod
    def _data(
        created: float, levelname: str, name: str, msg: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ts": round(created, 6),
            "level": levelname.lower(),
            "logger": name,
            "msg": msg,
        }
        for key, value in fields.items():
            data.setdefault(key, value)
        return data

    @classmethod
    def fast_line(cls, created: float, levelname: str, name: str, msg: str, source: Fields) -> str:
        fields = source if _is_mapping(source) else cast(StructuredFields, source).fields()
        return _json.encode(cls._data(created, levelname, name, msg, fields))

    @classmethod
    def object_line(
        cls, created: float, levelname: str, name: str, msg: str, source: StructuredFields
    ) -> str:
        """`fast_line` of an object that renders its fields (what `emit_fast` defers)."""
        return _json.encode(cls._data(created, levelname, name, msg, source.fields()))


# A line whose formatting waits for the flush: (object_line, created, levelname, name, msg, source).
# Formatting a batch of lines in one tight loop costs about half what it costs interleaved with
# packet handling (the formatter's code and data stay in cache).
_Deferred = tuple[
    Callable[[float, str, str, str, StructuredFields], str], float, str, str, str, StructuredFields
]
DEFERRED_SIZE = 256  # bytes a deferred line counts for against FLUSH_BYTES, before it is formatted


class LineHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes its lines in batches: one write per event-loop iteration (the
    flush is scheduled with call_soon), at once past FLUSH_BYTES, and at once when no loop runs in
    the calling thread (CLI commands, other threads). `flush()`/`close()` write what is pending;
    logging.shutdown() calls them at exit."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._lines: list[str | _Deferred] = []
        self._size = 0
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.add_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def add_line(self, line: str | _Deferred) -> None:
        """Queue one line, or what formats it at flush time (the caller holds the handler lock)."""
        self._lines.append(line)
        self._size += len(line) if type(line) is str else DEFERRED_SIZE
        scheduled = self._flush_on
        if scheduled is not None and self._size < FLUSH_BYTES and scheduled.is_running():
            # A flush is due on a running loop: it writes this line too. (Asking which loop runs in
            # this thread costs a getpid() system call per line in CPython 3.11.)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: write now
            loop = None
        if loop is None or self._size >= FLUSH_BYTES:
            self._write()
        elif self._flush_on is not loop:  # not yet scheduled, or on a loop that has gone since
            self._flush_on = loop
            loop.call_soon(self.flush)

    def _write(self) -> None:
        if self._lines:
            lines = [line if type(line) is str else _render(line) for line in self._lines]  # type: ignore[arg-type]
            self._lines.clear()
            self._size = 0
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            self._flush_on = None
            try:
                self._write()
            except Exception:  # a closed or broken stderr: drop the lines, never raise into the loop
                self._lines.clear()
                self._size = 0
        finally:
            self.release()


def _render(item: _Deferred) -> str:
    fast_line, created, levelname, name, msg, source = item
    try:
        return fast_line(created, levelname, name, msg, source)
    except Exception as exc:  # a bug in a record's rendering: keep the message, say what failed
        return f"{_stamp(created)} {levelname:<7} {name}: {msg} (fields not formatted: {exc!r})"


def emit_fast(logger: logging.Logger, level: int, msg: str, source: Fields) -> bool:
    """Write `msg` + `source` (a dict of fields, or an object that renders them) at `level` as the
    logging machinery would, without creating a LogRecord, when the only thing that would see it is
    our own handler on the parent `proxydhcp` logger (no handler or filter elsewhere). Returns False
    when it did not apply or the line could not be formatted: log normally. The caller has checked
    `logger.isEnabledFor(level)`."""
    parent = logger.parent
    if logger.handlers or logger.filters or not logger.propagate or parent is None or parent.propagate:
        return False
    handlers = parent.handlers
    if len(handlers) != 1 or parent.filters:
        return False
    handler = handlers[0]
    if type(handler) is not LineHandler or handler.filters or level < handler.level:
        return False
    formatter = handler.formatter
    if type(formatter) is not TextFormatter and type(formatter) is not JsonFormatter:
        return False
    created, levelname = time.time(), _LEVEL_NAMES.get(level) or logging.getLevelName(level)
    if _is_mapping(source):  # a caller's dict may change once we return: format it now
        try:
            line: str | _Deferred = formatter.fast_line(created, levelname, logger.name, msg, source)
        except Exception:
            return False
    else:
        # Known not to be a mapping: the formatter's line of an object, without asking again.
        line = (formatter.object_line, created, levelname, logger.name, msg, cast(StructuredFields, source))
    lock = handler.lock  # what Handler.acquire/release take, without their two Python-level calls
    if lock is None:
        return False
    with lock:
        try:
            handler.add_line(line)
        except Exception:  # as Handler.handleError with raiseExceptions off: a line is not worth a crash
            return True
    return True


def flush_logs() -> None:
    """Write what the `proxydhcp` handler holds (at shutdown, before the loop goes away)."""
    for handler in logging.getLogger("proxydhcp").handlers:
        handler.flush()


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Install one handler on the `proxydhcp` logger (idempotent: replaces a previous one)."""
    logger = logging.getLogger("proxydhcp")
    for handler in list(logger.handlers):
        if getattr(handler, "_proxydhcp", False):
            handler.flush()
            logger.removeHandler(handler)
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler._proxydhcp = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    logger.propagate = False
