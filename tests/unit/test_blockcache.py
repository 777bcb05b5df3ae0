"""BlockCache: LRU by bytes, single-flight, failures not cached, disk tier."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from provenafs.cache.block_cache import BlockCache, BlockKey
from provenafs.cache.disk_cache import DiskCache


def key(index: int, etag: str = "e1") -> BlockKey:
    return BlockKey("10378.1/1", "datasets/x/a.bin", etag, index)


def test_lru_is_bounded_by_bytes() -> None:
    cache = BlockCache(max_bytes=1000, block_size=100)
    for i in range(10):
        cache.put(key(i), bytes([i]) * 100)
    assert cache.statistics()["bytes"] == 1000
    assert cache.peek(key(0)) == bytes([0]) * 100  # touch 0: now most recent
    cache.put(key(10), b"x" * 300)
    assert cache.statistics()["bytes"] <= 1000
    assert cache.peek(key(0)) is not None
    assert key(1) not in cache and key(2) not in cache and key(3) not in cache
    assert key(4) in cache
    cache.put(key(11), b"y" * 1001)  # larger than the whole cache: not kept
    assert key(11) not in cache


def test_keys_differ_by_etag() -> None:
    cache = BlockCache(max_bytes=1000, block_size=100)
    cache.put(key(0, "old"), b"old")
    assert cache.peek(key(0, "new")) is None


async def test_single_flight_and_hits() -> None:
    cache = BlockCache(max_bytes=10_000, block_size=100)
    fetches = 0

    async def fetch() -> bytes:
        nonlocal fetches
        fetches += 1
        await trio.sleep(0.001)
        return b"z" * 100

    results: list[bytes] = []

    async def get() -> None:
        results.append(await cache.get_or_fetch(key(0), fetch))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(get)
    await get()
    assert fetches == 1
    assert results == [b"z" * 100] * 21
    stats = cache.statistics()
    assert stats["fetches"] == 1
    assert stats["misses"] == 1
    assert stats["waits"] == 19
    assert stats["hits"] == 1
    assert stats["bytes_fetched"] == 100


async def test_failure_reaches_waiters_and_is_not_cached() -> None:
    cache = BlockCache(max_bytes=10_000, block_size=100)
    calls = 0

    async def flaky() -> bytes:
        nonlocal calls
        calls += 1
        await trio.sleep(0.001)
        if calls == 1:
            raise OSError("boom")
        return b"ok"

    errors: list[BaseException] = []

    async def get() -> None:
        try:
            await cache.get_or_fetch(key(0), flaky)
        except OSError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert await cache.get_or_fetch(key(0), flaky) == b"ok"
    assert len(errors) == 5
    assert calls == 2


async def test_disk_tier_serves_after_memory_is_gone(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "cache", 10_000)
    first = BlockCache(max_bytes=10_000, block_size=100, disk=disk)

    async def fetch() -> bytes:
        return b"d" * 100

    await first.get_or_fetch(key(3), fetch)
    second = BlockCache(
        max_bytes=10_000, block_size=100, disk=DiskCache(tmp_path / "cache", 10_000)
    )

    async def must_not_fetch() -> bytes:
        raise AssertionError("fetched although the disk had it")

    assert await second.get_or_fetch(key(3), must_not_fetch) == b"d" * 100
    assert second.statistics()["disk_hits"] == 1
    assert second.statistics()["fetches"] == 0
    assert second.statistics()["disk_bytes"] > 100


async def test_zero_sized_cache_still_serves() -> None:
    cache = BlockCache(max_bytes=0, block_size=100)

    async def fetch() -> bytes:
        return b"q"

    assert await cache.get_or_fetch(key(0), fetch) == b"q"
    assert cache.statistics()["bytes"] == 0


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_size"):
        BlockCache(100, block_size=0)


def test_peak_bytes_is_the_most_ever_held_and_stays_within_the_maximum() -> None:
    cache = BlockCache(max_bytes=1000, block_size=100)
    assert cache.statistics()["peak_bytes"] == 0
    for i in range(4):
        cache.put(key(i), b"a" * 100)
    assert cache.statistics()["peak_bytes"] == 400
    for i in range(4, 30):  # evictions keep the cache at its maximum
        cache.put(key(i), b"b" * 100)
    cache.put(key(30), b"c" * 1001)  # larger than the whole cache: not kept, not counted
    stats = cache.statistics()
    assert (stats["bytes"], stats["peak_bytes"]) == (1000, 1000)

    small = BlockCache(max_bytes=1000, block_size=100)
    small.put(key(0), b"d" * 300)
    small.put(key(0), b"e" * 100)  # replaced by a smaller block: the peak is kept
    assert (small.statistics()["bytes"], small.statistics()["peak_bytes"]) == (100, 300)
