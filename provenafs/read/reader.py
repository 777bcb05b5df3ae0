"""``ObjectReader``: the bytes of one open file, from the block cache, S3 and a prefetcher.

One reader per open file handle of a published object (its ETag is fixed at open; every GET sends it
as If-Match, so a changed object fails with ``StaleObjectError`` instead of mixing versions).

How reads are served:

- The first read of a fresh reader fetches exactly the bytes asked for, not a whole block, and
  reads that continue it fetch doubling amounts until one block has been read: a program that
  reads the first 64 KiB of many files fetches about what it reads, even with the kernel's
  readahead (whole blocks covered on the way, such as all of a small file, go to the cache).
  These held bytes are reserved against the budget too.
- Later reads go block by block through ``BlockCache`` (single-flight across readers).
- A reader that reads sequentially gets a prefetch window of parallel ranged GETs ahead of it,
  starting at ``initial_window`` and doubling each time it enters a new block, up to
  ``max_window``. GETs are multi-block parts (up to ``max_part``) split into blocks, so one thread
  hop moves megabytes. Random readers get no prefetch.
- Prefetched blocks not yet read are held against ``PrefetchBudget``, one byte counter shared by
  every open reader: prefetch only starts a part when the budget can hold it, so memory stays
  within the block cache's size plus the budget whatever the number of open files.

Cancellation: the prefetch tasks of a reader run in a nursery inside a per-reader cancel scope,
started in the mount's top-level nursery (``nursery``); ``close()`` and a seek far from the window
cancel it and hand back the budget. Without ``nursery`` the reader never prefetches.

A reader given ``heads`` (the mount's ``SiblingPrefetcher``) first asks it for the object's
prefetched first bytes, and starts its ramp from them.

Random access (``RANDOM_FILL_AFTER`` reads that jump backwards) on an object of at most
``fill_max_bytes``, with a ``page_cache`` callback (the mount pushes bytes into the kernel's page
cache with FUSE_NOTIFY_STORE), starts one background fill: the whole object in parallel ranged
GETs of ``FILL_PART`` bytes, each handed to ``page_cache`` and then dropped. Once the kernel
holds the pages, the program's reads never reach the mount; meanwhile they are served as usual.
Each part in flight is reserved against the budget (the fill waits for room), the fill never
goes through the block cache, and ``close()`` cancels it. Given a ``spill`` area, the fill also
writes each part to a local spill file: a page the kernel drops later is read from there, not
fetched from S3 again.

Credentials come from ``CredentialBroker.read``; after
``ExpiredCredentialsError``/``AccessDeniedError`` the reader invalidates them and retries once.
Everything runs on the trio thread; the reader must not import boto3 and never does blocking I/O
itself.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Protocol

import trio

from provenafs.cache.block_cache import BlockCache, BlockKey
from provenafs.cache.spill import SpillArea, SpillFile
from provenafs.storage.blobstore import (
    AccessDeniedError,
    BlobStore,
    ExpiredCredentialsError,
    StaleObjectError,
)
from provenafs.storage.credentials import CredentialBroker

__all__ = ["HeadSource", "ObjectReader", "PageCachePush", "PrefetchBudget"]

log = logging.getLogger(__name__)

MiB = 1 << 20
# How far a read may start from where the previous one ended and still count as sequential:
# the kernel's concurrent readahead requests arrive slightly out of order.
SEQUENTIAL_SLACK = 256 << 10
# Backward jumps before a whole-object page-cache fill starts. Forward gaps do not count: they are
# what a sequential re-read looks like when the kernel dropped some of the file's pages.
RANDOM_FILL_AFTER = 16
FILL_PART = 4 * MiB
FILL_PARALLEL = 4


class PageCachePush(Protocol):
    """Hands bytes of the open file at an offset to the kernel's page cache."""

    async def __call__(self, offset: int, data: bytes) -> None: ...


class HeadSource(Protocol):
    """Where prefetched first bytes of objects wait for their readers (``SiblingPrefetcher``)."""

    async def take_head(self, handle: str, key: str, etag: str) -> bytes | None: ...


class PrefetchBudget:
    """A byte counter shared by all open readers: how much prefetched data may be held at once.

    Non-blocking on purpose: a reader that cannot reserve simply prefetches less (its reads fall
    back to on-demand fetches), so no reader ever waits on another one's budget. Readers name
    themselves as ``holder``: while several hold reservations, each may grow only to its fair
    share (the budget divided among them), so one streaming reader cannot starve the others.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._in_use = 0
        self._peak = 0
        self._refused = 0
        self._held: dict[int, int] = {}  # id(holder) -> bytes reserved

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_acquire(self, nbytes: int, *, holder: object = None) -> bool:
        """Reserve ``nbytes`` if they fit under the budget (and the holder's fair share)."""
        held = self._held.get(id(holder), 0) if holder is not None else 0
        holders = len(self._held) + (holder is not None and held == 0)
        fair_share = self.max_bytes // max(1, holders)
        over_share = holder is not None and held > 0 and held + nbytes > fair_share
        if self._in_use + nbytes > self.max_bytes or over_share:
            self._refused += 1
            return False
        self._in_use += nbytes
        self._peak = max(self._peak, self._in_use)
        if holder is not None and nbytes:
            self._held[id(holder)] = held + nbytes
        return True

    def release(self, nbytes: int, *, holder: object = None) -> None:
        """Hand back bytes reserved with ``try_acquire`` (by the same holder)."""
        if nbytes > self._in_use:
            raise RuntimeError("PrefetchBudget released more than was reserved")
        self._in_use -= nbytes
        if holder is not None:
            left = self._held.get(id(holder), 0) - nbytes
            if left > 0:
                self._held[id(holder)] = left
            else:
                self._held.pop(id(holder), None)

    def statistics(self) -> Mapping[str, int]:
        return {
            "max_bytes": self.max_bytes,
            "in_use": self._in_use,
            "peak": self._peak,
            "refused": self._refused,
            "holders": len(self._held),
        }


class _Slot:
    """One prefetched block: filled when its part's GET completes, read at most once."""

    def __init__(self, reserved: int) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: Exception | None = None
        self.reserved = reserved


class _Background:
    """One generation of a reader's prefetch tasks: a nursery inside a cancel scope."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self.ready = trio.Event()


class ObjectReader:
    """Random-access reads of one object version, with sequential prefetch."""

    def __init__(
        self,
        store: BlobStore,
        broker: CredentialBroker,
        cache: BlockCache,
        *,
        handle: str,
        bucket: str,
        key: str,
        size: int,
        etag: str,
        budget: PrefetchBudget,
        nursery: trio.Nursery | None = None,
        heads: HeadSource | None = None,
        page_cache: PageCachePush | None = None,
        spill: SpillArea | None = None,
        fill_max_bytes: int = 1 << 30,
        initial_window: int = MiB,
        max_window: int = 64 * MiB,
        max_part: int = 8 * MiB,
    ) -> None:
        self._store = store
        self._broker = broker
        self._cache = cache
        self._handle = handle
        self._bucket = bucket
        self._key = key
        self._size = max(0, size)
        self._etag = etag
        self._budget = budget
        self._outer = nursery
        self._heads = heads
        self._page_cache = page_cache
        self._spill_area = spill
        self._spill: SpillFile | None = None  # what the page-cache fill wrote, while open
        self._fill_max_bytes = fill_max_bytes
        self._random_reads = 0
        self._fill_scope: trio.CancelScope | None = None
        self._block_size = cache.block_size
        self._block_count = -(-self._size // self._block_size)
        self._initial_window = max(initial_window, self._block_size)
        self._max_window = max(max_window, self._initial_window)
        self._max_part = max(max_part, self._block_size)
        self._window = self._initial_window
        self._head: tuple[int, bytes] | None = None  # bytes the ramp fetched: (offset, data)
        self._head_reserved = 0
        self._reads = 0
        self._last_end: int | None = None
        self._last_block = -1
        self._prefetched_to = 0  # blocks below this were considered for prefetch
        self._slots: dict[int, _Slot] = {}
        self._background: _Background | None = None
        self._closed = False
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(
                (
                    "gets",
                    "bytes_fetched",
                    "prefetch_parts",
                    "prefetch_bytes",
                    "slot_hits",
                    "head_hits",
                    "prefetched_heads",
                    "filled_bytes",
                    "fill_failures",
                    "spill_reads",
                    "credential_retries",
                ),
                0,
            )
        )

    def __repr__(self) -> str:
        return f"ObjectReader({self._handle!r}, {self._key!r}, size={self._size})"

    # -- public ---------------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer at the end of the object, none past it)."""
        if self._closed:
            raise RuntimeError("read from a closed ObjectReader")
        end = min(self._size, offset + max(0, size))
        if offset < 0 or offset >= end:
            return b""
        first = self._reads == 0
        sequential = self._last_end is not None and abs(offset - self._last_end) <= SEQUENTIAL_SLACK
        backward = self._last_end is not None and offset < self._last_end - SEQUENTIAL_SLACK
        self._reads += 1
        self._last_end = end
        if self._spill is not None and self._spill.holds(offset, end):
            self._stats["spill_reads"] += 1  # a page the kernel dropped after the fill
            return await self._spill.read(offset, end)
        first_block, last_block = offset // self._block_size, (end - 1) // self._block_size

        if first and self._heads is not None:
            await self._take_prefetched_head()
        head = self._head
        if head is not None and head[0] <= offset and end <= head[0] + len(head[1]):
            self._stats["head_hits"] += 1
            return head[1][offset - head[0] : end - head[0]]
        ramping = (
            sequential
            and head is not None
            and len(head[1]) < self._block_size
            and head[0] <= offset <= head[0] + len(head[1])
        )
        if (first or ramping) and not self._all_cached(first_block, last_block):
            return await self._read_ramp(offset, end)

        if sequential:
            if first_block > self._last_block:
                self._window = min(self._max_window, self._window * 2)
            await self._schedule_prefetch(last_block + 1, end)
        elif not self._near_window(first_block):
            self._drop_prefetch()
            self._window = self._initial_window
            self._random_reads += backward  # forward gaps do not count (see RANDOM_FILL_AFTER)
            if self._random_reads == RANDOM_FILL_AFTER:
                self._start_page_cache_fill()
        self._last_block = max(self._last_block, first_block) if sequential else first_block
        self._drop_slots_before(first_block - 2)

        blocks = [await self._block(index) for index in range(first_block, last_block + 1)]
        start = offset - first_block * self._block_size
        if len(blocks) == 1:
            return blocks[0][start : start + end - offset]
        return b"".join(blocks)[start : start + end - offset]

    async def close(self) -> None:
        """Cancel this reader's prefetch and hand back its budget; reads are refused after."""
        self._closed = True
        self._drop_prefetch()
        self._drop_head()
        if self._fill_scope is not None:
            self._fill_scope.cancel()
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def statistics(self) -> Mapping[str, int]:
        """Counts: ``gets`` and ``bytes_fetched`` (S3), ``prefetch_parts``, ``prefetch_bytes``,
        ``slot_hits``, ``head_hits``, ``credential_retries``; now: ``window``, ``slots``."""
        return {**self._stats, "window": self._window, "slots": len(self._slots)}

    # -- fetching -------------------------------------------------------------------------

    async def _get(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` from S3 with the dataset's read credentials and If-Match."""
        return b"".join(await self._get_blocks(start, end, None))

    async def _get_blocks(self, start: int, end: int, block_size: int | None) -> list[bytes]:
        """Bytes ``[start, end)`` as pieces of ``block_size`` (one piece if None).

        A store with ``get_blocks`` (``S3BlobStore``) cuts the response body into blocks as it
        reads it, so a multi-MiB part is never held twice; others are sliced here. Credentials
        that S3 refuses are renewed once.
        """
        get_blocks = getattr(self._store, "get_blocks", None) if block_size else None
        for attempt in range(2):
            creds = await self._broker.read(self._handle)
            try:
                if get_blocks is not None:
                    blocks: list[bytes] = await get_blocks(
                        creds,
                        self._bucket,
                        self._key,
                        start,
                        end,
                        block_size=block_size,
                        etag=self._etag,
                    )
                else:
                    data = await self._store.get_range(
                        creds, self._bucket, self._key, start, end, etag=self._etag
                    )
                    step = block_size or max(1, len(data))
                    blocks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
            except (ExpiredCredentialsError, AccessDeniedError):
                if attempt:
                    raise
                self._stats["credential_retries"] += 1
                self._broker.invalidate(self._handle)
                continue
            self._stats["gets"] += 1
            self._stats["bytes_fetched"] += sum(len(b) for b in blocks)
            return blocks
        raise AssertionError("unreachable")

    def _block_key(self, index: int) -> BlockKey:
        return BlockKey(self._handle, self._key, self._etag, index)

    def _block_range(self, index: int) -> tuple[int, int]:
        start = index * self._block_size
        return start, min(self._size, start + self._block_size)

    def _all_cached(self, first_block: int, last_block: int) -> bool:
        """Whether the cache holds (or is already fetching) every block in the range."""
        return all(self._in_cache(self._block_key(i)) for i in range(first_block, last_block + 1))

    def _in_cache(self, key: BlockKey) -> bool:
        return self._cache.has(key) or self._cache.fetching(key)

    async def _read_ramp(self, offset: int, end: int) -> bytes:
        """Reads before the reader has streamed one block: fetch just enough, doubling.

        The first read fetches exactly its bytes. A read that continues them fetches on from
        the end of what is held, at least as much again as is held (so 128 KiB, 128 KiB,
        256 KiB, 512 KiB...), until a whole block has been read and block mode takes over.
        Whole blocks covered on the way go to the block cache.
        """
        head = self._head
        if head is None or not head[0] <= offset <= head[0] + len(head[1]):
            # a rest of the object no larger than this read comes along in the same GET
            stop = self._size if self._size - end <= end - offset else end
            start, data = offset, await self._get(offset, stop)
        else:
            start, held = head
            held_end = start + len(held)
            wanted = min(self._size, max(end, start + 2 * len(held)))
            data = held + await self._get(held_end, wanted)
        self._keep_head(start, data)
        first_whole = -(-start // self._block_size)
        for index in range(first_whole, self._block_count):
            block_start, block_end = self._block_range(index)
            if block_end > start + len(data):
                break
            if not self._cache.has(self._block_key(index)):
                await self._cache.store(
                    self._block_key(index), data[block_start - start : block_end - start]
                )
        return data[offset - start : end - start]

    async def _take_prefetched_head(self) -> None:
        """Start from the first bytes a sibling prefetch fetched for this object, if any."""
        assert self._heads is not None
        data = await self._heads.take_head(self._handle, self._key, self._etag)
        if data:
            self._stats["prefetched_heads"] += 1
            self._keep_head(0, data)

    def _keep_head(self, start: int, data: bytes) -> None:
        """Hold the ramp's bytes for the next reads, if the budget has room for them."""
        self._drop_head()
        if self._budget.try_acquire(len(data), holder=self):
            self._head = (start, data)
            self._head_reserved = len(data)

    def _drop_head(self) -> None:
        if self._head_reserved:
            self._budget.release(self._head_reserved, holder=self)
        self._head = None
        self._head_reserved = 0

    async def _fetch_block(self, index: int) -> bytes:
        """One whole block from S3, reusing the ramp's bytes for its beginning, if held."""
        start, end = self._block_range(index)
        head = self._head
        if head is not None and head[0] <= start < head[0] + len(head[1]) < end:
            held = head[1][start - head[0] :]
            return held + await self._get(start + len(held), end)
        return await self._get(start, end)

    async def _block(self, index: int) -> bytes:
        slot = self._slots.get(index)
        if slot is not None:
            await slot.done.wait()
            if self._slots.get(index) is slot:
                self._release_slot(index)
            if slot.data is not None:
                self._stats["slot_hits"] += 1
                self._cache.put(self._block_key(index), slot.data)
                return slot.data
            if isinstance(slot.error, StaleObjectError):
                raise slot.error
            # prefetch failed or was cancelled: fetch on demand, which retries and reports
        return await self._cache.get_or_fetch(
            self._block_key(index), lambda: self._fetch_block(index)
        )

    # -- page-cache fill -------------------------------------------------------------------

    def _start_page_cache_fill(self) -> None:
        part = min(FILL_PART, self._budget.max_bytes // FILL_PARALLEL)
        if (
            self._page_cache is None
            or self._outer is None
            or self._fill_scope is not None
            or self._size > self._fill_max_bytes
            or part < self._block_size
        ):
            return
        self._fill_scope = trio.CancelScope()
        if self._spill_area is not None:
            self._spill = self._spill_area.open(self._size, part)
        self._outer.start_soon(self._fill_page_cache, self._fill_scope, self._page_cache, part)

    async def _fill_page_cache(
        self, scope: trio.CancelScope, push: PageCachePush, part: int
    ) -> None:
        """Push the whole object to the kernel, ``FILL_PARALLEL`` parts at a time; a failure
        ends the fill quietly (reads go on as before)."""
        starts = iter(range(0, self._size, part))

        async def worker() -> None:
            for start in starts:
                end = min(self._size, start + part)
                # the budget has no wake-up event: poll it (a fill is background work)
                while not self._budget.try_acquire(end - start, holder=self):  # noqa: ASYNC110
                    await trio.sleep(0.02)
                try:
                    data = await self._get(start, end)
                    await push(start, data)
                    self._stats["filled_bytes"] += len(data)
                    if self._spill is not None and not await self._spill.write(start, data):
                        self._spill = None  # the disk failed it: reads go on as before
                finally:
                    self._budget.release(end - start, holder=self)

        with scope:
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(FILL_PARALLEL):
                        nursery.start_soon(worker)
            except* Exception as group:  # noqa: BLE001 -- an optimisation: never into the mount
                self._stats["fill_failures"] += 1
                log.debug("%r: page-cache fill stopped: %r", self, group.exceptions[0])

    # -- prefetch -------------------------------------------------------------------------

    def _near_window(self, block: int) -> bool:
        """Whether a non-sequential read still falls inside the blocks being prefetched."""
        return bool(self._slots) and min(self._slots) <= block < self._prefetched_to

    async def _schedule_prefetch(self, from_block: int, end: int) -> None:
        """Start GETs for the missing blocks between ``from_block`` and ``end + window``."""
        if self._outer is None or self._closed:
            return
        until = min(self._block_count, -(-(end + self._window) // self._block_size))
        index = max(from_block, self._prefetched_to)
        ahead = self._prefetched_to * self._block_size - end
        if index >= until or ahead > self._window // 2:
            return  # refill in large steps, so that GETs are whole parts, not single blocks
        nursery = await self._background_nursery()
        if nursery is None:
            return
        index = max(from_block, self._prefetched_to)  # the await may have let others move on
        part_blocks = max(1, min(self._max_part, self._window // 4) // self._block_size)
        while index < until:
            if not self._needs_fetch(index):
                index += 1  # held in memory or on disk: read on demand, no GET
                continue
            first = index
            index += 1
            while index < until and index - first < part_blocks and self._needs_fetch(index):
                index += 1
            if not self._start_part(nursery, first, index):
                self._prefetched_to = first
                return
        self._prefetched_to = max(self._prefetched_to, until)

    def _needs_fetch(self, index: int) -> bool:
        """Whether block ``index`` is neither being prefetched nor held in memory or on disk."""
        return index not in self._slots and not self._in_cache(self._block_key(index))

    def _start_part(self, nursery: trio.Nursery, first: int, stop: int) -> bool:
        """Reserve budget for blocks ``[first, stop)`` and start their GET; False if no room."""
        nbytes = self._block_range(stop - 1)[1] - first * self._block_size
        if not self._budget.try_acquire(nbytes, holder=self):
            return False
        slots = []
        for index in range(first, stop):
            start, end = self._block_range(index)
            slot = _Slot(end - start)
            self._slots[index] = slot
            slots.append(slot)
        self._stats["prefetch_parts"] += 1
        nursery.start_soon(self._fetch_part, first, slots)
        return True

    async def _background_nursery(self) -> trio.Nursery | None:
        """The nursery of the current prefetch generation, started in the mount's nursery.

        Only one generation starts at a time: concurrent reads wait for the one being started.
        """
        background = self._background
        if background is None:
            if self._outer is None or self._closed:
                return None
            background = _Background()
            self._background = background
            try:
                await self._outer.start(self._run_background, background)
            except RuntimeError:  # the mount's nursery is closing
                if self._background is background:
                    self._background = None
            finally:
                background.ready.set()
        elif background.nursery is None:
            await background.ready.wait()
        if self._background is not background:  # dropped (closed, far seek) meanwhile
            return None
        return background.nursery

    async def _run_background(
        self, background: _Background, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with background.scope:
            async with trio.open_nursery() as nursery:
                background.nursery = nursery
                task_status.started()
                await trio.sleep_forever()

    async def _fetch_part(self, first: int, slots: list[_Slot]) -> None:
        """One ranged GET for consecutive blocks; never raises into the mount's nursery."""
        start = first * self._block_size
        end = self._block_range(first + len(slots) - 1)[1]
        try:
            blocks = await self._get_blocks(start, end, self._block_size)
        except Exception as exc:  # noqa: BLE001 -- the read that needs the block reports it
            for slot in slots:
                if not slot.done.is_set():
                    slot.error = exc
                    slot.done.set()
            return
        self._stats["prefetch_bytes"] += sum(len(b) for b in blocks)
        for n, slot in enumerate(slots):
            block = blocks[n] if n < len(blocks) else b""
            if not slot.done.is_set():
                slot.data = block
                slot.done.set()
            with trio.CancelScope(shield=True):  # a block fetched is kept, even on close
                await self._cache.store(self._block_key(first + n), block)

    def _release_slot(self, index: int) -> None:
        slot = self._slots.pop(index)
        if slot.reserved:
            self._budget.release(slot.reserved, holder=self)
            slot.reserved = 0

    def _drop_slots_before(self, block: int) -> None:
        for index in [i for i in self._slots if i < block]:
            slot = self._slots[index]
            self._release_slot(index)
            if not slot.done.is_set():
                slot.done.set()

    def _drop_prefetch(self) -> None:
        """Cancel every prefetch task of this reader and release its budget."""
        if self._background is not None:
            self._background.scope.cancel()
            self._background = None
        for index in list(self._slots):
            slot = self._slots[index]
            self._release_slot(index)
            if not slot.done.is_set():
                slot.done.set()  # waiters find no data and fetch on demand
        self._prefetched_to = 0
