"""``BlockCache``: a byte-bounded LRU of object blocks in memory, over an optional disk cache.

A block is ``block_size`` bytes of one object version (the last block of an object is shorter).
Keys carry the dataset handle, the S3 key, the ETag and the block index: published data is
immutable, so a key never goes stale and nothing is ever invalidated. ``get_or_fetch`` is
single-flight: N readers of one block cause one fetch; a failed fetch reaches every waiter and is
not cached; a cancelled fetch hands the work to one of the waiters.

It runs on the trio thread only (cachetools is not thread-safe); it never does blocking I/O
itself (``DiskCache`` moves its file I/O to threads). Values larger than the whole cache are
returned but not kept.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import cachetools

from provenafs.cache.single_flight import SingleFlight

__all__ = ["DEFAULT_BLOCK_SIZE", "BlockCache", "BlockKey", "DiskTier"]

DEFAULT_BLOCK_SIZE = 1 << 20


@dataclasses.dataclass(frozen=True)
class BlockKey:
    """Block ``index`` (of the cache's block size) of one object version."""

    handle: str
    key: str
    etag: str
    index: int

    def identity(self) -> bytes:
        """The key as opaque bytes: what a ``DiskTier`` names the block by."""
        text = "\0".join((self.handle, self.key, self.etag, str(self.index)))
        return text.encode("utf-8", "surrogateescape")


class DiskTier(Protocol):
    """A persistent block store under the memory LRU (``DiskCache``), keyed by opaque bytes."""

    def __contains__(self, key: bytes) -> bool: ...

    async def get(self, key: bytes) -> bytes | None: ...

    async def put(self, key: bytes, data: bytes) -> None: ...

    def statistics(self) -> Mapping[str, int]: ...


class BlockCache:
    """Memory LRU of blocks (bounded by total bytes), single-flight fetches, optional disk tier."""

    def __init__(
        self, max_bytes: int, block_size: int = DEFAULT_BLOCK_SIZE, disk: DiskTier | None = None
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.max_bytes = max(0, max_bytes)
        self._lru: cachetools.LRUCache[BlockKey, bytes] = cachetools.LRUCache(
            maxsize=max(1, self.max_bytes), getsizeof=len
        )
        self._disk = disk
        self._flights: SingleFlight[BlockKey, bytes] = SingleFlight()
        self._peak_bytes = 0  # the most bytes ever held in memory at once
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(
                ("hits", "misses", "fetches", "bytes_fetched", "disk_hits", "failures"), 0
            )
        )

    def __contains__(self, key: BlockKey) -> bool:
        """Whether block ``key`` is in memory (not counted as a hit, not refreshed in the LRU)."""
        return key in self._lru

    def has(self, key: BlockKey) -> bool:
        """Whether block ``key`` is held in memory or (as far as its index knows) on disk."""
        return key in self._lru or (self._disk is not None and key.identity() in self._disk)

    def fetching(self, key: BlockKey) -> bool:
        """Whether block ``key`` is being fetched now (``get_or_fetch`` would wait for it)."""
        return key in self._flights

    def peek(self, key: BlockKey) -> bytes | None:
        """The block if it is in memory (counted as a hit), else None; never fetches."""
        data = self._lru.get(key)
        if data is not None:
            self._stats["hits"] += 1
        return data

    def put(self, key: BlockKey, data: bytes) -> None:
        """Keep ``data`` in memory as block ``key`` (skipped if it cannot fit at all)."""
        if self.max_bytes <= 0 or len(data) > self.max_bytes:
            return
        self._lru[key] = data
        self._peak_bytes = max(self._peak_bytes, int(self._lru.currsize))

    async def get_or_fetch(self, key: BlockKey, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """Block ``key`` from memory, else disk, else ``fetch()`` (one fetch per block at once)."""
        data = self.peek(key)
        if data is not None:
            return data
        fetched = False

        async def fill() -> bytes:
            nonlocal fetched
            data = self.peek(key)  # a cancelled leader's waiters come round again
            if data is not None:
                return data
            try:
                if self._disk is not None:
                    data = await self._disk.get(key.identity())
                    if data is not None:
                        self._stats["disk_hits"] += 1
                if data is None:
                    self._stats["misses"] += 1
                    self._stats["fetches"] += 1
                    data = await fetch()
                    fetched = True
                    self._stats["bytes_fetched"] += len(data)
            except Exception:
                self._stats["failures"] += 1
                raise
            self.put(key, data)
            return data

        data = await self._flights.run(key, fill)
        if fetched and self._disk is not None:
            await self._disk.put(key.identity(), data)  # after the waiters have their block
        return data

    async def store(self, key: BlockKey, data: bytes) -> None:
        """Keep a block fetched elsewhere (e.g. by a prefetcher) in memory and on disk."""
        self.put(key, data)
        if self._disk is not None:
            await self._disk.put(key.identity(), data)

    def statistics(self) -> Mapping[str, int]:
        """Counts: ``hits``, ``misses``, ``fetches``, ``bytes_fetched``, ``disk_hits``,
        ``waits``, ``failures``; sizes: ``bytes`` and ``blocks`` held now, ``peak_bytes`` (the
        most ever held at once), ``max_bytes``, and with a disk tier ``disk_bytes`` and
        ``disk_max_bytes``."""
        stats = {
            **self._stats,
            "waits": self._flights.joined,
            "bytes": int(self._lru.currsize),
            "peak_bytes": self._peak_bytes,
            "blocks": len(self._lru),
            "max_bytes": self.max_bytes,
        }
        if self._disk is not None:
            disk = self._disk.statistics()
            stats |= {"disk_bytes": disk["bytes"], "disk_max_bytes": disk["max_bytes"]}
        return stats
