"""Real PXE firmware booting through proxydhcp on a throwaway virtual network.

This module is also the deployment recipe in miniature: an ordinary "corporate" DHCP server
(ISC dhcpd, nothing about PXE in its configuration) hands out addresses, proxydhcp beside it adds
the boot server and file, and QEMU VMs boot with their stock firmware:

```
  corp  eth0 10.77.0.1  ISC dhcpd + IPv6 RA ─┐
  pxe   eth0 10.77.0.2  proxydhcp (67, 4011, TFTP 69)   br0 (in namespace "wire", tcpdump here)
  VMs on taps: SeaBIOS + iPXE ROM (e1000), OVMF + EDK2 PXE (virtio-net, no ROM) ─┘
  (also OVMF with Secure Boot on, and AAVMF under qemu-system-aarch64: tests/e2e/test_chains.py)
  relayed (relay=True): rtr eth0 10.77.0.254 on br0, eth1 10.78.0.1 on br1 (dhcrelay → corp, pxe),
                        client VMs on br1
  co-located (colocated=True): dhcpd says option 60 PXEClient; proxydhcp runs in corp, 4011 only
  knobs: dhcpd next-server / option 60, a 4011-only proxy on its own host, boot table, extra root files,
         the iPXE boot file (a URL too), a boot table in proxydhcp.toml changed mid-boot by SIGHUP
```

Success is decided on the wire, not from the service's logs: the TFTP root carries an iPXE script
whose second request names the VM's MAC (`ok-52-54-00-...`), and a read request for that name on
the client's bridge proves DHCP + proxy offer + 4011 + TFTP + the client executing what it got.
pxelinux proves the same with its `pxelinux.cfg/01-<mac>` lookup.

Everything runs inside namespaces made by `tests.netlab.Lab`; nothing touches the host's
interfaces; every process is started and ended by PID; `Topology.close()` runs on any exit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e import wire
from tests.netlab import Lab, Netns

REPO = Path(__file__).resolve().parents[2]

LOCAL_NET, RELAY_NET = "10.77.0.0/24", "10.78.0.0/24"
CORP_IP, PXE_IP = "10.77.0.1", "10.77.0.2"
RTR_IP, RTR2_IP = "10.77.0.254", "10.78.0.1"  # the router's legs; RTR2_IP is giaddr and the gateway

QEMU = os.environ.get("PROXYDHCP_E2E_QEMU", "qemu-system-x86_64")
QEMU_ARM64 = os.environ.get("PROXYDHCP_E2E_QEMU_ARM64", "qemu-system-aarch64")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: the SMM build and a variable store with Microsoft's keys enrolled (Secure Boot on).
OVMF_SB_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
OVMF_SB_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
UEFI_FIRMWARE = frozenset({"uefi", "uefi-http", "uefi6", "uefi6http", "uefisb", "arm64"})
BOOT_FILES = {  # TFTP root name → where Debian installs it (packages ipxe, pxelinux, syslinux-common)
    "undionly.kpxe": Path("/usr/lib/ipxe/undionly.kpxe"),
    "ipxe.efi": Path("/usr/lib/ipxe/ipxe.efi"),
    "pxelinux.0": Path("/usr/lib/PXELINUX/pxelinux.0"),
    "ldlinux.c32": Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
}
TIMINGS: list[str] = []  # one line per boot, printed at the end of the pytest run
TOOLS = ("ip", "ethtool", "dhcpd", "dhcrelay", "dnsmasq", "tcpdump", QEMU)

# The firmware's own "I give up" lines: no IPv4 PXE boot can follow them. GRUB's prompt is the
# end of a network GRUB that found no configuration (a successful grub.cfg sleeps after the marker);
# shim's verification error waits for a key press.
_EDK2_GIVE_UP = (
    r'failed to (load|start) Boot[0-9A-F]+ "UEFI PXEv4[^\n]*|grub> '
    r"|Verification failed: \(0x[0-9A-F]+\) [A-Za-z ]*[a-z]"  # shim refused its next loader
)
GIVE_UP = {
    "bios": re.compile(r"No bootable device"),
    "pxelinux": re.compile(r"No bootable device"),
    "uefi": re.compile(_EDK2_GIVE_UP),
    "uefisb": re.compile(_EDK2_GIVE_UP),
    "arm64": re.compile(_EDK2_GIVE_UP),
    "uefi-http": re.compile(r'failed to (load|start) Boot[0-9A-F]+ "UEFI HTTPv4'),
    "uefi6": re.compile(r'failed to (load|start) Boot[0-9A-F]+ "UEFI PXEv6'),
    "uefi6http": re.compile(r'failed to (load|start) Boot[0-9A-F]+ "UEFI HTTPv6'),
}
HTTP_PORT = 8080  # the built-in HTTP server of an http=True topology
# OVMF's HTTP boot over IPv4 first: its PXE paths and HTTP over IPv6 switched off through fw_cfg
# (each unwanted path costs up to 60 s of timeouts otherwise).
OVMF_HTTP_FW_CFG = ("IPv4PXESupport", "IPv6PXESupport", "IPv6Support")
HTTP6_URL = "http://[fd77::2]:8080/ipxe.efi"
# IPv6 topology (ipv6=True): dnsmasq on corp is the DHCPv6 server (M=1 router advertisements with
# the prefix on-link, issue 20); proxydhcp answers the PXE Solicit for this prefix.
PREFIX6, CORP_IP6, PXE_IP6 = "fd77::/64", "fd77::1", "fd77::2"

# Seconds a give-up line waits for the capture to show the marker (its text can lag the console).
MARKER_GRACE = 2.0

# Stage 2: runs in iPXE, asks the same TFTP server for a file named after the VM's MAC.
BOOT_IPXE = """#!ipxe
echo e2e: stage-2 script running: filename=${filename} next-server=${next-server} ip=${net0/ip}
imgfetch ok-${net0/mac:hexhyp} && echo e2e: marker fetched || echo e2e: marker fetch failed
sleep 3600 ||
"""
# The same, with the marker fetched from proxydhcp's HTTP server (an http=True topology).
_HTTP_MARKER = f"http://{PXE_IP}:{HTTP_PORT}/ok-${{net0/mac:hexhyp}}"
BOOT_IPXE_HTTP = f"""#!ipxe
echo e2e: stage-2 script running: filename=${{filename}} next-server=${{next-server}} ip=${{net0/ip}}
imgfetch {_HTTP_MARKER} && echo e2e: marker fetched || echo e2e: marker fetch failed
sleep 3600 ||
"""
PXELINUX_DEFAULT = (
    "SAY e2e: pxelinux.cfg/default loaded\nPROMPT 0\nTIMEOUT 10\nDEFAULT local\nLABEL local\n  LOCALBOOT -1\n"
)


def missing_requirements() -> str | None:
    """Why the e2e suite cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, taps)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"missing command {tool}"
    for path in (OVMF_CODE, OVMF_VARS, *BOOT_FILES.values()):
        if not path.exists():
            return f"missing firmware/boot file {path}"
    return None


def hyphen_mac(mac: str) -> str:
    return mac.lower().replace(":", "-")


# OVMF's network switches, read from fw_cfg (issue 20). IPv4Support=no removes the IPv4 stack,
# PXE included: only the IPv6 paths can be switched off without losing PXE over IPv4.
FW_SWITCHES = frozenset({"IPv4PXESupport", "IPv6PXESupport", "IPv4Support", "IPv6Support"})
NO_IPV6 = ("IPv6PXESupport", "IPv6Support")


def fw_cfg_switches(off: tuple[str, ...]) -> list[str]:
    """QEMU arguments that set the firmware's network switches in `off` to "no"."""
    unknown = set(off) - FW_SWITCHES
    if unknown:
        raise ValueError(f"unknown firmware switches {sorted(unknown)}")
    return [a for name in off for a in ("-fw_cfg", f"name=opt/org.tianocore/{name},string=no")]


def grub_cfg(vms: list[Vm]) -> str:
    """/grub/grub.cfg for network GRUB: each VM asks for its own marker over TFTP (relative to
    GRUB's root, the server it booted from), then sleeps so its prompt never reads as a give-up."""
    lines = ["echo e2e: grub.cfg loaded from $root net_default_mac=$net_default_mac"]
    for vm in vms:
        lines += [
            f'if [ "$net_default_mac" = "{vm.mac.lower()}" ]; then',
            f"  cat /{vm.marker}",
            "fi",
        ]
    lines += ["echo e2e: marker requested", "sleep 3600", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Vm:
    """One QEMU PXE client. firmware: bios (SeaBIOS + iPXE ROM), uefi (OVMF + EDK2 PXE), pxelinux
    (bios, but the proxy hands it pxelinux.0 through a [[host]] entry), uefisb (OVMF with Secure
    Boot on: the Topology's variable store, by default Microsoft's keys) or arm64 (AAVMF under
    qemu-system-aarch64), or uefi-http (OVMF + EDK2 HTTP boot over IPv4, its PXE
    and IPv6 paths switched off).

    switched_off: OVMF/AAVMF network switches set to "no" through fw_cfg (opt/org.tianocore/NAME):
    IPv4PXESupport, IPv6PXESupport, IPv4Support (the IPv4 stack: PXE and HTTP boot over IPv4),
    IPv6Support; each unwanted boot path costs up to 60 s of timeouts (IPv6: NO_IPV6).
    settle: seconds the VM keeps running after its firmware's give-up line, so the capture shows
    what the firmware does next (its next boot path, a new DISCOVER)."""

    name: str
    firmware: str
    mac: str
    segment: str = "local"  # or "relay": behind the router, on br1
    switched_off: tuple[str, ...] = ()
    settle: float = 0.0

    @property
    def marker(self) -> str:
        if self.firmware == "pxelinux":
            return f"pxelinux.cfg/01-{hyphen_mac(self.mac)}"
        return f"ok-{hyphen_mac(self.mac)}"


@dataclass
class BootResult:
    vm: Vm
    outcome: str  # success | firmware gave up: ... | timeout | qemu exited
    seconds: float
    serial: Path
    pcaps: dict[str, Path]  # bridge → capture of this boot batch
    proxy_log: Path | None
    bridge: str
    t0: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    def datagrams(self, bridge: str | None = None) -> list[wire.Datagram]:
        return wire.read(self.pcaps[bridge or self.bridge])

    def report(self, serial_lines: int = 40, log_lines: int = 60) -> str:
        """What a CI log needs to debug a failed boot: serial tail, proxy log tail, capture timeline."""
        out = [
            f"=== {self.vm.name} ({self.vm.firmware}, {self.vm.mac}, {self.vm.segment}): {self.outcome} "
            f"after {self.seconds:.1f} s; marker {self.vm.marker!r}"
        ]
        out += [
            f"--- serial console ({self.serial}), last {serial_lines} lines:",
            tail(self.serial, serial_lines),
        ]
        if self.proxy_log:
            out += [
                f"--- proxy log ({self.proxy_log}), last {log_lines} lines:",
                tail(self.proxy_log, log_lines),
            ]
        for bridge, pcap in self.pcaps.items():
            out += [
                f"--- capture timeline on {bridge} ({pcap}), seconds since QEMU start:",
                wire.timeline(pcap, t0=self.t0),
            ]
            if self.vm.firmware in ("uefi6", "uefi6http"):
                out += [f"--- IPv6 on {bridge}:", wire.timeline(pcap, t0=self.t0, ipv6=True)]
            dropped = capture_drops(pcap.parent / f"tcpdump-{bridge}.txt")
            if dropped:
                out.append(f"!!! tcpdump dropped {dropped} packets on {bridge}: the timeline misses them")
        out += self.notes
        return "\n".join(out)


def capture_drops(text: Path) -> int:
    """The packets tcpdump says the kernel dropped (its last lines, once it has stopped)."""
    try:
        found = re.findall(r"^(\d+) packets? dropped by kernel", text.read_text(errors="replace"), re.M)
    except OSError:
        return 0
    return int(found[-1]) if found else 0


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        return f"  ({exc})"
    # Firmware consoles use CR and ANSI escapes; keep them readable in a CI log.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc", "", text).replace("\r\n", "\n").replace("\r", "\n")
    kept = [ln for ln in text.split("\n") if ln.strip()]
    return "\n".join(f"  | {ln}" for ln in kept[-lines:]) or "  (empty)"


class Topology:
    """The virtual network, its daemons and the boots; a context manager that always cleans up.

    proxy: "proxydhcp" (the service under test) or "dnsmasq" (the reference, to debug the harness);
    hosts: MAC → boot file entries for the proxy ([[host]] in proxydhcp's config file).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        relay: bool = False,
        colocated: bool = False,
        proxy: str | None = None,
        hosts: dict[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        boot: dict[str, str] | None = None,
        files: dict[str, Path] | None = None,
        next_server: str | None = None,
        corp_pxeclient: bool = False,
        only_4011: bool = False,
        sb_vars: Path | None = None,
        http: bool = False,
        ipv6: bool = False,
        http6: bool = False,
        reloadable: bool = False,
        ipxe_boot_file: str = "boot.ipxe",
    ) -> None:
        """boot: architecture → boot file, added to / replacing the defaults (bios, efi-x64);
        files: TFTP root name → source file, added to the root; next_server: dhcpd's next-server
        (siaddr in the corporate OFFER/ACK); corp_pxeclient: dhcpd says option 60 PXEClient (as in
        co-located mode, but the proxy may stay on its own host); only_4011: proxydhcp binds port
        4011 only (--colocated) wherever it runs; sb_vars: the variable store uefisb VMs start from
        (default: Microsoft's keys); reloadable: proxydhcp reads its boot table from its configuration
        file (not from --boot-file flags, which a reload keeps), so `reload_boot` can change it by SIGHUP
        while a VM boots; ipxe_boot_file: what proxydhcp hands clients already running iPXE (a name in
        the TFTP root, or a URL: --ipxe-boot-file)."""
        self.workdir = workdir
        self.ipv6 = ipv6 or http6
        # http6: HTTP boot over IPv6; proxydhcp's own HTTP server (on ::, dual stack) serves the TFTP root
        # on [PXE_IP6]:8080 (issue 16: HTTP over IPv6 reuses the HTTP server), the boot table has only
        # the HTTP entry (a plain name the proxy turns into HTTP6_URL, httpboot.boot_url), so PXE over
        # IPv6 fails fast and HTTPv6 follows.
        self.http6 = http6
        self.relay = relay
        self.colocated = colocated
        self.boot_table = {"bios": "undionly.kpxe", "efi-x64": "ipxe.efi", **(boot or {})}
        self.extra_files = dict(files or {})
        self.next_server = next_server
        self.corp_pxeclient = corp_pxeclient or colocated
        self.only_4011 = only_4011 or colocated
        self.sb_vars = sb_vars or OVMF_SB_VARS
        self.grub_vms: list[Vm] = []
        self.proxy_kind = proxy or os.environ.get("PROXYDHCP_E2E_PROXY", "proxydhcp")
        self.hosts = {m.lower(): f for m, f in (hosts or {}).items()}
        # http: proxydhcp's HTTP server on HTTP_PORT, HTTP boot clients offered ipxe.efi there, and the
        # stage-2 script's marker fetched over HTTP (success: that request in the HTTP log).
        self.http = http
        self.reloadable = reloadable
        self.ipxe_boot_file = ipxe_boot_file
        self.log = log or (lambda _msg: None)
        self.lab: Lab | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_log: Path | None = None
        self.tftp_root = workdir / "tftproot"
        self._batches = 0
        self.batch_dir: Path | None = None  # the running boot batch's folder (captures, serial logs)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def proxy_ns(self) -> str:
        return "corp" if self.colocated else "pxe"

    @property
    def proxy_ip(self) -> str:
        return CORP_IP if self.colocated else PXE_IP

    @property
    def proxy_ports(self) -> frozenset[int]:
        """Ports proxydhcp's DHCP replies come from (in co-located mode 67 is dhcpd's)."""
        return frozenset({4011} if self.only_4011 else {67, 4011})

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lab = lab = Lab(prefix="e2e", workdir=self.workdir)
        hosts: dict[str, str | None] = {"corp": CORP_IP}
        if not self.colocated:
            hosts["pxe"] = PXE_IP
        if self.relay:
            hosts["rtr"] = RTR_IP
        lab.segment(LOCAL_NET, hosts, bridge="br0")
        if self.relay:
            lab.segment(RELAY_NET, {"rtr": RTR2_IP}, bridge="br1")
            lab.router("rtr")
            for short in hosts:
                if short != "rtr":
                    lab.route(short, RELAY_NET, RTR_IP)
        self.log(f"network: namespaces {', '.join(n.name for n in lab.namespaces.values())}")
        self._make_tftp_root()
        self._start_corp()
        if self.relay:
            rtr = lab.ns("rtr")
            helpers = [CORP_IP] if self.colocated else [CORP_IP, PXE_IP]
            rtr.start_dhcrelay("eth1", "eth0", helpers)
            self._start_ra(rtr, "eth1", "fd78::1")
            self.log(f"router: dhcrelay on {RTR2_IP} forwarding to {', '.join(helpers)} (ip helper-address)")
        if self.ipv6 and not self.colocated:
            pxe = lab.ns("pxe")
            pxe.run(
                ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.eth0.disable_ipv6=0"]
            )
            pxe.run(["ip", "addr", "add", f"{PXE_IP6}/64", "dev", "eth0", "nodad"])
        self.start_proxy()

    def close(self) -> None:
        if self.lab is not None:
            self.lab.close()  # ends every process it started (by PID), deletes the namespaces
            self.lab = None
            self.proxy = None

    def ns(self, short: str) -> Netns:
        assert self.lab is not None, "topology not started"
        return self.lab.ns(short)

    # -- pieces --------------------------------------------------------------------------------

    def _make_tftp_root(self) -> None:
        root = self.tftp_root
        (root / "pxelinux.cfg").mkdir(parents=True, exist_ok=True)
        for name, src in {**BOOT_FILES, **self.extra_files}.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / name)
        (root / "boot.ipxe").write_text(BOOT_IPXE_HTTP if self.http else BOOT_IPXE)
        (root / "grub").mkdir(exist_ok=True)
        (root / "pxelinux.cfg" / "default").write_text(PXELINUX_DEFAULT)
        for path in (root, *root.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def _start_corp(self) -> None:
        corp = self.ns("corp")
        subnets: list[tuple[str, str, str, str | None]] = [(LOCAL_NET, "10.77.0.100", "10.77.0.200", None)]
        if self.relay:
            subnets.append((RELAY_NET, "10.78.0.100", "10.78.0.200", RTR2_IP))
        extra = "ping-check false;"
        if self.corp_pxeclient:
            # PXE spec "DHCP and boot service on one host": the DHCP server itself says PXEClient.
            extra += '\noption vendor-class-identifier "PXEClient";'
        if self.next_server:
            extra += f"\nnext-server {self.next_server};"
        corp.start_dhcpd("eth0", subnets, extra=extra)
        # ipv6: a stateful DHCPv6 server (dnsmasq, nothing about PXE) and M=1 RAs; else RAs only.
        self._start_ra(corp, "eth0", CORP_IP6, dhcp6=self.ipv6)
        self.log(
            f"corporate DHCP: ISC dhcpd on {CORP_IP}"
            + (", option 60 PXEClient" if self.corp_pxeclient else "")
            + (f", next-server {self.next_server}" if self.next_server else "")
        )

    def _start_ra(self, node: Netns, iface: str, addr: str, dhcp6: bool = False) -> None:
        """IPv6 router advertisements only: without one iPXE waits ~15 s per stage for IPv6. With
        `dhcp6`, dnsmasq is also the network's ordinary DHCPv6 server (addresses, no boot file)."""
        node.run(
            [
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
                f"net.ipv6.conf.{iface}.disable_ipv6=0",
                f"net.ipv6.conf.{iface}.accept_ra=0",
                "net.ipv6.conf.all.forwarding=0",
            ]
        )
        node.run(["ip", "addr", "add", f"{addr}/64", "dev", iface, "nodad"])
        conf = self.workdir / f"{node.name}-ra.conf"
        conf.write_text(
            "\n".join(
                [
                    "port=0",
                    f"interface={iface}",
                    "bind-interfaces",
                    "no-resolv",
                    "no-hosts",
                    "user=root",
                    "group=root",
                    "pid-file=",
                    f"dhcp-leasefile={self.workdir / (node.name + '-ra.leases')}",
                    "enable-ra",
                    f"dhcp-range=::100,::1ff,constructor:{iface},64,10m"
                    if dhcp6
                    else f"dhcp-range=::,constructor:{iface},ra-only,64,10m",
                    "log-dhcp" if dhcp6 else "",
                    "",
                ]
            )
        )
        node.spawn(
            ["dnsmasq", "--keep-in-foreground", "--log-facility=-", f"--conf-file={conf}"],
            log=f"{node.name}-ra.log",
        )

    def start_proxy(self) -> None:
        node = self.ns(self.proxy_ns)
        self.proxy_log = self.workdir / f"proxy-{self.proxy_kind}.log"
        argv = self._proxy_argv()
        (self.workdir / "proxy-cmdline.txt").write_text(" ".join(argv) + "\n")
        # The tree under test, also when proxydhcp is not pip-installed.
        path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.proxy = node.spawn(argv, log=self.proxy_log.name, env=env)
        deadline = time.monotonic() + 30
        for port in (4011, 69) if self.only_4011 else (67, 4011, 69):
            while True:
                if self.proxy.poll() is not None:
                    raise RuntimeError(f"proxy exited ({self.proxy.returncode}):\n{tail(self.proxy_log, 40)}")
                if node.run(["ss", "-Hnlu", f"sport = :{port}"], check=False).stdout.strip():
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"proxy did not bind UDP {port} in 30 s:\n{tail(self.proxy_log, 40)}")
                time.sleep(0.1)
        self.log(f"proxy: {self.proxy_kind} on {self.proxy_ip} ({' '.join(argv[:8])} ...)")

    def stop_proxy(self) -> None:
        if self.proxy is not None:
            self.ns(self.proxy_ns).stop(self.proxy)
            self.proxy = None
            self.log("proxy: stopped")

    def _proxy_argv(self) -> list[str]:
        subnets = [LOCAL_NET, RELAY_NET] if self.relay else [LOCAL_NET]
        if self.proxy_kind == "proxydhcp":
            argv = [sys.executable, "-m", "proxydhcp", "serve", "--interface", "eth0"]
            if self.ipv6:
                subnets = [*subnets, PREFIX6]
            for cidr in subnets:
                argv += ["--subnet", cidr]
            table = (
                ["efi-x64-http=ipxe.efi"]
                if self.http6
                else []
                if self.reloadable  # in the configuration file: _write_config
                else [f"{arch}={name}" for arch, name in self.boot_table.items()]
            )
            for entry in table:
                argv += ["--boot-file", entry]
            argv += [
                "--ipxe-boot-file",
                self.ipxe_boot_file,
                "--tftp-root",
                str(self.tftp_root),
                "--log-format",
                "json",
            ]
            if self.only_4011:
                argv.append("--colocated")
            if self.http:
                argv += ["--http-port", str(HTTP_PORT), "--boot-file", "efi-x64-http=ipxe.efi"]
            elif self.http6:
                argv += ["--http-port", str(HTTP_PORT)]
            if self.hosts or self.reloadable:
                argv += ["--config", str(self._write_config())]
            return argv
        if self.proxy_kind == "dnsmasq":
            return ["dnsmasq", "--keep-in-foreground", f"--conf-file={self._dnsmasq_conf(subnets)}"]
        raise ValueError(f"unknown proxy implementation {self.proxy_kind!r} (proxydhcp or dnsmasq)")

    def _write_config(self) -> Path:
        """proxydhcp.toml: the [[host]] entries, and with `reloadable` the boot table."""
        conf = self.workdir / "proxydhcp.toml"
        text = ""
        if self.reloadable:
            text += "[boot]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in self.boot_table.items()) + "\n"
        text += "".join(f'[[host]]\nmac = "{m}"\nboot_file = "{f}"\n\n' for m, f in self.hosts.items())
        conf.write_text(text)
        return conf

    def reload_boot(self, boot: dict[str, str], timeout: float = 10.0) -> None:
        """Change the running proxydhcp's boot table the way an operator does: edit its configuration
        file, send SIGHUP, and wait for its "configuration reloaded" line (needs `reloadable`)."""
        assert self.reloadable and self.proxy is not None and self.proxy_log is not None
        self.boot_table.update(boot)
        self._write_config()
        mark = len(self.proxy_log.read_bytes())
        os.killpg(self.proxy.pid, signal.SIGHUP)  # its own session (Netns.spawn): proxydhcp only
        deadline = time.monotonic() + timeout
        while b"configuration reloaded" not in self.proxy_log.read_bytes()[mark:]:
            if time.monotonic() > deadline or self.proxy.poll() is not None:
                raise RuntimeError(f"proxydhcp did not reload in {timeout} s:\n{tail(self.proxy_log, 20)}")
            time.sleep(0.05)
        self.log(f"proxy: reloaded, boot table now {self.boot_table}")

    def proxy_records(self) -> list[dict[str, object]]:
        """proxydhcp's JSON log records so far (decision records, HTTP requests, messages)."""
        import json

        out: list[dict[str, object]] = []
        if self.proxy_log is None or not self.proxy_log.exists():
            return out
        for line in self.proxy_log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    out.append(record)
        return out

    def _dnsmasq_conf(self, subnets: list[str]) -> Path:
        """The reference: dnsmasq in proxy mode (never an address) with the same boot files."""
        lines = [
            "port=0",
            "interface=eth0",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "user=root",
            "group=root",
            "log-dhcp",
            "log-facility=-",
            "pid-file=",
            "enable-tftp",
            f"tftp-root={self.tftp_root}",
            "dhcp-userclass=set:ipxe,iPXE",
            "dhcp-match=set:ipxe,175",
            'pxe-prompt="e2e",0',
        ]
        lines += [f"dhcp-range={cidr.split('/')[0]},proxy,255.255.255.0" for cidr in subnets]
        if self.colocated:
            lines.append("dhcp-alternate-port=1067,1068")  # port 67 is dhcpd's; 4011 stays
        for i, (mac, name) in enumerate(self.hosts.items()):
            lines += [f"dhcp-mac=set:host{i},{mac}", f'pxe-service=tag:host{i},x86PC,"host",{name}']
        lines += [
            'pxe-service=tag:!ipxe,x86PC,"bios",undionly.kpxe',
            'pxe-service=tag:ipxe,x86PC,"ipxe",boot.ipxe',
        ]
        for csa in ("BC_EFI", "x86-64_EFI"):
            lines += [
                f'pxe-service=tag:!ipxe,{csa},"uefi",ipxe.efi',
                f'pxe-service=tag:ipxe,{csa},"ipxe",boot.ipxe',
            ]
        conf = self.workdir / "proxy-dnsmasq.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    # -- boots ---------------------------------------------------------------------------------

    def boot(
        self,
        vms: list[Vm],
        timeout: float = 180.0,
        on_tick: Callable[[], None] | None = None,
    ) -> dict[str, BootResult]:
        """Boot `vms` at the same time; each ends at its marker, its firmware's give-up line, QEMU's
        exit or the timeout (so a failure is the firmware's own verdict, not 'no marker yet')."""
        self._batches += 1
        bdir = self.batch_dir = self.workdir / f"boot{self._batches}"
        bdir.mkdir()
        wire_ns = self.ns("wire")
        bridges = ["br0", "br1"] if self.relay else ["br0"]
        captures = {br: self._capture(wire_ns, br, bdir) for br in bridges}
        self._gave_up: dict[str, tuple[float, str]] = {}
        running: dict[str, tuple[Vm, subprocess.Popen[bytes], float]] = {}
        results: dict[str, BootResult] = {}
        try:
            self.grub_vms += [vm for vm in vms if vm not in self.grub_vms]
            (self.tftp_root / "grub" / "grub.cfg").write_text(grub_cfg(self.grub_vms))
            for vm in vms:
                (self.tftp_root / f"ok-{hyphen_mac(vm.mac)}").write_text(f"#!ipxe\necho e2e: OK {vm.mac}\n")
                running[vm.name] = (vm, self._start_vm(wire_ns, vm, bdir), time.time())
                self.log(f"boot: {vm.name} ({vm.firmware}, MAC {vm.mac}) started on {self._bridge(vm)}")
            deadline = time.monotonic() + timeout
            while running and time.monotonic() < deadline:
                for name, (vm, proc, t0) in list(running.items()):
                    outcome = self._outcome(vm, proc, captures[self._bridge(vm)][1], bdir)
                    if outcome:
                        if on_tick:
                            on_tick()
                        results[name] = self._result(vm, outcome, t0, bdir, captures)
                        if outcome == "success":
                            time.sleep(1.0)  # let the marker's reply land in the capture
                        wire_ns.stop(proc)
                        del running[name]
                if on_tick:
                    on_tick()
                time.sleep(0.2)
            for name, (vm, proc, t0) in running.items():
                results[name] = self._result(vm, "timeout", t0, bdir, captures)
                wire_ns.stop(proc)
        finally:
            for _vm, proc, _t0 in running.values():
                wire_ns.stop(proc)
            for proc, _text in captures.values():
                wire_ns.stop(proc)
            for vm in vms:
                wire_ns.run(["ip", "link", "del", self._tap(vm)], check=False)
        if on_tick:
            on_tick()
        return results

    def _bridge(self, vm: Vm) -> str:
        return "br1" if vm.segment == "relay" else "br0"

    @staticmethod
    def _tap(vm: Vm) -> str:
        return f"tap-{vm.name}"[:15]

    def _capture(self, wire_ns: Netns, bridge: str, bdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
        """tcpdump on a bridge: the pcap for the assertions, text lines (-l --print) to spot the
        marker while the VM runs. In immediate mode libpcap gives every packet a ring frame of up to
        64 KiB (the bridge has offloads on), so its default 2 MiB ring held ~32 packets and a burst
        while tcpdump waited for the CPU was dropped ("83 packets dropped by kernel" lost blocks of a
        complete ldlinux.c32 transfer): 32 MiB (-B, KiB) holds ~500."""
        text = bdir / f"tcpdump-{bridge}.txt"
        proc = wire_ns.spawn(
            [
                "tcpdump",
                "-i",
                bridge,
                "-s",
                "0",
                "-U",
                "--immediate-mode",
                "-B",
                "32768",
                "-n",
                "-l",
                "--print",
                "-w",
                str(bdir / f"{bridge}.pcap"),
                f"udp or icmp or tcp port {HTTP_PORT}" if self.http else "udp or icmp",
            ],
            log=str(text.relative_to(self.workdir)),
        )
        deadline = time.monotonic() + 15
        while "listening on" not in text.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump on {bridge} did not start: {text.read_text(errors='replace')}")
            time.sleep(0.05)
        return proc, text

    def _start_vm(self, wire_ns: Netns, vm: Vm, bdir: Path) -> subprocess.Popen[bytes]:
        tap = self._tap(vm)
        wire_ns.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        wire_ns.run(["ip", "link", "set", tap, "master", self._bridge(vm)])
        wire_ns.run(["ip", "link", "set", tap, "up"])
        argv = [
            QEMU,
            "-name",
            vm.name,
            "-accel",
            os.environ.get("PROXYDHCP_E2E_ACCEL", "tcg"),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "std",
            "-serial",
            f"file:{bdir / (vm.name + '-serial.log')}",
            "-netdev",
            f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-boot",
            "strict=on",
        ]
        if vm.firmware in ("bios", "pxelinux"):
            # graphics=off: SeaBIOS mirrors its console and the iPXE ROM's text to the serial port.
            argv += [
                "-machine",
                "pc,graphics=off",
                "-m",
                "256",
                "-device",
                f"e1000,netdev=n0,mac={vm.mac},bootindex=1",
            ]
        elif vm.firmware in UEFI_FIRMWARE:
            # romfile= (no option ROM): otherwise QEMU's iPXE ROM boots instead of EDK2's PxeBcDxe.
            code, template, machine, mem = {
                "uefi": (OVMF_CODE, OVMF_VARS, ["-machine", "q35"], "512"),
                "uefi-http": (OVMF_CODE, OVMF_VARS, ["-machine", "q35"], "512"),
                "uefi6": (OVMF_CODE, OVMF_VARS, ["-machine", "q35"], "512"),
                "uefi6http": (OVMF_CODE, OVMF_VARS, ["-machine", "q35"], "512"),
                # Secure Boot needs the SMM build, and SMM-protected variable flash.
                "uefisb": (
                    OVMF_SB_CODE,
                    self.sb_vars,
                    ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"],
                    "512",
                ),
                "arm64": (AAVMF_CODE, AAVMF_VARS, ["-machine", "virt", "-cpu", "cortex-a57"], "1024"),
            }[vm.firmware]
            variables = bdir / f"{vm.name}-vars.fd"
            shutil.copyfile(template, variables)
            if vm.firmware == "arm64":
                argv[0] = QEMU_ARM64
                argv.remove("-vga")  # the virt machine has no VGA; AAVMF's console is the PL011 serial
                argv.remove("std")
            argv += [
                *machine,
                "-m",
                mem,
                "-device",
                f"virtio-net-pci,netdev=n0,mac={vm.mac},bootindex=1,romfile=",
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={variables}",
                *fw_cfg_switches(OVMF_HTTP_FW_CFG if vm.firmware == "uefi-http" else vm.switched_off),
            ]
            if vm.firmware in ("uefi6", "uefi6http"):
                # PXE over IPv6 first (issue 20): without this OVMF spends up to 60 s on PXEv4.
                argv += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"]
            if vm.firmware == "uefi6http":
                # PXEv6 then HTTPv6 (HTTPv6 first fails before its link-local address passed DAD).
                argv += ["-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=no"]
        else:
            raise ValueError(f"unknown firmware {vm.firmware!r}")
        (bdir / f"{vm.name}-qemu-cmdline.txt").write_text(" ".join(argv) + "\n")
        return wire_ns.spawn(argv, log=str((bdir / f"{vm.name}-qemu.log").relative_to(self.workdir)))

    def _marker_seen(self, vm: Vm, text: Path) -> bool:
        if self.http and vm.firmware != "pxelinux":
            return self.http_marker_seen(vm)
        seen = text.read_text(errors="replace")
        return f'RRQ "{vm.marker}"' in seen or f'RRQ "/{vm.marker}"' in seen

    def http_requests(self) -> list[dict[str, object]]:
        """The HTTP server's request records so far (JSON log lines with a `status` field)."""
        import json

        out: list[dict[str, object]] = []
        if self.proxy_log is None or not self.proxy_log.exists():
            return out
        for line in self.proxy_log.read_text(errors="replace").splitlines():
            if '"status"' in line and line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("logger") == "proxydhcp.http":
                    out.append(record)
        return out

    def http_marker_seen(self, vm: Vm) -> bool:
        return any(r.get("file") == f"/{vm.marker}" and r.get("status") == 200 for r in self.http_requests())

    def _outcome(self, vm: Vm, proc: subprocess.Popen[bytes], text: Path, bdir: Path) -> str | None:
        if self._marker_seen(vm, text):
            return "success"
        serial = (
            (bdir / f"{vm.name}-serial.log").read_bytes().decode("utf-8", "replace")
            if (bdir / f"{vm.name}-serial.log").exists()
            else ""
        )
        gave_up = GIVE_UP[vm.firmware].search(serial)
        if gave_up and vm.settle:
            # keep the VM running a while: the capture is to show what the firmware does next
            first = self._gave_up.setdefault(vm.name, (time.monotonic(), gave_up.group(0)))
            if time.monotonic() - first[0] < vm.settle and proc.poll() is None:
                return None
        if gave_up:
            # pxelinux asks for the marker, then boots its default (local disk) and gives up within
            # milliseconds: the capture's text can lag the serial console, so let it catch up.
            deadline = time.monotonic() + MARKER_GRACE
            while time.monotonic() < deadline:
                if self._marker_seen(vm, text):
                    return "success"
                time.sleep(0.1)
            return f"firmware gave up: {gave_up.group(0)}"
        if proc.poll() is not None:
            return f"qemu exited ({proc.returncode})"
        return None

    def _result(
        self,
        vm: Vm,
        outcome: str,
        t0: float,
        bdir: Path,
        captures: dict[str, tuple[subprocess.Popen[bytes], Path]],
    ) -> BootResult:
        seconds = time.time() - t0
        self.log(f"boot: {vm.name}: {outcome} after {seconds:.1f} s")
        TIMINGS.append(
            f"{vm.name:<14} {vm.firmware:<9} {vm.segment:<6} {self.proxy_kind:<9} {seconds:6.1f} s  {outcome}"
        )
        return BootResult(
            vm=vm,
            outcome=outcome,
            seconds=seconds,
            serial=bdir / f"{vm.name}-serial.log",
            pcaps={br: bdir / f"{br}.pcap" for br in captures},
            proxy_log=self.proxy_log,
            bridge=self._bridge(vm),
            t0=t0,
        )
