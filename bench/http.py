"""HTTP side by side: proxydhcp's HTTP server (`proxydhcp http`) against nginx (Debian nginx-light, one
worker, sendfile on), on loopback, in one run (issue 15).

    python3 -m bench.http            # the full comparison, 3 rounds, bench/results/http-<date>.md
    python3 -m bench.http --smoke    # seconds: small sizes, correctness only
    python3 -m bench.run [--smoke]   # runs this too, after the TFTP and proxy workloads
    python3 -m bench.http --baseline ../main   # adds proxydhcp@base: the server from another source tree
    python3 -m bench.http --only small --rounds 3   # some workloads only (printed, not saved)

Workloads: one 1 GiB download; 64 concurrent 64 MiB downloads; 2,000 requests for 4 KiB files at 32
concurrent clients (ab -k, keep-alive; curl --parallel without ab or in the smoke run); and the
server's memory with 1,000 open keep-alive connections. Every transfer's status and size is checked
(curl -w; ab counts a response of another length as failed); the small files are compared byte for
byte in the smoke run. Downloads: servers alternate within a round (the order rotates); each run gets
a fresh server. Small files: 2,000 requests last 35-70 ms, too short for one run to say anything on a
shared machine, so each round starts every server once, warms each with one unmeasured run of the
workload, then runs the same workload SMALL_REPEATS times on each, the servers taking turns run by
run; a round's rate is the median of its runs, and each run's ratio to the nginx run beside it gives
the spread. Server CPU is exact: each server runs in a cpuacct cgroup of its own (nginx master +
worker, proxydhcp with its threads; the session's /proc ticks where the hierarchy is absent); CPU per
GB is that over the bytes served, CPU per request that over the requests of the measured runs.
Every server logs every request to a file. `--baseline DIR` runs a third server, proxydhcp from the
source tree DIR (an older checkout, `git archive main | tar -x -C DIR`) with this interpreter, in the
same rounds, so that a change is measured against its base on the same machine at the same time.
Benchmarks are not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import CpuGroup, proc_mem

MIB = 1 << 20
BENCH = Path(__file__).resolve().parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CURL = shutil.which("curl") or "curl"
AB = shutil.which("ab")  # Debian apache2-utils: a C client that does not limit small-file rates as curl does
SMALL_FILES = 64  # distinct 4 KiB files, requested round-robin
SMALL_REPEATS = 9  # measured runs of the small-file workload per server and round (after one warm-up)


@dataclass(frozen=True)
class HttpWorkload:
    key: str
    title: str
    size: int  # bytes per file
    count: int  # downloads
    parallel: int
    small: bool = False


def workloads(smoke: bool) -> list[HttpWorkload]:
    if smoke:
        return [
            HttpWorkload("http-large", "one 16 MiB download", 16 * MIB, 1, 1),
            HttpWorkload("http-many", "8 concurrent 4 MiB downloads", 4 * MIB, 8, 8),
            HttpWorkload("http-small", "200 x 4 KiB at 16 concurrent", 4096, 200, 16, small=True),
        ]
    return [
        HttpWorkload("http-large", "one 1 GiB download", 1024 * MIB, 1, 1),
        HttpWorkload("http-many", "64 concurrent 64 MiB downloads", 64 * MIB, 64, 64),
        HttpWorkload("http-small", "2,000 x 4 KiB at 32 concurrent clients", 4096, 2000, 32, small=True),
    ]


@dataclass
class Run:
    rate: float = 0.0  # MB/s, or requests/s for small files
    cpu_s: float = 0.0
    bytes: int = 0
    ok: int = 0
    total: int = 0
    errors: list[str] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)  # small files: each measured run's rate, in order

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_s / (self.bytes / 1e9) if self.bytes else 0.0

    @property
    def cpu_per_request(self) -> float:
        """µs of server CPU per complete download."""
        return self.cpu_s / self.ok * 1e6 if self.ok else 0.0


def make_root(root: Path, wls: list[HttpWorkload]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for w in wls:
        if w.small:
            for i in range(SMALL_FILES):
                path = root / f"s{i}.bin"
                if not path.exists() or path.stat().st_size != w.size:
                    path.write_bytes(os.urandom(w.size))
        else:
            path = root / f"{w.key}.bin"
            if not path.exists() or path.stat().st_size != w.size:
                with path.open("wb") as out:  # real bytes on disk (page cache), not a sparse file
                    block = os.urandom(MIB)
                    for _ in range(w.size // MIB):
                        out.write(block)
                    out.write(block[: w.size % MIB])


def warm(root: Path) -> None:
    """Read every file once, so that no server's first run pays for the disk (page cache)."""
    for path in sorted(root.iterdir()):
        with path.open("rb") as handle:
            while handle.read(8 * MIB):
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BASE = "proxydhcp@base"


class Server:
    def __init__(self, name: str, root: Path, work: Path, source: Path | None = None) -> None:
        self.name = name
        self.root = root
        self.work = work
        self.source = source or BENCH.parent  # the source tree a proxydhcp server runs from
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.group = CpuGroup()

    def argv(self) -> list[str]:
        if self.name.startswith("proxydhcp"):
            return [sys.executable, "-m", "proxydhcp", "http", "--root", str(self.root), "--address",
                    "127.0.0.1", "--port", str(self.port), "--max-connections", "4096"]  # fmt: skip
        conf = self.work / "nginx.conf"
        conf.write_text(
            f"""daemon off;
user root root;
worker_processes 1;
pid {self.work}/nginx.pid;
error_log {self.work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    access_log {self.work}/nginx-access.log;
    client_body_temp_path {self.work}/t-body;
    proxy_temp_path {self.work}/t-proxy;
    fastcgi_temp_path {self.work}/t-fcgi;
    uwsgi_temp_path {self.work}/t-uwsgi;
    scgi_temp_path {self.work}/t-scgi;
    server {{ listen 127.0.0.1:{self.port}; root {self.root}; }}
}}
"""
        )
        return [NGINX, "-p", str(self.work), "-c", str(conf)]

    def __enter__(self) -> Server:
        log = (self.work / f"{self.name}.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(self.source)}
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                cwd=self.source, preexec_fn=self.group.enter,
            )  # fmt: skip
        except BaseException:
            self.group.remove()
            raise
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(
            f"{self.name} did not start: {(self.work / (self.name + '.log')).read_text()[-500:]}"
        )

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.group.remove()

    def cpu(self) -> float:
        assert self.proc is not None
        return self.group.seconds(self.proc.pid)

    def rss_kib(self) -> int:
        """Resident memory of the server's processes (nginx: master + worker)."""
        assert self.proc is not None
        total = 0
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    raw = (d / "stat").read_text()
                    if int(raw[raw.rindex(")") + 2 :].split()[3]) == self.proc.pid:
                        total += proc_mem(int(d.name)).get("VmRSS", 0)
        return total


def run_curl(server: Server, w: HttpWorkload, work: Path, verify: bool) -> Run:
    names = [f"s{i % SMALL_FILES}.bin" for i in range(w.count)] if w.small else [f"{w.key}.bin"] * w.count
    config = work / "curl.conf"
    out_dir = work / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    lines = []
    for i, name in enumerate(names):
        target = str(out_dir / f"{i}") if verify and w.small else "/dev/null"
        lines.append(f'url = "http://127.0.0.1:{server.port}/{name}"\noutput = "{target}"\n')
    config.write_text("".join(lines))
    argv = [CURL, "-sS", "-K", str(config), "-w", "%{http_code} %{size_download}\\n"]
    if w.parallel > 1:
        argv += ["--parallel", "--parallel-max", str(w.parallel), "--parallel-immediate"]
    cpu0 = server.cpu()
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    cpu = server.cpu() - cpu0
    result = Run(cpu_s=cpu, total=w.count)
    for line in done.stdout.splitlines():
        code, _, size = line.partition(" ")
        if code == "200" and size.isdigit() and int(size) == w.size:
            result.ok += 1
            result.bytes += int(size)
        else:
            result.errors.append(f"bad transfer: {line}")
    if done.returncode != 0:
        result.errors.append(f"curl exited {done.returncode}: {done.stderr.strip()[:200]}")
    if verify and w.small:
        for i, name in enumerate(names):
            if (out_dir / f"{i}").read_bytes() != (server.root / name).read_bytes():
                result.errors.append(f"download {i} of {name} differs")
                break
    result.rate = (result.ok / elapsed) if w.small else (result.bytes / elapsed / 1e6)
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def run_ab(server: Server, w: HttpWorkload) -> Run:
    """Small files with ApacheBench: `-k` keep-alive, `w.parallel` clients, `w.count` requests for one
    4 KiB file; ab counts a response of another length as failed."""
    assert AB is not None
    url = f"http://127.0.0.1:{server.port}/s0.bin"
    cpu0 = server.cpu()
    done = subprocess.run([AB, "-q", "-k", "-n", str(w.count), "-c", str(w.parallel), url],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    cpu = server.cpu() - cpu0
    result = Run(cpu_s=cpu, total=w.count)
    fields: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    complete = int(fields.get("Complete requests", "0"))
    failed = int(fields.get("Failed requests", "0").split()[0])
    non2xx = int(fields.get("Non-2xx responses", "0"))
    result.ok = complete - failed - non2xx
    result.bytes = result.ok * w.size
    result.rate = float(fields.get("Requests per second", "0 ").split()[0]) if result.ok == w.count else 0.0
    if done.returncode != 0 or result.ok != w.count:
        result.errors.append(f"ab: {complete} complete, {failed} failed, {non2xx} non-2xx {done.stderr[:99]}")
    return result


def run_small(servers: list[Server], w: HttpWorkload, repeats: int) -> dict[str, Run]:
    """One round of the small-file workload on servers already running: one unmeasured warm-up run
    each, then `repeats` measured runs each, the servers taking turns run by run. A server's Run: the
    median rate of its runs (`runs` keeps each), the CPU and requests of all of them."""
    for server in servers:
        run_ab(server, w)  # warm-up: connections, caches, the interpreter's specialisation
    out = {server.name: Run(total=w.count * repeats) for server in servers}
    for _ in range(repeats):
        for server in servers:
            one = run_ab(server, w)
            result = out[server.name]
            result.runs.append(one.rate)
            result.cpu_s += one.cpu_s
            result.ok += one.ok
            result.bytes += one.bytes
            result.errors += one.errors
    for result in out.values():
        result.rate = statistics.median(result.runs) if not result.errors else 0.0
    return out


def idle_memory(server: Server, connections: int) -> tuple[int, int]:
    """RSS (KiB) before and with `connections` open keep-alive connections, each after one request."""
    before = server.rss_kib()
    socks: list[socket.socket] = []
    request = b"GET /s0.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(request)
            socks.append(sock)
        for sock in socks:
            got = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 4096:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
        time.sleep(0.3)
        return before, server.rss_kib()
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        yield Path(tmp)


def bench(
    smoke: bool,
    rounds: int,
    work: Path,
    root: Path,
    baseline: Path | None = None,
    only: set[str] | None = None,
) -> tuple[dict[str, dict[str, list[Run]]], dict[str, tuple[int, int]], list[HttpWorkload]]:
    wls = [w for w in workloads(smoke) if only is None or w.key.removeprefix("http-") in only]
    make_root(root, wls)
    warm(root)
    names = ["proxydhcp", "nginx"] + ([BASE] if baseline is not None else [])
    res: dict[str, dict[str, list[Run]]] = {w.key: {n: [] for n in names} for w in wls}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for w in wls:
            if w.small and AB is not None and not smoke:
                small_round(r, order, w, work, root, baseline, res)
                continue
            for name in order:
                sdir = work / f"{name}-r{r}-{w.key}"
                sdir.mkdir(parents=True, exist_ok=True)
                try:
                    with Server(name, root, sdir, baseline if name == BASE else None) as server:
                        one = run_curl(server, w, sdir, verify=smoke)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    one = Run(total=w.count, errors=[str(exc)])
                res[w.key][name].append(one)
                status = "ok" if not one.errors else "FAIL " + "; ".join(one.errors[:2])
                unit = "req/s" if w.small else "MB/s"
                print(
                    f"round {r + 1} {w.key:10} {name:14} {one.rate:9.1f} {unit:5} {one.ok}/{one.total} "
                    f"cpu {one.cpu_s:6.2f} s ({one.cpu_per_gb:5.2f} s/GB, {one.cpu_per_request:7.1f} us/req)"
                    f"  {status}",
                    flush=True,
                )
    conns = 100 if smoke else 1000
    memory: dict[str, tuple[int, int]] = {}
    for name in names if only is None else []:
        sdir = work / f"{name}-idle"
        sdir.mkdir(parents=True, exist_ok=True)
        with Server(name, root, sdir, baseline if name == BASE else None) as server:
            memory[name] = idle_memory(server, conns)
        print(f"memory {name}: {memory[name][0] / 1024:.1f} MiB, with {conns} connections "
              f"{memory[name][1] / 1024:.1f} MiB", flush=True)  # fmt: skip
    return res, memory, wls


def small_round(
    r: int, order: list[str], w: HttpWorkload, work: Path, root: Path, baseline: Path | None,
    res: dict[str, dict[str, list[Run]]],
) -> None:  # fmt: skip
    """Round `r` of the small-file workload: every server started once, `run_small`, then stopped."""
    with contextlib.ExitStack() as stack:
        try:
            servers = []
            for name in order:
                sdir = work / f"{name}-r{r}-{w.key}"
                sdir.mkdir(parents=True, exist_ok=True)
                server = Server(name, root, sdir, baseline if name == BASE else None)
                servers.append(stack.enter_context(server))
            runs = run_small(servers, w, SMALL_REPEATS)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            runs = {name: Run(total=w.count * SMALL_REPEATS, errors=[str(exc)]) for name in order}
    for name in order:
        one = runs[name]
        res[w.key][name].append(one)
        status = "ok" if not one.errors else "FAIL " + "; ".join(one.errors[:2])
        print(
            f"round {r + 1} {w.key:10} {name:14} {one.rate:9.1f} req/s (median of {len(one.runs)}: "
            f"{min(one.runs, default=0):.0f}-{max(one.runs, default=0):.0f}) {one.ok}/{one.total} "
            f"cpu {one.cpu_s:6.3f} s ({one.cpu_per_request:5.1f} us/req)  {status}",
            flush=True,
        )


def spread(runs: list[Run], nginx: list[Run]) -> tuple[float, float]:
    """The lowest and highest ratio of a single small-file run to the nginx run beside it."""
    pairs = [zip(a.runs, b.runs, strict=False) for a, b in zip(runs, nginx, strict=True)]
    ratios = [x / n for round_pairs in pairs for x, n in round_pairs if n]
    return (min(ratios), max(ratios)) if ratios else (0.0, 0.0)


def report(res: dict[str, dict[str, list[Run]]], memory: dict[str, tuple[int, int]], wls: list[HttpWorkload],
           smoke: bool, rounds: int) -> str:  # fmt: skip
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    repeated = not smoke and AB is not None
    small_method = (
        f" Small files: in each round every server runs the workload once unmeasured, then {SMALL_REPEATS} "
        "times measured, the servers taking turns run by run; a round's rate is the median of its runs, "
        "its ratio that of the two medians; spread: the lowest and highest ratio of a single run to the "
        "nginx run beside it."
        if repeated
        else ""
    )
    lines = [
        f"## HTTP: proxydhcp vs nginx — {stamp}{' (smoke)' if smoke else ''}",
        "",
        f"Loopback, {rounds} round(s), medians; nginx {_nginx_version()} one worker, sendfile on; "
        f"clients: curl --parallel for downloads, {'ab -k' if repeated else 'curl'} for small "
        "files (keep-alive). CPU per GB: server user+system seconds per 10^9 bytes (cpuacct cgroup); CPU per "
        "request (small files): server user+system µs per complete download; ratio: median of the per-round "
        f"ratios (per round in brackets).{small_method}",
        "",
        "| workload | server | rate | ratio to nginx | CPU s/GB | CPU µs/request | complete |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in wls:
        unit = "req/s" if w.small else "MB/s"
        nginx = res[w.key]["nginx"]
        for name, runs in res[w.key].items():
            rate = _med([x.rate for x in runs])
            ratios = [x.rate / n.rate for x, n in zip(runs, nginx, strict=True) if n.rate]
            per_round = ", ".join(f"{q:.2f}" for q in ratios)
            ratio = f"{_med(ratios):.2f}x" + (f" ({per_round})" if len(runs) > 1 else "") if ratios else "-"
            if ratios and any(x.runs for x in runs):
                low, high = spread(runs, nginx)
                ratio += f"; single runs {low:.2f}-{high:.2f}"
            per_request = f"{_med([x.cpu_per_request for x in runs]):.1f}" if w.small else "-"
            lines.append(
                f"| {w.title} | {name} | {rate:.0f} {unit} | {'1' if name == 'nginx' else ratio} | "
                f"{_med([x.cpu_per_gb for x in runs]):.2f} | {per_request} | "
                f"{'yes' if all(not x.errors for x in runs) else 'NO'} |"
            )
    lines += [
        "",
        "| memory (RSS) | idle | with open keep-alive connections | per connection |",
        "|---|---|---|---|",
    ] if memory else []  # fmt: skip
    conns = 100 if smoke else 1000
    for name, (before, after) in memory.items():
        lines.append(f"| {name} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB ({conns}) | "
                     f"{(after - before) / conns:.1f} KiB |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def _nginx_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=5)
        return out.stderr.strip().split("/")[-1]
    return "?"


def broken(res: dict[str, dict[str, list[Run]]]) -> list[str]:
    return sorted(
        {f"{key}/{name}" for key, by in res.items() for name, rs in by.items() for x in rs if x.errors}
    )


def run(
    smoke: bool,
    rounds: int | None = None,
    out: Path | None = None,
    work: Path | None = None,
    baseline: Path | None = None,
    only: set[str] | None = None,
) -> tuple[str, bool]:
    """The whole HTTP bench, or the workloads in `only` (large, many, small; no memory figures):
    (markdown, every transfer complete and correct)."""
    if not Path(NGINX).exists():
        return "## HTTP: nginx is not installed (Debian nginx-light): skipped\n", True
    with workdir(work) as w:
        root = w / "root"
        res, memory, wls = bench(smoke, rounds or (1 if smoke else 3), w, root, baseline, only)
    md = report(res, memory, wls, smoke, rounds or (1 if smoke else 3))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
    bad = broken(res)
    if bad:
        print(f"bench.http: incomplete or incorrect runs: {bad}", file=sys.stderr)
    return md, not bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="seconds: small sizes, correctness only")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="keep files and logs here (default: a temp dir)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="also run proxydhcp from this source tree (proxydhcp@base)")  # fmt: skip
    ap.add_argument("--only", default=None,
                    help="workloads, comma-separated: large, many, small (printed, not saved)")  # fmt: skip
    args = ap.parse_args(argv)
    only = None if args.only is None else {key.strip() for key in args.only.split(",")}
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = None if args.smoke or only is not None else BENCH / "results" / f"http-{stamp}.md"
    md, ok = run(args.smoke, args.rounds, out, args.work, args.baseline, only)
    print(md)
    if out is not None:
        print(f"bench.http: written {out}")
    return 0 if ok or not args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
