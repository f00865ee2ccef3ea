"""The DHCPv6 proxy decision: classify6 → decide6 (`boot.choose_boot_file`) → build_reply6 →
Relay-Reply, through `pxe6.pipeline.run6` and `record6`, with the EDK II messages of issue 20. Every
answer is checked for the guarantees (no IA ever; Server ID; Client ID echoed; 59; 16 = 343
PXEClient/HTTPClient)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from proxydhcp.config import Settings, load_settings
from proxydhcp.dhcp6 import options
from proxydhcp.dhcp6.packet import IA_OPTIONS, Message, MessageType, Opt, RelayMessage, decode
from proxydhcp.errors import ConfigError
from proxydhcp.events import DecisionRecord
from proxydhcp.outcome import Outcome, Reason, Stage
from proxydhcp.pxe import pipeline as pipeline4
from proxydhcp.pxe.policy import Receiver
from proxydhcp.pxe6.pipeline import REPEATS, Answered6, Ignored6, record6, run6, source_text
from proxydhcp.pxe6.policy import Receiver6, interface_addresses6
from tests.dhcp6_requests import (
    DUID_LLT,
    HTTP_VENDOR,
    MAC,
    edk2_boot_request,
    edk2_solicit,
    opt,
    relay_forward,
    vendor_class,
)

SERVER_DUID = options.duid_ll(bytes.fromhex("020000000001"))
SETTINGS = Settings.model_validate(
    {
        "boot": {"efi-x64": "ipxe.efi", "efi-arm64": "arm64.efi", "ipxe": "boot.ipxe",
                 "efi-x64-http": "http://[2001:db8:1::1]:8080/ipxe.efi", "efi-ia32": "http://x/ia32.efi"},
        "subnet": [
            {"cidr": "10.0.0.0/24"},
            {"cidr": "2001:db8:1::/64"},
            {"cidr": "2001:db8:2::/64", "boot": {"efi-x64": "snp.efi"}, "next_server": "2001:db8:2::6"},
        ],
        "host": [
            {"mac": "52:54:00:aa:bb:cc", "boot_file": "special.efi"},
            {"mac": "52:54:00:00:00:99", "ignore": True},
        ],
    }
)  # fmt: skip
RECEIVER = Receiver6("br0", ((IPv6Address("2001:db8:1::1"), 64),))
SOURCE = ("fe80::5054:ff:fe12:3456", 546, 0, 7)


@dataclass(frozen=True)
class Verdict6:
    """One datagram's result, its wire reply and its record, as `serve` sees them."""

    result: Answered6 | Ignored6
    record: DecisionRecord

    @property
    def reply(self) -> bytes | None:
        return self.result.reply.encode() if isinstance(self.result, Answered6) else None

    @property
    def destination(self) -> tuple[str, int, int, int] | None:
        return self.result.destination if isinstance(self.result, Answered6) else None

    @property
    def repeat(self) -> tuple[float, ...]:
        return self.result.repeat if isinstance(self.result, Answered6) else ()


def run(data: bytes, *, port: int = 547, source: tuple[str, int, int, int] = SOURCE,
        receiver: Receiver6 = RECEIVER, settings: Settings = SETTINGS) -> Verdict6:  # fmt: skip
    result = run6(
        data, port=port, source=source, receiver=receiver, settings=settings, server_duid=SERVER_DUID
    )
    verdict = Verdict6(result, record6(result, port=port, iface=receiver.iface, source=source_text(source)))
    if verdict.reply is not None:
        check_answer(data, verdict.reply)
    return verdict


def check_answer(request_bytes: bytes, reply_bytes: bytes) -> Message:
    """The guarantees of every answer (DESIGN.md §7, issue 20)."""
    request, reply = decode(request_bytes), decode(reply_bytes)
    while isinstance(reply, RelayMessage):
        assert isinstance(request, RelayMessage)
        assert reply.msg_type == MessageType.RELAY_REPL
        assert (reply.hop_count, reply.link_address, reply.peer_address) == (
            request.hop_count, request.link_address, request.peer_address,
        )  # fmt: skip
        assert reply.option(Opt.INTERFACE_ID) == request.option(Opt.INTERFACE_ID)
        reply, request = reply.inner, request.inner
    assert isinstance(reply, Message) and isinstance(request, Message)
    codes = [code for code, _ in reply.options]
    assert not set(codes) & IA_OPTIONS, "a proxy answer never carries an IA or an address"
    assert reply.transaction_id == request.transaction_id
    assert reply.option(Opt.SERVERID) == SERVER_DUID
    assert reply.option(Opt.CLIENTID) == request.option(Opt.CLIENTID)
    assert Opt.BOOTFILE_URL in codes
    vendor = options.vendor_class(reply.option(Opt.VENDOR_CLASS))
    assert vendor is not None and vendor.enterprise == 343, "EDK II hangs without option 16 (issue 20)"
    assert vendor.data in ((b"PXEClient",), (b"HTTPClient",))
    return reply


def answer_of(verdict: Verdict6) -> Message:
    assert verdict.reply is not None, verdict.record
    reply = decode(verdict.reply)
    while isinstance(reply, RelayMessage):
        reply = reply.inner
    return reply


def test_edk2_solicit_gets_an_address_less_advertise_like_issue_20() -> None:
    verdict = run(edk2_solicit())
    reply = answer_of(verdict)
    assert reply.msg_type == MessageType.ADVERTISE
    # Issue 20: the proxy's Advertise carries 2, 1, 59, 16 and no IA.
    assert [code for code, _ in reply.options] == [2, 1, 59, 16]
    assert reply.option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:1::1]/ipxe.efi"
    assert reply.option(Opt.VENDOR_CLASS) == bytes.fromhex("00000157 0009") + b"PXEClient"
    assert verdict.destination == ("fe80::5054:ff:fe12:3456", 546, 0, 7)  # back to the source, scoped
    rec = verdict.record
    assert (rec.outcome, rec.port, rec.mac, rec.arch, rec.subnet, rec.msg_type) == (
        Outcome.ANSWER, 547, "52:54:00:12:34:56", "efi-x64", "2001:db8:1::/64", "SOLICIT",
    )  # fmt: skip


def test_boot_service_request_on_4011_gets_a_reply_to_its_source_port_and_scope() -> None:
    # Issue 20 step 4: the Solicit's xid, our Server ID, no IA; from [link-local]:4011.
    source = ("fe80::5054:ff:fe12:3456%br0", 4011, 0, 7)
    verdict = run(edk2_boot_request(SERVER_DUID), port=4011, source=source)
    reply = answer_of(verdict)
    assert reply.msg_type == MessageType.REPLY and reply.transaction_id == 0x3A5B7C
    assert verdict.destination == ("fe80::5054:ff:fe12:3456", 4011, 0, 7)
    assert reply.option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:1::1]/ipxe.efi"


def test_boot_service_request_from_a_global_address_is_placed_by_it() -> None:
    source = ("2001:db8:2::77", 4011, 0, 0)  # lease in the other prefix: its table and next_server
    reply = answer_of(run(edk2_boot_request(SERVER_DUID), port=4011, source=source))
    assert reply.option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:2::6]/snp.efi"


def test_preference_and_boot_file_params_when_configured() -> None:
    settings = SETTINGS.model_copy(
        update={"server": SETTINGS.server.model_copy(update={"dhcp6_preference": 255,
                                                              "boot_file_params": ["a", "b"]})}
    )  # fmt: skip
    reply = answer_of(run(edk2_solicit(), settings=settings))
    assert options.preference(reply.option(Opt.PREFERENCE)) == 255
    assert options.bootfile_params(reply.option(Opt.BOOTFILE_PARAM)) == ("a", "b")
    assert [code for code, _ in reply.options] == [2, 1, 7, 59, 60, 16]


def test_http_client_gets_its_url_and_http_vendor_class() -> None:
    data = edk2_solicit(arch=16, vendor=HTTP_VENDOR, ia=True)
    reply = answer_of(run(data))
    assert reply.option(Opt.BOOTFILE_URL) == b"http://[2001:db8:1::1]:8080/ipxe.efi"
    assert reply.option(Opt.VENDOR_CLASS) == bytes.fromhex("00000157 000a") + b"HTTPClient"


def test_http_client_with_a_plain_name_gets_a_url_on_the_built_in_http_server() -> None:
    # The same rule as over IPv4 (httpboot.boot_url): a name is served by this host's HTTP server,
    # named by its address in the prefix, in brackets; off (no --http-port): no answer, at info.
    table = {"efi-x64-http": "ipxe.efi"}
    on = load_settings(None, {"subnet": [{"cidr": "2001:db8:1::/64"}], "boot": table, "http": {"port": 8080}})
    data = edk2_solicit(arch=16, vendor=HTTP_VENDOR, ia=True)
    verdict = run(data, settings=on)
    assert answer_of(verdict).option(Opt.BOOTFILE_URL) == b"http://[2001:db8:1::1]:8080/ipxe.efi"
    assert verdict.record.server == "2001:db8:1::1"
    off = load_settings(None, {"subnet": [{"cidr": "2001:db8:1::/64"}], "boot": table})
    rec = run(data, settings=off).record
    assert (rec.reason, rec.level, rec.subnet) == (Reason.BOOT_FILE_NOT_URL, logging.INFO, "2001:db8:1::/64")
    assert rec.reason_text is not None and rec.reason_text.startswith(
        "boot file for efi-x64-http is not a URL"
    )
    # HTTP is this host's server: a prefix's next_server (a TFTP server) does not move it.
    two = [{"cidr": "2001:db8:1::/64"}, {"cidr": "2001:db8:2::/64", "next_server": "2001:db8:2::6"}]
    moved = load_settings(None, {"subnet": two, "boot": table, "http": {"port": 8080}})
    relayed = relay_forward(data, "2001:db8:2::1")
    reply = answer_of(run(relayed, source=("2001:db8:9::1", 547, 0, 0), settings=moved))
    assert reply.option(Opt.BOOTFILE_URL) == b"http://[2001:db8:1::1]:8080/ipxe.efi"


def test_a_hosts_ipv4_next_server_does_not_apply_over_ipv6() -> None:
    settings = load_settings(
        None,
        {"subnet": [{"cidr": "2001:db8:1::/64"}, {"cidr": "10.0.0.0/24"}],
         "host": [{"mac": "52:54:00:12:34:56", "boot_file": "h.efi", "next_server": "10.0.0.6"}]},
    )  # fmt: skip
    verdict = run(edk2_solicit(), settings=settings)
    assert answer_of(verdict).option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:1::1]/h.efi"
    assert verdict.record.rule == "host 52:54:00:12:34:56"


def test_arch_falls_back_to_the_vendor_class_field() -> None:
    data = edk2_solicit(arch=None, vendor=b"PXEClient:Arch:00011:UNDI:003000")
    assert answer_of(run(data)).option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:1::1]/arm64.efi"


def test_same_boot_table_as_ipv4_for_hosts_and_ipxe() -> None:
    host = options.duid_ll(bytes.fromhex("525400aabbcc"))
    assert answer_of(run(edk2_solicit(duid=host))).option(Opt.BOOTFILE_URL).endswith(b"/special.efi")  # type: ignore[union-attr]
    ignored = run(edk2_solicit(duid=options.duid_ll(bytes.fromhex("525400000099"))))
    assert ignored.reply is None and ignored.record.reason is Reason.HOST_IGNORED
    assert ignored.record.reason_text == "host 52:54:00:00:00:99 ignored"
    assert ignored.record.level == logging.INFO and ignored.record.subnet == "2001:db8:1::/64"
    ipxe = edk2_solicit(extra=opt(15, b"\x00\x04iPXE"))
    assert answer_of(run(ipxe)).option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:1::1]/boot.ipxe"
    # The same rules give the same file over IPv4 (one boot table, no second copy).
    from tests.unit.conftest import pxe_request

    v4 = pipeline4.run(
        pxe_request(arch=7, chaddr=bytes.fromhex("525400aabbcc")).encode(), port=67,
        source=(IPv4Address(0), 68), receiver=Receiver(IPv4Address("10.0.0.1")), settings=SETTINGS,
    )  # fmt: skip
    assert isinstance(v4, pipeline4.Answered) and v4.decision.boot_file == "special.efi"


def test_relay_forward_gets_a_relay_reply_with_interface_id() -> None:
    data = relay_forward(relay_forward(edk2_solicit(), "2001:db8:2::1", interface_id=b"vlan7"), "::", hops=1)
    verdict = run(data, source=("2001:db8:9::1", 547, 0, 0))
    assert answer_of(verdict).option(Opt.BOOTFILE_URL) == b"tftp://[2001:db8:2::6]/snp.efi"
    assert verdict.destination == ("2001:db8:9::1", 547, 0, 0)
    outer = decode(verdict.reply or b"")
    assert isinstance(outer, RelayMessage) and isinstance(outer.inner, RelayMessage)
    assert outer.inner.option(Opt.INTERFACE_ID) == b"vlan7"


@pytest.mark.parametrize(
    ("data", "port", "reason", "text"),
    [
        (edk2_solicit(vendor=None), 547, Reason.NOT_PXE, "not a PXE client"),
        (edk2_solicit(vendor=b"MSFT 5.0"), 547, Reason.NOT_PXE, "not a PXE client"),
        (edk2_solicit()[:-len(vendor_class(b"x")) - 31] + vendor_class(b"PXEClient", enterprise=311), 547,
         Reason.NOT_PXE, "not a PXE client"),
        (edk2_solicit(), 4011, Reason.NOT_REQUEST_ON_PXE_PORT, "not a Request on 4011 (SOLICIT)"),
        (edk2_solicit(extra=opt(2, bytes(10))), 547, Reason.SOLICIT_WITH_SERVER_ID,
         "Solicit with a Server ID"),
        (edk2_boot_request(options.duid_ll(bytes(6))), 547, Reason.OTHER_SERVER,
         "addressed to another server"),
        (edk2_boot_request(options.duid_ll(bytes(6))), 4011, Reason.OTHER_SERVER,
         "addressed to another server"),
        (bytes([3]) + edk2_solicit()[1:], 547, Reason.REQUEST_WITHOUT_SERVER_ID,
         "Request without a Server ID"),
        (bytes([5]) + edk2_solicit()[1:], 547, Reason.NOT_SOLICIT_OR_REQUEST,
         "not a Solicit, Request or Information-Request on 547 (RENEW)"),
        (edk2_solicit(arch=None, extra=opt(61, b"\x00")), 547, Reason.BAD_OPTION,
         "bad option: DHCPv6 bad option value: option 61 has odd length 1"),
        (relay_forward(edk2_solicit(), "::"), 547, Reason.NO_LINK_ADDRESS, "relayed without a link-address"),
        (relay_forward(edk2_solicit(), "2001:db8:1::1"), 4011, Reason.RELAY_ON_PXE_PORT,
         "Relay-Forward on 4011"),
        (relay_forward(edk2_solicit(), "2001:db8:7::1"), 547, Reason.PREFIX_NOT_ENABLED,
         "prefix of 2001:db8:7::1 not enabled"),
        (edk2_solicit(arch=10, vendor=b"PXEClient:Arch:00010"), 547, Reason.NO_BOOT_FILE,
         "no boot file for efi-arm32"),
        (edk2_solicit(arch=6), 547, None, None),  # ia32 has an http URL: a PXE client gets it as it is
    ],
)  # fmt: skip
def test_what_is_not_answered_and_why(
    data: bytes, port: int, reason: Reason | None, text: str | None
) -> None:
    verdict = run(data, port=port)
    if reason is None:
        assert verdict.reply is not None
        return
    assert verdict.reply is None and verdict.destination is None
    rec = verdict.record
    assert (rec.reason, rec.reason_text, rec.outcome) == (reason, text, Outcome.IGNORE)
    # Records, metric labels and levels come from the member: non-PXE traffic at debug, PXE clients
    # turned away by the policy at info.
    assert rec.level == (
        logging.INFO if reason in (Reason.NO_BOOT_FILE, Reason.HOST_IGNORED) else logging.DEBUG
    )
    assert isinstance(verdict.result, Ignored6)
    assert verdict.result.stage is (Stage.POLICY if reason in (Reason.PREFIX_NOT_ENABLED, Reason.NO_BOOT_FILE)
                                    else Stage.CLASSIFY)  # fmt: skip


def test_no_prefix_of_the_interface_enabled_is_silence() -> None:
    receiver = Receiver6("br9", ((IPv6Address("2001:db8:7::1"), 64),))
    assert run(edk2_solicit(), receiver=receiver).record.reason_text == "prefix of 2001:db8:7::1 not enabled"
    bare = Receiver6("br9", ())
    rec = run(edk2_solicit(), receiver=bare).record
    assert rec.reason_text == "prefix of br9 (no global address) not enabled"
    assert (rec.reason, rec.level, rec.reason.label if rec.reason else None) == (
        Reason.PREFIX_NOT_ENABLED, logging.DEBUG, "subnet_not_enabled",
    )  # fmt: skip


def test_malformed_datagrams_are_recorded_not_raised() -> None:
    verdict = run(b"\x01\x00\x00\x01\x00\x01\xff\xff")
    assert (verdict.record.outcome, verdict.record.stage) == (Outcome.MALFORMED, Stage.DECODE)
    assert verdict.record.reason is Reason.OPTION_OVERRUN  # the IPv4 codec's label: one metric series
    assert (
        verdict.record.reason_text == "DHCPv6 option overruns the message: option 1 says 65535 bytes, 0 left"
    )


def test_interface_addresses_order_global_first_and_drop_link_local() -> None:
    pairs = [(IPv6Address("fe80::1"), 64), (IPv6Address("fd00::1"), 64), (IPv6Address("2001:db8:1::1"), 64)]
    assert interface_addresses6(pairs) == ((IPv6Address("2001:db8:1::1"), 64), (IPv6Address("fd00::1"), 64))


@hsettings(max_examples=300, deadline=None)
@given(
    st.integers(0, (1 << 24) - 1),
    st.sampled_from([None, 0, 6, 7, 9, 10, 11, 16, 19, 300]),
    st.binary(min_size=3, max_size=40),
    st.booleans(),
    st.sampled_from([547, 4011]),
)
def test_every_answer_keeps_the_guarantees(
    xid: int, arch: int | None, duid: bytes, ia: bool, port: int
) -> None:
    data = edk2_solicit(xid, duid=duid, arch=arch, ia=ia) if port == 547 else edk2_boot_request(
        SERVER_DUID, xid, duid=duid, arch=arch or 0
    )  # fmt: skip
    run(data, port=port)  # check_answer runs on every reply


def test_config_takes_ipv6_prefixes_and_rejects_mistakes(tmp_path: object) -> None:
    settings = load_settings(None, {"subnet": [{"cidr": "2001:db8:1::5/64"}, {"cidr": "10.0.0.0/24"}]})
    assert [str(s.cidr) for s in settings.subnet] == ["2001:db8:1::/64", "10.0.0.0/24"]
    for cidr, message in [
        ("fe80::/64", "fe80::/64 is not a prefix clients get addresses in"),
        ("2001:db8::/125", "too long to hold clients"),
        ("2001:db8::/129", "not an IPv4 network or IPv6 prefix"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(None, {"subnet": [{"cidr": cidr}]})
    with pytest.raises(
        ConfigError, match=re.escape("next_server 10.0.0.6 is IPv4 but cidr 2001:db8::/64 is IPv6")
    ):
        load_settings(None, {"subnet": [{"cidr": "2001:db8::/64", "next_server": "10.0.0.6"}]})
    with pytest.raises(ConfigError, match=r"server\.dhcp6_preference"):
        load_settings(None, {"server": {"dhcp6_preference": 256}})
    assert DUID_LLT.endswith(MAC)


def test_4011_reply_is_repeated_and_the_advertise_is_not() -> None:
    # EDK II opens its read instance only after sending the 4011 Request: a Reply that wins that race
    # is lost (PXE-E16, seen once in four OVMF runs), so the service sends it again (pxe6.pipeline.REPEATS).
    boot = run(edk2_boot_request(SERVER_DUID), port=4011, source=("2001:db8:1::17a", 4011, 0, 0))
    assert boot.reply is not None and boot.repeat == REPEATS and 0 < REPEATS[0] < REPEATS[-1] < 3
    assert run(edk2_solicit()).repeat == ()


def test_check_config_shows_ipv6_prefixes_and_rejects_mistakes(tmp_path: object) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from proxydhcp.cli import app

    folder = Path(str(tmp_path))
    good = folder / "good.toml"
    good.write_text('[[subnet]]\ncidr = "2001:db8:1::/64"\nnext_server = "2001:db8:1::6"\n')
    result = CliRunner().invoke(app, ["check-config", "-c", str(good)])
    assert result.exit_code == 0 and 'cidr = "2001:db8:1::/64"' in result.output
    bad = folder / "bad.toml"
    bad.write_text('[[subnet]]\ncidr = "fe80::/64"\n')
    result = CliRunner().invoke(app, ["check-config", "-c", str(bad)])
    assert result.exit_code == 2
    assert (
        "subnet.0" in result.output and "fe80::/64 is not a prefix clients get addresses in" in result.output
    )
    flag = CliRunner().invoke(app, ["check-config", "-s", "2001:db8::/129"])
    assert flag.exit_code == 2 and "--subnet: not an IPv4 network or IPv6 prefix" in flag.output
