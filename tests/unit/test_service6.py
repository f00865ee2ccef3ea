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
