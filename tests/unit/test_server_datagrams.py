"""The service's datagram path on loopback (serve/endpoint.py, serve/service.py): DhcpEndpoint drains
a burst in batches and answers every datagram, in order, out of its own socket; the pipeline's records
(subnet of a policy ignore)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from proxydhcp.config import Settings
from proxydhcp.events import DecisionRecord
from proxydhcp.outcome import Outcome, Stage
from proxydhcp.pxe import pipeline
from proxydhcp.pxe.policy import Receiver
from proxydhcp.serve import endpoint as dhcp_endpoint
from proxydhcp.serve import service, sockets
from tests.unit.conftest import pxe_request

LO = sockets.Interface("lo", 1, True, True, IPv4Address("127.0.0.1"), IPv4Network("127.0.0.0/8"))


class Echo:
    """Stands in for ProxyDhcpService: the endpoint's only call into the service is handle()."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.locals: list[dhcp_endpoint.Local] = []
        self.stop_after: int | None = None
        self.endpoint: dhcp_endpoint.DhcpEndpoint | None = None

    def handle(
        self,
        endpoint: dhcp_endpoint.DhcpEndpoint,
        data: bytes,
        source: tuple[str, int],
        local: dhcp_endpoint.Local,
    ) -> None:
        self.calls.append(data)
        self.locals.append(local)
        endpoint.send(b"re:" + data, source, local.ancillary)
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            endpoint.close()  # a stop arriving in the middle of a batch


def _loops() -> list[Callable[[Coroutine[Any, Any, None]], None]]:
    runners: list[Callable[[Coroutine[Any, Any, None]], None]] = [asyncio.run]
    try:
        import uvloop

        runners.append(uvloop.run)
    except ImportError:
        pass
    return runners


def _client() -> socket.socket:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    sockets.set_rcvbuf(client, 4 * 1024 * 1024)
    client.settimeout(5)
    return client


@pytest.mark.parametrize("run", _loops())
def test_a_burst_is_answered_in_order(run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    echo = Echo()
    sock = sockets.open_udp(0, None, address="127.0.0.1")
    port = sock.getsockname()[1]
    client = _client()
    count = dhcp_endpoint.RECV_BATCH * 3 + 7  # several wakeups' worth, sent before the loop reads any

    async def main() -> None:
        endpoint = dhcp_endpoint.DhcpEndpoint(echo, LO, 67, sock)  # type: ignore[arg-type]
        for n in range(count):
            client.sendto(b"%d" % n, ("127.0.0.1", port))
        endpoint.open(asyncio.get_running_loop())
        deadline = time.monotonic() + 5
        while len(echo.calls) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        endpoint.close()
        assert endpoint.closed

    try:
        run(main())
        assert echo.calls == [b"%d" % n for n in range(count)]
        replies = [client.recvfrom(100) for _ in range(count)]
        assert [data for data, _ in replies] == [b"re:%d" % n for n in range(count)]
        assert {addr for _, addr in replies} == {("127.0.0.1", port)}  # out of the receiving socket
    finally:
        client.close()
        sock.close()


def test_close_in_the_middle_of_a_batch_stops_reading_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo = Echo()
    echo.stop_after = 5
    sock = sockets.open_udp(0, None, address="127.0.0.1")
    port = sock.getsockname()[1]
    client = _client()

    async def main() -> None:
        endpoint = dhcp_endpoint.DhcpEndpoint(echo, LO, 67, sock)  # type: ignore[arg-type]
        for n in range(20):
            client.sendto(b"%d" % n, ("127.0.0.1", port))
        endpoint.open(asyncio.get_running_loop())
        await asyncio.sleep(0.2)
        endpoint.close()  # a second close is harmless

    try:
        with caplog.at_level(logging.DEBUG, logger="proxydhcp"):
            asyncio.run(main())
        assert len(echo.calls) == 5
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert sock.fileno() == -1  # the endpoint closed its socket
    finally:
        client.close()


def test_a_failed_send_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sock = sockets.open_udp(0, None, address="127.0.0.1")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 0)  # so a broadcast fails with EACCES
    endpoint = dhcp_endpoint.DhcpEndpoint(Echo(), LO, 67, sock)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING, logger="proxydhcp"):
            endpoint.send(b"x", ("255.255.255.255", 9))
        assert any("send to 255.255.255.255:9 failed" in r.getMessage() for r in caplog.records)
    finally:
        endpoint.close()


def test_each_destination_address_answers_as_itself() -> None:
    """A request to a secondary address (127.0.0.2 on lo) gets that Local and its reply leaves from it;
    one to the primary gets the interface's own Receiver."""
    echo = Echo()
    sock = sockets.open_udp(0, None, pktinfo=True)
    port = sock.getsockname()[1]
    client = _client()

    async def main() -> None:
        endpoint = dhcp_endpoint.DhcpEndpoint(echo, LO, 4011, sock)  # type: ignore[arg-type]
        for dst in ("127.0.0.2", "127.0.0.1", "127.0.0.2"):
            client.sendto(dst.encode(), (dst, port))
        endpoint.open(asyncio.get_running_loop())
        deadline = time.monotonic() + 5
        while len(echo.calls) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        endpoint.close()

    try:
        asyncio.run(main())
        assert echo.calls == [b"127.0.0.2", b"127.0.0.1", b"127.0.0.2"]
        assert [str(local.receiver.local_ip) for local in echo.locals] == [
            "127.0.0.2",
            "127.0.0.1",
            "127.0.0.2",
        ]
        assert echo.locals[0] is echo.locals[2]  # memoised per IP_PKTINFO value
        assert echo.locals[1].receiver == Receiver(LO.address, LO.network)  # type: ignore[arg-type]
        assert echo.locals[0].receiver.local_network == LO.network  # 127.0.0.2 is in lo's 127.0.0.0/8
        replies = sorted(client.recvfrom(100) for _ in range(3))
        assert replies == [
            (b"re:127.0.0.1", ("127.0.0.1", port)),
            (b"re:127.0.0.2", ("127.0.0.2", port)),
            (b"re:127.0.0.2", ("127.0.0.2", port)),
        ]
    finally:
        client.close()
        sock.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_sends_are_warned_about_once_per_errno_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    sock = sockets.open_udp(0, None, address="127.0.0.1")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 0)  # so a broadcast fails with EACCES
    endpoint = dhcp_endpoint.DhcpEndpoint(Echo(), LO, 67, sock)  # type: ignore[arg-type]
    clock = endpoint.warnings.clock = Clock()

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    try:
        with caplog.at_level(logging.WARNING, logger="proxydhcp"):
            for _ in range(50):  # a stream of failures: one line
                endpoint.send(b"x", ("255.255.255.255", 9))
                clock.now += 0.1
            assert warnings() == ["lo:67: send to 255.255.255.255:9 failed: [Errno 13] Permission denied"]
            # Another errno is another warning: a source address that is not ours (ENETUNREACH).
            endpoint.send(b"x", ("127.0.0.1", 9), sockets.pktinfo_source(IPv4Address("192.0.2.1")))
            assert len(warnings()) == 2 and "Network is unreachable" in warnings()[1]
            clock.now += 10.0  # the interval is over: the next failure is logged, with the count
            endpoint.send(b"x", ("255.255.255.255", 9))
            assert len(warnings()) == 3
            assert warnings()[2].endswith("(49 more like it suppressed in the last 15 s)"), warnings()[2]
            endpoint.send(b"x", ("255.255.255.255", 9))
            assert len(warnings()) == 3
    finally:
        endpoint.close()


def test_warning_limiter_counts_per_key() -> None:
    logger = logging.getLogger("proxydhcp.test.limiter")
    clock = Clock()
    limiter = dhcp_endpoint.WarningLimiter(logger, interval=10.0, clock=clock)
    assert limiter.warn(("send", 1), "a") is True
    assert limiter.warn(("send", 1), "a") is False
    assert limiter.warn(("send", 2), "b") is True
    assert limiter.warn(("receive", 1), "c") is True
    clock.now += 9.9
    assert limiter.warn(("send", 1), "a") is False
    clock.now += 0.1
    assert limiter.warn(("send", 1), "a") is True
    assert limiter.warn(("send", 1), "a") is False


CONFIG = Settings.model_validate(
    {
        "subnet": [{"cidr": "10.0.0.0/8"}, {"cidr": "10.77.0.0/24"}],
        "boot": {"bios": "undionly.kpxe"},
        "host": [{"mac": "52:54:00:12:34:56", "ignore": True}],
    }
)
RECEIVER = Receiver(IPv4Address("10.77.0.2"), IPv4Network("10.77.0.0/24"))


def _process(arch: int | None, **fields: Any) -> tuple[pipeline.Answered | pipeline.Ignored, DecisionRecord]:
    data = pxe_request(arch=arch, **fields).encode()
    result = pipeline.run(data, port=67, source=(IPv4Address(0), 68), receiver=RECEIVER, settings=CONFIG)
    return result, pipeline.record(result, port=67, iface="eth0", source="0.0.0.0:68")


def test_a_policy_ignore_names_the_most_specific_subnet() -> None:
    ignored, ignored_record = _process(0)  # the default MAC is the ignored host
    assert isinstance(ignored, pipeline.Ignored) and ignored_record.outcome is Outcome.IGNORE
    assert ignored_record.stage is Stage.POLICY and ignored_record.subnet == "10.77.0.0/24"
    _, no_file = _process(7, chaddr=bytes.fromhex("525400000007"))  # efi-x64: no boot file
    assert no_file.reason_text == "no boot file for efi-x64" and no_file.subnet == "10.77.0.0/24"
    _, relayed = _process(0, chaddr=bytes.fromhex("525400000008"), giaddr="192.0.2.1")
    assert relayed.reason_text.startswith("subnet") and relayed.subnet is None  # type: ignore[union-attr]


def test_an_answer_record_carries_the_decision() -> None:
    result, rec = _process(0, chaddr=bytes.fromhex("525400000009"))
    assert isinstance(result, pipeline.Answered) and rec.outcome is Outcome.ANSWER
    assert (rec.mac, rec.msg_type, rec.arch, rec.subnet) == (
        "52:54:00:00:00:09",
        "DISCOVER",
        "bios",
        "10.77.0.0/24",
    )
    assert rec.server == "10.77.0.2" and rec.destination == "255.255.255.255:68 (broadcast)"
    assert rec.source == "0.0.0.0:68" and rec.boot_file == "undionly.kpxe" and rec.xid == 0x9B4E0557


def test_the_reply_memo_answers_a_known_shape_and_forgets_it_when_settings_change() -> None:
    """The service answers a request shaped like an earlier one from its memo; new settings (a reload
    swaps them whole) start a new memo, so the next one gets the new boot file."""
    from tests.integration.dhcpclient import request4011

    def settings(boot_file: str) -> Settings:
        return Settings.model_validate({"subnet": [{"cidr": "127.0.0.0/8"}], "boot": {"efi-x64": boot_file}})

    svc = service.ProxyDhcpService(settings("one.efi"))
    svc.serving = True
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    endpoint = dhcp_endpoint.DhcpEndpoint(svc, LO, 4011, sock)
    client = _client()
    source = client.getsockname()

    def ask(xid: int) -> bytes:
        data = request4011(f"52:54:00:11:00:{xid:02x}", xid, ciaddr="127.0.0.1", arch=7).encode()
        svc.handle(endpoint, data, source, endpoint.default)
        reply = client.recv(2048)
        assert reply[4:8] == xid.to_bytes(4, "big") and reply[28:34] == data[28:34]
        return reply[108:236].rstrip(b"\0")  # the header's file field

    try:
        assert ask(1) == b"one.efi" and svc.memo.hits == 0
        assert ask(2) == b"one.efi" and svc.memo.hits == 1  # same shape: from the memo
        svc.settings = settings("two.efi")
        assert ask(3) == b"two.efi"
        assert ask(4) == b"two.efi" and svc.memo.hits == 1  # the new memo's first hit
        assert svc.memo_hits == 2  # what the metric reports: a counter never goes back
    finally:
        endpoint.close()
        client.close()


def test_a_bug_is_an_internal_error_record_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on IPv6 (test_service6): whatever raises in the datagram path becomes one ERROR record with
    the exception named, and nothing is sent."""
    from proxydhcp import events
    from proxydhcp.outcome import Reason

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(pipeline, "run", broken)
    svc = service.ProxyDhcpService(CONFIG)
    svc.serving, svc.memo = True, None  # every datagram through the (broken) pipeline
    endpoint = dhcp_endpoint.DhcpEndpoint(svc, LO, 67)  # no socket: a send would be dropped
    seen: list[DecisionRecord] = []
    events.add_sink(seen.append)
    try:
        svc.handle(endpoint, pxe_request(arch=0).encode(), ("0.0.0.0", 68))
    finally:
        events.remove_sink(seen.append)
    (rec,) = seen
    assert (rec.outcome, rec.stage, rec.reason, rec.port, rec.iface, rec.source) == (
        Outcome.ERROR, Stage.POLICY, Reason.INTERNAL_ERROR, 67, "lo", "0.0.0.0:68",
    )  # fmt: skip
    assert rec.level == logging.ERROR and rec.reason_text == "internal error: KeyError: 'boom'"
