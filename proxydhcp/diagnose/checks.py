"""Verdict engine: one client's summary → booted / failed / incomplete, the likely PXE error, cause, fix.

The checks follow PROTOCOL.md §4.4. BIOS (Intel PXE) and UEFI (EDK II) print different codes for
the same failure (§4.1 vs §4.2), so the code is chosen by the client's firmware family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from proxydhcp.chains import LoaderKind, harmless_missing, loader_kind
from proxydhcp.dhcp.arch import describe_arch, is_uefi
from proxydhcp.diagnose.timeline import Client, DhcpMark, Responder, Transfer

# Waiting this long after the last packet without progress counts as a timeout, not a cut capture.
TIMEOUT_S = 4.0
ETHERNET_MTU = 1500
BIOS_MAX_BLKSIZE = 1456  # Intel ROMs: PXE-E3F above this (PROTOCOL.md §4.1)


def _unanswered_for_good(tries: int, last_ts: float, end: float) -> bool:
    """Whether a request nothing answered is a failure rather than a capture cut short: the client
    asked again, or the capture went on for TIMEOUT_S after its last try."""
    return tries >= 2 or end - last_ts >= TIMEOUT_S


# failure key → (BIOS code, UEFI code)
PXE_ERRORS: dict[str, tuple[str | None, str | None]] = {
    "no-offer": ("PXE-E51", "PXE-E16"),
    "only-proxy-offers": ("PXE-E52", "PXE-E16"),
    "no-boot-filename": ("PXE-E53", "PXE-E16"),
    "4011-unanswered": ("PXE-E55", "PXE-E16"),
    "4011-no-boot-file": ("PXE-E53", "PXE-E16"),
    "uefi-pxe10-discarded": (None, "PXE-E16"),
    "offers-ignored": ("PXE-E51", "PXE-E18"),
    "dhcp-nak": ("PXE-E51", "PXE-E18"),
    "declined": (None, "PXE-E09"),
    "tftp-open-timeout": ("PXE-E32", "PXE-E18"),
    "tftp-read-timeout": ("PXE-E35", "PXE-E18"),
    "tftp-packet-size": ("PXE-E3F", "PXE-E18"),
    "tftp-file-not-found": ("PXE-E3B", "PXE-E23"),
    "tftp-access-violation": ("PXE-E3C", "PXE-E23"),
    "tftp-error": ("PXE-E36", "PXE-E23"),
    "tftp-client-abort": (None, None),
}


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    severity: str  # error | warning | info
    message: str
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str  # booted | failed | incomplete
    step: str
    pxe_error: str | None
    cause: str
    fix: str
    failure: str | None = None  # the check key that explains a failure


def family(client: Client) -> str:
    if client.arch is None:
        return "unknown"
    return "uefi" if is_uefi(client.arch) else "bios"


def firmware_text(client: Client) -> str:
    if client.arch is None and not client.vendor_class:
        return "unknown firmware"
    text = describe_arch(client.arch)
    if client.ipxe:
        text += ", iPXE"
    return text


def is_pxe_client(client: Client) -> bool:
    return client.vendor_class.startswith(("PXEClient", "HTTPClient")) or client.arch is not None


def _code(client: Client, key: str) -> str | None:
    bios, uefi = PXE_ERRORS[key]
    return uefi if family(client) == "uefi" else bios


def _fail(client: Client, key: str, step: str, cause: str, fix: str) -> Verdict:
    return Verdict("failed", step, _code(client, key), cause, fix, key)


def _incomplete(step: str, cause: str, fix: str = "") -> Verdict:
    return Verdict("incomplete", step, None, cause, fix)


# The causes and fixes of the failures after a boot file was fetched (issues 13, 17, 19: verbatim).
NOT_RUN_CAUSE = (
    "the firmware did not run the boot file: Secure Boot rejected an unsigned or untrusted loader, "
    "or the architecture is wrong"
)
NOT_RUN_FIX = (
    "use a signed shim chain (or iPXE signed with a key enrolled in the firmware's db), and check that "
    "the boot file is built for the client's architecture"
)
GRUB_STOP_CAUSE = "GRUB does not read proxy offers: it takes its server from the DHCP server's ACK"
GRUB_STOP_FIX = (
    "set next-server on the DHCP server for PXE clients, use a GRUB with proxy support, or use the "
    "site-key iPXE chain"
)


def judge(client: Client, capture_end: float) -> Verdict:
    """The verdict for one client; `capture_end` is the time of the capture's last packet."""
    real = [t for t in client.transfers if not t.probe]
    done = [t for t in real if t.complete]
    if done:
        after = _judge_after(client, done[-1], real, capture_end)
        if after is not None:
            return after
    for i, t in enumerate(real):
        later = [u for u in real[i + 1 :] if u.filename != t.filename]
        if t.complete and later:
            return Verdict(
                "booted",
                "second stage",
                None,
                f"fetched {t.filename} ({t.bytes} bytes from {t.server}) and then requested "
                f"{later[0].filename}",
                "",
            )
    done = [t for t in real if t.complete]
    if done:
        t = done[-1]
        return _incomplete(
            "second stage",
            f"fetched the boot file {t.filename} ({t.bytes} bytes from {t.server}) but no second-stage "
            "request followed before the capture ended",
            "capture longer, or check the console: the boot program may fetch over HTTP or stop on its own",
        )
    if real:
        return _judge_tftp(client, real[0], capture_end)
    if client.transfers:
        return _incomplete(
            "tftp", f"only the size probe of {client.transfers[0].filename} was seen, not the real read"
        )
    return _judge_dhcp(client, capture_end)


def _harmless(t: Transfer) -> bool:
    """A 'not found' for a file the loader probes for and does without (shim, GRUB, pxelinux)."""
    not_found = t.error is not None and t.error[0] == 1 and not t.error_from_client
    return not_found and harmless_missing(t.filename)


def _judge_after(client: Client, last: Transfer, real: list[Transfer], end: float) -> Verdict | None:
    """What became of the last file fetched completely: the program asked for files that all failed,
    the firmware refused it, GRUB found no server, or iPXE's own DHCP failed. None: nothing to say
    beyond the usual verdict (booted, or a capture that ended early)."""
    same = [t for t in real if t.complete and t.filename == last.filename]
    if len(same) >= 2 and any(
        m.request and m.ipxe and same[0].last_ts < m.ts < same[1].first_ts for m in client.marks
    ):
        return Verdict(
            "failed",
            "ipxe",
            None,
            f"chainload loop: {last.filename} was fetched {len(same)} times, and iPXE's own DHCP request "
            "(user class iPXE) in between got the iPXE binary again instead of a script",
            'answer iPXE with a script: [boot] ipxe = "boot.ipxe" (proxydhcp does this unless a [[host]] '
            "entry, which outranks it, names the iPXE binary)",
            "chainload-loop",
        )
    later = [t for t in real if t.first_ts > last.first_ts]
    if later:
        wanted = [t for t in later if not _harmless(t)]
        if wanted and not any(t.complete for t in wanted):
            verdict = _judge_tftp(client, wanted[0], end)
            if verdict.verdict == "failed":
                return replace(  # the firmware's part is done: no PXE-Exx from it
                    verdict,
                    step="second stage",
                    pxe_error=None,
                    cause=f"{last.filename} ran and asked for more; {verdict.cause}",
                )
        return None
    marks = [m for m in client.marks if m.ts > last.last_ts]
    fetched = f"{last.filename} ({last.bytes} bytes from {last.server}) was fetched completely"
    # The loaded program's own first request, or the firmware starting over: a DISCOVER without
    # iPXE's user class as the first request after the file means the file never ran.
    first = next((m for m in marks if m.request), None)
    firmware = first if first is not None and first.kind == "DISCOVER" and not first.ipxe else None
    if firmware is not None:
        path = (
            f"arch {firmware.arch}" + (f", {firmware.vendor.split(':')[0]}" if firmware.vendor else "")
            if firmware.arch is not None
            else "the next boot option"
        )
        return Verdict(
            "failed",
            "boot file",
            None,
            f"{NOT_RUN_CAUSE}; {fetched}, then no request came from it and the firmware sent a new "
            f"DISCOVER ({path}): its next boot path or a retry",
            NOT_RUN_FIX,
            "boot-file-not-run",
        )
    # No `quiet` here: a network GRUB that has a server asks for its files within a second of being
    # loaded (0.7-0.9 s under QEMU TCG), and a capture rarely shows the silence after the last packet.
    if loader_kind(last.filename) is LoaderKind.GRUB and not marks:
        lease = client.responders.get(client.lease_server) if client.lease_server else None
        seen = (
            f" (the DHCP server {lease.server}'s ACK has siaddr {lease.siaddr})" if lease is not None else ""
        )
        return Verdict(
            "failed",
            "grub",
            None,
            f"{GRUB_STOP_CAUSE}; {fetched} and then this client sent no further request{seen}",
            GRUB_STOP_FIX,
            "grub-no-server",
        )
    if any(m.request and m.ipxe for m in marks):
        return _judge_ipxe_dhcp(client, last, marks, end)
    return None


def _judge_ipxe_dhcp(client: Client, last: Transfer, marks: list[DhcpMark], end: float) -> Verdict | None:
    """iPXE's own DHCP, after the firmware loaded it: the same failures as at the firmware stage.
    iPXE's part ends where the firmware sends its own DISCOVER again (iPXE gave up and returned)."""
    gave_up = next((m for m in marks if m.request and m.kind == "DISCOVER" and not m.ipxe), None)
    if gave_up is not None:
        marks = [m for m in marks if m.ts < gave_up.ts]
    quiet = gave_up is not None or end - max([last.last_ts, *(m.ts for m in marks)]) >= TIMEOUT_S
    asks = [r for r in client.req4011.values() if r.first_ts > last.last_ts]
    if asks and not any(r.answered for r in asks):
        r = max(asks, key=lambda q: q.count)
        if _unanswered_for_good(r.count, r.last_ts, end):
            resp = client.responders.get(r.server)
            if resp is not None and resp.address_granting and resp.pxe:
                return Verdict(
                    "failed",
                    "ipxe",
                    None,
                    f"the DHCP server {r.server} announces PXEClient (option 60) but nothing answers on its "
                    f"port 4011: iPXE asked {r.server}:4011 for its boot file {r.count} times after loading "
                    f"{last.filename} (a co-located set-up without the co-located proxy, or option 60 set "
                    "on the wrong server)",
                    f"run a port-4011 responder on {r.server} (proxydhcp serve --colocated), or stop sending "
                    "option 60 from the DHCP server and run a proxyDHCP on the segment",
                    "4011-unanswered",
                )
            return Verdict(
                "failed",
                "ipxe",
                None,
                f"iPXE asked the boot server {r.server} on port 4011 {r.count} times after loading "
                f"{last.filename} and got no answer",
                f"make sure the proxy on {r.server} listens on UDP 4011 and that a firewall lets port 4011 "
                "through",
                "4011-unanswered",
            )
        return None
    asked = [m for m in marks if m.request and m.kind == "DISCOVER"]
    replies = [m for m in marks if not m.request]
    if not replies and (len(asked) >= 2 or quiet):
        return Verdict(
            "failed",
            "ipxe",
            None,
            f"iPXE (loaded as {last.filename}) sent {len(asked)} DISCOVER(s) and nothing answered",
            "check that the DHCP server and the proxy answer this segment after the firmware stage "
            "(a switch port coming up late, spanning tree, a DHCP snooping limit)",
            "no-offer",
        )
    if replies and quiet and not any(m.boot_file for m in replies) and not asks:
        return Verdict(
            "failed",
            "ipxe",
            None,
            f"iPXE (loaded as {last.filename}) got DHCP answers without a boot file: nothing named a "
            "script for clients running iPXE (user class iPXE), so iPXE has nothing to boot",
            'give iPXE a script: [boot] ipxe = "boot.ipxe" on the proxy (or a filename for user class '
            "iPXE on the DHCP server)",
            "ipxe-no-boot-file",
        )
    return None


def _judge_tftp(client: Client, t: Transfer, end: float) -> Verdict:
    name = f"{t.filename} from {t.server}"
    if t.error is not None and not t.error_from_client:
        code, msg = t.error
        if code == 1:
            return _fail(
                client,
                "tftp-file-not-found",
                "tftp",
                f"the TFTP server {t.server} answered 'file not found' for {t.filename!r} ({msg})",
                f"put {t.filename} under the TFTP root of {t.server}, or fix the boot file name "
                "(path and case) in the proxy/DHCP configuration",
            )
        if code == 2:
            return _fail(
                client,
                "tftp-access-violation",
                "tftp",
                f"the TFTP server {t.server} refused {t.filename!r}: access violation ({msg})",
                "make the file world-readable and inside the TFTP root",
            )
        return _fail(
            client,
            "tftp-error",
            "tftp",
            f"the TFTP server {t.server} sent error {code} ({msg}) for {t.filename!r}",
            "read the TFTP server's log for this request",
        )
    if t.error is not None:
        return _fail(
            client,
            "tftp-client-abort",
            "tftp",
            f"the client aborted the transfer of {name} ({t.error[1]})",
            "check the file size and the negotiated options (blksize, tsize) against the firmware",
        )
    if not t.answered:
        if _unanswered_for_good(t.rrq_count, t.last_ts, end):
            return _fail(
                client,
                "tftp-open-timeout",
                "tftp",
                f"the read request for {name} was never answered ({t.rrq_count} tries)",
                f"start a TFTP server on {t.server} (or point siaddr/option 66 at one) and let UDP 69 "
                "and the ephemeral reply ports through the firewall",
            )
        return _incomplete("tftp", f"the read request for {name} was not answered before the capture ended")
    big = t.blksize + 32 > ETHERNET_MTU or (family(client) != "uefi" and t.blksize > BIOS_MAX_BLKSIZE)
    if big and t.blocks == 0:
        return _fail(
            client,
            "tftp-packet-size",
            "tftp",
            f"blksize {t.blksize} was granted for {name} and no DATA arrived: the blocks are too "
            "large for the link or the firmware",
            "cap the TFTP block size at the MTU minus 32 (1468 on Ethernet), or 1432 for old ROMs",
        )
    if t.retransmits or end - t.last_ts >= TIMEOUT_S:
        return _fail(
            client,
            "tftp-read-timeout",
            "tftp",
            f"the transfer of {name} stalled after {t.blocks} blocks ({t.bytes} bytes, "
            f"{t.retransmits} retransmissions)",
            "look for packet loss or fragmentation on the path; lower the block size/window size",
        )
    return _incomplete("tftp", f"the transfer of {name} was still running when the capture ended")


def _proxies(client: Client) -> list[Responder]:
    return [r for r in client.responders.values() if r.is_proxy and (r.offers or r.acks_4011)]


def _granting(client: Client) -> list[Responder]:
    return [r for r in client.responders.values() if r.address_granting]


def _judge_dhcp(client: Client, end: float) -> Verdict:
    if not is_pxe_client(client) and not client.req4011:
        return _incomplete(
            "dhcp",
            "not a PXE client (no option 60 PXEClient, no option 93): ordinary DHCP, nothing to diagnose",
        )
    if client.declines:
        addr = client.declines[-1]
        odd = int(addr) & 0xFF in (0, 255)
        why = (
            " (an address ending in .0 or .255, which some UEFI firmware rejects in classless subnets)"
            if odd
            else " (address conflict, or an address the firmware considers invalid)"
        )
        key = "declined"
        code = _code(client, key) if odd else None
        return Verdict(
            "failed",
            "dhcp",
            code,
            f"the client declined the offered address {addr}{why}",
            "exclude such addresses from the DHCP range, or check for a duplicate address",
            key,
        )
    unanswered = [r for r in client.req4011.values() if not r.answered]
    answered = [r for r in client.req4011.values() if r.answered]
    if unanswered and not answered:
        r = max(unanswered, key=lambda q: q.count)
        resp = client.responders.get(r.server)
        if r.misaddressed:
            return _fail(
                client,
                "4011-unanswered",
                "4011",
                f"the boot server {r.server} answered the port-4011 request, but to the wrong address or "
                f"port (broadcast or :68 instead of the request's source port {r.src_port}), so the client "
                f"never saw it and asked {r.count} times",
                "answer port-4011 requests unicast to their source address and port (dnsmasq 2.92 had this "
                "bug: upgrade to 2.93+)",
            )
        if _unanswered_for_good(r.count, r.last_ts, end):
            if resp is not None and resp.address_granting and resp.pxe:
                return _fail(
                    client,
                    "4011-unanswered",
                    "4011",
                    f"the DHCP server {r.server} sends option 60 PXEClient (it claims to be the PXE server "
                    f"as well), so the client asked {r.server}:4011 for its boot file {r.count} times and "
                    "got no answer (co-located misconfiguration)",
                    f"run a port-4011 responder on {r.server} (proxydhcp serve --colocated), or stop sending "
                    "option 60 from the DHCP server and run a proxyDHCP on the segment",
                )
            return _fail(
                client,
                "4011-unanswered",
                "4011",
                f"the boot server {r.server} did not answer the request on port 4011 ({r.count} tries)",
                f"make sure the proxy on {r.server} listens on UDP 4011 and that a firewall lets "
                "port 4011 through",
            )
        return _incomplete(
            "4011", f"the request to {r.server}:4011 was not answered before the capture ended"
        )
    if answered:
        srv = answered[0].server
        resp = client.responders.get(srv)
        if resp is not None and not resp.boot_file:
            return _fail(
                client,
                "4011-no-boot-file",
                "4011",
                f"the boot server {srv} answered on port 4011 without a boot file",
                "configure a boot file for this architecture on the proxy",
            )
        return _incomplete(
            "tftp",
            f"the boot server {srv} named {resp.boot_file if resp else '?'} but no TFTP "
            "read request followed in the capture",
            "check that TFTP traffic is in the capture (filter) and that siaddr is reachable",
        )
    return _judge_offers(client, end)


def _judge_offers(client: Client, end: float) -> Verdict:
    granting = _granting(client)
    proxies = _proxies(client)
    offered = [r for r in client.responders.values() if r.offers]
    if client.discovers == 0 and not offered:
        return _incomplete("dhcp", "no DISCOVER from this client in the capture (it started later?)")
    if not offered:
        if _unanswered_for_good(client.discovers, client.last_ts, end):
            return _fail(
                client,
                "no-offer",
                "dhcp",
                f"the client sent {client.discovers} DISCOVER(s) and nothing answered",
                "check that a DHCP server serves this segment (relay/helper address on other VLANs) "
                "and that a proxyDHCP listens on the client's interface",
            )
        return _incomplete("dhcp", "one DISCOVER and no answer before the capture ended")
    has_boot_info = bool(proxies) or any(r.pxe or r.boot_file for r in granting)
    if not has_boot_info:
        if client.discovers >= 2 or client.lease_server is not None:
            servers = ", ".join(str(r.server) for r in granting) or "?"
            return _fail(
                client,
                "no-boot-filename",
                "dhcp",
                f"no boot filename: offers without 60/66/67 and no proxy (the DHCP server {servers} "
                f"gives an address only; the client sent {client.discovers} DISCOVERs looking for a "
                "PXE answer)",
                "run a proxyDHCP on this segment (proxydhcp serve -i IFACE -s CIDR), or set "
                "next-server/filename (66/67) on the DHCP server",
            )
        return _incomplete(
            "dhcp", "an address offer without boot information; the capture ended before the client gave up"
        )
    if proxies and not granting:
        if client.discovers >= 2:
            return _fail(
                client,
                "only-proxy-offers",
                "dhcp",
                f"only proxyDHCP offers arrived ({', '.join(str(r.server) for r in proxies)}); no DHCP "
                "server offered an address",
                "check the DHCP server: running, scope not exhausted, relay forwarding to it",
            )
        return _incomplete("dhcp", "a proxy offer but no address offer yet")
    if family(client) == "uefi" and client.discovers_after_43 and client.lease_server is None:
        return _fail(
            client,
            "uefi-pxe10-discarded",
            "dhcp",
            "the proxy offer carried option 43 (PXE menu/discovery) and the UEFI client ignored it and "
            "sent DISCOVER again (UEFI discarded PXE10 proxy offer, edk2 BZ 469 class)",
            "send UEFI clients a BINL-style offer: 60 PXEClient, siaddr and 54, no option 43, then "
            "answer on port 4011 (proxydhcp does this by default)",
        )
    nak = [r for r in client.responders.values() if r.naks]
    if client.lease_server is None and nak:
        return _fail(
            client,
            "dhcp-nak",
            "dhcp",
            f"the DHCP server {nak[0].server} refused the request (NAK)",
            "check the DHCP server's scope and reservations for this MAC",
        )
    if client.lease_server is None:
        if client.discovers_after_offer >= 2 or (client.requests and end - client.last_ts >= TIMEOUT_S):
            return _fail(
                client,
                "offers-ignored",
                "dhcp",
                "offers arrived but the client kept asking and never got an address acknowledged",
                "compare the offers with what the firmware needs (option 60 PXEClient, boot file); "
                "check that the REQUEST reaches the DHCP server",
            )
        return _incomplete("dhcp", "offers arrived; the capture ended before the address was acknowledged")
    binl = [r for r in proxies if not r.boot_file and not r.sub43]
    pxe_server = [r for r in granting if r.pxe and not r.sub43]
    if binl or pxe_server:
        target = (binl or pxe_server)[0].server
        return _incomplete(
            "4011",
            f"the address was acknowledged; the client should now ask {target}:4011 for "
            "its boot file, and the capture ends before it does",
        )
    return _incomplete(
        "tftp", "the address was acknowledged with boot information; no TFTP request followed in the capture"
    )


def client_findings(
    client: Client, verdict: Verdict, fragments: dict[tuple[IPv4Address, IPv4Address], int]
) -> list[Finding]:
    """Protocol problems seen for this client, beyond the verdict's own cause."""
    mac = client.mac
    out = [Finding(check, sev, msg, mac) for check, sev, msg in client.violations]
    if verdict.failure is not None and verdict.verdict == "failed":
        out.insert(0, Finding(verdict.failure, "error", verdict.cause, mac))
    proxies = [r for r in client.responders.values() if r.is_proxy and r.offers]
    if len(proxies) >= 2:
        out.append(
            Finding(
                "two-proxies",
                "warning",
                "two proxyDHCP servers answered ("
                + ", ".join(str(r.server) for r in proxies)
                + "); which one the client follows is a race (e.g. WDS/SCCM beside another proxy)",
                mac,
            )
        )
    for r in client.responders.values():
        if r.pxe and not r.echoed_97:
            out.append(
                Finding(
                    "uuid-not-echoed",
                    "warning",
                    f"{r.server} did not echo option 97 (client UUID) although the client sent it; "
                    "strict firmware drops such replies",
                    mac,
                )
            )
        if r.is_proxy and r.siaddr == IPv4Address(0) and not r.has_54:
            out.append(
                Finding(
                    "missing-siaddr",
                    "error",
                    f"the proxy offer from {r.src} has neither siaddr nor option 54: UEFI firmware "
                    "has no boot server address (null boot server)",
                    mac,
                )
            )
        elif (
            r.address_granting
            and r.boot_file
            and r.siaddr == IPv4Address(0)
            and not r.opt66
            and not _proxies(client)
        ):
            out.append(
                Finding(
                    "missing-siaddr",
                    "warning",
                    f"{r.server} names boot file {r.boot_file} but siaddr is 0.0.0.0 and option 66 is "
                    "absent: BIOS ROMs stop with PXE-E7B, UEFI uses option 54",
                    mac,
                )
            )
    boot: Transfer | None = None
    for t in client.transfers:
        asked = t.requested.get("blksize", "")
        if t.oack is not None and t.oack.get("blksize", "").isdigit():
            granted = int(t.oack["blksize"])
            if asked.isdigit() and granted > int(asked):
                out.append(
                    Finding(
                        "oack-blksize",
                        "error",
                        f"{t.server} granted blksize {granted} for {t.filename} although the client "
                        f"asked for {asked} (RFC 2348: never larger)",
                        mac,
                    )
                )
            elif "blksize" not in t.requested:
                out.append(
                    Finding(
                        "oack-blksize",
                        "error",
                        f"{t.server} sent blksize {granted} in the OACK for {t.filename}, an option "
                        "the client did not request (RFC 2347)",
                        mac,
                    )
                )
            if granted + 32 > ETHERNET_MTU:
                frag = fragments.get((t.server, t.client), 0)
                seen = f"; {frag} IP fragments seen from {t.server}" if frag else ""
                out.append(
                    Finding(
                        "oack-blksize",
                        "warning",
                        f"blksize {granted} for {t.filename} exceeds the Ethernet MTU minus 32 "
                        f"(1468): DATA gets fragmented and many ROMs cannot reassemble{seen}",
                        mac,
                    )
                )
        if t.apprentice:
            out.append(
                Finding(
                    "sorcerers-apprentice",
                    "warning",
                    f"{t.server} resent DATA of {t.filename} right after a duplicate ACK "
                    f"({t.apprentice} times): the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1)",
                    mac,
                )
            )
        if t.probe:
            continue
        if boot is None:
            if t.complete:
                boot = t
            continue
        if t.error is not None and not t.error_from_client and t.error[0] != 1:
            out.append(
                Finding(
                    "tftp-error",
                    "warning",
                    f"{t.server} sent TFTP error {t.error[0]} ({t.error[1]}) for {t.filename}",
                    mac,
                )
            )
        lease = client.lease_server
        if lease is not None and t.server == lease and boot.server != lease:
            out.append(
                Finding(
                    "second-stage-to-dhcp-server",
                    "warning",
                    f"the second-stage request for {t.filename} went to the DHCP server {lease}, not "
                    f"to the boot server {boot.server}: the loader read siaddr from the DHCP ACK "
                    "(shim/GRUB behaviour); use absolute tftp:// or http:// paths or chain through "
                    "iPXE",
                    mac,
                )
            )
    return _dedupe(out)


def _dedupe(items: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in items:
        if (f.check, f.message) not in seen:
            seen.add((f.check, f.message))
            out.append(f)
    return out
