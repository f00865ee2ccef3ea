"""`proxydhcp explain -6`: the DHCPv6 pipeline on EDK II's Solicit and 4011 Request, no sockets."""

from __future__ import annotations

from ipaddress import IPv6Address

from typer.testing import CliRunner

from proxydhcp.cli import app
from proxydhcp.config import load_settings
from proxydhcp.pxe6.explain import explain6

FLAGS = ["-s", "2001:db8:1::/64", "-s", "10.0.0.0/24", "--boot-file", "efi-x64=ipxe.efi",
         "--ipxe-boot-file", "boot.ipxe"]  # fmt: skip


def run(*args: str) -> str:
    result = CliRunner().invoke(app, ["explain", "-6", "--mac", "52:54:00:12:34:56", *FLAGS, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_pxe_client_gets_advertise_then_4011_reply() -> None:
    out = run()
    assert "Solicit on port 547 from [fe80::5054:ff:fe12:3456]:546" in out
    assert "boot-service Request on port 4011" in out
    assert "59 bootfile-url: 'tftp://[2001:db8:1::1]/ipxe.efi'" in out
    assert "3 ia-na" not in out  # never an address
    assert out.rstrip().endswith("result: boots tftp://[2001:db8:1::1]/ipxe.efi")


def test_ipxe_gets_the_script_and_relayed_clients_their_prefix() -> None:
    assert "boots tftp://[2001:db8:1::1]/boot.ipxe" in run("--user-class", "iPXE")
    out = run("--giaddr", "2001:db8:1::fe", "--local-ip", "2001:db8:1::5")
    assert "(relay)" in out and "boots tftp://[2001:db8:1::5]/ipxe.efi" in out
    unknown = run("--giaddr", "2001:db8:9::1")
    assert "no answer: prefix of 2001:db8:9::1 not enabled" in unknown


def test_http_client_has_no_4011_step() -> None:
    url = "http://[2001:db8:1::1]:8080/ipxe.efi"
    settings = load_settings(None, {"subnet": [{"cidr": "2001:db8:1::/64"}], "boot": {"efi-x64-http": url}})
    result = explain6(settings, mac="52:54:00:12:34:56", arch=16, client_ip=IPv6Address("2001:db8:1::9"))
    assert len(result.steps) == 1 and "http://[2001:db8:1::1]:8080/ipxe.efi" in result.text()


def test_bad_address_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        app, ["explain", "-6", "--mac", "52:54:00:12:34:56", *FLAGS, "--giaddr", "10.0.0.1"]
    )
    assert result.exit_code == 2 and "--giaddr: not an IPv6 address: '10.0.0.1'" in result.output
