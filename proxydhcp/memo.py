"""Answers to request shapes already seen: a boot storm is hundreds of identical machines, whose
DISCOVERs and 4011 REQUESTs differ only in who they are (xid, MAC, UUID, client id, address, secs).

The full pipeline (`pipeline.process_datagram`) answers the first request of a shape; `learn` keeps
its reply as a template. A later request with the same bytes everywhere except those per-client
fields gets the template with its own values patched in, and the same decision record with its own
source, MAC, xid and destination. Pure: no I/O.

Why that is the pipeline's answer, field by field:
- masked and patched: xid, chaddr (6 bytes: hlen is in the key) and the GUID of option 97 are copied
  into the reply; ciaddr is copied into a 4011 ACK and decides the destination; secs and the client
  id (61) are read by nothing.
- what the masked fields decide is in the key: whether ciaddr and the source are 0.0.0.0, the source
  port, the subnet the client address falls in (4011), and whether the MAC has a `[[host]]` entry
  (those are never memoised).
- everything else (op, htype, hlen, hops, flags, giaddr, sname, file, every option byte, the type
  byte of 97) is in the key as bytes, so the decode, the checks and the decision see the same input.
- only answers are learned: an ignored packet's record names its own values, and it costs no reply.
A request whose 97 or 61 sits where a byte search does not find it first is still right: the found
position is in the key, so it only ever matches requests laid out the same way.
`tests/unit/test_memo.py` checks hits against the full pipeline on every answered fixture frame.
"""

from __future__ import annotations

from socket import inet_aton, inet_ntoa
from typing import NamedTuple, cast

from proxydhcp.config import Settings
from proxydhcp.events import DecisionRecord
from proxydhcp.pipeline import Verdict, ip_text
from proxydhcp.pxe.classify import DHCP_PORT
from proxydhcp.pxe.policy import Receiver, subnet_index

__all__ = ["COLD_SKIP", "MAX_ENTRIES", "WINDOW", "Answer", "ReplyMemo"]

MAX_ENTRIES = 1024  # shapes remembered; a flood of distinct shapes clears it, costing only misses
# Traffic whose shapes do not repeat (every request different, or none of it answered) pays the key
# for nothing: when fewer than 1 in COLD_SHARE lookups of a WINDOW hit, the next COLD_SKIP requests
# go straight to the pipeline, then the memo tries again.
WINDOW = 1024
COLD_SHARE = 8
COLD_SKIP = 8192

_FIXED = 240  # BOOTP header + magic cookie: options start here
_UUID = b"a\x11\x00"  # option 97, length 17, type 0: the 16-byte GUID follows
_CLIENT_ID = b"=\x07\x01"  # option 61, length 7, htype 1: the MAC follows
_NO_ADDRESS = b"\0\0\0\0"
_OFFER_CLIENT_PORT = 68


class Answer(NamedTuple):
    """What the server sends, and logs: the reply, its (address text, port), the record."""

    reply: bytes
    dest: tuple[str, int]
    record: DecisionRecord


class _Entry(NamedTuple):
    receiver: Receiver  # held: the key has its id
    template: bytes  # the reply learned from
    uuid_at: int  # where the echoed GUID is in the template, -1: not echoed
    ciaddr_copied: bool  # a 4011 ACK carries the request's ciaddr
    dest: tuple[str, int] | None  # fixed destination (relay, broadcast); None: from the request
    dest_text: str | None
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

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, data: bytes, source: tuple[str, int], port: int, iface: str, receiver: Receiver
             ) -> tuple[tuple[object, ...], int, int] | None:  # fmt: skip
        """(key, GUID position, client id position) of a request, or None: never memoised."""
        if len(data) < _FIXED or data[2] != 6 or data[28:34] in self._host_macs:
            return None
        uuid = data.find(_UUID, _FIXED)
        cid = data.find(_CLIENT_ID, _FIXED)
        ciaddr_zero = data[12:16] == _NO_ADDRESS
        source_zero = source[0] == "0.0.0.0"
        subnet = -1
        if port != DHCP_PORT and data[24:28] == _NO_ADDRESS:
            # 4011, not relayed: the client's own address (ciaddr, else the source) picks the subnet.
            address = int.from_bytes(data[12:16] if not ciaddr_zero else inet_aton(source[0]), "big")
            subnet = subnet_index(self.settings, address)
        # Masked: xid 4-8, secs 8-10, ciaddr 12-16, chaddr 28-44, the GUID, the client id's MAC.
        cuts = sorted(p for p in (uuid + 3, cid + 3) if p > 2)
        parts = [data[:4], data[10:12], data[16:28]]
        start = 44
        for at in cuts:
            if at < start:  # the two searches overlapped: not a shape worth the care
                return None
            parts.append(data[start:at])
            start = at + (16 if at == uuid + 3 else 6)
        parts.append(data[start:])
        key = (port, iface, id(receiver), ciaddr_zero, source_zero, subnet, uuid, cid,
               b"".join(parts))  # fmt: skip
        return key, uuid, cid

    def answer(self, data: bytes, source: tuple[str, int], port: int, iface: str, receiver: Receiver
               ) -> Answer | None:  # fmt: skip
        """The pipeline's answer to `data` if its shape was learned, else None (run the pipeline)."""
        if self.skipping:
            self.skipping -= 1
            return None
        self._lookups += 1
        if self._lookups >= WINDOW:
            if self._window_hits * COLD_SHARE < self._lookups:
                self.skipping = COLD_SKIP
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
        dest, dest_text = entry.dest, entry.dest_text
        if dest is None:
            if port == DHCP_PORT:  # a client with an address gets its offer there (offer_destination)
                dest = (inet_ntoa(data[12:16]), _OFFER_CLIENT_PORT)
            elif source[0] == "0.0.0.0":  # sent before its lease was set up: its ciaddr (pxe_destination)
                dest = (inet_ntoa(data[12:16]), source[1])
            else:
                dest = source
            dest_text = f"{dest[0]}:{dest[1]}"
        r = entry.record
        record = DecisionRecord(
            r.outcome, r.stage, r.port, r.iface, f"{source[0]}:{source[1]}", data[28:34].hex(":"),
            int.from_bytes(data[4:8], "big"), r.msg_type, r.arch, r.subnet, None, r.boot_file, r.server,
            dest_text, r.rule,
        )  # fmt: skip
        self.hits += 1
        self._window_hits += 1
        return Answer(reply, dest, record)

    def learn(self, data: bytes, source: tuple[str, int], port: int, iface: str, receiver: Receiver,
              verdict: Verdict) -> None:  # fmt: skip
        """Keep the pipeline's answer to `data` as the template of its shape."""
        reply, destination, record = verdict
        missed, self._missed = self._missed, None
        if reply is None or destination is None or record.delay_ms is not None or self.skipping:
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
        ciaddr_copied = port != DHCP_PORT
        if reply[4:8] != data[4:8] or reply[28:34] != data[28:34] or reply[34:44] != bytes(10):
            return
        if ciaddr_copied and reply[12:16] != data[12:16]:
            return
        fixed = port == DHCP_PORT and (data[24:28] != _NO_ADDRESS or data[12:16] == _NO_ADDRESS)
        dest = (ip_text(destination.address), destination.port) if fixed else None
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = _Entry(
            receiver, reply, uuid_at, ciaddr_copied, dest, record.destination if fixed else None, record
        )
