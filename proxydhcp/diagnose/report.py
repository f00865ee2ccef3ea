"""The diagnosis as data (`Report.to_json`) and as text (`Report.render_text`).

JSON field names are a contract (scripts rely on them): clients[].mac, firmware, verdict, step,
pxe_error, cause, fix, timeline; top-level findings[] of {check, severity, message}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxydhcp.diagnose.capture import CaptureStats
from proxydhcp.diagnose.checks import Finding, Verdict, family, firmware_text
from proxydhcp.diagnose.timeline import Client, Responder, Transfer

LINKTYPE_NAMES = {
    0: "BSD loopback",
    1: "Ethernet",
    12: "raw IP",
    101: "raw IP",
    113: "Linux cooked (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked (SLL2)",
}


@dataclass(slots=True)
class ClientReport:
    client: Client
    verdict: Verdict
    findings: list[Finding]


@dataclass(slots=True)
class Report:
    capture: str
    stats: CaptureStats
    clients: list[ClientReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for c in self.clients for f in c.findings]

    def _t(self, ts: float) -> float:
        return round(ts - (self.stats.first_ts or 0.0), 6)

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "capture": self.capture,
            "link_type": LINKTYPE_NAMES.get(self.stats.linktype, str(self.stats.linktype)),
            "frames": self.stats.frames,
            "notes": list(self.notes),
            "clients": [self._client_json(c) for c in self.clients],
            "findings": [_finding_json(f) for f in self.findings],
        }

    def _client_json(self, cr: ClientReport) -> dict[str, Any]:
        c, v = cr.client, cr.verdict
        return {
            "mac": c.mac,
            "addresses": [str(a) for a in c.addresses],
            "firmware": family(c),
            "firmware_detail": firmware_text(c),
            "arch": c.arch,
            "ipxe": c.ipxe,
            "vendor_class": c.vendor_class or None,
            "verdict": v.verdict,
            "step": v.step,
            "pxe_error": v.pxe_error,
            "cause": v.cause,
            "fix": v.fix or None,
            "timeline": [
                {
                    "t": self._t(e.ts),
                    "frame": e.frame,
                    "event": e.kind,
                    "src": e.src,
                    "dst": e.dst,
                    "detail": e.detail,
                }
                for e in c.events
            ],
            "timeline_dropped": c.dropped_events,
            "responders": [_responder_json(r) for r in c.responders.values()],
            "tftp": [self._transfer_json(t) for t in c.transfers],
            "findings": [_finding_json(f) for f in cr.findings],
        }

    def _transfer_json(self, t: Transfer) -> dict[str, Any]:
        return {
            "file": t.filename,
            "client": f"{t.client}:{t.client_port}",
            "server": str(t.server),
            "server_port": t.server_port,
            "requested": t.requested,
            "oack": t.oack,
            "blksize": t.blksize,
            "bytes": t.bytes,
            "blocks": t.blocks,
            "duration": round(t.duration, 6),
            "rrq_count": t.rrq_count,
            "retransmits": t.retransmits,
            "complete": t.complete,
            "size_probe": t.probe,
            "error": None
            if t.error is None
            else {"code": t.error[0], "message": t.error[1], "from_client": t.error_from_client},
            "start": self._t(t.first_ts),
        }

    # -- text ------------------------------------------------------------------------------------
    def render_text(self) -> str:
        s = self.stats
        lines = [
            f"capture {self.capture}: {s.frames} frames, "
            f"{LINKTYPE_NAMES.get(s.linktype, str(s.linktype))}, {len(self.clients)} client(s)"
        ]
        lines += [f"note: {n}" for n in self.notes]
        for cr in self.clients:
            lines.append("")
            lines += self._client_text(cr)
        return "\n".join(lines) + "\n"

    def _client_text(self, cr: ClientReport) -> list[str]:
        c, v = cr.client, cr.verdict
        addr = f"  ip {', '.join(map(str, c.addresses))}" if c.addresses else ""
        out = [f"client {c.mac or 'unknown MAC'}  ({firmware_text(c)}){addr}"]
        head = f"  verdict: {v.verdict.upper()} at {v.step}" if v.verdict != "booted" else "  verdict: BOOTED"
        out.append(head + (f"  (firmware most likely showed {v.pxe_error})" if v.pxe_error else ""))
        out.append(f"  cause: {v.cause}")
        if v.fix:
            out.append(f"  fix: {v.fix}")
        out.append("  timeline:")
        for e in c.events:
            out.append(
                f"    {self._t(e.ts):9.3f}s  #{e.frame:<5} {e.kind:<10} {e.src} -> {e.dst}  {e.detail}"
            )
        if c.dropped_events:
            out.append(f"    ... {c.dropped_events} more events not shown")
        if c.responders:
            out.append("  responders:")
            out += [f"    {_responder_text(r)}" for r in c.responders.values()]
        if c.transfers:
            out.append("  tftp:")
            out += [f"    {_transfer_text(t)}" for t in c.transfers]
        if cr.findings:
            out.append("  findings:")
            out += [f"    [{f.severity}] {f.check}: {f.message}" for f in cr.findings]
        return out


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"check": f.check, "severity": f.severity, "message": f.message, "mac": f.mac}


def _responder_json(r: Responder) -> dict[str, Any]:
    return {
        "server": str(r.server),
        "source": str(r.src),
        "role": "dhcp" if r.address_granting else "proxy" if r.pxe else "other",
        "offers": r.offers,
        "acks": r.acks,
        "acks_4011": r.acks_4011,
        "naks": r.naks,
        "yiaddr": str(r.yiaddr),
        "siaddr": str(r.siaddr),
        "option_54": r.has_54,
        "option_60": r.vendor_class or None,
        "option_43": list(r.sub43) if r.sub43 is not None else None,
        "option_66": r.opt66 or None,
        "option_67": r.opt67 or None,
        "file": r.file or None,
        "echoed_97": r.echoed_97,
        "min_size": r.min_size,
    }


def _responder_text(r: Responder) -> str:
    role = (
        "DHCP server (grants addresses)"
        if r.address_granting
        else "proxyDHCP"
        if r.pxe
        else "DHCP (no address)"
    )
    parts = [f"{r.server}  {role}:"]
    if r.address_granting:
        parts.append(f"yiaddr {r.yiaddr}")
    parts.append(f"siaddr {r.siaddr if int(r.siaddr) else '-'}")
    parts.append(f"60 {r.vendor_class or '-'}")
    parts.append("43 " + (",".join(map(str, r.sub43)) if r.sub43 else "-" if r.sub43 is None else "(empty)"))
    parts.append(f"66 {r.opt66 or '-'}")
    parts.append(f"67 {r.opt67 or '-'}")
    parts.append(f"file {r.file or '-'}")
    if r.pxe:
        parts.append("97 echoed" if r.echoed_97 else "97 NOT echoed")
    counts = [
        f"{n} {label}"
        for n, label in ((r.offers, "offer"), (r.acks, "ack"), (r.acks_4011, "4011-ack"), (r.naks, "nak"))
        if n
    ]
    return " ".join(parts) + (f"  [{', '.join(counts)}]" if counts else "")


def _transfer_text(t: Transfer) -> str:
    head = f"{t.filename} from {t.server}"
    if t.requested:
        head += "  asked " + " ".join(f"{k}={v}" for k, v in t.requested.items())
    if t.oack is not None:
        head += "  oack " + (" ".join(f"{k}={v}" for k, v in t.oack.items()) or "(empty)")
    if t.probe:
        state = "size probe (aborted by the client after the OACK: normal)"
    elif t.complete:
        state = f"complete: {t.bytes} bytes in {t.blocks} blocks, {t.duration:.3f}s"
    elif t.error is not None:
        who = "client" if t.error_from_client else "server"
        state = f"{who} error {t.error[0]} ({t.error[1]}) after {t.bytes} bytes"
    elif not t.answered:
        state = f"unanswered ({t.rrq_count} request(s))"
    else:
        state = f"incomplete: {t.bytes} bytes in {t.blocks} blocks"
    extra = []
    if t.rrq_count > 1 and t.answered:
        extra.append(f"{t.rrq_count} RRQs")
    if t.retransmits:
        extra.append(f"{t.retransmits} retransmitted DATA")
    if t.dup_acks:
        extra.append(f"{t.dup_acks} duplicate ACKs")
    return f"{head}  -> {state}" + (f" ({', '.join(extra)})" if extra else "")
