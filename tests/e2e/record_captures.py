"""Record the e2e boots' captures that `diagnose` has golden outputs for (tests/fixtures/e2e/).

    python3 -m tests.e2e.record_captures OUTDIR [--keep]

Seven real QEMU boots through the harness (root; namespaces only, nothing on the host's links):

  e2e-bios-ok.pcap                 SeaBIOS + iPXE ROM → undionly.kpxe → boot.ipxe → marker
  e2e-uefi-ok.pcap                 OVMF/EDK2 → proxy offer + 4011 → ipxe.efi → boot.ipxe → marker
  e2e-no-proxy-fails.pcap          BIOS with proxydhcp stopped: dhcpd gives an address only (the seed)
  e2e-colocated-4011-silent.pcap   dhcpd says option 60 PXEClient, nothing listens on 4011: EDK2
                                   retries 4011; stopped once the retries are on the wire
  e2e-sb-unsigned-refused.pcap     OVMF with Secure Boot on (Microsoft's keys): the unsigned ipxe.efi
                                   is fetched completely and refused ("Access Denied"); the firmware
                                   then tries HTTP boot over IPv4 (arch 16 DISCOVERs)
  e2e-shim-grub-stop.pcap          Secure Boot: shim → Debian's signed network GRUB (as grubx64.efi),
                                   dhcpd without next-server: GRUB is fetched, then sends nothing
  e2e-ipxe-4011-unreachable.pcap   dhcpd says option 60 PXEClient (next-server = the proxy host),
                                   proxydhcp on its own host bound to 4011 only: EDK2's 4011 request
                                   reaches it, iPXE's goes to the DHCP server's 4011 (ICMP port
                                   unreachable), is retried and the boot dies (issue 13 item 5)

Each capture holds one client and is trimmed to its DHCP (67/68/4011) and TFTP packets (port 69 and
the transfers that RRQs open), full length: diagnose counts TFTP bytes from the captured payload;
ICMP unreachable messages stay too (a request sent where nothing listens).
`--only SCENARIO` (local, colo, secure-boot, split) records some of them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dpkt

from tests.e2e import wire
from tests.e2e.harness import NO_IPV6, PXE_IP, Topology, Vm, missing_requirements

BIOS = Vm("bios", "bios", "52:54:00:77:00:01")
UEFI = Vm("uefi", "uefi", "52:54:00:77:00:02")
NO_PROXY = Vm("noproxy", "bios", "52:54:00:77:00:09")
COLO_UEFI = Vm("colo-uefi", "uefi", "52:54:00:79:00:02")
# settle: the capture goes on past the firmware's (or GRUB's) give-up, so diagnose sees what follows.
SB_UNSIGNED = Vm("sb-unsigned", "uefisb", "52:54:00:7a:00:02", switched_off=NO_IPV6, settle=6.0)
SB_SHIM = Vm("sb-shim", "uefisb", "52:54:00:7a:00:03", switched_off=NO_IPV6)
SPLIT_UEFI = Vm("split-uefi", "uefi", "52:54:00:7b:00:02", switched_off=NO_IPV6, settle=2.0)
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB_X64 = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")

DHCP_PORTS = frozenset({67, 68, 4011})
TFTP_PORT = 69
SILENT_4011_WAIT = 12.0  # seconds after the first 4011 request: EDK2 retries 4011 for ~6 s


class _Enough(Exception):
    """Raised from the boot's tick to end it early: the capture already shows the failure."""


def trim(src: Path, dst: Path) -> int:
    """Copy the Ethernet frames of `src` that are DHCP or TFTP (incl. the transfers' ephemeral-port
    traffic) and ICMP unreachables to `dst`; returns how many were kept. TFTP DATA frames are cut
    after their TFTP header, as a capture's snap length cuts them (the record keeps the frame's
    length on the wire; diagnose takes sizes from the UDP header): a 4 MB GRUB transfer takes
    ~0.5 MB instead of 4.3."""
    tftp_clients: set[tuple[bytes, int]] = set()  # (ip, port) that sent an RRQ
    kept = 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        reader = dpkt.pcap.Reader(fin)
        writer = dpkt.pcap.Writer(fout, snaplen=65535, linktype=reader.datalink())

        def write(buf: bytes, ts: float, caplen: int | None = None) -> None:
            sec, usec = int(ts), round(ts % 1 * 1_000_000)
            cut = buf if caplen is None else buf[:caplen]
            fout.write(writer._pack_hdr(sec, usec, len(cut), len(buf)) + cut)

        for ts, buf in reader:
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except (dpkt.Error, ValueError):
                continue
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.icmp.ICMP) and ip.data.type == 3:
                write(buf, ts)  # port unreachable: nothing listens where a request went
                kept += 1
                continue
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.udp.UDP):
                continue
            udp = ip.data
            ends = {(ip.src, udp.sport), (ip.dst, udp.dport)}
            if udp.dport == TFTP_PORT:
                tftp_clients.add((ip.src, udp.sport))
            if {udp.sport, udp.dport} & DHCP_PORTS or udp.dport == TFTP_PORT or ends & tftp_clients:
                data = (ip.dst, udp.dport) in tftp_clients and bytes(udp.data)[:2] == b"\x00\x03"
                headers = len(buf) - len(bytes(udp.data))  # Ethernet + IP + UDP
                write(buf, ts, headers + 4 if data else None)
                kept += 1
    return kept


def _stop_after_4011(topo: Topology, vm: Vm) -> Callable[[], None]:
    """A boot tick that ends the boot SILENT_4011_WAIT s after the VM's first request to port 4011."""

    def tick() -> None:
        if topo.batch_dir is None or not (topo.batch_dir / "br0.pcap").exists():
            return
        dgs = wire.read(topo.batch_dir / "br0.pcap")
        asks = [d for d in dgs if d.dhcp and d.dhcp.op == 1 and d.dport == 4011 and d.dhcp.chaddr == vm.mac]
        if asks and time.time() - asks[0].t >= SILENT_4011_WAIT:
            raise _Enough

    return tick


def _boot_one(
    topo: Topology, vm: Vm, timeout: float, tick: Callable[[], None] | None = None
) -> tuple[str, Path]:
    try:
        result = topo.boot([vm], timeout=timeout, on_tick=tick)[vm.name]
        outcome = result.outcome
    except _Enough:
        outcome = f"stopped {SILENT_4011_WAIT:.0f} s after the first 4011 request"
    assert topo.batch_dir is not None
    return outcome, topo.batch_dir / "br0.pcap"


SCENARIOS = {
    "local": ("e2e-bios-ok.pcap", "e2e-uefi-ok.pcap", "e2e-no-proxy-fails.pcap"),
    "colo": ("e2e-colocated-4011-silent.pcap",),
    "secure-boot": ("e2e-sb-unsigned-refused.pcap", "e2e-shim-grub-stop.pcap"),
    "split": ("e2e-ipxe-4011-unreachable.pcap",),
}


def record(
    outdir: Path,
    workdir: Path,
    log: Callable[[str], None] = print,
    only: frozenset[str] | None = None,
) -> dict[str, tuple[str, Path]]:
    """Boot the scenarios (`only`: those of SCENARIOS); returns capture name → (outcome, trimmed capture)."""
    raw: dict[str, tuple[str, Path]] = {}
    want = set(SCENARIOS) if only is None else only
    if "local" in want:
        with Topology(workdir / "local", log=log) as topo:
            raw["e2e-bios-ok.pcap"] = _boot_one(topo, BIOS, 120)
            raw["e2e-uefi-ok.pcap"] = _boot_one(topo, UEFI, 180)
            topo.stop_proxy()
            raw["e2e-no-proxy-fails.pcap"] = _boot_one(topo, NO_PROXY, 120)
    if "colo" in want:
        with Topology(workdir / "colo", colocated=True, log=log) as topo:
            topo.stop_proxy()  # dhcpd still says PXEClient; nothing answers on 4011
            raw["e2e-colocated-4011-silent.pcap"] = _boot_one(
                topo, COLO_UEFI, 180, _stop_after_4011(topo, COLO_UEFI)
            )
    if "secure-boot" in want:
        _secure_boot(workdir, log, raw)
    if "split" in want:
        split = Topology(workdir / "split", log=log, corp_pxeclient=True, next_server=PXE_IP, only_4011=True)
        with split as topo:
            raw["e2e-ipxe-4011-unreachable.pcap"] = _boot_one(topo, SPLIT_UEFI, 150)
    outdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[str, Path]] = {}
    for name, (outcome, pcap) in raw.items():
        kept = trim(pcap, outdir / name)
        log(f"{name}: {outcome}; kept {kept} frames, {(outdir / name).stat().st_size} bytes")
        out[name] = (outcome, outdir / name)
    return out


def _secure_boot(workdir: Path, log: Callable[[str], None], raw: dict[str, tuple[str, Path]]) -> None:
    secure_boot = Topology(
        workdir / "secure-boot",
        log=log,
        files={"shimx64.efi": SHIM, "grubx64.efi": GRUB_X64},
        hosts={SB_SHIM.mac: "shimx64.efi"},
    )
    with secure_boot as topo:
        raw["e2e-sb-unsigned-refused.pcap"] = _boot_one(topo, SB_UNSIGNED, 150)
        raw["e2e-shim-grub-stop.pcap"] = _boot_one(topo, SB_SHIM, 150)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (serial logs, raw pcaps)"
    )
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), help="record these scenarios only (repeat)"
    )
    args = parser.parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"cannot record: {reason}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="e2e-record-"))
    try:
        results = record(args.outdir, workdir, only=frozenset(args.only) if args.only else None)
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    expected_ok = {"e2e-bios-ok.pcap", "e2e-uefi-ok.pcap"}
    bad = [n for n, (o, _p) in results.items() if (o == "success") != (n in expected_ok)]
    if bad:
        print(f"unexpected outcome for {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
