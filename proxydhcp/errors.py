"""The package's exception hierarchy: callers catch these, never a library's own."""

from __future__ import annotations

from proxydhcp.outcome import Reason


class ProxyDhcpError(Exception):
    """Root of every exception this package raises on purpose."""


class MalformedPacket(ProxyDhcpError):
    """A datagram that cannot be decoded; the message is a reason fit for a log line, `reason` its kind
    (what records and metrics use)."""

    def __init__(self, message: str, reason: Reason = Reason.MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(ProxyDhcpError):
    """An invalid configuration; the message names the offending key."""
