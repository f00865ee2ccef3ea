"""Root confinement, regular-file checks, the shared file cache and chunked reads."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from proxydhcp.tftp import files
from proxydhcp.tftp.packet import ErrorCode, TftpError


@pytest.fixture
def tree(tmp_path: Path) -> tuple[str, Path]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "boot.efi").write_bytes(b"efi")
    (root / "pxelinux.0").write_bytes(b"pxe")
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "in").symlink_to(root / "pxelinux.0")
    os.mkfifo(root / "fifo")
    return os.path.realpath(root), tmp_path


@pytest.mark.parametrize("name", ["pxelinux.0", "/pxelinux.0", "sub/../pxelinux.0", "\\pxelinux.0", "in"])
def test_resolve_inside(tree: tuple[str, Path], name: str) -> None:
    root, _ = tree
    assert files.resolve(root, name) == os.path.join(root, "pxelinux.0")


def test_backslashes(tree: tuple[str, Path]) -> None:
    root, _ = tree
    assert files.resolve(root, "sub\\boot.efi") == os.path.join(root, "sub", "boot.efi")


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../secret", ErrorCode.ACCESS_VIOLATION),
        ("../../etc/passwd", ErrorCode.ACCESS_VIOLATION),
        ("..\\..\\etc\\passwd", ErrorCode.ACCESS_VIOLATION),
        ("out", ErrorCode.ACCESS_VIOLATION),  # a symlink pointing out of the root
        ("a\0b", ErrorCode.ACCESS_VIOLATION),
        ("x" * 2000, ErrorCode.ACCESS_VIOLATION),
        ("/", ErrorCode.FILE_NOT_FOUND),
        ("..", ErrorCode.ACCESS_VIOLATION),
    ],
)
def test_resolve_refused(tree: tuple[str, Path], name: str, code: ErrorCode) -> None:
    root, _ = tree
    with pytest.raises(TftpError) as info:
        files.resolve(root, name)
    assert info.value.code == code


def test_symlinked_directories(tree: tuple[str, Path]) -> None:
    """A directory symlink on the way is followed like any symlink: inside the root it is fine, out
    of it refused (the plain-path shortcut must hand these to realpath)."""
    root, tmp = tree
    (tmp / "outside").mkdir()
    (tmp / "outside" / "f").write_bytes(b"f")
    Path(root, "outdir").symlink_to(tmp / "outside")
    Path(root, "subln").symlink_to(Path(root, "sub"))
    assert files.resolve(root, "subln/boot.efi") == os.path.join(root, "sub", "boot.efi")
    assert files.resolve(root, "sub/boot.efi") == os.path.join(root, "sub", "boot.efi")
    with pytest.raises(TftpError) as info:
        files.resolve(root, "outdir/f")
    assert info.value.code == ErrorCode.ACCESS_VIOLATION
    assert files.resolve(root, "sub//./boot.efi") == os.path.join(root, "sub", "boot.efi")


def test_absolute_path_stays_in_root(tree: tuple[str, Path]) -> None:
    root, _ = tree
    # /etc/passwd means root/etc/passwd, which does not exist
    with pytest.raises(TftpError) as info:
        files.open_regular(files.resolve(root, "/etc/passwd"))
    assert info.value.code == ErrorCode.FILE_NOT_FOUND


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("sub", ErrorCode.ACCESS_VIOLATION),
        ("fifo", ErrorCode.ACCESS_VIOLATION),
        ("missing", ErrorCode.FILE_NOT_FOUND),
    ],
)
def test_open_regular_only(tree: tuple[str, Path], name: str, code: ErrorCode) -> None:
    root, _ = tree
    with pytest.raises(TftpError) as info:
        files.open_regular(files.resolve(root, name))
    assert info.value.code == code
    assert "Errno" not in info.value.message


def test_open_regular_ok(tree: tuple[str, Path]) -> None:
    root, _ = tree
    fd, st = files.open_regular(files.resolve(root, "pxelinux.0"))
    try:
        assert st.st_size == 3
    finally:
        os.close(fd)


def test_cache_reads_once_for_concurrent_transfers(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "initrd").write_bytes(data)
    cache = files.FileCache(budget=16 * 1024 * 1024)

    async def main() -> list[bytes]:
        sources = await asyncio.gather(
            *(files.open_source(str(tmp_path), "initrd", netascii_mode=False, cache=cache) for _ in range(50))
        )
        out = []
        for s in sources:
            view = s.view(0, s.size)
            assert view is not None
            out.append(bytes(view))
            view.release()
            s.close()
        return out

    results = asyncio.run(main())
    assert all(r == data for r in results)
    assert cache.loads == 1


def test_cache_lru_budget(tmp_path: Path) -> None:
    cache = files.FileCache(budget=250, max_file=100)
    for name in "abc":
        (tmp_path / name).write_bytes(name.encode() * 100)

    async def load(name: str) -> None:
        (await files.open_source(str(tmp_path), name, netascii_mode=False, cache=cache)).close()

    async def main() -> None:
        await load("a")
        await load("b")
        await load("a")  # a is now the most recent
        await load("c")  # evicts b
        await load("a")
        assert cache.loads == 3
        await load("b")
        assert cache.loads == 4
        assert cache.used <= 250

    asyncio.run(main())


def test_modified_file_is_read_again(tmp_path: Path) -> None:
    cache = files.FileCache()
    path = tmp_path / "f"
    path.write_bytes(b"old")

    async def read() -> bytes:
        s = await files.open_source(str(tmp_path), "f", netascii_mode=False, cache=cache)
        view = s.view(0, s.size)
        assert view is not None
        return bytes(view)

    assert asyncio.run(read()) == b"old"
    path.write_bytes(b"newer")
    assert asyncio.run(read()) == b"newer"


def test_chunked_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "CHUNK", 1000)
    data = os.urandom(5000)
    (tmp_path / "big").write_bytes(data)
    cache = files.FileCache(budget=100)

    async def main() -> None:
        s = await files.open_source(str(tmp_path), "big", netascii_mode=False, cache=cache)
        assert isinstance(s, files.ChunkedSource)
        assert s.view(0, 512) is None
        await s.fill(0, 512)
        assert bytes(s.view(0, 512) or b"") == data[:512]
        assert s.view(900, 1100) is None
        await s.fill(900, 1100)  # keeps from 900 on, reads forward
        assert bytes(s.view(900, 1100) or b"") == data[900:1100]
        await s.fill(4500, 5000)
        assert bytes(s.view(4500, 5000) or b"") == data[4500:]
        assert s.view(0, 512) is None  # chunks before the last ACK's: dropped
        s.close()

    asyncio.run(main())
    assert cache.loads == 0


def test_netascii_source(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_bytes(b"a\nb\rc\r\n")

    async def main() -> bytes:
        s = await files.open_source(str(tmp_path), "t.txt", netascii_mode=True, cache=files.FileCache())
        return bytes(s.view(0, s.size) or b"")

    assert asyncio.run(main()) == b"a\r\nb\r\0c\r\0\r\n"


def _reading(s: files.ChunkedSource) -> bool:
    return any(c.load is not None and not c.load.done() for c in s._held.values())


async def _settle(s: files.ChunkedSource) -> None:
    """Let the read-ahead running in a worker thread finish (bounded)."""
    for _ in range(500):
        if not _reading(s):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("read-ahead did not finish")


def test_chunked_source_reads_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "CHUNK", 1000)
    data = os.urandom(3500)
    (tmp_path / "big").write_bytes(data)

    async def main() -> None:
        s = await files.open_source(str(tmp_path), "big", netascii_mode=False, cache=files.FileCache(100))
        assert isinstance(s, files.ChunkedSource)
        await s.fill(0, 600)
        assert 1 in s._held  # entering chunk 0 started reading chunk 1
        await _settle(s)
        for start in (900, 1950, 2900):  # each crosses into the chunk read ahead: no fill needed
            view = s.view(start, start + 200)
            assert view is not None, start
            assert bytes(view) == data[start : start + 200]
            view.release()
            await _settle(s)
        last = s.view(3400, 3500)
        assert last is not None and bytes(last) == data[3400:]
        last.release()
        assert max(s._held) == 3  # nothing left to read
        s.close()

    asyncio.run(main())


def test_chunked_source_windows_over_odd_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows walked forward as a transfer does (resends from the last ACK), fill only when view says
    so, over chunks that are no multiple of the block size; every byte must come back in order."""
    monkeypatch.setattr(files, "CHUNK", 10_007)
    data = os.urandom(123_456)
    (tmp_path / "big").write_bytes(data)
    blksize, window = 1468, 16

    async def main() -> tuple[bytes, int]:
        s = await files.open_source(str(tmp_path), "big", netascii_mode=False, cache=files.FileCache(100))
        out = bytearray()
        fills = 0
        acked = 0
        while acked * blksize <= len(data):
            base = acked * blksize
            end = min(base + window * blksize, len(data))
            view = s.view(base, end)
            if view is None:
                fills += 1
                await s.fill(base, end)
                view = s.view(base, end)
            assert view is not None
            out += view[: min(blksize * 5, end - base)]  # the client ACKs 5 blocks of the window
            view.release()
            acked += 5
            await asyncio.sleep(0)
            if acked % 40 == 0:
                await _settle(s)
        s.close()
        return bytes(out[: len(data)]), fills

    got, fills = asyncio.run(main())
    assert got == data
    assert fills < 123_456 // 10_007  # the read-ahead served most chunk boundaries


def test_chunked_source_close_during_read_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "CHUNK", 1 << 20)
    (tmp_path / "big").write_bytes(os.urandom(3 << 20))

    async def main() -> files.ChunkedSource:
        s = await files.open_source(str(tmp_path), "big", netascii_mode=False, cache=files.FileCache(100))
        assert isinstance(s, files.ChunkedSource)
        await s.fill(0, 1000)
        ahead = s._held[1].load
        assert ahead is not None
        s.close()  # the read-ahead may still be in its thread: the fd closes when it is over
        await asyncio.gather(ahead, return_exceptions=True)
        return s

    s = asyncio.run(main())
    assert s._fd == -1
