"""decide: subnet choice, the boot-file precedence, server addresses, and every ignore reason."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from proxydhcp.config import Settings
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.outcome import Ignore, Reason
from proxydhcp.pxe.classify import ClientInfo, classify
from proxydhcp.pxe.policy import BootDecision, Receiver, decide

RequestFactory = Callable[..., DhcpPacket]
LOCAL = Receiver(IPv4Address("10.77.0.2"), IPv4Network("10.77.0.0/24"))
MAC = "52:54:00:12:34:56"


def settings(**extra: Any) -> Settings:
    data: dict[str, Any] = {
        "subnet": [
            {"cidr": "10.77.0.0/24"},
            {"cidr": "10.78.0.0/24", "boot": {"efi-arm64": "snp-arm64.efi"}, "next_server": "10.78.0.6"},
        ],
        "boot": {
            "bios": "undionly.kpxe",
            "efi-x64": "ipxe.efi",
            "efi-arm64": "arm64.efi",
            "ipxe": "boot.ipxe",
        },
    }
    data.update(extra)
    return Settings(**data)


@pytest.fixture
def info(make_request: RequestFactory) -> Callable[..., ClientInfo]:
    def build(port: int = 67, source: str = "0.0.0.0", **fields: Any) -> ClientInfo:
        if port == 4011:
            fields.setdefault("mtype", 3)
        result = classify(make_request(**fields), port=port, source_ip=IPv4Address(source))
        assert isinstance(result, ClientInfo), result
        return result

    return build


def ok(result: BootDecision | Ignore) -> BootDecision:
    assert isinstance(result, BootDecision), result
    return result


@pytest.mark.parametrize(
    ("arch", "file", "key", "style"),
    [
        (0, "undionly.kpxe", "bios", "bios"),
        (None, "undionly.kpxe", "bios", "bios"),  # no 93, no Arch: in 60 → legacy BIOS
        (7, "ipxe.efi", "efi-x64", "binl"),
        (9, "ipxe.efi", "efi-x64", "binl"),  # 9 mapped to x64 (RFC 4578 erratum 4624)
        (11, "arm64.efi", "efi-arm64", "binl"),
    ],
)
def test_arch_table(
    info: Callable[..., ClientInfo], arch: int | None, file: str, key: str, style: str
) -> None:
    vendor = b"PXEClient" if arch is None else None
    d = ok(decide(info(arch=arch, vendor=vendor), settings(), LOCAL))
    assert (d.boot_file, d.arch_key, d.offer_style) == (file, key, style)
    assert d.rule == f"global {key}" and d.subnet == IPv4Network("10.77.0.0/24")
    assert d.server_ip == d.next_server == IPv4Address("10.77.0.2")


def test_relayed_client_uses_giaddr_subnet_and_its_overrides(info: Callable[..., ClientInfo]) -> None:
    d = ok(decide(info(arch=11, giaddr="10.78.0.1"), settings(), LOCAL))
    assert d.subnet == IPv4Network("10.78.0.0/24") and d.rule == "subnet 10.78.0.0/24 efi-arm64"
    assert d.boot_file == "snp-arm64.efi" and d.next_server == IPv4Address("10.78.0.6")
    assert d.server_ip == IPv4Address("10.77.0.2")  # option 54: still us, on the receiving interface


def test_ipxe_client_gets_the_ipxe_file(info: Callable[..., ClientInfo]) -> None:
    for extra in (((77, b"iPXE"),), ((175, b"\x13\x01\x01"),)):
        d = ok(decide(info(arch=7, extra=extra), settings(), LOCAL))
        assert (d.boot_file, d.rule) == ("boot.ipxe", "global ipxe")


def test_subnet_ipxe_overrides_global(info: Callable[..., ClientInfo]) -> None:
    s = settings(subnet=[{"cidr": "10.77.0.0/24", "boot": {"ipxe": "http://10.77.0.2/menu.ipxe"}}])
    d = ok(decide(info(arch=0, extra=((77, b"iPXE"),)), s, LOCAL))
    assert (d.boot_file, d.rule) == ("http://10.77.0.2/menu.ipxe", "subnet 10.77.0.0/24 ipxe")


def test_ipxe_without_ipxe_key_falls_back_to_arch(info: Callable[..., ClientInfo]) -> None:
    s = settings(boot={"bios": "undionly.kpxe"})
    d = ok(decide(info(arch=0, extra=((77, b"iPXE"),)), s, LOCAL))
    assert d.boot_file == "undionly.kpxe"


def test_subnet_table_beats_global(info: Callable[..., ClientInfo]) -> None:
    s = settings(subnet=[{"cidr": "10.77.0.0/24", "boot": {"bios": "lpxelinux.0"}}])
    d = ok(decide(info(arch=0), s, LOCAL))
    assert (d.boot_file, d.rule) == ("lpxelinux.0", "subnet 10.77.0.0/24 bios")


def test_host_entry_beats_everything(info: Callable[..., ClientInfo]) -> None:
    s = settings(host=[{"mac": "52-54-00-12-34-56", "boot_file": "special.efi", "next_server": "10.77.0.9"}])
    d = ok(decide(info(arch=7, extra=((77, b"iPXE"),)), s, LOCAL))
    assert (d.boot_file, d.rule, d.next_server) == ("special.efi", f"host {MAC}", IPv4Address("10.77.0.9"))
    assert d.server_ip == IPv4Address("10.77.0.2")


def test_host_for_an_arch_without_table_entry(info: Callable[..., ClientInfo]) -> None:
    s = settings(boot={}, host=[{"mac": MAC, "boot_file": "only-me.efi"}])
    assert ok(decide(info(arch=7), s, LOCAL)).boot_file == "only-me.efi"


def test_server_ip_setting(info: Callable[..., ClientInfo]) -> None:
    d = ok(decide(info(arch=0), settings(server={"server_ip": "10.77.0.100"}), LOCAL))
    assert d.server_ip == d.next_server == IPv4Address("10.77.0.100")


def test_4011_subnet_from_ciaddr_then_source(info: Callable[..., ClientInfo]) -> None:
    far = Receiver(IPv4Address("10.77.0.2"))
    d = ok(decide(info(port=4011, arch=7, ciaddr="10.78.0.50", source="10.78.0.50"), settings(), far))
    assert d.subnet == IPv4Network("10.78.0.0/24") and d.offer_style == "binl"
    d = ok(decide(info(port=4011, arch=7, source="10.78.0.50"), settings(), far))
    assert d.subnet == IPv4Network("10.78.0.0/24")


def test_http_boot(info: Callable[..., ClientInfo]) -> None:
    s = settings(boot={"efi-x64-http": "http://10.77.0.2/ipxe.efi"})
    d = ok(decide(info(arch=16, vendor=b"HTTPClient:Arch:00016:UNDI:003001"), s, LOCAL))
    assert (d.offer_style, d.arch_key, d.boot_file) == ("http", "efi-x64-http", "http://10.77.0.2/ipxe.efi")


def test_http_boot_name_becomes_a_url_on_the_builtin_server(info: Callable[..., ClientInfo]) -> None:
    client = info(arch=16, vendor=b"HTTPClient:Arch:00016:UNDI:003001")
    s = settings(boot={"efi-x64-http": "/efi/ipxe x.efi"}, http={"port": 8080})
    assert ok(decide(client, s, LOCAL)).boot_file == "http://10.77.0.2:8080/efi/ipxe%20x.efi"
    # server_ip names the server in the URL; port 80 is left out of it
    s = settings(boot={"efi-x64-http": "ipxe.efi"}, http={"port": 80}, server={"server_ip": "10.77.0.9"})
    assert ok(decide(client, s, LOCAL)).boot_file == "http://10.77.0.9/ipxe.efi"
    # an explicit URL stays as it is, built-in server or not
    s = settings(boot={"efi-x64-http": "http://boot.example/x.efi"}, http={"port": 8080})
    assert ok(decide(client, s, LOCAL)).boot_file == "http://boot.example/x.efi"
    # [http] enabled = false: no URL to give, and the record says so
    s = settings(boot={"efi-x64-http": "ipxe.efi"}, http={"port": 8080, "enabled": False})
    refused = decide(client, s, LOCAL)
    assert isinstance(refused, Ignore) and refused.reason is Reason.BOOT_FILE_NOT_URL
    assert str(refused) == "boot file for efi-x64-http is not a URL and the HTTP server is off (--http-port)"
    # a URL too long for the BOOTP file field: refused here, not a crash in reply building
    s = settings(boot={"efi-x64-http": "d/" * 60 + "x.efi"}, http={"port": 8080})
    reason = decide(client, s, LOCAL)
    assert isinstance(reason, Ignore) and reason.reason is Reason.URL_TOO_LONG


@pytest.mark.parametrize(
    ("fields", "conf", "receiver", "reason"),
    [
        ({}, {}, Receiver(IPv4Address("10.99.0.2"), IPv4Network("10.99.0.0/24")),
         "subnet 10.99.0.0/24 not enabled"),
        ({}, {}, Receiver(IPv4Address("10.99.0.2")), "subnet of 10.99.0.2 not enabled"),
        ({"giaddr": "10.79.0.1"}, {}, LOCAL, "subnet of 10.79.0.1 not enabled"),
        ({"port": 4011, "ciaddr": "10.79.0.5"}, {}, LOCAL, "subnet of 10.79.0.5 not enabled"),
        ({}, {"subnet": []}, LOCAL, "subnet 10.77.0.0/24 not enabled"),
        ({}, {"host": [{"mac": MAC, "ignore": True}]}, LOCAL, f"host {MAC} ignored"),
        ({"arch": 6}, {}, LOCAL, "no boot file for efi-ia32"),
        ({"arch": 2}, {}, LOCAL, "no boot file for 2"),
        ({"arch": 0}, {"boot": {}}, LOCAL, "no boot file for bios"),
        ({"arch": 16, "vendor": b"HTTPClient:Arch:00016"}, {"boot": {"efi-x64-http": "ipxe.efi"}}, LOCAL,
         "boot file for efi-x64-http is not a URL and the HTTP server is off (--http-port)"),
    ],
)  # fmt: skip
def test_ignore_reasons(
    info: Callable[..., ClientInfo],
    fields: dict[str, Any],
    conf: dict[str, Any],
    receiver: Receiver,
    reason: str,
) -> None:
    result = decide(info(**fields), settings(**conf), receiver)
    assert isinstance(result, Ignore) and str(result) == reason


@pytest.mark.parametrize(
    ("uefi_mode", "arch", "style"),
    [
        ({}, 7, "binl"),
        ({"efi-x64": "direct"}, 7, "bios"),
        ({"efi-x64": "direct"}, 9, "bios"),  # 9 is x64 too
        ({"efi-x64": "direct"}, 11, "binl"),
        ({"default": "direct"}, 11, "bios"),
        ({"default": "direct", "efi-arm64": "binl"}, 11, "binl"),
        ({"default": "direct"}, 0, "bios"),
    ],
)
def test_uefi_mode_per_architecture(
    info: Callable[..., ClientInfo], uefi_mode: dict[str, str], arch: int, style: str
) -> None:
    d = ok(decide(info(arch=arch), settings(server={"uefi_mode": uefi_mode}), LOCAL))
    assert d.offer_style == style


@pytest.mark.parametrize(
    ("extra", "giaddr", "expected"),
    [
        ({}, "0.0.0.0", "10.77.0.2"),  # the receiving interface's, converted once per Receiver
        # server_ip's, converted once per settings
        ({"server": {"server_ip": "10.77.0.100"}}, "0.0.0.0", "10.77.0.100"),
        ({}, "10.78.0.1", "10.78.0.6"),  # the subnet's own next_server, converted per answer
        # the host's own next_server
        ({"host": [{"mac": MAC, "boot_file": "a.efi", "next_server": "10.77.0.9"}]}, "0.0.0.0", "10.77.0.9"),
    ],
)
def test_next_server_text_is_the_next_server(
    info: Callable[..., ClientInfo], extra: dict[str, Any], giaddr: str, expected: str
) -> None:
    """The texts converted once per interface or settings are those of the addresses chosen."""
    d = ok(decide(info(arch=0, giaddr=giaddr), settings(**extra), LOCAL))
    assert d.next_server_text == str(d.next_server) == expected
    assert d.subnet_text == str(d.subnet)


def test_receiver_text_is_derived_and_not_compared() -> None:
    assert LOCAL.local_text == "10.77.0.2"
    assert Receiver(IPv4Address("10.77.0.2")) == Receiver(IPv4Address("10.77.0.2"), None)
    assert Settings().server.server_ip_text == ""
