"""The package's exception hierarchy: callers catch these, never a library's own."""


class ProxyDhcpError(Exception):
    """Root of every exception this package raises on purpose."""


class MalformedPacket(ProxyDhcpError):
    """A datagram that cannot be decoded; the message is a reason fit for a log line."""


class ConfigError(ProxyDhcpError):
    """An invalid configuration; the message names the offending key."""
