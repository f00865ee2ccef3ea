"""log.py: the fast path writes exactly the line the logging machinery would; the handler batches
lines per event-loop iteration and loses none."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from proxydhcp import events
from proxydhcp.events import DecisionRecord
from proxydhcp.log import JsonFormatter, LineHandler, TextFormatter, emit_fast, flush_logs, setup_logging
from proxydhcp.outcome import Outcome, Reason, Stage

NOW = 1_764_430_000.25  # a fixed clock: both paths stamp the line with time.time()


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    """Where `_setup`'s handler writes; the `proxydhcp` logger is restored afterwards."""
    logger = logging.getLogger("proxydhcp")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield CountingStream()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _setup(fmt: str, level: str, out: CountingStream) -> None:
    """setup_logging, its handler writing to `out` (pytest swaps sys.stderr between test phases)."""
    setup_logging(fmt, level)
    handler = logging.getLogger("proxydhcp").handlers[0]
    assert isinstance(handler, LineHandler)
    handler.setStream(out)


def _answer(**kw: object) -> DecisionRecord:
    values: dict[str, object] = {
        "port": 67, "iface": "eth0", "source": "0.0.0.0:68", "mac": "52:54:00:00:00:01", "xid": 0x1234,
        "msg_type": "DISCOVER", "arch": "bios", "subnet": "10.0.0.0/24", "boot_file": "undionly.kpxe",
        "server": "10.0.0.1", "destination": "255.255.255.255:68 (broadcast)", "rule": "global bios",
    }  # fmt: skip
    values.update(kw)
    return DecisionRecord(outcome=Outcome.ANSWER, stage=Stage.SEND, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fast_path_writes_the_line_logging_would(
    fmt: str, stream: CountingStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    _setup(fmt, "debug", stream)
    log = logging.getLogger("proxydhcp.dhcp")
    records = [
        _answer(),
        _answer(rule='host "lab" pc', boot_file="", delay_ms=300),  # quoting, an empty value, an int
        DecisionRecord(
            outcome=Outcome.IGNORE,
            stage=Stage.POLICY,
            port=67,
            iface="eth0",
            source="0.0.0.0:68",
            reason=Reason.NO_BOOT_FILE,
            detail="x",
        ),
    ]
    fast, slow = [], []
    for rec in records:
        assert emit_fast(log, rec.level, rec.message(), rec)
        flush_logs()
        fast.append(stream.getvalue())
        stream.seek(0)
        stream.truncate()
        log.log(rec.level, "%s", rec.message(), extra={"fields": rec.fields()})
        flush_logs()
        slow.append(stream.getvalue())
        stream.seek(0)
        stream.truncate()
    assert fast == slow
    assert all(line.count("\n") == 1 for line in fast)
    if fmt == "json":
        first = json.loads(fast[0])
        assert (
            first["xid"] == "0x00001234"
            and first["outcome"] == "answer"
            and first["msg"].startswith("answered")
        )
    else:
        assert 'rule="global bios"' in fast[0] and "xid=0x00001234" in fast[0]
        assert (
            'rule="host \\"lab\\" pc"' in fast[1] and 'boot_file=""' in fast[1] and "delay_ms=300" in fast[1]
        )


def test_fast_path_accepts_a_plain_dict(stream: CountingStream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)
    _setup("text", "info", stream)
    log = logging.getLogger("proxydhcp.tftp")
    fields = {"client": "10.0.0.9:2000", "file": "a b.efi", "bytes": 12, "none": None}
    assert emit_fast(log, logging.INFO, "sent", fields)
    log.info("sent", extra={"fields": fields})
    flush_logs()
    fast, slow = stream.getvalue().splitlines()
    assert fast == slow and fast.endswith('client=10.0.0.9:2000 file="a b.efi" bytes=12')


def test_fast_path_declines_when_someone_else_would_see_the_record(stream: CountingStream) -> None:
    _setup("text", "info", stream)
    log = logging.getLogger("proxydhcp.dhcp")
    rec = _answer()
    extra = logging.StreamHandler(io.StringIO())
    log.addHandler(extra)  # a handler of its own (pytest's caplog, a library user)
    try:
        assert not emit_fast(log, logging.INFO, rec.message(), rec)
    finally:
        log.removeHandler(extra)
    handler = logging.getLogger("proxydhcp").handlers[0]
    handler.addFilter(lambda r: True)
    try:
        assert not emit_fast(log, logging.INFO, rec.message(), rec)
    finally:
        handler.filters.clear()
    logging.getLogger("proxydhcp").propagate = True  # the root logger's handlers would see it
    try:
        assert not emit_fast(log, logging.INFO, rec.message(), rec)
    finally:
        logging.getLogger("proxydhcp").propagate = False
    assert emit_fast(log, logging.INFO, rec.message(), rec)


def test_events_record_reaches_caplog_through_the_slow_path(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="proxydhcp"):
        events.record(_answer())
    got = [r for r in caplog.records if r.name == "proxydhcp.dhcp"]
    assert len(got) == 1 and got[0].getMessage() == "answered DISCOVER: undionly.kpxe"
    assert got[0].fields["mac"] == "52:54:00:00:00:01"  # type: ignore[attr-defined]


@contextlib.contextmanager
def _own_logger(name: str, formatter: logging.Formatter) -> Iterator[tuple[logging.Logger, CountingStream]]:
    """A logger of its own whose only handler is a LineHandler writing to a CountingStream."""
    out = CountingStream()
    handler = LineHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_without_a_loop_every_line_is_written_at_once() -> None:
    with _own_logger("test.log.noloop", TextFormatter()) as (logger, out):
        logger.warning("one")
        assert out.getvalue().endswith("one\n") and out.writes == 1
        logger.warning("two")
        assert out.getvalue().endswith("two\n") and out.writes == 2


def test_in_a_loop_lines_are_written_once_per_iteration() -> None:
    async def main() -> None:
        for n in range(50):
            logger.warning("line %d", n)
        assert out.writes == 0  # held until the loop gets control
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert out.writes == 1
        lines = out.getvalue().splitlines()
        assert [json.loads(line)["msg"] for line in lines] == [f"line {n}" for n in range(50)]
        logger.warning("after")  # a new batch, a new scheduled write
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert out.writes == 2 and out.getvalue().endswith('"msg":"after"}\n')
        logger.warning("pending at the end")

    with _own_logger("test.log.loop", JsonFormatter()) as (logger, out):
        asyncio.run(main())
        # Whether or not the loop ran its last flush before closing, the next line from outside a
        # loop is written at once, with anything still held before it.
        logger.warning("outside")
        msgs = [json.loads(line)["msg"] for line in out.getvalue().splitlines()]
        assert msgs[-2:] == ["pending at the end", "outside"] and len(msgs) == 53


def test_a_line_joining_a_scheduled_flush_does_not_ask_for_the_running_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a flush is scheduled, further lines of the iteration just join it: no get-running-loop
    call (a getpid() system call per line in CPython 3.11)."""
    asks = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal asks
        asks += 1
        return real()

    async def main() -> None:
        monkeypatch.setattr(asyncio, "get_running_loop", counting)
        for n in range(100):
            logger.warning("line %d", n)
        assert asks == 1 and out.writes == 0
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert out.writes == 1 and len(out.getvalue().splitlines()) == 100

    with _own_logger("test.log.join", TextFormatter()) as (logger, out):
        asyncio.run(main())


def test_a_large_batch_is_written_without_waiting_for_the_loop() -> None:
    out = CountingStream()
    handler = LineHandler(out)
    handler.setFormatter(TextFormatter())

    async def main() -> None:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "x" * 1000, None, None)
        for _ in range(200):  # 200 kB > FLUSH_BYTES
            handler.handle(record)
        assert out.writes >= 2  # written in chunks while the loop was busy
        handler.flush()
        assert out.getvalue().count("\n") == 200

    asyncio.run(main())


class Broken:
    """A StructuredFields whose rendering fails: a bug must cost its fields, not the line."""

    def fields(self) -> dict[str, object]:
        raise KeyError("boom")

    def text_fields(self) -> str:
        raise KeyError("boom")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_record_rendered_at_flush_time_keeps_its_line_even_if_rendering_fails(
    fmt: str, stream: CountingStream
) -> None:
    _setup(fmt, "info", stream)
    log = logging.getLogger("proxydhcp.dhcp")

    async def main() -> None:
        assert emit_fast(log, logging.INFO, "first", _answer())
        assert emit_fast(log, logging.INFO, "second", Broken())
        assert emit_fast(log, logging.INFO, "third", _answer(mac="52:54:00:00:00:03"))
        assert stream.writes == 0  # in a loop: rendered and written at the end of the iteration
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and stream.writes == 1
    assert "first" in lines[0] and "52:54:00:00:00:01" in lines[0]
    assert "second (fields not formatted: KeyError('boom'))" in lines[1]
    assert "52:54:00:00:00:03" in lines[2]


def test_text_value_quotes_unprintable_values() -> None:
    # A client-chosen value (file name, vendor class) must not be able to start a new log line.
    from proxydhcp.log import text_value

    assert text_value("boot.ipxe") == "boot.ipxe"
    forged = text_value("x\n12:00:00.000 WARNING proxydhcp: forged")
    assert "\n" not in forged and forged.startswith('"')
    assert "\x1b" not in text_value("a\x1b[31mred")


@pytest.mark.parametrize(
    "created", [0.0, 0.0005, 0.9999, 1.5, 1733580000.123456, 1733580000.9995, -1.25, 59.999999]
)
@pytest.mark.parametrize("levelname", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "Level 5"])
def test_text_head_is_the_formatted_one(created: float, levelname: str) -> None:
    """The head's looked-up millisecond and level texts are what the format specs gave."""
    from proxydhcp.log import _stamp

    msecs = int((created - int(created)) * 1000)
    want = f"{_stamp(created)}.{msecs:03d} {levelname:<7} proxydhcp.x: hello"
    assert TextFormatter._head(created, levelname, "proxydhcp.x", "hello") == want


def test_mapping_check_is_isinstance() -> None:
    """The per-type memo of `isinstance(x, Mapping)` answers as the ABC does, first time and after."""
    import collections
    import types
    from collections.abc import Mapping

    from proxydhcp.log import _is_mapping

    class Plain:
        def fields(self) -> dict[str, object]:
            return {}

    samples: list[object] = [{}, collections.OrderedDict(), types.MappingProxyType({}), Plain(), [], ""]
    for _ in range(2):
        for sample in samples:
            assert _is_mapping(sample) == isinstance(sample, Mapping)


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_deferred_object_lines_equal_the_fields_line(formatter: type[TextFormatter | JsonFormatter]) -> None:
    # emit_fast defers an object's line to object_line, which skips fast_line's mapping test.
    for rec in (_answer(), _answer(xid=None), _answer(delay_ms=300)):
        line = formatter.object_line(1.5, "INFO", "proxydhcp.dhcp", rec.message(), rec)
        assert line == formatter.fast_line(1.5, "INFO", "proxydhcp.dhcp", rec.message(), rec)
        assert line == formatter.fast_line(1.5, "INFO", "proxydhcp.dhcp", rec.message(), rec.fields())
