"""HTTP boot on real firmware, beside the corporate dhcpd (issue 20's lab facts, checked here):

- OVMF's own HTTP boot over IPv4 (its PXE and IPv6 paths switched off with fw_cfg): the address
  comes from dhcpd, the URL from proxydhcp's offer (option 60 `HTTPClient`, no 4011 step); the
  firmware asks proxydhcp's HTTP server for ipxe.efi (HEAD, then GET); iPXE is then handed its
  script as a URL on that server (`--ipxe-boot-file http://…/boot.ipxe`, issue 15), fetches it
  there and the script fetches the marker over HTTP: no TFTP at all.
- SeaBIOS + iPXE ROM: TFTP for the script (a [[host]] entry names `boot.ipxe` for this MAC, the
  per-client way to keep one machine on TFTP while the rest of the network gets the URL), the
  script's marker over HTTP.

Success is the marker request in proxydhcp's HTTP log.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.e2e import wire
from tests.e2e.harness import HTTP_PORT, PXE_IP, BootResult, Topology, Vm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

HTTP_UEFI = Vm("http-uefi", "uefi-http", "52:54:00:7a:00:01")
HTTP_BIOS = Vm("http-bios", "bios", "52:54:00:7a:00:02")
URL = f"http://{PXE_IP}:{HTTP_PORT}/ipxe.efi"
IPXE_URL = f"http://{PXE_IP}:{HTTP_PORT}/boot.ipxe"  # the iPXE script by URL, on the built-in server


class HttpRun:
    def __init__(self, results: dict[str, BootResult], requests: list[dict[str, object]]) -> None:
        self.results = results
        self.requests = requests

    def of(self, ip: str) -> list[dict[str, object]]:
        return [r for r in self.requests if str(r.get("client", "")).rsplit(":", 1)[0] == ip]


@pytest.fixture(scope="module")
def http_run(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> HttpRun:
    with Topology(
        tmp_path_factory.mktemp("e2e-http"),
        http=True,
        ipxe_boot_file=IPXE_URL,
        hosts={HTTP_BIOS.mac: "boot.ipxe"},
    ) as topo:
        results = topo.boot([HTTP_UEFI, HTTP_BIOS])
        return HttpRun(results, topo.http_requests())


def _client_ip(dgs: list[wire.Datagram], mac: str) -> str:
    ips = [ip for ip in wire.client_ips(dgs, mac) if ip != "0.0.0.0"]
    assert ips, f"no address seen for {mac}"
    return sorted(ips)[0]


def test_ovmf_http_boot(http_run: HttpRun) -> None:
    r = http_run.results[HTTP_UEFI.name]
    assert r.ok, r.report()
    dgs = r.datagrams()
    discovers = [d for d in wire.discovers(dgs, HTTP_UEFI.mac) if d.dhcp and d.dhcp.text(60)[:4] == "HTTP"]
    assert discovers, "the firmware never sent an HTTPClient DISCOVER\n" + r.report()
    offers = [
        d.dhcp for d in dgs
        if d.dhcp and d.dhcp.op == 2 and d.src == PXE_IP and d.dhcp.chaddr == HTTP_UEFI.mac
        and d.dhcp.text(60) == "HTTPClient"
    ]  # fmt: skip
    assert offers and all(p.file == URL and p.yiaddr == "0.0.0.0" for p in offers), r.report()
    # no 4011 step for HTTP boot: the only 4011 requests are iPXE's own, later (user class iPXE)
    firmware_4011 = [
        d for d in dgs
        if d.dhcp and d.dhcp.op == 1 and d.dport == 4011 and d.dhcp.chaddr == HTTP_UEFI.mac
        and not d.dhcp.user_class()
    ]  # fmt: skip
    assert not firmware_4011, r.report()
    # the address came from dhcpd
    ip = _client_ip(dgs, HTTP_UEFI.mac)
    assert IPv4Address("10.77.0.100") <= IPv4Address(ip) <= IPv4Address("10.77.0.200"), r.report()
    seen = [(q.get("method"), q.get("file"), q.get("status")) for q in http_run.of(ip)]
    assert ("GET", "/ipxe.efi", 200) in seen, f"{seen}\n{r.report()}"
    assert seen.index(("HEAD", "/ipxe.efi", 200)) < seen.index(("GET", "/ipxe.efi", 200)), seen  # size first
    got = [q for q in http_run.of(ip) if q.get("method") == "GET" and q.get("file") == "/ipxe.efi"]
    assert got[0].get("bytes") == Path("/usr/lib/ipxe/ipxe.efi").stat().st_size
    assert ("GET", f"/{HTTP_UEFI.marker}", 200) in seen, f"{seen}\n{r.report()}"


def test_ipxe_loads_its_script_by_url_from_the_builtin_http_server(http_run: HttpRun) -> None:
    """Issue 15: iPXE (loaded by OVMF's HTTP boot) is handed `--ipxe-boot-file`, a URL on proxydhcp's
    HTTP server, fetches the script there, and the script's marker follows over HTTP."""
    r = http_run.results[HTTP_UEFI.name]
    assert r.ok, r.report()
    dgs = r.datagrams()
    # proxydhcp's answers to iPXE (its requests carry user class iPXE) named the script by its URL
    ipxe_xids = {
        d.dhcp.xid for d in dgs
        if d.dhcp and d.dhcp.op == 1 and d.dhcp.chaddr == HTTP_UEFI.mac and d.dhcp.user_class() == "iPXE"
    }  # fmt: skip
    to_ipxe = [
        d.dhcp for d in dgs
        if d.dhcp and d.dhcp.op == 2 and d.src == PXE_IP and d.dhcp.xid in ipxe_xids and d.dhcp.file
    ]  # fmt: skip
    assert to_ipxe and {p.file for p in to_ipxe} == {IPXE_URL}, r.report()
    ip = _client_ip(dgs, HTTP_UEFI.mac)
    seen = [(q.get("method"), q.get("file"), q.get("status")) for q in http_run.of(ip)]
    script = ("GET", "/boot.ipxe", 200)
    assert script in seen, f"{seen}\n{r.report()}"
    assert seen.index(("GET", "/ipxe.efi", 200)) < seen.index(script), seen
    assert seen.index(script) < seen.index(("GET", f"/{HTTP_UEFI.marker}", 200)), seen
    # no TFTP on this path: the script came over HTTP
    assert not [d for d in dgs if d.tftp and d.tftp.opcode == 1 and d.src == ip], r.report()


def test_bios_ipxe_tftp_then_http(http_run: HttpRun) -> None:
    r = http_run.results[HTTP_BIOS.name]
    assert r.ok, r.report()
    dgs = r.datagrams()
    ips = wire.client_ips(dgs, HTTP_BIOS.mac)
    names = [d.tftp.filename for d in dgs if d.tftp and d.tftp.opcode == 1 and d.src in ips]
    assert "boot.ipxe" in names, r.report()  # the script over TFTP
    assert HTTP_BIOS.marker not in names, r.report()  # ... its second stage over HTTP
    ip = _client_ip(dgs, HTTP_BIOS.mac)
    seen = [(q.get("method"), q.get("file"), q.get("status")) for q in http_run.of(ip)]
    assert ("GET", f"/{HTTP_BIOS.marker}", 200) in seen, f"{seen}\n{r.report()}"
