"""``DraftJournal``: the append-only, checksummed record file of one draft.

Every change of a draft appends one record (``<crc32 hex> <json>\\n``); ``sync`` fsyncs what was
appended (coalescing concurrent callers into one fsync) with the directories that gained
files. Replay (``decode_records``) stops at the first torn or corrupt line: everything after
it was never acknowledged. ``replace_blocking`` compacts: temp file, fsync, rename, fsync of
the directory. It knows nothing of what the records mean (``drafts`` does).

Trio thread only for its counters; fsyncs run in worker threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

__all__ = ["DraftJournal", "decode_records", "encode_record", "fsync_dir_blocking"]


def fsync_dir_blocking(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_record(record: Mapping[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The intact records at the start of *data*, and the length they span.

    Replay stops at the first line that is torn (no newline) or fails its checksum: everything
    after it was never acknowledged (records are fsynced in order).
    """
    records: list[dict[str, Any]] = []
    good = 0
    while good < len(data):
        end = data.find(b"\n", good)
        if end == -1:
            break
        line = data[good:end]
        checksum, _, body = line.partition(b" ")
        try:
            if int(checksum, 16) != zlib.crc32(body) or len(checksum) != 8:
                break
            record = json.loads(body)
        except ValueError:
            break
        if not isinstance(record, dict):
            break
        records.append(record)
        good = end + 1
    return records, good


class DraftJournal:
    """The append-only record file of one draft, with coalesced fsyncs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.records = 0
        self._appended = 0
        self._synced = 0
        self._syncing: trio.Event | None = None
        self.dirs_to_sync: set[Path] = set()

    def append(self, record: Mapping[str, Any]) -> None:
        data = encode_record(record)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.records += 1
        self._appended += 1

    def _sync_blocking(self, dirs: set[Path]) -> None:
        for directory in sorted(dirs):
            fsync_dir_blocking(directory)
        os.fsync(self._fd)

    def sync_blocking(self) -> None:
        dirs, self.dirs_to_sync = self.dirs_to_sync, set()
        self._sync_blocking(dirs)
        self._synced = self._appended

    async def sync(self) -> None:
        """Return once every record appended before the call is on disk."""
        target = self._appended
        while self._synced < target or self.dirs_to_sync:
            if self._syncing is not None:
                await self._syncing.wait()
                continue
            event = self._syncing = trio.Event()
            covered = self._appended
            dirs, self.dirs_to_sync = self.dirs_to_sync, set()
            try:
                await trio.to_thread.run_sync(self._sync_blocking, dirs)
            except BaseException:
                self.dirs_to_sync |= dirs
                raise
            finally:
                self._syncing = None
                event.set()
            self._synced = max(self._synced, covered)

    def replace_blocking(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Compaction: write *records* to a temp file, fsync, rename over, fsync the directory."""
        temp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"".join(encode_record(record) for record in records))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        fsync_dir_blocking(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.records = len(records)
        self._synced = self._appended

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
