"""Side-by-side benchmark: proxydhcp against tftpd-hpa, dnsmasq, atftpd, py3tftp, tftpy and PyPXE (issue 6).

    python3 -m bench.run            # the full bench: >= 3 rounds, results/<date>.md, README summary
    python3 -m bench.run --smoke    # a few seconds, tiny files, correctness only (CI)

Method: each server is started fresh for each run, in its own network namespace; servers are interleaved
round-robin (the order rotates every round); ratios to tftpd-hpa and dnsmasq are taken within a round and
their median reported. Lockstep single transfers pin server and client to CPU 0 (a cross-CPU wakeup costs
~20 µs here); storms run unpinned. Server CPU comes from /proc/<pid>/stat of the server's whole session
(utime+stime, children included), memory from VmHWM. The C load clients verify every byte and every reply.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import peers, setup_env
from bench.procstat import CpuGroup, proc_mem

MIB = 1 << 20
PIN = ["taskset", "-c", "0"]


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    kind: str  # "tftp" or "proxy"
    file: str = ""
    size: int = 0
    blksize: int = 0
    windowsize: int = 1
    clients: int = 1
    total: int = 1
    tsize: bool = True
    pinned: bool = False
    mode: str = ""  # proxy: "discover" or "request"
    distinct: bool = False  # proxy: every request of its own shape (option 12), so no memo hit
    deadline: float = 120.0
    unit: str = "MB/s"


def workloads(smoke: bool) -> list[Workload]:
    if smoke:
        return [
            Workload("single", "1 MiB single transfer, blksize 1468, lockstep, pinned", "tftp", "one.bin",
                     MIB, 1468, pinned=True, deadline=30),
            Workload("window", "same with windowsize 16", "tftp", "one.bin", MIB, 1468, 16, pinned=True,
                     deadline=30),
            # blksize 8 reaches block 65536 after 512 KiB: the rollover check without a large file.
            Workload("rollover", "blksize 8, 66,000 blocks (rollover), lockstep, pinned", "tftp", "roll.bin",
                     66000 * 8 + 3, 8, pinned=True, deadline=60),
            Workload("storm", "16 clients x 256 KiB, blksize 1468", "tftp", "storm.bin", 256 << 10, 1468,
                     clients=16, total=16, deadline=60),
            Workload("small", "100 x 4 KiB, tsize+blksize, 16 in flight", "tftp", "small.bin", 4096, 1468,
                     clients=16, total=100, deadline=60, unit="req/s"),
            Workload("discover", "proxy DISCOVER->OFFER, 200 MACs, 64 in flight", "proxy", mode="discover",
                     total=200, clients=64, deadline=30, unit="replies/s"),
            Workload("request", "4011 REQUEST->ACK, 200 MACs, 64 in flight", "proxy", mode="request",
                     total=200, clients=64, deadline=30, unit="replies/s"),
            Workload("discover-cold", "DISCOVER, each of its own shape, 200 MACs", "proxy", mode="discover",
                     total=200, clients=64, deadline=30, unit="replies/s", distinct=True),
        ]
    return [
        Workload("single", "64 MiB single transfer, blksize 1468, lockstep, pinned", "tftp", "big.bin",
                 64 * MIB, 1468, pinned=True, deadline=240),
        Workload("window", "same with windowsize 16", "tftp", "big.bin", 64 * MIB, 1468, 16, pinned=True,
                 deadline=240),
        Workload("rollover", "42 MiB, blksize 512 (86,016 blocks: rollover), lockstep, pinned", "tftp",
                 "roll.bin", 42 * MIB, 512, pinned=True, deadline=300),
        Workload("storm", "storm 256 clients x 8 MiB, blksize 1468", "tftp", "storm.bin", 8 * MIB, 1468,
                 clients=256, total=256, deadline=300),
        Workload("small", "1000 x 4 KiB, tsize+blksize, 32 in flight", "tftp", "small.bin", 4096, 1468,
                 clients=32, total=1000, deadline=120, unit="req/s"),
        Workload("discover", "proxy DISCOVER->OFFER, 20,000 MACs, 64 in flight", "proxy", mode="discover",
                 total=20000, clients=64, deadline=120, unit="replies/s"),
        Workload("request", "4011 REQUEST->ACK, 20,000 MACs, 64 in flight", "proxy", mode="request",
                 total=20000, clients=64, deadline=120, unit="replies/s"),
        # Every request with a host name of its own (option 12): no two share a shape, so proxydhcp's
        # reply memo never hits and each request runs the whole pipeline (its worst case).
        Workload("discover-cold", "same, each request of its own shape (no memo hit)", "proxy",
                 mode="discover", total=20000, clients=64, deadline=120, unit="replies/s", distinct=True),
        Workload("request-cold", "4011, each request of its own shape (no memo hit)", "proxy",
                 mode="request", total=20000, clients=64, deadline=120, unit="replies/s", distinct=True),
    ]


# ---------------------------------------------------------------------------------------------- processes


class Procs:
    """Every process the bench starts, each in its own session, ended by its PID (group) in `close`."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []
        self.groups: dict[int, CpuGroup] = {}

    def start(self, argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        group = CpuGroup()
        try:
            with log.open("ab") as out:
                p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True, preexec_fn=group.enter)
        except BaseException:
            group.remove()
            raise
        self.live.append(p)
        self.groups[p.pid] = group
        return p

    def cpu(self, p: subprocess.Popen[bytes]) -> float:
        return self.groups[p.pid].seconds(p.pid)

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)  # our own session: the server and whatever it forked
            try:
                p.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if p in self.live:
            self.live.remove(p)
        group = self.groups.pop(p.pid, None)
        if group is not None:
            group.remove()

    def close(self) -> None:
        for p in list(self.live):
            self.stop(p)


# ---------------------------------------------------------------------------------------------- namespaces


class Netns:
    """A namespace the bench creates (random suffix) and always deletes."""

    def __init__(self, tag: str) -> None:
        self.name = f"pxb{tag}-{secrets.token_hex(3)}"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, timeout=10, capture_output=True)

    def exec(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=10, capture_output=True)
        # IPv4 only: a new veth's IPv6 duplicate address detection and router solicitations end
        # seconds later with netlink events that dnsmasq answers by rescanning its interfaces, which
        # halved its DISCOVER rate when that workload ran first.
        subprocess.run([*self.exec(), "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], timeout=10, capture_output=True)
        self.ip("link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], timeout=10, capture_output=True)


def listening(ns: Netns, port: int) -> bool:
    r = subprocess.run([*ns.exec(), "ss", "-Hlun"], capture_output=True, text=True, timeout=10)
    rows = [line.split() for line in r.stdout.splitlines()]
    return any(len(f) > 3 and f[3].rsplit(":", 1)[-1] == str(port) for f in rows)


def wait_listening(ns: Netns, p: subprocess.Popen[bytes], port: int, limit: float = 15.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if p.poll() is not None:
            return False
        if listening(ns, port):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class Result:
    rate: float = 0.0  # MB/s, req/s or replies/s
    ok: int = 0
    total: int = 0
    cpu_us: float = 0.0  # server CPU per block / per request / per reply
    hwm_kib: int = 0
    rss_growth_kib: int = 0
    p99_ms: float = 0.0
    lost: int = 0
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        return self.total > 0 and self.ok == self.total and not self.errors


def make_files(root: Path, wls: list[Workload]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for w in wls:
        if not w.file:
            continue
        f = root / w.file
        if f.exists() and f.stat().st_size == w.size:
            continue
        with f.open("wb") as out:
            left = w.size
            while left > 0:  # random bytes: a server that confuses blocks is caught by the byte check
                chunk = min(left, 4 * MIB)
                out.write(os.urandom(chunk))
                left -= chunk
        f.chmod(0o644)


def client_json(argv: list[str], timeout: float) -> tuple[int, dict[str, Any]]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, {"errors": ["load client exceeded its time"]}
    try:
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return r.returncode, {"errors": [f"load client output unreadable: {r.stderr.strip()[:200]}"]}


LOOP_LINE = re.compile(rb"event loop: (\w+)")


def logged_loops(log: Path, offset: int) -> list[str]:
    """The event loops named by `event loop: X` lines written to `log` past `offset` (proxydhcp
    logs one per process, before it binds)."""
    with log.open("rb") as f:
        f.seek(offset)
        return [m.group(1).decode() for m in LOOP_LINE.finditer(f.read())]


def install_check() -> list[str]:
    """What the bench's interpreter lacks of what `pip install .` gives (the runtime dependencies
    pyproject.toml declares for this platform): the bench measures that install unless told otherwise."""
    code = (
        "import importlib.metadata as m, tomllib, sys\n"
        "from packaging.requirements import Requirement\n"
        "deps = tomllib.load(open(sys.argv[1], 'rb'))['project']['dependencies']\n"
        "for r in map(Requirement, deps):\n"
        "    if r.marker is None or r.marker.evaluate({'extra': ''}):\n"
        "        try:\n"
        "            if not r.specifier.contains(m.version(r.name), prereleases=True): print(r)\n"
        "        except m.PackageNotFoundError: print(r)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(peers.REPO / "pyproject.toml")],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return [f"(could not check: {out.stderr.strip().splitlines()[-1:]})"]
    return out.stdout.split("\n")[:-1]


def loop_summary(loops: collections.Counter[str], forced: bool, missing: list[str]) -> str:
    """One sentence for the report: which loop proxydhcp ran on, and whether that is the default install."""
    seen = ", ".join(f"{name} ({n} server start{'s' if n > 1 else ''})" for name, n in loops.most_common())
    how = ("forced with --loop asyncio (PROXYDHCP_EVENT_LOOP=asyncio)" if forced
           else "what `pip install .` gives on Linux" if not missing
           else f"NOT the default install: the interpreter lacks {', '.join(missing)}")
    return f"proxydhcp event loop: {seen or 'unknown (no server logged one)'}; {how}; {sys.executable}."


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Procs, tools: dict[str, Path]) -> None:
        self.args = args
        self.procs = procs
        self.tools = tools
        self.root = setup_env.WORK / ("smoke-root" if args.smoke else "root")
        self.logs = setup_env.WORK / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.loops: collections.Counter[str] = collections.Counter()  # proxydhcp starts per event loop

    def server(self, peer: peers.Peer, ns: Netns, ctx: peers.Ctx, pinned: bool, port: int,
               tag: str) -> subprocess.Popen[bytes] | None:
        argv = [*ns.exec(), *(PIN if pinned else []), *peer.argv(ctx)]
        log = self.logs / f"{peer.kind}-{peer.name}-{tag}.log"
        offset = log.stat().st_size if log.exists() else 0
        p = self.procs.start(argv, peer.cwd(ctx), log)
        if wait_listening(ns, p, port):
            if peer.origin == "this project":
                self.loops.update(logged_loops(log, offset))
            return p
        self.procs.stop(p)
        return None

    def run_tftp(self, peer: peers.Peer, w: Workload, ns: Netns, port: int) -> Result:
        port = peer.port or port
        ctx = peers.Ctx(root=self.root, port=port)
        p = self.server(peer, ns, ctx, w.pinned, port, w.key)
        if p is None:
            return Result(total=w.total, errors=["server did not start (see bench/.work/logs)"])
        try:
            cpu0 = self.procs.cpu(p)
            argv = [*ns.exec(), *(PIN if w.pinned else []), str(self.tools["tftpload"]), "--port", str(port),
                    "--file", w.file, "--expect", str(self.root / w.file), "--blksize", str(w.blksize),
                    "--clients", str(w.clients), "--total", str(w.total), "--deadline", str(w.deadline)]
            if w.windowsize > 1:
                argv += ["--windowsize", str(w.windowsize)]
            if w.tsize:
                argv.append("--tsize")
            if w.clients > 1:
                argv.append("--spread")  # one source address per client, as in a real boot storm
            _, out = client_json(argv, w.deadline + 30)
            cpu = self.procs.cpu(p) - cpu0
            mem = proc_mem(p.pid)
        finally:
            self.procs.stop(p)
        elapsed = float(out.get("elapsed", 0.0)) or 1e-9
        ok = int(out.get("ok", 0))
        units = int(out.get("blocks", 0)) if w.unit == "MB/s" else ok
        rate = int(out.get("bytes", 0)) / elapsed / 1e6 if w.unit == "MB/s" else ok / elapsed
        return Result(rate=rate, ok=ok, total=w.total, cpu_us=cpu / units * 1e6 if units else 0.0,
                      hwm_kib=mem.get("VmHWM", 0), p99_ms=float(out.get("p99_s", 0.0)) * 1e3,
                      errors=list(out.get("errors", [])),
                      extra={"windowsize": out.get("windowsize", 1),
                             "retransmits": out.get("retransmits", 0)})

    def run_proxy(self, peer: peers.Peer, w: Workload, srv: Netns, cli: Netns, net: str) -> Result:
        if w.mode == "request" and not peer.serves_4011:
            return Result(total=w.total, errors=["does not serve port 4011"], extra={"na": True})
        ctx = peers.Ctx(root=self.root, port=0, iface="vs", server_ip=f"{net}.1", subnet=f"{net}.0/24")
        port = 4011 if w.mode == "request" else 67
        p = self.server(peer, srv, ctx, False, port, w.key)
        if p is None:
            return Result(total=w.total, errors=["server did not start (see bench/.work/logs)"])
        base = [*cli.exec(), str(self.tools["pxeload"]), "--iface", "vc", "--server", f"{net}.1",
                "--client-ip", f"{net}.2", "--mode", w.mode, "--inflight", str(w.clients),
                "--arch", "7" if w.mode == "request" else "0", "--deadline", str(w.deadline),
                "--distinct-shapes", "1" if w.distinct else "0"]
        try:
            warm = max(w.total // 20, 50)  # first MACs: settle allocations before the memory baseline
            client_json([*base, "--count", str(warm), "--seed", "1"], w.deadline + 30)
            rss0 = proc_mem(p.pid).get("VmRSS", 0)
            cpu0 = self.procs.cpu(p)
            _, out = client_json([*base, "--count", str(w.total), "--seed", "2"], w.deadline + 30)
            cpu = self.procs.cpu(p) - cpu0
            mem = proc_mem(p.pid)
        finally:
            self.procs.stop(p)
        ok = int(out.get("ok", 0))
        elapsed = float(out.get("elapsed", 0.0)) or 1e-9
        return Result(rate=ok / elapsed, ok=ok, total=w.total, cpu_us=cpu / ok * 1e6 if ok else 0.0,
                      hwm_kib=mem.get("VmHWM", 0), rss_growth_kib=mem.get("VmRSS", 0) - rss0,
                      p99_ms=float(out.get("p99_ms", 0.0)), lost=int(out.get("lost", 0)),
                      errors=[*out.get("errors", []),
                              *([f"{out['bad']} bad replies"] * bool(out.get("bad")))],
                      extra={"yiaddr_is_ciaddr": out.get("yiaddr_is_ciaddr", 0)})

    def rounds(self, wls: list[Workload], tftp: list[peers.Peer], proxy: list[peers.Peer],
               ) -> dict[str, dict[str, list[Result]]]:
        res: dict[str, dict[str, list[Result]]] = {w.key: {} for w in wls}
        make_files(self.root, wls)
        net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        for r in range(self.args.rounds):
            with contextlib.ExitStack() as stack:
                tns = stack.enter_context(Netns("t"))
                # tftpd-hpa resolves its -a address with AI_ADDRCONFIG: it needs one non-loopback address.
                tns.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
                tns.ip("addr", "add", "198.18.0.1/30", "dev", "va")
                tns.ip("link", "set", "va", "up")
                tns.ip("link", "set", "vb", "up")
                srv = stack.enter_context(Netns("s"))
                cli = stack.enter_context(Netns("c"))
                srv.ip("link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", cli.name)
                srv.ip("addr", "add", f"{net}.1/24", "dev", "vs")
                cli.ip("addr", "add", f"{net}.2/24", "dev", "vc")
                srv.ip("link", "set", "vs", "up")
                cli.ip("link", "set", "vc", "up")
                time.sleep(0.2)  # veth carrier
                for w in wls:
                    group = tftp if w.kind == "tftp" else proxy
                    k = r % len(group) if group else 0
                    order = group[k:] + group[:k]  # round-robin: a different server goes first each round
                    for i, peer in enumerate(order):
                        if w.kind == "tftp":
                            one = self.run_tftp(peer, w, tns, 16900 + i)
                        else:
                            one = self.run_proxy(peer, w, srv, cli, net)
                        res[w.key].setdefault(peer.name, []).append(one)
                        self.progress(r, w, peer.name, one)
        return res

    def progress(self, r: int, w: Workload, name: str, one: Result) -> None:
        status = "ok" if one.intact else "FAIL " + "; ".join(one.errors[:3])
        print(f"round {r + 1} {w.key:9} {name:10} {one.rate:10.1f} {w.unit:9} {one.ok}/{one.total} "
              f"cpu {one.cpu_us:7.2f} us  hwm {one.hwm_kib / 1024:6.1f} MiB  {status}", flush=True)


# ---------------------------------------------------------------------------------------------- report


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def ratio_median(runs: dict[str, list[Result]], name: str, ref: str) -> float | None:
    """Median over rounds of (name / ref) taken within the same round; None if the reference never served."""
    rs = []
    for a, b in zip(runs.get(name, []), runs.get(ref, []), strict=False):
        if b.rate > 0 and b.intact:
            rs.append(a.rate / b.rate if a.intact else 0.0)
    return med(rs) if rs else None


def cell(runs: dict[str, list[Result]], name: str, w: Workload) -> str:
    rounds = runs.get(name)
    if not rounds:
        return "–"
    if all(x.extra.get("na") for x in rounds):
        return "n/a"
    good = [x.rate for x in rounds if x.intact]
    if not good:
        return f"fail ({rounds[0].errors[0] if rounds[0].errors else 'incomplete'})"
    s = f"{med(good):,.1f}"
    refs = ("dnsmasq",) if w.kind == "proxy" else ("tftpd-hpa", "dnsmasq")
    parts = []
    for ref in refs:
        q = ratio_median(runs, name, ref)
        if name != ref and q is not None:
            parts.append(f"{q:.2f}× {'hpa' if ref == 'tftpd-hpa' else 'dm'}")
    if len(good) < len(rounds):
        parts.append(f"{len(rounds) - len(good)}/{len(rounds)} rounds failed")
    return s + (f" ({', '.join(parts)})" if parts else "")


def report(res: dict[str, dict[str, list[Result]]], wls: list[Workload], names: list[str], smoke: bool,
           rounds: int, started: float, loop: str = "") -> str:
    load = os.getloadavg()
    lines = [
        f"# proxydhcp bench — {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}{' (smoke)' if smoke else ''}",
        "",
        f"{rounds} round(s), medians; ratios (× hpa = to tftpd-hpa, × dm = to dnsmasq) are medians of "
        f"per-round ratios. Machine: {os.cpu_count()} vCPUs, load average at the end "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared: figures are noisy). Bench time "
        f"{time.monotonic() - started:.0f} s.",
        *(["", loop] if loop else []),
        "",
        "## Throughput",
        "",
        "| workload | unit | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for w in wls:
        runs = res.get(w.key, {})
        if not runs:
            continue
        lines.append(f"| {w.title} | {w.unit} | " + " | ".join(cell(runs, n, w) for n in names) + " |")
    lines += ["", "## Server cost (median): CPU µs per block (TFTP transfers), per request (small files), "
              "per reply (proxy); peak memory VmHWM MiB", "",
              "| workload | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for w in wls:
        runs = res.get(w.key, {})
        if not runs:
            continue
        cells = []
        for n in names:
            rs = [x for x in runs.get(n, []) if x.intact]
            if not rs:
                cells.append("–")
                continue
            extra = ""
            if w.kind == "proxy":
                extra = (f", p99 {med([x.p99_ms for x in rs]):.1f} ms, lost {max(x.lost for x in rs)}, "
                         f"RSS +{med([x.rss_growth_kib for x in rs]) / 1024:.1f} MiB over {w.total:,} MACs")
            elif w.key == "storm":
                extra = f", {min(x.ok for x in runs.get(n, []))}/{w.total} complete"
            elif w.key == "window":
                extra = f", window {max(int(x.extra.get('windowsize', 1)) for x in rs)}"
            cpu, hwm = med([x.cpu_us for x in rs]), med([x.hwm_kib for x in rs]) / 1024
            cells.append(f"{cpu:.1f} µs, {hwm:.1f} MiB{extra}")
        lines.append(f"| {w.key} | " + " | ".join(cells) + " |")
    lines += ["", "## Failures", ""]
    fails = [f"- {w.key} / {n} round {i + 1}: {x.ok}/{x.total}, {'; '.join(x.errors) or 'incomplete'}"
             for w in wls for n, rs in res.get(w.key, {}).items() for i, x in enumerate(rs)
             if not x.intact and not x.extra.get("na")]
    lines += fails or ["none: every transfer byte-identical, every reply checked"]
    lines += ["", "## Peers", "",
              "tftpd-hpa 5.2 (`in.tftpd -L`, forks per transfer, memory is the listener's), dnsmasq 2.90 "
              "(TFTP on port 69 in its own namespace; proxy mode with two pxe-service lines), atftpd 0.8.0 "
              "(Debian .deb unpacked), py3tftp 1.3.0, tftpy 0.8.7, PyPXE 1.8.4 (PyPI, bench/.venv; PyPXE's "
              "proxy does not listen on 4011). On 4011 dnsmasq sets yiaddr to the client's ciaddr "
              "(accepted by the checker).", ""]
    return "\n".join(lines)


def update_readme(md: str, path: Path) -> None:
    readme = setup_env.BENCH / "README.md"
    begin, end = "<!-- latest-results:begin -->", "<!-- latest-results:end -->"
    text = readme.read_text() if readme.exists() else f"# bench\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    body = md.split("\n", 1)[1].replace("\n## ", "\n### ")
    summary = f"Latest full run: [`results/{path.name}`](results/{path.name}).\n{body}"
    readme.write_text(f"{head}{begin}\n{summary}\n{end}{tail}")


# ---------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds, tiny files, correctness only")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3, smoke 1)")
    ap.add_argument("--only", default="", help="comma-separated workloads (single,window,rollover,storm,"
                    "small,discover,request,discover-cold,request-cold)")
    ap.add_argument("--servers", default="", help="comma-separated server names")
    ap.add_argument("--no-venv", action="store_true", help="skip the PyPI peers")
    ap.add_argument("--loop", choices=("installed", "asyncio"), default="installed",
                    help="proxydhcp's event loop: the one the install gives (uvloop on Linux, default) "
                    "or the standard asyncio loop (PROXYDHCP_EVENT_LOOP=asyncio)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the markdown")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="PYTHON of an older checkout's .venv: adds proxydhcp@base to the same run")
    a = ap.parse_args(argv)
    if a.rounds is None:
        a.rounds = 1 if a.smoke else 3
    a.rounds = max(1, min(a.rounds, 20))
    return a


def is_full_run(args: argparse.Namespace) -> bool:
    """Whether this run may replace the README's "latest full run": every workload, every peer, not
    --smoke, on the loop the install gives. A partial run (--only, --servers, --loop asyncio) still
    writes its own results file."""
    if args.smoke or args.servers or args.loop != "installed" or args.baseline:
        return False
    every = {w.key for w in workloads(False)}
    return not args.only or every <= set(args.only.split(","))


def _term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: processes and namespaces go


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("bench: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _term)
    # The servers inherit this environment: proxydhcp picks its loop from it (proxydhcp.eventloop).
    if args.loop == "asyncio":
        os.environ["PROXYDHCP_EVENT_LOOP"] = "asyncio"
    else:
        os.environ.pop("PROXYDHCP_EVENT_LOOP", None)
    missing = install_check()
    if missing and args.loop == "installed":
        print(f"bench: {sys.executable} is not what `pip install .` gives (lacks {', '.join(missing)}): "
              "run `make venv`", file=sys.stderr)
    tools = setup_env.build_loadgen()
    if not args.smoke:
        setup_env.ensure_atftpd()
        if not args.no_venv:
            setup_env.ensure_venv()
    wls = workloads(args.smoke)
    if args.only:
        keep = set(args.only.split(","))
        wls = [w for w in wls if w.key in keep]
    wanted = set(args.servers.split(",")) if args.servers else None
    base = peers.baseline(args.baseline) if args.baseline else ()

    def pick(group: tuple[peers.Peer, ...]) -> list[peers.Peer]:
        out = []
        for p in group:
            if args.smoke and wanted is None and p.name not in peers.SMOKE_NAMES and p not in base:
                continue
            if wanted is not None and p.name not in wanted:
                continue
            if args.no_venv and p.origin == "Python":
                continue
            if not p.available():
                print(f"bench: {p.kind} peer {p.name} is not available, skipped", file=sys.stderr)
                continue
            out.append(p)
        return out

    tftp, proxy = pick(peers.TFTP_PEERS + base[:1]), pick(peers.PROXY_PEERS + base[1:])
    names = list(dict.fromkeys([p.name for p in tftp] + [p.name for p in proxy]))
    procs = Procs()
    bench = Bench(args, procs, tools)
    try:
        res = bench.rounds(wls, tftp, proxy)
    finally:
        procs.close()
    loop = loop_summary(bench.loops, args.loop == "asyncio", missing)
    md = report(res, wls, names, args.smoke, args.rounds, started, loop)
    http_ok = True
    if not args.only or "http" in args.only.split(","):  # the HTTP server against nginx (bench/http.py)
        from bench import http as http_bench

        http_md, http_ok = http_bench.run(args.smoke, args.rounds)
        md += "\n" + http_md
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = args.out or (setup_env.WORK / f"smoke-{stamp}.md" if args.smoke
                       else setup_env.BENCH / "results" / f"{stamp}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + "\n")
    if is_full_run(args) and args.out is None and not missing:
        update_readme(md, out)
    elif args.out is None and not args.smoke:
        print("bench: partial run (--only/--servers/--loop, or not the default install): README summary "
              "left as is", file=sys.stderr)
    print(md)
    print(f"\nbench: written {out}")
    # Correctness, not speed, decides the exit code: every byte and every reply of every run was checked.
    broken = [(w.key, n) for w in wls for n, rs in res[w.key].items() for x in rs
              if not x.intact and not x.extra.get("na")]
    if not http_ok:
        broken.append(("http", "see above"))
    if broken:
        print(f"bench: incomplete or incorrect runs: {sorted(set(broken))}", file=sys.stderr)
    return 1 if broken and args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
