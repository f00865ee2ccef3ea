"""Netascii (RFC 764, as used by RFC 1350): LF → CR LF, bare CR → CR NUL.

Both rules look at one byte only, so chunks can be converted independently (R-67).
"""

from __future__ import annotations


def encode(data: bytes) -> bytes:
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
