"""Flood: junk at ports 67, 4011 and 69 as fast as one sender goes, while real PXE clients and TFTP
transfers carry on.

Namespaces on one bridge: `pxe` runs `python3 -m proxydhcp serve ... --tftp-root DIR`, `junk` runs the
flooder (its own process), `cli` holds the valid clients (sockets made by this test). The junk mix:
random bytes, truncated DISCOVERs, valid-looking non-PXE DISCOVERs from ever new MACs, RRQ storms (an
existing file, a missing one, random names). Checked: every PXE client is answered (retrying as firmware
does, 1 s apart, at most 4 tries), every TFTP transfer completes intact, the server's VmRSS stays flat
(no per-MAC or per-source state growing), no traceback in its log. FLOOD_SECONDS (default 5) sets the
flood length; the figures are printed (run with -s).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxydhcp.dhcp.codes import MessageType
from tests.integration import dhcpclient as dc
from tests.integration.conftest import Proxy, tftp_root
from tests.integration.test_faults import fetch_robust
from tests.netlab import Lab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

PXE, CLI, JUNK = "10.80.0.2", "10.80.0.50", "10.80.0.66"
FLOOD_SECONDS = float(os.environ.get("FLOOD_SECONDS", "5"))
RETRIES = (1.0, 2.0, 3.0, 4.0)


def udp_drops(lab: Lab, ns: str) -> dict[int, int]:
    """Datagrams the kernel dropped per local UDP port in `ns` (socket queue full), from /proc/net/udp."""
    drops: dict[int, int] = {}
    for line in lab.ns(ns).run(["cat", "/proc/net/udp"]).stdout.splitlines()[1:]:
        parts = line.split()
        port = int(parts[1].split(":")[1], 16)
        drops[port] = drops.get(port, 0) + int(parts[-1])
    return {p: n for p, n in drops.items() if p in (67, 4011, 69)}


# The flooder: one process, one thread, a pre-built pool of packets sent round-robin to 67/4011/69.
FLOODER = r"""
import json, os, random, socket, sys, time
sys.path.insert(0, sys.argv[3])
from tests.integration import dhcpclient as dc
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.dhcp.codes import MessageType, Opt

target, seconds = sys.argv[1], float(sys.argv[2])
rnd = random.Random(7)
def mac(n):
    return "02:66:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))
pool = []
for n in range(6000):
    kind = n % 6
    if kind == 0:
        pool.append((rnd.choice((67, 4011, 69)), os.urandom(rnd.randrange(1, 700))))
    elif kind == 1:
        whole = dc.discover(mac(n), n).encode()
        pool.append((rnd.choice((67, 4011)), whole[: rnd.randrange(1, len(whole))]))
    elif kind == 2:  # a plain DHCP client: no option 60
        opts = ((Opt.MESSAGE_TYPE, bytes((MessageType.DISCOVER,))), (Opt.PARAM_REQUEST_LIST, b"\1\3\6"))
        chaddr = bytes.fromhex(mac(n).replace(":", ""))
        pkt = DhcpPacket(op=1, xid=n, chaddr=chaddr, flags=0x8000, options=opts)
        pool.append((67, pkt.encode()))
    elif kind == 3:
        name = rnd.choice((b"boot.img", b"missing.bin", os.urandom(12).replace(b"\0", b"x")))
        pool.append((69, b"\0\1" + name + b"\0octet\0blksize\x001468\0windowsize\x0016\0"))
    elif kind == 4:  # a PXE-looking request on 4011 for a subnet that is not served
        pool.append((4011, dc.request4011(mac(n), n, ciaddr="192.0.2.9").encode()))
    else:
        pool.append((rnd.choice((67, 4011, 69)), bytes(rnd.randrange(0, 300))))
socks = {p: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for p in (67, 4011, 69)}
addrs = {p: (target, p) for p in socks}
sent = errors = 0
per_port = {67: 0, 4011: 0, 69: 0}
start = time.monotonic()
end = start + seconds
i = 0
while True:
    if i % 512 == 0 and time.monotonic() >= end:
        break
    port, data = pool[i % len(pool)]
    i += 1
    try:
        socks[port].sendto(data, addrs[port])
        sent += 1
        per_port[port] += 1
    except OSError:
        errors += 1
elapsed = time.monotonic() - start
print(json.dumps({"sent": sent, "errors": errors, "seconds": elapsed, "per_port": per_port}), flush=True)
"""


def vmrss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("no VmRSS")


class PxeClients:
    """Valid PXE clients, one after another while the flood runs: DISCOVER on 67 then REQUEST on 4011,
    each retried up to 4 times, waiting 1, 2, 3 then 4 s (as PXE firmware does on 4011) until answered."""

    def __init__(self, netns: str) -> None:
        self.sock67 = dc.udp_socket(netns, port=68, device="eth0", rcvbuf=1 << 20)
        self.sock4011 = dc.udp_socket(netns, port=0, rcvbuf=1 << 20)
        self.clients = 0
        self.first_try = 0
        self.answered = 0
        self.failed: list[str] = []

    def one(self, n: int) -> None:
        mac = f"02:50:00:00:{n >> 8 & 255:02x}:{n & 255:02x}"
        for step, sock, packet, dest, want in (
            (
                "DISCOVER",
                self.sock67,
                dc.discover(mac, 0xF1000000 + n),
                ("255.255.255.255", 67),
                MessageType.OFFER,
            ),
            (
                "REQUEST",
                self.sock4011,
                dc.request4011(mac, 0xF2000000 + n, ciaddr=CLI),
                (PXE, 4011),
                MessageType.ACK,
            ),
        ):
            self.clients += 1
            for attempt, wait in enumerate(RETRIES):
                got = dc.exchange(
                    sock, packet, dest, window=wait,
                    until=lambda g, x=packet.xid: bool(dc.replies_for(g, x)),
                )  # fmt: skip
                replies = [
                    r for r in dc.replies_for(got, packet.xid) if r.packet and r.packet.message_type == want
                ]
                if replies:
                    self.answered += 1
                    self.first_try += attempt == 0
                    break
            else:
                self.failed.append(f"{step} {mac}")

    def run_until(self, stop: threading.Event, limit: int = 400) -> None:
        n = 0
        while not stop.is_set() and n < limit:
            self.one(n)
            n += 1
            time.sleep(0.05)

    def close(self) -> None:
        self.sock67.close()
        self.sock4011.close()


def _thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def wrapped() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=wrapped, daemon=True)
    thread.start()
    return thread


def test_flood_keeps_answering(lab: Lab, start_proxy: Callable[..., Proxy]) -> None:
    image = os.urandom(2 * 1024 * 1024 + 77)
    root = tftp_root({"boot.img": image, "undionly.kpxe": os.urandom(70_000)})
    lab.segment("10.80.0.0/24", {"pxe": PXE, "cli": CLI, "junk": JUNK})
    proxy = start_proxy("pxe", [
        "--interface", "eth0", "--subnet", "10.80.0.0/24", "--boot-file", "bios=undionly.kpxe",
        "--boot-file", "efi-x64=ipxe.efi", "--tftp-root", str(root),
    ])  # fmt: skip
    lab.ns("pxe").wait_udp_bound(69)
    pid = proxy.pid()
    cli = lab.ns("cli").name
    clients = PxeClients(cli)
    transfers: list[str] = []

    reopened: list[int] = []

    def transfer_loop(stop: threading.Event) -> None:
        for n in range(50):
            if stop.is_set():
                return
            # Like PXE firmware, re-open (a new RRQ from a new port) a read that got no answer at all;
            # a transfer that stalls once data has flowed is still a failure.
            for attempt in range(2):
                sock = dc.udp_socket(cli, port=0)
                try:
                    out = fetch_robust(
                        sock, (PXE, 69), "boot.img", {"blksize": "1468", "windowsize": "8"}, deadline=60
                    )
                finally:
                    sock.close()
                if not (out.hung and not out.data and attempt == 0):
                    break
                reopened.append(n)
            transfers.append(
                "intact" if out.data == image else f"{out.result} {out.error} {len(out.data)} bytes"
            )

    try:
        # Warm up (imports, caches, first transfer), then the baseline.
        clients.one(9999)
        assert not clients.failed, f"not answered before any flood: {clients.failed}"
        clients.clients = clients.answered = clients.first_try = 0
        sock = dc.udp_socket(cli, port=0)
        try:
            assert fetch_robust(sock, (PXE, 69), "boot.img", {"blksize": "1468"}).data == image
        finally:
            sock.close()
        time.sleep(0.5)
        rss_before = vmrss_kib(pid)
        drops_before = udp_drops(lab, "pxe")

        flooder = lab.ns("junk").spawn(
            [
                sys.executable,
                "-c",
                FLOODER,
                PXE,
                str(FLOOD_SECONDS),
                str(Path(__file__).resolve().parents[2]),
            ],
            log="junk-flooder.log",
        )
        stop = threading.Event()
        errors: list[BaseException] = []
        threads = [
            _thread(lambda: clients.run_until(stop), errors),
            _thread(lambda: transfer_loop(stop), errors),
        ]
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        while flooder.poll() is None and time.monotonic() - started < FLOOD_SECONDS + 60:
            samples.append((time.monotonic() - started, vmrss_kib(pid)))
            time.sleep(0.25)
        stop.set()
        for thread in threads:
            thread.join(90)
        assert not errors, errors
        flood = json.loads(Path(flooder.logfile).read_text().strip().splitlines()[-1])  # type: ignore[attr-defined]
        time.sleep(1.0)
        rss_after = vmrss_kib(pid)
        drops = {p: n - drops_before.get(p, 0) for p, n in udp_drops(lab, "pxe").items()}
    finally:
        clients.close()
    assert proxy.proc.poll() is None, "the server died under the flood"
    half = [kib for t, kib in samples if t >= FLOOD_SECONDS / 2]
    rss_mid = half[0] if half else rss_before
    rate = flood["sent"] / flood["seconds"]
    processed = (flood["sent"] - sum(drops.values())) / flood["seconds"]
    report = (
        f"flood {flood['seconds']:.1f} s: {flood['sent']} junk packets sent ({rate:,.0f}/s; per port "
        f"{flood['per_port']}, {flood['errors']} send errors; dropped by the server's kernel queues "
        f"{drops}, so it processed ~{processed:,.0f}/s); valid PXE requests {clients.clients}: "
        f"{clients.answered} answered ({clients.first_try} on the first try), failed {clients.failed}; "
        f"TFTP transfers during the flood: {transfers} (re-opened after no answer: {len(reopened)}); "
        f"VmRSS before {rss_before} KiB, mid-flood "
        f"{rss_mid} KiB, after {rss_after} KiB (peak {max(k for _, k in samples)} KiB)"
    )
    print("\n" + report)
    log = proxy.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 500 :][:3000]
    assert rate > 1000, f"the flooder achieved only {rate:.0f} packets/s: not a flood ({report})"
    assert not clients.failed, report
    assert clients.clients >= 4, f"too few valid clients ran during the flood ({report})"
    assert transfers and all(t == "intact" for t in transfers), report
    # Flat: no growth from the middle of the flood to its end, little over the whole run.
    assert rss_after - rss_mid < 4 * 1024, report
    assert rss_after - rss_before < 24 * 1024, report
