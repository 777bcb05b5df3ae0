"""``SiblingPrefetcher``: after a file is opened and read, fetch ahead what the next files of
its folder need.

Programs that walk a folder (``cat dir/*``, ``head`` of every file, a loader reading a folder of
samples) open its files one after another in name order, and each open would otherwise wait one
S3 round trip for its first byte. After an open (the mount calls ``after_open`` once the file's
first read is answered), of the files listed after it (name order):

- a small file (at most ``max_file_size``, and one block) is fetched whole into the block cache;
- a larger file has its first ``head_bytes`` fetched and held here, until its reader takes them
  on its first read (``take_head``), so reading the start of many large files fetches about
  what is read.

How far ahead adapts: ``min_lookahead`` files at first, doubling up to ``max_lookahead`` while
the folder's files are opened in the order predicted, back to ``min_lookahead`` when an open
breaks the order. A program that opens one file among thousands costs a few small GETs.

Bounds: at most ``max_parallel`` GETs at a time, nearest file first (a queue served by at most
``max_parallel`` workers, not one task per file: trio starts a batch of tasks in either order);
every queued and held byte is reserved against the shared ``PrefetchBudget`` (what does not fit
is not prefetched: its read fetches on demand), and held heads never exceed ``max_held_bytes``
(the oldest finished ones are dropped; while heads on their way fill it, no more are queued).
The prefetcher reserves without naming itself a holder: heads left unread after a walk stops
take their bytes from the budget but do not halve a streaming reader's fair share.

A reader whose file's prefetch has started waits for it (``take_head``) instead of fetching the
same bytes again; one whose prefetch is still queued fetches itself, and the queued prefetch,
when its turn comes, finds the bytes taken or cached and does nothing.

It must not block the trio thread, import boto3, or raise into the mount's nursery: a failed
prefetch is dropped, and the read that needs those bytes fetches them itself and reports.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping

import trio

from provenafs.cache.block_cache import BlockCache, BlockKey
from provenafs.read.reader import ObjectReader, PrefetchBudget
from provenafs.storage.blobstore import BlobStore, ObjectInfo
from provenafs.storage.credentials import CredentialBroker

__all__ = ["SiblingPrefetcher"]

KiB = 1 << 10
MiB = 1 << 20


@dataclasses.dataclass
class _Folder:
    """One folder's files in name order, and where the last open and the prefetch stand."""

    files: Mapping[str, ObjectInfo]
    names: tuple[str, ...]
    position: Mapping[str, int]
    lookahead: int
    last_opened: int = -1
    scheduled_to: int = -1  # files up to this index were considered for prefetch


class _Head:
    """One prefetch: a small file fetched whole into the cache, or the first bytes of a large
    one held until its reader takes them. Queued, then ``started``, then ``done``."""

    def __init__(self, reserved: int) -> None:
        self.started = False
        self.done = trio.Event()
        self.data: bytes | None = None
        self.reserved = reserved


_ObjectId = tuple[str, str, str]  # (handle, key, etag)


class SiblingPrefetcher:
    """Prefetches small files whole and large files' heads after an open; see the module doc."""

    def __init__(
        self,
        store: BlobStore,
        broker: CredentialBroker,
        cache: BlockCache,
        budget: PrefetchBudget,
        *,
        nursery: trio.Nursery,
        max_file_size: int = 256 * KiB,
        head_bytes: int = 128 * KiB,
        min_lookahead: int = 4,
        max_lookahead: int = 64,
        max_parallel: int = 8,
        max_held_bytes: int = 16 * MiB,
    ) -> None:
        self._store = store
        self._broker = broker
        self._cache = cache
        self._budget = budget
        self._nursery = nursery
        # a file fetched whole must fit in one block and must not crowd the memory cache
        self._max_file_size = min(max_file_size, cache.block_size, cache.max_bytes // 8)
        self._head_bytes = head_bytes
        self._min_lookahead = max(0, min_lookahead)
        self._max_lookahead = max(self._min_lookahead, max_lookahead)
        self._max_parallel = max(1, max_parallel)
        self._queue: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self._workers = 0
        self._max_held_bytes = max_held_bytes
        self._held_bytes = 0
        self._wholes: dict[BlockKey, _Head] = {}  # small files queued or being fetched
        self._heads: collections.OrderedDict[_ObjectId, _Head] = collections.OrderedDict()
        self._folders: collections.OrderedDict[tuple[str, str], _Folder] = collections.OrderedDict()
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(
                (
                    "whole_files",
                    "heads",
                    "heads_taken",
                    "heads_dropped",
                    "bytes_fetched",
                    "no_budget",
                    "failures",
                ),
                0,
            )
        )

    def after_open(
        self,
        handle: str,
        bucket: str,
        directory: str,
        files: Mapping[str, ObjectInfo],
        name: str,
    ) -> None:
        """File ``name`` of ``files`` (folder ``directory`` of dataset ``handle``) was opened."""
        folder = self._folder(handle, directory, files)
        index = folder.position.get(name)
        if index is None or self._max_lookahead == 0:
            return
        if folder.last_opened < index <= folder.scheduled_to:
            folder.lookahead = min(self._max_lookahead, max(1, folder.lookahead) * 2)
        else:  # a new run: what an earlier run considered may have been taken or evicted
            folder.lookahead = self._min_lookahead
            folder.scheduled_to = index
        folder.last_opened = index
        start = max(index + 1, folder.scheduled_to + 1)
        stop = min(len(folder.names), index + 1 + folder.lookahead)
        for position in range(start, stop):
            info = folder.files[folder.names[position]]
            if not self._schedule(handle, bucket, info):
                stop = position  # out of budget: try again from here after the next open
                break
        folder.scheduled_to = max(folder.scheduled_to, stop - 1)

    async def take_head(self, handle: str, key: str, etag: str) -> bytes | None:
        """The held first bytes of this object version (waiting if they are on their way);
        None if none were prefetched or the prefetch failed. Each head is taken once.

        For a small file being fetched whole, waits until it is in the block cache (or its
        fetch failed) and answers None: the reader then finds it there instead of fetching it
        a second time."""
        whole = self._wholes.get(BlockKey(handle, key, etag, 0))
        if whole is not None:
            if whole.started:
                await whole.done.wait()
            return None
        head = self._heads.pop((handle, key, etag), None)
        if head is None:
            return None
        if not head.started:  # still queued: the reader fetches, and the queued fetch skips
            self._unreserve(head)
            return None
        try:
            await head.done.wait()
        finally:
            self._unreserve(head)
        if head.data is not None:
            self._stats["heads_taken"] += 1
        return head.data

    def statistics(self) -> Mapping[str, int]:
        """Counts: ``whole_files`` and ``heads`` fetched, ``heads_taken`` by readers,
        ``heads_dropped`` unread, ``bytes_fetched``, ``no_budget`` refusals (of the budget or
        of ``max_held_bytes``), ``failures``;
        now: ``in_flight`` fetches and ``held_bytes``."""
        in_flight = len(self._wholes) + sum(not h.done.is_set() for h in self._heads.values())
        return {**self._stats, "in_flight": in_flight, "held_bytes": self._held_bytes}

    # -- scheduling -----------------------------------------------------------------------

    def _folder(self, handle: str, directory: str, files: Mapping[str, ObjectInfo]) -> _Folder:
        """The name order of ``files``, computed once per listing the catalog hands out."""
        key = (handle, directory)
        folder = self._folders.get(key)
        if folder is None or folder.files is not files:
            names = tuple(sorted(files))
            position = {n: i for i, n in enumerate(names)}
            folder = _Folder(files, names, position, self._min_lookahead)
            self._folders[key] = folder
            while len(self._folders) > 64:
                self._folders.popitem(last=False)
        self._folders.move_to_end(key)
        return folder

    def _schedule(self, handle: str, bucket: str, info: ObjectInfo) -> bool:
        """Start fetching what ``info`` needs, unless held or on its way; False: no budget."""
        if info.size <= 0:
            return True
        if info.size <= self._max_file_size:
            block = BlockKey(handle, info.key, info.etag, 0)
            if block in self._wholes or self._cache.has(block) or self._cache.fetching(block):
                return True
            if not self._budget.try_acquire(info.size):
                self._stats["no_budget"] += 1
                return False
            whole = _Head(info.size)
            self._wholes[block] = whole
            self._enqueue(functools.partial(self._fetch_whole, bucket, info, block, whole))
            return True
        object_id = (handle, info.key, info.etag)
        if object_id in self._heads or self._cache.has(BlockKey(*object_id, 0)):
            return True
        nbytes = min(info.size, self._head_bytes)
        self._drop_oldest_heads(self._max_held_bytes - nbytes)
        if self._held_bytes + nbytes > self._max_held_bytes or not self._budget.try_acquire(nbytes):
            self._stats["no_budget"] += 1
            return False
        head = _Head(nbytes)
        self._heads[object_id] = head
        self._held_bytes += nbytes
        self._enqueue(functools.partial(self._fetch_head, handle, bucket, info, head))
        return True

    def _enqueue(self, fetch: Callable[[], Awaitable[None]]) -> None:
        """Queue a fetch behind the nearer ones; start a worker if fewer than the maximum run."""
        self._queue.append(fetch)
        if self._workers < self._max_parallel:
            self._nursery.start_soon(self._work)
            self._workers += 1

    async def _work(self) -> None:
        """Run queued fetches, nearest first, until the queue is empty."""
        try:
            while self._queue:
                await self._queue.popleft()()
        finally:
            self._workers -= 1

    def _drop_oldest_heads(self, keep_at_most: int) -> None:
        """Drop held, finished heads (oldest first) until at most ``keep_at_most`` bytes are
        held; heads still on their way stay (their readers may be waiting)."""
        for object_id in list(self._heads):
            if self._held_bytes <= keep_at_most:
                return
            head = self._heads[object_id]
            if head.done.is_set():
                del self._heads[object_id]
                self._unreserve(head)
                self._stats["heads_dropped"] += 1

    def _unreserve(self, head: _Head) -> None:
        if head.reserved:
            self._budget.release(head.reserved)
            self._held_bytes -= head.reserved
            head.reserved = 0

    # -- fetching -------------------------------------------------------------------------

    def _reader(self, handle: str, bucket: str, info: ObjectInfo) -> ObjectReader:
        """A reader without prefetch: its first read fetches exactly what is asked for."""
        return ObjectReader(
            self._store,
            self._broker,
            self._cache,
            handle=handle,
            bucket=bucket,
            key=info.key,
            size=info.size,
            etag=info.etag,
            budget=self._budget,
        )

    async def _fetch_whole(
        self, bucket: str, info: ObjectInfo, block: BlockKey, whole: _Head
    ) -> None:
        """Fetch a small file into the block cache (the reader's first read stores it)."""
        whole.started = True
        try:
            if self._cache.has(block) or self._cache.fetching(block):
                return  # a read got there first
            reader = self._reader(block.handle, bucket, info)
            try:
                data = await reader.read(0, info.size)
            finally:
                await reader.close()
            self._stats["whole_files"] += 1
            self._stats["bytes_fetched"] += len(data)
        except Exception:  # noqa: BLE001 -- the read that needs the file fetches and reports
            self._stats["failures"] += 1
        finally:
            del self._wholes[block]
            whole.done.set()
            self._budget.release(whole.reserved)

    async def _fetch_head(self, handle: str, bucket: str, info: ObjectInfo, head: _Head) -> None:
        """Fetch the first bytes of a large file and hold them for its reader."""
        head.started = True
        try:
            if head.reserved:  # not taken by a reader while it was queued
                reader = self._reader(handle, bucket, info)
                try:
                    head.data = await reader.read(0, head.reserved)
                finally:
                    await reader.close()
                self._stats["heads"] += 1
                self._stats["bytes_fetched"] += len(head.data)
        except Exception:  # noqa: BLE001 -- the read that needs the bytes fetches and reports
            self._stats["failures"] += 1
            self._forget(head)
        finally:
            head.done.set()

    def _forget(self, head: _Head) -> None:
        for object_id, held in list(self._heads.items()):
            if held is head:
                del self._heads[object_id]
        self._unreserve(head)
