"""Micro-benchmark of the pure DHCP/PXE pipeline, stage by stage, on the real request frames of the
captures in tests/fixtures (the DISCOVERs to 67 and REQUESTs to 4011 this service answers).

    python3 bench/micro_pipeline.py [--rounds 5] [--loops 2000] [--profile]

Prints the best-of-rounds CPU µs per packet of each stage (decode, classify, decide, build_reply, encode,
destination), of the whole chain (`pxe.pipeline.run`, what serve, explain and this bench all call, plus
the encode), and of the chain plus its decision record (`pxe.pipeline.record`), as serve runs it;
`--profile` adds a cProfile of the whole chain.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxydhcp.config import Settings  # noqa: E402
from proxydhcp.dhcp.delivery import offer_destination, pxe_destination  # noqa: E402
from proxydhcp.dhcp.packet import DhcpPacket  # noqa: E402
from proxydhcp.diagnose.capture import CaptureStats, read_datagrams  # noqa: E402
from proxydhcp.pxe import pipeline  # noqa: E402
from proxydhcp.pxe.classify import DHCP_PORT, classify  # noqa: E402
from proxydhcp.pxe.pipeline import Answered  # noqa: E402
from proxydhcp.pxe.policy import Receiver, decide  # noqa: E402
from proxydhcp.pxe.reply import build_reply  # noqa: E402
from tests.fixtures import DHCP_CAPTURES, FIXTURES  # noqa: E402

# Frame = (payload, logical port, source ip, source port).
Frame = tuple[bytes, int, IPv4Address, int]


def settings() -> Settings:
    """A realistic configuration: a few subnets, the usual boot table, a few host entries."""
    return Settings.model_validate(
        {
            "subnet": [{"cidr": "0.0.0.0/1"}, {"cidr": "128.0.0.0/1"}, {"cidr": "10.77.0.0/24"}],
            "boot": {
                "bios": "undionly.kpxe",
                "efi-x64": "ipxe.efi",
                "efi-arm64": "arm64.efi",
                "ipxe": "boot.ipxe",
            },
            "host": [{"mac": f"02:00:00:00:00:{i:02x}", "boot_file": f"host{i}.efi"} for i in range(8)],
        }
    )


def frames(config: Settings, receiver: Receiver) -> list[Frame]:
    """Every request of the captures that the pipeline answers."""
    out: list[Frame] = []
    for name in DHCP_CAPTURES:
        for d in read_datagrams(FIXTURES / name, CaptureStats()):
            if d.dport not in (67, 4011) or d.sport not in (68, 4011):
                continue
            frame = (d.payload, d.dport, d.src, d.sport)
            if _answer(frame, config, receiver) is not None:
                out.append(frame)
    return out


def _answer(frame: Frame, config: Settings, receiver: Receiver) -> bytes | None:
    data, port, source_ip, source_port = frame
    source = (source_ip, source_port)
    result = pipeline.run(data, port=port, source=source, receiver=receiver, settings=config)
    return result.reply.encode() if isinstance(result, Answered) else None


def _time(fn: Callable[[], Any], loops: int, per: int, rounds: int) -> float:
    """Best of `rounds` in CPU µs per item, for `fn` handling `per` items per call. Thread CPU time and
    the minimum: the machine is shared, and time spent descheduled is not the pipeline's."""
    samples = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(loops):
            fn()
        samples.append((time.thread_time() - start) / (loops * per) * 1e6)
    return min(samples)


def run(rounds: int, loops: int, profile: bool) -> None:
    config = settings()
    receiver = Receiver(IPv4Address("10.77.0.2"), IPv4Network("10.77.0.0/24"))
    work = frames(config, receiver)
    n = len(work)
    requests = [DhcpPacket.decode(f[0]) for f in work]
    clients = [classify(r, port=f[1], source_ip=f[2]) for r, f in zip(requests, work, strict=True)]
    decisions = [decide(c, config, receiver) for c in clients]  # type: ignore[arg-type]
    replies = [build_reply(r, c, d) for r, c, d in zip(requests, clients, decisions, strict=True)]  # type: ignore[arg-type]
    offers = sum(1 for f in work if f[1] == DHCP_PORT)
    print(f"{n} answered requests ({offers} DISCOVER to 67, {n - offers} to 4011), {loops} loops x {rounds}")

    def decode() -> None:
        for f in work:
            DhcpPacket.decode(f[0])

    def classify_all() -> None:
        for r, f in zip(requests, work, strict=True):
            classify(r, port=f[1], source_ip=f[2])

    def decide_all() -> None:
        for c in clients:
            decide(c, config, receiver)  # type: ignore[arg-type]

    def build_all() -> None:
        for r, c, d in zip(requests, clients, decisions, strict=True):
            build_reply(r, c, d)  # type: ignore[arg-type]

    def encode_all() -> None:
        for p in replies:
            p.encode()

    def destination_all() -> None:
        for r, f in zip(requests, work, strict=True):
            if f[1] == DHCP_PORT:
                offer_destination(r)
            else:
                pxe_destination(r, f[2], f[3])

    def whole() -> None:
        for f in work:
            _answer(f, config, receiver)

    stages = {
        "decode": decode,
        "classify": classify_all,
        "decide": decide_all,
        "build_reply": build_all,
        "encode": encode_all,
        "destination": destination_all,
    }
    total = 0.0
    for name, fn in stages.items():
        us = _time(fn, loops, n, rounds)
        total += us
        print(f"  {name:<12} {us:7.2f} µs/packet")
    print(f"  {'sum':<12} {total:7.2f} µs/packet")
    us = _time(whole, loops, n, rounds)
    print(f"  {'pipeline':<12} {us:7.2f} µs/packet  ({1e6 / us:,.0f} packets/s on one core)")
    sources = [f"{f[2]}:{f[3]}" for f in work]

    def with_record() -> None:
        for f, source in zip(work, sources, strict=True):
            result = pipeline.run(f[0], port=f[1], source=(f[2], f[3]), receiver=receiver, settings=config)
            if isinstance(result, Answered):
                result.reply.encode()
            pipeline.record(result, port=f[1], iface="bench0", source=source)

    us = _time(with_record, loops, n, rounds)
    print(f"  {'with record':<12} {us:7.2f} µs/packet  (pipeline + decision record, as serve runs it)")
    if profile:
        prof = cProfile.Profile()
        prof.runcall(lambda: _time(whole, loops, n, 1))
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--loops", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    run(max(1, min(args.rounds, 100)), max(1, min(args.loops, 1_000_000)), args.profile)


if __name__ == "__main__":
    main()
