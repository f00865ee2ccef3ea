"""Silence: every ignore reason and every kind of malformed packet gets no datagram back, the proxy
logs why (with the packet's xid), and it keeps answering valid DISCOVERs afterwards.

One lab and one proxydhcp for the module: "cli" (no address, port 68), "cli77" (10.77.0.50, port
4011) and "spoof" (a relay agent of 10.79.0.0/24, which is not enabled; proxydhcp has a route to it,
so a wrong answer would arrive).
"""

# ruff: noqa: E501  (the case tables read best one case per line)
from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from tests.integration import dhcpclient as dc
from tests.integration.conftest import Proxy, spawn_proxy
from tests.netlab import Lab, have_root_netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

PXE, CLI77, SPOOF, SPOOF_GIADDR = "10.77.0.2", "10.77.0.50", "10.77.0.9", "10.79.0.1"
IGNORED_MAC = "52:54:00:ee:ee:01"
CONFIG = f"""
[server]
interfaces = ["eth0"]

[boot]
bios = "undionly.kpxe"
efi-x64 = "ipxe.efi"
efi-x64-http = "ipxe-http.efi"

[[subnet]]
cidr = "10.77.0.0/24"

[[host]]
mac = "{IGNORED_MAC}"
ignore = true
"""


@dataclass
class Env:
    lab: Lab
    proxy: Proxy
    bcast: socket.socket  # cli, 0.0.0.0:68 on eth0: where broadcast offers arrive
    pxe: socket.socket  # cli77, 10.77.0.50:4011: where 4011 ACKs arrive
    relay: socket.socket  # spoof, 0.0.0.0:67: where answers to giaddr 10.79.0.1 arrive


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not have_root_netns():
        pytest.skip("needs root and `ip netns`")
    config: Path = tmp_path_factory.mktemp("ignore") / "proxydhcp.toml"
    config.write_text(CONFIG)
    with Lab(prefix="pdi") as lab:
        lab.segment("10.77.0.0/24", {"pxe": PXE, "cli": None, "cli77": CLI77, "spoof": SPOOF})
        lab.ns("spoof").run(["ip", "addr", "add", f"{SPOOF_GIADDR}/24", "dev", "eth0"])
        lab.route("pxe", "10.79.0.0/24", SPOOF)
        proxy = spawn_proxy(lab, "pxe", ["-c", str(config), "-v"])
        try:
            proxy.wait_log("serving proxyDHCP")
            sockets = (
                dc.udp_socket(lab.ns("cli").name, port=68, device="eth0"),
                dc.udp_socket(lab.ns("cli77").name, port=4011, address=CLI77),
                dc.udp_socket(lab.ns("spoof").name, port=67),
            )
            yield Env(lab, proxy, *sockets)
            for sock in sockets:
                sock.close()
        finally:
            proxy.stop()


def _without(pkt: DhcpPacket, code: int) -> DhcpPacket:
    return dataclasses.replace(pkt, options=tuple(o for o in pkt.options if o[0] != code))


def _with(pkt: DhcpPacket, code: int, value: bytes) -> DhcpPacket:
    return dataclasses.replace(pkt, options=(*_without(pkt, code).options, (code, value)))


def _set_option_bytes(pkt: DhcpPacket, code: int, value: bytes) -> bytes:
    """Encode with an option of any length (the codec refuses to build bad packets itself)."""
    marker = b"\xfe\xfe\xfe\xfe"
    data = _with(pkt, code, marker).encode()
    return data.replace(bytes((code, 4)) + marker, bytes((code, len(value))) + value, 1)


def _d(xid: int, **kw: object) -> DhcpPacket:
    mac = kw.pop("mac", f"52:54:00:aa:{xid >> 8 & 255:02x}:{xid & 255:02x}")
    return dc.discover(str(mac), xid, **kw)  # type: ignore[arg-type]


def _r(xid: int, **kw: object) -> DhcpPacket:
    return dc.request4011(f"52:54:00:bb:{xid >> 8 & 255:02x}:{xid & 255:02x}", xid, ciaddr=CLI77, **kw)  # type: ignore[arg-type]


# (case id, which socket sends, destination port, datagram, the reason proxydhcp logs)
Case = tuple[str, str, int, Callable[[], bytes], str]
CASES: list[Case] = [
    ("bootreply-on-67", "bcast", 67, lambda: dataclasses.replace(_d(0x101), op=2).encode(), "not a BOOTREQUEST"),
    ("request-on-67", "bcast", 67, lambda: dc.request67("52:54:00:aa:01:02", 0x102, requested=CLI77, server_id="10.77.0.1").encode(), "not a DISCOVER on port 67"),
    ("inform-on-67", "bcast", 67, lambda: _with(_d(0x103), Opt.MESSAGE_TYPE, bytes((MessageType.INFORM,))).encode(), "not a DISCOVER on port 67"),
    ("not-pxe-vendor", "bcast", 67, lambda: _d(0x104, vendor=b"MSFT 5.0").encode(), "not a PXE client"),
    ("no-vendor-class", "bcast", 67, lambda: _without(_d(0x105), Opt.VENDOR_CLASS).encode(), "not a PXE client"),
    ("hlen-8", "bcast", 67, lambda: dataclasses.replace(_d(0x106), chaddr=bytes(range(1, 9))).encode(), "hardware address is not 6 bytes"),
    ("uuid-type-1", "bcast", 67, lambda: _with(_d(0x107), Opt.CLIENT_UUID, b"\x01" + bytes(16)).encode(), "bad option: option 97 has type 1"),
    ("host-ignored", "bcast", 67, lambda: _d(0x108, mac=IGNORED_MAC).encode(), f"host {IGNORED_MAC} ignored"),
    ("no-file-for-arch-ia32", "bcast", 67, lambda: _d(0x109, arch=6).encode(), "no boot file for efi-ia32"),
    ("no-file-for-arch-arm64", "bcast", 67, lambda: _d(0x10A, arch=11).encode(), "no boot file for efi-arm64"),
    ("http-file-not-url", "bcast", 67, lambda: _d(0x10B, arch=16, vendor=b"HTTPClient:Arch:00016:UNDI:003001").encode(), "is not a URL"),
    ("relayed-subnet-not-enabled", "relay", 67, lambda: _d(0x10C, giaddr=SPOOF_GIADDR).encode(), f"subnet of {SPOOF_GIADDR} not enabled"),
    ("discover-on-4011", "pxe", 4011, lambda: _d(0x201).encode(), "unsupported message type on 4011"),
    ("not-pxe-on-4011", "pxe", 4011, lambda: _with(_r(0x202), Opt.VENDOR_CLASS, b"MSFT 5.0").encode(), "not a PXE client"),
    ("bis-on-4011", "pxe", 4011, lambda: _with(_r(0x203), Opt.VENDOR_SPECIFIC, b"\x47\x04\x80\x00\x80\x00\xff").encode(), "PXE BIS not supported"),
    ("bad-43-on-4011", "pxe", 4011, lambda: _with(_r(0x204), Opt.VENDOR_SPECIFIC, b"\x47\x09\x00").encode(), "bad option: option 43"),
    # From an address in a subnet nobody enabled: sent by "spoof", from 10.79.0.1.
    ("4011-from-disabled-subnet", "relay4011", 4011, lambda: dc.request4011("52:54:00:bb:02:05", 0x205, ciaddr=SPOOF_GIADDR, arch=7).encode(), f"subnet of {SPOOF_GIADDR} not enabled"),
    ("4011-no-file-for-arch", "pxe", 4011, lambda: _r(0x206, arch=11).encode(), "no boot file for efi-arm64"),
]  # fmt: skip

_base = dc.discover("52:54:00:cc:00:01", 0x301).encode()
MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "packet too short (0 bytes"),
    ("one-byte", b"\x01", "packet too short (1 bytes"),
    ("header-only", _base[:239], "packet too short (239 bytes"),
    ("bad-cookie", _base[:236] + b"\xde\xad\xbe\xef" + _base[240:], "bad magic cookie 0xdeadbeef"),
    ("hlen-17", _base[:2] + b"\x11" + _base[3:], "hardware address length 17"),
    ("option-overrun", _base[:240] + b"\x35\x01\x01\x3c\xf0PXEClient", "option 60 in options overruns"),
    ("stray-option-byte", _base[:240] + b"\x35\x01\x01\x0c", "option 12 in options has no length byte"),
    ("no-option-53", _set_option_bytes(_d(0x302), Opt.MESSAGE_TYPE, b"").replace(b"\x35\x00", b"\x00\x00", 1), "missing option 53"),
    ("option-53-empty", _set_option_bytes(_d(0x307), Opt.MESSAGE_TYPE, b""), "option 53 has length 0"),
    ("option-93-odd", _set_option_bytes(_d(0x303), Opt.CLIENT_ARCH, b"\x00\x07\x00"), "option 93 has length 3"),
    ("option-94-short", _set_option_bytes(_d(0x304), Opt.CLIENT_NDI, b"\x01"), "option 94 has length 1"),
    ("option-97-16", _set_option_bytes(_d(0x305), Opt.CLIENT_UUID, bytes(16)), "option 97 has length 16"),
    ("bad-overload", _set_option_bytes(_d(0x306), Opt.OVERLOAD, b"\x07"), "bad option 52"),
]  # fmt: skip


def _socket_for(env: Env, which: str) -> tuple[socket.socket, str]:
    if which == "bcast":
        return env.bcast, "255.255.255.255"
    if which == "pxe":
        return env.pxe, PXE
    return env.relay, PXE


def _assert_silence(env: Env, window: float = 0.6) -> None:
    for sock in (env.bcast, env.pxe, env.relay):
        heard = [r for r in dc.receive(sock, window if sock is env.bcast else 0.05) if r.source[0] == PXE]
        assert heard == [], heard


def _control(env: Env, xid: int) -> None:
    """A valid DISCOVER is answered: the path the silent cases took works."""
    got = dc.exchange(env.bcast, _d(xid, arch=7), ("255.255.255.255", 67), window=3.0,
                      until=lambda g: bool(dc.replies_for(g, xid, source_ip=PXE)))  # fmt: skip
    assert dc.replies_for(got, xid, source_ip=PXE), f"control DISCOVER 0x{xid:x} not answered"


@pytest.mark.parametrize(
    ("which", "port", "build", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_ignored_gets_silence(
    env: Env, which: str, port: int, build: Callable[[], bytes], reason: str
) -> None:
    data = build()
    pkt = DhcpPacket.decode(data)
    sock, dest = _socket_for(env, which)
    if which == "relay4011":
        sock = dc.udp_socket(env.lab.ns("spoof").name, port=4011, address=SPOOF_GIADDR)
    try:
        sock.sendto(data, (dest, port))
        _assert_silence(env)
        if which == "relay4011":
            assert [r for r in dc.receive(sock, 0.3) if r.source[0] == PXE] == []
    finally:
        if which == "relay4011":
            sock.close()
    env.proxy.wait_log(f"xid=0x{pkt.xid:08x}", reason, timeout=5)


@pytest.mark.parametrize(("data", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_gets_silence(env: Env, data: bytes, reason: str) -> None:
    start = len(env.proxy.log())
    env.bcast.sendto(data, ("255.255.255.255", 67))
    env.pxe.sendto(data, (PXE, 4011))
    _assert_silence(env)
    line = env.proxy.wait_log("malformed", reason, timeout=5, after=start)
    assert "Traceback" not in env.proxy.log()
    assert "ERROR" not in line


def test_still_answering_after_all_of_it(env: Env) -> None:
    _control(env, 0x401)
    assert env.proxy.proc.poll() is None
    assert "Traceback" not in env.proxy.log()
