"""Real PXE firmware boots through proxydhcp (SeaBIOS + iPXE ROM, OVMF + EDK2 PXE, pxelinux).

Three throwaway networks, each booted once with its VMs in parallel (module fixtures); the tests
then check what the wire shows. A failed assertion prints the VM's serial console, proxydhcp's
log and the capture's timeline (BootResult.report()).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import wire
from tests.e2e.harness import CORP_IP, PXE_IP, REPO, RTR2_IP, BootResult, Topology, Vm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

BIOS = Vm("bios", "bios", "52:54:00:77:00:01")
UEFI = Vm("uefi", "uefi", "52:54:00:77:00:02")
PXELINUX = Vm("pxelinux", "pxelinux", "52:54:00:77:00:03")
NO_PROXY = Vm("noproxy", "bios", "52:54:00:77:00:09")
RELAY_BIOS = Vm("relay-bios", "bios", "52:54:00:78:00:01", segment="relay")
RELAY_UEFI = Vm("relay-uefi", "uefi", "52:54:00:78:00:02", segment="relay")
COLO_BIOS = Vm("colo-bios", "bios", "52:54:00:79:00:01")
COLO_UEFI = Vm("colo-uefi", "uefi", "52:54:00:79:00:02")


@dataclass
class Run:
    """The outcome of one network's boots; the network itself is already gone."""

    results: dict[str, BootResult]
    proxy_ip: str
    proxy_ports: frozenset[int]
    colocated: bool

    def proxy_replies(self, dgs: list[wire.Datagram], mac: str | None = None) -> list[wire.Datagram]:
        """DHCP replies made by proxydhcp: sent from its address and ports, or (not co-located, where
        dhcpd shares the address) relayed copies naming it in option 54."""
        out = []
        for d in dgs:
            p = d.dhcp
            if not p or p.op != 2 or (mac and p.chaddr != mac):
                continue
            ours = d.src == self.proxy_ip and d.sport in self.proxy_ports
            relayed = not self.colocated and p.options.get(54) == bytes(map(int, self.proxy_ip.split(".")))
            if ours or relayed:
                out.append(d)
        return out


def _run(topo: Topology, boots: list[list[Vm]], stop_proxy_then: list[Vm] | None = None) -> Run:
    with topo:
        results: dict[str, BootResult] = {}
        for batch in boots:
            results.update(topo.boot(batch))
        if stop_proxy_then:
            topo.stop_proxy()
            results.update(topo.boot(stop_proxy_then, timeout=120))
        return Run(results, topo.proxy_ip, topo.proxy_ports, topo.colocated)


@pytest.fixture(scope="module")
def local(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    # pxelinux: QEMU's BIOS ROM is iPXE and says so (user class), which would get boot.ipxe; a
    # [[host]] entry outranks that rule and hands this MAC pxelinux.0.
    topo = Topology(tmp_path_factory.mktemp("e2e-local"), hosts={PXELINUX.mac: "pxelinux.0"})
    return _run(topo, [[BIOS, UEFI, PXELINUX]], stop_proxy_then=[NO_PROXY])


@pytest.fixture(scope="module")
def relayed(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(Topology(tmp_path_factory.mktemp("e2e-relay"), relay=True), [[RELAY_BIOS, RELAY_UEFI]])


@pytest.fixture(scope="module")
def colocated(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(Topology(tmp_path_factory.mktemp("e2e-colo"), colocated=True), [[COLO_BIOS, COLO_UEFI]])


def booted(run: Run, vm: Vm) -> tuple[BootResult, list[wire.Datagram]]:
    r = run.results[vm.name]
    assert r.ok, r.report()
    return r, r.datagrams()


def rrqs(dgs: list[wire.Datagram], mac: str) -> list[wire.Datagram]:
    ips = wire.client_ips(dgs, mac)
    return [d for d in dgs if d.tftp and d.tftp.opcode == 1 and d.src in ips]


def test_bios(local: Run) -> None:
    """SeaBIOS + iPXE ROM: proxy offer names the script, the script's second request arrives."""
    r, dgs = booted(local, BIOS)
    offers = local.proxy_replies(dgs, BIOS.mac)
    assert any(d.dhcp and d.dhcp.file == "boot.ipxe" for d in offers), r.report()
    assert [d.dst for d in rrqs(dgs, BIOS.mac)] == [PXE_IP, PXE_IP], r.report()


def test_uefi(local: Run) -> None:
    """EDK2: proxy offer + 4011 → ipxe.efi; ipxe.efi's own DHCP (user class iPXE) → boot.ipxe, once."""
    r, dgs = booted(local, UEFI)
    to_4011 = [d for d in dgs if d.dhcp and d.dhcp.op == 1 and d.dport == 4011 and d.dhcp.chaddr == UEFI.mac]
    assert any(not d.dhcp.user_class() for d in to_4011 if d.dhcp), (
        "EDK2 never came to port 4011\n" + r.report()
    )
    files = [d.dhcp.file for d in local.proxy_replies(dgs, UEFI.mac) if d.dhcp and d.sport == 4011]
    assert "ipxe.efi" in files and "boot.ipxe" in files, r.report()
    names = [d.tftp.filename for d in rrqs(dgs, UEFI.mac) if d.tftp]
    full = [t for t in wire.transfers(dgs) if t.filename == "ipxe.efi" and t.complete]
    assert len(full) == 1, f"ipxe.efi loaded {len(full)} times (chainload loop?)\n" + r.report()
    assert names[-2:] == ["boot.ipxe", UEFI.marker], r.report()


def test_pxelinux(local: Run) -> None:
    """pxelinux.0 (host entry), then ldlinux.c32 and the pxelinux.cfg/ search path, with tsize/blksize."""
    r, dgs = booted(local, PXELINUX)
    names = [d.tftp.filename for d in rrqs(dgs, PXELINUX.mac) if d.tftp]
    assert names[:2] == ["pxelinux.0", "ldlinux.c32"] and PXELINUX.marker in names[2:], r.report()
    ldlinux = [t for t in wire.transfers(dgs) if t.filename == "ldlinux.c32"]
    assert ldlinux and ldlinux[0].complete, r.report()
    assert {"tsize", "blksize"} <= set(ldlinux[0].options) and "tsize" in ldlinux[0].oack, r.report()
    assert ldlinux[0].size == Path("/usr/lib/syslinux/modules/bios/ldlinux.c32").stat().st_size, r.report()


@pytest.mark.parametrize("vm", [RELAY_BIOS, RELAY_UEFI], ids=["bios", "uefi"])
def test_relayed(relayed: Run, vm: Vm) -> None:
    """Client behind a router whose dhcrelay forwards to corp and proxydhcp (ip helper-address)."""
    r, _client_side = booted(relayed, vm)
    server_side = r.datagrams("br0")
    offers = [d for d in relayed.proxy_replies(server_side, vm.mac) if d.sport == 67]
    assert offers, "no proxy offer towards the relay\n" + r.report()
    assert all(d.dst == RTR2_IP and d.dport == 67 and d.dhcp and d.dhcp.giaddr == RTR2_IP for d in offers), (
        r.report()
    )


@pytest.mark.parametrize("vm", [COLO_BIOS, COLO_UEFI], ids=["bios", "uefi"])
def test_colocated(colocated: Run, vm: Vm) -> None:
    """dhcpd says PXEClient, proxydhcp on the same host answers on 4011 only."""
    r, dgs = booted(colocated, vm)
    corp_offers = [d for d in dgs if d.dhcp and d.dhcp.op == 2 and d.src == CORP_IP and d.sport == 67]
    assert corp_offers and all(d.dhcp and d.dhcp.text(60) == "PXEClient" for d in corp_offers), r.report()
    acks = colocated.proxy_replies(dgs, vm.mac)
    assert acks and all(d.sport == 4011 for d in acks), r.report()
    assert any(d.dhcp and d.dhcp.file == "boot.ipxe" for d in acks), r.report()


def test_seed_failure_without_proxy(local: Run) -> None:
    """proxydhcp stopped: offers carry an address but no 66/67, the client keeps asking, never boots."""
    r = local.results[NO_PROXY.name]
    assert r.outcome.startswith("firmware gave up"), r.report()
    dgs = r.datagrams()
    assert len(wire.discovers(dgs, NO_PROXY.mac)) >= 2, r.report()
    offers = [d.dhcp for d in dgs if d.dhcp and d.dhcp.msgtype == 2 and d.dhcp.chaddr == NO_PROXY.mac]
    assert offers and all(66 not in p.options and 67 not in p.options and not p.file for p in offers), (
        r.report()
    )
    assert not any(d.tftp for d in dgs), r.report()


def test_seed_failure_diagnosed(local: Run) -> None:
    """`proxydhcp diagnose` reads the failed boot's capture and names the cause."""
    cmd = [sys.executable, "-m", "proxydhcp", "diagnose"]
    if subprocess.run([*cmd, "--help"], capture_output=True, cwd=REPO).returncode != 0:
        pytest.skip("`proxydhcp diagnose` is not available in this build")
    r = local.results[NO_PROXY.name]
    out = subprocess.run(
        [*cmd, "--json", str(r.pcaps["br0"])], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, f"diagnose exited {out.returncode}:\n{out.stderr}\n{out.stdout}"
    clients = {c["mac"]: c for c in json.loads(out.stdout)["clients"]}
    client = clients[NO_PROXY.mac]
    assert client["verdict"] == "failed", out.stdout
    assert "no-boot-filename" in {f["check"] for f in client["findings"]}, out.stdout


def test_silence(local: Run, relayed: Run, colocated: Run) -> None:
    """No packet from proxydhcp ever offers an address (yiaddr 0.0.0.0), in any scenario."""
    seen = 0
    for run in (local, relayed, colocated):
        pcaps = {p for r in run.results.values() for p in r.pcaps.values()}
        for pcap in sorted(pcaps):
            replies = run.proxy_replies(wire.read(pcap))
            seen += len(replies)
            bad = [wire.describe(d) for d in replies if d.dhcp and d.dhcp.yiaddr != "0.0.0.0"]
            assert not bad, f"{pcap}: proxydhcp replies with an address:\n" + "\n".join(map(str, bad))
    assert seen >= 10, f"only {seen} proxydhcp replies in the captures: the check would prove nothing"
