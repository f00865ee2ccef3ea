"""HTTP boot through the service (DESIGN.md §7): a DISCOVER with option 60 `HTTPClient` gets a
proxy offer with 60 `HTTPClient` and the boot file as a URL on the built-in HTTP server, which
then serves that URL; and no offer when there is no URL to give."""

from __future__ import annotations

import shutil
from ipaddress import IPv4Address

import pytest

from proxydhcp.dhcp.codes import MessageType, Opt
from tests.integration import dhcpclient as dc
from tests.integration.conftest import tftp_root

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

PXE, CLIENT = "10.77.0.2", "10.77.0.50"
MAC = "52:54:00:77:00:61"
HTTP_VENDOR = b"HTTPClient:Arch:00016:UNDI:003000"


def test_http_client_gets_a_url_on_the_builtin_server_and_fetches_it(lab, start_proxy) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLIENT})
    payload = bytes(range(256)) * 4096 + b"!"  # over the 1 MiB in-memory limit: sendfile
    root = tftp_root({"ipxe.efi": payload})
    try:
        proxy = start_proxy(
            "pxe",
            ["--interface", "eth0", "--subnet", "10.77.0.0/24", "--boot-file", "efi-x64-http=ipxe.efi",
             "--tftp-root", str(root), "--http-port", "8080"],
        )  # fmt: skip
        proxy.wait_log("HTTP serving")
        client = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")
        disc = dc.discover(MAC, 0x6101, arch=16, vendor=HTTP_VENDOR)
        got = dc.exchange(client, disc, ("255.255.255.255", 67), window=3.0,
                          until=lambda g: bool(dc.replies_for(g, 0x6101)))  # fmt: skip
        offers = [r.packet for r in dc.replies_for(got, 0x6101) if r.packet is not None]
        assert len(offers) == 1
        offer = offers[0]
        url = f"http://{PXE}:8080/ipxe.efi"
        assert offer.message_type == MessageType.OFFER
        assert offer.option(Opt.VENDOR_CLASS) == b"HTTPClient"
        assert offer.yiaddr == IPv4Address(0) and offer.siaddr == IPv4Address(0)
        assert offer.file == url.encode()
        assert offer.option(Opt.BOOTFILE) == url.encode()  # asked for in option 55
        assert not offer.has_option(Opt.VENDOR_SPECIFIC)  # no PXE menu, no 4011 step
        client.close()

        curl = shutil.which("curl")
        assert curl
        out = root / "fetched"
        lab.ns("cli").run([curl, "-sS", "-o", str(out), url])
        assert out.read_bytes() == payload
        line = proxy.wait_log("method=GET", "file=/ipxe.efi", "status=200")
        assert f"client={CLIENT}:" in line and f"bytes={len(payload)}" in line
    finally:
        shutil.rmtree(root)


def test_http_client_without_a_url_to_give_is_told_why(lab, start_proxy) -> None:
    lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": CLIENT})
    proxy = start_proxy(
        "pxe", ["--interface", "eth0", "--subnet", "10.77.0.0/24", "--boot-file", "efi-x64-http=ipxe.efi",
                "--no-tftp"],
    )  # fmt: skip
    client = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")
    got = dc.exchange(client, dc.discover(MAC, 0x6102, arch=16, vendor=HTTP_VENDOR), ("255.255.255.255", 67),
                      window=1.5)  # fmt: skip
    assert dc.replies_for(got, 0x6102) == []
    proxy.wait_log("ignore DISCOVER", "the HTTP server is off")
    client.close()
