"""HTTP requests in a capture (UEFI HTTP boot, iPXE over HTTP): each TCP connection to a server
followed, its requests and responses read, and what became of each: answered, an error status
(404...), a connection refused (SYN answered by RST) or never answered, reset mid-answer, or a
stalled transfer (the body stops short of its Content-Length and the connection goes quiet).

Pure apart from reading the file, as the rest of `diagnose`. Only IPv4 TCP; segments are taken in
sequence order per direction (retransmissions dropped, a gap ends the stream's parsing). `attach`
adds the results to a Report: HTTP findings for the client with that address, and an HTTP-stage
verdict when HTTP decides the boot.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

import dpkt

from proxydhcp.diagnose.capture import ETH_IPV4, SUPPORTED_LINKTYPES, _link_to_ip, _open_reader
from proxydhcp.diagnose.checks import TIMEOUT_S, Finding, Verdict

if TYPE_CHECKING:
    from proxydhcp.diagnose.report import Report

IPPROTO_TCP = 6
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
MAX_HEAD = 16 * 1024  # a request or response head longer than this is not followed
MAX_FLOWS = 10_000
_REQUEST_LINE = re.compile(rb"^([A-Z]{3,10}) (\S+) HTTP/1\.[01]\r?$")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")


@dataclass(slots=True)
class Exchange:
    """One request on a connection and what came back."""

    client: IPv4Address
    server: IPv4Address
    port: int
    ts: float
    method: str = ""
    target: str = ""
    status: int | None = None
    expected: int | None = None  # Content-Length of the response body
    received: int = 0
    outcome: str = (
        "unanswered"  # ok | http-error | refused | no-answer | reset | stalled | truncated | unanswered
    )
    last_ts: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.server}:{self.port}{self.target}"


@dataclass(slots=True)
class _Stream:
    next_seq: int | None = None
    data: bytearray = field(default_factory=bytearray)
    gap: bool = False
    last_ts: float = 0.0

    def add(self, seq: int, payload: bytes, ts: float, syn: bool) -> None:
        if syn:
            self.next_seq = (seq + 1) & 0xFFFFFFFF
            return
        if not payload or self.gap:
            return
        if self.next_seq is None:  # the capture began mid-connection
            self.next_seq = seq
        offset = (seq - self.next_seq) & 0xFFFFFFFF
        if offset == 0:
            self.data += payload
            self.next_seq = (seq + len(payload)) & 0xFFFFFFFF
            self.last_ts = ts
        elif offset < 0x80000000:
            self.gap = True  # a segment missing from the capture: stop here rather than guess
        else:  # a retransmission, or overlapping one: keep only what is new
            behind = (self.next_seq - seq) & 0xFFFFFFFF
            if behind < len(payload):
                self.data += payload[behind:]
                self.next_seq = (seq + len(payload)) & 0xFFFFFFFF
                self.last_ts = ts


@dataclass(slots=True)
class _Flow:
    client: IPv4Address
    cport: int
    server: IPv4Address
    sport: int
    syn_ts: float
    syns: int = 0
    syn_ack: bool = False
    rst_from_server_ts: float | None = None
    rst_from_client: bool = False
    fin_from_server: bool = False
    up: _Stream = field(default_factory=_Stream)
    down: _Stream = field(default_factory=_Stream)
    last_ts: float = 0.0


def read_exchanges(path: Path, ports: frozenset[int] | None = None) -> tuple[list[Exchange], float]:
    """Every HTTP exchange in the capture (connections to `ports`, default: any port whose traffic
    parses as HTTP) and the capture's last timestamp. Raises CaptureError as `read_datagrams`."""
    flows: dict[tuple[IPv4Address, int, IPv4Address, int], _Flow] = {}
    last = 0.0
    with path.open("rb") as fh:
        reader = _open_reader(fh, path)
        linktype = int(reader.datalink())
        if linktype not in SUPPORTED_LINKTYPES:
            return [], 0.0
        records = iter(reader)
        while True:
            try:
                ts, buf = next(records)
            except StopIteration:
                break
            except (dpkt.Error, ValueError, struct.error, EOFError, IndexError):
                break
            last = float(ts)
            _feed(flows, linktype, float(ts), bytes(buf), ports)
    out: list[Exchange] = []
    for flow in flows.values():
        out += _exchanges(flow, last)
    out.sort(key=lambda e: e.ts)
    return out, last


def _feed(
    flows: dict[tuple[IPv4Address, int, IPv4Address, int], _Flow],
    linktype: int,
    ts: float,
    buf: bytes,
    ports: frozenset[int] | None,
) -> None:
    link = _link_to_ip(linktype, buf)
    if link is None or link[0] != ETH_IPV4:
        return
    ip = link[1]
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != IPPROTO_TCP:
        return
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    if struct.unpack_from("!H", ip, 6)[0] & 0x3FFF or len(ip) < ihl + 20:
        return
    tcp = ip[ihl : min(len(ip), total) if total >= ihl else len(ip)]
    if len(tcp) < 20:
        return
    sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
    offset = (tcp[12] >> 4) * 4
    flags = tcp[13]
    payload = tcp[offset:] if offset >= 20 else b""
    src, dst = IPv4Address(ip[12:16]), IPv4Address(ip[16:20])
    up_key = (src, sport, dst, dport)
    down_key = (dst, dport, src, sport)
    if flags & _SYN and not flags & _ACK:  # a connection opens (or a SYN is retried)
        if ports is not None and dport not in ports:
            return
        flow = flows.get(up_key)
        if flow is None or flow.rst_from_server_ts is not None or flow.fin_from_server:
            if len(flows) >= MAX_FLOWS:
                return
            flow = flows[up_key] = _Flow(src, sport, dst, dport, ts)
        flow.syns += 1
        flow.up.add(seq, b"", ts, True)
        flow.last_ts = ts
        return
    flow = flows.get(up_key)
    upstream = flow is not None
    if flow is None:
        flow = flows.get(down_key)
        if flow is None:
            return
    flow.last_ts = ts
    if upstream:
        if flags & _RST:
            flow.rst_from_client = True
        flow.up.add(seq, payload, ts, False)
        return
    if flags & _SYN:
        flow.syn_ack = True
        flow.down.add(seq, b"", ts, True)
        return
    if flags & _RST:
        flow.rst_from_server_ts = ts
    if flags & _FIN:
        flow.fin_from_server = True
    flow.down.add(seq, payload, ts, False)


def _heads(data: bytes) -> list[tuple[bytes, int]]:
    """(head, offset of what follows it) for each message head in `data`, in order."""
    out = []
    at = 0
    while at < len(data):
        end = data.find(b"\r\n\r\n", at, at + MAX_HEAD)
        if end < 0:
            break
        out.append((data[at:end], end + 4))
        at = end + 4
    return out


def _exchanges(flow: _Flow, capture_end: float) -> list[Exchange]:
    if not flow.syn_ack:
        ex = Exchange(flow.client, flow.server, flow.sport, flow.syn_ts, last_ts=flow.last_ts)
        ex.outcome = "refused" if flow.rst_from_server_ts is not None else "no-answer"
        return [ex]
    requests: list[Exchange] = []
    for head, _ in _heads(bytes(flow.up.data)):
        line = head.split(b"\n", 1)[0]
        match = _REQUEST_LINE.match(line)
        if match is None:
            return []  # not HTTP (or not HTTP/1.x): not ours to judge
        requests.append(
            Exchange(
                flow.client,
                flow.server,
                flow.sport,
                flow.syn_ts,
                method=match.group(1).decode(),
                target=match.group(2).decode("ascii", "replace"),
            )
        )
    data = bytes(flow.down.data)
    at = 0
    for ex in requests:
        end = data.find(b"\r\n\r\n", at, at + MAX_HEAD)
        if end < 0:
            ex.outcome = _cut(flow, capture_end, responded=False)
            ex.last_ts = flow.last_ts
            continue
        head = data[at:end]
        match = _STATUS_LINE.match(head)
        if match is None:
            break
        ex.status = int(match.group(1))
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
        ex.expected = int(length.group(1)) if length else None
        body_start = end + 4
        no_body = ex.method == "HEAD" or ex.status in (204, 304) or 100 <= ex.status < 200
        want = 0 if no_body else (ex.expected if ex.expected is not None else len(data) - body_start)
        ex.received = min(want, len(data) - body_start)
        at = body_start + ex.received
        ex.last_ts = flow.down.last_ts
        if ex.received < want:
            ex.outcome = _cut(flow, capture_end, responded=True)
        else:
            ex.outcome = "http-error" if ex.status >= 400 else "ok"
    return requests


def _cut(flow: _Flow, capture_end: float, *, responded: bool) -> str:
    """Why an answer stops short: reset, closed early, stalled, or the capture ended first."""
    if flow.rst_from_server_ts is not None or flow.rst_from_client:
        return "reset"
    if flow.fin_from_server:
        return "truncated"
    # Window probes and ACKs keep a stalled connection busy: progress is the last byte of data.
    if capture_end - max(flow.down.last_ts, flow.syn_ts) >= TIMEOUT_S:
        return "stalled"
    return "unanswered" if not responded else "in-progress"


# outcome → (finding key, cause, fix)
_FAILURES: dict[str, tuple[str, str, str]] = {
    "http-error": (
        "http-status",
        "the HTTP server answered {status} for {url}",
        "put the file at that path under the HTTP root (proxydhcp: --http-root, default the TFTP root), "
        "or fix the boot file name / URL in the boot table",
    ),
    "refused": (
        "http-refused",
        "connection to {server}:{port} refused (RST to the SYN): no HTTP server listening there",
        "start the HTTP server (proxydhcp serve --http-port N, or proxydhcp http) on that address and "
        "port, or fix the port in the URL; check a firewall that rejects TCP {port}",
    ),
    "no-answer": (
        "http-no-answer",
        "no answer to the connection to {server}:{port} (SYN unanswered)",
        "check the route to {server} and any firewall dropping TCP {port}; is the server up?",
    ),
    "reset": (
        "http-reset",
        "the connection was reset during {method} {url} ({received} of {expected} bytes)",
        "look at the server's log for that request (proxydhcp logs outcome=timeout when a client stops "
        "reading); a reset from the client side means the firmware gave up (memory, size limits)",
    ),
    "truncated": (
        "http-truncated",
        "the server closed the connection after {received} of {expected} bytes of {url}",
        "the file may have changed or shrunk while it was sent; check the server's log and disk",
    ),
    "stalled": (
        "http-stalled",
        "the transfer of {url} stalled after {received} of {expected} bytes",
        "look for packet loss or a middlebox on the path; the server resets a client that stops reading "
        "(send_timeout), a client that stops acknowledging is usually out of memory",
    ),
}


def _describe(ex: Exchange, template: str) -> str:
    return template.format(
        status=ex.status,
        url=ex.url,
        server=ex.server,
        port=ex.port,
        method=ex.method or "request",
        received=ex.received,
        expected="?" if ex.expected is None else ex.expected,
    )


def judge(exchanges: list[Exchange]) -> tuple[Verdict, list[Finding]] | None:
    """The HTTP stage of one client: None when it made no HTTP request; else its verdict (from the
    last decisive exchange) and a finding per failed exchange."""
    if not exchanges:
        return None
    findings: list[Finding] = []
    last: Exchange | None = None
    for ex in exchanges:
        if ex.outcome in _FAILURES:
            key, cause, _ = _FAILURES[ex.outcome]
            findings.append(Finding(key, "error", _describe(ex, cause)))
        if ex.outcome in _FAILURES or ex.outcome == "ok":
            last = ex
    if last is None:
        return None
    if last.outcome == "ok":
        fetched = [e for e in exchanges if e.outcome == "ok" and e.method == "GET"]
        what = fetched[-1].url if fetched else last.url
        return Verdict("booted", "http", None, f"fetched {what} over HTTP", ""), findings
    key, cause, fix = _FAILURES[last.outcome]
    return Verdict("failed", "http", None, _describe(last, cause), _describe(last, fix), key), findings


def attach(report: Report, path: Path) -> None:
    """Add what HTTP shows to `report`: per client (by its addresses), the HTTP findings, and the
    HTTP-stage verdict when HTTP failed, or when it succeeded and DHCP/TFTP alone did not say booted."""
    exchanges, _ = read_exchanges(path)
    if not exchanges:
        return
    by_client: dict[IPv4Address, list[Exchange]] = {}
    for ex in exchanges:
        by_client.setdefault(ex.client, []).append(ex)
    seen: set[IPv4Address] = set()
    for cr in report.clients:
        mine = [e for a in cr.client.addresses for e in by_client.get(a, [])]
        seen.update(cr.client.addresses)
        judged = judge(sorted(mine, key=lambda e: e.ts))
        if judged is None:
            continue
        verdict, findings = judged
        cr.findings.extend(Finding(f.check, f.severity, f.message, cr.client.mac) for f in findings)
        if verdict.verdict == "failed" or cr.verdict.verdict != "booted":
            cr.verdict = verdict
    for address, mine in by_client.items():
        if address in seen:
            continue
        judged = judge(mine)
        if judged is not None:
            verdict, _ = judged
            report.notes.append(f"HTTP client {address} (no DHCP seen): {verdict.verdict}: {verdict.cause}")
