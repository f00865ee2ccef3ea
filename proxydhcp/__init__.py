"""proxydhcp: PXE boot beside a DHCP server you may not touch (proxyDHCP on 67/4011 + asyncio TFTP)."""

__version__ = "0.1.0"
