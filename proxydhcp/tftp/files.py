"""Files served over TFTP: root confinement (R-68), and sources of block data, read in worker threads.

Files up to a size limit are read once into a shared LRU cache keyed by (st_dev, st_ino, st_mtime_ns,
st_size), so 200 clients fetching one initrd cost one disk read (dnsmasq shares one fd per file, R-69);
concurrent first requests wait on the same load. Bigger files are read per transfer, forward only, in
large chunks (os.pread in the loop's executor), keeping the bytes from the last acknowledged block on (a
window resend needs them), with the next chunk read ahead so a transfer does not pause at chunk
boundaries.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import OrderedDict
from typing import Protocol

import aiofiles

from proxydhcp.tftp import netascii
from proxydhcp.tftp.packet import BUSY_MESSAGE, ErrorCode, TftpError

MAX_NAME = 1024
CHUNK = 4 * 1024 * 1024
# Netascii is for text files; the converted copy (up to twice the size) is shared through the cache.
NETASCII_MAX = 4 * 1024 * 1024

FileKey = tuple[int, int, int, int]
CacheKey = tuple[int, ...]  # a FileKey, or a FileKey + (1,) for its netascii conversion
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
    found = _plain_walk(root, relative)
    return None if found is None else found[0]


def _plain_walk(root: str, relative: str) -> tuple[str, os.stat_result] | None:
    """`_plain_path`, with the lstat of its last component."""
    path = root.rstrip("/")
    st: os.stat_result | None = None
    for part in relative.split("/"):
        if part in ("", ".", ".."):
            return None
        path = f"{path}/{part}"
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    return None if st is None else (path, st)


RESOLVE_TTL = 1.0  # seconds a name's entry is kept (each use checks the file is still the same)
RESOLVE_CACHE_SIZE = 1024


class ResolveCache:
    """The files recently requested names led to, so that a storm of requests for one file costs the
    lstat() per component of `resolve` but no open(), fstat() and close().

    Only names that resolve with no symlink, `.` or `..` are used: a hit walks the name from the root
    with one lstat() per component exactly as `resolve` does (so the path is inside the root, through no
    symlink, now), and is taken only when the last lstat finds the very file opened before: same device,
    inode and ctime. The ctime moves on any change of mode, owner, links or content, so that file still
    passes the checks `open_regular` made; anything else falls back to `resolve` and `open_regular`.
    Entries expire after RESOLVE_TTL seconds; only names that were opened are kept, at most `limit`
    (cleared when full: names come from clients)."""

    __slots__ = ("_entries", "limit", "root", "ttl")

    def __init__(self, root: str, ttl: float = RESOLVE_TTL, limit: int = RESOLVE_CACHE_SIZE) -> None:
        self.root = root  # resolved, as for `resolve`
        self.ttl = ttl
        self.limit = limit
        self._entries: dict[str, tuple[str, tuple[int, int, int], float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def stat(self, name: str, now: float) -> os.stat_result | None:
        """The lstat of the file `name` leads to, if it is still the regular file opened for it before;
        else None (resolve and open it). `now`: a monotonic clock in seconds."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        relative, ident, expires = entry
        if now < expires:
            found = _plain_walk(self.root, relative)
            if found is not None:
                st = found[1]
                if (st.st_dev, st.st_ino, st.st_ctime_ns) == ident:
                    return st
        del self._entries[name]
        return None

    def remember(self, name: str, st: os.stat_result, now: float) -> None:
        """`name`, accepted by `resolve`, was opened as the regular file `st` (fstat of the open fd)."""
        if len(self._entries) >= self.limit:
            self._entries.clear()
        relative = name.replace("\\", "/").lstrip("/")
        self._entries[name] = (relative, (st.st_dev, st.st_ino, st.st_ctime_ns), now + self.ttl)


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

    def region(self, start: int, end: int) -> tuple[int, memoryview] | None:
        """The loaded run of bytes holding [start, end), as (its offset in the file, a view of it), if
        there is one: the caller slices its next blocks out of it while they fall inside. The view
        stays valid after the source moves on or closes (the caller drops it then)."""

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

    def region(self, start: int, end: int) -> tuple[int, memoryview] | None:
        return 0, self._view[:]

    async def fill(self, start: int, end: int) -> None:
        return None

    def close(self) -> None:
        self._view.release()


class _Chunk:
    """One CHUNK of a big file, shared by the transfers holding it (`refs`)."""

    __slots__ = ("data", "load", "refs")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.load: asyncio.Task[None] | None = None
        self.refs = 0


ChunkKey = tuple[FileKey, int, int]  # (file, chunk size, index)


class ChunkStore:
    """The chunks of big files held by transfers, shared between the transfers of one file: 200 clients
    reading one big image at about the same place cost one or two chunks, not 2 × CHUNK each. A chunk
    lives while a transfer holds it. `used` counts the bytes held; past `budget` a new transfer of a big
    file is refused unless its first chunk is already held (see `admits`)."""

    def __init__(self, budget: int = 256 * 1024 * 1024) -> None:
        self.budget = budget
        self.used = 0
        self.reads = 0  # chunk reads done (for tests and metrics)
        self._chunks: dict[ChunkKey, _Chunk] = {}

    def admits(self, key: FileKey) -> bool:
        return self.used < self.budget or (key, CHUNK, 0) in self._chunks

    def __len__(self) -> int:
        return len(self._chunks)

    def acquire(self, key: ChunkKey) -> _Chunk:
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = _Chunk()
        chunk.refs += 1
        return chunk

    def release(self, key: ChunkKey, chunk: _Chunk) -> None:
        chunk.refs -= 1
        if chunk.refs <= 0 and self._chunks.get(key) is chunk:
            del self._chunks[key]
            if chunk.data is not None:
                self.used -= len(chunk.data)

    def loaded(self, key: ChunkKey, chunk: _Chunk, data: bytes) -> None:
        chunk.data = data
        self.reads += 1
        if self._chunks.get(key) is chunk:
            self.used += len(data)


class ChunkedSource:
    """A big file, read forward in CHUNK pieces held in a `ChunkStore`; owns its file descriptor.

    The transfer holds the chunks from its last acknowledged block on (a window resend needs them) and
    one more: as soon as it enters a chunk, the next one is read in the background, so crossing a chunk
    boundary costs nothing. A chunk another transfer of the same file holds is used as is; one nobody
    holds is read through this source's fd, one read at a time.
    """

    def __init__(self, fd: int, st: os.stat_result, store: ChunkStore) -> None:
        self.size = st.st_size
        self._full = st.st_size  # the size at open: what each chunk read asks for
        self._fd = fd
        self._key = file_key(st)
        self._store = store
        self._chunk = CHUNK
        self._held: dict[int, _Chunk] = {}
        self._lock = asyncio.Lock()
        self._span = (0, 0)  # the bytes of the chunk view() used last: the lockstep fast path
        self._span_view = memoryview(b"")
        self._loads = 0  # load tasks of this source not over: the fd stays open for them
        self._closed = False

    def view(self, start: int, end: int) -> memoryview | None:
        low, high = self._span
        if low <= start and end <= high:
            return self._span_view[start - low : end - low]
        return self._view(start, end)

    def _view(self, start: int, end: int) -> memoryview | None:
        self._forget_span()
        if end > self.size or self._closed:
            return None
        if start >= end:
            return memoryview(b"")
        size = self._chunk
        first, last = start // size, (end - 1) // size
        self._drop_below(first)
        parts: list[bytes] = []
        for index in range(first, last + 1):
            chunk = self._held.get(index)
            if chunk is None or chunk.data is None or not self._whole(index, chunk.data):
                return None
            parts.append(chunk.data)
        self._hold(last + 1, read=True)  # read ahead
        base = first * size
        if len(parts) == 1:
            self._span = (base, base + len(parts[0]))
            self._span_view = memoryview(parts[0])
            return self._span_view[start - base : end - base]
        # A window across a chunk boundary: one copy of the window's bytes (once per chunk, and on
        # resends), not of the chunks it touches.
        pieces: list[memoryview] = []
        offset = base
        for data in parts:
            pieces.append(memoryview(data)[max(start - offset, 0) : max(end - offset, 0)])
            offset += len(data)
        return memoryview(b"".join(pieces))

    def region(self, start: int, end: int) -> tuple[int, memoryview] | None:
        low, high = self._span
        if not low <= start <= end <= high:
            if self._view(start, end) is None:  # not loaded: None
                return None
            low, high = self._span
            if not low <= start <= end <= high:  # across two chunks: only view() joins them
                return None
        return low, self._span_view[:]  # its own view: _forget_span releases the source's

    async def fill(self, start: int, end: int) -> None:
        if self._closed or start >= end:
            return
        size = self._chunk
        first, last = start // size, (end - 1) // size
        self._drop_below(first)
        for index in range(first, last + 1):
            self._hold(index, read=True)
        for index in range(first, last + 1):
            chunk = self._held.get(index)
            if chunk is None:  # closed meanwhile
                return
            if chunk.data is None:
                if chunk.load is None or chunk.load.done():  # a failed read-ahead is tried again
                    chunk.load = self._start_load(index, chunk)
                await asyncio.shield(chunk.load)  # raises the read's OSError
                if self._closed:
                    return
            if chunk.data is not None and not self._whole(index, chunk.data):
                return  # the file shrank: `size` says so, view() gives None
        self._hold(last + 1, read=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._forget_span()
        for index in list(self._held):
            self._drop(index)
        # A read may be running in a worker thread on this fd: close it when that read is over.
        if not self._loads:
            self._close_fd()

    # -- internals -------------------------------------------------------------------------------

    def _whole(self, index: int, data: bytes) -> bool:
        """Whether a chunk has all the bytes it should; if not, the file shrank under us: `size` drops."""
        expected = min(self._chunk, self._full - index * self._chunk)
        if len(data) >= expected:
            return True
        self.size = min(self.size, index * self._chunk + len(data))
        return False

    def _forget_span(self) -> None:
        self._span = (0, 0)
        self._span_view.release()
        self._span_view = memoryview(b"")

    def _hold(self, index: int, *, read: bool) -> None:
        if index in self._held or index * self._chunk >= self._full or self._closed:
            return
        chunk = self._held[index] = self._store.acquire((self._key, self._chunk, index))
        if read and chunk.data is None and chunk.load is None:
            chunk.load = self._start_load(index, chunk)

    def _drop(self, index: int) -> None:
        chunk = self._held.pop(index)
        self._store.release((self._key, self._chunk, index), chunk)

    def _drop_below(self, first: int) -> None:
        for index in [i for i in self._held if i < first]:
            self._drop(index)
        if self._span[0] < first * self._chunk:
            self._forget_span()

    def _start_load(self, index: int, chunk: _Chunk) -> asyncio.Task[None]:
        self._loads += 1
        task = asyncio.get_running_loop().create_task(self._load(index, chunk))
        task.add_done_callback(_consume_error)
        return task

    async def _load(self, index: int, chunk: _Chunk) -> None:
        """Read one chunk into the store, unless nobody holds it any more by the time it is our turn."""
        try:
            async with self._lock:
                if chunk.refs <= 0 or self._fd < 0:
                    return
                offset = index * self._chunk
                data = await self._read(offset, min(self._chunk, self._full - offset))
            self._store.loaded((self._key, self._chunk, index), chunk, data)
        finally:
            self._loads -= 1
            if self._closed and not self._loads:
                self._close_fd()

    async def _read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length), fewer at end of file, read in a worker thread (a cold disk
        must not stall the loop's other transfers). os.pread: no file position to keep, and the bytes
        land in a new object without the zero fill a bytearray would cost first (4 MiB per chunk)."""
        return await asyncio.get_running_loop().run_in_executor(None, _pread_all, self._fd, length, offset)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """pread until `length` bytes or end of file (a regular file gives all at once but at its end)."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _consume_error(task: asyncio.Task[None]) -> None:
    """Mark a read's failure as seen: a dropped read-ahead must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()


class FileCache:
    """Whole-file bytes shared between transfers, LRU within a byte budget; and the chunks of files too
    big for it (`chunks`), shared while transfers hold them."""

    def __init__(
        self,
        budget: int = 64 * 1024 * 1024,
        max_file: int | None = None,
        chunk_budget: int = 256 * 1024 * 1024,
    ) -> None:
        self.budget = budget
        self.max_file = budget // 2 if max_file is None else max_file
        self.used = 0
        self.loads = 0  # disk reads done (for tests and metrics)
        self.chunks = ChunkStore(chunk_budget)
        self._entries: OrderedDict[CacheKey, Buffer] = OrderedDict()
        self._loading: dict[CacheKey, asyncio.Future[Buffer]] = {}

    def cacheable(self, size: int) -> bool:
        return size <= self.max_file

    def get(self, key: CacheKey) -> Buffer | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    async def load(self, key: CacheKey, fd: int) -> Buffer:
        """The file's bytes (netascii-converted for a netascii key), reading and converting at most once
        however many transfers ask at the same time."""
        data = self.get(key)
        if data is not None:
            return data
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Buffer] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            data, complete = await self._read(key, fd)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._loading[key]
        if complete and len(data) <= self.max_file:
            self._insert(key, data)
        future.set_result(data)
        return data

    async def _read(self, key: CacheKey, fd: int) -> tuple[Buffer, bool]:
        """The bytes for `key`, and whether the whole file was there (no shrinking under us)."""
        raw = self.get(key[:4]) if len(key) > 4 else None
        if raw is None:
            raw = await read_all(fd, key[3])
            self.loads += 1
        complete = len(raw) == key[3]
        if len(key) > 4:
            return netascii.encode(bytes(raw)), complete
        return raw, complete

    def _insert(self, key: CacheKey, data: Buffer) -> None:
        self._entries[key] = data
        self.used += len(data)
        while self.used > self.budget and self._entries:
            _, old = self._entries.popitem(last=False)
            self.used -= len(old)


async def load_source(fd: int, st: os.stat_result, *, netascii_mode: bool, cache: FileCache) -> Source:
    """Turn an open file into block data; takes ownership of fd (TftpError on refusal)."""
    key = file_key(st)
    if not netascii_mode and not cache.cacheable(st.st_size):
        if not cache.chunks.admits(key):
            os.close(fd)
            raise TftpError(ErrorCode.NOT_DEFINED, BUSY_MESSAGE)
        return ChunkedSource(fd, st, cache.chunks)
    try:
        if not netascii_mode:
            return MemorySource(await cache.load(key, fd))
        if st.st_size > NETASCII_MAX:
            raise TftpError(ErrorCode.NOT_DEFINED, "File too large for netascii")
        return MemorySource(await cache.load((*key, 1), fd))
    finally:
        os.close(fd)


async def open_source(root: str, name: str, *, netascii_mode: bool, cache: FileCache) -> Source:
    """Resolve, open and load a file for one transfer (TftpError on refusal)."""
    fd, st = open_regular(resolve(root, name))
    return await load_source(fd, st, netascii_mode=netascii_mode, cache=cache)
