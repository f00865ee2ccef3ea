"""untrusted.printable: the one rule by which TFTP and HTTP put a client's text in a log line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxydhcp.untrusted import printable


def test_printable_text_is_kept_whole() -> None:
    assert printable("pxelinux.0") == "pxelinux.0"
    assert printable("a" * 1000) == "a" * 1000  # no limit unless one is given


def test_a_newline_cannot_forge_a_line() -> None:
    assert printable("boot.efi\nINFO forged") == "boot.efi\\nINFO forged"
    assert printable("\x1b[2J") == "\\x1b[2J"


def test_the_limit_cuts_before_escaping() -> None:
    assert printable("GETXXXXXXXXXXXXXXXXXX", 16) == "GETXXXXXXXXXXXXX"
    assert printable("\n" * 100, 4) == "\\n\\n\\n\\n"


@given(st.text(), st.one_of(st.none(), st.integers(min_value=0, max_value=300)))
def test_the_result_is_one_printable_line(text: str, limit: int | None) -> None:
    shown = printable(text, limit)
    assert shown.isprintable()
    if limit is not None and text[:limit].isprintable():
        assert shown == text[:limit]
