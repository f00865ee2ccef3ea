"""The chains distributions boot, on real firmware: Secure Boot (OVMF with Microsoft's keys) and ARM64
(AAVMF), through proxydhcp beside the corporate dhcpd (issues 17 and 19).

Two throwaway networks, each booted once with its VMs in parallel:

- proxy only (dhcpd knows nothing about PXE, no next-server):
  - site key: iPXE signed at test time with a key whose certificate is added to `db` (Microsoft's
    keys stay) boots to boot.ipxe and the marker;
  - unsigned: the stock ipxe.efi is fetched completely and refused ("Access Denied"), then the
    firmware moves on to HTTP boot over IPv4;
  - shim → Debian's signed network GRUB (x86) and grubnetaa64.efi (ARM64): GRUB is fetched
    completely, then nothing: it takes its server from the DHCP server's ACK (siaddr 0) only;
- next-server = proxydhcp's address on the corporate dhcpd: the same GRUBs read /grub/grub.cfg and
  ask for the marker;
- MOK route (proxy only): shim loads an iPXE signed with a key in MokList (Microsoft's db only) when
  that iPXE carries a .sbat section, and refuses the same iPXE without one ("Security Violation").

Every UEFI VM has OVMF's IPv6 paths switched off (fw_cfg), so no boot waits for DHCPv6.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import wire
from tests.e2e.harness import (
    AAVMF_CODE,
    CORP_IP,
    NO_IPV6,
    OVMF_SB_CODE,
    OVMF_SB_VARS,
    PXE_IP,
    QEMU_ARM64,
    REPO,
    BootResult,
    Topology,
    Vm,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB_X64 = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
IPXE = Path("/usr/lib/ipxe/ipxe.efi")
FETCH_ARM64_GRUB = Path(__file__).with_name("fetch_arm64_grub.sh")
EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # the owner GUID the db entry is filed under
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"  # shim's vendor GUID, owner of MokList entries
# shim refuses a loader without SBAT metadata (rhboot/shim pe.c, verify_sbat_section): this is iPXE's.
SBAT_CSV = (
    "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
    "ipxe.proxydhcp-e2e,1,iPXE,ipxe,1,https://ipxe.org\n"
)

SITE_KEY = Vm("sitekey", "uefisb", "52:54:00:7a:00:01", switched_off=NO_IPV6)
# settle: after "Access Denied" the capture is to show the firmware's next boot path.
UNSIGNED = Vm("unsigned", "uefisb", "52:54:00:7a:00:02", switched_off=NO_IPV6, settle=6.0)
SHIM_STOP = Vm("shim", "uefisb", "52:54:00:7a:00:03", switched_off=NO_IPV6)
ARM64_STOP = Vm("arm64", "arm64", "52:54:00:7a:00:04", switched_off=NO_IPV6)
SHIM_NS = Vm("shim-ns", "uefisb", "52:54:00:7a:01:03", switched_off=NO_IPV6)
ARM64_NS = Vm("arm64-ns", "arm64", "52:54:00:7a:01:04", switched_off=NO_IPV6)
MOK = Vm("mok", "uefisb", "52:54:00:7a:02:01", switched_off=NO_IPV6)
MOK_NO_SBAT = Vm("mok-nosbat", "uefisb", "52:54:00:7a:02:02", switched_off=NO_IPV6)


@dataclass(frozen=True)
class ChainFiles:
    signed_ipxe: Path
    sb_vars: Path
    grub_arm64: Path
    mok_ipxe: Path  # with .sbat, signed with the MOK
    mok_ipxe_no_sbat: Path
    mok_vars: Path  # Microsoft's keys, the MOK in MokList

    def root(self) -> dict[str, Path]:
        """The TFTP root beside the harness's own files: shim finds grubx64.efi next to itself."""
        return {
            "ipxe-sitekey.efi": self.signed_ipxe,
            "shimx64.efi": SHIM,
            "grubx64.efi": GRUB_X64,
            "grubnetaa64.efi": self.grub_arm64,
        }


@dataclass
class Run:
    results: dict[str, BootResult]


def _tool(name: str) -> str | None:
    here = Path(sys.executable).with_name(name)  # virt-fw-vars lives in the virtual environment
    return str(here) if here.exists() else shutil.which(name)


def _missing() -> str | None:
    for tool in ("openssl", "sbsign", "objcopy", "objdump", "virt-fw-vars", QEMU_ARM64):
        if _tool(tool) is None:
            return f"missing command {tool} (sbsigntool, virt-firmware from PyPI, qemu-system-arm)"
    for path in (SHIM, GRUB_X64, IPXE, OVMF_SB_CODE, OVMF_SB_VARS, AAVMF_CODE):
        if not path.exists():
            return f"missing {path} (shim-signed, grub-efi-amd64-signed, ipxe, ovmf, qemu-efi-aarch64)"
    return None


def _need(reason: str | None) -> None:
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"chain e2e cannot run in CI: {reason} (see .ci/run)")
        pytest.skip(reason)


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}{done.stdout}")


def _key(workdir: Path, name: str) -> tuple[Path, Path]:
    key, cert = workdir / f"{name}.key", workdir / f"{name}.pem"
    _run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         f"/CN=proxydhcp e2e {name} key/", "-keyout", str(key), "-out", str(cert)],
        workdir,
    )  # fmt: skip
    return key, cert


def _sign(workdir: Path, key: Path, cert: Path, image: Path, out: Path) -> Path:
    _run(["sbsign", "--key", str(key), "--cert", str(cert), "--output", str(out), str(image)], workdir)
    return out


def _vars(workdir: Path, add: str, owner: str, cert: Path, out: Path) -> Path:
    """Microsoft's variable store plus one certificate (--add-db or --add-mok)."""
    vfv = _tool("virt-fw-vars")
    assert vfv is not None
    _run([vfv, "--input", str(OVMF_SB_VARS), "--output", str(out), add, owner, str(cert)], workdir)
    return out


def with_sbat(workdir: Path, image: Path, out: Path) -> Path:
    """`image` with a .sbat section (SBAT_CSV) after its last section, as objcopy adds one."""
    listing = subprocess.run(["objdump", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    ends = [
        int(m.group(2), 16) + int(m.group(1), 16)
        for m in re.finditer(r"^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s", listing, re.M)
    ]
    vma = (max(ends) + 0xFFF) & ~0xFFF
    csv = workdir / "sbat.csv"
    csv.write_text(SBAT_CSV)
    _run(
        ["objcopy", "--add-section", f".sbat={csv}",
         "--set-section-flags", ".sbat=contents,alloc,load,readonly,data",
         "--change-section-vma", f".sbat={vma:#x}", str(image), str(out)],
        workdir,
    )  # fmt: skip
    return out


def make_keys(workdir: Path, grub_arm64: Path) -> ChainFiles:
    """Throwaway keys made at test time. Site key: ipxe.efi signed with it, its certificate added to
    db. MOK: ipxe.efi with and without .sbat signed with it, its certificate in MokList (db keeps
    Microsoft's keys only, so only shim can vouch for it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    key, cert = _key(workdir, "site")
    mok_key, mok_cert = _key(workdir, "mok")
    return ChainFiles(
        signed_ipxe=_sign(workdir, key, cert, IPXE, workdir / "ipxe-sitekey.efi"),
        sb_vars=_vars(workdir, "--add-db", EFI_GLOBAL_GUID, cert, workdir / "OVMF_VARS_4M.sitekey.fd"),
        grub_arm64=grub_arm64,
        mok_ipxe=_sign(workdir, mok_key, mok_cert, with_sbat(workdir, IPXE, workdir / "ipxe-sbat.efi"),
                       workdir / "ipxe-sbat-mok.efi"),
        mok_ipxe_no_sbat=_sign(workdir, mok_key, mok_cert, IPXE, workdir / "ipxe-mok.efi"),
        mok_vars=_vars(workdir, "--add-mok", SHIM_LOCK_GUID, mok_cert, workdir / "OVMF_VARS_4M.mok.fd"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def chain_files(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> ChainFiles:
    _need(_missing())
    fetched = subprocess.run([str(FETCH_ARM64_GRUB)], capture_output=True, text=True, timeout=600)
    lines = fetched.stdout.strip().splitlines()
    _need(None if fetched.returncode == 0 and lines else f"fetch_arm64_grub.sh failed: {fetched.stderr}")
    return make_keys(tmp_path_factory.mktemp("keys"), Path(lines[-1]))


def _topology(workdir: Path, files: ChainFiles, next_server: str | None) -> Topology:
    return Topology(
        workdir,
        files=files.root(),
        boot={"efi-x64": "ipxe-sitekey.efi", "efi-arm64": "grubnetaa64.efi"},
        hosts={UNSIGNED.mac: "ipxe.efi", SHIM_STOP.mac: "shimx64.efi", SHIM_NS.mac: "shimx64.efi"},
        next_server=next_server,
        sb_vars=files.sb_vars,
    )


@pytest.fixture(scope="module")
def proxy_only(chain_files: ChainFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    with _topology(tmp_path_factory.mktemp("e2e-chains"), chain_files, None) as topo:
        return Run(topo.boot([SITE_KEY, UNSIGNED, SHIM_STOP, ARM64_STOP], timeout=150))


@pytest.fixture(scope="module")
def mok_route(chain_files: ChainFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """shim as the efi-x64 boot file, a MOK-signed iPXE as its grubx64.efi; iPXE's own DHCP then gets
    boot.ipxe (the iPXE rule). The variant without .sbat sits in plain/ (a host entry)."""
    topo = Topology(
        tmp_path_factory.mktemp("e2e-chains-mok"),
        files={
            "shimx64.efi": SHIM,
            "grubx64.efi": chain_files.mok_ipxe,
            "plain/shimx64.efi": SHIM,
            "plain/grubx64.efi": chain_files.mok_ipxe_no_sbat,
        },
        boot={"efi-x64": "shimx64.efi"},
        hosts={MOK_NO_SBAT.mac: "plain/shimx64.efi"},
        sb_vars=chain_files.mok_vars,
    )
    with topo:
        return Run(topo.boot([MOK, MOK_NO_SBAT], timeout=150))


@pytest.fixture(scope="module")
def with_next_server(chain_files: ChainFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    with _topology(tmp_path_factory.mktemp("e2e-chains-ns"), chain_files, PXE_IP) as topo:
        return Run(topo.boot([SHIM_NS, ARM64_NS], timeout=150))


def _client(r: BootResult) -> tuple[list[wire.Datagram], set[str]]:
    dgs = r.datagrams()
    return dgs, wire.client_ips(dgs, r.vm.mac)


def _rrq_names(dgs: list[wire.Datagram], ips: set[str]) -> list[str]:
    return [d.tftp.filename for d in dgs if d.tftp and d.tftp.opcode == 1 and d.src in ips]


def _complete(dgs: list[wire.Datagram], ips: set[str], name: str) -> list[wire.Transfer]:
    return [t for t in wire.transfers(dgs) if t.filename == name and t.complete and t.client[0] in ips]


def _corp_acks(dgs: list[wire.Datagram], mac: str) -> list[wire.Dhcp]:
    return [
        d.dhcp
        for d in dgs
        if d.dhcp and d.dhcp.msgtype == 5 and d.src == CORP_IP and d.dhcp.chaddr == mac and d.sport == 67
    ]


def _serial(r: BootResult) -> str:
    return r.serial.read_bytes().decode("utf-8", "replace")


def diagnosed(r: BootResult) -> dict[str, object]:
    """`proxydhcp diagnose --json` on the boot's capture, this VM's client."""
    out = subprocess.run(
        [sys.executable, "-m", "proxydhcp", "diagnose", "--json", str(r.pcaps[r.bridge])],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, f"diagnose exited {out.returncode}:\n{out.stderr}"
    clients = {c["mac"]: c for c in json.loads(out.stdout)["clients"]}
    client: dict[str, object] = clients[r.vm.mac]
    return client


def test_site_key_ipxe_boots_under_secure_boot(proxy_only: Run) -> None:
    """iPXE signed with the site's key (its certificate in db beside Microsoft's) runs boot.ipxe."""
    r = proxy_only.results[SITE_KEY.name]
    assert r.ok, r.report()
    dgs, ips = _client(r)
    assert _complete(dgs, ips, "ipxe-sitekey.efi"), r.report()
    assert _rrq_names(dgs, ips)[-2:] == ["boot.ipxe", SITE_KEY.marker], r.report()
    acks = _corp_acks(dgs, SITE_KEY.mac)
    assert acks and all(a.siaddr == "0.0.0.0" for a in acks), "the DHCP server was to stay untouched"


def test_unsigned_ipxe_refused_under_secure_boot(proxy_only: Run) -> None:
    """The stock ipxe.efi: fetched completely, refused ("Access Denied"), never runs (no iPXE DHCP);
    the firmware's next boot path (HTTP boot over IPv4, arch 16) follows; diagnose names it."""
    r = proxy_only.results[UNSIGNED.name]
    assert "Access Denied" in r.outcome and "UEFI PXEv4" in r.outcome, r.report()
    dgs, ips = _client(r)
    full = _complete(dgs, ips, "ipxe.efi")
    assert len(full) == 1 and full[0].size == IPXE.stat().st_size, r.report()
    assert _rrq_names(dgs, ips)[-1] == "ipxe.efi", r.report()  # nothing after the boot file
    mine = [d.dhcp for d in dgs if d.dhcp and d.dhcp.op == 1 and d.dhcp.chaddr == UNSIGNED.mac]
    assert not any(p.user_class() == "iPXE" for p in mine), "iPXE ran:\n" + r.report()
    after = [d.dhcp for d in dgs if d.dhcp and d.dhcp.chaddr == UNSIGNED.mac and d.t > full[0].t_end]
    assert any(p.msgtype == 1 and p.arch() == 16 and p.text(60).startswith("HTTPClient") for p in after), (
        r.report()
    )
    c = diagnosed(r)
    assert (c["verdict"], c["step"]) == ("failed", "boot file"), c
    assert "Secure Boot rejected an unsigned or untrusted loader" in str(c["cause"]), c
    assert "signed shim chain" in str(c["fix"]), c


@pytest.mark.parametrize("vm,grub", [(SHIM_STOP, "grubx64.efi"), (ARM64_STOP, "grubnetaa64.efi")])
def test_grub_stops_without_next_server(proxy_only: Run, vm: Vm, grub: str) -> None:
    """Debian's network GRUB reads only the DHCP server's ACK: siaddr 0 → no request, `grub>`."""
    r = proxy_only.results[vm.name]
    assert r.outcome.startswith("firmware gave up: grub>"), r.report()
    dgs, ips = _client(r)
    names = _rrq_names(dgs, ips)
    assert _complete(dgs, ips, grub) and names[-1] == grub, r.report()
    assert all(a.siaddr == "0.0.0.0" for a in _corp_acks(dgs, vm.mac)), r.report()
    c = diagnosed(r)
    assert (c["verdict"], c["step"]) == ("failed", "grub"), c
    cause = "GRUB does not read proxy offers: it takes its server from the DHCP server's ACK"
    assert cause in str(c["cause"]), c
    fix = str(c["fix"])
    assert "next-server on the DHCP server" in fix and "site-key iPXE chain" in fix, c
    if vm is SHIM_STOP:
        # shim 16 first looks for revocation and certificate files (absent: harmless), then fetches
        # grubx64.efi from the proxy's address with blksize 512, windowsize 4.
        assert names[:5] == [
            "shimx64.efi",
            "shimx64.efi",
            "revocations_sku.efi",
            "revocations_sbat.efi",
            "shim_certificate_0.efi",
        ], names
        grub_rrq = [d for d in dgs if d.tftp and d.tftp.opcode == 1 and d.tftp.filename == grub]
        assert grub_rrq[0].dst == PXE_IP and grub_rrq[0].tftp is not None, r.report()
        assert grub_rrq[0].tftp.options.get("blksize") == "512", r.report()
        assert {f["check"] for f in c["findings"]} == {"grub-no-server"}, c  # type: ignore[union-attr]


def test_arm64_firmware_asks_as_arch_11(proxy_only: Run) -> None:
    """AAVMF: option 93 = 11 and PXEClient:Arch:00011; the proxy's 4011 ACK names the efi-arm64 file."""
    r = proxy_only.results[ARM64_STOP.name]
    dgs, _ips = _client(r)
    discovers = wire.discovers(dgs, ARM64_STOP.mac)
    assert discovers and all(d.dhcp and d.dhcp.arch() == 11 for d in discovers), r.report()
    assert discovers[0].dhcp and discovers[0].dhcp.text(60) == "PXEClient:Arch:00011:UNDI:003000"
    acks = [
        d.dhcp
        for d in dgs
        if d.dhcp and (d.src, d.sport) == (PXE_IP, 4011) and d.dhcp.chaddr == ARM64_STOP.mac
    ]
    assert acks and acks[0].file == "grubnetaa64.efi", r.report()


@pytest.mark.parametrize("vm,arch_dir", [(SHIM_NS, "x86_64-efi"), (ARM64_NS, "arm64-efi")])
def test_grub_with_next_server_reads_grub_cfg(with_next_server: Run, vm: Vm, arch_dir: str) -> None:
    """next-server = the proxy's address on the DHCP server: GRUB reads /grub/grub.cfg and the marker;
    its *.lst lookups are 'not found' and harmless."""
    r = with_next_server.results[vm.name]
    assert r.ok, r.report()
    dgs, ips = _client(r)
    acks = _corp_acks(dgs, vm.mac)
    assert acks and all(a.siaddr == PXE_IP for a in acks), r.report()
    names = _rrq_names(dgs, ips)
    assert f"/grub/{arch_dir}/command.lst" in names, names
    assert names[-2:] == ["/grub/grub.cfg", f"/{vm.marker}"], names
    c = diagnosed(r)
    assert c["verdict"] == "booted", c
    assert c["findings"] == [], c


def test_mok_signed_ipxe_with_sbat_runs_under_shim(mok_route: Run) -> None:
    """The MOK route: shim (Microsoft-signed) verifies iPXE against MokList; with a .sbat section it
    runs it, and iPXE boots boot.ipxe through the proxy, with no change to the DHCP server."""
    r = mok_route.results[MOK.name]
    assert r.ok, r.report()
    dgs, ips = _client(r)
    assert _complete(dgs, ips, "grubx64.efi"), r.report()
    assert _rrq_names(dgs, ips)[-2:] == ["boot.ipxe", MOK.marker], r.report()
    assert all(a.siaddr == "0.0.0.0" for a in _corp_acks(dgs, MOK.mac)), r.report()


def test_mok_signed_ipxe_without_sbat_refused_by_shim(mok_route: Run) -> None:
    """The same iPXE and key without .sbat: shim says "Verification failed: (0x1A) Security
    Violation" (rhboot/shim pe.c: SBAT is mandatory for binaries shim loads)."""
    r = mok_route.results[MOK_NO_SBAT.name]
    assert "Verification failed: (0x1A) Security Violation" in r.outcome, r.report()
    dgs, ips = _client(r)
    assert _complete(dgs, ips, "plain/grubx64.efi"), r.report()
    mine = [d.dhcp for d in dgs if d.dhcp and d.dhcp.op == 1 and d.dhcp.chaddr == MOK_NO_SBAT.mac]
    assert not any(p.user_class() == "iPXE" for p in mine), "iPXE ran:\n" + r.report()
