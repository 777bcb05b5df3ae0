"""ObjectReader over MemoryBlobStore: bytes, fetch sizes, prefetch growth, budget, ETags."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provenafs.cache.block_cache import BlockCache
from provenafs.cache.disk_cache import DiskCache
from provenafs.cache.spill import SpillArea
from provenafs.read.reader import RANDOM_FILL_AFTER, ObjectReader, PrefetchBudget
from provenafs.storage.blobstore import (
    AccessDeniedError,
    ExpiredCredentialsError,
    StaleObjectError,
)
from tests.unit.reader_support import KiB, MiB, Setup, payload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 70_000),
    reads=st.lists(st.tuples(st.integers(0, 80_000), st.integers(0, 20_000)), max_size=25),
    sequential_first=st.booleans(),
)
async def test_random_reads_equal_the_source(
    size: int, reads: list[tuple[int, int]], sequential_first: bool
) -> None:
    setup = Setup(block_size=4 * KiB, cache_bytes=16 * KiB, budget=24 * KiB)
    data = payload(size, seed=size)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, initial_window=4 * KiB, max_window=32 * KiB)
        if sequential_first:
            for offset in range(0, size, 3000):
                assert await reader.read(offset, 3000) == data[offset : offset + 3000]
        for offset, length in reads:
            assert await reader.read(offset, length) == data[offset : offset + length]
        await reader.close()
        assert setup.budget.in_use == 0
    assert setup.budget.statistics()["peak"] <= 24 * KiB


async def test_concurrent_reads_of_one_file_equal_the_source() -> None:
    setup = Setup(block_size=64 * KiB, cache_bytes=256 * KiB, budget=512 * KiB)
    data = payload(3 * MiB + 123)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, initial_window=64 * KiB, max_window=1 * MiB)
        chunks: dict[int, bytes] = {}

        async def read(offset: int) -> None:
            chunks[offset] = await reader.read(offset, 128 * KiB)

        for base in range(0, len(data), 4 * 128 * KiB):  # kernel-style: a few reads in flight
            async with trio.open_nursery() as inner:
                for n in range(4):
                    inner.start_soon(read, base + n * 128 * KiB)
        await reader.close()
        joined = b"".join(chunks[o] for o in sorted(chunks))
        assert hashlib.sha256(joined).digest() == hashlib.sha256(data).digest()
    assert setup.budget.in_use == 0


async def test_sequential_read_grows_the_prefetch_window() -> None:
    setup = Setup()
    data = payload(48 * MiB)
    setup.put("big", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("big", nursery)
        out = bytearray()
        for offset in range(0, len(data), 128 * KiB):
            out += await reader.read(offset, 128 * KiB)
        stats = reader.statistics()
        await reader.close()
        assert bytes(out) == data
        assert stats["window"] == 64 * MiB
        assert stats["slot_hits"] > 30
    sizes = [end - start for _, start, end in setup.store.ranges]
    assert sizes[0] == 128 * KiB  # the first read fetches just what it asks
    assert max(sizes) == 8 * MiB  # parts grow to the largest size
    assert len(sizes) < 25  # 384 FUSE-sized reads, far fewer GETs
    assert setup.fetched() == len(data)  # nothing fetched twice
    assert setup.budget.in_use == 0


async def test_heads_of_many_files_fetch_little() -> None:
    setup = Setup()
    files = {f"f{i}": payload(4 * MiB, seed=i) for i in range(100)}
    for key, data in files.items():
        setup.put(key, data)

    async with trio.open_nursery() as nursery:
        for key, data in files.items():
            reader = setup.reader(key, nursery)
            assert await reader.read(0, 64 * KiB) == data[: 64 * KiB]
            await reader.close()
    read = 100 * 64 * KiB
    assert setup.fetched() <= 4 * read
    assert setup.fetched() == read


async def test_heads_with_kernel_readahead_fetch_at_most_4x() -> None:
    setup = Setup()
    files = {f"f{i}": payload(4 * MiB, seed=i) for i in range(20)}
    for key, data in files.items():
        setup.put(key, data)

    async with trio.open_nursery() as nursery:
        for key, data in files.items():
            reader = setup.reader(key, nursery)
            # the kernel turns a 64 KiB read into one 128 KiB request, then another 128 KiB
            assert await reader.read(0, 128 * KiB) == data[: 128 * KiB]
            assert await reader.read(128 * KiB, 128 * KiB) == data[128 * KiB : 256 * KiB]
            await reader.close()
    assert setup.fetched() <= 4 * 20 * 64 * KiB


async def test_random_reader_fetches_only_blocks_it_touches() -> None:
    setup = Setup()
    data = payload(64 * MiB)
    setup.put("k", data)
    rng = random.Random(7)
    blocks = rng.sample(range(0, 64, 2), 25)  # never two neighbouring blocks in a row
    offsets = [b * MiB + rng.randrange(0, MiB - 4 * KiB) for b in blocks]

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery)
        for offset in offsets:
            assert await reader.read(offset, 4 * KiB) == data[offset : offset + 4 * KiB]
        assert reader.statistics()["prefetch_parts"] == 0
        await reader.close()
    touched = {o // MiB for o in offsets} | {(o + 4 * KiB - 1) // MiB for o in offsets}
    assert setup.fetched() <= len(touched) * MiB + 4 * KiB


async def test_budget_holds_with_many_sequential_readers() -> None:
    budget = 4 * MiB
    setup = Setup(block_size=256 * KiB, cache_bytes=2 * MiB, budget=budget)
    files = {f"f{i}": payload(6 * MiB, seed=i) for i in range(12)}
    for key, data in files.items():
        setup.put(key, data)
    peaks: list[int] = []

    async with trio.open_nursery() as nursery:

        async def stream(key: str) -> None:
            reader = setup.reader(key, nursery, max_window=8 * MiB)
            out = bytearray()
            for offset in range(0, len(files[key]), 128 * KiB):
                out += await reader.read(offset, 128 * KiB)
                peaks.append(setup.budget.in_use)
            await reader.close()
            assert bytes(out) == files[key]

        async with trio.open_nursery() as inner:
            for key in files:
                inner.start_soon(stream, key)
    stats = setup.budget.statistics()
    assert max(peaks) <= budget
    assert stats["peak"] <= budget
    assert stats["peak"] > 0  # prefetch did run
    assert stats["refused"] > 0  # and was held back by the budget
    assert stats["in_use"] == 0


async def test_tiny_budget_still_reads_correctly() -> None:
    setup = Setup(block_size=64 * KiB, cache_bytes=64 * KiB, budget=1)
    data = payload(2 * MiB)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery)
        out = bytearray()
        for offset in range(0, len(data), 128 * KiB):
            out += await reader.read(offset, 128 * KiB)
        await reader.close()
        assert bytes(out) == data
    assert setup.budget.statistics()["peak"] == 0


async def test_changed_object_is_stale_on_every_path() -> None:
    setup = Setup(block_size=64 * KiB)
    setup.put("k", payload(MiB))

    async with trio.open_nursery() as nursery:
        fresh = setup.reader("k", nursery)
        streaming = setup.reader("k", nursery)
        await streaming.read(0, 64 * KiB)
        await streaming.read(64 * KiB, 64 * KiB)  # prefetch started
        setup.put("k", payload(MiB, seed=99))  # overwritten: new ETag
        with pytest.raises(StaleObjectError):
            await fresh.read(MiB - 4 * KiB, 4 * KiB)
        with pytest.raises(StaleObjectError):
            for offset in range(128 * KiB, MiB, 64 * KiB):
                await streaming.read(offset, 64 * KiB)
        await fresh.close()
        await streaming.close()
    assert setup.budget.in_use == 0


async def test_expired_credentials_are_renewed_once() -> None:
    setup = Setup()
    data = payload(MiB)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery)
        setup.store.fail_with = [ExpiredCredentialsError("expired")]
        assert await reader.read(0, 100) == data[:100]
        assert setup.client.calls == 2
        assert reader.statistics()["credential_retries"] == 1
        setup.store.fail_with = [AccessDeniedError("no"), AccessDeniedError("still no")]
        with pytest.raises(AccessDeniedError):
            await reader.read(500 * KiB, 100)
        assert setup.client.calls == 3
        await reader.close()


async def test_credentials_fetched_once_for_many_reads() -> None:
    setup = Setup(block_size=64 * KiB)
    data = payload(4 * MiB)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery)
        for offset in range(0, len(data), 128 * KiB):
            await reader.read(offset, 128 * KiB)
        await reader.close()
    assert setup.client.calls == 1
    assert setup.broker.statistics()["read_calls"] == 1


async def test_whole_small_file_is_cached_for_the_next_reader() -> None:
    setup = Setup()
    data = payload(4 * KiB)
    setup.put("small", data)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            reader = setup.reader("small", nursery)
            assert await reader.read(0, 128 * KiB) == data
            await reader.close()
    assert len(setup.store.ranges) == 1


async def test_close_cancels_prefetch_and_returns_the_budget() -> None:
    setup = Setup(block_size=64 * KiB)
    setup.put("k", payload(16 * MiB))

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery)
        for offset in range(0, 2 * MiB, 128 * KiB):
            await reader.read(offset, 128 * KiB)
        assert reader.statistics()["slots"] > 0
        await reader.close()
        assert reader.statistics()["slots"] == 0
        assert setup.budget.in_use == 0
        with pytest.raises(RuntimeError):
            await reader.read(0, 1)


async def test_far_seek_resets_the_window() -> None:
    setup = Setup(block_size=64 * KiB)
    data = payload(32 * MiB)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, initial_window=64 * KiB, max_window=4 * MiB)
        for offset in range(0, 4 * MiB, 128 * KiB):
            await reader.read(offset, 128 * KiB)
        assert reader.statistics()["window"] == 4 * MiB
        assert await reader.read(30 * MiB, 100) == data[30 * MiB : 30 * MiB + 100]
        assert reader.statistics()["window"] == 64 * KiB
        assert reader.statistics()["slots"] == 0
        await reader.close()
    assert setup.budget.in_use == 0


async def test_reads_past_the_end_and_without_nursery() -> None:
    setup = Setup(block_size=64 * KiB)
    data = payload(100 * KiB)
    setup.put("k", data)

    async with trio.open_nursery():
        reader = setup.reader("k", None)
        assert await reader.read(100 * KiB, 10) == b""
        assert await reader.read(10**9, 10) == b""
        assert await reader.read(0, 0) == b""
        out = bytearray()
        for offset in range(0, len(data), 16 * KiB):
            out += await reader.read(offset, 16 * KiB)
        assert bytes(out) == data
        assert reader.statistics()["prefetch_parts"] == 0
        await reader.close()


def test_prefetch_budget_accounting() -> None:
    budget = PrefetchBudget(100)
    assert budget.try_acquire(60)
    assert not budget.try_acquire(41)
    assert budget.try_acquire(40)
    budget.release(100)
    with pytest.raises(RuntimeError):
        budget.release(1)
    assert budget.statistics() == {
        "max_bytes": 100,
        "in_use": 0,
        "peak": 100,
        "refused": 1,
        "holders": 0,
    }


def test_prefetch_budget_fair_shares() -> None:
    budget = PrefetchBudget(100)
    first, second = object(), object()
    assert budget.try_acquire(80, holder=first)  # alone: may take most of it
    assert budget.try_acquire(20, holder=second)  # a newcomer always gets a first part
    assert not budget.try_acquire(10, holder=first)  # over its half now
    budget.release(50, holder=first)
    assert budget.try_acquire(20, holder=second)  # 40 <= 50: within its share
    assert not budget.try_acquire(20, holder=second)  # 60 > 50
    assert budget.try_acquire(10, holder=first)  # 40 <= 50
    budget.release(40, holder=first)
    budget.release(40, holder=second)
    assert budget.statistics()["holders"] == 0
    assert budget.in_use == 0


async def test_a_short_rest_comes_along_with_the_first_read() -> None:
    setup = Setup()
    data = payload(200 * KiB)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery)
        assert await reader.read(0, 128 * KiB) == data[: 128 * KiB]
        assert await reader.read(128 * KiB, 128 * KiB) == data[128 * KiB :]
        await reader.close()
    assert setup.store.ranges == [("k", 0, 200 * KiB)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(1, 60_000),
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 64_000), st.integers(1, 9_000)), min_size=1, max_size=4),
        max_size=12,
    ),
)
async def test_concurrent_random_reads_equal_the_source(
    size: int, batches: list[list[tuple[int, int]]]
) -> None:
    setup = Setup(block_size=4 * KiB, cache_bytes=12 * KiB, budget=16 * KiB)
    data = payload(size, seed=size + 1)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, initial_window=4 * KiB, max_window=16 * KiB)

        async def check(offset: int, length: int) -> None:
            assert await reader.read(offset, length) == data[offset : offset + length]

        for batch in batches:
            async with trio.open_nursery() as inner:
                for offset, length in batch:
                    inner.start_soon(check, offset, length)
            for offset in range(0, min(size, 3 * 4 * KiB), 2 * KiB):  # and a sequential run
                await check(offset, 2 * KiB)
        await reader.close()
    assert setup.budget.in_use == 0
    assert setup.budget.statistics()["peak"] <= 16 * KiB


async def test_two_streaming_readers_share_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    setup = Setup(block_size=256 * KiB, cache_bytes=MiB, budget=8 * MiB)
    files = {name: payload(24 * MiB, seed=n) for n, name in enumerate(("a", "b"))}
    for key, data in files.items():
        setup.put(key, data)
    setup.store.latency = 0.05  # slow GETs: prefetch holds its reservations for a while
    stats: dict[str, dict[str, int]] = {}

    async with trio.open_nursery() as nursery:
        a_is_streaming = trio.Event()

        async def stream(key: str) -> None:
            if key == "b":
                await a_is_streaming.wait()  # "a" holds the whole budget when "b" starts
            reader = setup.reader(key, nursery, max_window=8 * MiB, max_part=MiB)
            out = bytearray()
            for offset in range(0, len(files[key]), 128 * KiB):
                out += await reader.read(offset, 128 * KiB)
                if offset == 8 * MiB:
                    a_is_streaming.set()
            stats[key] = dict(reader.statistics())
            await reader.close()
            assert bytes(out) == files[key]

        async with trio.open_nursery() as inner:
            inner.start_soon(stream, "a")
            inner.start_soon(stream, "b")
    # neither reader is starved: most of each file arrives through its own prefetch
    for key in files:
        assert stats[key]["prefetch_bytes"] >= 20 * MiB, stats
    assert setup.budget.in_use == 0


async def test_disk_cache_serves_a_remounted_reader_without_gets(tmp_path: Path) -> None:
    setup = Setup(block_size=256 * KiB, cache_bytes=MiB, budget=4 * MiB)
    data = payload(6 * MiB + 5)
    setup.put("k", data)

    async def stream() -> None:
        async with trio.open_nursery() as nursery:
            reader = setup.reader("k", nursery, max_window=2 * MiB)
            out = bytearray()
            for offset in range(0, len(data), 128 * KiB):
                out += await reader.read(offset, 128 * KiB)
            await reader.close()
            assert bytes(out) == data

    setup.cache = BlockCache(MiB, 256 * KiB, disk=DiskCache(tmp_path / "cache", 64 * MiB))
    await stream()
    first_mount = setup.fetched()
    assert first_mount == len(data)
    # "remount": fresh memory cache, the disk cache reopened from its directory
    setup.cache = BlockCache(MiB, 256 * KiB, disk=DiskCache(tmp_path / "cache", 64 * MiB))
    await stream()
    assert setup.fetched() == first_mount  # not one byte more from S3
    assert setup.cache.statistics()["disk_hits"] == -(-len(data) // (256 * KiB))


# -- the page-cache fill of random readers ----------------------------------------------------


class KernelPages:
    """Stands in for the kernel's page cache: what the fill pushed, by offset."""

    def __init__(self, *, fail: bool = False, hang: bool = False) -> None:
        self.pushed: dict[int, bytes] = {}
        self.fail = fail
        self.hang = hang

    async def __call__(self, offset: int, data: bytes) -> None:
        if self.hang:
            await trio.sleep_forever()
        if self.fail:
            raise OSError(38, "notify_store not supported")
        self.pushed[offset] = data

    def assembled(self) -> bytes:
        return b"".join(self.pushed[offset] for offset in sorted(self.pushed))


def random_offsets(size: int, count: int, seed: int = 3) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(0, size - 4 * KiB) for _ in range(count)]


async def test_random_reader_fills_the_page_cache_with_the_whole_object() -> None:
    setup = Setup()
    data = payload(40 * MiB + 123)
    setup.put("k", data)
    pages = KernelPages()

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, page_cache=pages)
        for offset in random_offsets(len(data), RANDOM_FILL_AFTER * 4):
            assert await reader.read(offset, 4 * KiB) == data[offset : offset + 4 * KiB]
        while reader.statistics()["filled_bytes"] < len(data):  # noqa: ASYNC110
            await trio.sleep(0.01)
        await reader.close()
    assert pages.assembled() == data
    assert setup.budget.in_use == 0
    assert 0 < setup.budget.statistics()["peak"] <= setup.budget.max_bytes


async def test_a_re_read_with_forward_gaps_starts_no_fill() -> None:
    """What reaches the mount when a program re-reads a file whose pages the kernel partly
    dropped: ascending reads with gaps. A fill would fetch the whole file again."""
    setup = Setup()
    data = payload(64 * MiB)
    setup.put("k", data)
    pages = KernelPages()

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, page_cache=pages)
        for offset in sorted(random_offsets(len(data), RANDOM_FILL_AFTER * 4)):
            assert await reader.read(offset, 4 * KiB) == data[offset : offset + 4 * KiB]
        await trio.sleep(0.1)
        assert reader.statistics()["filled_bytes"] == 0
        await reader.close()
    assert pages.pushed == {}


async def test_no_fill_for_sequential_readers_few_random_reads_or_big_objects() -> None:
    setup = Setup()
    data = payload(8 * MiB)
    setup.put("k", data)
    pages = KernelPages()

    async with trio.open_nursery() as nursery:
        sequential = setup.reader("k", nursery, page_cache=pages)
        for offset in range(0, len(data), 128 * KiB):
            await sequential.read(offset, 128 * KiB)
        await sequential.close()
        few = setup.reader("k", nursery, page_cache=pages)
        for offset in random_offsets(len(data), RANDOM_FILL_AFTER - 2):
            await few.read(offset, 4 * KiB)
        await few.close()
        big = setup.reader("k", nursery, page_cache=pages, fill_max_bytes=len(data) - 1)
        for offset in random_offsets(len(data), RANDOM_FILL_AFTER * 2):
            await big.read(offset, 4 * KiB)
        await trio.sleep(0.1)
        assert big.statistics()["filled_bytes"] == 0
        await big.close()
    assert pages.pushed == {}


@pytest.mark.parametrize("pages", [KernelPages(fail=True), KernelPages(hang=True)], ids=str)
async def test_a_failing_or_closed_fill_leaves_reads_right_and_the_budget_whole(
    pages: KernelPages,
) -> None:
    setup = Setup()
    data = payload(16 * MiB)
    setup.put("k", data)

    async with trio.open_nursery() as nursery:
        reader = setup.reader("k", nursery, page_cache=pages)
        for offset in random_offsets(len(data), RANDOM_FILL_AFTER * 4):
            assert await reader.read(offset, 4 * KiB) == data[offset : offset + 4 * KiB]
        await trio.sleep(0.1)
        await reader.close()  # cancels a hanging fill
        await trio.sleep(0.01)
    assert pages.pushed == {}
    assert setup.budget.in_use == 0


async def filled_random_reader(
    setup: Setup, nursery: trio.Nursery, size: int, **kwargs: Any
) -> ObjectReader:
    """A reader of object ``k`` whose random reads started the whole-object fill, once the
    fill has pushed every byte."""
    reader = setup.reader("k", nursery, page_cache=KernelPages(), **kwargs)
    for offset in random_offsets(size, RANDOM_FILL_AFTER * 4):
        await reader.read(offset, 4 * KiB)
    while reader.statistics()["filled_bytes"] < size:  # noqa: ASYNC110
        await trio.sleep(0.01)
    return reader


async def test_after_a_fill_the_spill_serves_reads_without_gets(tmp_path: Path) -> None:
    """Pages the kernel drops after the fill come back from the spill file, not from S3."""
    setup = Setup(cache_bytes=2 * MiB)  # a small memory cache: hits there prove nothing
    data = payload(24 * MiB + 321)
    setup.put("k", data)
    area = SpillArea(tmp_path / "spill", 64 * MiB)

    async with trio.open_nursery() as nursery:
        reader = await filled_random_reader(setup, nursery, len(data), spill=area)
        while area.statistics()["bytes_written"] < len(data):  # noqa: ASYNC110
            await trio.sleep(0.01)  # the last part's spill write
        fetched = setup.fetched()
        # The reads that started the fill may already have hit the spill, depending on how far
        # its writes had got: count only the reads made from here on.
        spilled = reader.statistics()["spill_reads"]
        for offset in [*random_offsets(len(data), 200, seed=9), len(data) - 100]:
            assert await reader.read(offset, 600 * KiB) == data[offset : offset + 600 * KiB]
        assert setup.fetched() == fetched  # not one GET after the fill
        assert reader.statistics()["spill_reads"] - spilled == 201
        assert area.statistics()["bytes"] == len(data)
        await reader.close()
        assert area.statistics()["bytes"] == 0  # closing the reader frees the spill file
    assert area.statistics()["bytes_written"] == len(data)
    assert list((tmp_path / "spill").iterdir()) == []  # spill files never have a name


async def test_no_spill_when_the_area_is_full(tmp_path: Path) -> None:
    setup = Setup()
    data = payload(8 * MiB)
    setup.put("k", data)
    area = SpillArea(tmp_path / "spill", len(data) - 1)

    async with trio.open_nursery() as nursery:
        reader = await filled_random_reader(setup, nursery, len(data), spill=area)
        offset = random_offsets(len(data), 1, seed=5)[0]
        assert await reader.read(offset, 4 * KiB) == data[offset : offset + 4 * KiB]
        assert reader.statistics()["spill_reads"] == 0
        await reader.close()
    assert area.statistics()["refused"] == 1
