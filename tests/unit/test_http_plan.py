"""http.plan: the request target → a name (decoded once), and Range / If-Modified-Since → status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxydhcp.http.plan import Refusal, Status, http_date, parse_http_date, parse_range, plan, target_name

MTIME = 1_700_000_000.7


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("/ipxe.efi", "/ipxe.efi"),
        ("/a%20b.efi?x=1#frag", "/a b.efi"),
        ("/%2e%2e/secret", "/../secret"),  # decoded before the root check, which refuses it
        ("/..%2fsecret", "/../secret"),
        ("/%252e%252e/secret", "/%2e%2e/secret"),  # decoded once only: a name holding `%2e`
        ("/..%5csecret", "/..\\secret"),  # `\` is mapped to `/` by the root check
        ("http://boot.example/x/y.efi", "/x/y.efi"),
        ("HTTP://boot.example", "/"),
    ],
)
def test_target_name(target: str, name: str) -> None:
    if name.endswith("/"):
        with pytest.raises(Refusal) as caught:
            target_name(target)
        assert caught.value.status == Status.NOT_FOUND
    else:
        assert target_name(target) == name


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("*", Status.BAD_REQUEST),
        ("boot.example:80", Status.BAD_REQUEST),
        ("/%00secret", Status.BAD_REQUEST),
        ("/%c0%ae%c0%ae/secret", Status.BAD_REQUEST),  # overlong UTF-8 for `..`: not UTF-8 at all
        ("/sub/", Status.NOT_FOUND),  # no directory listings
    ],
)
def test_target_refused(target: str, status: Status) -> None:
    with pytest.raises(Refusal) as caught:
        target_name(target)
    assert caught.value.status == status


def test_whole_file_get_and_head() -> None:
    got = plan("GET", 1000, MTIME, None, None)
    assert (got.status, got.start, got.length, got.body) == (Status.OK, 0, 1000, True)
    assert got.headers["Last-Modified"] == http_date(int(MTIME))
    assert plan("HEAD", 1000, MTIME, None, None).body is False


@pytest.mark.parametrize(
    ("byte_range", "start", "length", "content_range"),
    [
        (slice(0, 500), 0, 500, "bytes 0-499/1000"),
        (slice(500, None), 500, 500, "bytes 500-999/1000"),
        (slice(-100, None), 900, 100, "bytes 900-999/1000"),
        (slice(-5000, None), 0, 1000, "bytes 0-999/1000"),  # suffix longer than the file: all of it
        (slice(990, 5000), 990, 10, "bytes 990-999/1000"),  # end past the file: clipped
    ],
)
def test_single_range(byte_range: slice, start: int, length: int, content_range: str) -> None:
    got = plan("GET", 1000, MTIME, byte_range, None)
    assert (got.status, got.start, got.length) == (Status.PARTIAL, start, length)
    assert got.headers["Content-Range"] == content_range


def test_unsatisfiable_range() -> None:
    got = plan("GET", 1000, MTIME, slice(1000, None), None)
    assert (got.status, got.body, got.headers["Content-Range"]) == (
        Status.RANGE_NOT_SATISFIABLE,
        False,
        "bytes */1000",
    )
    assert plan("GET", 0, MTIME, slice(0, 10), None).status == Status.RANGE_NOT_SATISFIABLE


def test_if_modified_since_compares_whole_seconds() -> None:
    same = datetime.fromtimestamp(int(MTIME), UTC)
    assert plan("GET", 10, MTIME, None, same).status == Status.NOT_MODIFIED
    older = datetime.fromtimestamp(int(MTIME) - 1, UTC)
    assert plan("GET", 10, MTIME, None, older).status == Status.OK


def test_if_range_other_than_last_modified_sends_everything() -> None:
    assert plan("GET", 1000, MTIME, slice(0, 10), None, "Mon, 01 Jan 2001 00:00:00 GMT").status == Status.OK
    exact = http_date(int(MTIME))
    assert plan("GET", 1000, MTIME, slice(0, 10), None, exact).status == Status.PARTIAL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-499", slice(0, 500)),
        ("bytes=500-", slice(500, None)),
        ("bytes=-100", slice(-100, None)),
        ("bytes=-0", slice(0, 0)),  # an empty suffix: unsatisfiable (416), not the whole file
        ("BYTES=1-1", slice(1, 2)),
        ("bytes=5-4", None),  # backward
        ("bytes=0-1,5-6", None),  # several ranges: ignored, the whole file is sent
        ("bytes=-", None),
        ("bytes=oops", None),
        ("items=0-1", None),
        ("bytes=\u0661-2", None),  # an Arabic-Indic digit: str.isdigit says yes, HTTP says no
        ("bytes 0-1", None),
    ],
)
def test_parse_range(value: str, expected: slice | None) -> None:
    assert parse_range(value) == expected


def test_parse_range_feeds_plan() -> None:
    assert plan("GET", 1000, MTIME, parse_range("bytes=-0"), None).status == Status.RANGE_NOT_SATISFIABLE
    assert plan("GET", 1000, MTIME, parse_range("bytes=0-1,5-6"), None).status == Status.OK


def test_parse_http_date() -> None:
    exact = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == exact
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == exact  # RFC 850, obsolete
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == exact  # asctime, obsolete
    assert parse_http_date(http_date(MTIME)) == datetime.fromtimestamp(int(MTIME), UTC)
    for bad in ("", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT"):
        assert parse_http_date(bad) is None
