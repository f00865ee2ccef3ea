"""Text a peer chose (a TFTP file name, an HTTP method, version or target), made fit for a log line.

A leaf on the standard library: the TFTP and HTTP packages, which import nothing of the service, both
use it, so the rule has one copy.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str, limit: int | None = None) -> str:
    """`text` cut to `limit` characters (when given), control characters escaped repr-style, so that a
    newline in a client-supplied name cannot forge a log line."""
    if limit is not None:
        text = text[:limit]
    return text if text.isprintable() else repr(text)[1:-1]
