"""explain: the dry run through classify → decide → build_reply → delivery, and `proxydhcp explain`."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from typer.testing import CliRunner

from proxydhcp.cli import app
from proxydhcp.config import Settings
from proxydhcp.dhcp.codes import MessageType
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.pxe.explain import ExplainResult, assumed_receiver, explain, synthetic_request

LOCAL = IPv4Address("10.77.0.2")
NET = IPv4Network("10.77.0.0/24")
MAC = "52:54:00:12:34:56"


def settings(**extra: Any) -> Settings:
    data: dict[str, Any] = {
        "subnet": [{"cidr": "10.77.0.0/24"}, {"cidr": "10.78.0.0/24"}],
        "boot": {
            "bios": "undionly.kpxe",
            "efi-x64": "ipxe.efi",
            "efi-arm64": "arm64.efi",
            "ipxe": "boot.ipxe",
        },
    }
    data.update(extra)
    return Settings(**data)


def run(**kw: Any) -> ExplainResult:
    kw.setdefault("local_ip", LOCAL)
    kw.setdefault("local_network", NET)
    return explain(settings(**kw.pop("conf", {})), **kw)


def test_synthetic_request_looks_like_firmware() -> None:
    p = synthetic_request(mac=MAC, arch=7, message_type=MessageType.DISCOVER)
    assert DhcpPacket.decode(p.encode()) == p
    assert p.broadcast and p.option(60) == b"PXEClient:Arch:00007:UNDI:003016" and p.option(93) == b"\x00\x07"
    assert p.option(97) == b"\x00" + bytes(10) + bytes.fromhex("525400123456")
    http = synthetic_request(mac=MAC, arch=16, message_type=MessageType.DISCOVER, user_class="iPXE")
    assert (http.option(60) or b"").startswith(b"HTTPClient") and http.option(77) == b"iPXE"


def test_bios_is_one_offer() -> None:
    r = run(mac=MAC, arch=0)
    assert r.answered and len(r.steps) == 1 and r.decision is not None
    assert r.decision.boot_file == "undionly.kpxe"
    text = r.text()
    assert "rule         global bios" in text and "sent to      255.255.255.255:68 (broadcast)" in text
    assert 'file    "undionly.kpxe"' in text and "43 VENDOR_SPECIFIC    pxe 6=08" in text
    assert text.endswith("result: boots undionly.kpxe from 10.77.0.2\n")


def test_uefi_goes_on_to_4011() -> None:
    r = run(mac=MAC, arch=7, client_ip=IPv4Address("10.77.0.50"))
    assert r.answered and [s.title for s in r.steps] == [
        "DHCPDISCOVER on port 67",
        "DHCPREQUEST to 10.77.0.2:4011",
    ]
    text = r.text()
    assert "offer style  binl" in text and "sent to      10.77.0.50:4011" in text
    assert "ACK (5)" in text and 'file    "ipxe.efi"' in text and "assumed" not in text


def test_uefi_without_client_ip_assumes_one() -> None:
    r = run(mac=MAC, arch=11)
    assert r.answered and "client address assumed to be 10.77.0.254" in r.text()


def test_ipxe_and_relay() -> None:
    r = run(mac=MAC, arch=0, user_class="iPXE", giaddr=IPv4Address("10.78.0.1"))
    assert r.decision is not None and r.decision.boot_file == "boot.ipxe"
    assert r.decision.subnet == IPv4Network("10.78.0.0/24")
    assert "sent to      10.78.0.1:67" in r.text()


def test_ignored_client_says_why() -> None:
    r = run(mac=MAC, arch=0, giaddr=IPv4Address("10.99.0.1"))
    assert not r.answered and r.ignore_reason == "subnet of 10.99.0.1 not enabled"
    assert r.text().endswith("result: no answer (subnet of 10.99.0.1 not enabled)\n")
    r = run(mac=MAC, arch=7, conf={"host": [{"mac": MAC, "ignore": True}]})
    assert r.ignore_reason == f"host {MAC} ignored" and len(r.steps) == 1


def test_colocated_starts_at_4011() -> None:
    r = run(mac=MAC, arch=7, conf={"server": {"colocated": True}})
    assert r.answered and [s.title for s in r.steps] == ["DHCPREQUEST to 10.77.0.2:4011"]
    assert "co-located mode" in r.text()


def test_assumed_receiver() -> None:
    assert assumed_receiver(settings()) == (IPv4Address("10.77.0.1"), NET)
    assert assumed_receiver(settings(), client_ip=IPv4Address("10.78.0.9"))[0] == IPv4Address("10.78.0.1")
    s = settings(server={"server_ip": "10.77.0.5"})
    assert assumed_receiver(s, giaddr=IPv4Address("10.78.0.1")) == (IPv4Address("10.77.0.5"), NET)
    assert assumed_receiver(settings(subnet=[])) == (IPv4Address(0), None)


def test_cli_explain(monkeypatch: Any) -> None:
    monkeypatch.delenv("PROXYDHCP_SERVER__SERVER_IP", raising=False)
    runner = CliRunner()
    args = ["explain", "-s", "10.77.0.0/24", "--boot-file", "efi-x64=ipxe.efi", "--mac", "52-54-00-12-34-56"]
    result = runner.invoke(app, [*args, "--arch", "efi-x64", "--local-ip", "10.77.0.2"])
    assert result.exit_code == 0, result.output
    assert (
        "boot file    ipxe.efi" in result.output and "result: boots ipxe.efi from 10.77.0.2" in result.output
    )
    result = runner.invoke(app, [*args, "--arch", "9"])
    assert result.exit_code == 0 and "note: receiving interface assumed to be 10.77.0.1" in result.output
    result = runner.invoke(app, [*args, "--arch", "bios"])
    assert result.exit_code == 0 and "result: no answer (no boot file for bios)" in result.output


def test_cli_explain_bad_input() -> None:
    runner = CliRunner()
    base = ["explain", "-s", "10.77.0.0/24", "--mac", MAC]
    for extra, message in (
        (["--arch", "sparc"], "unknown architecture"),
        (["--arch", "bios", "--giaddr", "10.0.0"], "--giaddr: not an IPv4 address"),
        (["--arch", "bios", "--mac", "zz"], "not a MAC address"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
