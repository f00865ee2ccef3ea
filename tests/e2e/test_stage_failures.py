"""A failure after the first boot file, on real firmware: iPXE's own DHCP stage (issue 13, item 5).

The corporate dhcpd says option 60 PXEClient and next-server = the proxy's host, where proxydhcp
binds port 4011 only (--colocated, but not on the DHCP server). EDK2 asks the proxy's 4011 (its
siaddr) and gets ipxe.efi; iPXE then asks 4011 of the DHCP server named in option 54, where nothing
listens (ICMP port unreachable), retries and gives up. `diagnose` must call this a failure at the
iPXE stage, not a capture that ended early.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.harness import CORP_IP, NO_IPV6, PXE_IP, REPO, BootResult, Topology, Vm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SPLIT_UEFI = Vm("split-uefi", "uefi", "52:54:00:7b:00:02", switched_off=NO_IPV6)


@pytest.fixture(scope="module")
def split(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    topo = Topology(
        tmp_path_factory.mktemp("e2e-split"), corp_pxeclient=True, next_server=PXE_IP, only_4011=True
    )
    with topo:
        return topo.boot([SPLIT_UEFI], timeout=150)[SPLIT_UEFI.name]


def test_ipxe_asks_the_dhcp_servers_4011_and_fails(split: BootResult) -> None:
    r = split
    assert r.outcome.startswith("firmware gave up"), r.report()
    dgs = r.datagrams()
    asks = [
        d for d in dgs if d.dhcp and d.dhcp.op == 1 and d.dport == 4011 and d.dhcp.chaddr == SPLIT_UEFI.mac
    ]
    firmware = [d for d in asks if d.dhcp and d.dhcp.user_class() != "iPXE"]
    ipxe = [d for d in asks if d.dhcp and d.dhcp.user_class() == "iPXE"]
    assert firmware and all(d.dst == PXE_IP for d in firmware), r.report()  # EDK2: siaddr
    assert len(ipxe) >= 2 and all(d.dst == CORP_IP for d in ipxe), r.report()  # iPXE: option 54
    assert not any(d.src == CORP_IP and d.sport == 4011 for d in dgs), r.report()
    out = subprocess.run(
        [sys.executable, "-m", "proxydhcp", "diagnose", "--json", str(r.pcaps[r.bridge])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    c = {c["mac"]: c for c in json.loads(out.stdout)["clients"]}[SPLIT_UEFI.mac]
    assert (c["verdict"], c["step"]) == ("failed", "ipxe"), c
    assert f"{CORP_IP} announces PXEClient (option 60) but nothing answers on its port 4011" in c["cause"], c
