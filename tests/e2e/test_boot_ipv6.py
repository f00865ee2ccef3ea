"""OVMF's "PXE over IPv6" through proxydhcp, beside dnsmasq as the network's ordinary DHCPv6 server
(M=1 router advertisements with the prefix on-link), issue 16/20: the firmware takes its address from
dnsmasq and its boot file from proxydhcp's Advertise and 4011 Reply, fetches ipxe.efi over TFTP on
IPv6; iPXE then reaches its second stage by DHCPv4, where the proxy answers iPXE (iPXE drops an
Advertise without an address, so the IPv6 proxy cannot be its route: README, "IPv6").

Which URL the firmware boots (issue 20): EDK II's PxeBcDhcp6.c takes only the host of the proxy
Advertise's Boot File URL, sends its boot-service Request to [host]:4011 and boots the file named in
the Reply. To tell the two apart on real firmware, the proxy starts with a boot table naming
ADVERTISED (a copy of ipxe.efi under another name, so only its name can differ) and, once its
Advertise is on the wire, is reloaded the operator's way (config file edited, SIGHUP) to name
ipxe.efi: the Request comes ~5 s after the Advertise under TCG. The capture must then show the
Advertise naming ADVERTISED, the Reply naming ipxe.efi, and TFTP read requests for ipxe.efi only.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e import wire
from tests.e2e.harness import BOOT_FILES, HTTP6_URL, PXE_IP6, TIMINGS, BootResult, Topology, Vm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

UEFI6 = Vm("uefi6", "uefi6", "52:54:00:77:00:06")
ADVERTISED = "advertised.efi"  # file A: named by the Advertise only; B is ipxe.efi, named by the Reply
PXE_ENTERPRISE = 343


class Ipv6Boot:
    def __init__(
        self,
        result: BootResult,
        wire_text: str,
        records: list[dict[str, object]],
        proxy_mac: str,
        reloaded_at: float | None,
    ) -> None:
        self.result = result
        self.wire_text = wire_text
        self.records = records
        self.proxy_mac = proxy_mac
        self.reloaded_at = reloaded_at  # seconds from QEMU start to the end of the SIGHUP reload

    def datagrams6(self) -> list[wire.Datagram]:
        return wire.read(self.result.pcaps["br0"], ipv6=True)

    def proxy_answers(self) -> list[wire.Datagram]:
        """Every DHCPv6 message proxydhcp sent (by its Ethernet address: dnsmasq answers from
        link-local too), as captured on the bridge."""
        return [d for d in self.datagrams6() if d.dhcp6 and d.eth_src == self.proxy_mac]


@pytest.fixture(scope="module")
def ipv6_boot(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Ipv6Boot:
    with Topology(
        tmp_path_factory.mktemp("e2e-ipv6"),
        ipv6=True,
        reloadable=True,
        boot={"efi-x64": ADVERTISED},
        files={ADVERTISED: BOOT_FILES["ipxe.efi"]},
    ) as topo:
        reloaded: list[float] = []

        def swap_after_the_advertise() -> None:
            # The firmware's PXE Solicit answered on 547 (iPXE comes later, over DHCPv4): from now on
            # the boot table names ipxe.efi, so the 4011 Reply names it and the Advertise did not.
            if reloaded or not any(
                r.get("port") == 547 and r.get("msg_type") == "SOLICIT" and r.get("outcome") == "answer"
                for r in topo.proxy_records()
            ):
                return
            topo.reload_boot({"efi-x64": "ipxe.efi"})
            reloaded.append(time.time())

        t0 = time.time()
        result = topo.boot([UEFI6], on_tick=swap_after_the_advertise)[UEFI6.name]
        assert topo.batch_dir is not None
        wire_text = (topo.batch_dir / "tcpdump-br0.txt").read_text(errors="replace")
        mac = topo.ns("pxe").run(["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        run = Ipv6Boot(result, wire_text, topo.proxy_records(), mac, reloaded[0] - t0 if reloaded else None)
    # The reload's margin, for the run's summary (not asserted: timing is not a test).
    dgs = run.datagrams6()
    advertise = next((d.t for d in run.proxy_answers() if d.dhcp6 and d.dhcp6.name == "ADVERTISE"), None)
    request = next((d.t for d in dgs if d.dhcp6 and d.dhcp6.name == "REQUEST" and d.dport == 4011), None)
    if advertise and request and run.reloaded_at is not None:
        TIMINGS.append(
            f"{'uefi6':<14} Advertise +{advertise - result.t0:.1f} s, SIGHUP reload done"
            f" +{run.reloaded_at:.1f} s, 4011 Request +{request - result.t0:.1f} s"
        )
    return run


def test_ovmf_pxe_over_ipv6_reaches_ipxe_second_stage(ipv6_boot: Ipv6Boot) -> None:
    result, wire_text, records = ipv6_boot.result, ipv6_boot.wire_text, ipv6_boot.records
    assert result.ok, result.report()
    # The firmware's path was IPv6: the proxy's Advertise (547) and the 4011 Reply, then TFTP on IPv6.
    v6 = [r for r in records if r.get("outcome") == "answer" and str(r.get("source", "")).startswith("[")]
    answered = {(r.get("port"), r.get("msg_type")) for r in v6}
    assert {(547, "SOLICIT"), (4011, "REQUEST")} <= answered, result.report()
    assert re.search(rf'IP6 \S+ > {re.escape(PXE_IP6)}\.69: .*RRQ "ipxe.efi"', wire_text), wire_text[-3000:]
    # iPXE's second stage: the marker named after the MAC, fetched by the stage-2 script.
    assert f'RRQ "{UEFI6.marker}"' in wire_text


def test_ovmf_boots_the_file_named_in_the_4011_reply_not_the_advertise(ipv6_boot: Ipv6Boot) -> None:
    """Issue 20: the Reply's URL is the one booted; fails if the firmware fetched the Advertise's file."""
    result = ipv6_boot.result
    assert result.ok, result.report()
    assert ipv6_boot.reloaded_at is not None, "the proxy's Advertise never showed up in its log"
    answers = ipv6_boot.proxy_answers()
    replies = [d for d in answers if d.dhcp6 and d.dhcp6.name == "REPLY" and d.sport == 4011]
    assert replies, result.report()
    # The firmware's Advertises: before its boot-service Request (iPXE Solicits later, UNDI 3.10,
    # and gets the iPXE script, which it ignores), the one it took the host from among them (EDK II
    # reuses the Solicit's transaction ID for the 4011 Request).
    advertises = [
        d.dhcp6 for d in answers if d.dhcp6 and d.dhcp6.name == "ADVERTISE" and d.t < replies[0].t
    ]  # fmt: skip
    assert {m.xid for m in advertises} >= {d.dhcp6.xid for d in replies if d.dhcp6}, result.report()
    # Every Advertise the firmware got named ADVERTISED (the reload came after them all) ...
    assert {m.boot_file_url() for m in advertises} == {f"tftp://[{PXE_IP6}]/{ADVERTISED}"}, result.report()
    # ... every 4011 Reply named ipxe.efi ...
    urls = {d.dhcp6.boot_file_url() for d in replies if d.dhcp6}
    assert urls == {f"tftp://[{PXE_IP6}]/ipxe.efi"}, result.report()
    # ... and the firmware read ipxe.efi over TFTP, never ADVERTISED, which the server would serve.
    names = wire.rrq_names([d for d in ipv6_boot.datagrams6() if d.dport == 69])
    assert "ipxe.efi" in names and ADVERTISED not in names, f"{names}\n{result.report()}"
    # The boot went on from ipxe.efi: iPXE ran the stage-2 script and fetched the marker.
    assert f'RRQ "{UEFI6.marker}"' in ipv6_boot.wire_text


def test_every_proxy_answer_on_the_wire_carries_pxeclient_and_no_address(ipv6_boot: Ipv6Boot) -> None:
    """Option 16 (enterprise 343, PXEClient) in each Advertise and Reply as the firmware got them:
    without it EDK II takes the Advertise for a plain DHCP offer and hangs (issue 20). No IA, ever."""
    result = ipv6_boot.result
    answers = ipv6_boot.proxy_answers()
    assert {d.sport for d in answers} == {547, 4011}, result.report()
    for d in answers:
        assert d.dhcp6 is not None
        assert d.dhcp6.vendor_class() == (PXE_ENTERPRISE, [b"PXEClient"]), wire.describe(d)
        assert not {3, 4, 5, 25} & set(d.dhcp6.codes), wire.describe(d)  # IA_NA, IA_TA, IAADDR, IA_PD


def test_the_4011_reply_goes_back_where_the_boot_service_request_came_from(ipv6_boot: Ipv6Boot) -> None:
    """The Reply leaves [the address the Request was sent to]:4011 for the Request's own address and
    port 4011 (EDK II reads only that; a Reply from another port gives PXE-E16). Whichever source the
    firmware picked this run (lease, SLAAC or link-local; the link-local case with its scope is also
    driven on purpose in tests/integration/test_serve_dhcp6.py)."""
    result = ipv6_boot.result
    dgs = ipv6_boot.datagrams6()
    requests = [d for d in dgs if d.dhcp6 and d.dhcp6.name == "REQUEST" and d.dport == 4011]
    replies = [d for d in ipv6_boot.proxy_answers() if d.sport == 4011]
    assert requests and replies, result.report()
    for request in requests:
        assert request.sport == 4011 and request.dst == PXE_IP6, wire.describe(request)
    for reply in replies:
        assert reply.dhcp6 is not None
        # the firmware may ask again from another of its addresses, with the same transaction ID
        asked = [
            q for q in requests
            if q.dhcp6 and q.dhcp6.xid == reply.dhcp6.xid and (q.src, q.sport) == (reply.dst, reply.dport)
        ]  # fmt: skip
        assert asked, f"a Reply to no Request: {wire.describe(reply)}\n{result.report()}"
        assert (reply.src, reply.sport) == (asked[0].dst, 4011), wire.describe(reply)


UEFI6_HTTP = Vm("uefi6http", "uefi6http", "52:54:00:77:00:07")


@pytest.fixture(scope="module")
def http6_boot(e2e_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Ipv6Boot:
    workdir = tmp_path_factory.mktemp("e2e-http6")
    with Topology(workdir, http6=True) as topo:
        result = topo.boot([UEFI6_HTTP])[UEFI6_HTTP.name]
        assert topo.batch_dir is not None
        wire_text = (topo.batch_dir / "tcpdump-br0.txt").read_text(errors="replace")
        mac = topo.ns("pxe").run(["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        return Ipv6Boot(result, wire_text, topo.proxy_records(), mac, None)


def test_ovmf_http_boot_over_ipv6(http6_boot: Ipv6Boot) -> None:
    result, records = http6_boot.result, http6_boot.records
    assert result.ok, result.report()
    # HTTPClient Solicit answered with the boot table's URL and vendor class HTTPClient; no 4011 step.
    http = [
        r
        for r in records
        if r.get("port") == 547 and r.get("outcome") == "answer" and r.get("arch") == "efi-x64-http"
    ]
    assert http and {r.get("boot_file") for r in http} == {HTTP6_URL}, records
    assert not [r for r in records if r.get("port") == 4011 and str(r.get("source", "")).startswith("[")]
    # On the wire: each HTTPClient answer carries option 16 (343, HTTPClient) and the URL, no IA.
    answers = [
        d.dhcp6 for d in http6_boot.proxy_answers() if d.dhcp6 and d.dhcp6.boot_file_url().startswith("http")
    ]
    assert answers, result.report()
    for m in answers:
        assert m.vendor_class() == (PXE_ENTERPRISE, [b"HTTPClient"]) and m.boot_file_url() == HTTP6_URL, m
        assert not {3, 4, 5, 25} & set(m.codes), m
    # The boot table names ipxe.efi: the proxy made it a URL on its own HTTP server, named by its
    # address in the prefix, and the firmware fetched it there over IPv6 (issue 16: HTTP over IPv6
    # reuses the HTTP server), each request one of the server's own records.
    assert {r.get("rule") for r in http} == {"global efi-x64-http"}, http
    fetched = [
        r for r in records
        if r.get("method") in ("HEAD", "GET") and str(r.get("client", "")).startswith("[fd77::")
        and "ipxe.efi" in str(r.get("file", ""))
    ]  # fmt: skip
    assert any(r.get("method") == "GET" and r.get("status") in (200, 206) for r in fetched), records[-20:]
