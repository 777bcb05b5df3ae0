"""The mode, times and size of a node inside a dataset: the draft's, else what S3 says.

``PosixAttributes`` answers for a dataset's top, its folders, files and links (docs/SEMANTICS.md,
"Links, modes and times"): a draft entry's kept mode and times first; where the draft says
nothing, the published object's metadata (``StoredAttributes``: manifest or HEAD); where
that is silent, today's defaults (mode by writability, the listing's time, the record's for
folders). ``shown_mode`` is the one rule that turns a kept mode into ``st_mode``: write bits
only where writes can succeed, kept permission bits otherwise as they are.

It decides nothing about permissions beyond that rule (``RefusalPolicy`` does) and changes
nothing. Trio thread only.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.file_views import FileView
from provenafs.core.inodes import ORPHAN_MARK, NodeId
from provenafs.core.stored_attributes import StoredAttributes
from provenafs.core.types import (
    DIR_MODE,
    DIR_MODE_WRITABLE,
    FILE_MODE,
    FILE_MODE_WRITABLE,
    LINK_MODE,
    parent_path,
    seconds_to_ns,
)
from provenafs.errors import FsError
from provenafs.storage.blobstore import ObjectInfo
from provenafs.storage.posix_metadata import NO_METADATA, PosixMetadata
from provenafs.write.draft_entries import DirectoryEntry, LinkEntry
from provenafs.write.drafts import Draft

__all__ = ["NodePosix", "PosixAttributes", "shown_mode"]

_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def shown_mode(kind: int, permissions: int | None, *, writable: bool) -> int:
    """``st_mode`` of a dataset node: a link is ``lrwxrwxrwx``; a kept mode shows as kept
    (without write bits where no write can succeed); no kept mode shows the defaults."""
    if kind == stat.S_IFLNK:
        return stat.S_IFLNK | LINK_MODE
    if permissions is None:
        if kind == stat.S_IFDIR:
            return kind | (DIR_MODE_WRITABLE if writable else DIR_MODE)
        return kind | (FILE_MODE_WRITABLE if writable else FILE_MODE)
    return kind | (permissions if writable else permissions & ~_WRITE_BITS)


@dataclasses.dataclass(frozen=True)
class NodePosix:
    """A dataset node's kept attributes: type, permission bits (None: the defaults), size,
    times, and for a folder its link count where the draft knows it exactly (else 1)."""

    kind: int
    permissions: int | None
    size: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    nlink: int = 1


def _times(mtime: int, atime: int | None, ctime: int | None) -> tuple[int, int, int]:
    return mtime, mtime if atime is None else atime, mtime if ctime is None else ctime


class PosixAttributes:
    """Attributes of dataset nodes from drafts, published metadata and defaults."""

    def __init__(
        self,
        catalog: Catalog,
        stored: StoredAttributes,
        draft_of: Callable[[str], Draft | None],
    ) -> None:
        self._catalog = catalog
        self._stored = stored
        self._draft_of = draft_of

    @property
    def stored(self) -> StoredAttributes:
        return self._stored

    async def of_directory(self, record: DatasetRecord, path: str) -> NodePosix:
        """A folder (or the dataset's top, ``""``) that exists."""
        draft = self._draft_of(record.handle)
        entry = draft.resolve(path) if draft is not None else None
        record_time = seconds_to_ns(record.updated_timestamp)
        if isinstance(entry, DirectoryEntry):
            permissions = entry.mode
            if permissions is None and not entry.opaque:
                permissions = (await self._stored.of_directory(record, path)).permissions
            mtime, atime, ctime = _times(entry.mtime_ns, entry.atime_ns, entry.ctime_ns)
            nlink = 1
            if entry.opaque and draft is not None:  # the draft knows every entry below it
                below = draft.children(path).values()
                nlink = 2 + sum(isinstance(child, DirectoryEntry) for child in below)
            return NodePosix(stat.S_IFDIR, permissions, 0, mtime, atime, ctime, nlink)
        stored = await self._stored.of_directory(record, path)
        mtime = stored.mtime_ns if stored.mtime_ns is not None else record_time
        return NodePosix(stat.S_IFDIR, stored.permissions, 0, mtime, mtime, mtime)

    async def of_file(self, record: DatasetRecord, node: NodeId, view: FileView) -> NodePosix:
        """A regular file, through the view of where its bytes are."""
        size, mtime = view.size_and_mtime()
        if view.blob is not None:  # open, and unlinked
            blob = view.blob
            return NodePosix(
                stat.S_IFREG, blob.mode, size, *_times(mtime, blob.atime_ns, blob.ctime_ns)
            )
        if view.staged is not None and view.draft is not None:
            live = view.draft.staged_entry(view.staged)
            times = _times(mtime, live.atime_ns, live.ctime_ns)
            return NodePosix(stat.S_IFREG, live.mode, size, *times)
        assert view.info is not None
        carried = view.carried
        if carried is not None:
            permissions = carried.mode
            if permissions is None:
                permissions = (await self._base_metadata(record, node, view)).permissions
            times = _times(mtime, carried.atime_ns, carried.ctime_ns)
            return NodePosix(stat.S_IFREG, permissions, size, *times)
        stored = await self._base_metadata(record, node, view)
        if stored.mtime_ns is None:
            return NodePosix(stat.S_IFREG, stored.permissions, size, mtime, mtime, mtime)
        ctime = max(mtime, stored.mtime_ns)  # the object was written (published) then
        return NodePosix(
            stat.S_IFREG, stored.permissions, size, stored.mtime_ns, stored.mtime_ns, ctime
        )

    async def of_link(self, record: DatasetRecord, node: NodeId) -> NodePosix:
        """A symbolic link: ``lrwxrwxrwx``, its size the length of its target."""
        draft = self._draft_of(record.handle)
        entry = draft.resolve(node.path) if draft is not None else None
        if isinstance(entry, LinkEntry):
            size = len(os.fsencode(entry.target))
            times = _times(entry.mtime_ns, entry.atime_ns, entry.ctime_ns)
            return NodePosix(stat.S_IFLNK, None, size, *times)
        info = await self._base_link(record, node)
        stored = await self._stored.of_object(record, node.path, info)
        listed = seconds_to_ns(info.last_modified)
        mtime = stored.mtime_ns if stored.mtime_ns is not None else listed
        return NodePosix(stat.S_IFLNK, None, info.size, mtime, mtime, max(mtime, listed))

    async def link_target(self, record: DatasetRecord, node: NodeId) -> str:
        draft = self._draft_of(record.handle)
        entry = draft.resolve(node.path) if draft is not None else None
        if isinstance(entry, LinkEntry):
            return entry.target
        return await self._stored.link_target(
            record, node.path, await self._base_link(record, node)
        )

    async def _base_link(self, record: DatasetRecord, node: NodeId) -> ObjectInfo:
        parent, name = parent_path(node.path)
        info = (await self._catalog.listing(record, parent)).files.get(name)
        if info is None:
            raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
        return info

    async def _base_metadata(
        self, record: DatasetRecord, node: NodeId, view: FileView
    ) -> PosixMetadata:
        """What the base object behind *view* says (nothing for an orphan's)."""
        assert view.info is not None
        if node.path.startswith(ORPHAN_MARK):
            return NO_METADATA
        key_path = view.info.key[len(record.s3.path) :]
        if not view.info.key.startswith(record.s3.path):
            return NO_METADATA
        return await self._stored.of_object(record, key_path, view.info)
