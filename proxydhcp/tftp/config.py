"""The TFTP server's settings: the `[tftp]` section of the configuration file, the
`PROXYDHCP_TFTP__*` environment variables and the flags of `serve` and `tftp` all land here, and
every default of the TFTP server is the default of a field of this model (one source).

`TftpConfig` is what a running `TftpServer` reads: these settings with the root resolved, plus what
only the process knows (its worker count) and the file cache's budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TftpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: bool = True
    root: Path | None = None
    address: IPv4Address | IPv6Address = IPv4Address("0.0.0.0")
    """Address to listen on; `::` serves IPv4 and IPv6 (the default when an IPv6 prefix is enabled)."""
    port: int = Field(default=69, ge=1, le=65535)
    max_blksize: int = Field(default=1468, ge=8, le=65464)
    max_windowsize: int = Field(default=16, ge=1, le=65535)
    max_transfers: int = Field(default=1000, ge=1)
    max_transfers_per_client: int = Field(default=16, ge=1)
    """Transfers one client address may have at once. Bounds what one host can take of
    max_transfers; raise it when many clients share one address (behind NAT) or for a load test."""
    timeout: float = Field(default=1.0, gt=0, le=255)
    """Initial retransmission timeout in seconds (the client's `timeout` option overrides it)."""
    give_up: float = Field(default=30.0, gt=0, le=3600)
    """Abandon a transfer after this many seconds without progress."""


def _default(name: str) -> Any:
    return TftpSettings.model_fields[name].default


@dataclass(frozen=True, kw_only=True)
class TftpConfig:
    root: Path
    address: str = str(_default("address"))
    port: int = _default("port")
    max_blksize: int = _default("max_blksize")
    max_windowsize: int = _default("max_windowsize")
    max_transfers: int = _default("max_transfers")
    max_transfers_per_client: int = _default("max_transfers_per_client")
    timeout: float = _default("timeout")
    give_up: float = _default("give_up")
    cache_bytes: int = 64 * 1024 * 1024
    # Chunks of files too big for the cache, shared between their transfers: past this many bytes held,
    # a new transfer of a big file is refused as busy unless it can share a chunk already held.
    chunk_bytes: int = 256 * 1024 * 1024
    # >1: the listening socket joins an SO_REUSEPORT group, one per worker process (the caller forks,
    # see standalone.run_standalone); the kernel spreads clients over the workers by address and port.
    # Caps, stats and the file cache are then per worker.
    workers: int = 1

    @classmethod
    def from_settings(cls, settings: TftpSettings, root: Path, *, workers: int = 1) -> TftpConfig:
        """Every TftpSettings field but `enabled` and `root` (checked by the caller) maps to one here."""
        return cls(
            root=root,
            address=str(settings.address),
            port=settings.port,
            max_blksize=settings.max_blksize,
            max_windowsize=settings.max_windowsize,
            max_transfers=settings.max_transfers,
            max_transfers_per_client=settings.max_transfers_per_client,
            timeout=settings.timeout,
            give_up=settings.give_up,
            workers=workers,
        )
