"""DiskCache: persistence across reopen, checksums, bounded size, file modes, safe names."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import trio

from provenafs.blockcache import BlockKey
from provenafs.diskcache import DiskCache


def key(index: int, name: str = "raw/a.csv") -> BlockKey:
    return BlockKey("10378.1/1932274", f"datasets/10378-1-1932274/{name}", "etag1", index)


def block_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.blk"))


def test_survives_reopen_and_modes(tmp_path: Path) -> None:
    directory = tmp_path / "cache"

    async def main() -> None:
        cache = DiskCache(directory, 1 << 20)
        await cache.put(key(0), b"hello")
        await cache.put(key(1), b"world")
        reopened = DiskCache(directory, 1 << 20)
        assert await reopened.get(key(0)) == b"hello"
        assert await reopened.get(key(1)) == b"world"
        assert await reopened.get(key(2)) is None
        stats = reopened.statistics()
        assert stats["hits"] == 2 and stats["misses"] == 1 and stats["blocks"] == 2

    trio.run(main)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = block_files(directory)
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_names_never_contain_user_text(tmp_path: Path) -> None:
    async def main() -> None:
        cache = DiskCache(tmp_path / "c", 1 << 20)
        await cache.put(key(0, "../../etc/passwd\nevil"), b"x")

    trio.run(main)
    (path,) = block_files(tmp_path / "c")
    assert path.parent.parent == tmp_path / "c"
    assert all(c in "0123456789abcdef" for c in path.parent.name + path.stem)


def test_corrupted_or_torn_block_is_a_miss(tmp_path: Path) -> None:
    async def main() -> None:
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

    trio.run(main)


def test_size_is_bounded_and_lru_evicts_oldest(tmp_path: Path) -> None:
    limit = 10 * 1100

    async def main() -> None:
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

    trio.run(main)
    on_disk = sum(p.stat().st_size for p in block_files(tmp_path / "c"))
    assert on_disk <= limit


def test_lru_order_survives_reopen(tmp_path: Path) -> None:
    async def main() -> None:
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

    trio.run(main)


def test_stray_temp_files_are_cleaned(tmp_path: Path) -> None:
    async def main() -> None:
        cache = DiskCache(tmp_path / "c", 1 << 20)
        await cache.put(key(0), b"x")
        (path,) = block_files(tmp_path / "c")
        stray = path.parent / ".leftover.tmp"
        stray.write_bytes(b"partial")
        reopened = DiskCache(tmp_path / "c", 1 << 20)
        assert await reopened.get(key(0)) == b"x"
        assert not stray.exists()

    trio.run(main)


def test_concurrent_writes_of_one_block(tmp_path: Path) -> None:
    data = b"same block" * 1000

    async def main() -> DiskCache:
        cache = DiskCache(tmp_path / "c", 1 << 20)
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(cache.put, key(0), data)
        assert await cache.get(key(0)) == data
        return cache

    cache = trio.run(main)
    assert cache.statistics()["write_errors"] == 0
    assert cache.statistics()["blocks"] == 1
    assert cache.statistics()["bytes"] == len(data) + 40
    assert len(block_files(tmp_path / "c")) == 1
    assert [p for p in (tmp_path / "c").rglob("*.tmp")] == []


def test_a_block_torn_after_it_was_verified_is_still_a_miss(tmp_path: Path) -> None:
    async def main() -> None:
        cache = DiskCache(tmp_path / "c", 1 << 20)
        await cache.put(key(0), b"Z" * 5000)
        assert await cache.get(key(0)) == b"Z" * 5000
        (path,) = block_files(tmp_path / "c")
        path.write_bytes(path.read_bytes()[:3000])
        assert await cache.get(key(0)) is None
        assert cache.statistics()["corrupt_or_lost"] == 1
        assert not path.exists()

    trio.run(main)
