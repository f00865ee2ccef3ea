"""Operations (issue 8) over real sockets: `--log-format json` decision lines, `--reply-delay-ms` and
`--metrics` of a running `proxydhcp serve`.

Lab: one segment; proxydhcp in "pxe" (10.77.0.2), a client with no address in "cli" (port 68, where
broadcast offers arrive) and a leased client in "cli77" (10.77.0.50:4011, where 4011 ACKs arrive).
"""

from __future__ import annotations

import json
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import dhcpclient as dc
from tests.integration.conftest import Proxy
from tests.netlab import Lab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

PXE, CLI77 = "10.77.0.2", "10.77.0.50"
SUBNET = "10.77.0.0/24"
MAC, MAC_UEFI, MAC_ARM = "52:54:00:77:10:01", "52:54:00:77:10:02", "52:54:00:77:10:03"
MAC_NOT_PXE, MAC_IGNORED = "52:54:00:77:10:04", "52:54:00:77:10:05"
METRICS = "127.0.0.1:9177"  # inside the "pxe" namespace: its own loopback, no clash with anything
CONFIG = f"""
[[host]]
mac = "{MAC_IGNORED}"
ignore = true
"""
BASE_ARGS = [
    "--interface", "eth0", "--subnet", SUBNET, "--no-tftp",
    "--boot-file", "bios=undionly.kpxe", "--boot-file", "efi-x64=ipxe.efi",
]  # fmt: skip
BCAST = ("255.255.255.255", 67)


class Clients:
    def __init__(self, lab: Lab) -> None:
        self.bcast = dc.udp_socket(lab.ns("cli").name, port=68, device="eth0")
        self.pxe = dc.udp_socket(lab.ns("cli77").name, port=4011, address=CLI77)

    def close(self) -> None:
        self.bcast.close()
        self.pxe.close()


@pytest.fixture
def setup(
    lab: Lab, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> Iterator[Callable[..., tuple[Proxy, Clients]]]:
    """`setup(*extra_args)`: the segment, a running proxydhcp with BASE_ARGS + extra, client sockets."""
    made: list[Clients] = []
    config = tmp_path / "hosts.toml"
    config.write_text(CONFIG)

    def make(*extra: str) -> tuple[Proxy, Clients]:
        lab.segment(SUBNET, {"pxe": PXE, "cli": None, "cli77": CLI77})
        proxy = start_proxy("pxe", ["-c", str(config), *BASE_ARGS, *extra])
        clients = Clients(lab)
        made.append(clients)
        return proxy, clients

    yield make
    for clients in made:
        clients.close()


def reply(sock: socket.socket, packet: Any, dest: tuple[str, int], xid: int, window: float = 3.0) -> float:
    """Send `packet`, wait for the one reply with its xid from proxydhcp; seconds from send to arrival."""
    sent = time.monotonic()
    got = dc.exchange(sock, packet, dest, window=window, until=lambda g: bool(dc.replies_for(g, xid)))
    answers = dc.replies_for(got, xid, source_ip=PXE)
    assert len(answers) == 1, f"xid {xid:#x}: {got}"
    return answers[0].at - sent


def silent(sock: socket.socket, packet: Any, dest: tuple[str, int], xid: int, window: float = 0.5) -> None:
    got = dc.exchange(sock, packet, dest, window=window)
    assert dc.replies_for(got, xid) == [], f"xid {xid:#x} was answered: {got}"


def decisions(proxy: Proxy, count: int, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Wait for `count` decision lines; every log line must be one JSON object. Keyed by xid
    ("-" for a record without one)."""
    deadline = time.monotonic() + timeout
    while True:
        objects = []
        for line in proxy.log().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON line in --log-format json output: {line!r}\n{proxy.log()}")
            assert isinstance(obj, dict), line
            objects.append(obj)
        recs = [o for o in objects if o.get("logger") == "proxydhcp.dhcp"]
        if len(recs) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    by_xid: dict[str, dict[str, Any]] = {}
    for rec in recs:
        key = rec.get("xid", "-")
        assert key not in by_xid, f"two decision lines for xid {key}:\n{proxy.log()}"
        by_xid[key] = rec
    assert len(recs) == count, f"{len(recs)} decision lines, expected {count}:\n{proxy.log()}"
    for obj in objects:
        assert {"ts", "level", "logger", "msg"} <= obj.keys(), obj
    return by_xid


def x(xid: int) -> str:
    return f"0x{xid:08x}"


def test_json_log_one_object_per_decided_packet(setup: Callable[..., tuple[Proxy, Clients]]) -> None:
    proxy, c = setup("--log-format", "json", "-v")  # -v: the quiet (debug) ignores are logged too
    reply(c.bcast, dc.discover(MAC, 0x7101, arch=0), BCAST, 0x7101)
    reply(c.pxe, dc.request4011(MAC_UEFI, 0x7102, ciaddr=CLI77, arch=7), (PXE, 4011), 0x7102)
    silent(c.bcast, dc.discover(MAC_ARM, 0x7103, arch=11), BCAST, 0x7103)  # no boot file for arm64
    silent(c.bcast, dc.discover(MAC_IGNORED, 0x7104, arch=0), BCAST, 0x7104)  # [[host]] ignore
    silent(c.bcast, dc.discover(MAC_NOT_PXE, 0x7105, arch=None, vendor=b"MSFT 5.0"), BCAST, 0x7105)
    silent(c.bcast, dc.request67(MAC, 0x7106, requested=CLI77, server_id="10.77.0.1"), BCAST, 0x7106)
    silent(c.bcast, b"\x01\x01\x06\x00garbage", BCAST, 0)  # malformed: no xid to log
    recs = decisions(proxy, 7)

    offer = recs[x(0x7101)]
    assert offer["outcome"] == "answer" and offer["level"] == "info"
    assert offer["mac"] == MAC and offer["msg_type"] == "DISCOVER" and offer["port"] == 67
    assert offer["arch"] == "bios" and offer["subnet"] == SUBNET
    assert offer["boot_file"] == "undionly.kpxe" and offer["server"] == PXE
    assert offer["destination"].startswith("255.255.255.255:68")
    assert "reason" not in offer and "delay_ms" not in offer

    ack = recs[x(0x7102)]
    assert ack["outcome"] == "answer" and ack["port"] == 4011 and ack["msg_type"] == "REQUEST"
    assert ack["mac"] == MAC_UEFI and ack["arch"] == "efi-x64" and ack["subnet"] == SUBNET
    assert ack["boot_file"] == "ipxe.efi" and ack["destination"] == f"{CLI77}:4011"
    assert ack["source"] == f"{CLI77}:4011"

    for xid, mac, arch, reason in (
        (0x7103, MAC_ARM, "efi-arm64", "no boot file for efi-arm64"),
        (0x7104, MAC_IGNORED, "bios", f"host {MAC_IGNORED} ignored"),
    ):
        rec = recs[x(xid)]
        assert rec["outcome"] == "ignore" and rec["level"] == "info", rec  # an admin wonders why
        assert rec["mac"] == mac and rec["arch"] == arch and rec["reason"] == reason, rec
        assert "boot_file" not in rec and "destination" not in rec, rec

    for xid, mac, reason in ((0x7105, MAC_NOT_PXE, "not a PXE client"), (0x7106, MAC, "not a DISCOVER")):
        rec = recs[x(xid)]
        assert rec["outcome"] == "ignore" and rec["level"] == "debug", rec
        assert rec["mac"] == mac and rec["reason"].startswith(reason), rec
        assert "boot_file" not in rec and "destination" not in rec, rec

    garbage = recs["-"]
    assert garbage["outcome"] == "malformed" and garbage["reason"] and garbage["level"] == "debug"
    assert "Traceback" not in proxy.log()


def test_json_log_ignored_by_policy_names_the_subnet(setup: Callable[..., tuple[Proxy, Clients]]) -> None:
    proxy, c = setup("--log-format", "json")
    silent(c.bcast, dc.discover(MAC_IGNORED, 0x7201, arch=0), BCAST, 0x7201)
    silent(c.bcast, dc.discover(MAC_ARM, 0x7202, arch=11), BCAST, 0x7202)
    recs = decisions(proxy, 2)
    assert recs[x(0x7201)]["subnet"] == SUBNET
    assert recs[x(0x7202)]["subnet"] == SUBNET


def test_reply_delay_holds_the_offer_not_the_4011_ack(setup: Callable[..., tuple[Proxy, Clients]]) -> None:
    proxy, c = setup("--reply-delay-ms", "300", "--log-format", "json")
    offers = [reply(c.bcast, dc.discover(MAC, 0x7300 + n, arch=0), BCAST, 0x7300 + n) for n in range(3)]
    acks = [
        reply(c.pxe, dc.request4011(MAC, 0x7310 + n, ciaddr=CLI77, arch=0), (PXE, 4011), 0x7310 + n)
        for n in range(3)
    ]
    assert min(offers) >= 0.299, offers  # asyncio may fire a timer up to its clock resolution early
    assert max(offers) < 1.5, offers
    assert min(acks) < 0.1 and statistics.median(acks) < 0.25, acks  # a delayed ACK would be ≥ 0.3 each

    # The delay does not stall the service: an ACK asked for after a DISCOVER arrives before its offer.
    sent = time.monotonic()
    c.bcast.sendto(dc.discover(MAC, 0x7320, arch=0).encode(), BCAST)
    ack_after = reply(c.pxe, dc.request4011(MAC, 0x7321, ciaddr=CLI77), (PXE, 4011), 0x7321)
    got = dc.receive(c.bcast, 3.0, until=lambda g: bool(dc.replies_for(g, 0x7320)))
    offer = dc.replies_for(got, 0x7320, source_ip=PXE)
    assert len(offer) == 1 and offer[0].at - sent >= 0.299
    assert ack_after < 0.2, ack_after

    recs = decisions(proxy, 8)
    for n in (0, 1, 2, 0x20):
        assert recs[x(0x7300 + n)]["delay_ms"] == 300
    for n in (0x10, 0x11, 0x12, 0x21):
        assert "delay_ms" not in recs[x(0x7300 + n)]


def scrape(lab: Lab) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint inside the "pxe" namespace: (name, sorted labels) → value."""
    with dc.in_netns(lab.ns("pxe").name):  # the HTTP socket is created in this thread, so in the lab
        body = urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def packets(port: str, mtype: str, outcome: str, reason: str = "") -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"port": port, "message_type": mtype, "outcome": outcome, "reason": reason}
    return ("proxydhcp_dhcp_packets_total", tuple(sorted(labels.items())))


def by_arch(name: str, arch: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("arch", arch),))


def test_metrics_count_the_packets_sent(lab: Lab, setup: Callable[..., tuple[Proxy, Clients]]) -> None:
    _proxy, c = setup("--metrics", METRICS)
    before = scrape(lab)
    assert ("proxydhcp_build_info", (("version", _version()),)) in before
    assert not [k for k in before if k[0] == "proxydhcp_dhcp_packets_total"], "counted before any packet"
    assert before[("proxydhcp_reply_memo_hits_total", ())] == 0

    for n in range(2):
        reply(c.bcast, dc.discover(MAC, 0x7400 + n, arch=0), BCAST, 0x7400 + n)
    reply(c.bcast, dc.discover(MAC_UEFI, 0x7402, arch=7), BCAST, 0x7402)
    reply(c.pxe, dc.request4011(MAC, 0x7403, ciaddr=CLI77, arch=0), (PXE, 4011), 0x7403)
    for packet in (
        dc.discover(MAC_ARM, 0x7404, arch=11),
        dc.discover(MAC_IGNORED, 0x7405, arch=0),
        dc.discover(MAC_NOT_PXE, 0x7406, arch=None, vendor=b"MSFT 5.0"),
        dc.request67(MAC, 0x7407, requested=CLI77, server_id="10.77.0.1"),
    ):
        c.bcast.sendto(packet.encode(), BCAST)
    c.bcast.sendto(b"\x01\x01\x06\x00garbage", BCAST)

    expected = {
        packets("67", "DISCOVER", "answered"): 3,
        packets("4011", "REQUEST", "answered"): 1,
        packets("67", "DISCOVER", "ignored", "no_boot_file"): 1,
        packets("67", "DISCOVER", "ignored", "host_ignored"): 1,
        packets("67", "DISCOVER", "ignored", "not_pxe"): 1,
        packets("67", "REQUEST", "ignored", "not_discover"): 1,
        packets("67", "none", "malformed", "too_short"): 1,
        by_arch("proxydhcp_offers_total", "bios"): 2,
        by_arch("proxydhcp_offers_total", "efi-x64"): 1,
        by_arch("proxydhcp_pxe_acks_total", "bios"): 1,
    }
    deadline = time.monotonic() + 10
    while True:  # the ignored packets have no reply to wait for
        after = scrape(lab)
        total = sum(v for k, v in after.items() if k[0] == "proxydhcp_dhcp_packets_total")
        if total >= 9 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # nothing more may arrive
    after = scrape(lab)
    got = {
        k: v
        for k, v in after.items()
        if k[0] in ("proxydhcp_dhcp_packets_total", "proxydhcp_offers_total", "proxydhcp_pxe_acks_total")
    }
    assert got == expected
    # The second BIOS DISCOVER is the first's shape (only the xid differs): answered from the memo.
    assert after[("proxydhcp_reply_memo_hits_total", ())] == 1
    # TFTP is off: its counters exist and stay at zero.
    assert after[("proxydhcp_tftp_transfers_started_total", ())] == 0
    assert after[("proxydhcp_tftp_active_transfers", ())] == 0


def _version() -> str:
    from proxydhcp import __version__

    return __version__
