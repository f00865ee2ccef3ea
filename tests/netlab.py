"""A throwaway virtual network for tests: network namespaces, a bridge, veth pairs and the
processes that run inside them (ISC dhcpd as the "corporate" DHCP server, dhcrelay as a router's
`ip helper-address`, proxydhcp, clients).

Safety: every link lives in namespaces this module created (names carry a random suffix), no
namespace has a route out of the lab's own subnets, processes are tracked and ended by PID, and
`Lab.close()` (also on exceptions, via the context manager) removes everything it made.

    with Lab() as lab:
        seg = lab.segment("10.77.0.0/24", {"corp": "10.77.0.1", "pxe": "10.77.0.2", "cli": "10.77.0.50"})
        lab.ns("corp").start_dhcpd(...)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def have_root_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Netns:
    """One network namespace and the processes started in it."""

    name: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(argv), check=check, capture_output=True, text=True, timeout=timeout)

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], check=check)

    def spawn(
        self, argv: Sequence[str], log: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in the namespace; its output goes to `workdir/<log>`."""
        logfile = self.workdir / (log or f"{self.name}-{Path(argv[0]).name}-{len(self.procs)}.log")
        out = logfile.open("ab")
        proc = subprocess.Popen(
            self.cmd(argv), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        out.close()
        proc.logfile = logfile  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
        """End one process we started (its whole session: `ip netns exec` forks the real program)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout=3)
        # Anything still running inside the namespace was started by us (e.g. a daemon that forked).
        pids = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def wait_udp_bound(self, port: int, timeout: float = 10.0) -> None:
        """Wait until something listens on UDP `port` in this namespace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(["ss", "-Hnlu", f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing bound UDP port {port} in {self.name} within {timeout}s")

    # -- daemons used as real peers -------------------------------------------------------------

    def start_dhcpd(
        self,
        iface: str,
        subnets: Sequence[tuple[str, str, str, str | None]],
        extra: str = "",
    ) -> subprocess.Popen[bytes]:
        """ISC dhcpd as the corporate server: (cidr, range_start, range_end, router) per subnet.

        It knows nothing about PXE unless `extra` says so
        (e.g. `option vendor-class-identifier "PXEClient";`).
        """
        conf = self.workdir / f"{self.name}-dhcpd.conf"
        lease = self.workdir / f"{self.name}-dhcpd.leases"
        lease.write_text("")
        blocks = [
            "authoritative;",
            "default-lease-time 600;",
            "max-lease-time 600;",
            "ddns-update-style none;",
            extra,
        ]
        for cidr, start, end, router in subnets:
            net = ipaddress.IPv4Network(cidr)
            routers = f"  option routers {router};\n" if router else ""
            blocks.append(
                f"subnet {net.network_address} netmask {net.netmask} {{\n  range {start} {end};\n{routers}}}"
            )
        conf.write_text("\n".join(blocks) + "\n")
        pidfile = self.workdir / f"{self.name}-dhcpd.pid"
        proc = self.spawn(
            ["dhcpd", "-4", "-f", "-d", "--no-pid", "-cf", str(conf), "-lf", str(lease), iface],
            log=f"{self.name}-dhcpd.log",
        )
        del pidfile
        self.wait_udp_bound(67)
        return proc

    def start_dhcrelay(
        self, downstream: str, upstream: str, servers: Sequence[str]
    ) -> subprocess.Popen[bytes]:
        """ISC dhcrelay forwarding to `servers`, as a router's `ip helper-address` list does."""
        proc = self.spawn(
            ["dhcrelay", "-4", "-d", "--no-pid", "-id", downstream, "-iu", upstream, *servers],
            log=f"{self.name}-dhcrelay.log",
        )
        self.wait_udp_bound(67)
        return proc


class Lab:
    """Namespaces + links for one test; everything is removed by close()."""

    def __init__(self, prefix: str = "pdt", workdir: Path | None = None) -> None:
        self.tag = f"{prefix}{secrets.token_hex(3)}"
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.namespaces: dict[str, Netns] = {}
        self._bridges: dict[str, tuple[str, str]] = {}  # segment cidr → (wire ns short name, bridge)
        self._links = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, short: str) -> Netns:
        """The namespace called `short` in this lab, created on first use (with lo up)."""
        if short not in self.namespaces:
            name = f"{self.tag}-{short}"
            _ip("netns", "add", name)
            node = Netns(name, self.workdir)
            self.namespaces[short] = node
            node.run(["ip", "link", "set", "lo", "up"])
            # Accept replies on any path (relayed setups); never forward unless asked (router()).
            node.run(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"], check=False)
            node.run(["sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0"], check=False)
        return self.namespaces[short]

    def link(self, a: str, a_if: str, b: str, b_if: str) -> None:
        """A veth pair between two namespaces of this lab; both ends up, TX checksum offload off
        (so captures show real checksums)."""
        self._links += 1
        tmp_a, tmp_b = f"{self.tag}a{self._links}", f"{self.tag}b{self._links}"
        na, nb = self.ns(a), self.ns(b)
        _ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        _ip("link", "set", tmp_a, "netns", na.name)
        _ip("link", "set", tmp_b, "netns", nb.name)
        na.run(["ip", "link", "set", tmp_a, "name", a_if])
        nb.run(["ip", "link", "set", tmp_b, "name", b_if])
        for node, ifname in ((na, a_if), (nb, b_if)):
            node.run(["ip", "link", "set", ifname, "up"])
            node.run(["ethtool", "-K", ifname, "tx", "off"], check=False)

    def segment(
        self, cidr: str, hosts: dict[str, str | None], wire: str = "wire", bridge: str = "br0"
    ) -> str:
        """An L2 segment: bridge `bridge` in namespace `wire`, and one `eth0`-style port per host.

        `hosts` maps a namespace short name to its address on the segment; each host's interface is
        named `eth<n>` (eth0 for its first segment); an address of None leaves the interface without
        one (a PXE client before its lease). Returns the bridge name.
        """
        net = ipaddress.IPv4Network(cidr)
        w = self.ns(wire)
        if (wire, bridge) not in self._bridges.values():
            w.run(["ip", "link", "add", bridge, "type", "bridge"])
            w.run(
                ["ip", "link", "set", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"],
                check=False,
            )
            w.run(["ip", "link", "set", bridge, "up"])
            self._bridges[cidr] = (wire, bridge)
        for short, address in hosts.items():
            node = self.ns(short)
            existing = node.run(["ip", "-o", "link", "show"]).stdout.count(": eth")
            ifname = f"eth{existing}"
            port = f"p{self._links + 1}-{short}"[:15]
            self.link(short, ifname, wire, port)
            w.run(["ip", "link", "set", port, "master", bridge])
            if address:
                node.run(["ip", "addr", "add", f"{address}/{net.prefixlen}", "dev", ifname])
        return bridge

    def route(self, short: str, cidr: str, via: str) -> None:
        self.ns(short).run(["ip", "route", "add", cidr, "via", via])

    def router(self, short: str) -> None:
        """Turn on IPv4 forwarding in this namespace only (between the lab's own segments)."""
        self.ns(short).run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def iface_of(self, short: str, address: str) -> str:
        out = self.ns(short).run(["ip", "-o", "-4", "addr", "show"]).stdout
        for line in out.splitlines():
            parts = line.split()
            if parts[3].split("/")[0] == address:
                return parts[1]
        raise KeyError(f"{address} not on any interface of {short}")

    def close(self) -> None:
        for node in self.namespaces.values():
            node.stop_all()
        for node in self.namespaces.values():
            subprocess.run(["ip", "netns", "delete", node.name], capture_output=True)
        self.namespaces.clear()
        if self._own_workdir and not os.environ.get("PROXYDHCP_KEEP_LAB"):
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def lab(prefix: str = "pdt") -> Iterator[Lab]:
    with Lab(prefix) as made:
        yield made
