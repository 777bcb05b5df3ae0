"""``SpillArea``: unnamed local files that keep what a whole-object fill fetched.

A file read at random is fetched whole and pushed into the kernel's page cache (``reader.py``),
so its reads stop reaching the mount. The kernel may drop any of those pages again (memory
pressure, proactive reclaim), and each read of a dropped page then comes back to the mount: from
S3 that is a round trip per 4 KiB page, which turns a million reads a second into thousands.
The fill therefore also writes each part to a spill file, and reads of parts it holds are local.

Spill files are ``O_TMPFILE`` files in a private directory (0700): they have no name, so
nothing is left behind when they are closed or the daemon dies, and no other user can open
them. All spill files together hold at most ``max_bytes``, and a spill file must leave 2 GiB free
on its disk; a fill that does not fit gets none.
A failed write (a full disk) drops the spill file; reads then go on as before.

Large writes and reads run in ``trio.to_thread.run_sync`` with the area's limiter; reads smaller
than ``INLINE_READ`` are served on the trio thread (the page cache answers them in microseconds,
faster than a thread hop). A file's descriptor is closed only when no I/O on it is running. It
must not know about S3, FUSE, datasets or credentials.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import trio

__all__ = ["SpillArea", "SpillFile"]

log = logging.getLogger(__name__)

INLINE_READ = 256 << 10
KEEP_FREE_BYTES = 2 << 30  # a spill file must leave this much free on its disk


def _pwrite_all_blocking(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class SpillFile:
    """One object's bytes, written part by part; ``holds`` says which ranges can be read."""

    def __init__(self, area: SpillArea, fd: int, size: int, part: int) -> None:
        self._area = area
        self._fd = fd
        self.size = size
        self._part = part
        self._written: set[int] = set()  # indexes of parts written whole
        self._busy = 0
        self._closed = False

    def is_open(self) -> bool:
        return not self._closed

    def holds(self, start: int, end: int) -> bool:
        """Whether every byte of ``[start, end)`` has been written."""
        if self._closed or start >= end:
            return False
        first, last = start // self._part, (end - 1) // self._part
        return all(index in self._written for index in range(first, last + 1))

    async def write(self, offset: int, data: bytes) -> bool:
        """Store a part at ``offset`` (a multiple of the part size); False if the file failed
        and was dropped (or was closed), True once the part can be read."""
        if self._closed:
            return False
        self._busy += 1
        try:
            await trio.to_thread.run_sync(
                _pwrite_all_blocking, self._fd, data, offset, limiter=self._area.limiter
            )
        except OSError as exc:
            self._area.count("write_errors")
            log.debug("spill file dropped: %s", exc)
            self._closed = True
            return False
        finally:
            self._busy -= 1
            self._release_if_idle()
        if not self.is_open():  # closed while the part was being written
            return False
        self._written.add(offset // self._part)
        self._area.count("bytes_written", len(data))
        return True

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, which ``holds`` said are written."""
        size = end - start
        self._area.count("reads")
        if size < INLINE_READ:
            return os.pread(self._fd, size, start)
        self._busy += 1
        try:
            return await trio.to_thread.run_sync(
                os.pread, self._fd, size, start, limiter=self._area.limiter
            )
        finally:
            self._busy -= 1
            self._release_if_idle()

    def close(self) -> None:
        """Forget the bytes; the descriptor closes (and the disk space is freed) once no I/O
        on it is running."""
        self._closed = True
        self._release_if_idle()

    def _release_if_idle(self) -> None:
        if self._closed and not self._busy and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._area.release(self.size)


class SpillArea:
    """Where spill files are made, and the bound on their total size."""

    def __init__(self, directory: Path, max_bytes: int, *, max_threads: int = 4) -> None:
        self.directory = Path(directory)
        self.max_bytes = max(0, max_bytes)
        self.limiter = trio.CapacityLimiter(max_threads)
        self._in_use = 0
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(("files", "bytes_written", "reads", "refused", "write_errors"), 0)
        )

    def open(self, size: int, part: int) -> SpillFile | None:
        """A spill file for an object of ``size`` bytes written in ``part``-byte parts, or
        None when it does not fit under ``max_bytes`` or the file cannot be made."""
        if self._in_use + size > self.max_bytes:
            self._stats["refused"] += 1
            return None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.chmod(0o700)
            disk = os.statvfs(self.directory)
            if disk.f_bavail * disk.f_frsize - size < KEEP_FREE_BYTES:
                self._stats["refused"] += 1
                return None  # never fill the user's disk: the reads work without a spill
            fd = os.open(self.directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._stats["refused"] += 1
            log.debug("no spill file in %s: %s", self.directory, exc)
            return None
        self._in_use += size
        self._stats["files"] += 1
        return SpillFile(self, fd, size, part)

    def release(self, size: int) -> None:
        self._in_use -= size

    def count(self, name: str, amount: int = 1) -> None:
        self._stats[name] += amount

    def statistics(self) -> Mapping[str, int]:
        """Counts: ``files`` made, ``bytes_written``, ``reads`` served, ``refused``,
        ``write_errors``; now: ``bytes`` held open, ``max_bytes``."""
        return {**self._stats, "bytes": self._in_use, "max_bytes": self.max_bytes}
