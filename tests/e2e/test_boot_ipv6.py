"""OVMF's "PXE over IPv6" through proxydhcp, beside dnsmasq as the network's ordinary DHCPv6 server
(M=1 router advertisements with the prefix on-link), issue 16/20: the firmware takes its address from
dnsmasq and its boot file from proxydhcp's Advertise and 4011 Reply, fetches ipxe.efi over TFTP on
IPv6; iPXE then reaches its second stage by DHCPv4, where the proxy answers iPXE (iPXE drops an
Advertise without an address, so the IPv6 proxy cannot be its route: README, "IPv6").
"""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.harness import HTTP6_URL, PXE_IP6, BootResult, Topology, Vm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

UEFI6 = Vm("uefi6", "uefi6", "52:54:00:77:00:06")


@pytest.fixture(scope="module")
def ipv6_boot(
    e2e_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BootResult, str, list[dict]]:
    with Topology(tmp_path_factory.mktemp("e2e-ipv6"), ipv6=True) as topo:
        result = topo.boot([UEFI6])[UEFI6.name]
        assert topo.batch_dir is not None
        wire_text = (topo.batch_dir / "tcpdump-br0.txt").read_text(errors="replace")
        assert topo.proxy_log is not None
        records = []
        for line in topo.proxy_log.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return result, wire_text, records


def test_ovmf_pxe_over_ipv6_reaches_ipxe_second_stage(ipv6_boot: tuple[BootResult, str, list[dict]]) -> None:
    result, wire_text, records = ipv6_boot
    assert result.ok, result.report()
    # The firmware's path was IPv6: the proxy's Advertise (547) and the 4011 Reply, then TFTP on IPv6.
    v6 = [r for r in records if r.get("outcome") == "answer" and str(r.get("source", "")).startswith("[")]
    answered = {(r.get("port"), r.get("msg_type")) for r in v6}
    assert {(547, "SOLICIT"), (4011, "REQUEST")} <= answered, result.report()
    # The firmware's Advertise and 4011 Reply name ipxe.efi; iPXE's own Solicit (user class iPXE) is
    # answered with the iPXE script, which iPXE ignores (no address in the Advertise).
    firmware = {r.get("boot_file") for r in v6 if not str(r.get("rule", "")).endswith(" ipxe")}
    assert firmware == {f"tftp://[{PXE_IP6}]/ipxe.efi"}, v6
    assert re.search(rf'IP6 \S+ > {re.escape(PXE_IP6)}\.69: .*RRQ "ipxe.efi"', wire_text), wire_text[-3000:]
    # The 4011 Reply left from [proxy]:4011 back to the client's port 4011 (EDK II reads only that).
    assert re.search(rf"IP6 {re.escape(PXE_IP6)}\.4011 > \S+\.4011: ", wire_text), wire_text[-3000:]
    # iPXE's second stage: the marker named after the MAC, fetched by the stage-2 script.
    assert f'RRQ "{UEFI6.marker}"' in wire_text


UEFI6_HTTP = Vm("uefi6http", "uefi6http", "52:54:00:77:00:07")


@pytest.fixture(scope="module")
def http6_boot(
    e2e_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BootResult, list[dict]]:
    workdir = tmp_path_factory.mktemp("e2e-http6")
    with Topology(workdir, http6=True) as topo:
        result = topo.boot([UEFI6_HTTP])[UEFI6_HTTP.name]
        assert topo.proxy_log is not None
        records = [json.loads(line) for line in topo.proxy_log.read_text(errors="replace").splitlines()
                   if line.startswith("{")]  # fmt: skip
    return result, records


def test_ovmf_http_boot_over_ipv6(http6_boot: tuple[BootResult, list[dict]]) -> None:
    result, records = http6_boot
    assert result.ok, result.report()
    # HTTPClient Solicit answered with the boot table's URL and vendor class HTTPClient; no 4011 step.
    http = [
        r
        for r in records
        if r.get("port") == 547 and r.get("outcome") == "answer" and r.get("arch") == "efi-x64-http"
    ]
    assert http and {r.get("boot_file") for r in http} == {HTTP6_URL}, records
    assert not [r for r in records if r.get("port") == 4011 and str(r.get("source", "")).startswith("[")]
    # The boot table names ipxe.efi: the proxy made it a URL on its own HTTP server, named by its
    # address in the prefix, and the firmware fetched it there over IPv6 (issue 16: HTTP over IPv6
    # reuses the HTTP server), each request one of the server's own records.
    assert {r.get("rule") for r in http} == {"global efi-x64-http"}, http
    fetched = [
        r for r in records
        if r.get("method") in ("HEAD", "GET") and str(r.get("client", "")).startswith("[fd77::")
        and "ipxe.efi" in str(r.get("file", ""))
    ]  # fmt: skip
    assert any(r.get("method") == "GET" and r.get("status") in (200, 206) for r in fetched), records[-20:]
