"""The state of one read transfer, block by block: no I/O, no clock (time is passed in).

RFC 1350 lockstep and RFC 7440 windows: the sender sends blocks `acked+1 .. acked+windowsize`; an ACK
that moves `acked` forward (a whole window, or part of it when the client saw a gap) starts the next
window from the block after it. A duplicate or stale ACK changes nothing and sends nothing: the timer
retransmits (RFC 1123 §4.2.3.1, Sorcerer's Apprentice, R-61). One exception: once the timer has had
to resend, its backoff can leave the client seconds without a packet on a lossy link while it keeps
repeating its last ACK; such a repeat gets the window again, at most once per negotiated timeout, so
duplicates can never multiply the packets sent. Block numbers on the wire wrap
65535 → 0; `acked` and `sent` count blocks in full (R-66), and an ACK is mapped to the only block in
`[acked, sent]` that has its 16-bit number.
"""

from __future__ import annotations

# on_ack results (plain ints: this runs once per ACK on the hot path)
IGNORED = 0
PROGRESS = 1
COMPLETE = 2
RESEND_NOW = 3  # a repeated ACK while in backoff: send the window again now
NO_ACK = -1  # ack_next without an ACK: take the window alone
# ack_next answers that carry no window (built once: no tuple per ACK)
_IGNORED = (IGNORED, 0, 0, 0, 0)
_PROGRESS = (PROGRESS, 0, 0, 0, 0)
_COMPLETE = (COMPLETE, 0, 0, 0, 0)

# on_timeout results
RESEND = 0
GIVE_UP = 1
ASSUME_DONE = 2

# Some clients never send the final ACK: after this many unanswered resends of the last
# block, every block before it acknowledged, the transfer is taken as delivered rather than failed.
FINAL_ACK_RETRIES = 3
MAX_INTERVAL = 8.0
# A client's `timeout` option may be as long as the give-up time: giving up is then pushed back so
# that at least this many retransmissions happen first (the interval is capped at the timeout).
MIN_RETRANSMITS = 3


class ReadTransfer:
    """Which blocks to send, and when a transfer is over."""

    __slots__ = (
        "_next_retry",
        "acked",
        "base_timeout",
        "blksize",
        "give_up",
        "last_block",
        "last_progress",
        "oack_pending",
        "resent_at",
        "retransmits",
        "retries",
        "sent",
        "size",
        "windowsize",
    )

    def __init__(
        self,
        size: int,
        blksize: int,
        windowsize: int = 1,
        *,
        oack: bool = False,
        timeout: float = 1.0,
        give_up: float = 30.0,
        now: float = 0.0,
    ) -> None:
        self.size = size
        self.blksize = blksize
        self.windowsize = windowsize
        # A short block ends the transfer, so an exact multiple of blksize ends with an empty block.
        self.last_block = size // blksize + 1
        self.acked = 0  # highest block acknowledged (0: none, or the OACK)
        self.sent = 0  # highest block sent so far
        self.oack_pending = oack
        self.base_timeout = timeout
        self.give_up = max(give_up, timeout * (MIN_RETRANSMITS + 1))
        self.last_progress = now
        self.retries = 0
        self.retransmits = 0
        self.resent_at = now  # when the window last went out again (timer or repeated ACK)
        self._next_retry = now

    def span(self, block: int) -> tuple[int, int]:
        """Byte range [start, end) of a block in the file."""
        start = (block - 1) * self.blksize
        return start, min(start + self.blksize, self.size)

    def take_window(self) -> tuple[int, int]:
        """The blocks to send now, first..last inclusive: always from the one after the last ACK."""
        _, first, last, _, _ = self.ack_next(NO_ACK, 0.0)
        return first, last

    def on_ack(self, block: int, now: float) -> int:
        """What an ACK of 16-bit `block` means: IGNORED, PROGRESS, COMPLETE or RESEND_NOW."""
        return self.ack_next(block, now, False)[0]

    def ack_next(self, block: int, now: float, take: bool = True) -> tuple[int, int, int, int, int]:
        """The one copy of the ACK rule and the window rule, in one call for the lockstep hot path (on_ack
        and take_window are this). An ACK of 16-bit `block` that makes PROGRESS, when `take`, also takes
        the next window: (PROGRESS, first, last, start, end), [start, end) the window's bytes (with
        windowsize 1 the span of its one block). Any other result: (result, 0, 0, 0, 0). `block`
        NO_ACK takes the window alone."""
        acked = self.acked
        if block != NO_ACK:
            if self.oack_pending:
                if block != 0:
                    return _IGNORED
                self.oack_pending = False
            else:
                delta = (block - acked) & 0xFFFF
                if delta == 0:
                    return (self._repeated(now), 0, 0, 0, 0)
                if delta > self.sent - acked:
                    return _IGNORED  # a block never sent
                self.acked = acked = acked + delta
            self.last_progress = now
            self.retries = 0
            if acked == self.last_block:
                return _COMPLETE
            if not take:
                return _PROGRESS
        last = acked + self.windowsize
        if last > self.last_block:
            last = self.last_block
        if last > self.sent:
            self.sent = last
        blksize = self.blksize
        end = last * blksize
        return PROGRESS, acked + 1, last, acked * blksize, end if end < self.size else self.size

    def _repeated(self, now: float) -> int:
        """A duplicate of the last ACK: nothing (Sorcerer's Apprentice), unless the timer has already
        had to resend and a negotiated timeout has passed since the last resend."""
        if self.retries and self.sent > self.acked and now - self.resent_at >= self.base_timeout:
            self.resent_at = now
            self.retransmits += 1
            return RESEND_NOW
        return IGNORED

    @property
    def done(self) -> bool:
        return self.acked == self.last_block

    @property
    def probe_abort(self) -> bool:
        """An ERROR now is a size probe (UEFI `Mtftp4GetInfo`): OACK read, no block asked (R-62)."""
        return self.oack_pending

    def interval(self) -> float:
        """Exponential backoff from the negotiated timeout, capped."""
        return min(self.base_timeout * (1 << min(self.retries, 16)), max(MAX_INTERVAL, self.base_timeout))

    def deadline(self) -> float:
        return self.last_progress + self.interval() if self.retries == 0 else self._next_retry

    def on_timeout(self, now: float) -> int:
        # Delivered only if the final ACK is all that is missing: a window whose earlier blocks were never
        # acknowledged may not have arrived at all.
        final_only = self.acked == self.last_block - 1 and not self.oack_pending
        if final_only and self.retries >= FINAL_ACK_RETRIES:
            return ASSUME_DONE
        if now - self.last_progress >= self.give_up:
            return GIVE_UP
        self.retries += 1
        self.retransmits += 1
        self.resent_at = now
        self._next_retry = now + self.interval()
        return RESEND
