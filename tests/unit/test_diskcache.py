"""DiskCache: persistence across reopen, checksums, bounded size, file modes, safe names, and
writes behind the reads (``run_writer``)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from provenafs.cache import disk_cache
from provenafs.cache.disk_cache import DiskCache


def key(index: int, name: str = "raw/a.csv") -> bytes:
    """An opaque block key, as ``BlockKey.identity()`` makes them (the disk cache knows no
    datasets)."""
    return f"10378.1/1932274\0datasets/10378-1-1932274/{name}\0etag1\0{index}".encode()


def block_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.blk"))


async def test_survives_reopen_and_modes(tmp_path: Path) -> None:
    directory = tmp_path / "cache"

    cache = DiskCache(directory, 1 << 20)
    await cache.put(key(0), b"hello")
    await cache.put(key(1), b"world")
    reopened = DiskCache(directory, 1 << 20)
    assert await reopened.get(key(0)) == b"hello"
    assert await reopened.get(key(1)) == b"world"
    assert await reopened.get(key(2)) is None
    stats = reopened.statistics()
    assert stats["hits"] == 2 and stats["misses"] == 1 and stats["blocks"] == 2
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = block_files(directory)
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_names_never_contain_user_text(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)
    await cache.put(key(0, "../../etc/passwd\nevil"), b"x")
    (path,) = block_files(tmp_path / "c")
    assert path.parent.parent == tmp_path / "c"
    assert all(c in "0123456789abcdef" for c in path.parent.name + path.stem)


async def test_corrupted_or_torn_block_is_a_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)
    await cache.put(key(0), b"A" * 1000)
    await cache.put(key(1), b"B" * 1000)
    first, second = block_files(tmp_path / "c")
    raw = bytearray(first.read_bytes())
    raw[-1] ^= 0xFF
    first.write_bytes(bytes(raw))
    second.write_bytes(second.read_bytes()[:500])  # torn
    reopened = DiskCache(tmp_path / "c", 1 << 20)
    assert await reopened.get(key(0)) is None
    assert await reopened.get(key(1)) is None
    assert reopened.statistics()["corrupt_or_lost"] == 2
    assert block_files(tmp_path / "c") == []  # bad files removed
    await reopened.put(key(0), b"A" * 1000)
    assert await reopened.get(key(0)) == b"A" * 1000


async def test_size_is_bounded_and_lru_evicts_oldest(tmp_path: Path) -> None:
    limit = 10 * 1100

    cache = DiskCache(tmp_path / "c", limit)
    for i in range(10):
        await cache.put(key(i), bytes([i]) * 1000)
    assert await cache.get(key(0)) is not None  # 0 is now recent
    for i in range(10, 15):
        await cache.put(key(i), bytes([i]) * 1000)
    assert cache.statistics()["bytes"] <= limit
    assert await cache.get(key(0)) == bytes([0]) * 1000
    assert await cache.get(key(1)) is None
    assert await cache.get(key(14)) == bytes([14]) * 1000
    on_disk = sum(p.stat().st_size for p in block_files(tmp_path / "c"))
    assert on_disk <= limit


async def test_lru_order_survives_reopen(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 3 * 1100)
    for i in range(3):
        await cache.put(key(i), bytes([i]) * 1000)
    paths = block_files(tmp_path / "c")
    for n, path in enumerate(paths):
        os.utime(path, (1000 + n, 1000 + n))
    oldest = paths[0]
    reopened = DiskCache(tmp_path / "c", 3 * 1100)
    await reopened.put(key(9), b"n" * 1000)
    assert not oldest.exists()
    assert paths[2].exists()  # the most recently used of the old blocks stays
    assert await reopened.get(key(9)) == b"n" * 1000


async def test_stray_temp_files_are_cleaned(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)
    await cache.put(key(0), b"x")
    (path,) = block_files(tmp_path / "c")
    stray = path.parent / ".leftover.tmp"
    stray.write_bytes(b"partial")
    reopened = DiskCache(tmp_path / "c", 1 << 20)
    assert await reopened.get(key(0)) == b"x"
    assert not stray.exists()


async def test_concurrent_writes_of_one_block(tmp_path: Path) -> None:
    data = b"same block" * 1000

    async def main() -> DiskCache:
        cache = DiskCache(tmp_path / "c", 1 << 20)
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(cache.put, key(0), data)
        assert await cache.get(key(0)) == data
        return cache

    cache = await main()
    assert cache.statistics()["write_errors"] == 0
    assert cache.statistics()["blocks"] == 1
    assert cache.statistics()["bytes"] == len(data) + 40
    assert len(block_files(tmp_path / "c")) == 1
    assert [p for p in (tmp_path / "c").rglob("*.tmp")] == []


async def test_a_block_torn_after_it_was_verified_is_still_a_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", 1 << 20)
    await cache.put(key(0), b"Z" * 5000)
    assert await cache.get(key(0)) == b"Z" * 5000
    (path,) = block_files(tmp_path / "c")
    path.write_bytes(path.read_bytes()[:3000])
    assert await cache.get(key(0)) is None
    assert cache.statistics()["corrupt_or_lost"] == 1
    assert not path.exists()


# -- write-behind: ``run_writer`` ---------------------------------------------------------------


def on_disk(directory: Path) -> tuple[int, int]:
    """(block files, their bytes) under ``directory``."""
    files = block_files(directory)
    return len(files), sum(p.stat().st_size for p in files)


def indexed(cache: DiskCache) -> tuple[int, int]:
    """(blocks, bytes) that the cache's index lists."""
    stats = cache.statistics()
    return stats["blocks"], stats["bytes"]


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.tmp"))


async def written(cache: DiskCache) -> None:
    """Wait until the writer has written (or given up on) everything queued."""
    while cache.statistics()["pending_bytes"]:  # noqa: ASYNC110 -- no event to wait on
        await trio.sleep(0.001)


class SlowDisk:
    """Holds every block write in its thread until ``release`` is set: a slow disk on demand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writing = trio.Event()  # set once a write is held
        self.release = threading.Event()
        write_blocking = disk_cache._write_blocking

        def held(path: Path, data: bytes, temp_id: int) -> None:
            trio.from_thread.run_sync(self.writing.set)
            self.release.wait(timeout=30)
            write_blocking(path, data, temp_id)

        monkeypatch.setattr(disk_cache, "_write_blocking", held)


async def test_put_with_a_writer_queues_and_the_writer_writes(tmp_path: Path) -> None:
    directory = tmp_path / "c"

    cache = DiskCache(directory, 1 << 20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        await cache.put(key(0), b"queued" * 100)
        assert block_files(directory) == []  # put returned without writing
        stats = cache.statistics()
        assert stats["writes"] == 0 and stats["pending_bytes"] == 600
        assert key(0) in cache
        assert await cache.get(key(0)) == b"queued" * 100  # served from the queue
        await written(cache)
        assert len(block_files(directory)) == 1
        assert cache.statistics()["writes"] == 1
        assert indexed(cache) == (1, 600 + 40) == on_disk(directory)
        assert await cache.get(key(0)) == b"queued" * 100  # now from the file
        nursery.cancel_scope.cancel()
    reopened = DiskCache(directory, 1 << 20)
    assert await reopened.get(key(0)) == b"queued" * 100


async def test_writer_writes_many_blocks_and_rewrites_none(tmp_path: Path) -> None:
    directory = tmp_path / "c"

    cache = DiskCache(directory, 1 << 20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        for round_ in range(5):
            for i in range(10):
                await cache.put(key(i), bytes([i]) * 1000)  # the same blocks again
            await trio.sleep(0 if round_ % 2 else 0.01)
        await written(cache)
        nursery.cancel_scope.cancel()
    assert indexed(cache) == (10, 10 * 1040) == on_disk(directory)
    for i in range(10):
        assert await cache.get(key(i)) == bytes([i]) * 1000


async def test_max_pending_bytes_drops_extra_blocks(tmp_path: Path) -> None:
    directory = tmp_path / "c"

    cache = DiskCache(directory, 1 << 20, max_pending_bytes=2500)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(4):  # no checkpoint in between: the writer cannot catch up
            await cache.put(key(i), bytes([i]) * 1000)
        stats = cache.statistics()
        assert stats["writes_dropped"] == 2 and stats["pending_bytes"] == 2000
        await written(cache)
        nursery.cancel_scope.cancel()
    assert await cache.get(key(0)) == bytes([0]) * 1000
    assert await cache.get(key(1)) == bytes([1]) * 1000
    assert await cache.get(key(2)) is None
    assert await cache.get(key(3)) is None
    assert indexed(cache) == (2, 2 * 1040) == on_disk(directory)


async def test_cancelling_the_writer_mid_batch_leaves_index_and_disk_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "c"
    slow = SlowDisk(monkeypatch)

    cache = DiskCache(directory, 1 << 20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            await cache.put(key(i), bytes([i]) * 1000)
        await slow.writing.wait()  # the batch of 0..2 is in the thread
        await cache.put(key(3), b"late" * 250)  # queued behind it
        nursery.cancel_scope.cancel()
        slow.release.set()
    assert temp_files(directory) == []
    assert indexed(cache) == on_disk(directory)
    assert cache.statistics()["pending_bytes"] == 0
    assert await cache.get(key(3)) is None  # what was queued is dropped
    await cache.put(key(4), b"now")  # no writer: written before put returns
    assert indexed(cache) == on_disk(directory)
    reopened = DiskCache(directory, 1 << 20)
    assert indexed(reopened) == indexed(cache)


async def test_cancelling_the_writer_while_it_evicts_leaves_index_and_disk_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "c"

    cache = DiskCache(directory, 3 * 1040)
    for i in range(3):  # no writer yet: written at once, the cache is full
        await cache.put(key(i), bytes([i]) * 1000)
    slow = SlowDisk(monkeypatch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        await cache.put(key(3), bytes([3]) * 1000)
        await cache.put(key(4), bytes([4]) * 1000)
        await slow.writing.wait()  # written next: past max_bytes, so an eviction follows
        nursery.cancel_scope.cancel()
        slow.release.set()
    assert temp_files(directory) == []
    assert indexed(cache) == on_disk(directory)


async def test_get_serves_a_block_the_writer_is_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowDisk(monkeypatch)

    cache = DiskCache(tmp_path / "c", 1 << 20)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        await cache.put(key(0), b"in the thread")
        await slow.writing.wait()
        try:
            assert key(0) in cache
            assert await cache.get(key(0)) == b"in the thread"
        finally:
            slow.release.set()
            nursery.cancel_scope.cancel()
