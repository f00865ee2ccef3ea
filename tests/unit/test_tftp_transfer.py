"""The read transfer state, block by block (lockstep, windows, rollover, timeouts)."""

from __future__ import annotations

import random

import pytest

from proxydhcp.tftp import transfer as tx
from proxydhcp.tftp.transfer import ReadTransfer


def test_short_file_lockstep() -> None:
    t = ReadTransfer(size=1000, blksize=512)
    assert t.last_block == 2
    assert t.take_window() == (1, 1)
    assert t.span(1) == (0, 512)
    assert t.on_ack(1, now=0.1) == tx.PROGRESS
    assert t.take_window() == (2, 2)
    assert t.span(2) == (512, 1000)
    assert t.on_ack(2, now=0.2) == tx.COMPLETE
    assert t.done


def test_exact_multiple_ends_with_empty_block() -> None:
    t = ReadTransfer(size=1024, blksize=512)
    assert t.last_block == 3
    t.take_window()
    t.on_ack(1, 0)
    t.take_window()
    assert t.on_ack(2, 0) == tx.PROGRESS
    assert t.take_window() == (3, 3)
    assert t.span(3) == (1024, 1024)  # empty DATA
    assert t.on_ack(3, 0) == tx.COMPLETE


def test_empty_file_is_one_empty_block() -> None:
    t = ReadTransfer(size=0, blksize=512)
    assert t.take_window() == (1, 1)
    assert t.span(1) == (0, 0)
    assert t.on_ack(1, 0) == tx.COMPLETE


def test_duplicate_ack_sends_nothing() -> None:
    t = ReadTransfer(size=5000, blksize=512)
    t.take_window()
    assert t.on_ack(1, 0) == tx.PROGRESS
    t.take_window()
    # Sorcerer's Apprentice: the duplicate ACK 1 must not trigger a resend of block 2
    assert t.on_ack(1, 0) == tx.IGNORED
    assert t.acked == 1
    assert t.sent == 2


def test_a_repeated_ack_in_backoff_resends_at_most_once_per_timeout() -> None:
    """After the timer had to resend, the client repeating its ACK gets the block again without
    waiting out the backoff, but never more than once per negotiated timeout."""
    t = ReadTransfer(size=5000, blksize=512, timeout=1.0)
    t.take_window()
    assert t.on_ack(1, 0.1) == tx.PROGRESS
    t.take_window()
    assert t.on_ack(1, 0.5) == tx.IGNORED  # no timeout yet: Sorcerer's Apprentice rule
    assert t.on_timeout(1.2) == tx.RESEND  # block 2 resent; the next timer resend is 2 s later
    assert t.on_ack(1, 1.5) == tx.IGNORED  # less than a timeout since that resend
    assert t.on_ack(1, 2.3) == tx.RESEND_NOW
    assert t.on_ack(1, 2.4) == tx.IGNORED and t.on_ack(1, 3.2) == tx.IGNORED
    assert t.on_ack(1, 3.4) == tx.RESEND_NOW
    assert t.retransmits == 3 and t.acked == 1
    assert t.on_ack(2, 3.5) == tx.PROGRESS and t.retries == 0
    t.take_window()
    assert t.on_ack(2, 5.0) == tx.IGNORED  # progress ended the backoff: back to the plain rule


def test_future_ack_ignored() -> None:
    t = ReadTransfer(size=5000, blksize=512)
    t.take_window()
    assert t.on_ack(5, 0) == tx.IGNORED
    assert t.on_ack(2, 0) == tx.IGNORED
    assert t.acked == 0
    assert t.on_ack(1, 0) == tx.PROGRESS


def test_oack_then_ack_zero() -> None:
    t = ReadTransfer(size=100, blksize=512, oack=True)
    assert t.probe_abort
    assert t.on_ack(1, 0) == tx.IGNORED  # nothing sent yet
    assert t.on_ack(0, 0) == tx.PROGRESS
    assert not t.probe_abort
    assert t.take_window() == (1, 1)
    assert t.on_ack(0, 0) == tx.IGNORED  # a duplicate ACK of the OACK


def test_tsize_probe_abort_is_recognised() -> None:
    # EDK2 Mtftp4GetInfo: RRQ with tsize, reads the OACK, sends ERROR: no block was asked for.
    t = ReadTransfer(size=10_000_000, blksize=1468, oack=True)
    assert t.probe_abort
    t.on_ack(0, 0)
    t.take_window()
    assert not t.probe_abort  # an ERROR now is a real abort


def test_rollover_65535_to_0() -> None:
    blocks = 65535 + 10
    t = ReadTransfer(size=blocks * 512 - 1, blksize=512)
    for block in range(1, blocks + 1):
        first, last = t.take_window()
        assert first == last == block
        result = t.on_ack(block & 0xFFFF, 0)
        assert result == (tx.COMPLETE if block == blocks else tx.PROGRESS)
    assert t.acked == blocks


def test_rollover_with_windows() -> None:
    t = ReadTransfer(size=70000 * 512, blksize=512, windowsize=16)
    t.acked = t.sent = 65528
    assert t.take_window() == (65529, 65544)
    assert t.on_ack(65544 & 0xFFFF, 0) == tx.PROGRESS  # wire block 8
    assert t.acked == 65544
    assert t.on_ack(65535, 0) == tx.IGNORED  # an old ACK from before the wrap


def test_window_full_and_partial_ack() -> None:
    t = ReadTransfer(size=100 * 512, blksize=512, windowsize=8)
    assert t.take_window() == (1, 8)
    assert t.on_ack(8, 0) == tx.PROGRESS
    assert t.take_window() == (9, 16)
    # RFC 7440: the client saw a gap after 11 and ACKs 11: the next window starts at 12
    assert t.on_ack(11, 0) == tx.PROGRESS
    assert t.take_window() == (12, 19)
    assert t.on_ack(11, 0) == tx.IGNORED


def test_last_window_is_short() -> None:
    t = ReadTransfer(size=10 * 512 + 1, blksize=512, windowsize=8)
    assert t.last_block == 11
    t.take_window()
    t.on_ack(8, 0)
    assert t.take_window() == (9, 11)
    assert t.on_ack(11, 0) == tx.COMPLETE


def test_timeout_resends_window_from_last_ack_with_backoff() -> None:
    t = ReadTransfer(size=100 * 512, blksize=512, windowsize=4, timeout=1.0, give_up=30.0, now=0.0)
    assert t.take_window() == (1, 4)
    assert t.deadline() == 1.0
    assert t.on_ack(2, now=0.5) == tx.PROGRESS  # partial: 3 and 4 lost
    assert t.take_window() == (3, 6)
    assert t.deadline() == 1.5
    assert t.on_timeout(now=1.5) == tx.RESEND
    assert t.take_window() == (3, 6)  # the whole window again, from the last ACK
    assert t.deadline() == 3.5  # backoff: 2 s
    assert t.on_timeout(now=3.5) == tx.RESEND
    assert t.deadline() == 7.5  # 4 s
    assert t.retransmits == 2
    assert t.on_ack(6, now=8.0) == tx.PROGRESS
    assert t.deadline() == 9.0  # progress resets the backoff


def test_give_up_without_progress() -> None:
    t = ReadTransfer(size=100 * 512, blksize=512, timeout=1.0, give_up=5.0, now=0.0)
    t.take_window()
    results = []
    now = 0.0
    for _ in range(10):
        now = t.deadline()
        results.append(t.on_timeout(now))
        if results[-1] != tx.RESEND:
            break
    assert results[-1] == tx.GIVE_UP
    assert now >= 5.0


def test_missing_final_ack_is_not_a_failure() -> None:
    t = ReadTransfer(size=600, blksize=512, timeout=1.0, give_up=30.0)
    t.take_window()
    t.on_ack(1, 0)
    t.take_window()  # the last block is out; its ACK never comes
    outcomes = [t.on_timeout(t.deadline()) for _ in range(tx.FINAL_ACK_RETRIES + 1)]
    assert outcomes[:-1] == [tx.RESEND] * tx.FINAL_ACK_RETRIES
    assert outcomes[-1] == tx.ASSUME_DONE


def _timeouts_until_over(t: ReadTransfer, limit: int = 100) -> list[int]:
    """on_timeout results, each at the deadline, until the transfer is over (bounded)."""
    results = []
    for _ in range(limit):
        results.append(t.on_timeout(t.deadline()))
        if results[-1] != tx.RESEND:
            break
    return results


@pytest.mark.parametrize("timeout", [30.0, 60.0, 255.0])
def test_long_client_timeout_still_retransmits(timeout: float) -> None:
    """A client `timeout` option at or over give_up: retransmit at that timeout, at least 3 times."""
    t = ReadTransfer(size=100 * 512, blksize=512, timeout=timeout, give_up=30.0, now=0.0)
    t.take_window()
    assert t.deadline() == timeout  # the first retransmission at the negotiated timeout
    results = _timeouts_until_over(t)
    assert results[-1] == tx.GIVE_UP
    assert results.count(tx.RESEND) >= tx.MIN_RETRANSMITS


def test_short_timeout_keeps_the_configured_give_up() -> None:
    t = ReadTransfer(size=100 * 512, blksize=512, timeout=1.0, give_up=30.0, now=0.0)
    assert t.give_up == 30.0


def test_unacknowledged_last_window_is_not_completed() -> None:
    """Resends of a last window of which nothing was acknowledged: timed out, not assumed delivered."""
    t = ReadTransfer(size=10 * 512 + 100, blksize=512, windowsize=8, timeout=1.0, give_up=30.0)
    assert t.take_window() == (1, 8)
    t.on_ack(8, 0.5)
    assert t.take_window() == (9, 11)  # the last window; no ACK of it ever comes
    assert _timeouts_until_over(t)[-1] == tx.GIVE_UP


def test_window_missing_only_the_final_ack_is_completed() -> None:
    t = ReadTransfer(size=10 * 512 + 100, blksize=512, windowsize=8, timeout=1.0, give_up=30.0)
    t.take_window()
    t.on_ack(8, 0.5)
    t.take_window()
    t.on_ack(10, 0.7)  # all but the last block acknowledged
    assert t.take_window() == (11, 11)
    results = _timeouts_until_over(t)
    assert results == [tx.RESEND] * tx.FINAL_ACK_RETRIES + [tx.ASSUME_DONE]


class _Reference:
    """RFC 1350/7440 sender bookkeeping written out plainly (the rule as it read before ack_next), to
    check ReadTransfer against something that shares none of its code."""

    def __init__(self, size: int, blksize: int, windowsize: int, timeout: float) -> None:
        self.size, self.blksize, self.windowsize, self.timeout = size, blksize, windowsize, timeout
        self.last_block = size // blksize + 1
        self.acked = self.sent = self.retries = 0
        self.resent_at = 0.0

    def take_window(self) -> tuple[int, int]:
        first, last = self.acked + 1, min(self.acked + self.windowsize, self.last_block)
        self.sent = max(self.sent, last)
        return first, last

    def on_ack(self, block: int, now: float) -> int:
        delta = (block - self.acked) % 65536
        if delta == 0:
            if self.retries and self.sent > self.acked and now - self.resent_at >= self.timeout:
                self.resent_at = now
                return tx.RESEND_NOW
            return tx.IGNORED
        if delta > self.sent - self.acked:
            return tx.IGNORED
        self.acked += delta
        self.retries = 0
        return tx.COMPLETE if self.acked == self.last_block else tx.PROGRESS

    def on_timeout(self, now: float) -> None:
        self.retries += 1
        self.resent_at = now


def _ack_script(seed: int, windowsize: int, last_block: int) -> list[tuple[str, int]]:
    """A client's behaviour: mostly the right ACK, with duplicates, stale and future ACKs, ACKs of part
    of a window, and timer resends (so repeated ACKs meet the backoff rule)."""
    rng = random.Random(seed)
    script: list[tuple[str, int]] = []
    acked = sent = 0
    while acked < last_block and len(script) < 200_000:
        sent = max(sent, min(acked + windowsize, last_block))
        roll = rng.random()
        if roll < 0.05:  # the timer resends, and the client may keep repeating its last ACK
            script.append(("timeout", 0))
            script.extend(("ack", acked & 0xFFFF) for _ in range(rng.randint(0, 6)))
        elif roll < 0.12:
            script.append(("ack", acked & 0xFFFF))  # duplicate
        elif roll < 0.16:
            script.append(("ack", (acked - rng.randint(1, 3)) & 0xFFFF))  # stale
        elif roll < 0.20:
            script.append(("ack", (sent + rng.randint(1, 3)) & 0xFFFF))  # never sent
        else:
            acked = rng.randint(acked + 1, sent) if roll < 0.3 else sent
            script.append(("ack", acked & 0xFFFF))
    return script


@pytest.mark.parametrize(
    ("seed", "size", "blksize", "windowsize"),
    [
        (1, 1000, 512, 1),
        (2, 1024, 512, 1),
        (3, 0, 512, 1),
        (4, 70_000 * 8 + 3, 8, 1),  # rolls over past 65535
        (5, 65_536 * 8, 8, 1),  # exact multiple across the rollover: ends with an empty block
        (6, 70_000 * 8, 8, 4),
        (7, 5000, 512, 16),
    ],
)
def test_ack_next_equals_on_ack_take_window_span_and_the_reference(
    seed: int, size: int, blksize: int, windowsize: int
) -> None:
    """The one-call lockstep step gives exactly what on_ack, take_window and span give one after the
    other, and both agree with a plain reference, on every ACK of a script with duplicates, stale and
    never-sent ACKs, backoff resends, completion and rollover."""
    fast = ReadTransfer(size, blksize, windowsize, timeout=1.0)
    general = ReadTransfer(size, blksize, windowsize, timeout=1.0)
    ref = _Reference(size, blksize, windowsize, timeout=1.0)
    assert fast.take_window() == general.take_window() == ref.take_window()
    now = 0.0
    results = set()
    for kind, value in _ack_script(seed, windowsize, fast.last_block):
        now += 0.3
        if kind == "timeout":
            assert fast.on_timeout(now) == general.on_timeout(now) == tx.RESEND
            ref.on_timeout(now)
            continue
        result, first, last, start, end = fast.ack_next(value, now)
        expected = general.on_ack(value, now)
        assert result == expected == ref.on_ack(value, now)
        results.add(result)
        if result == tx.PROGRESS:
            assert (first, last) == general.take_window() == ref.take_window()
            assert (start, end) == (general.span(first)[0], general.span(last)[1])
            if windowsize == 1:
                assert (start, end) == general.span(first)
        else:
            assert (first, last, start, end) == (0, 0, 0, 0)
        for attr in ("acked", "sent", "retries", "resent_at", "retransmits", "last_progress"):
            assert getattr(fast, attr) == getattr(general, attr), attr
        assert (fast.acked, fast.sent, fast.retries) == (ref.acked, ref.sent, ref.retries)
    assert fast.done and general.done and ref.acked == ref.last_block
    if fast.last_block > windowsize + 1:
        assert {tx.PROGRESS, tx.IGNORED, tx.COMPLETE} <= results
    if fast.last_block > 1000:
        assert tx.RESEND_NOW in results
    if fast.last_block > 65_536:
        assert fast.acked > 65_536


def test_ack_next_without_take_leaves_the_window_alone() -> None:
    t = ReadTransfer(size=5000, blksize=512, windowsize=4)
    t.take_window()
    assert t.ack_next(2, 0.1, take=False) == (tx.PROGRESS, 0, 0, 0, 0)
    assert t.sent == 4  # on_ack's contract: only take_window moves `sent`
    assert t.ack_next(4, 0.2) == (tx.PROGRESS, 5, 8, 2048, 4096)
    assert t.sent == 8
