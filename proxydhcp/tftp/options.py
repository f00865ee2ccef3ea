"""Option negotiation: RFC 2347 (OACK), 2348 (blksize), 2349 (tsize, timeout), 7440 (windowsize).

The OACK lists only the options accepted, in the client's order, lowercased. Unknown options (bootmgfw's
`msftwindow`) and values that are not decimal integers in range are ignored rather than refused: a
client that gets no OACK entry falls back to the RFC 1350 default, which every client handles (R-62, R-68).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxydhcp.tftp.packet import OAck, Options

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535
# Block numbers are 16 bits: a window must stay well under half the space for ACKs to be unambiguous.
WINDOW_LIMIT = 32767


@dataclass(frozen=True, slots=True)
class Negotiated:
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: int | None = None
    oack: Options = ()


def _decimal(value: str, low: int, high: int) -> int | None:
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        return None
    number = int(value)
    return number if low <= number <= high else None


def negotiate(
    options: Options,
    *,
    netascii: bool,
    size: int | None,
    max_blksize: int,
    max_windowsize: int,
    mtu: int | None = None,
) -> Negotiated:
    """Decide blksize, windowsize and timeout from an RRQ's options.

    `size` is the file size (None when unknown: then tsize is not offered); `mtu` is the path MTU to the
    client, which caps blksize at MTU - 32 (IPv4 + UDP + TFTP headers) because many ROMs cannot
    reassemble fragments (R-63).
    """
    blksize, windowsize, timeout = DEFAULT_BLKSIZE, 1, None
    accepted: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw_name, value in options:
        name = raw_name.lower()
        if name in seen:
            continue
        seen.add(name)
        if name == "blksize":
            asked = _decimal(value, MIN_BLKSIZE, MAX_BLKSIZE)
            if asked is None:
                continue
            limit = max(MIN_BLKSIZE, min(max_blksize, MAX_BLKSIZE))
            if mtu is not None:
                limit = max(MIN_BLKSIZE, min(limit, mtu - 32))
            blksize = min(asked, limit)
            accepted.append((name, str(blksize)))
        elif name == "windowsize":
            asked = _decimal(value, MIN_WINDOWSIZE, MAX_WINDOWSIZE)
            if asked is None or netascii:  # netascii stays lockstep
                continue
            windowsize = min(asked, max(1, min(max_windowsize, WINDOW_LIMIT)))
            accepted.append((name, str(windowsize)))
        elif name == "timeout":
            asked = _decimal(value, MIN_TIMEOUT, MAX_TIMEOUT)
            if asked is None:
                continue
            timeout = asked
            accepted.append((name, str(timeout)))
        elif name == "tsize":
            # Octet only: the netascii size is not known before conversion.
            if _decimal(value, 0, 2**63) is None or netascii or size is None:
                continue
            accepted.append((name, str(size)))
    return Negotiated(blksize, windowsize, timeout, tuple(accepted))


NEGOTIATION_CACHE_SIZE = 256


class Negotiator:
    """`negotiate` with the server's limits, memoised with the encoded OACK: a boot storm repeats a handful
    of (options, file size, path MTU) combinations, and negotiating plus encoding costs more than a
    lookup. The memo is bounded (cleared when full): option strings come from clients."""

    __slots__ = ("_memo", "max_blksize", "max_windowsize")

    def __init__(self, max_blksize: int, max_windowsize: int) -> None:
        self.max_blksize = max_blksize
        self.max_windowsize = max_windowsize
        self._memo: dict[tuple[Options, bool, int | None, int | None], tuple[Negotiated, bytes | None]] = {}

    def __call__(
        self, options: Options, *, netascii: bool, size: int | None, mtu: int | None = None
    ) -> tuple[Negotiated, bytes | None]:
        """The negotiated values and the OACK to send (None: no option accepted, answer with data)."""
        key = (options, netascii, size, mtu)
        found = self._memo.get(key)
        if found is not None:
            return found
        negotiated = negotiate(
            options,
            netascii=netascii,
            size=size,
            max_blksize=self.max_blksize,
            max_windowsize=self.max_windowsize,
            mtu=mtu,
        )
        found = (negotiated, OAck(negotiated.oack).encode() if negotiated.oack else None)
        if len(self._memo) >= NEGOTIATION_CACHE_SIZE:
            self._memo.clear()
        self._memo[key] = found
        return found
