"""Files served over TFTP: root confinement (R-68), and sources of block data read through aiofiles.

Files up to a size limit are read once into a shared LRU cache keyed by (st_dev, st_ino, st_mtime_ns,
st_size), so 200 clients fetching one initrd cost one disk read (dnsmasq shares one fd per file, R-69);
concurrent first requests wait on the same load. Bigger files are read per transfer, forward only, in
large chunks, keeping the bytes from the last acknowledged block on (a window resend needs them), with
the next chunk read ahead so a transfer does not pause at chunk boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections import OrderedDict
from typing import Protocol

import aiofiles
import aiofiles.threadpool.binary

from proxydhcp.tftp import netascii
from proxydhcp.tftp.packet import ErrorCode, TftpError

MAX_NAME = 1024
CHUNK = 4 * 1024 * 1024
NETASCII_MAX = 16 * 1024 * 1024

FileKey = tuple[int, int, int, int]
Buffer = bytes | bytearray


def resolve(root: str, name: str) -> str:
    """Map a requested name to a path inside `root` (already resolved), or raise TftpError.

    Windows clients send `\\` (R-68); a leading `/` is relative to the root. The resolved path, symlinks
    followed, must stay inside the root.
    """
    if "\0" in name or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise TftpError(ErrorCode.ACCESS_VIOLATION)
    relative = name.replace("\\", "/").lstrip("/")
    if not relative:
        raise TftpError(ErrorCode.FILE_NOT_FOUND)
    path = _plain_path(root, relative)
    if path is None:
        path = os.path.realpath(os.path.join(root, relative))
    if root != "/" and not path.startswith(root + "/"):
        raise TftpError(ErrorCode.ACCESS_VIOLATION)
    return path


def _plain_path(root: str, relative: str) -> str | None:
    """`root/relative` when every component of `relative` exists and none is a symlink, `.` or `..`:
    then it is what realpath returns, found with one lstat per component of the name instead of
    realpath's walk over the whole path in Python (a quarter of a small-file request's cost). None:
    let realpath decide."""
    path = root.rstrip("/")
    for part in relative.split("/"):
        if part in ("", ".", ".."):
            return None
        path = f"{path}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return None
        except OSError:
            return None
    return path


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """Open then fstat (no check-then-open race); regular files only.

    O_NONBLOCK keeps a FIFO from blocking the loop; O_NOFOLLOW refuses a final component that became a
    symlink after `resolve`.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise TftpError(ErrorCode.FILE_NOT_FOUND) from None
    except OSError:
        raise TftpError(ErrorCode.ACCESS_VIOLATION) from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise TftpError(ErrorCode.ACCESS_VIOLATION) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TftpError(ErrorCode.ACCESS_VIOLATION)
    return fd, st


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


async def read_all(fd: int, size: int) -> Buffer:
    """Read a whole file through aiofiles in CHUNK pieces (does not close fd)."""
    buf = bytearray(size)
    view = memoryview(buf)
    done = 0
    async with aiofiles.open(fd, "rb", buffering=0, closefd=False) as f:
        while done < size:
            n = await f.readinto(view[done : done + CHUNK])
            if not n:
                break
            done += n
    view.release()
    if done < size:  # shrank under us: serve what is there
        del buf[done:]
    return buf


class Source(Protocol):
    """Block data for one transfer."""

    size: int

    def view(self, start: int, end: int) -> memoryview | None:
        """Bytes [start, end) if loaded, else None (then `fill` and ask again)."""

    async def fill(self, start: int, end: int) -> None:
        """Load bytes [start, end); nothing before `start` is asked again."""

    def close(self) -> None: ...


class MemorySource:
    """A whole file in memory (cached, or converted to netascii)."""

    __slots__ = ("_view", "size")

    def __init__(self, data: Buffer) -> None:
        self._view = memoryview(data)
        self.size = len(data)

    def view(self, start: int, end: int) -> memoryview | None:
        return self._view[start:end]

    async def fill(self, start: int, end: int) -> None:
        return None

    def close(self) -> None:
        self._view.release()


class ChunkedSource:
    """A big file, read forward in CHUNK pieces; owns its file descriptor.

    Read-ahead: as soon as the transfer enters a chunk, the next one is read in the background, so
    crossing a chunk boundary costs one memory copy instead of a pause for the disk. At most one read
    is in flight (aiofiles keeps one file position), so at most two chunks are held per transfer.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self._fd = fd
        self._chunk = CHUNK
        self._file: aiofiles.threadpool.binary.AsyncFileIO | None = None
        self._pos = 0  # the file position after the last read
        self._buf = bytearray()
        self._view = memoryview(self._buf)
        self._start = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ahead: asyncio.Task[bytearray] | None = None  # reading from self._ahead_at
        self._ahead_at = 0
        self._reading = False
        self._closed = False

    def view(self, start: int, end: int) -> memoryview | None:
        if start >= self._start and end <= self._start + len(self._buf):
            return self._view[start - self._start : end - self._start]
        if self._append_ahead(start) and end <= self._start + len(self._buf):
            return self._view[start - self._start : end - self._start]
        return None

    async def fill(self, start: int, end: int) -> None:
        self._loop = asyncio.get_running_loop()
        if self._ahead is not None:
            with contextlib.suppress(Exception):  # a failed read-ahead is retried below
                await asyncio.shield(self._ahead)
            if self._append_ahead(start) and end <= self._start + len(self._buf):
                return
            self._ahead = None
        loaded_end = self._start + len(self._buf)
        contiguous = self._start <= start <= loaded_end
        read_from = loaded_end if contiguous else start
        read_to = min(max(end, start + self._chunk), self.size)
        data = await self._read_shielded(read_from, max(read_to - read_from, 0))
        self._extend(start, data, keep_from=start if contiguous else None)
        if self._start + len(self._buf) < end:  # the file shrank under us
            self.size = self._start + len(self._buf)
        self._read_ahead()

    def close(self) -> None:
        self._closed = True
        self._view.release()
        # A read may be running in a worker thread on this fd: close it when that read is over.
        # aiofiles was opened with closefd=False, so closing needs no thread hop.
        if not self._reading:
            self._close_fd()

    # -- internals -------------------------------------------------------------------------------

    def _extend(self, start: int, data: bytearray, keep_from: int | None) -> None:
        """Make the buffer [start, ...): the loaded bytes from `keep_from` (a window resend needs
        them), then `data`; or `data` alone when `keep_from` is None."""
        if keep_from is None:
            buf = data
        else:
            keep = self._view[keep_from - self._start :]
            buf = bytearray(len(keep) + len(data))
            buf[: len(keep)] = keep
            buf[len(keep) :] = data
            keep.release()
        self._view.release()
        self._buf, self._start = buf, start
        self._view = memoryview(buf)

    def _append_ahead(self, start: int) -> bool:
        """Take the read-ahead chunk if it has arrived and continues the buffer; start the next."""
        ahead = self._ahead
        loaded_end = self._start + len(self._buf)
        if ahead is None or not ahead.done() or self._closed:
            return False
        if self._ahead_at != loaded_end or not self._start <= start <= loaded_end:
            return False
        self._ahead = None
        if ahead.cancelled() or ahead.exception() is not None:
            return False  # `fill` reads again and reports the error
        self._extend(start, ahead.result(), keep_from=start)
        self._read_ahead()
        return True

    def _read_ahead(self) -> None:
        at = self._start + len(self._buf)
        if self._ahead is not None or self._closed or self._loop is None or at >= self.size:
            return
        self._ahead_at = at
        self._ahead = self._loop.create_task(self._read(at, min(self._chunk, self.size - at)))
        self._ahead.add_done_callback(_consume_error)

    async def _read_shielded(self, offset: int, length: int) -> bytearray:
        # Shielded: cancelling the waiter must not orphan a read still running in a thread on our fd.
        assert self._loop is not None
        task = self._loop.create_task(self._read(offset, length))
        task.add_done_callback(_consume_error)
        return await asyncio.shield(task)

    async def _read(self, offset: int, length: int) -> bytearray:
        """Bytes [offset, offset + length), fewer at end of file. Callers never overlap two reads."""
        if self._closed:
            raise OSError(errno.EBADF, "source closed")
        self._reading = True
        try:
            if self._file is None:
                self._file = await aiofiles.open(self._fd, "rb", buffering=0, closefd=False)
            if self._pos != offset:
                await self._file.seek(offset)
                self._pos = offset
            buf = bytearray(length)
            filled = 0
            with memoryview(buf) as whole:
                while filled < length:
                    with whole[filled:] as rest:
                        n = await self._file.readinto(rest)
                    if not n:
                        break
                    filled += n
            self._pos = offset + filled
            if filled < length:  # end of file came early: the file shrank
                self.size = min(self.size, offset + filled)
                return buf[:filled]
            return buf
        finally:
            self._reading = False
            if self._closed:
                self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _consume_error(task: asyncio.Task[bytearray]) -> None:
    """Mark a read's failure as seen: a dropped read-ahead must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()


class FileCache:
    """Whole-file bytes shared between transfers, LRU within a byte budget."""

    def __init__(self, budget: int = 64 * 1024 * 1024, max_file: int | None = None) -> None:
        self.budget = budget
        self.max_file = budget // 2 if max_file is None else max_file
        self.used = 0
        self.loads = 0  # disk reads done (for tests and metrics)
        self._entries: OrderedDict[FileKey, Buffer] = OrderedDict()
        self._loading: dict[FileKey, asyncio.Future[Buffer]] = {}

    def cacheable(self, size: int) -> bool:
        return size <= self.max_file

    def get(self, key: FileKey) -> Buffer | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    async def load(self, key: FileKey, fd: int) -> Buffer:
        """The file's bytes, reading it at most once however many transfers ask at the same time."""
        data = self.get(key)
        if data is not None:
            return data
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Buffer] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            data = await read_all(fd, key[3])
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._loading[key]
        self.loads += 1
        if len(data) == key[3]:
            self._insert(key, data)
        future.set_result(data)
        return data

    def _insert(self, key: FileKey, data: Buffer) -> None:
        self._entries[key] = data
        self.used += len(data)
        while self.used > self.budget and self._entries:
            _, old = self._entries.popitem(last=False)
            self.used -= len(old)


async def load_source(fd: int, st: os.stat_result, *, netascii_mode: bool, cache: FileCache) -> Source:
    """Turn an open file into block data; takes ownership of fd (TftpError on refusal)."""
    key = file_key(st)
    if not netascii_mode and not cache.cacheable(st.st_size):
        return ChunkedSource(fd, st.st_size)
    try:
        if not netascii_mode:
            return MemorySource(await cache.load(key, fd))
        if st.st_size > NETASCII_MAX:
            raise TftpError(ErrorCode.NOT_DEFINED, "File too large for netascii")
        data = cache.get(key) or await read_all(fd, st.st_size)
        return MemorySource(netascii.encode(bytes(data)))
    finally:
        os.close(fd)


async def open_source(root: str, name: str, *, netascii_mode: bool, cache: FileCache) -> Source:
    """Resolve, open and load a file for one transfer (TftpError on refusal)."""
    fd, st = open_regular(resolve(root, name))
    return await load_source(fd, st, netascii_mode=netascii_mode, cache=cache)
