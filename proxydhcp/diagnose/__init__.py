"""`proxydhcp diagnose`: a packet capture → per-client timeline → why each PXE boot did (not) work.

Pure apart from reading the file: the DHCP and TFTP codecs are the ones `serve` runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from proxydhcp.diagnose import dhcp6
from proxydhcp.diagnose.capture import CaptureError, CaptureStats, read_datagrams
from proxydhcp.diagnose.checks import Finding, Verdict, client_findings, judge
from proxydhcp.diagnose.report import ClientReport, Report
from proxydhcp.diagnose.timeline import Timeline

__all__ = ["CaptureError", "Finding", "Report", "Verdict", "build_report", "diagnose", "stderr_progress"]


def build_report(timeline: Timeline, stats: CaptureStats, name: str) -> Report:
    """Judge every client of a finished timeline."""
    report = Report(capture=name, stats=stats)
    end = timeline.last_ts if timeline.last_ts is not None else 0.0
    for client in sorted(timeline.clients.values(), key=lambda c: (c.first_ts, c.mac or "")):
        verdict = judge(client, end)
        report.clients.append(
            ClientReport(client, verdict, client_findings(client, verdict, stats.fragment_pairs))
        )
    if stats.truncated:
        report.notes.append("the capture is truncated (the last record is cut off)")
    if timeline.malformed_dhcp:
        report.notes.append(
            f"{timeline.malformed_dhcp} DHCP datagram(s) could not be decoded and were skipped"
        )
    if timeline.malformed_tftp:
        report.notes.append(
            f"{timeline.malformed_tftp} TFTP datagram(s) could not be decoded and were skipped"
        )
    if stats.cut_short:
        report.notes.append(
            f"{stats.cut_short} datagram(s) cut short by the capture's snap length: their sizes were "
            "taken from the UDP header"
        )
    if stats.ipv4_fragments:
        report.notes.append(f"{stats.ipv4_fragments} IPv4 fragment(s) seen (not reassembled)")
    # IPv6 network boot (DHCPv6, RFC 5970): the same verdict fields, one report entry per client.
    for client6 in dhcp6.build_clients(stats.datagrams6):
        verdict = dhcp6.judge6(client6)
        report.clients.append(ClientReport(client6.base, verdict, dhcp6.findings6(client6, verdict)))
    if stats.dhcpv6 and not any(c.client.vendor_class for c in report.clients if c.client.arch is not None):
        report.notes.append(f"{stats.dhcpv6} DHCPv6 datagram(s), none from a PXE or HTTP boot client")
    if timeline.dhcp_packets == 0:
        report.notes.append("no DHCPv4 message in this capture")
    return report


def diagnose(path: Path, progress: Callable[[int, int], None] | None = None) -> Report:
    """Read a pcap/pcapng capture and diagnose every client in it. Raises CaptureError."""
    stats = CaptureStats()
    timeline = Timeline()
    for datagram in read_datagrams(path, stats, progress):
        timeline.feed(datagram)
    report = build_report(timeline, stats, path.name)
    from proxydhcp.diagnose import http  # HTTP boot: the TCP side of the same capture

    http.attach(report, path)
    return report


def stderr_progress() -> Callable[[int, int], None] | None:
    """A one-line progress bar on stderr, only when stderr is a terminal (never in pipes or logs)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        pct = min(100, done * 100 // max(total, 1))
        bar = "#" * (pct // 4)
        sys.stderr.write(f"\rreading capture [{bar:<25}] {pct:3d}%")
        if pct >= 100:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
