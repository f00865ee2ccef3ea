"""Metrics: counters reach a real HTTP scrape, labels stay within a fixed vocabulary."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from proxydhcp import metrics as metrics_module
from proxydhcp.errors import ConfigError
from proxydhcp.events import DecisionRecord, Outcome, Stage
from proxydhcp.metrics import REASONS, Metrics, observe_decision, parse_listen, reason_label

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
    metrics.dhcp_packet("67", "DISCOVER", "ignored", "not a PXE client")
    metrics.dhcp_packet("67", "REQUEST", "ignored", "not a DISCOVER on port 67")
    metrics.dhcp_packet("4011", "REQUEST", "answered")
    metrics.dhcp_packet("67", "none", "malformed", "bad magic cookie 0x00000000")
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
    metrics.tftp_finished(bytes=1_000_000, retransmits=3, duration=0.2, outcome="completed")
    metrics.tftp_finished(bytes=512, retransmits=5, duration=30.0, outcome="timeout")
    metrics.tftp_finished(bytes=0, retransmits=0, duration=0.01, outcome="probe")
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
        metrics.dhcp_packet(str(1000 + i), f"TYPE{i}", f"outcome{i}", f"host 52:54:00:00:00:{i:02x} ignored")
        metrics.dhcp_packet("67", "DISCOVER", "ignored", f"something new {i}")
        metrics.offer(str(200 + i))
        metrics.tftp_finished(bytes=1, retransmits=0, duration=0.0, outcome=f"weird {i}")
    s = scrape(metrics)
    packets = {labels for name, labels in s if name == "proxydhcp_dhcp_packets_total"}
    assert len(packets) == 2
    junk = {"port": "other", "message_type": "other", "outcome": "other", "reason": "host_ignored"}
    assert value(s, "proxydhcp_dhcp_packets_total", **junk) == 50
    new = {"port": "67", "message_type": "DISCOVER", "outcome": "ignored", "reason": "other"}
    assert value(s, "proxydhcp_dhcp_packets_total", **new) == 50
    assert value(s, "proxydhcp_offers_total", arch="other") == 50
    assert value(s, "proxydhcp_tftp_transfers_failed_total", reason="other") == 50


def test_own_registry_not_global() -> None:
    a, b = Metrics(), Metrics()  # two instances in one process: no "Duplicated timeseries" error
    a.offer("bios")
    assert b.registry.get_sample_value("proxydhcp_offers_total", {"arch": "bios"}) is None
    assert a.registry.get_sample_value("proxydhcp_offers_total", {"arch": "bios"}) == 1
    assert REGISTRY.get_sample_value("proxydhcp_offers_total", {"arch": "bios"}) is None


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("not a BOOTREQUEST", "not_bootrequest"),
        ("unsupported message type on 4011", "unsupported_message_type"),
        ("hardware address is not 6 bytes", "bad_hardware_address"),
        ("bad option: option 97 has length 3, expected 0 or 17", "bad_option"),
        ("PXE BIS not supported", "bis_unsupported"),
        ("subnet 10.0.0.0/24 not enabled", "subnet_not_enabled"),
        ("subnet of 192.0.2.7 not enabled", "subnet_not_enabled"),
        ("no boot file for efi-arm64", "no_boot_file"),
        ("boot file for efi-x64-http is not a URL", "boot_file_not_url"),
        ("4011 request without a client address", "no_client_address"),
        ("packet too short (12 bytes, need at least 240)", "too_short"),
        ("option 12 in options overruns the packet (200 bytes announced)", "option_overrun"),
        ("missing option 53 (message type)", "no_message_type"),
        (None, ""),
        ("subnet_not_enabled", "subnet_not_enabled"),
    ],
)
def test_reason_label(reason: str | None, label: str) -> None:
    assert reason_label(reason) == label
    assert label == "" or label in REASONS


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
        DecisionRecord(Outcome.ANSWER, Stage.SEND, port=67, msg_type="DISCOVER", arch="bios", **base), metrics
    )
    observe_decision(
        DecisionRecord(Outcome.ANSWER, Stage.SEND, port=4011, msg_type="REQUEST", arch="efi-x64", **base),
        metrics,
    )
    observe_decision(
        DecisionRecord(
            Outcome.IGNORE,
            Stage.POLICY,
            port=67,
            msg_type="DISCOVER",
            reason="no boot file for efi-arm64",
            **base,
        ),
        metrics,
    )
    observe_decision(
        DecisionRecord(
            Outcome.MALFORMED,
            Stage.DECODE,
            port=4011,
            iface="eth0",
            source="10.0.0.9:4011",
            reason="packet too short (3 bytes, need at least 240)",
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
    observe_decision(DecisionRecord(Outcome.IGNORE, Stage.DECODE, port=67, iface="lo", source="x"))  # no-op
    first = metrics_module.start("127.0.0.1:0")
    try:
        assert metrics_module.start("127.0.0.1:0") is first
        assert metrics_module.current() is first
        ignored = {"msg_type": "DISCOVER", "reason": "not a PXE client"}
        observe_decision(
            DecisionRecord(Outcome.IGNORE, Stage.CLASSIFY, port=67, iface="lo", source="x", **ignored)
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
    answer = DecisionRecord(Outcome.ANSWER, Stage.SEND, port=67, msg_type="DISCOVER", arch="bios", **base)
    for _ in range(3):
        observe_decision(answer, metrics)
    for mac in ("52:54:00:00:00:01", "52:54:00:00:00:02"):  # reasons that differ only by a MAC
        reason = f"host {mac} ignored"
        observe_decision(
            DecisionRecord(Outcome.IGNORE, Stage.POLICY, port=67, msg_type="DISCOVER", reason=reason, **base),
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
