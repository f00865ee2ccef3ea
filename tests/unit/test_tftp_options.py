"""Option negotiation table (RFC 2347, 2348, 2349, 7440)."""

from __future__ import annotations

import pytest

from proxydhcp.tftp.options import Negotiated, negotiate

LIMITS = {"max_blksize": 1468, "max_windowsize": 16}


@pytest.mark.parametrize(
    ("options", "kwargs", "expected"),
    [
        ((), {}, Negotiated()),
        ((("blksize", "1468"),), {}, Negotiated(blksize=1468, oack=(("blksize", "1468"),))),
        ((("blksize", "65464"),), {}, Negotiated(blksize=1468, oack=(("blksize", "1468"),))),
        ((("BlkSize", "1024"),), {}, Negotiated(blksize=1024, oack=(("blksize", "1024"),))),
        ((("blksize", "8"),), {}, Negotiated(blksize=8, oack=(("blksize", "8"),))),
        ((("blksize", "7"),), {}, Negotiated()),
        ((("blksize", "65465"),), {}, Negotiated()),
        ((("blksize", "abc"),), {}, Negotiated()),
        ((("blksize", "-512"),), {}, Negotiated()),
        ((("blksize", "١٢٣"),), {}, Negotiated()),  # Arabic-Indic digits: isdigit but not ASCII
        ((("blksize", "1468"),), {"mtu": 1400}, Negotiated(blksize=1368, oack=(("blksize", "1368"),))),
        (
            (("blksize", "9000"),),
            {"mtu": 65536, "max_blksize": 65464},
            Negotiated(9000, oack=(("blksize", "9000"),)),
        ),
        ((("tsize", "0"),), {}, Negotiated(oack=(("tsize", "1234"),))),
        ((("tsize", "0"),), {"netascii": True}, Negotiated()),
        ((("tsize", "x"),), {}, Negotiated()),
        ((("timeout", "3"),), {}, Negotiated(timeout=3, oack=(("timeout", "3"),))),
        ((("timeout", "0"),), {}, Negotiated()),
        ((("timeout", "256"),), {}, Negotiated()),
        ((("windowsize", "8"),), {}, Negotiated(windowsize=8, oack=(("windowsize", "8"),))),
        ((("windowsize", "64"),), {}, Negotiated(windowsize=16, oack=(("windowsize", "16"),))),
        ((("windowsize", "0"),), {}, Negotiated()),
        ((("windowsize", "8"),), {"netascii": True}, Negotiated()),
        ((("msftwindow", "31416"),), {}, Negotiated()),
        # the "PXE Dust" combination: blksize + windowsize + msftwindow, validated one by one
        (
            (("blksize", "1456"), ("windowsize", "4"), ("msftwindow", "31416")),
            {},
            Negotiated(1456, 4, None, (("blksize", "1456"), ("windowsize", "4"))),
        ),
        # a repeated option: the first wins
        ((("blksize", "1024"), ("BLKSIZE", "512")), {}, Negotiated(1024, oack=(("blksize", "1024"),))),
    ],
)
def test_negotiate(
    options: tuple[tuple[str, str], ...], kwargs: dict[str, object], expected: Negotiated
) -> None:
    args: dict[str, object] = {"netascii": False, "size": 1234, **LIMITS, **kwargs}
    assert negotiate(options, **args) == expected  # type: ignore[arg-type]


def test_tsize_absent_when_size_unknown() -> None:
    assert negotiate((("tsize", "0"),), netascii=False, size=None, **LIMITS) == Negotiated()
