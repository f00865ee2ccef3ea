"""diagnose on IPv6 network boots: the hand-built captures of tests/fixtures/diagnose/make_captures6.py
(EDK II's PXE over IPv6 sequence) judged with the IPv4 report's verdict/step/cause/fix/timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxydhcp.diagnose import diagnose
from tests.fixtures.diagnose import make_captures6

HERE = Path(make_captures6.__file__).resolve().parent


@pytest.mark.parametrize(
    ("capture", "verdict", "step", "failure", "pxe_error"),
    [
        ("dhcp6-booted.pcap", "booted", "TFTP", None, None),
        ("dhcp6-no-bootfile-url.pcap", "failed", "Advertise", "dhcp6-no-bootfile-url", "PXE-E16"),
        ("dhcp6-solicit-repeated.pcap", "failed", "Solicit", "dhcp6-no-proxy", "PXE-E16"),
        ("dhcp6-4011-reply-lost.pcap", "failed", "4011 reply", "dhcp6-4011-reply-lost", "PXE-E16"),
        ("dhcp6-no-vendor-class.pcap", "failed", "Advertise", "dhcp6-no-vendor-class", None),
        ("dhcp6-no-4011-request.pcap", "failed", "4011 request", "dhcp6-no-4011-request", "PXE-E16"),
    ],
)
def test_ipv6_boot_verdicts(
    capture: str, verdict: str, step: str, failure: str | None, pxe_error: str | None
) -> None:
    report = diagnose(HERE / capture)
    assert len(report.clients) == 1
    judged = report.clients[0].verdict
    assert (judged.verdict, judged.step, judged.failure, judged.pxe_error) == (
        verdict,
        step,
        failure,
        pxe_error,
    )
    data = report.to_json()
    client = data["clients"][0]
    assert client["mac"] == "52:54:00:12:34:56" and client["arch"] == 7 and client["firmware"] == "uefi"
    assert client["verdict"] == verdict and client["step"] == step and client["cause"]
    assert client["timeline"][0]["event"] == "SOLICIT"
    assert not any("out of scope" in note for note in data["notes"])
    text = report.render_text()
    assert f"verdict: {'BOOTED' if verdict == 'booted' else 'FAILED at ' + step}" in text


def test_classic_failure_names_the_missing_option_and_the_repeated_solicit() -> None:
    report = diagnose(HERE / "dhcp6-no-bootfile-url.pcap")
    checks = {f.check: f for f in report.findings}
    assert "option 59" in checks["dhcp6-no-bootfile-url"].message
    assert checks["dhcp6-solicit-repeated"].message == "Solicit repeated (3 times)"
    assert [e.kind for e in report.clients[0].client.events].count("SOLICIT") == 3


def test_captures_are_what_the_generator_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(make_captures6, "HERE", tmp_path)
    make_captures6.main()
    for made in tmp_path.glob("dhcp6-*.pcap"):
        assert made.read_bytes() == (HERE / made.name).read_bytes(), made.name


def test_real_ovmf_pxe_over_ipv6_capture() -> None:
    # Recorded by tests/e2e/test_boot_ipv6.py (OVMF 2022.11 beside dnsmasq DHCPv6 + RA), the DHCPv6,
    # 4011 and TFTP read requests only: the firmware boots; iPXE's own Solicit is explained, not failed.
    report = diagnose(HERE.parent / "ovmf-pxev6-dnsmasq-proxydhcp.pcap")
    firmware, ipxe = report.clients
    assert (firmware.client.mac, firmware.verdict.verdict, firmware.verdict.step) == (
        "52:54:00:77:00:06", "booted", "TFTP",
    )  # fmt: skip
    kinds = [e.kind for e in firmware.client.events]
    assert kinds[:3] == ["SOLICIT", "ADVERTISE", "ADVERTISE"] and "RRQ" in kinds
    assert ipxe.client.ipxe and ipxe.verdict.verdict == "incomplete"
    assert "drops every Advertise without an address" in ipxe.verdict.cause
