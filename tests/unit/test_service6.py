"""serve/service6: one datagram through `pxe6.pipeline.run6` → one `events.DecisionRecord`, typed, as on
IPv4; a bug is an INTERNAL_ERROR record (level, label from the member), never an exception to the loop."""

from __future__ import annotations

import logging
from ipaddress import IPv6Address

from proxydhcp import events
from proxydhcp.config import Settings
from proxydhcp.dhcp6 import options
from proxydhcp.events import DecisionRecord
from proxydhcp.outcome import Outcome, Reason, Stage
from proxydhcp.serve.service6 import Dhcp6Endpoint, Dhcp6Service
from proxydhcp.serve.sockets6 import Interface6
from tests.dhcp6_requests import edk2_solicit

IFACE = Interface6("br0", 7, bytes.fromhex("020000000001"), ((IPv6Address("2001:db8:1::1"), 64),))
SETTINGS = Settings.model_validate({"boot": {"efi-x64": "ipxe.efi"}, "subnet": [{"cidr": "2001:db8:1::/64"}]})


class _Sent(Dhcp6Endpoint):
    def __init__(self, owner: Dhcp6Service) -> None:
        super().__init__(owner, IFACE, 547, None)  # type: ignore[arg-type]  # no socket: sends recorded
        self.sent: list[tuple[bytes, tuple[str, int, int, int]]] = []

    def send(self, data: bytes, dest: tuple[str, int, int, int], ancillary: object) -> None:
        self.sent.append((data, dest))


def _handle(settings: object, data: bytes) -> tuple[list[DecisionRecord], _Sent]:
    def current() -> Settings:
        if isinstance(settings, Exception):
            raise settings
        assert isinstance(settings, Settings)
        return settings

    service = Dhcp6Service(current, lambda: True)
    service.duid = options.duid_ll(IFACE.mac or b"")
    endpoint = _Sent(service)
    seen: list[DecisionRecord] = []
    events.add_sink(seen.append)
    try:
        service.handle(endpoint, data, ("fe80::5054:ff:fe12:3456", 546, 0, 7), [])
    finally:
        events.remove_sink(seen.append)
    return seen, endpoint


def test_an_answer_is_sent_and_recorded_once() -> None:
    seen, endpoint = _handle(SETTINGS, edk2_solicit())
    assert [r.outcome for r in seen] == [Outcome.ANSWER]
    assert seen[0].boot_file == "tftp://[2001:db8:1::1]/ipxe.efi"
    assert seen[0].source == "[fe80::5054:ff:fe12:3456%7]:546"
    assert [dest for _, dest in endpoint.sent] == [("fe80::5054:ff:fe12:3456", 546, 0, 7)]


def test_a_bug_is_an_internal_error_record_not_an_exception() -> None:
    seen, endpoint = _handle(KeyError("boom"), edk2_solicit())
    assert endpoint.sent == []
    (rec,) = seen
    assert (rec.outcome, rec.stage, rec.reason, rec.port, rec.iface) == (
        Outcome.ERROR, Stage.POLICY, Reason.INTERNAL_ERROR, 547, "br0",
    )  # fmt: skip
    assert rec.level == logging.ERROR and rec.reason_text == "internal error: KeyError: 'boom'"


class _Echo6:
    """Stands in for Dhcp6Service: answers every datagram with its ancillary data, as the service does."""

    def __init__(self) -> None:
        self.ancillary: list[object] = []

    def handle(self, endpoint: Dhcp6Endpoint, data: bytes, source: tuple[str, int, int, int],
               ancillary: list[tuple[int, int, bytes]]) -> None:  # fmt: skip
        self.ancillary.append(ancillary)
        endpoint.send(b"re:" + data, source, ancillary)


def test_the_endpoint_answers_a_burst_from_the_address_it_was_sent_to_on_loopback() -> None:
    """Dhcp6Endpoint reads with IPV6_RECVPKTINFO: each unicast datagram's answer carries IPV6_PKTINFO
    naming the address it was sent to (EDK II reads the 4011 Reply only from there), all of a burst
    larger than a send batch are answered in order, and the Local is worked out once."""
    import socket

    from proxydhcp.serve import endpoint as dhcp_endpoint
    from proxydhcp.serve import sockets6

    lo = Interface6("lo", socket.if_nametoindex("lo"), None, ((IPv6Address("::1"), 128),))
    sock = sockets6.open_udp6(0, lo)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind(("::1", 0))
    client.settimeout(2)
    echo = _Echo6()
    endpoint = Dhcp6Endpoint(echo, lo, 4011, sock)  # type: ignore[arg-type]
    try:
        count = dhcp_endpoint.SEND_BATCH * 2 + 3
        for n in range(count):
            client.sendto(b"%d" % n, ("::1", sock.getsockname()[1]))
        endpoint.readable()
        answers = [client.recvfrom(64) for _ in range(count)]
        assert [data for data, _ in answers] == [b"re:%d" % n for n in range(count)]
        assert {peer[0] for _, peer in answers} == {"::1"}
        assert echo.ancillary == [sockets6.source_ancillary(IPv6Address("::1"), lo.index)] * count
        assert len(endpoint._locals) == 1
    finally:
        endpoint.close()
        client.close()


def test_a_multicast_destination_is_answered_from_the_kernels_choice() -> None:
    from proxydhcp.serve import sockets6

    info = sockets6.IN6_PKTINFO.pack(IPv6Address("ff02::1:2").packed, 7)
    assert sockets6.unicast_destination(info) is None
    assert sockets6.unicast_destination(info[:4]) is None  # not an in6_pktinfo
    unicast = sockets6.IN6_PKTINFO.pack(IPv6Address("2001:db8:1::1").packed, 7)
    assert sockets6.unicast_destination(unicast) == IPv6Address("2001:db8:1::1")
    endpoint = _Sent(Dhcp6Service(lambda: SETTINGS, lambda: True))
    assert endpoint.local_for(info) == [] == endpoint.default
    assert endpoint.local_for(unicast) == sockets6.source_ancillary(IPv6Address("2001:db8:1::1"), 7)
