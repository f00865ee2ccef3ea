"""The asyncio TFTP server: a listener on port 69 (`listener.py`) and one endpoint per read transfer
(`endpoint.py`, RFC 1350 TIDs). This module is the package's entry point: other modules import
TftpConfig, TransferStats, TftpServer and run_standalone from here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from proxydhcp.tftp.endpoint import TransferStats
from proxydhcp.tftp.listener import ServerStats, TftpConfig, TftpServer

__all__ = ["ServerStats", "TftpConfig", "TftpServer", "TransferStats", "run_standalone"]

log = logging.getLogger("proxydhcp.tftp")


def run_standalone(root: Path, address: str, port: int, max_blksize: int, max_windowsize: int) -> int:
    """`proxydhcp tftp`: serve until SIGINT/SIGTERM; returns the exit code. Uses uvloop when installed."""
    config = TftpConfig(
        root=root, address=address, port=port, max_blksize=max_blksize, max_windowsize=max_windowsize
    )

    async def main() -> int:
        server = TftpServer(config)
        try:
            await server.start()
        except OSError as exc:
            log.error("cannot bind %s:%d: %s", address, port, exc)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping: %d transfer(s) in flight", server.active)
        await server.close(grace=2.0)
        return 0

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    result: int = uvloop.run(main())
    return result
