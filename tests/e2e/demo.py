"""`make demo`: watch a BIOS and a UEFI VM network-boot through proxydhcp, step by step.

Builds a throwaway virtual network (network namespaces; nothing touches this machine's real
interfaces), starts an ordinary DHCP server that knows nothing about PXE and proxydhcp beside it,
boots two QEMU VMs with their stock firmware, narrates what happens on the wire and in
proxydhcp's log, then tears everything down (also on Ctrl-C or failure), ending only the
processes it started. Needs root and the Debian packages listed in .ci/run.

    python3 -m tests.e2e.demo [--keep] [--proxy proxydhcp|dnsmasq]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tests.e2e import wire
from tests.e2e.harness import CORP_IP, PXE_IP, Topology, Vm, missing_requirements

VMS = [Vm("bios", "bios", "52:54:00:77:00:01"), Vm("uefi", "uefi", "52:54:00:77:00:02")]
FIRMWARE = {
    "bios": "SeaBIOS with QEMU's iPXE network ROM (e1000)",
    "uefi": "OVMF (EDK2) with its own PXE stack (virtio-net, no option ROM)",
}

DIAGRAM = f"""
  corp  {CORP_IP}  ISC dhcpd: addresses only, nothing about PXE
  pxe   {PXE_IP}  proxydhcp: proxy offers (UDP 67), PXE boot server (4011), TFTP (69)
  VMs   10.77.0.100-200 from dhcpd; all on one bridge, captured with tcpdump
"""


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Narrator:
    """Prints new wire events and proxydhcp log lines of the running boot as they appear."""

    def __init__(self, topo: Topology, vm: Vm) -> None:
        self.topo, self.vm = topo, vm
        self.t0 = time.time()
        self.seen_packets = 0
        self.seen_transfers: set[tuple[str, int, float]] = set()
        self.log_offset = topo.proxy_log.stat().st_size if topo.proxy_log and topo.proxy_log.exists() else 0

    def tick(self) -> None:
        lines = self._wire() + self._proxy_log()
        for _t, line in sorted(lines, key=lambda item: item[0]):
            say(line)

    def _stamp(self, t: float) -> str:
        return f"  +{max(t - self.t0, 0):5.1f}s"

    def _wire(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        if self.topo.batch_dir is None:
            return out
        dgs = wire.read(self.topo.batch_dir / "br0.pcap")
        for d in dgs[self.seen_packets :]:
            line = self._story(d)
            if line:
                out.append((d.t, f"{self._stamp(d.t)} [wire] {line}"))
        self.seen_packets = len(dgs)
        for tr in wire.transfers(dgs):
            key = (tr.client[0], tr.client[1], tr.t_start)
            if key not in self.seen_transfers and (tr.complete or tr.error):
                self.seen_transfers.add(key)
                out.append((tr.t_end, f"{self._stamp(tr.t_end)} [wire] {tr.summary()}"))
        return out

    def _story(self, d: wire.Datagram) -> str | None:
        p = d.dhcp
        if p and p.chaddr == self.vm.mac:
            who = (
                "iPXE" if p.user_class() == "iPXE" else ("EDK2" if self.vm.firmware == "uefi" else "firmware")
            )
            if p.op == 1 and d.dport == 67:
                return f"{who} broadcasts DHCP {p.name} (arch {p.arch()}, {p.text(60) or 'no vendor class'})"
            if p.op == 1 and d.dport == 4011:
                return f"{who} asks boot server {d.dst}:4011 for its file (DHCP {p.name} from port {d.sport})"
            if p.op == 2 and d.src == CORP_IP and d.sport == 67:
                return f"corporate DHCP: {p.name} address {p.yiaddr} (no boot file)"
            if p.op == 2 and d.src == PXE_IP:
                if p.file:
                    where = f"boot file {p.file!r} on {p.siaddr}"
                    return f"proxydhcp: {p.name} from port {d.sport}: {where} (yiaddr {p.yiaddr})"
                return f"proxydhcp: proxy {p.name}, no address (yiaddr {p.yiaddr}): 'ask me on 4011'"
        if d.tftp and d.tftp.opcode == 1:
            opts = " ".join(f"{k}={v}" for k, v in d.tftp.options.items())
            return f"TFTP read request {d.tftp.filename!r} from {d.src} ({opts})"
        return None

    def _proxy_log(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        log = self.topo.proxy_log
        if not log or not log.exists():
            return out
        with log.open("rb") as fh:
            fh.seek(self.log_offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        for raw in complete.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            if not isinstance(rec, dict):  # text log (e.g. the dnsmasq reference)
                out.append((time.time(), f"{self._stamp(time.time())} [proxy] {raw}"))
                continue
            extra = f" (rule: {rec['rule']})" if rec.get("rule") else ""
            if rec.get("bytes") is not None and rec.get("mbps") is not None:
                extra = f" ({rec['bytes']} bytes, {rec['mbps']} Mbit/s, {rec.get('outcome', '')})"
            t = float(rec.get("ts", time.time()))
            out.append((t, f"{self._stamp(t)} [proxydhcp] {rec.get('msg', raw)}{extra}"))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the run folder (captures, logs)")
    parser.add_argument("--proxy", default="proxydhcp", choices=["proxydhcp", "dnsmasq"])
    args = parser.parse_args(argv)

    missing = missing_requirements()
    if missing:
        say(f"demo: cannot run: {missing}.")
        say("  Run as root after `pip install -e .` and the apt-get line in .ci/run.")
        return 2

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the topology's cleanup

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="proxydhcp-demo-"))
    ok = interrupted = False
    started = time.time()
    try:
        say("== building a throwaway virtual network (network namespaces, one bridge)")
        say(DIAGRAM)
        with Topology(workdir, proxy=args.proxy, log=lambda m: say(f"  {m}")) as topo:
            say(f"  proxydhcp command: {(workdir / 'proxy-cmdline.txt').read_text().strip()}")
            outcomes = []
            for vm in VMS:
                say(f"\n== booting the {vm.firmware.upper()} VM: {FIRMWARE[vm.firmware]}, MAC {vm.mac}")
                narrator = Narrator(topo, vm)
                result = topo.boot([vm], on_tick=narrator.tick)[vm.name]
                if result.ok:
                    say(
                        f"  ==> {vm.firmware.upper()} VM BOOTED: it ran the iPXE script and asked for "
                        f"{vm.marker!r} {result.seconds:.1f} s after power-on"
                    )
                else:
                    say(f"  ==> {vm.firmware.upper()} VM did NOT boot: {result.outcome}\n{result.report()}")
                outcomes.append(result.ok)
            ok = all(outcomes)
            say("\n== tearing down (processes by PID, then the namespaces)")
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: the network and every process started by the demo have been removed")
        return 130
    finally:
        if args.keep or (not ok and not interrupted):
            say(f"run folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"== {'done' if ok else 'FAILED'} in {time.time() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
