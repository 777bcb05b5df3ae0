"""SiblingPrefetcher with ObjectReader over MemoryBlobStore: what walking a folder fetches.

Files are opened as the filesystem opens them: an ``ObjectReader`` with ``heads=prefetcher``,
then ``after_open`` with the folder's listing. The prefetcher runs its GETs in a nursery of its
own, so the store can tell its GETs from the readers' (and fail only those).
"""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Awaitable, Callable, Iterable

import pytest
import trio
import trio.lowlevel
import trio.testing

from provenafs.api.models import Credentials
from provenafs.read.reader import ObjectReader
from provenafs.read.sibling_prefetch import SiblingPrefetcher
from provenafs.storage.blobstore import ObjectInfo, StaleObjectError
from tests.unit.reader_support import BUCKET, HANDLE, KiB, MiB, RecordingStore, Setup, payload

DIRECTORY = "data"


class PrefetchAwareStore(RecordingStore):
    """Records which GETs the prefetcher made; with ``fail_prefetch``, those GETs fail."""

    def __init__(self) -> None:
        super().__init__()
        self.prefetch_nursery: trio.Nursery | None = None
        self.prefetch_ranges: list[tuple[str, int, int]] = []
        self.fail_prefetch = False

    async def get_range(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        start: int,
        end: int,
        *,
        etag: str | None = None,
    ) -> bytes:
        task = trio.lowlevel.current_task()
        if self.prefetch_nursery is not None and task.parent_nursery is self.prefetch_nursery:
            if self.fail_prefetch:
                await trio.lowlevel.checkpoint()
                raise ConnectionResetError("the prefetch GET failed")
            self.prefetch_ranges.append((key, start, end))
        return await super().get_range(creds, bucket, key, start, end, etag=etag)


class Folder(Setup):
    """One dataset folder in a store, its listing, and readers opened the filesystem's way."""

    def __init__(self, *, budget: int = 64 * MiB, latency: float = 0.0) -> None:
        super().__init__(budget=budget)
        self.aware = PrefetchAwareStore()
        self.aware.latency = latency
        self.store = self.aware
        self.contents: dict[str, bytes] = {}
        self.files: dict[str, ObjectInfo] = {}

    def add(self, sizes: Iterable[int]) -> list[str]:
        """Put one file per size (named in order); answers their names."""
        names = []
        for size in sizes:
            name = f"f{len(self.files):04d}"
            data = payload(size, seed=len(self.files))
            self.files[name] = self.store.put_blocking(BUCKET, f"{DIRECTORY}/{name}", data)
            self.contents[name] = data
            names.append(name)
        return names

    def replace(self, name: str, data: bytes) -> None:
        """A new version of a file, and a new listing (as the catalog hands out after a change)."""
        info = self.store.put_blocking(BUCKET, f"{DIRECTORY}/{name}", data)
        self.files = {**self.files, name: info}
        self.contents[name] = data

    async def open(
        self, prefetcher: SiblingPrefetcher, name: str, nursery: trio.Nursery
    ) -> ObjectReader:
        """Open as the filesystem does; the reply goes to the kernel before the first read."""
        info = self.files[name]
        reader = ObjectReader(
            self.store,
            self.broker,
            self.cache,
            handle=HANDLE,
            bucket=BUCKET,
            key=info.key,
            size=info.size,
            etag=info.etag,
            budget=self.budget,
            nursery=nursery,
            heads=prefetcher,
        )
        prefetcher.after_open(HANDLE, BUCKET, DIRECTORY, self.files, name)
        await trio.lowlevel.checkpoint()
        return reader

    def gets_of(self, name: str) -> int:
        return sum(key == f"{DIRECTORY}/{name}" for key, _, _ in self.store.ranges)

    def prefetched(self) -> int:
        """How many files the prefetcher fetched something of."""
        return len({key for key, _, _ in self.aware.prefetch_ranges})

    async def run(
        self,
        body: Callable[[SiblingPrefetcher, trio.Nursery], Awaitable[None]],
        **options: int,
    ) -> SiblingPrefetcher:
        """Run ``body`` with a prefetcher; returns once every prefetch and reader task ended.

        The tests run on virtual time (``autojump_clock``): latencies cost no real time."""
        async with trio.open_nursery() as nursery, trio.open_nursery() as prefetch_nursery:
            self.aware.prefetch_nursery = prefetch_nursery
            prefetcher = SiblingPrefetcher(
                self.store,
                self.broker,
                self.cache,
                self.budget,
                nursery=prefetch_nursery,
                **options,
            )
            await body(prefetcher, nursery)
        return prefetcher

    async def read_each_whole(self, names: Iterable[str]) -> SiblingPrefetcher:
        """Open each of ``names`` in turn, read it whole as ``cat`` does, check it, close it."""

        async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
            for name in names:
                reader = await self.open(prefetcher, name, nursery)
                assert await read_whole(reader) == self.contents[name]
                await reader.close()

        return await self.run(body)


async def read_whole(reader: ObjectReader, chunk: int = 128 * KiB) -> bytes:
    """Read as ``cat`` does: chunk after chunk until a read answers nothing."""
    out = bytearray()
    while True:
        data = await reader.read(len(out), chunk)
        await trio.lowlevel.checkpoint()  # each FUSE read is its own request
        if not data:
            return bytes(out)
        out += data


async def test_cat_of_a_folder_finds_the_files_prefetched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(latency=0.02)
    rng = random.Random(1)
    names = folder.add(rng.randrange(1, 20 * KiB) for _ in range(200))
    reader_gets: list[int] = []

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for name in names:
            reader = await folder.open(prefetcher, name, nursery)
            assert await read_whole(reader) == folder.contents[name]
            reader_gets.append(reader.statistics()["gets"])
            await reader.close()

    prefetcher = await folder.run(body)
    assert sum(reader_gets[:4]) <= 1  # the first file: the prefetch starts at its open
    assert sum(reader_gets[4:]) == 0  # every later file was already cached (or on its way)
    assert prefetcher.statistics()["whole_files"] == 199
    assert prefetcher.statistics()["failures"] == 0
    assert all(folder.gets_of(name) == 1 for name in names)  # nothing fetched twice
    assert folder.budget.in_use == 0


@pytest.mark.parametrize(
    "reads",
    [[(0, 64 * KiB)], [(0, 128 * KiB), (128 * KiB, 128 * KiB)]],
    ids=["64KiB", "kernel-128KiB"],
)
async def test_heads_of_large_files_are_taken_by_their_readers(
    autojump_clock: trio.testing.MockClock, reads: list[tuple[int, int]]
) -> None:
    folder = Folder(latency=0.02)
    names = folder.add([4 * MiB] * 100)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for name in names:
            reader = await folder.open(prefetcher, name, nursery)
            for offset, size in reads:
                data = await reader.read(offset, size)
                assert data == folder.contents[name][offset : offset + size]
            await reader.close()

    prefetcher = await folder.run(body)
    stats = prefetcher.statistics()
    asked = 100 * 64 * KiB  # what the program reads; the kernel asks 128 KiB at least
    assert folder.fetched() <= 4 * asked
    assert stats["heads"] == 99
    assert stats["heads_taken"] >= 95
    assert stats["held_bytes"] == 0
    assert folder.budget.in_use == 0


async def test_one_open_among_thousands_fetches_min_lookahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder()
    names = folder.add([KiB] * 1000)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        reader = await folder.open(prefetcher, names[500], nursery)
        assert await read_whole(reader) == folder.contents[names[500]]
        await reader.close()

    prefetcher = await folder.run(body, min_lookahead=4, max_lookahead=64)
    assert folder.prefetched() == 4
    assert prefetcher.statistics()["whole_files"] == 4
    assert len(folder.store.ranges) == 5


async def test_opens_in_random_order_do_not_grow_the_lookahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder()
    names = folder.add([KiB] * 1000)
    order = random.Random(5).sample(names, 60)
    fetched_after_each: list[int] = []

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for name in order:
            reader = await folder.open(prefetcher, name, nursery)
            assert await read_whole(reader) == folder.contents[name]
            await reader.close()
            await trio.testing.wait_all_tasks_blocked()
            fetched_after_each.append(folder.prefetched())

    await folder.run(body, min_lookahead=4, max_lookahead=64)
    new_per_open = [b - a for a, b in itertools.pairwise([0, *fetched_after_each])]
    assert max(new_per_open) <= 4, new_per_open
    assert folder.prefetched() <= 4 * len(order)


async def test_opens_in_order_grow_the_lookahead_to_its_maximum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder()
    names = folder.add([KiB] * 1000)
    fetched_after: dict[int, int] = {}

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for index, name in enumerate(names[:200]):
            reader = await folder.open(prefetcher, name, nursery)
            assert await read_whole(reader) == folder.contents[name]
            await reader.close()
            await trio.testing.wait_all_tasks_blocked()
            fetched_after[index] = folder.prefetched()

    await folder.run(body, min_lookahead=4, max_lookahead=64)
    # files 1..4, then 8, 16, 32 and 64 ahead; never further than 64 ahead
    assert [fetched_after[i] for i in range(5)] == [4, 9, 18, 35, 68]
    assert all(fetched_after[i] == i + 64 for i in range(5, 200))


async def test_a_second_pass_over_a_folder_is_prefetched_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(latency=0.01)
    names = folder.add([MiB] * 30)
    taken_per_pass: list[int] = []

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for _ in range(2):  # e.g. two epochs of a loader over one listing
            before = prefetcher.statistics()["heads_taken"]
            for name in names:
                reader = await folder.open(prefetcher, name, nursery)
                assert await reader.read(0, 4 * KiB) == folder.contents[name][: 4 * KiB]
                await reader.close()
            taken_per_pass.append(prefetcher.statistics()["heads_taken"] - before)

    await folder.run(body)
    assert taken_per_pass[0] == 29
    assert taken_per_pass[1] >= 25, taken_per_pass


async def test_a_tiny_budget_prefetches_nothing_and_reads_stay_right(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(budget=4 * KiB)
    names = folder.add([10 * KiB] * 20 + [2 * MiB] * 10)

    prefetcher = await folder.read_each_whole(names)
    stats = prefetcher.statistics()
    assert stats["whole_files"] == stats["heads"] == 0
    assert stats["no_budget"] > 0
    assert folder.aware.prefetch_ranges == []
    assert folder.budget.in_use == 0


async def test_budget_is_returned_when_every_file_was_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(budget=8 * MiB, latency=0.01)
    rng = random.Random(2)
    names = folder.add(rng.choice([3 * KiB, 200 * KiB, 3 * MiB]) for _ in range(60))

    prefetcher = await folder.read_each_whole(names)
    stats = prefetcher.statistics()
    assert stats["whole_files"] > 0 and stats["heads_taken"] > 0
    assert stats["held_bytes"] == stats["in_flight"] == 0
    assert folder.budget.in_use == 0


async def test_held_heads_never_exceed_max_held_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(latency=0.01)
    names = folder.add([MiB] * 200)
    held: list[int] = []

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for index, name in enumerate(names):
            reader = await folder.open(prefetcher, name, nursery)
            held.append(prefetcher.statistics()["held_bytes"])
            if index % 3 == 0:  # the others are opened and closed unread: their heads stay
                assert await reader.read(0, 4 * KiB) == folder.contents[name][: 4 * KiB]
            await reader.close()
            held.append(prefetcher.statistics()["held_bytes"])

    prefetcher = await folder.run(body, head_bytes=64 * KiB, max_held_bytes=512 * KiB)
    assert max(held) <= 512 * KiB
    assert prefetcher.statistics()["heads"] > 0
    assert folder.budget.in_use == prefetcher.statistics()["held_bytes"] <= 512 * KiB


async def test_failed_prefetches_leave_reads_right_and_nothing_reserved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(latency=0.01)
    rng = random.Random(3)
    names = folder.add(rng.choice([5 * KiB, 2 * MiB]) for _ in range(40))
    folder.aware.fail_prefetch = True

    prefetcher = await folder.read_each_whole(names)
    stats = prefetcher.statistics()
    assert stats["failures"] == 39
    assert stats["whole_files"] == stats["heads"] == stats["heads_taken"] == 0
    assert stats["held_bytes"] == stats["in_flight"] == 0
    assert folder.budget.in_use == 0
    assert folder.budget.statistics()["holders"] == 0


@pytest.mark.parametrize("size", [4 * MiB, 8 * KiB], ids=["head", "whole"])
async def test_a_reader_waits_for_a_head_in_flight_instead_of_fetching_it(
    autojump_clock: trio.testing.MockClock, size: int
) -> None:
    folder = Folder(latency=1.0)
    names = folder.add([size] * 5)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        first = await folder.open(prefetcher, names[0], nursery)  # prefetches 1..4
        await trio.sleep(0.5)  # their GETs are on their way, none has answered
        assert prefetcher.statistics()["in_flight"] == 4
        second = await folder.open(prefetcher, names[1], nursery)
        assert await second.read(0, 64 * KiB) == folder.contents[names[1]][: 64 * KiB]
        assert second.statistics()["gets"] == 0
        await first.close()
        await second.close()

    prefetcher = await folder.run(body)
    assert folder.gets_of(names[1]) == 1, size
    assert folder.budget.in_use == prefetcher.statistics()["held_bytes"]  # heads of 2..4


@pytest.mark.parametrize("size", [4 * MiB, 8 * KiB], ids=["head", "whole"])
async def test_a_changed_object_never_gets_another_versions_head(
    autojump_clock: trio.testing.MockClock, size: int
) -> None:
    folder = Folder(latency=0.01)
    names = folder.add([size] * 3)
    old_etag = folder.files[names[1]].etag

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        first = await folder.open(prefetcher, names[0], nursery)
        await trio.sleep(1)  # the prefetch of the old version of names[1] is done
        folder.replace(names[1], payload(size, seed=99))
        reader = await folder.open(prefetcher, names[1], nursery)
        assert await reader.read(0, 64 * KiB) == folder.contents[names[1]][: 64 * KiB]
        assert reader.statistics()["prefetched_heads"] == 0
        await reader.close()
        await first.close()

    await folder.run(body)
    assert folder.files[names[1]].etag != old_etag


async def test_a_head_fetched_while_its_object_changes_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(latency=1.0)
    names = folder.add([4 * MiB] * 3)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        first = await folder.open(prefetcher, names[0], nursery)  # head of names[1] under way
        old_listing = folder.files
        folder.replace(names[1], payload(4 * MiB, seed=98))  # before the GET reaches S3
        folder.files, new_listing = old_listing, folder.files
        stale = await folder.open(prefetcher, names[1], nursery)  # from the old listing
        with pytest.raises(StaleObjectError):
            await stale.read(0, 64 * KiB)
        folder.files = new_listing
        fresh = await folder.open(prefetcher, names[1], nursery)
        assert await fresh.read(0, 64 * KiB) == folder.contents[names[1]][: 64 * KiB]
        for reader in (first, stale, fresh):
            await reader.close()

    prefetcher = await folder.run(body)
    assert prefetcher.statistics()["failures"] >= 1
    assert prefetcher.statistics()["heads_taken"] == 0
    assert folder.budget.in_use == prefetcher.statistics()["held_bytes"]


async def test_statistics_count_every_head_once(autojump_clock: trio.testing.MockClock) -> None:
    folder = Folder()
    names = folder.add([MiB] * 10)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for name in names:
            reader = await folder.open(prefetcher, name, nursery)
            assert await reader.read(0, KiB) == folder.contents[name][:KiB]
            await reader.close()

    prefetcher = await folder.run(body)
    per_key = collections.Counter(key for key, _, _ in folder.aware.prefetch_ranges)
    assert all(count == 1 for count in per_key.values())
    assert prefetcher.statistics()["heads"] == len(per_key) == 9
    assert prefetcher.statistics()["bytes_fetched"] == sum(
        end - start for _, start, end in folder.aware.prefetch_ranges
    )


async def test_prefetches_start_nearest_file_first(autojump_clock: trio.testing.MockClock) -> None:
    folder = Folder(latency=0.01)
    names = folder.add([MiB] * 100)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for name in names:
            reader = await folder.open(prefetcher, name, nursery)
            assert await reader.read(0, 4 * KiB) == folder.contents[name][: 4 * KiB]
            await reader.close()

    await folder.run(body, max_parallel=8)
    started = [key for key, _, _ in folder.aware.prefetch_ranges]
    assert started == [f"{DIRECTORY}/{name}" for name in names[1:]]


@pytest.mark.parametrize("size", [4 * MiB, 8 * KiB], ids=["head", "whole"])
async def test_a_reader_ahead_of_a_queued_prefetch_fetches_once(
    autojump_clock: trio.testing.MockClock, size: int
) -> None:
    folder = Folder(latency=1.0)
    names = folder.add([size] * 20)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        readers = [await folder.open(prefetcher, name, nursery) for name in names[:5]]
        await trio.sleep(0.5)  # lookahead 64: 5..19 queued behind one GET at a time
        late = await folder.open(prefetcher, names[15], nursery)
        assert await late.read(0, 4 * KiB) == folder.contents[names[15]][: 4 * KiB]
        assert late.statistics()["gets"] == 1
        for reader in [*readers, late]:
            await reader.close()

    prefetcher = await folder.run(body, max_parallel=1)
    assert folder.gets_of(names[15]) == 1, size
    assert prefetcher.statistics()["in_flight"] == 0
    assert folder.budget.in_use == prefetcher.statistics()["held_bytes"]


async def test_unread_heads_do_not_take_a_streaming_readers_fair_share(
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = Folder(budget=8 * MiB)
    names = folder.add([4 * MiB] * 40)

    async def body(prefetcher: SiblingPrefetcher, nursery: trio.Nursery) -> None:
        for name in names[:6]:  # a walk that stops, leaving prefetched heads unread
            reader = await folder.open(prefetcher, name, nursery)
            await reader.read(0, 64 * KiB)
            await reader.close()
        await trio.testing.wait_all_tasks_blocked()
        assert prefetcher.statistics()["held_bytes"] > 0
        assert folder.budget.statistics()["holders"] == 0
        # a streaming reader alone may grow to the whole budget less what the heads hold
        held = folder.budget.in_use
        assert folder.budget.try_acquire(folder.budget.max_bytes - held, holder=object())

    await folder.run(body)
