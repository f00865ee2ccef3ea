"""Coverage-guided fuzzing (atheris/libFuzzer) of the DHCP and TFTP decoders and of the reply pipeline.

    python3 -m tests.fuzz.run --seconds 300            # all targets, 300 s shared between them
    python3 -m tests.fuzz.run --seconds 60 --targets tftp
    python3 -m tests.fuzz.run --extract-corpus         # rebuild the seed corpus from the captures
    python3 -m tests.fuzz.run --engine hypothesis ...  # no atheris: a time-bounded Hypothesis run

Targets (each a function of bytes that raises only on a bug):
  dhcp   DhcpPacket.decode is total (value or MalformedPacket); a decoded packet re-encodes to a fixed
         point; dump() never raises.
  tftp   tftp.packet.decode is total; requests, DATA and ACK re-encode to a fixed point.
  dhcp6  proxydhcp.dhcp6.packet.decode is total (value or MalformedDhcp6, relay nesting bounded); a
         decoded message re-encodes to a fixed point; dump() never raises.
  reply6 a DHCPv6 datagram → pipeline6 → an answer has no IA option anywhere, Server ID, the Client
         ID echoed, option 59 and option 16 (343, PXEClient/HTTPClient), the request's xid.
  reply  a decodable PXE request → classify → decide → build_reply → the reply encodes, decodes, has
         yiaddr 0, no lease option (1/3/6/51/58/59), the request's xid and chaddr.

Each target runs in its own process (libFuzzer owns the process and exits on a crash); the parent
prints executions and crashes per target and exits 1 if any target crashed. New coverage-increasing
inputs go to a scratch directory; `--merge` folds them into tests/fuzz/corpus/<target>.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "corpus"
TARGETS = ("dhcp", "tftp", "reply", "dhcp6", "reply6")
CORPUS_OF = {
    "dhcp": "dhcp",
    "tftp": "tftp",
    "reply": "dhcp",
    "dhcp6": "dhcp6",
    "reply6": "dhcp6",
    "canary": "none",
}
LEASE_OPTIONS = frozenset({1, 3, 6, 51, 58, 59})
DHCP_PORTS = frozenset({67, 68, 4011})
NOT_TFTP_PORTS = frozenset({53, 123, 137, 138, 546, 547, 1900, 5353})
MAX_DATA_SEEDS = 8  # a capture of a whole transfer holds thousands of DATA/ACK packets alike


# -- targets ----------------------------------------------------------------------------------------


class FuzzFailure(AssertionError):
    """An invariant broken by an input (a bug, as much as an unexpected exception)."""


def target_dhcp(data: bytes) -> None:
    from proxydhcp.dhcp.codes import Opt
    from proxydhcp.dhcp.packet import DhcpPacket
    from proxydhcp.errors import MalformedPacket

    try:
        pkt = DhcpPacket.decode(data)
    except MalformedPacket:
        return
    pkt.dump()
    if len(pkt.sname) > 63 or len(pkt.file) > 127 or pkt.has_option(Opt.OVERLOAD):
        return  # full-width fields cannot be re-sent NUL-terminated; 52 inside `file` is re-read as overload
    again = DhcpPacket.decode(pkt.encode())
    if again != pkt:
        raise FuzzFailure(f"DHCP round trip changed the packet:\n{pkt.dump()}---\n{again.dump()}")


def target_tftp(data: bytes) -> None:
    from proxydhcp.errors import MalformedPacket
    from proxydhcp.tftp import packet as tftp

    try:
        pkt = tftp.decode(data)
    except MalformedPacket:
        return
    if isinstance(pkt, tftp.Request | tftp.Data | tftp.Ack):
        again = tftp.decode(pkt.encode())
        if again != pkt:
            raise FuzzFailure(f"TFTP round trip changed {pkt!r} into {again!r}")


_SETTINGS: Any = None


def _dhcp6_seeds() -> dict[str, bytes]:
    from tests.dhcp6_requests import HTTP_VENDOR, edk2_boot_request, edk2_solicit, relay_forward

    solicit = edk2_solicit()
    return {
        "edk2-solicit": solicit,
        "edk2-solicit-http": edk2_solicit(arch=16, vendor=HTTP_VENDOR, ia=False),
        "edk2-solicit-no-arch": edk2_solicit(arch=None),
        "edk2-boot-request": edk2_boot_request(_SERVER_DUID),
        "edk2-boot-request-srvid": b"\x03\x3a\x5b\x7cSRVID" + edk2_boot_request(_SERVER_DUID)[4 + 14 :],
        "relayed-solicit": relay_forward(solicit, "2001:db8:1::1"),
        "relayed-twice": relay_forward(relay_forward(solicit, "2001:db8:1::1"), "::", hops=1),
    }


def _fuzz_settings() -> Any:
    """Every architecture has a file (HTTP ones a URL), so most requests reach build_reply; a few host
    entries exercise the per-MAC rules."""
    global _SETTINGS
    if _SETTINGS is None:
        from proxydhcp.config import Settings
        from proxydhcp.dhcp.arch import ARCH_NAMES

        boot = {
            name: (f"http://10.0.0.1/{name}.efi" if "http" in name else f"{name}.bin")
            for name in ARCH_NAMES.values()
        }
        boot["ipxe"] = "http://10.0.0.1/boot.ipxe"
        _SETTINGS = Settings.model_validate(
            {
                "boot": boot,
                "subnet": [
                    {"cidr": "0.0.0.0/1"},
                    {"cidr": "128.0.0.0/1", "next_server": "10.9.9.9", "boot": {"bios": "other.kpxe"}},
                    {"cidr": "2001:db8:1::/64"},
                    {"cidr": "2000::/3", "next_server": "2001:db8:9::9", "boot": {"efi-x64": "v6.efi"}},
                ],
                "host": [
                    {"mac": "02:00:00:00:00:01", "ignore": True},
                    {"mac": "02:00:00:00:00:02", "boot_file": "x" * 127, "next_server": "10.1.2.3"},
                ],
            }
        )
    return _SETTINGS


def _structured_request(data: bytes) -> bytes:
    """Bytes → a DHCP request that is mostly PXE-looking, so the fuzzer spends its time past classify."""
    import atheris_shim as shim

    fdp = shim.provider(data)
    from proxydhcp.dhcp.codes import Opt
    from proxydhcp.dhcp.packet import DhcpPacket

    mtype = fdp.PickValueInList([1, 3, 8, 3, 1, fdp.ConsumeIntInRange(0, 255)])
    vendor = fdp.PickValueInList([b"PXEClient", b"HTTPClient", b"PXEClient:Arch:00007:UNDI:003016", b"MSFT"])
    vendor += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    opts: list[tuple[int, bytes]] = [(Opt.MESSAGE_TYPE, bytes((mtype,))), (Opt.VENDOR_CLASS, vendor[:255])]
    if fdp.ConsumeBool():
        arch = fdp.PickValueInList(
            [0, 6, 7, 9, 10, 11, 15, 16, 19, 20, 25, 27, fdp.ConsumeIntInRange(0, 65535)]
        )
        opts.append((Opt.CLIENT_ARCH, arch.to_bytes(2, "big")))
    if fdp.ConsumeBool():
        opts.append((Opt.CLIENT_UUID, fdp.ConsumeBytes(17)))
    if fdp.ConsumeBool():
        opts.append((Opt.USER_CLASS, fdp.PickValueInList([b"iPXE", b"\x04iPXE", fdp.ConsumeBytes(8)])))
    if fdp.ConsumeBool():
        opts.append(
            (
                Opt.VENDOR_SPECIFIC,
                fdp.PickValueInList([b"\x47\x04\x80\x00\x00\x00\xff", fdp.ConsumeBytes(12)]),
            )
        )
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        opts.append((fdp.ConsumeIntInRange(1, 254), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 255))))
    mac = fdp.PickValueInList(
        [
            b"\x02\0\0\0\0\x01",
            b"\x02\0\0\0\0\x02",
            b"\x52\x54\0\x12\x34\x56",
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16)),
        ]
    )
    addr = lambda: IPv4Address(fdp.ConsumeIntInRange(0, 2**32 - 1) if fdp.ConsumeBool() else 0)  # noqa: E731
    pkt = DhcpPacket(
        op=fdp.PickValueInList([1, 1, 1, 2]),
        xid=fdp.ConsumeIntInRange(0, 2**32 - 1),
        chaddr=mac[:16],
        htype=fdp.ConsumeIntInRange(0, 255),
        hops=fdp.ConsumeIntInRange(0, 255),
        secs=fdp.ConsumeIntInRange(0, 65535),
        flags=fdp.ConsumeIntInRange(0, 65535),
        ciaddr=addr(),
        giaddr=addr(),
        sname=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 63)).replace(b"\0", b"a"),
        file=fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 127)).replace(b"\0", b"a"),
        options=tuple(opts),
    )
    return pkt.encode()


def target_reply(data: bytes) -> None:
    from proxydhcp.dhcp.codes import BOOTREPLY, MessageType, Opt
    from proxydhcp.dhcp.packet import DhcpPacket
    from proxydhcp.errors import MalformedPacket
    from proxydhcp.outcome import Ignore
    from proxydhcp.pxe.classify import DHCP_PORT, PXE_PORT, classify
    from proxydhcp.pxe.policy import Receiver, decide
    from proxydhcp.pxe.reply import build_reply

    if len(data) < 3:
        return
    # Byte 0: listener; byte 1: raw datagram (libFuzzer's own mutations) or structured PXE request.
    port = DHCP_PORT if data[0] & 1 else PXE_PORT
    raw = data[2:] if data[1] & 1 else _structured_request(data[2:])
    try:
        request = DhcpPacket.decode(raw)
    except MalformedPacket:
        return
    source = IPv4Address(int.from_bytes(raw[:4].ljust(4, b"\0"), "big"))
    client = classify(request, port=port, source_ip=source)
    if isinstance(client, Ignore):
        return
    local = IPv4Address(int.from_bytes(raw[4:8].ljust(4, b"\0"), "big") or 1)
    decision = decide(client, _fuzz_settings(), Receiver(local, IPv4Network(f"{local}/24", strict=False)))
    if isinstance(decision, Ignore):
        return
    reply = DhcpPacket.decode(build_reply(request, client, decision).encode())
    lease = [code for code, _ in reply.options if code in LEASE_OPTIONS]
    expected_type = MessageType.OFFER if port == DHCP_PORT else MessageType.ACK
    if reply.yiaddr != IPv4Address(0) or lease:
        raise FuzzFailure(f"reply gives an address: yiaddr {reply.yiaddr}, lease options {lease}")
    if reply.op != BOOTREPLY or reply.xid != request.xid or reply.chaddr != request.chaddr:
        raise FuzzFailure("reply does not match the request (op/xid/chaddr)")
    if reply.message_type != expected_type:
        raise FuzzFailure(f"reply type {reply.message_type} on port {port}")
    relay = [value for code, value in request.options if code == Opt.RELAY_AGENT]
    if relay and [value for code, value in reply.options if code == Opt.RELAY_AGENT] != relay:
        raise FuzzFailure("option 82 not echoed verbatim")


def target_dhcp6(data: bytes) -> None:
    from proxydhcp.dhcp6.packet import MalformedDhcp6, decode, dump

    try:
        pkt = decode(data)
    except MalformedDhcp6:
        return
    dump(pkt)
    again = decode(pkt.encode())
    if again != pkt:
        raise FuzzFailure(f"DHCPv6 round trip changed the message:\n{dump(pkt)}---\n{dump(again)}")


_SERVER_DUID = bytes.fromhex("00030001020000000001")


def target_reply6(data: bytes) -> None:
    from ipaddress import IPv6Address

    from proxydhcp.dhcp6 import options
    from proxydhcp.dhcp6.packet import IA_OPTIONS, Message, MessageType, Opt, RelayMessage, decode
    from proxydhcp.pxe6.classify import DHCP6_PORT, PXE6_PORT
    from proxydhcp.pxe6.pipeline import Answered6, run6
    from proxydhcp.pxe6.policy import Receiver6

    if len(data) < 2:
        return
    port = DHCP6_PORT if data[0] & 1 else PXE6_PORT
    raw = data[1:]
    # A Request/Information-Request may name our Server ID: let the fuzzer reach it with one byte.
    raw = raw.replace(b"SRVID", (2).to_bytes(2, "big") + len(_SERVER_DUID).to_bytes(2, "big") + _SERVER_DUID)
    source = ("fe80::1" if data[0] & 2 else "2001:db8:1::99", 546 if port == DHCP6_PORT else 4011, 0, 2)
    receiver = Receiver6("fz0", ((IPv6Address("2001:db8:1::1"), 64),))
    result = run6(
        raw, port=port, source=source, receiver=receiver, settings=_fuzz_settings(), server_duid=_SERVER_DUID
    )
    if not isinstance(result, Answered6):
        return
    reply = decode(result.reply.encode())
    request = decode(raw)
    node: Message | RelayMessage = reply
    while isinstance(node, RelayMessage):
        if node.msg_type != MessageType.RELAY_REPL:
            raise FuzzFailure("a relayed answer is not a Relay-Reply")
        node = node.inner
    inner_request = request.innermost() if isinstance(request, RelayMessage) else request
    present = {code for code, _ in node.options}
    if present & IA_OPTIONS:
        raise FuzzFailure(f"answer carries an IA/address option: {sorted(present & IA_OPTIONS)}")
    if node.transaction_id != inner_request.transaction_id:
        raise FuzzFailure("answer's transaction id differs from the request's")
    if node.option(Opt.SERVERID) != _SERVER_DUID or Opt.BOOTFILE_URL not in present:
        raise FuzzFailure("answer without our Server ID or a Boot File URL")
    if node.option(Opt.CLIENTID) != inner_request.option(Opt.CLIENTID):
        raise FuzzFailure("Client ID not echoed")
    vendor = options.vendor_class(node.option(Opt.VENDOR_CLASS))
    if vendor is None or vendor.enterprise != 343 or vendor.data[0] not in (b"PXEClient", b"HTTPClient"):
        raise FuzzFailure("answer without vendor class 343 PXEClient/HTTPClient (EDK II hangs)")


def target_canary(data: bytes) -> None:
    """Self-test of the harness (not run by default): a planted bug that must be found and reported."""
    if len(data) >= 3 and data[0] == 0x46 and data[1] == 0x55 and data[2] == 0x5A:
        raise FuzzFailure("canary reached")


TARGET_FUNCS: dict[str, Callable[[bytes], None]] = {
    "dhcp": target_dhcp,
    "tftp": target_tftp,
    "reply": target_reply,
    "dhcp6": target_dhcp6,
    "reply6": target_reply6,
    "canary": target_canary,
}


# -- seed corpus ------------------------------------------------------------------------------------


def _udp_payloads(path: Path) -> Iterator[tuple[int, int, bytes]]:
    import dpkt

    with path.open("rb") as handle:
        try:
            reader: Any = dpkt.pcap.Reader(handle)
        except ValueError:
            handle.seek(0)
            reader = dpkt.pcapng.Reader(handle)
        link = reader.datalink()
        for _, frame in reader:
            try:
                l2: Any = dpkt.sll.SLL(frame) if link == 113 else dpkt.ethernet.Ethernet(frame)
            except (dpkt.Error, ValueError, IndexError):
                continue
            ip = l2.data
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
                udp = ip.data
                # Keep the bytes on the wire even when the IP layer was cut short (the malformed captures).
                yield udp.sport, udp.dport, bytes(udp.data)


# Hand-written inputs that broke other servers or sit on boundaries (kept next to the captured ones).
HANDMADE: dict[str, dict[str, bytes]] = {
    "dhcp6": _dhcp6_seeds(),
    "tftp": {
        "rrq-blksize-windowsize-unknown": (
            b"\0\1pxelinux.0\0octet\0blksize\0001468\0windowsize\0004\0msftwindow\00031\0"
        ),
        "rrq-huge-options": (
            b"\0\1f\0octet\0blksize\099999999999999999999\0windowsize\0-1\0timeout\0x\0tsize\0"
        ),
        "rrq-dup-options": b"\0\1f\0octet\0blksize\0512\0BLKSIZE\0008\0blksize\00065464\0",
        "rrq-nul-name": b"\0\1\0octet\0",
        "rrq-long-name": b"\0\1" + b"a/" * 400 + b"\0octet\0",
        "rrq-odd-mode": b"\0\1f\0mail\0",
        "rrq-unterminated": b"\0\1pxelinux.0\0oct",
        "rrq-dotdot": b"\0\1../../etc/passwd\0octet\0",
        "ack-trailing": b"\0\4\0\1\0",
        "error-unterminated": b"\0\5\0\1no nul",
        "opcode-7": b"\0\7\0\0",
        "oack-odd": b"\0\6blksize\0",
    },
    "dhcp": {
        "short": b"\1\1\6\0",
        "option-overrun": bytes(236) + b"\x63\x82\x53\x63" + b"\x35\x01\x01\x3c\xff",
        "overload-3": (b"\1\1\6\0" + bytes(232) + b"\x63\x82\x53\x63\x34\x01\x03\x35\x01\x01\xff"),
        "arch-odd": b"\1\1\6\0" + bytes(232) + b"\x63\x82\x53\x63\x35\x01\x01\x5d\x03\0\0\7\xff",
    },
}


def extract_corpus(sources: list[Path]) -> dict[str, int]:
    """Write every DHCP/TFTP UDP payload of the captures (and HANDMADE) to corpus/<kind>/."""
    counts = {"dhcp": 0, "tftp": 0, "dhcp6": 0}
    for kind in counts:
        (CORPUS / kind).mkdir(parents=True, exist_ok=True)

    def put(kind: str, stem: str, payload: bytes) -> None:
        digest = hashlib.sha1(payload).hexdigest()[:12]
        if not any((CORPUS / kind).glob(f"*-{digest}")):  # one file per distinct payload
            (CORPUS / kind / f"{stem}-{digest}").write_bytes(payload)
            counts[kind] += 1

    for path in sources:
        seen_of: dict[int, int] = {}
        for sport, dport, payload in _udp_payloads(path):
            if sport in DHCP_PORTS or dport in DHCP_PORTS:
                put("dhcp", path.stem, payload)
            elif not ({sport, dport} & NOT_TFTP_PORTS):
                opcode = int.from_bytes(payload[:2], "big")
                if opcode in (3, 4):  # DATA/ACK: a few per capture say all there is
                    seen_of[opcode] = seen_of.get(opcode, 0) + 1
                    if seen_of[opcode] > MAX_DATA_SEEDS:
                        continue
                if 69 in (sport, dport) or (1 <= opcode <= 6 and len(payload) >= 4):
                    put("tftp", path.stem, payload)
    for kind, items in HANDMADE.items():
        for stem, payload in items.items():
            put(kind, stem, payload)
    return counts


# -- engines ----------------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    executions: int
    crashes: int
    seconds: float
    detail: str = ""


def _install_shim(use_atheris: bool) -> None:
    """`atheris_shim.provider(data)`: atheris' FuzzedDataProvider, or a pure-Python one with the same
    few methods (the Hypothesis engine has no atheris)."""
    import types

    shim = types.ModuleType("atheris_shim")
    if use_atheris:
        import atheris

        shim.provider = atheris.FuzzedDataProvider  # type: ignore[attr-defined]
    else:
        shim.provider = _Provider  # type: ignore[attr-defined]
    sys.modules["atheris_shim"] = shim


class _Provider:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def ConsumeBytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def ConsumeIntInRange(self, low: int, high: int) -> int:
        span = high - low
        width = max(1, (span.bit_length() + 7) // 8)
        return low + int.from_bytes(self.ConsumeBytes(width).ljust(width, b"\0"), "big") % (span + 1)

    def ConsumeBool(self) -> bool:
        return bool(self.ConsumeIntInRange(0, 1))

    def PickValueInList(self, values: list[Any]) -> Any:
        return values[self.ConsumeIntInRange(0, len(values) - 1)]


def _seeds(target: str) -> list[bytes]:
    folder = CORPUS / CORPUS_OF[target]
    seeds = [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []
    if target == "reply":
        seeds = [b"\1\1" + s for s in seeds] + [b"\0\1" + s for s in seeds]
    return seeds


def worker_atheris(target: str, seconds: int, workdir: Path) -> None:
    """Runs inside the child process; libFuzzer exits the process itself."""
    import atheris

    _install_shim(True)
    with atheris.instrument_imports():
        import proxydhcp.config
        import proxydhcp.dhcp.options
        import proxydhcp.dhcp.packet
        import proxydhcp.dhcp6.options
        import proxydhcp.dhcp6.packet
        import proxydhcp.pxe.classify
        import proxydhcp.pxe.policy
        import proxydhcp.pxe.reply
        import proxydhcp.pxe6.classify
        import proxydhcp.pxe6.pipeline
        import proxydhcp.pxe6.policy
        import proxydhcp.pxe6.reply
        import proxydhcp.tftp.packet  # noqa: F401
    func = atheris.instrument_func(TARGET_FUNCS[target])  # the target's own checks count as coverage too
    if target in ("reply", "reply6"):
        _fuzz_settings()
    live = workdir / "corpus"
    live.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(_seeds(target)):
        (live / f"seed-{i}").write_bytes(seed)
    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        "-print_final_stats=1",
        "-timeout=5",
        "-rss_limit_mb=2048",
        "-max_len=1600",
        f"-artifact_prefix={workdir}/",
        str(live),
    ]
    atheris.Setup(args, func)
    atheris.Fuzz()


def run_atheris(target: str, seconds: int, workdir: Path) -> Result:
    log = workdir / "libfuzzer.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fuzz.run",
                "--worker",
                target,
                "--seconds",
                str(seconds),
                "--workdir",
                str(workdir),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=seconds + 120,
        )
    text = log.read_text(errors="replace")
    found = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text) or re.findall(
        r"Done (\d+) runs", text
    )
    runs = [int(n) for n in re.findall(r"^#(\d+)\s", text, re.M)]
    executions = int(found[-1]) if found else max(runs, default=0)
    artifacts = sorted(
        p for p in workdir.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))
    )
    crashes = len(artifacts) or (1 if proc.returncode != 0 else 0)
    detail = ""
    if crashes:
        tail = text[text.find("=== Uncaught") :] if "=== Uncaught" in text else text[-3000:]
        detail = f"log {log}; inputs {[str(a) for a in artifacts]}\n{tail[:3000]}"
    return Result(target, executions, crashes, time.monotonic() - started, detail)


def run_hypothesis(target: str, seconds: int, workdir: Path) -> Result:
    """Fallback without atheris: Hypothesis-generated bytes and byte-level mutations of the seeds,
    in rounds until the time is up. Not coverage-guided, but same targets and invariants."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _install_shim(False)
    func = TARGET_FUNCS[target]
    seeds = _seeds(target) or [b""]
    count = 0

    def mutate(args: tuple[bytes, list[tuple[int, int]], int]) -> bytes:
        seed, flips, cut = args
        buf = bytearray(seed)
        for pos, value in flips:
            if buf:
                buf[pos % len(buf)] = value
        return bytes(buf[: cut or None])

    inputs = st.binary(max_size=1600) | st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1600), st.integers(0, 255)), max_size=8),
        st.integers(0, 1600),
    ).map(mutate)

    @settings(max_examples=2000, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(inputs)
    def one(data: bytes) -> None:
        nonlocal count
        count += 1
        func(data)

    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        try:
            one()
        except Exception as exc:  # a falsifying example: report it, stop this target
            (workdir / "crash.txt").write_text(
                f"{type(exc).__name__}: {exc}\n{getattr(exc, '__notes__', '')}"
            )
            return Result(target, count, 1, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:3000])
    return Result(target, count, 0, time.monotonic() - started)


def merge_corpus(target: str, workdir: Path) -> None:
    """Fold coverage-increasing inputs of a run into the repo corpus (libFuzzer -merge=1)."""
    dest = CORPUS / CORPUS_OF[target]
    if target == "reply":
        return  # its inputs carry a 2-byte header: they are not plain datagrams
    subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", "--worker-merge", target, "--workdir", str(workdir)],
        cwd=REPO,
        check=False,
        timeout=600,
    )
    del dest


def worker_merge(target: str, workdir: Path) -> None:
    import atheris

    _install_shim(True)
    dest = CORPUS / CORPUS_OF[target]
    with atheris.instrument_imports():
        import proxydhcp.dhcp.packet
        import proxydhcp.tftp.packet  # noqa: F401
    atheris.Setup([sys.argv[0], "-merge=1", str(dest), str(workdir / "corpus")], TARGET_FUNCS[target])
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="total time, shared between the targets")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument(
        "--extract-corpus", action="store_true", help="rebuild seeds from the captures and exit"
    )
    parser.add_argument(
        "--merge", action="store_true", help="add coverage-increasing inputs to the repo corpus"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-merge", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker_atheris(args.worker, args.seconds, args.workdir)
        return 0
    if args.worker_merge:
        worker_merge(args.worker_merge, args.workdir)
        return 0
    if args.extract_corpus:
        captures = sorted((REPO / "tests" / "fixtures").glob("*.pcap*"))
        shared = REPO.parent / "shared" / "captures" / "public"
        captures += sorted(
            p for p in shared.glob("*.pcap*") if not (REPO / "tests" / "fixtures" / p.name).exists()
        )
        print(f"corpus: added {extract_corpus(captures)} from {len(captures)} captures")
        return 0

    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGET_FUNCS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            print("atheris is not installed: falling back to the Hypothesis engine (not coverage-guided)")
            engine = "hypothesis"
    per_target = max(1, args.seconds // len(targets))
    scratch = Path(tempfile.mkdtemp(prefix="proxydhcp-fuzz-"))
    results: list[Result] = []
    for target in targets:
        workdir = scratch / target
        workdir.mkdir()
        runner = run_atheris if engine == "atheris" else run_hypothesis
        result = runner(target, per_target, workdir)
        results.append(result)
        rate = result.executions / result.seconds if result.seconds else 0.0
        print(
            f"{target:6s} {engine}: {result.executions} executions in {result.seconds:.0f} s "
            f"({rate:.0f}/s), {result.crashes} crash{'es' if result.crashes != 1 else ''}",
            flush=True,
        )
        if result.detail:
            print(result.detail)
        if args.merge and engine == "atheris" and not result.crashes:
            merge_corpus(target, workdir)
    total = sum(r.executions for r in results)
    crashes = sum(r.crashes for r in results)
    print(f"total: {total} executions, {crashes} crashes")
    if crashes or args.keep:
        print(f"scratch directory kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if crashes else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
