"""Zero-copy file sending on a connection owned by an asyncio (or uvloop) transport.

`loop.sendfile` is zero-copy only on the default selector loop; uvloop has none, and both loops
refuse `add_writer` on a socket a transport owns. A dup() of the socket's descriptor is the same
socket under another number: os.sendfile() on it, and waiting for writability on it, leave the
transport untouched. The caller makes sure the transport has nothing queued first (headers out) and
writes nothing until this returns.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

MAX_CALL = 1 << 30  # bytes asked of one sendfile(2) call


async def wait_flushed(transport: asyncio.WriteTransport, sock_fd: int) -> None:
    """Until the transport's own buffer (the response headers) has gone to the kernel."""
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("connection lost")
        await _writable(sock_fd)
        await asyncio.sleep(0)  # the transport's own writer callback runs on the same readiness


async def sendfile(transport: asyncio.WriteTransport, file_fd: int, offset: int, count: int) -> int:
    """Send `count` bytes of `file_fd` from `offset` on the transport's socket; returns bytes sent.
    Raises ConnectionError when the peer goes away, OSError on a read error (EIO)."""
    sock: Any = transport.get_extra_info("socket")
    if sock is None:
        raise ConnectionResetError("connection lost")
    sock_fd = os.dup(sock.fileno())
    try:
        await wait_flushed(transport, sock_fd)
        return await _send_all(transport, sock_fd, file_fd, offset, count)
    finally:
        os.close(sock_fd)


async def _send_all(
    transport: asyncio.WriteTransport, sock_fd: int, file_fd: int, offset: int, count: int
) -> int:
    # One writer registration for the whole file, not one per EAGAIN: the callback only wakes the
    # waiter when there is one (while this loop sends, nothing else runs, so it cannot spin).
    loop = asyncio.get_running_loop()
    waiter: list[asyncio.Future[None]] = []

    def wake() -> None:
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    loop.add_writer(sock_fd, wake)
    sent = 0
    try:
        while sent < count:
            if transport.is_closing():
                raise ConnectionResetError("connection lost")
            try:
                n = os.sendfile(sock_fd, file_fd, offset + sent, min(count - sent, MAX_CALL))
            except BlockingIOError:
                waiter[:] = [loop.create_future()]
                await waiter[0]
                continue
            if n == 0:
                raise OSError("file shrank while being sent")
            sent += n
        return sent
    finally:
        loop.remove_writer(sock_fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_writer(fd, _wake, done)
    try:
        await done
    finally:
        loop.remove_writer(fd)


def _wake(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
