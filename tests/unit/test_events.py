"""events.py: one record per packet, its log level, fields and bounded counters."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxydhcp import events
from proxydhcp.events import Counters, DecisionRecord
from proxydhcp.log import JsonFormatter, text_pairs
from proxydhcp.outcome import Outcome, Reason, Stage


def _rec(
    outcome: Outcome, stage: Stage, reason: Reason | None = None, detail: str = "", **kw: object
) -> DecisionRecord:
    where = {"port": 67, "iface": "eth0", "source": "0.0.0.0:68"}
    return DecisionRecord(outcome=outcome, stage=stage, reason=reason, detail=detail, **where, **kw)  # type: ignore[arg-type]


def test_levels() -> None:
    assert _rec(Outcome.ANSWER, Stage.SEND).level == logging.INFO
    assert _rec(Outcome.IGNORE, Stage.CLASSIFY, Reason.NOT_PXE).level == logging.DEBUG
    assert _rec(Outcome.IGNORE, Stage.POLICY, Reason.SUBNET_NOT_ENABLED, "of 10.9.0.1").level == logging.DEBUG
    assert _rec(Outcome.IGNORE, Stage.POLICY, Reason.NO_BOOT_FILE, "efi-arm64").level == logging.INFO
    assert _rec(Outcome.MALFORMED, Stage.DECODE, Reason.TOO_SHORT, "packet too short").level == logging.DEBUG
    assert _rec(Outcome.ERROR, Stage.POLICY, Reason.INTERNAL_ERROR, "KeyError").level == logging.ERROR


def test_fields_and_json_line() -> None:
    rec = _rec(Outcome.ANSWER, Stage.SEND, mac="52:54:00:00:00:01", xid=0x1234, msg_type="DISCOVER",
               arch="bios", boot_file="undionly.kpxe", destination="255.255.255.255:68")  # fmt: skip
    fields = rec.fields()
    assert fields["xid"] == "0x00001234" and fields["outcome"] == "answer" and "reason" not in fields
    record = logging.LogRecord("proxydhcp.dhcp", logging.INFO, __file__, 1, "%s", (rec.message(),), None)
    record.fields = fields
    line = json.loads(JsonFormatter().format(record))
    assert line["mac"] == "52:54:00:00:00:01" and line["boot_file"] == "undionly.kpxe"
    assert line["msg"] == "answered DISCOVER: undionly.kpxe"


def test_counters_are_bounded() -> None:
    counters = Counters()
    for n in range(1000):
        counters.add(_rec(Outcome.IGNORE, Stage.POLICY, list(Reason)[n % len(Reason)], f"reason number {n}"))
    assert len(counters.counts) <= Counters.MAX_KEYS
    assert counters.total(Outcome.IGNORE) == 1000


def test_record_logs_counts_and_feeds_sinks(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[DecisionRecord] = []
    events.add_sink(seen.append)
    events.add_sink(lambda rec: 1 / 0)  # a broken sink is logged, never raised
    try:
        with caplog.at_level(logging.DEBUG, logger="proxydhcp"):
            before = events.counters.total(Outcome.MALFORMED)
            cookie = "bad magic cookie 0x00000000"
            events.record(_rec(Outcome.MALFORMED, Stage.DECODE, Reason.BAD_MAGIC_COOKIE, cookie))
    finally:
        events._sinks.clear()
    assert len(seen) == 1 and events.counters.total(Outcome.MALFORMED) == before + 1
    messages = [r.getMessage() for r in caplog.records if r.name == "proxydhcp.dhcp"]
    assert "malformed packet: bad magic cookie 0x00000000" in messages
    assert any("sink" in m and "failed" in m for m in messages)


@pytest.mark.parametrize(
    "rec",
    [
        _rec(Outcome.ANSWER, Stage.SEND, mac="52:54:00:00:00:01", xid=0, msg_type="DISCOVER", arch="bios",
             subnet="10.0.0.0/24", boot_file="undionly.kpxe", server="10.0.0.1",
             destination="255.255.255.255:68 (broadcast)", rule="global bios", delay_ms=300),
        _rec(Outcome.IGNORE, Stage.POLICY, Reason.HOST_IGNORED, '"x"', mac="", xid=0xFFFFFFFF,
             arch="efi-x64"),
        _rec(Outcome.MALFORMED, Stage.DECODE, Reason.TOO_SHORT,
             "packet too short (3 bytes, need at least 240)"),
        _rec(Outcome.ERROR, Stage.POLICY, Reason.INTERNAL_ERROR, "KeyError: 'é'"),
    ],
)  # fmt: skip
def test_text_fields_equal_the_generic_rendering(rec: DecisionRecord) -> None:
    assert rec.text_fields() == text_pairs(rec.fields())
    assert list(rec.fields())[:5] == ["outcome", "stage", "port", "iface", "source"]  # declaration order


_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(Stage)),
    st.integers(0, 65535),
    st.lists(st.one_of(st.none(), _TEXT), min_size=10, max_size=10),
    st.one_of(st.none(), st.integers(0, 0xFFFFFFFF), st.integers(), st.sampled_from([-1, 1 << 32])),
)
def test_answer_lines_equal_the_generic_rendering(
    stage: Stage, port: int, texts: list[str | None], xid: int | None
) -> None:
    """Answers render through a cache of their repeated parts; any field may be empty, quoted or absent."""
    iface, source, mac, msg_type, arch, subnet, boot_file, server, destination, rule = texts
    for _ in range(2):  # the first renders and caches the parts, the second uses them
        rec = DecisionRecord(
            outcome=Outcome.ANSWER, stage=stage, port=port, iface=iface or "eth0",
            source=source or "10.0.0.2:68", mac=mac, xid=xid, msg_type=msg_type, arch=arch, subnet=subnet,
            boot_file=boot_file, server=server,
            destination=destination, rule=rule,
        )  # fmt: skip
        assert rec.text_fields() == text_pairs(rec.fields())


def test_answer_record_equals_the_keyword_built_record() -> None:
    # events.answer_record builds positionally (the record-emission edge): it must be the same value.
    values = {
        "port": 4011, "iface": "eth0", "source": "10.0.0.9:4011", "mac": "52:54:00:00:00:01", "xid": 7,
        "msg_type": "REQUEST", "arch": "efi-x64", "subnet": "10.0.0.0/24", "boot_file": "ipxe.efi",
        "server": "10.0.0.1", "destination": "10.0.0.9:4011", "rule": "global efi-x64",
    }  # fmt: skip
    built = events.answer_record(**values)  # type: ignore[arg-type]
    plain = DecisionRecord(outcome=Outcome.ANSWER, stage=Stage.SEND, **values)  # type: ignore[arg-type]
    assert built == plain and type(built) is DecisionRecord
    assert built._asdict() == plain._asdict()



def test_ignored_record_equals_the_keyword_built_record() -> None:
    # events.ignored_record builds positionally, as answer_record: every field must land in its place.
    from types import SimpleNamespace

    where = {"port": 4011, "iface": "eth0", "source": "10.0.0.9:4011", "mac": "52:54:00:00:00:01", "xid": 7,
             "msg_type": "REQUEST", "subnet": "10.0.0.0/24"}  # fmt: skip
    ignored = SimpleNamespace(stage=Stage.POLICY, reason=Reason.HOST_IGNORED, detail="52:54:00:00:00:01",
                              client=SimpleNamespace(arch=7))  # fmt: skip
    built = events.ignored_record(ignored, **where)  # type: ignore[arg-type]
    plain = DecisionRecord(outcome=Outcome.IGNORE, stage=Stage.POLICY, reason=Reason.HOST_IGNORED,
                           detail="52:54:00:00:00:01", arch="efi-x64", **where)  # type: ignore[arg-type]
    assert built == plain and type(built) is DecisionRecord
    assert built._asdict() == plain._asdict()


def test_ignored_records_of_both_families_follow_one_rule() -> None:
    """events.ignored_record: IPv4's and IPv6's pipelines record a datagram they do not answer the same
    way (outcome and level from the reason, the architecture named once the client was classified)."""
    from ipaddress import IPv4Address, IPv4Network, IPv6Address

    from proxydhcp.config import Settings
    from proxydhcp.dhcp6.options import duid_ll
    from proxydhcp.pxe import pipeline
    from proxydhcp.pxe.policy import Receiver
    from proxydhcp.pxe6 import pipeline as pipeline6
    from proxydhcp.pxe6.policy import Receiver6
    from tests.dhcp6_requests import edk2_solicit
    from tests.unit.conftest import pxe_request

    settings = Settings.model_validate(
        {"boot": {"bios": "undionly.kpxe"}, "subnet": [{"cidr": "10.0.0.0/24"}, {"cidr": "2001:db8:1::/64"}]}
    )  # no efi-x64 file: both turn the UEFI client away
    v4 = pipeline.run(
        pxe_request(arch=7).encode(), port=67, source=(IPv4Address(0), 68),
        receiver=Receiver(IPv4Address("10.0.0.1"), IPv4Network("10.0.0.0/24")), settings=settings,
    )  # fmt: skip
    v6 = pipeline6.run6(
        edk2_solicit(), port=547, source=("fe80::5054:ff:fe12:3456", 546, 0, 7),
        receiver=Receiver6("eth0", ((IPv6Address("2001:db8:1::1"), 64),)), settings=settings,
        server_duid=duid_ll(bytes(6)),
    )  # fmt: skip
    assert isinstance(v4, pipeline.Ignored) and isinstance(v6, pipeline6.Ignored6)
    records = [
        (pipeline.record(v4, port=67, iface="eth0", source="x"), "10.0.0.0/24"),
        (pipeline6.record6(v6, port=547, iface="eth0", source="x"), "2001:db8:1::/64"),
    ]
    for rec, subnet in records:
        assert (rec.outcome, rec.stage, rec.reason, rec.arch, rec.subnet) == (
            Outcome.IGNORE, Stage.POLICY, Reason.NO_BOOT_FILE, "efi-x64", subnet,
        )  # fmt: skip
        assert rec.level == logging.INFO and rec.reason_text == "no boot file for efi-x64"
    undecoded = events.ignored_record(
        pipeline.Ignored(stage=Stage.DECODE, reason=Reason.TOO_SHORT, detail="packet too short"),
        port=67, iface="eth0", source="x", mac=None, xid=None, msg_type=None, subnet=None,
    )  # fmt: skip
    assert (undecoded.outcome, undecoded.arch, undecoded.level) == (Outcome.MALFORMED, None, logging.DEBUG)
