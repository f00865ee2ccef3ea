"""diagnose/http.py on a capture built here: an HTTP boot client leased by DHCP, offered a URL by a
proxy, whose GET gets a 404, is FAILED at the http step with that cause; a refused connection and a
reset mid-file are named; garbage TCP is not HTTP and is left alone."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import dpkt

from proxydhcp.dhcp.codes import MessageType, Opt
from proxydhcp.dhcp.packet import DhcpPacket
from proxydhcp.diagnose import diagnose
from proxydhcp.diagnose.http import read_exchanges

MAC = bytes.fromhex("525400aa0001")
CLIENT, CORP, PROXY = "10.9.0.50", "10.9.0.1", "10.9.0.2"
URL = f"http://{PROXY}:8080/ipxe.efi"


class Capture:
    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.ts = 1000.0

    def ip(self, src: str, dst: str, payload: dpkt.Packet, proto: int, smac: bytes = MAC) -> None:
        ip = dpkt.ip.IP(src=IPv4Address(src).packed, dst=IPv4Address(dst).packed, p=proto, data=payload)
        ip.len = len(bytes(ip))
        eth = dpkt.ethernet.Ethernet(src=smac, dst=b"\xff" * 6, type=0x0800, data=ip)
        self.ts += 0.01
        self.frames.append((self.ts, bytes(eth)))

    def dhcp(self, src: str, dst: str, sport: int, dport: int, pkt: DhcpPacket) -> None:
        data = pkt.encode()
        self.ip(src, dst, dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(data), data=data), 17)

    def tcp(
        self, src: str, dst: str, sport: int, dport: int, seq: int, flags: int, data: bytes = b""
    ) -> None:
        self.ip(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=1, flags=flags, data=data), 6)

    def write(self, path: Path) -> Path:
        with path.open("wb") as out:
            writer = dpkt.pcap.Writer(out)
            for ts, frame in self.frames:
                writer.writepkt(frame, ts)
        return path


def _lease(cap: Capture) -> None:
    vendor = (Opt.VENDOR_CLASS, b"HTTPClient:Arch:00016:UNDI:003000")
    arch = (Opt.CLIENT_ARCH, (16).to_bytes(2, "big"))
    cap.dhcp(
        "0.0.0.0",
        "255.255.255.255",
        68,
        67,
        DhcpPacket(
            op=1,
            xid=7,
            chaddr=MAC,
            flags=0x8000,
            options=((Opt.MESSAGE_TYPE, bytes([MessageType.DISCOVER])), arch, vendor),
        ),
    )
    cap.dhcp(
        CORP,
        "255.255.255.255",
        67,
        68,
        DhcpPacket(
            op=2,
            xid=7,
            chaddr=MAC,
            yiaddr=IPv4Address(CLIENT),
            options=(
                (Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),
                (Opt.SERVER_ID, IPv4Address(CORP).packed),
            ),
        ),
    )
    cap.dhcp(
        PROXY,
        "255.255.255.255",
        67,
        68,
        DhcpPacket(
            op=2,
            xid=7,
            chaddr=MAC,
            file=URL.encode(),
            options=(
                (Opt.MESSAGE_TYPE, bytes([MessageType.OFFER])),
                (Opt.SERVER_ID, IPv4Address(PROXY).packed),
                (Opt.VENDOR_CLASS, b"HTTPClient"),
            ),
        ),
    )
    cap.dhcp(
        "0.0.0.0",
        "255.255.255.255",
        68,
        67,
        DhcpPacket(
            op=1,
            xid=7,
            chaddr=MAC,
            flags=0x8000,
            options=(
                (Opt.MESSAGE_TYPE, bytes([MessageType.REQUEST])),
                (Opt.SERVER_ID, IPv4Address(CORP).packed),
                (Opt.REQUESTED_IP, IPv4Address(CLIENT).packed),
                arch,
                vendor,
            ),
        ),
    )
    cap.dhcp(
        CORP,
        "255.255.255.255",
        67,
        68,
        DhcpPacket(
            op=2,
            xid=7,
            chaddr=MAC,
            yiaddr=IPv4Address(CLIENT),
            options=((Opt.MESSAGE_TYPE, bytes([MessageType.ACK])), (Opt.SERVER_ID, IPv4Address(CORP).packed)),
        ),
    )


SYN, SYNACK, ACK, PSH, FIN, RST = 0x02, 0x12, 0x10, 0x18, 0x11, 0x14


def _get(cap: Capture, port: int, path: str, answer: bytes, extra: list[tuple[int, bytes]] = ()) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {PROXY}\r\n\r\n".encode()
    cap.tcp(CLIENT, PROXY, port, 8080, 100, SYN)
    cap.tcp(PROXY, CLIENT, 8080, port, 500, SYNACK)
    cap.tcp(CLIENT, PROXY, port, 8080, 101, PSH, request)
    cap.tcp(CLIENT, PROXY, port, 8080, 101, PSH, request)  # a retransmission: counted once
    cap.tcp(PROXY, CLIENT, 8080, port, 501, PSH, answer)
    for flags, data in extra:
        cap.tcp(PROXY, CLIENT, 8080, port, 501 + len(answer), flags, data)


def test_a_404_after_a_good_lease_fails_at_the_http_step(tmp_path: Path) -> None:
    cap = Capture()
    _lease(cap)
    _get(cap, 40000, "/ipxe.efi", b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n404 Not Found\n")
    report = diagnose(cap.write(tmp_path / "c.pcap"))
    (client,) = report.clients
    v = client.verdict
    assert (v.verdict, v.step, v.failure) == ("failed", "http", "http-status")
    assert f"answered 404 for {URL}" in v.cause and "--http-root" in v.fix
    assert [f.check for f in client.findings if f.check.startswith("http")] == ["http-status"]


def test_a_good_fetch_is_booted_at_the_http_step(tmp_path: Path) -> None:
    cap = Capture()
    _lease(cap)
    _get(cap, 40001, "/ipxe.efi", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", [(FIN, b"")])
    (client,) = diagnose(cap.write(tmp_path / "c.pcap")).clients
    assert (client.verdict.verdict, client.verdict.step) == ("booted", "http")
    assert URL in client.verdict.cause


def test_refused_reset_and_garbage(tmp_path: Path) -> None:
    cap = Capture()
    cap.tcp(CLIENT, PROXY, 40002, 8081, 100, SYN)
    cap.tcp(PROXY, CLIENT, 8081, 40002, 0, RST)
    _get(
        cap, 40003, "/big.bin", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100, [(RST, b"")]
    )
    cap.tcp(CLIENT, PROXY, 40004, 8080, 100, SYN)
    cap.tcp(PROXY, CLIENT, 8080, 40004, 500, SYNACK)
    cap.tcp(CLIENT, PROXY, 40004, 8080, 101, PSH, b"\x16\x03\x01 not http at all\r\n\r\n")
    exchanges, _ = read_exchanges(cap.write(tmp_path / "c.pcap"))
    outcomes = {e.port: (e.outcome, e.received, e.expected) for e in exchanges}
    assert outcomes == {8081: ("refused", 0, None), 8080: ("reset", 100, 1000)}
