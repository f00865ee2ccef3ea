"""diagnose on the captures our own QEMU e2e boots recorded (tests/fixtures/e2e/, made by
`python3 -m tests.e2e.record_captures OUTDIR`): golden text + JSON, and the key facts asserted
apart from the golden text so a careless UPDATE_GOLDEN=1 cannot bless a wrong verdict.

UPDATE_GOLDEN=1 rewrites tests/golden/diagnose/e2e-*.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from proxydhcp.diagnose import diagnose

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "fixtures" / "e2e"
GOLDEN = ROOT / "golden" / "diagnose"
NAMES = [
    "e2e-bios-ok.pcap",
    "e2e-uefi-ok.pcap",
    "e2e-no-proxy-fails.pcap",
    "e2e-colocated-4011-silent.pcap",
    "e2e-sb-unsigned-refused.pcap",
    "e2e-shim-grub-stop.pcap",
    "e2e-ipxe-4011-unreachable.pcap",
]


def _check_golden(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
        return
    assert path.exists(), f"missing golden {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


def _only(name: str) -> dict[str, Any]:
    clients = diagnose(E2E / name).to_json()["clients"]
    assert len(clients) == 1, [c["mac"] for c in clients]
    client: dict[str, Any] = clients[0]
    return client


def test_fixture_set_is_complete_and_small() -> None:
    assert sorted(p.name for p in E2E.glob("*.pcap")) == sorted(NAMES)
    for name in NAMES:
        assert (E2E / name).stat().st_size < 1_500_000, name


@pytest.mark.parametrize("name", NAMES)
def test_golden(name: str) -> None:
    report = diagnose(E2E / name)
    _check_golden(GOLDEN / f"{name}.txt", report.render_text())
    _check_golden(GOLDEN / f"{name}.json", json.dumps(report.to_json(), indent=2) + "\n")


def test_bios_boot() -> None:
    c = _only("e2e-bios-ok.pcap")
    assert (c["mac"], c["firmware"], c["verdict"], c["pxe_error"]) == (
        "52:54:00:77:00:01",
        "bios",
        "booted",
        None,
    )
    assert c["findings"] == []
    assert "ok-52-54-00-77-00-01" in str(c["cause"])  # the stage-2 script's marker request


def test_uefi_boot_size_probe_not_flagged() -> None:
    c = _only("e2e-uefi-ok.pcap")
    assert (c["mac"], c["firmware"], c["verdict"], c["pxe_error"]) == (
        "52:54:00:77:00:02",
        "uefi",
        "booted",
        None,
    )
    assert c["findings"] == []
    transfers = {(t["file"], bool(t["size_probe"])) for t in c["tftp"]}
    assert ("ipxe.efi", True) in transfers and ("ipxe.efi", False) in transfers
    assert "ipxe.efi (850528 bytes" in str(c["cause"])


def test_no_proxy_is_e53() -> None:
    c = _only("e2e-no-proxy-fails.pcap")
    assert (c["mac"], c["verdict"], c["step"], c["pxe_error"]) == (
        "52:54:00:77:00:09",
        "failed",
        "dhcp",
        "PXE-E53",
    )
    assert "no boot filename" in str(c["cause"]) and "no proxy" in str(c["cause"])
    assert {f["check"] for f in c["findings"]} == {"no-boot-filename"}


def test_colocated_silent_4011() -> None:
    c = _only("e2e-colocated-4011-silent.pcap")
    assert (c["mac"], c["firmware"], c["verdict"], c["step"], c["pxe_error"]) == (
        "52:54:00:79:00:02",
        "uefi",
        "failed",
        "4011",
        "PXE-E16",
    )
    cause = str(c["cause"])
    assert "co-located" in cause and "PXEClient" in cause and "10.77.0.1:4011" in cause
    assert {f["check"] for f in c["findings"]} == {"4011-unanswered"}


def test_secure_boot_refusal() -> None:
    """OVMF with Secure Boot on fetched the unsigned ipxe.efi completely and refused it; its next
    packet is a DISCOVER for HTTP boot (arch 16), not iPXE's DHCP (issue 17)."""
    c = _only("e2e-sb-unsigned-refused.pcap")
    assert (c["mac"], c["firmware"], c["arch"], c["verdict"], c["step"]) == (
        "52:54:00:7a:00:02",
        "uefi",
        7,
        "failed",
        "boot file",
    )
    cause = str(c["cause"])
    assert cause.startswith(
        "the firmware did not run the boot file: Secure Boot rejected an unsigned or untrusted loader, "
        "or the architecture is wrong"
    )
    assert "ipxe.efi (850528 bytes" in cause and "arch 16" in cause
    assert str(c["fix"]).startswith("use a signed shim chain")
    assert {f["check"] for f in c["findings"]} == {"boot-file-not-run"}
    assert not c["ipxe"]


def test_grub_stop_without_next_server() -> None:
    """shim → Debian's network GRUB, dhcpd without next-server: shim's three 'not found' probes are
    harmless; GRUB is fetched completely and then the client is silent (issue 19)."""
    c = _only("e2e-shim-grub-stop.pcap")
    assert (c["mac"], c["verdict"], c["step"], c["pxe_error"]) == (
        "52:54:00:7a:00:03",
        "failed",
        "grub",
        None,
    )
    assert str(c["cause"]).startswith(
        "GRUB does not read proxy offers: it takes its server from the DHCP server's ACK"
    )
    assert "grubx64.efi (3843520 bytes" in str(c["cause"]) and "siaddr 0.0.0.0" in str(c["cause"])
    assert c["fix"] == (
        "set next-server on the DHCP server for PXE clients, use a GRUB with proxy support, or use the "
        "site-key iPXE chain"
    )
    assert {f["check"] for f in c["findings"]} == {"grub-no-server"}
    files = [(t["file"], t["complete"], (t["error"] or {}).get("code")) for t in c["tftp"]]
    assert files[2:] == [
        ("revocations_sku.efi", False, 1),
        ("revocations_sbat.efi", False, 1),
        ("shim_certificate_0.efi", False, 1),
        ("grubx64.efi", True, None),
    ]


def test_ipxe_stage_4011_of_the_dhcp_server() -> None:
    """dhcpd says PXEClient, proxydhcp answers 4011 on another host: EDK2 got ipxe.efi from it, iPXE
    asked the DHCP server's 4011 (ICMP unreachable) and died. Failed at the iPXE stage, not a
    capture that ended early (issue 13, item 5)."""
    c = _only("e2e-ipxe-4011-unreachable.pcap")
    assert (c["mac"], c["ipxe"], c["verdict"], c["step"]) == ("52:54:00:7b:00:02", True, "failed", "ipxe")
    cause = str(c["cause"])
    assert "10.77.0.1 announces PXEClient (option 60) but nothing answers on its port 4011" in cause
    assert (
        "co-located set-up without the co-located proxy" in cause
        and "option 60 set on the wrong server" in cause
    )
    assert "proxydhcp serve --colocated" in str(c["fix"])
    assert {f["check"] for f in c["findings"]} == {"4011-unanswered"}
