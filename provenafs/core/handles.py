"""Open files and directories: one class per kind of open file, each with its own operations.

As in rclone's VFS, what ``read``, ``write``, ``flush``, ``fsync`` and ``release`` do depends on
what was opened, so each kind is a class rather than a flag:

- ``ObjectHandle``: a published object, read through its ``ObjectReader`` (if the file is
  written through another handle meanwhile, reads follow the draft's bytes);
- ``SnapshotHandle``: bytes fixed at open (a read-only sidecar, ``.provenafs/status.json``);
- ``DraftFileHandle``: a file of a draft, staged on local disk (any file opened for writing,
  or read once staged); writes, durability at flush/fsync and the in-place push go through
  ``DraftWrites`` (``core.changes.DraftChanges``);
- ``SidecarEditHandle``: a sidecar opened for writing: a buffer committed as one metadata
  edit at flush, so ``close()`` reports the outcome (errors of ``release`` reach no program).

``HandleTable`` numbers them (one counter for files and directories) and finds them again.
``release`` is the kernel's last close; ``close`` is the mount stopping with the file still
open (nothing is pushed or committed then: the draft keeps what was made durable).

Trio thread only; no pyfuse3. Write ordering rules are ``provenafs.write``'s (its docstring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from provenafs.core.inodes import NodeId, NodeKind
from provenafs.core.listed_entries import ListedEntries
from provenafs.core.observation import ReadCounter
from provenafs.core.types import Attributes, Caller, FileReader, is_writing
from provenafs.errors import FsError
from provenafs.write.draft_entries import StagedEntry
from provenafs.write.drafts import Draft, StagedBlob
from provenafs.write.metadata_edit import SidecarBuffer

__all__ = [
    "DirHandle",
    "DocumentEditor",
    "DraftFileHandle",
    "DraftWrites",
    "FileHandle",
    "HandleTable",
    "ObjectHandle",
    "SidecarEditHandle",
    "SnapshotHandle",
]

log = logging.getLogger(__name__)


def _check_range(offset: int, size: int) -> None:
    if offset < 0 or size < 0:
        raise FsError(errno.EINVAL, "negative offset or size")


class FileHandle:
    """One open file. The defaults: not writable, nothing to make durable or to close."""

    node: NodeId
    opened_by: Caller | None = None  # the process that opened it (None: the mount itself)
    observed: ReadCounter | None = None  # where its reads are counted (a run observes it)

    def staged_blob(self) -> StagedBlob | None:
        """The draft blob this handle writes, if any (a truncate through it resizes that)."""
        return None

    async def read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    async def write(self, offset: int, data: bytes) -> int:
        raise FsError(errno.EBADF, "not open for writing")

    async def flush(self) -> None:
        """A ``close()`` of one descriptor: what must succeed for ``close()`` to succeed."""

    async def fsync(self, datasync: bool) -> None:
        """Make what was written durable."""

    async def release(self) -> None:
        """The last descriptor closed: let go of everything the handle holds."""

    async def close(self) -> None:
        """The mount stops with the file still open."""
        await self.release()


class ObjectHandle(FileHandle):
    """A published object, read from the block cache and S3 by its reader."""

    def __init__(
        self,
        node: NodeId,
        reader: FileReader,
        inode: int,
        *,
        staged_since_open: Callable[[NodeId, int], tuple[Draft, StagedEntry] | None],
        after_first_read: Callable[[], None] | None = None,
        opened_by: Caller | None = None,
    ) -> None:
        self.node = node
        self.opened_by = opened_by
        self.reader = reader
        self.inode = inode  # to find the file again after renames: its bytes may become staged
        self._staged_since_open = staged_since_open
        # The folder's sibling prefetch, started once this file's first read is answered:
        # started at open, its GETs would compete with that read's own (cold TTFB +50%).
        self._after_first_read = after_first_read

    async def read(self, offset: int, size: int) -> bytes:
        _check_range(offset, size)
        staged = self._staged_since_open(self.node, self.inode)
        if staged is not None:
            # Written through another handle after this one opened: same file, new bytes.
            draft, entry = staged
            return await draft.read_staged(entry, offset, size)
        data = await self.reader.read(offset, size)
        after, self._after_first_read = self._after_first_read, None
        if after is not None:
            after()
        return data

    async def release(self) -> None:
        await self.reader.close()


class SnapshotHandle(FileHandle):
    """Bytes fixed at open: a sidecar opened for reading, or the status file."""

    def __init__(self, node: NodeId, data: bytes, *, opened_by: Caller | None = None) -> None:
        self.node = node
        self.opened_by = opened_by
        self.data = data

    async def read(self, offset: int, size: int) -> bytes:
        _check_range(offset, size)
        return self.data[offset : offset + size]


class DraftWrites(Protocol):
    """What a draft file handle needs from the write path (``core.changes.DraftChanges``)."""

    def change(self, handle: str) -> AbstractAsyncContextManager[None]:
        """Hold *handle*'s change gate shared (waits while an in-place push runs)."""

    def check_not_publishing(self, handle: str) -> None: ...

    async def record_blob(self, blob: StagedBlob) -> None:
        """Make a written file's bytes and size durable in its draft."""

    async def push_in_place(self, handle: str) -> None: ...

    async def settle_in_place(self, draft: Draft) -> None: ...


class DraftFileHandle(FileHandle):
    """A file of a draft, staged on local disk; writable when opened for writing."""

    def __init__(
        self,
        node: NodeId,
        blob: StagedBlob,
        flags: int,
        writes: DraftWrites,
        *,
        opened_by: Caller | None = None,
    ) -> None:
        self.node = node
        self.opened_by = opened_by
        self.blob = blob
        self.writable = is_writing(flags)
        self.append = bool(flags & os.O_APPEND)
        self._writes = writes
        blob.open_count += 1
        if self.writable:
            blob.draft.open_writers += 1

    def staged_blob(self) -> StagedBlob:
        return self.blob

    async def read(self, offset: int, size: int) -> bytes:
        _check_range(offset, size)
        return await self.blob.read(offset, size)

    async def write(self, offset: int, data: bytes) -> int:
        if not self.writable:
            raise FsError(errno.EBADF, "not open for writing")
        draft = self.blob.draft
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        async with self._writes.change(draft.handle):  # in place, waits while a push runs
            if draft.discarded:
                raise FsError(errno.EROFS, "the draft was published; reopen the file")
            self._writes.check_not_publishing(draft.handle)
            if self.append:
                offset = self.blob.size
            return await self.blob.write(offset, data)

    async def flush(self) -> None:
        """The bytes and size become durable (``close()`` acknowledges them); in place, the
        dataset's pending changes are then pushed into it (``close()`` fails if they could not
        be)."""
        if self.writable:
            await self._writes.record_blob(self.blob)
            await self._writes.push_in_place(self.blob.draft.handle)

    async def fsync(self, datasync: bool) -> None:
        if self.writable:
            await self._writes.record_blob(self.blob)

    async def release(self) -> None:
        draft = self.blob.draft
        async with self._writes.change(draft.handle):
            await self._let_go()
        await self._writes.settle_in_place(draft)

    async def close(self) -> None:
        await self._let_go()

    async def _let_go(self) -> None:
        blob = self.blob
        draft = blob.draft
        try:
            if self.writable and not draft.discarded:
                await draft.record_blob(blob)
        except (FsError, OSError) as exc:
            log.warning("%s: closing %r: %s", draft.handle, self.node.path, exc)
        finally:
            if self.writable:
                draft.open_writers -= 1
            if draft.discarded:
                blob.open_count -= 1
                if blob.open_count <= 0:
                    blob.close_fd()
            else:
                draft.release_blob(blob)


class DocumentEditor(Protocol):
    """Commits a written JSON document (``SidecarEditor``, ``AccessEditor``)."""

    async def commit(self, handle: str, data: bytes, reason: str | None) -> None: ...


class SidecarEditHandle(FileHandle):
    """A sidecar (or another edited document, ``<handle>.access.json``) open for writing: its
    buffer becomes one edit at flush."""

    def __init__(
        self,
        node: NodeId,
        buffer: SidecarBuffer,
        editor: DocumentEditor,
        *,
        opened_by: Caller | None = None,
    ) -> None:
        self.node = node
        self.opened_by = opened_by
        self.buffer = buffer
        self._editor = editor

    async def read(self, offset: int, size: int) -> bytes:
        return self.buffer.read(max(offset, 0), max(size, 0))

    async def write(self, offset: int, data: bytes) -> int:
        return self.buffer.write(offset, data)

    async def flush(self) -> None:
        """The edit is committed here, so that ``close()`` returns its outcome."""
        await commit_sidecar(self._editor, self.buffer)

    async def fsync(self, datasync: bool) -> None:
        """Committed here too (editors fsync before they close)."""
        await commit_sidecar(self._editor, self.buffer)

    async def release(self) -> None:
        """A buffer never flushed (no close seen) is committed now; failures reach the log."""
        if self.buffer.dirty:
            with contextlib.suppress(FsError):  # logged once by the editor
                await commit_sidecar(self._editor, self.buffer)

    async def close(self) -> None:
        """Nothing is committed while the mount stops (no program would see the outcome)."""


async def commit_sidecar(editor: DocumentEditor, buffer: SidecarBuffer) -> None:
    """Commit a dirty buffer once; later flushes repeat a failure without another call."""
    if not buffer.dirty:
        if buffer.failure is not None:
            raise FsError(buffer.failure.errno, buffer.failure.message)
        return
    data = buffer.take_for_commit()
    try:
        await editor.commit(buffer.handle, data, None)
    except FsError as exc:
        buffer.failure = exc
        raise


@dataclasses.dataclass
class DirHandle:
    """An open directory: its entries as listed at ``opendir`` (stable offsets), after ``.`` and
    ``..`` (their attributes carry their inode numbers: the kernel counts no lookup of them)."""

    dots: tuple[Attributes, Attributes]
    entries: list[tuple[str, NodeId, Attributes]]
    listed: ListedEntries | None = None  # a dataset directory's listing (then no ``entries``)


class HandleTable:
    """Open files and directories by number (one counter for both, never reused)."""

    def __init__(self) -> None:
        self._next_fh = 1
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}

    def add(self, handle: FileHandle) -> int:
        fh = self._new_fh()
        self._files[fh] = handle
        return fh

    def find(self, fh: int) -> FileHandle | None:
        return self._files.get(fh)

    def file(self, fh: int) -> FileHandle:
        handle = self._files.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, "unknown file handle")
        return handle

    def pop(self, fh: int) -> FileHandle | None:
        return self._files.pop(fh, None)

    def add_dir(self, handle: DirHandle) -> int:
        fh = self._new_fh()
        self._dirs[fh] = handle
        return fh

    def dir(self, fh: int) -> DirHandle:
        handle = self._dirs.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, "unknown directory handle")
        return handle

    def pop_dir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    def sidecar_edits(self, handle: str) -> list[SidecarEditHandle]:
        """The open sidecar edits of dataset *handle*, oldest first."""
        return self.document_edits(NodeId(NodeKind.SIDECAR, handle))

    def document_edits(self, node: NodeId) -> list[SidecarEditHandle]:
        """The open edits of the document *node* (a sidecar, an access file), oldest first."""
        return [
            each
            for each in self._files.values()
            if isinstance(each, SidecarEditHandle) and each.node == node
        ]

    def take_all(self) -> list[FileHandle]:
        """Every open file (the table is emptied, directories too): the mount stops."""
        files = list(self._files.values())
        self._files.clear()
        self._dirs.clear()
        return files

    def statistics(self) -> dict[str, int]:
        return {"open_files": len(self._files), "open_directories": len(self._dirs)}

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh
