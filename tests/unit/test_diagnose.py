"""diagnose: golden text + JSON for every capture in tests/fixtures/ and tests/fixtures/diagnose/,
expected verdicts for the real captures, and robustness (garbage files, truncation, CLI exit codes).

UPDATE_GOLDEN=1 rewrites tests/golden/diagnose/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dpkt
import pytest
from typer.testing import CliRunner

from proxydhcp.cli import app
from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.diagnose import CaptureError, diagnose

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
GOLDEN = ROOT / "golden" / "diagnose"
CAPTURES = sorted(
    [
        *FIXTURES.glob("*.pcap"),
        *FIXTURES.glob("*.pcapng"),
        *(FIXTURES / "diagnose").glob("*.pcap"),
        *(FIXTURES / "diagnose").glob("*.pcapng"),
    ]
)


def _check_golden(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_golden(capture: Path) -> None:
    report = diagnose(capture)
    _check_golden(GOLDEN / f"{capture.name}.txt", report.render_text())
    _check_golden(GOLDEN / f"{capture.name}.json", json.dumps(report.to_json(), indent=2) + "\n")


def _only(name: str) -> dict[str, object]:
    clients = diagnose(FIXTURES / name).to_json()["clients"]
    assert len(clients) == 1
    client: dict[str, object] = clients[0]
    return client


def test_real_bios_boot() -> None:
    c = _only("a-bios-ipxe-dnsmasq-proxy.pcap")
    assert (c["mac"], c["firmware"], c["verdict"], c["pxe_error"]) == (
        "52:54:00:77:00:01",
        "bios",
        "booted",
        None,
    )


def test_real_uefi_boot_probe_not_flagged() -> None:
    c = _only("b-uefi-edk2-dnsmasq-proxy.pcap")
    assert (c["firmware"], c["verdict"]) == ("uefi", "booted")
    assert c["findings"] == []
    assert any(t["size_probe"] for t in c["tftp"])  # type: ignore[union-attr]


def test_real_no_proxy_is_e53() -> None:
    c = _only("c-bios-no-proxy-fails.pcap")
    assert (c["verdict"], c["step"], c["pxe_error"]) == ("failed", "dhcp", "PXE-E53")
    assert "offers without 60/66/67 and no proxy" in str(c["cause"])


def test_real_colocated_4011_unanswered() -> None:
    c = _only("edk2-bz387-uefi-4011-unanswered.pcapng")
    assert (c["firmware"], c["verdict"], c["step"], c["pxe_error"]) == ("uefi", "failed", "4011", "PXE-E16")
    assert "co-located" in str(c["cause"])


def test_real_ipv6_boot_is_judged() -> None:
    # Hyper-V UEFI PXE over IPv6 (EDK II bug 767): a DHCPv6 server that names the boot file itself,
    # then TFTP over IPv6 from the lease. Once "out of scope"; judged like IPv4 now (issue 16).
    report = diagnose(FIXTURES / "edk2-bz767-hyperv-ipv6-tftp-windowsize.pcapng").to_json()
    (client,) = report["clients"]
    assert (client["firmware"], client["verdict"], client["step"]) == ("uefi", "booted", "TFTP")
    assert "bootx64.efi" in client["cause"]
    assert [e["event"] for e in client["timeline"]] == ["SOLICIT", "ADVERTISE", "REQUEST", "REPLY", "RRQ"]
    assert not any("out of scope" in n for n in report["notes"])
    assert any("no DHCPv4" in n for n in report["notes"])


@pytest.mark.parametrize(
    ("name", "verdict", "check", "code"),
    [
        ("no-offer.pcap", "failed", "no-offer", "PXE-E51"),
        ("only-proxy-offers.pcap", "failed", "only-proxy-offers", "PXE-E52"),
        ("uefi-43-discarded.pcap", "failed", "uefi-pxe10-discarded", "PXE-E16"),
        ("missing-siaddr.pcap", "incomplete", "missing-siaddr", None),
        ("4011-reply-to-68.pcapng", "failed", "4011-reply-misaddressed", "PXE-E16"),
        ("relay-broadcast.pcap", "incomplete", "relay-broadcast", None),
        ("no-97-short-reply.pcap", "booted", "uuid-not-echoed", None),
        ("no-97-short-reply.pcap", "booted", "short-reply", None),
        ("oack-blksize.pcap", "failed", "oack-blksize", "PXE-E3F"),
        ("tftp-not-found.pcap", "failed", "tftp-file-not-found", "PXE-E23"),
        ("tftp-timeout.pcap", "failed", "tftp-open-timeout", "PXE-E32"),
        # shim ran, and its only request (to the DHCP server, which has no TFTP) went unanswered
        ("second-stage-to-dhcp-server.pcap", "failed", "second-stage-to-dhcp-server", None),
        ("second-stage-to-dhcp-server.pcap", "failed", "tftp-open-timeout", None),
        ("two-proxies.pcap", "booted", "two-proxies", None),
        ("ipxe-no-boot-file.pcap", "failed", "ipxe-no-boot-file", None),
        ("ipxe-no-offer.pcap", "failed", "no-offer", None),
        ("ipxe-chainload-loop.pcap", "failed", "chainload-loop", None),
    ],
)
def test_hand_built_checks(name: str, verdict: str, check: str, code: str | None) -> None:
    report = diagnose(FIXTURES / "diagnose" / name).to_json()
    (client,) = report["clients"]
    assert client["verdict"] == verdict
    assert client["pxe_error"] == code
    assert check in {f["check"] for f in report["findings"]}


def test_normal_things_are_not_findings() -> None:
    for name in ("pxelinux-config-search.pcap", "uefi-good-sll.pcap", "uefi-good-sll2.pcapng"):
        report = diagnose(FIXTURES / "diagnose" / name).to_json()
        assert report["findings"] == [], name
        assert report["clients"][0]["verdict"] == "booted", name


def test_garbage_and_truncated(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    with pytest.raises(CaptureError):
        diagnose(junk)
    cut = tmp_path / "cut.pcap"
    data = (FIXTURES / "a-bios-ipxe-dnsmasq-proxy.pcap").read_bytes()
    cut.write_bytes(data[: len(data) - 100])
    report = diagnose(cut)
    assert report.stats.frames >= 29  # the cut record is dropped or short, never a crash
    assert report.clients


def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["diagnose", str(FIXTURES / "c-bios-no-proxy-fails.pcap"), "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["clients"][0]["pxe_error"] == "PXE-E53"
    junk = tmp_path / "x.pcap"
    junk.write_bytes(b"\0" * 10)
    assert runner.invoke(app, ["diagnose", str(junk)]).exit_code == 2
    assert runner.invoke(app, ["diagnose", str(tmp_path / "missing.pcap")]).exit_code == 2


def _discover_frame(i: int) -> bytes:
    dhcp = DhcpPacket(
        op=1,
        xid=i,
        chaddr=bytes.fromhex("5254000a0001"),
        options=(
            (Opt.MESSAGE_TYPE, bytes([MessageType.DISCOVER])),
            (Opt.VENDOR_CLASS, b"PXEClient:Arch:00000"),
        ),
    ).encode()
    udp = dpkt.udp.UDP(sport=68, dport=67, data=dhcp)
    udp.ulen = 8 + len(dhcp)
    ip = dpkt.ip.IP(src=bytes(4), dst=b"\xff" * 4, p=17, data=udp)
    ip.len = 20 + udp.ulen
    return bytes(ip)


def test_streaming_bounds_the_timeline_raw_ip(tmp_path: Path) -> None:
    path = tmp_path / "big.pcap"
    n = 5000
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=101)  # LINKTYPE_RAW: no link layer
        for i in range(n):
            writer.writepkt(_discover_frame(i), ts=1.0 + i)
    report = diagnose(path).to_json()
    (client,) = report["clients"]
    assert client["verdict"] == "failed"
    assert client["pxe_error"] == "PXE-E51"
    assert len(client["timeline"]) == 200
    assert client["timeline_dropped"] == n - 200


def test_random_and_mutated_frames_never_crash(tmp_path: Path) -> None:
    import random

    rng = random.Random(1234)
    seeds = [f for _, f in dpkt.pcap.Reader((FIXTURES / "a-bios-ipxe-dnsmasq-proxy.pcap").open("rb"))]
    path = tmp_path / "fuzz.pcap"
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for i in range(3000):
            frame = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 8)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            if i % 7 == 0:
                frame = frame[: rng.randrange(len(frame))]
            writer.writepkt(bytes(frame), ts=float(i))
    report = diagnose(path)
    assert report.stats.frames == 3000
    json.dumps(report.to_json())
    report.render_text()
