"""The HTTP request record's fast text (http/record.py) against its reference: `text_fields()` is
`log.text_pairs(fields())`, and `round2_text`/`round4_text` are `str(round())`, for any value, ties and edges
included; the message is the one the plain path wrote."""

from __future__ import annotations

import math

from hypothesis import example, given
from hypothesis import strategies as st

from proxydhcp.http import record
from proxydhcp.http.record import Outcome, RequestStats, round2_text, round4_text
from proxydhcp.log import text_pairs

_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=2e12),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=0, max_value=10**12).map(lambda n: n / 10_000 + 0.00005),  # ties and near ties
    st.integers(min_value=0, max_value=10**12).map(lambda n: n / 100 + 0.005),
    st.integers(min_value=0, max_value=10**9).map(lambda n: n / 10_000),
)


@given(_floats, st.sampled_from([2, 4]))
@example(0.0, 4)
@example(-0.0, 4)
@example(0.00005, 4)
@example(0.00015, 4)
@example(2.675, 2)
@example(0.125, 2)
@example(5e-324, 4)
@example(0.0000499, 4)
@example(0.00004999999, 4)
@example(9999999999.99995, 4)
@example(999999999999.995, 2)
@example(1e10, 4)
@example(1e12, 2)
def test_rounded_texts_are_str_of_round(value: float, places: int) -> None:
    text = round4_text(value) if places == 4 else round2_text(value)
    assert text == str(round(value, places)) or (math.isnan(value) and text == "nan")


_clients = st.tuples(st.sampled_from(["10.0.0.9", "::1", "fe80::1%eth0", "127.0.0.1"]), st.integers(0, 65535))


@given(
    _clients,
    st.sampled_from(["GET", "HEAD", "-", "BREW", 'X"Y']),
    st.text(max_size=40),
    st.sampled_from([200, 206, 304, 400, 404, 416, 431, 500]),
    st.integers(min_value=0, max_value=1 << 40),
    st.floats(min_value=0.0, max_value=1e7),
    st.sampled_from(list(Outcome)),
    st.sampled_from(["", "no such file", "read error: Input/output error", 'a "quoted"\nline']),
)
@example(("127.0.0.1", 5555), "GET", "/s0.bin", 200, 4096, 0.0, Outcome.COMPLETED, "")
@example(("127.0.0.1", 5555), "GET", "/s0.bin", 200, 4096, 1.2e-5, Outcome.COMPLETED, "")
@example(("::1", 5), "GET", "/a b.efi", 404, 0, 0.1, Outcome.REFUSED, "no such file")
def test_text_fields_are_the_fields(
    client: tuple[str, int],
    method: str,
    filename: str,
    status: int,
    sent: int,
    duration: float,
    outcome: Outcome,
    reason: str,
) -> None:
    stats = RequestStats(client, method, filename, status, sent, duration, outcome, reason)
    for _ in range(2):  # rendered, then from the kept texts
        assert stats.text_fields() == text_pairs(stats.fields())
        host = f"[{client[0]}]" if ":" in client[0] else client[0]
        assert stats.message() == f"{method} {filename} from {host}:{client[1]}: {status}"


def test_kept_texts_are_bounded() -> None:
    record._TEXTS.clear()
    for i in range(record.TEXTS_KEPT * 2 + 5):
        stats = RequestStats(("10.0.0.1", i), "GET", f"/f{i}", 200, i, 0.001, Outcome.COMPLETED)
        assert stats.text_fields() == text_pairs(stats.fields())
    assert len(record._TEXTS) <= record.TEXTS_KEPT
