"""Answers to request shapes already seen: a boot storm is hundreds of identical machines, whose
DISCOVERs and 4011 REQUESTs differ only in who they are (xid, MAC, UUID, client id, address, secs).

The pipeline (`pxe.pipeline.run`) answers the first request of a shape; `learn` keeps its reply as a
template. A later request with the same bytes everywhere except those per-client fields gets the
template with its own values patched in, and the same decision record with its own source, MAC, xid
and destination. Pure: no I/O. `[server] reply_memo = false` turns it off.

Why that is the pipeline's answer, field by field:
- masked and patched: xid, chaddr (6 bytes: hlen is in the key) and the GUID of option 97 are copied
  into the reply where the learned reply has the learned request's values; secs and the client id
  (61) are read by nothing.
- ciaddr and the source address are masked; what the pipeline reads of them is in the key: which of
  them are 0.0.0.0, which are equal to each other or to giaddr, and the enabled subnet the client's
  own address falls in (`Settings.subnet_for`, the policy's own lookup). Where the reply and its
  destination take one of them is learned from the pipeline's answer, not re-derived here: a shape
  whose answer takes a value the key cannot tell apart is not learned.
- the MAC is masked, so MACs with a `[[host]]` entry (the only policy input that reads it) are
  never memoised.
- everything else (op, htype, hlen, hops, flags, giaddr, sname, file, every option byte, the type
  byte of 97, the source port) is in the key as bytes, so the decode, the checks and the decision see
  the same input.
- only answers are learned: an ignored packet's record names its own values, and it costs no reply.
`tests/unit/test_memo.py` checks hits against the pipeline on every answered fixture frame, on byte
mutations of them and on generated requests of every shape the policy tells apart.
"""

from __future__ import annotations

from enum import Enum
from socket import inet_aton, inet_ntoa
from typing import NamedTuple, cast

from proxydhcp.config import Settings
from proxydhcp.dhcp.delivery import dotted
from proxydhcp.events import DecisionRecord, answer_record
from proxydhcp.pxe.classify import DHCP_PORT
from proxydhcp.pxe.pipeline import Answered
from proxydhcp.pxe.policy import Receiver

__all__ = ["COLD_SHARE", "COLD_SKIP", "MAX_ENTRIES", "WINDOW", "Answer", "ReplyMemo"]

MAX_ENTRIES = 1024  # shapes remembered; a flood of distinct shapes clears it, costing only misses
# Traffic whose shapes do not repeat (every request different, or none of it answered) pays the key
# for nothing: when fewer than 1 in COLD_SHARE lookups of a WINDOW hit, the next COLD_SKIP requests
# go straight to the pipeline, then the memo tries again, afresh: what it learned from that window is
# dropped (up to MAX_ENTRIES replies and records, about 1 MiB, kept through the skip for nothing).
WINDOW = 1024
COLD_SHARE = 8
COLD_SKIP = 8192

_FIXED = 240  # BOOTP header + magic cookie: options start here
_UUID = b"a\x11\x00"  # option 97, length 17, type 0: the 16-byte GUID follows
_CLIENT_ID = b"=\x07\x01"  # option 61, length 7, htype 1: the MAC follows
_NO_ADDRESS = b"\0\0\0\0"


class _From(Enum):
    """Where a learned destination address comes from in a later request of the shape."""

    FIXED = 0  # the learned address (a relay, the broadcast address)
    CIADDR = 1
    SOURCE = 2


# Read once: on Python 3.11 an enum class's attribute goes through EnumType.__getattr__ (a hook).
_FROM_CIADDR, _FROM_SOURCE = _From.CIADDR, _From.SOURCE


class Answer(NamedTuple):
    """What the server sends, and logs: the reply, its (address text, port), the record."""

    reply: bytes
    dest: tuple[str, int]
    record: DecisionRecord


class _Entry(NamedTuple):
    receiver: Receiver  # held: the key has its id
    template: bytes  # the reply learned from
    uuid_at: int  # where the echoed GUID is in the template, -1: not echoed
    ciaddr_copied: bool  # the reply carries the request's ciaddr
    dest_from: _From
    dest: tuple[str, int]  # the learned destination; its address replaced unless FIXED
    dest_suffix: str  # what the destination's text adds to "address:port" (" (broadcast)")
    record: DecisionRecord  # the learned record; per-client fields replaced on a hit


class ReplyMemo:
    """The learned shapes of one Settings object (a reload starts afresh)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hits = 0
        self.skipping = 0  # requests left to send straight to the pipeline (cold traffic)
        self._lookups = 0  # in the current window
        self._window_hits = 0
        # The last missed request, its context and key: (data, source, port, iface, receiver, key).
        self._missed: tuple[object, ...] | None = None
        self._entries: dict[tuple[object, ...], _Entry] = {}
        self._host_macs = frozenset(bytes.fromhex(h.mac.replace(":", "")) for h in settings.host)
        # Subnets by their position, for the key (the same lookup the policy makes).
        subnet_ids = {id(entry): i for i, entry in enumerate(settings.subnet)}
        self._subnets_v4 = tuple(
            (network, mask, subnet_ids[id(entry)]) for network, mask, entry in settings.subnet_table(4)
        )

    def __len__(self) -> int:
        return len(self._entries)

    def _key(
        self, data: bytes, source: tuple[str, int], port: int, iface: str, receiver: Receiver
    ) -> tuple[tuple[object, ...], int, int] | None:
        """(key, GUID position, client id position) of a request, or None: never memoised."""
        if len(data) < _FIXED or data[2] != 6 or data[28:34] in self._host_macs:
            return None
        uuid = data.find(_UUID, _FIXED)
        cid = data.find(_CLIENT_ID, _FIXED)
        ciaddr, giaddr, source_ip = data[12:16], data[24:28], inet_aton(source[0])
        # Which of the masked addresses are zero or equal one another or giaddr (in the key as bytes):
        # all a destination or reply rule can tell without reading their values.
        pattern = (
            ciaddr == _NO_ADDRESS,
            source_ip == _NO_ADDRESS,
            ciaddr == source_ip,
            ciaddr == giaddr,
            source_ip == giaddr,
        )
        subnet = -1
        if port != DHCP_PORT and giaddr == _NO_ADDRESS:
            # 4011, not relayed: the client's own address (ciaddr, else the source) picks the subnet.
            # Settings.subnet_for's own table, walked on the int: no IPv4Address built per request.
            own = int.from_bytes(ciaddr if ciaddr != _NO_ADDRESS else source_ip, "big")
            for network, mask, index in self._subnets_v4:
                if own & mask == network:
                    subnet = index
                    break
        # Masked: xid 4-8, secs 8-10, ciaddr 12-16, chaddr 28-44, the GUID, the client id's MAC.
        # The cut points in order, without a generator and sorted(): the key is built on every lookup.
        if uuid < 0:
            cuts: tuple[int, ...] = () if cid < 0 else (cid + 3,)
        elif cid < 0:
            cuts = (uuid + 3,)
        else:
            cuts = (uuid + 3, cid + 3) if uuid < cid else (cid + 3, uuid + 3)
        parts = [data[:4], data[10:12], data[16:28]]
        start = 44
        for at in cuts:
            if at < start:  # the two searches overlapped: not a shape worth the care
                return None
            parts.append(data[start:at])
            start = at + (16 if at == uuid + 3 else 6)
        parts.append(data[start:])
        key = (port, iface, id(receiver), source[1], pattern, subnet, uuid, cid, b"".join(parts))
        return key, uuid, cid

    def answer(
        self, data: bytes, source: tuple[str, int], port: int, iface: str, receiver: Receiver
    ) -> Answer | None:
        """The pipeline's answer to `data` if its shape was learned, else None (run the pipeline)."""
        if self.skipping:
            self.skipping -= 1
            return None
        self._lookups += 1
        if self._lookups >= WINDOW:
            if self._window_hits * COLD_SHARE < self._lookups:
                self.skipping = COLD_SKIP
                self._entries.clear()
            self._lookups = self._window_hits = 0
        found = self._key(data, source, port, iface, receiver)
        self._missed = (data, source, port, iface, receiver, found)  # a miss: `learn` reuses the key
        if found is None:
            return None
        entry = self._entries.get(found[0])
        if entry is None or entry.receiver is not receiver:
            return None
        self._missed = None
        _, uuid, _ = found
        t = entry.template
        ciaddr = data[12:16] if entry.ciaddr_copied else t[12:16]
        parts = [t[:4], data[4:8], t[8:12], ciaddr, t[16:28], data[28:34]]
        if entry.uuid_at >= 0:
            at = entry.uuid_at
            parts += (t[34:at], data[uuid + 3 : uuid + 19], t[at + 16 :])
        else:
            parts.append(t[34:])
        reply = b"".join(parts)
        dest = entry.dest
        if entry.dest_from is _FROM_CIADDR:
            dest = (inet_ntoa(data[12:16]), dest[1])
        elif entry.dest_from is _FROM_SOURCE:
            dest = (source[0], dest[1])
        r = entry.record
        record = answer_record(
            port=r.port,
            iface=r.iface,
            source=f"{source[0]}:{source[1]}",
            mac=data[28:34].hex(":"),
            xid=int.from_bytes(data[4:8], "big"),
            msg_type=r.msg_type,
            arch=r.arch,
            subnet=r.subnet,
            boot_file=r.boot_file,
            server=r.server,
            destination=f"{dest[0]}:{dest[1]}{entry.dest_suffix}",
            rule=r.rule,
        )
        self.hits += 1
        self._window_hits += 1
        return Answer(reply, dest, record)

    def learn(
        self,
        data: bytes,
        source: tuple[str, int],
        port: int,
        iface: str,
        receiver: Receiver,
        answered: Answered,
        reply: bytes,
        record: DecisionRecord,
    ) -> None:
        """Keep the pipeline's answer to `data` (`answered`, encoded as `reply`, recorded as `record`)
        as the template of its shape."""
        missed, self._missed = self._missed, None
        if record.delay_ms is not None or self.skipping:
            return
        if missed is not None and missed[:5] == (data, source, port, iface, receiver):
            found = cast("tuple[tuple[object, ...], int, int] | None", missed[5])
        else:
            found = self._key(data, source, port, iface, receiver)
        if found is None:
            return
        key, uuid, _ = found
        uuid_at = -1
        if uuid >= 0:
            echoed = _UUID + data[uuid + 3 : uuid + 19]
            uuid_at = reply.find(echoed, _FIXED)
            if uuid_at < 0 or reply.find(echoed, uuid_at + 1) >= 0:
                return  # not echoed once as the pipeline does: leave this shape to the pipeline
            uuid_at += 3
        if reply[4:8] != data[4:8] or reply[28:34] != data[28:34] or reply[34:44] != bytes(10):
            return
        ciaddr = data[12:16]
        ciaddr_copied = reply[12:16] == ciaddr
        if not ciaddr_copied and reply[12:16] != _NO_ADDRESS:
            return  # a reply ciaddr of another origin: not a shape this memo knows how to patch
        destination = answered.destination
        address = destination.address.packed
        if address == inet_aton(source[0]):
            dest_from = _From.SOURCE
        elif address == ciaddr:
            dest_from = _From.CIADDR
        else:
            dest_from = _From.FIXED
        dest = (dotted(destination.address), destination.port)
        suffix = record.destination.removeprefix(f"{dest[0]}:{dest[1]}") if record.destination else ""
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = _Entry(receiver, reply, uuid_at, ciaddr_copied, dest_from, dest, suffix, record)
