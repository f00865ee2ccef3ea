"""Metrics: counters reach a real HTTP scrape, labels stay within a fixed vocabulary."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from proxydhcp import metrics as metrics_module
from proxydhcp.errors import ConfigError
from proxydhcp.events import DecisionRecord
from proxydhcp.metrics import REASONS, Metrics, observe_decision, parse_listen
from proxydhcp.outcome import Outcome, Reason, Stage, TransferOutcome

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    address = metrics.http_address
    assert address is not None
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    m.start_http("127.0.0.1:0")
    yield m
    m.stop_http()


def test_dhcp_counters_scraped(metrics: Metrics) -> None:
    for _ in range(3):
        metrics.dhcp_packet("67", "DISCOVER", "answered", None)
    metrics.dhcp_packet("67", "DISCOVER", "ignored", Reason.NOT_PXE)
    metrics.dhcp_packet("67", "REQUEST", "ignored", Reason.NOT_DISCOVER)
    metrics.dhcp_packet("4011", "REQUEST", "answered")
    metrics.dhcp_packet("67", "none", "malformed", Reason.BAD_MAGIC_COOKIE)
    metrics.offer("efi-x64")
    metrics.offer("efi-x64")
    metrics.offer("0")  # an option-93 number becomes its name
    metrics.ack("efi-x64")
    s = scrape(metrics)
    packets = "proxydhcp_dhcp_packets_total"
    assert value(s, packets, port="67", message_type="DISCOVER", outcome="answered", reason="") == 3
    assert value(s, packets, port="67", message_type="DISCOVER", outcome="ignored", reason="not_pxe") == 1
    assert value(s, packets, port="67", message_type="REQUEST", outcome="ignored", reason="not_discover") == 1
    assert value(s, packets, port="4011", message_type="REQUEST", outcome="answered", reason="") == 1
    malformed = {"port": "67", "message_type": "none", "outcome": "malformed", "reason": "bad_magic_cookie"}
    assert value(s, packets, **malformed) == 1
    assert value(s, "proxydhcp_offers_total", arch="efi-x64") == 2
    assert value(s, "proxydhcp_offers_total", arch="bios") == 1
    assert value(s, "proxydhcp_pxe_acks_total", arch="efi-x64") == 1
    assert value(s, "proxydhcp_build_info", version=__import__("proxydhcp").__version__) == 1


def test_tftp_counters_and_histogram(metrics: Metrics) -> None:
    active = [0]
    metrics.set_active_transfers(lambda: active[0])
    metrics.tftp_started()
    metrics.tftp_started()
    metrics.tftp_started()
    active[0] = 2
    metrics.tftp_finished(bytes=1_000_000, retransmits=3, duration=0.2, outcome=TransferOutcome.COMPLETED)
    metrics.tftp_finished(bytes=512, retransmits=5, duration=30.0, outcome=TransferOutcome.TIMEOUT)
    metrics.tftp_finished(bytes=0, retransmits=0, duration=0.01, outcome=TransferOutcome.PROBE)
    s = scrape(metrics)
    assert value(s, "proxydhcp_tftp_transfers_started_total") == 3
    assert value(s, "proxydhcp_tftp_transfers_completed_total") == 1
    assert value(s, "proxydhcp_tftp_transfers_failed_total", reason="timeout") == 1
    assert value(s, "proxydhcp_tftp_size_probes_total") == 1
    assert value(s, "proxydhcp_tftp_sent_bytes_total") == 1_000_512
    assert value(s, "proxydhcp_tftp_retransmits_total") == 8
    assert value(s, "proxydhcp_tftp_active_transfers") == 2
    duration = "proxydhcp_tftp_transfer_duration_seconds"
    assert value(s, duration + "_count") == 2
    assert value(s, duration + "_sum") == pytest.approx(30.2)
    assert value(s, duration + "_bucket", le="0.25") == 1
    assert value(s, duration + "_bucket", le="+Inf") == 2
    active[0] = 0
    assert value(scrape(metrics), "proxydhcp_tftp_active_transfers") == 0


def test_label_values_are_bounded(metrics: Metrics) -> None:
    # Hostile or unexpected values must not create one series each.
    for i in range(50):
        metrics.dhcp_packet(str(1000 + i), f"TYPE{i}", f"outcome{i}", Reason.HOST_IGNORED)
        metrics.dhcp_packet("67", "DISCOVER", "ignored", None)
        metrics.offer(str(200 + i))
        metrics.tftp_finished(bytes=1, retransmits=0, duration=0.0, outcome=TransferOutcome.SUPERSEDED)
    s = scrape(metrics)
    packets = {labels for name, labels in s if name == "proxydhcp_dhcp_packets_total"}
    assert len(packets) == 2
    junk = {"port": "other", "message_type": "other", "outcome": "other", "reason": "host_ignored"}
    assert value(s, "proxydhcp_dhcp_packets_total", **junk) == 50
    new = {"port": "67", "message_type": "DISCOVER", "outcome": "ignored", "reason": "other"}
    assert value(s, "proxydhcp_dhcp_packets_total", **new) == 50
    assert value(s, "proxydhcp_offers_total", arch="other") == 50
    assert value(s, "proxydhcp_tftp_transfers_failed_total", reason="superseded") == 50


def test_own_registry_not_global() -> None:
    a, b = Metrics(), Metrics()  # two instances in one process: no "Duplicated timeseries" error
    a.offer("bios")
    assert b.registry.get_sample_value("proxydhcp_offers_total", {"arch": "bios"}) is None
    assert a.registry.get_sample_value("proxydhcp_offers_total", {"arch": "bios"}) == 1
    assert REGISTRY.get_sample_value("proxydhcp_offers_total", {"arch": "bios"}) is None


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (Reason.NOT_BOOTREQUEST, "not_bootrequest"),
        (Reason.UNSUPPORTED_MESSAGE_TYPE, "unsupported_message_type"),
        (Reason.BAD_HARDWARE_ADDRESS, "bad_hardware_address"),
        (Reason.BAD_OPTION, "bad_option"),
        (Reason.BIS_UNSUPPORTED, "bis_unsupported"),
        (Reason.SUBNET_NOT_ENABLED, "subnet_not_enabled"),
        (Reason.NO_BOOT_FILE, "no_boot_file"),
        (Reason.BOOT_FILE_NOT_URL, "boot_file_not_url"),
        (Reason.NO_CLIENT_ADDRESS, "no_client_address"),
        (Reason.TOO_SHORT, "too_short"),
        (Reason.OPTION_OVERRUN, "option_overrun"),
        (Reason.NO_MESSAGE_TYPE, "no_message_type"),
    ],
)
def test_reason_label(reason: Reason, label: str) -> None:
    assert reason.label == label and label in REASONS


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_listen(":9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("9100", "localhost:9100", "127.0.0.1:x", "127.0.0.1:70000"):
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            parse_listen(bad)


def test_port_in_use_raises(metrics: Metrics) -> None:
    address = metrics.http_address
    assert address is not None
    with pytest.raises(OSError):
        Metrics().start_http(f"{address[0]}:{address[1]}")


def test_decision_records_feed_metrics(metrics: Metrics) -> None:
    base = {"iface": "eth0", "source": "0.0.0.0:68", "mac": "52:54:00:12:34:56", "xid": 1}
    observe_decision(
        DecisionRecord(
            outcome=Outcome.ANSWER, stage=Stage.SEND, port=67, msg_type="DISCOVER", arch="bios", **base
        ),
        metrics,
    )
    observe_decision(
        DecisionRecord(
            outcome=Outcome.ANSWER, stage=Stage.SEND, port=4011, msg_type="REQUEST", arch="efi-x64", **base
        ),
        metrics,
    )
    observe_decision(
        DecisionRecord(
            outcome=Outcome.IGNORE,
            stage=Stage.POLICY,
            port=67,
            msg_type="DISCOVER",
            reason=Reason.NO_BOOT_FILE,
            detail="efi-arm64",
            **base,
        ),
        metrics,
    )
    observe_decision(
        DecisionRecord(
            outcome=Outcome.MALFORMED,
            stage=Stage.DECODE,
            port=4011,
            iface="eth0",
            source="10.0.0.9:4011",
            reason=Reason.TOO_SHORT,
            detail="packet too short (3 bytes, need at least 240)",
        ),
        metrics,
    )
    s = scrape(metrics)
    packets = "proxydhcp_dhcp_packets_total"
    assert value(s, packets, port="67", message_type="DISCOVER", outcome="answered", reason="") == 1
    assert value(s, packets, port="4011", message_type="REQUEST", outcome="answered", reason="") == 1
    assert (
        value(s, packets, port="67", message_type="DISCOVER", outcome="ignored", reason="no_boot_file") == 1
    )
    assert value(s, packets, port="4011", message_type="none", outcome="malformed", reason="too_short") == 1
    assert value(s, "proxydhcp_offers_total", arch="bios") == 1
    assert value(s, "proxydhcp_pxe_acks_total", arch="efi-x64") == 1
    assert value(s, "proxydhcp_offers_total", arch="efi-x64") == 0


def test_module_start_is_process_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_current", None)
    assert metrics_module.current() is None
    observe_decision(
        DecisionRecord(outcome=Outcome.IGNORE, stage=Stage.DECODE, port=67, iface="lo", source="x")
    )  # no-op
    first = metrics_module.start("127.0.0.1:0")
    try:
        assert metrics_module.start("127.0.0.1:0") is first
        assert metrics_module.current() is first
        ignored = {"msg_type": "DISCOVER", "reason": Reason.NOT_PXE}
        observe_decision(
            DecisionRecord(
                outcome=Outcome.IGNORE, stage=Stage.CLASSIFY, port=67, iface="lo", source="x", **ignored
            )
        )
        s = scrape(first)
        labels = {"port": "67", "message_type": "DISCOVER", "outcome": "ignored", "reason": "not_pxe"}
        assert value(s, "proxydhcp_dhcp_packets_total", **labels) == 1
    finally:
        first.stop_http()


def test_repeated_records_keep_counting(metrics: Metrics) -> None:
    """observe_decision caches label children: the second and later records must still count, each
    under its own labels."""
    base = {"iface": "eth0", "source": "0.0.0.0:68", "mac": "52:54:00:12:34:56", "xid": 1}
    answer = DecisionRecord(
        outcome=Outcome.ANSWER, stage=Stage.SEND, port=67, msg_type="DISCOVER", arch="bios", **base
    )
    for _ in range(3):
        observe_decision(answer, metrics)
    for mac in ("52:54:00:00:00:01", "52:54:00:00:00:02"):  # reasons that differ only by a MAC
        observe_decision(
            DecisionRecord(
                outcome=Outcome.IGNORE,
                stage=Stage.POLICY,
                port=67,
                msg_type="DISCOVER",
                reason=Reason.HOST_IGNORED,
                detail=mac,
                **base,
            ),
            metrics,
        )
    s = scrape(metrics)
    packets = "proxydhcp_dhcp_packets_total"
    assert value(s, packets, port="67", message_type="DISCOVER", outcome="answered", reason="") == 3
    ignored = {"port": "67", "message_type": "DISCOVER", "outcome": "ignored", "reason": "host_ignored"}
    assert value(s, packets, **ignored) == 2
    assert value(s, "proxydhcp_offers_total", arch="bios") == 3
    assert value(s, "proxydhcp_pxe_acks_total", arch="bios") == 0


def test_reply_memo_hits_are_read_at_scrape_time(metrics: Metrics) -> None:
    assert value(scrape(metrics), "proxydhcp_reply_memo_hits_total") == 0
    hits = [0]
    metrics.set_memo_hits(lambda: hits[0])
    hits[0] = 41
    assert value(scrape(metrics), "proxydhcp_reply_memo_hits_total") == 41
