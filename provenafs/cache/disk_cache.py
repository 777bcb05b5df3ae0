"""``DiskCache``: an optional persistent store of object blocks that survives remounts.

Layout: ``<directory>/<2 hex>/<62 hex>.blk``, named by a SHA-256 of the block's opaque key (the
block cache's key names the object version: handle, S3 key, ETag, block index), so names never
contain user text and a changed object (new ETag) never hits an old block. Each file is
``MAGIC || sha256(data) || data``; a block of the wrong length (a torn file) or whose checksum
does not match (checked on its first read in each process; later reads check the length) is
deleted and reported as a miss. Writes go to a temporary file and are renamed into place, so a
reader never sees half a block. The directory is 0700 and files 0600.

Size is bounded by ``max_bytes``: an index (name → size, last use) is built from the directory
when the cache is opened (or on first use) and kept on the trio thread; when a write takes the
total past ``max_bytes`` the least recently used blocks are deleted down to 90% of it. Last use
is also recorded as the file's mtime, so the LRU order survives remounts.

Writes are behind the reads once ``run_writer`` runs (the mount starts it in its nursery):
``put`` only queues the block (``get`` serves queued blocks) and returns at once, and the
writer stores what is queued in batches, one thread hop per batch, so a read never waits on
the disk. At most ``max_pending_bytes`` wait; past that, new blocks are not cached on disk
(counted as ``writes_dropped``). Without a writer, ``put`` writes before it returns.

Blocking file I/O runs in ``trio.to_thread.run_sync`` with a dedicated limiter (except the one
directory scan when the cache is opened at start-up); the index is touched only on the trio
thread. It must not know about S3, datasets or credentials: keys are opaque bytes, and it
imports nothing of provenafs.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import itertools
import os
from collections.abc import Mapping
from pathlib import Path

import trio

__all__ = ["DiskCache"]

_MAGIC = b"PFSBLK1\n"
_DIGEST = 32
_SUFFIX = ".blk"


def _name(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def _read_blocking(path: Path, size: int, verify: bool) -> bytes | None:
    """The block in ``path`` if it is whole (and, with ``verify``, its checksum holds), else None.

    Touches the file's mtime (its last use, for LRU order across remounts).
    """
    header = len(_MAGIC) + _DIGEST
    try:
        with path.open("rb") as file:
            head = file.read(header)
            data = file.read()
    except OSError:
        return None
    whole = len(head) + len(data) == size and head[: len(_MAGIC)] == _MAGIC
    if not whole or (verify and hashlib.sha256(data).digest() != head[len(_MAGIC) :]):
        path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)
    return data


def _write_blocking(path: Path, data: bytes, temp_id: int) -> None:
    """One block file: header and data in one ``writev`` to a temporary name, renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{temp_id}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            header = _MAGIC + hashlib.sha256(data).digest()
            if os.writev(fd, (header, data)) != len(header) + len(data):
                raise OSError(errno.ENOSPC, "short write")
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _scan_blocking(directory: Path) -> dict[str, tuple[int, float]]:
    """Every block file under ``directory``: name → (size on disk, mtime); stray temps removed."""
    index: dict[str, tuple[int, float]] = {}
    for sub in directory.iterdir():
        if not sub.is_dir():
            continue
        for entry in os.scandir(sub):
            if entry.name.endswith(".tmp"):
                Path(entry.path).unlink(missing_ok=True)
            elif entry.name.endswith(_SUFFIX):
                stat = entry.stat()
                index[sub.name + entry.name[: -len(_SUFFIX)]] = (stat.st_size, stat.st_mtime)
    return index


def _unlink_blocking(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class DiskCache:
    """Persistent, size-bounded block store; every method is async and safe to call concurrently."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        max_threads: int = 4,
        load: bool = True,
        max_pending_bytes: int = 32 << 20,
    ) -> None:
        """Open (creating) the cache directory; with ``load``, index it now (blocking, once, at
        start-up), else on first use in a thread."""
        self.directory = Path(directory)
        self.max_bytes = max(0, max_bytes)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self._limiter = trio.CapacityLimiter(max_threads)
        self._index: collections.OrderedDict[str, int] | None = None  # name → size, LRU first
        self._loading: trio.Event | None = None
        self._total = 0
        self._verified: set[str] = set()  # checksummed (or written) by this process
        self._pending: dict[str, bytes] = {}  # queued for the writer: name → block
        self._writing: dict[str, bytes] = {}  # the batch being written now, until indexed
        self._pending_bytes = 0
        self._max_pending_bytes = max_pending_bytes
        self._queued = trio.Event()
        self._writer_running = False
        self._temp_ids = itertools.count()
        if load:
            self._set_index(_scan_blocking(self.directory))
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(
                (
                    "hits",
                    "misses",
                    "writes",
                    "writes_dropped",
                    "evictions",
                    "corrupt_or_lost",
                    "write_errors",
                ),
                0,
            )
        )

    def _set_index(self, found: dict[str, tuple[int, float]]) -> None:
        index: collections.OrderedDict[str, int] = collections.OrderedDict()
        for name, (size, _) in sorted(found.items(), key=lambda item: item[1][1]):
            index[name] = size
        self._index = index
        self._total = sum(index.values())

    def _path(self, name: str) -> Path:
        return self.directory / name[:2] / (name[2:] + _SUFFIX)

    async def _loaded(self) -> collections.OrderedDict[str, int]:
        """The index, scanning the directory (in a thread) the first time."""
        while self._index is None:
            if self._loading is not None:
                await self._loading.wait()
                continue
            self._loading = trio.Event()
            try:
                found = await trio.to_thread.run_sync(
                    _scan_blocking, self.directory, limiter=self._limiter
                )
                self._set_index(found)
            finally:
                self._loading.set()
                self._loading = None
        return self._index

    def __contains__(self, key: bytes) -> bool:
        """Whether the index lists ``key`` or it is queued (no I/O; False until the index is
        loaded)."""
        name = _name(key)
        if name in self._pending or name in self._writing:
            return True
        return self._index is not None and name in self._index

    async def get(self, key: bytes) -> bytes | None:
        """The stored block, or None (never stored, evicted, or failed its checksum)."""
        name = _name(key)
        queued = self._pending.get(name) or self._writing.get(name)
        if queued is not None:
            self._stats["hits"] += 1
            return queued
        index = await self._loaded()
        if name not in index:
            self._stats["misses"] += 1
            return None
        index.move_to_end(name)
        verify = name not in self._verified
        data = await trio.to_thread.run_sync(
            _read_blocking, self._path(name), index[name], verify, limiter=self._limiter
        )
        if data is None:
            self._forget(name)
            self._stats["corrupt_or_lost"] += 1
            self._stats["misses"] += 1
            return None
        if name in index:
            self._verified.add(name)
        self._stats["hits"] += 1
        return data

    async def put(self, key: bytes, data: bytes) -> None:
        """Store a block (replacing any copy): queued for the writer if one runs, else now."""
        if len(data) + len(_MAGIC) + _DIGEST > self.max_bytes:
            return
        name = _name(key)
        if not self._writer_running:
            await self._write({name: data})
        elif name not in self._pending:
            if self._pending_bytes + len(data) > self._max_pending_bytes:
                self._stats["writes_dropped"] += 1
                return
            self._pending[name] = data
            self._pending_bytes += len(data)
            self._queued.set()

    async def run_writer(self) -> None:
        """Write queued blocks in batches until cancelled (then what is queued is dropped)."""
        self._writer_running = True
        try:
            while True:
                await self._queued.wait()
                self._queued = trio.Event()
                batch, self._pending = self._pending, {}
                self._writing = batch
                try:
                    await self._write(batch)
                finally:
                    self._writing = {}
                    self._pending_bytes -= sum(len(data) for data in batch.values())
        finally:
            self._writer_running = False
            self._pending.clear()
            self._pending_bytes = 0

    async def _write(self, blocks: Mapping[str, bytes]) -> None:
        """Write blocks in one thread hop; index them; evict the least recently used if over
        size. A full or broken disk costs cache hits, never a read."""
        index = await self._loaded()
        written, errors = await trio.to_thread.run_sync(
            self._write_many_blocking, blocks, limiter=self._limiter
        )
        for error in errors:
            self._stats["write_errors"] += 1
            self._stats[f"errno_{error}"] += 1
        for name, data in blocks.items():
            if name not in written:
                continue
            size = len(data) + len(_MAGIC) + _DIGEST
            self._forget(name)
            index[name] = size
            self._verified.add(name)
            self._total += size
            self._stats["writes"] += 1
        if self._total > self.max_bytes:
            await self._evict(index)

    def _write_many_blocking(self, blocks: Mapping[str, bytes]) -> tuple[set[str], list[int]]:
        """Write each block: the names written, and the errno of each failed write."""
        written, errors = set(), []
        for name, data in blocks.items():
            path = self._path(name)
            try:
                try:
                    _write_blocking(path, data, next(self._temp_ids))
                except FileNotFoundError:  # its directory is not made yet (or was removed)
                    path.parent.mkdir(mode=0o700, exist_ok=True)
                    _write_blocking(path, data, next(self._temp_ids))
            except OSError as exc:
                errors.append(exc.errno or 0)
            else:
                written.add(name)
        return written, errors

    async def _evict(self, index: collections.OrderedDict[str, int]) -> None:
        victims: list[Path] = []
        target = self.max_bytes * 9 // 10
        while index and self._total > target:
            name, size = index.popitem(last=False)
            self._total -= size
            victims.append(self._path(name))
        self._stats["evictions"] += len(victims)
        with trio.CancelScope(shield=True):  # unindexed files must not outlive a cancellation
            await trio.to_thread.run_sync(_unlink_blocking, victims, limiter=self._limiter)

    def _forget(self, name: str) -> None:
        self._verified.discard(name)
        if self._index is not None:
            size = self._index.pop(name, None)
            if size is not None:
                self._total -= size

    def statistics(self) -> Mapping[str, int]:
        """Counts: ``hits``, ``misses``, ``writes``, ``evictions``, ``corrupt_or_lost``,
        ``write_errors``; sizes: ``bytes`` and ``blocks`` stored, ``max_bytes``."""
        return {
            **self._stats,
            "bytes": self._total,
            "blocks": 0 if self._index is None else len(self._index),
            "pending_bytes": self._pending_bytes,
            "max_bytes": self.max_bytes,
        }
