"""The reply memo answers exactly as the full pipeline does, or not at all.

Every answered request of the fixture captures is learned, then replayed as other machines of the same
model would send it (other xid, secs, MAC, UUID, client id, address, source) and as arbitrary byte
mutations; each memo answer must equal the pipeline's reply, destination and record.
"""

from __future__ import annotations

import dataclasses
import random
from ipaddress import IPv4Address, IPv4Network
from socket import inet_aton, inet_ntoa
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxydhcp.config import Settings
from proxydhcp.dhcp.codes import MessageType
from proxydhcp.diagnose.capture import CaptureStats, read_datagrams
from proxydhcp.events import DecisionRecord
from proxydhcp.pxe.explain import synthetic_request
from proxydhcp.pxe.pipeline import Answered, Ignored, record, run
from proxydhcp.pxe.policy import Receiver
from proxydhcp.serve.memo import COLD_SHARE, COLD_SKIP, MAX_ENTRIES, WINDOW, Answer, ReplyMemo
from tests.fixtures import DHCP_CAPTURES, FIXTURES

HOST_MAC = "02:00:00:00:00:07"

CONFIGS = {
    "subnets": Settings.model_validate(
        {
            # Two halves of the address space, and a more specific subnet with its own table and server.
            "subnet": [
                {"cidr": "0.0.0.0/1"},
                {"cidr": "128.0.0.0/1"},
                {"cidr": "10.0.0.0/8", "next_server": "10.9.9.9", "boot": {"efi-x64": "ten.efi"}},
            ],
            "boot": {
                "bios": "undionly.kpxe",
                "efi-x64": "ipxe.efi",
                "efi-arm64": "arm64.efi",
                "ipxe": "boot.ipxe",
            },
            "host": [{"mac": HOST_MAC, "boot_file": "host.efi"}],
        }
    ),
    "direct-uefi": Settings.model_validate(
        {
            "subnet": [{"cidr": "0.0.0.0/0"}],
            "boot": {"bios": "undionly.kpxe", "efi-x64": "ipxe.efi", "efi-ia32": "i386.efi"},
            "server": {"uefi_mode": {"default": "direct"}, "server_ip": "192.0.2.10"},
        }
    ),
}
RECEIVERS = (
    Receiver(IPv4Address("192.168.1.2"), IPv4Network("192.168.1.0/24")),
    Receiver(IPv4Address("10.1.0.2"), IPv4Network("10.1.0.0/16")),
)

Frame = tuple[bytes, int, tuple[str, int]]  # payload, logical port, source


def _frames() -> list[Frame]:
    out: list[Frame] = []
    for name in DHCP_CAPTURES:
        for d in read_datagrams(FIXTURES / name, CaptureStats()):
            if d.dport in (67, 4011) and d.sport in (68, 4011):
                out.append((d.payload, d.dport, (str(d.src), d.sport)))
    return out


FRAMES = _frames()


def _pipeline(
    data: bytes, source: tuple[str, int], port: int, config: Settings, receiver: Receiver
) -> tuple[Answered | Ignored, DecisionRecord]:
    where = (IPv4Address(source[0]), source[1])
    result = run(data, port=port, source=where, receiver=receiver, settings=config)
    return result, record(result, port=port, iface="eth0", source=f"{source[0]}:{source[1]}")


def _full(frame: Frame, config: Settings, receiver: Receiver) -> Answer | None:
    data, port, source = frame
    result, rec = _pipeline(data, source, port, config, receiver)
    if not isinstance(result, Answered):
        return None
    return Answer(result.reply.encode(), (str(result.destination.address), result.destination.port), rec)


def _learn_one(memo: ReplyMemo, data: bytes, source: tuple[str, int], port: int, config: Settings,
               receiver: Receiver) -> None:  # fmt: skip
    result, rec = _pipeline(data, source, port, config, receiver)
    if isinstance(result, Answered):
        memo.learn(data, source, port, "eth0", receiver, result, result.reply.encode(), rec)


def _learn(memo: ReplyMemo, frame: Frame, config: Settings, receiver: Receiver) -> None:
    data, port, source = frame
    _learn_one(memo, data, source, port, config, receiver)


def _check(memo: ReplyMemo, frame: Frame, config: Settings, receiver: Receiver) -> Answer | None:
    """The memo's answer, after checking it is the pipeline's (or that it declined)."""
    data, port, source = frame
    got = memo.answer(data, source, port, "eth0", receiver)
    if got is not None:
        assert got == _full(frame, config, receiver)
    return got


def _option_value_at(data: bytes, code: int) -> int:
    """Offset of option `code`'s value in the options area, -1 if absent (a proper walk)."""
    i = 240
    while i < len(data):
        c = data[i]
        if c == 255:
            return -1
        if c == 0:
            i += 1
            continue
        if c == code:
            return i + 2
        i += 2 + data[i + 1]
    return -1


def _sibling(frame: Frame, rng: random.Random, mac: bytes | None = None) -> Frame:
    """The same request from another machine of the same model."""
    data, port, source = frame
    b = bytearray(data)
    b[4:8] = rng.randbytes(4)  # xid
    b[8:10] = rng.randbytes(2)  # secs
    new_mac = mac if mac is not None else b"\x02" + rng.randbytes(5)
    b[28:34] = new_mac
    uuid = _option_value_at(data, 97)
    if uuid >= 0 and data[uuid - 1] == 17:
        b[uuid + 1 : uuid + 17] = rng.randbytes(16)
    cid = _option_value_at(data, 61)
    if cid >= 0 and data[cid - 1] == 7 and data[cid] == 1:
        b[cid + 1 : cid + 7] = new_mac
    if port == 4011 and data[12:16] != bytes(4):
        b[15] = rng.randrange(1, 255)  # another address, most often in the same subnet
    src_ip, src_port = source
    if port == 4011 and src_ip != "0.0.0.0":
        head, _, _ = src_ip.rpartition(".")
        src_ip = f"{head}.{rng.randrange(1, 255)}"
        if inet_aton(source[0]) == data[12:16]:  # a client sending from its own ciaddr still does
            src_ip = inet_ntoa(b[12:16])
    return bytes(b), port, (src_ip, src_port)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("receiver", RECEIVERS, ids=lambda r: str(r.local_ip))
def test_other_machines_of_a_learned_shape_get_the_pipelines_answer(name: str, receiver: Receiver) -> None:
    config = CONFIGS[name]
    rng = random.Random(f"{name}{receiver.local_ip}")
    memo = ReplyMemo(config)
    answered = [f for f in FRAMES if _full(f, config, receiver) is not None]
    assert len(answered) >= 8
    hits = 0
    for frame in answered:
        _learn(memo, frame, config, receiver)
        assert _check(memo, frame, config, receiver) is not None  # the learned request itself
        for _ in range(20):
            if _check(memo, _sibling(frame, rng), config, receiver) is not None:
                hits += 1
    # Most siblings hit (a 4011 sibling whose new address falls in another subnet does not).
    assert hits >= len(answered) * 20 * 0.6
    assert memo.hits >= hits


def test_both_ports_are_memoised_with_their_own_destinations() -> None:
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    rng = random.Random(1)
    memo = ReplyMemo(config)
    ports = set()
    for frame in FRAMES:
        if _full(frame, config, receiver) is None:
            continue
        _learn(memo, frame, config, receiver)
        sibling = _sibling(frame, rng)
        got = _check(memo, sibling, config, receiver)
        if got is not None:
            ports.add(frame[1])
            if frame[1] == 4011:
                assert got.dest[0] in (sibling[2][0], str(IPv4Address(sibling[0][12:16])))
                assert got.reply[12:16] == sibling[0][12:16]  # the ACK carries its own ciaddr
            assert got.reply[4:8] == sibling[0][4:8]
            assert got.record.mac == sibling[0][28:34].hex(":")
    assert ports == {67, 4011}


def test_a_host_entry_is_never_answered_from_the_memo() -> None:
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    memo = ReplyMemo(config)
    host = bytes.fromhex(HOST_MAC.replace(":", ""))
    rng = random.Random(2)
    checked = 0
    for frame in FRAMES:
        if _full(frame, config, receiver) is None:
            continue
        _learn(memo, frame, config, receiver)
        as_host = _sibling(frame, rng, mac=host)
        assert memo.answer(as_host[0], as_host[2], as_host[1], "eth0", receiver) is None
        full = _full(as_host, config, receiver)
        assert full is not None and full.record.rule == f"host {HOST_MAC}"
        checked += 1
    assert checked


def test_another_receiver_iface_or_port_is_another_shape() -> None:
    config = CONFIGS["subnets"]
    frame = next(f for f in FRAMES if f[1] == 67 and _full(f, config, RECEIVERS[0]) is not None)
    memo = ReplyMemo(config)
    _learn(memo, frame, config, RECEIVERS[0])
    data, port, source = frame
    assert memo.answer(data, source, port, "eth0", RECEIVERS[0]) is not None
    assert memo.answer(data, source, port, "eth0", RECEIVERS[1]) is None
    assert memo.answer(data, source, port, "eth1", RECEIVERS[0]) is None
    assert memo.answer(data, source, 4011, "eth0", RECEIVERS[0]) is None
    # An equal but distinct receiver object is not the one learned with (ids are keys).
    twin = Receiver(RECEIVERS[0].local_ip, RECEIVERS[0].local_network)
    assert memo.answer(data, source, port, "eth0", twin) is None


def test_ignored_packets_are_not_learned_and_the_memo_is_bounded() -> None:
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    memo = ReplyMemo(config)
    for frame in FRAMES:
        if _full(frame, config, receiver) is None:
            _learn(memo, frame, config, receiver)
    assert len(memo) == 0
    frame = next(f for f in FRAMES if f[1] == 67 and _full(f, config, receiver) is not None)
    data, port, source = frame
    for i in range(MAX_ENTRIES + 10):  # distinct shapes: a changed hops byte each
        shaped = data[:3] + bytes([i % 256]) + data[4:44] + bytes([i // 256]) + data[45:]
        _learn_one(memo, shaped, source, port, config, receiver)
        assert len(memo) <= MAX_ENTRIES


def test_every_single_byte_change_is_answered_as_the_pipeline_does_or_left_to_it() -> None:
    """Each byte of each answered request changed in turn (a low and a high bit): flags, hops, giaddr,
    sname, option codes and lengths... whatever the memo still answers is the pipeline's answer."""
    for config in CONFIGS.values():
        receiver = RECEIVERS[0]
        for frame in FRAMES:
            if _full(frame, config, receiver) is None:
                continue
            memo = ReplyMemo(config)
            _learn(memo, frame, config, receiver)
            data, port, source = frame
            for at in range(len(data)):
                for bit in (0x01, 0x80):
                    changed = data[:at] + bytes([data[at] ^ bit]) + data[at + 1 :]
                    _check(memo, (changed, port, source), config, receiver)


def _at(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def test_a_4011_client_in_another_subnet_or_without_any_address_is_not_answered_as_learned() -> None:
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    frame = next(f for f in FRAMES if f[1] == 4011 and _full(f, config, receiver) is not None)
    data, port, _ = frame
    # Learned from a client whose address (its ciaddr) is in 10.0.0.0/8, which has its own table.
    ten = _at(data, 12, bytes([10, 1, 2, 3]))
    memo = ReplyMemo(config)
    _learn(memo, (ten, port, ("10.1.2.3", 4011)), config, receiver)
    assert _check(memo, (_at(ten, 12, bytes([10, 9, 8, 7])), port, ("10.9.8.7", 4011)), config, receiver)
    # Its twin in 11.0.0.0 (subnet 0.0.0.0/1: another boot table and server) is another shape.
    eleven = (_at(ten, 12, bytes([11, 1, 2, 3])), port, ("11.1.2.3", 4011))
    assert memo.answer(eleven[0], eleven[2], port, "eth0", receiver) is None
    assert _full(eleven, config, receiver) != _full((ten, port, ("10.1.2.3", 4011)), config, receiver)
    # No ciaddr: the source places it. Learned from 11.1.2.3; from 0.0.0.0 there is nowhere to answer.
    bare = _at(data, 12, bytes(4))
    memo = ReplyMemo(config)
    _learn(memo, (bare, port, ("11.1.2.3", 4011)), config, receiver)
    assert _check(memo, (bare, port, ("11.7.7.7", 4011)), config, receiver) is not None
    assert _check(memo, (bare, port, ("10.7.7.7", 4011)), config, receiver) is None  # other subnet
    assert _full((bare, port, ("0.0.0.0", 4011)), config, receiver) is None
    assert memo.answer(bare, ("0.0.0.0", 4011), port, "eth0", receiver) is None


ANSWERED = [
    (frame, name, i)
    for name, config in CONFIGS.items()
    for i, receiver in enumerate(RECEIVERS)
    for frame in FRAMES
    if _full(frame, config, receiver) is not None
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(ANSWERED),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=6),
    st.sampled_from(["keep", "zero", "other"]),
    st.integers(1, 65535),
)
def test_any_mutation_is_answered_as_the_pipeline_does_or_left_to_it(
    case: tuple[Frame, str, int], edits: list[tuple[int, int]], source_kind: str, source_port: int
) -> None:
    """Bytes changed anywhere (masked fields, option codes and lengths, padding...), another source:
    whatever the memo answers is exactly the pipeline's answer."""
    frame, name, i = case
    config, receiver = CONFIGS[name], RECEIVERS[i]
    memo = ReplyMemo(config)
    _learn(memo, frame, config, receiver)
    data, port, source = frame
    mutated = bytearray(data)
    for at, value in edits:
        if at < len(mutated):
            mutated[at] = value
    sources = {"keep": source, "zero": ("0.0.0.0", source_port), "other": ("10.200.3.4", source_port)}
    src = sources[source_kind]
    _check(memo, (bytes(mutated), port, src), config, receiver)


def test_cold_traffic_goes_straight_to_the_pipeline_for_a_while_then_the_memo_tries_again() -> None:
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    frame = next(f for f in FRAMES if f[1] == 67 and _full(f, config, receiver) is not None)
    data, port, source = frame
    memo = ReplyMemo(config)
    _learn(memo, frame, config, receiver)
    # A window of requests that never repeat a shape (each with another hops byte and sname), each
    # learned as serve does.
    for i in range(WINDOW):
        cold = data[:3] + bytes([i % 256]) + data[4:44] + bytes([1 + i // 256]) + data[45:]
        assert memo.answer(cold, source, port, "eth0", receiver) is None
        _learn_one(memo, cold, source, port, config, receiver)
    assert memo.skipping == COLD_SKIP
    # What that window learned is dropped, not kept through the skip (it did not repeat): the memory
    # cold traffic makes the memo hold is bounded by one window, only while it lasts.
    assert len(memo) == 0
    assert memo.answer(data, source, port, "eth0", receiver) is None  # skipped
    _learn(memo, frame, config, receiver)  # nor learned meanwhile
    assert len(memo) == 0
    for _ in range(COLD_SKIP - 1):
        memo.answer(data, source, port, "eth0", receiver)
    assert memo.skipping == 0
    # Tried again afresh: the first of a shape goes to the pipeline, which teaches the memo again.
    assert memo.answer(data, source, port, "eth0", receiver) is None
    _learn(memo, frame, config, receiver)
    assert _check(memo, frame, config, receiver) is not None


def test_a_window_with_enough_hits_keeps_what_it_learned() -> None:
    """A boot storm among other traffic (1 hit in COLD_SHARE lookups, or more) is not cold: the
    learned shapes stay and keep answering as the pipeline does."""
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    frame = next(f for f in FRAMES if f[1] == 67 and _full(f, config, receiver) is not None)
    data, port, source = frame
    memo = ReplyMemo(config)
    _learn(memo, frame, config, receiver)
    rng = random.Random(7)
    for i in range(WINDOW):
        if i % COLD_SHARE == 0:
            assert _check(memo, _sibling(frame, rng), config, receiver) is not None
        else:
            cold = data[:3] + bytes([i % 256]) + data[4:44] + bytes([1 + i // 256]) + data[45:]
            assert memo.answer(cold, source, port, "eth0", receiver) is None
    assert memo.skipping == 0
    assert len(memo) == 1
    assert _check(memo, _sibling(frame, rng), config, receiver) is not None


def test_learn_never_reuses_the_key_of_another_context() -> None:
    """`learn` reuses the key of the request `answer` just missed, only if it is the same request."""
    config, receiver = CONFIGS["subnets"], RECEIVERS[0]
    frame = next(f for f in FRAMES if f[1] == 4011 and _full(f, config, receiver) is not None)
    data, port, _ = frame
    ten = _at(data, 12, bytes(4))
    memo = ReplyMemo(config)
    assert memo.answer(ten, ("10.1.2.3", 4011), port, "eth0", receiver) is None  # subnet 10.0.0.0/8
    _learn_one(memo, ten, ("11.1.2.3", 4011), port, config, receiver)  # learned for 0.0.0.0/1
    assert _check(memo, (ten, port, ("11.4.4.4", 4011)), config, receiver) is not None
    assert _check(memo, (ten, port, ("10.4.4.4", 4011)), config, receiver) is None


# -- every request shape the policy tells apart -----------------------------------------------------

SHAPE = st.fixed_dictionaries(
    {
        "arch": st.sampled_from([0, 7, 11, 16]),  # BIOS, UEFI (BINL or direct), HTTP boot (HTTPClient)
        "user_class": st.sampled_from([None, "iPXE"]),  # the iPXE rule
        "kind": st.sampled_from(
            [(MessageType.DISCOVER, 67), (MessageType.REQUEST, 4011), (MessageType.INFORM, 4011)]
        ),
        "giaddr": st.sampled_from([None, None, "10.1.0.1", "192.168.7.1"]),  # relayed or not, which subnet
        # Networks of the client's own addresses; the host byte is the machine's (see _shaped).
        "ciaddr": st.sampled_from([None, "10.1.2", "11.1.2", "192.168.1", "10.1.0"]),  # 10.1.0.1: the relay
        "source": st.sampled_from(["0.0.0.0", "ciaddr", "giaddr", "10.1.2", "11.9.9", "192.168.1"]),
        "relay_agent": st.booleans(),  # option 82, echoed
        "config": st.sampled_from(sorted(CONFIGS)),  # subnet tables and servers, uefi_mode direct
        "receiver": st.sampled_from(range(len(RECEIVERS))),
    }
)


_EXAMPLE: dict[str, Any] = {
    "arch": 0,
    "user_class": None,
    "kind": (MessageType.REQUEST, 4011),
    "giaddr": None,
    "ciaddr": None,
    "source": "0.0.0.0",
    "relay_agent": False,
    "config": "subnets",
    "receiver": 0,
}


def _shaped(shape: dict[str, Any], mac: str, host: int) -> tuple[Frame, Settings, Receiver]:
    """The request of `shape` from machine `mac` whose addresses end in `host`."""
    mtype, port = shape["kind"]
    ciaddr = f"{shape['ciaddr']}.{host}" if shape["ciaddr"] else None
    source = shape["source"]
    if source == "ciaddr":
        source = ciaddr or "0.0.0.0"
    elif source == "giaddr":  # a relay sends from its own address
        source = shape["giaddr"] or "0.0.0.0"
    elif source != "0.0.0.0":
        source = f"{source}.{host + 1}"
    request = synthetic_request(
        mac=mac,
        arch=shape["arch"],
        message_type=mtype,
        user_class=shape["user_class"],
        giaddr=IPv4Address(shape["giaddr"] or 0),
        ciaddr=IPv4Address(ciaddr or 0),
    )
    if shape["relay_agent"]:
        request = dataclasses.replace(request, options=(*request.options, (82, b"\x01\x04eth0")))
    sent_from = (source, 68 if port == 67 else 4011)
    return (request.encode(), port, sent_from), CONFIGS[shape["config"]], RECEIVERS[shape["receiver"]]


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    SHAPE,
    SHAPE,
    st.sampled_from(["arch", "user_class", "kind", "giaddr", "ciaddr", "source", "relay_agent", "receiver"]),
    st.integers(2, 253),
)
@example(  # an offer goes to ciaddr, learned from a client whose source was its ciaddr
    {**_EXAMPLE, "kind": (MessageType.DISCOVER, 67), "ciaddr": "10.1.2", "source": "ciaddr"},
    {**_EXAMPLE, "source": "10.1.2"},
    "source",
    5,
)
@example(  # a relayed offer goes to the relay, learned from a request the relay sent
    {**_EXAMPLE, "kind": (MessageType.DISCOVER, 67), "giaddr": "10.1.0.1", "source": "giaddr"},
    {**_EXAMPLE, "source": "10.1.2"},
    "source",
    5,
)
@example(  # a relayed offer goes to the relay, learned from a client whose ciaddr was the relay's
    {**_EXAMPLE, "kind": (MessageType.DISCOVER, 67), "giaddr": "10.1.0.1", "ciaddr": "10.1.0"},
    {**_EXAMPLE, "ciaddr": "10.1.2"},
    "ciaddr",
    5,
)
def test_every_shape_the_policy_tells_apart_is_answered_as_the_pipeline_does(
    learned: dict[str, Any], varied: dict[str, Any], key: str, other: int
) -> None:
    """A request of each shape (architecture, iPXE or not, port and message type, relayed or not,
    client and source address, option 82, configuration, receiving address) is learned; another
    machine's request of the same shape, and of the shape with one of those changed, gets from the
    memo exactly the pipeline's answer or nothing. Another machine of the learned shape gets it from
    the memo."""
    frame, config, receiver = _shaped(learned, "52:54:00:aa:00:01", 1)
    memo = ReplyMemo(config)
    _learn(memo, frame, config, receiver)
    sibling_mac = f"52:54:00:bb:00:{other:02x}"
    sibling, _, _ = _shaped(learned, sibling_mac, other)
    got = _check(memo, sibling, config, receiver)
    # The memo does answer a learned shape (10.1.0.1 is the relay's address: another host's is not).
    if _full(frame, config, receiver) is not None and learned["ciaddr"] != "10.1.0":
        assert got is not None
    asked, _, asked_receiver = _shaped({**learned, key: varied[key]}, sibling_mac, other)
    _check(memo, asked, config, asked_receiver)
