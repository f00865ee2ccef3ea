"""`proxydhcp tftp`: the TFTP server (`server.TftpServer`) alone, in one process or several.

`run_standalone(config)` with `config.workers` = N forks N - 1 more processes before any event
loop exists; each binds the port in one SO_REUSEPORT group and serves on its own, so a boot storm
uses every core. The kernel hashes each client's address and port to one worker, so a client's
retransmitted RRQ reaches the same one. Caps (max_transfers, max_transfers_per_client), stats and
the file cache are per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

from proxydhcp import eventloop
from proxydhcp.tftp.config import TftpConfig
from proxydhcp.tftp.server import Emit, TftpServer

log = logging.getLogger("proxydhcp.tftp")

MAX_WORKERS = 64
STOP_GRACE = 2.0  # seconds transfers in flight get to finish on SIGINT/SIGTERM
REAP_AFTER = STOP_GRACE + 3.0  # then a worker that has not exited is killed
PARENT_CHECK = 1.0  # seconds between a worker's checks that its parent is alive


def run_standalone(config: TftpConfig, emit: Emit | None = None) -> int:
    """`proxydhcp tftp`: serve until SIGINT/SIGTERM; returns the exit code. Uses uvloop when installed.

    `config.workers` > 1 needs a fixed port (each worker binds it). `emit` is the TftpServer's."""
    workers = config.workers
    if not 1 <= workers <= MAX_WORKERS:
        log.error("workers: %d is not within 1..%d", workers, MAX_WORKERS)
        return 2
    if workers > 1 and config.port == 0:
        log.error("workers: %d processes need a fixed port, not 0", workers)
        return 2
    parent = os.getpid()
    children: list[int] = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:  # a worker: serve, then leave without running the parent's exit path
            code = 1
            try:
                code = _run(lambda: _serve(config, parent, emit))
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    try:
        return _run(lambda: _serve(config, None, emit))
    finally:
        _reap(children)


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return eventloop.run(main())


async def _serve(config: TftpConfig, parent: int | None, emit: Emit | None) -> int:
    """Serve until SIGINT/SIGTERM (or, in a worker, until the parent process has gone)."""
    server = TftpServer(config, emit=emit)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot bind %s:%d: %s", config.address, config.port, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if parent is not None:

        def check_parent() -> None:
            if os.getppid() != parent:
                stop.set()
            else:
                loop.call_later(PARENT_CHECK, check_parent)

        loop.call_later(PARENT_CHECK, check_parent)
    await stop.wait()
    log.info("stopping: %d transfer(s) in flight", server.active)
    await server.close(grace=STOP_GRACE)
    return 0


def _reap(children: list[int]) -> None:
    """Stop the worker processes and wait for them, within REAP_AFTER seconds."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + REAP_AFTER
    left = set(children)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            left.discard(pid)
        if left:
            time.sleep(0.05)
    for pid in left:
        log.warning("TFTP worker %d did not stop: killed", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
