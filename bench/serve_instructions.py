"""The service's datagram path, start to finish but the socket, for counting instructions:
`ProxyDhcpService.handle` (reply memo, pipeline, encode, decision record, log line) on requests
built as bench/loadgen/pxeload.c builds them, with the bench's configuration, inside a running
event loop (the log writer flushes once per batch, as in `serve`).

    .venv/bin/python bench/serve_instructions.py --callgrind [--mode discover|request] [--cold]

`--callgrind` runs this script under `valgrind --tool=callgrind` and counts the instructions of
the second pass of 1,000 requests (the first, of as many others, teaches the memo its shapes and
warms the interpreter's caches, as the bench's warm-up does): per request, noise-free. Run it with
another checkout's python from that checkout to compare trees (it imports the serve module of either
layout: `proxydhcp.serve.service` or, before issue 14, `proxydhcp.server`). `--time` prints CPU µs
per request instead (noisy on a shared machine); `--profile` the calls per request (cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import logging
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

NET = "10.211.7"
CALLGRIND_COUNT = 1000  # --callgrind: requests counted, after a warm-up pass of as many
PRL = bytes([1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 22, 23, 28, 40, 41, 42, 43,
             50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])  # fmt: skip


def build(i: int, request: bool, distinct: bool, seed: int = 2) -> bytes:
    """One request as pxeload.c's build() makes it (arch 7 on 4011, 0 on 67)."""
    arch = 7 if request else 0
    p = bytearray(548)
    p[0:3] = b"\x01\x01\x06"
    p[4:8] = (0x1D000000 + seed * 0x10000 + i).to_bytes(4, "big")
    if request:
        p[12:16] = IPv4Address(f"{NET}.2").packed
    else:
        p[10] = 0x80
    p[28:34] = bytes([0x02, seed, (i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255])
    p[236:240] = bytes([99, 130, 83, 99])
    o = bytearray()
    o += bytes([53, 1, 3 if request else 1, 57, 2, 0x05, 0xC0, 93, 2, arch >> 8, arch & 255, 94, 3, 1, 2, 1])
    o += bytes([97, 17, 0]) + bytes(0xB0 + k + seed for k in range(12)) + i.to_bytes(4, "big")
    o += bytes([55, len(PRL)]) + PRL
    vc = f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()
    o += bytes([60, len(vc)]) + vc
    if distinct:
        hn = f"pxe-{i:08x}".encode()
        o += bytes([12, len(hn)]) + hn
    if request:
        o += bytes([43, 7, 71, 4, 0x80, 0, 0, 0, 255])
    o += b"\xff"
    n = 240 + len(o)
    p[240:n] = o
    return bytes(p[: max(n, 300)])


_BEFORE_SERVE = {"service": "server"}  # a module's name before the serve/ package, where it differs


def _module(name: str) -> Any:
    """`proxydhcp.serve.<name>`, or where it lived in a checkout from before the serve/ package."""
    try:
        return importlib.import_module(f"proxydhcp.serve.{name}")
    except ImportError:
        return importlib.import_module(f"proxydhcp.{_BEFORE_SERVE.get(name, name)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("discover", "request"), default="discover")
    parser.add_argument("--cold", action="store_true", help="every request of its own shape (option 12)")
    parser.add_argument("--count", type=int, default=2000, help="requests handled after the warm-up")
    parser.add_argument("--warm", type=int, default=0, help="requests of the warm-up pass (default: count)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request (see above)")
    parser.add_argument("--profile", action="store_true", help="cProfile the second pass: calls per request")
    parser.add_argument("--time", action="store_true", help="print CPU µs per request of the second pass")
    args = parser.parse_args()
    request = args.mode == "request"
    if args.callgrind:
        per_request = _callgrind(args.mode, args.cold)
        print(f"{args.mode}{' cold' if args.cold else ''}: {per_request:,.0f} instructions per request")
        return

    from proxydhcp.config import Settings
    from proxydhcp.log import setup_logging

    service_mod, endpoint_mod, sockets_mod = (_module(n) for n in ("service", "endpoint", "sockets"))
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log writer's stream, as serve's stderr
    setup_logging("text", "info")
    settings = Settings.model_validate(
        {
            "server": {"server_ip": f"{NET}.1"},
            "tftp": {"enabled": False},
            "subnet": [{"cidr": f"{NET}.0/24"}],
            "boot": {"bios": "undionly.kpxe", "efi-x64": "ipxe.efi"},
        }
    )
    service = service_mod.ProxyDhcpService(settings)
    service.serving = True
    iface = sockets_mod.Interface("vs", 2, True, False, IPv4Address(f"{NET}.1"), IPv4Network(f"{NET}.0/24"))
    endpoint = endpoint_mod.DhcpEndpoint(service, iface, 4011 if request else 67)  # no socket: send drops
    source = (f"{NET}.2", 4011) if request else ("0.0.0.0", 68)
    # Two passes of distinct MACs/xids/UUIDs (seeds 1 and 2, as the bench's warm-up and its run).
    passes = [
        [build(i, request, args.cold, seed) for i in range(n)]
        for seed, n in ((1, args.warm or args.count), (2, args.count))
    ]
    handle = service.handle
    out: list[float] = []

    prof = cProfile.Profile()

    async def run() -> None:
        for n, datagrams in enumerate(passes):
            if n:
                os.getppid()  # --callgrind: the counters start here
                if args.profile:
                    prof.enable()
            start = time.thread_time()
            for k in range(0, len(datagrams), 128):  # a batch per wakeup, as the endpoint reads
                for data in datagrams[k : k + 128]:
                    handle(endpoint, data, source)
                await asyncio.sleep(0)  # the log writer's flush runs
            if n:
                out.append(time.thread_time() - start)
                prof.disable()
                os.getpgrp()  # --callgrind: and end here

    asyncio.run(run())
    logging.shutdown()
    if args.time:
        print(f"{out[0] / args.count * 1e6:.2f} µs/request", file=sys.__stdout__)
    if args.profile:
        stats = pstats.Stats(prof, stream=sys.__stdout__)
        total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
        print(f"{total / args.count:.1f} calls per request", file=sys.__stdout__)
        stats.sort_stats("ncalls").print_stats(120)
    from proxydhcp import events

    print(f"memo hits {service.memo_hits}, records {events.counters.counts}", file=sys.__stdout__)


def _callgrind(mode: str, cold: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [
            sys.executable,
            __file__,
            "--mode",
            mode,
            "--count",
            str(CALLGRIND_COUNT),
            *(["--cold"] * cold),
        ]
        # os.getppid() and os.getpgrp() bracket the measured pass (nothing else calls them): the
        # counters are zeroed entering the first and dumped entering the second.
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--zero-before=os_getppid",
                "--dump-before=os_getpgrp",
                "--dump-instr=no",
                *argv,
            ],
            capture_output=True,
            check=True,
        )
        totals = []
        for part in Path(tmp).glob("callgrind.out*"):
            text = part.read_text()
            if "\ndesc: Trigger: --dump-before=os_getpgrp\n" in text:
                found = re.search(r"^summary: (\d+)$", text, re.MULTILINE)
                if found is not None:
                    totals.append(int(found.group(1)))
        if len(totals) != 1:
            raise SystemExit(f"expected one dump before os_getpgrp, found {len(totals)}")
        return totals[0] / CALLGRIND_COUNT


if __name__ == "__main__":
    main()
