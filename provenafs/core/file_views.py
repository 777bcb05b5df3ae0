"""Where a dataset file's bytes are: a base object, a draft's staged blob, or an open orphan.

``FileViews.view(record, node)`` answers for one file node: the draft decides first (a staged
file, a carried object, a whiteout), then the base version's listing. Files unlinked or
replaced while open keep their bytes under a private name (``detach``): the orphans table maps
that name to the blob or object an open handle still reads, until the kernel forgets it.

No I/O beyond the catalog's cached listings; trio thread only.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Awaitable, Callable

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.inodes import ORPHAN_MARK, InodeTable, NodeId
from provenafs.core.types import parent_path, seconds_to_ns
from provenafs.errors import FsError
from provenafs.storage.blobstore import ObjectInfo
from provenafs.write.draft_entries import CarriedEntry, StagedEntry
from provenafs.write.drafts import Draft, StagedBlob

__all__ = ["FileView", "FileViews"]


@dataclasses.dataclass(frozen=True)
class FileView:
    """Where a dataset file's bytes are: a base object (``info``) or local (``staged``/``blob``)."""

    info: ObjectInfo | None
    staged: StagedEntry | None
    draft: Draft | None
    blob: StagedBlob | None = None  # an unlinked file still open
    mtime_ns: int | None = None  # a carried file's own mtime (exact, unlike ``info``'s float)
    carried: CarriedEntry | None = None  # a carried file's entry (its mode and times)

    def size_and_mtime(self) -> tuple[int, int]:
        if self.info is not None and self.mtime_ns is not None:
            return self.info.size, self.mtime_ns
        if self.blob is not None:
            return self.blob.size, self.blob.mtime_ns
        if self.staged is not None and self.draft is not None:
            return self.draft.staged_size(self.staged), self.draft.staged_mtime(self.staged)
        assert self.info is not None
        return self.info.size, seconds_to_ns(self.info.last_modified)


class FileViews:
    """Finds a file's bytes; keeps what open files of removed names still read."""

    def __init__(
        self,
        catalog: Catalog,
        inodes: InodeTable,
        draft_of: Callable[[str], Draft | None],
        require_data_read: Callable[[DatasetRecord], Awaitable[None]],
    ) -> None:
        self._catalog = catalog
        self._inodes = inodes
        self._draft_of = draft_of
        self._require_data_read = require_data_read
        self._orphans: dict[NodeId, StagedBlob | ObjectInfo] = {}

    async def view(self, record: DatasetRecord, node: NodeId) -> FileView:
        """Where the bytes of the dataset file *node* are: the draft decides, then the base."""
        await self._require_data_read(record)
        if node.path.startswith(ORPHAN_MARK):
            orphan = self._orphans.get(node)
            if isinstance(orphan, StagedBlob):
                return FileView(None, None, orphan.draft, orphan)
            if orphan is None:
                raise FsError(errno.ENOENT, "the file was removed")
            return FileView(orphan, None, None)
        draft = self._draft_of(node.handle)
        entry = draft.resolve(node.path) if draft is not None else None
        if isinstance(entry, StagedEntry):
            return FileView(None, entry, draft)
        if isinstance(entry, CarriedEntry):
            info = ObjectInfo(entry.base_key, entry.size, entry.etag, entry.mtime_ns / 1e9)
            return FileView(info, None, draft, mtime_ns=entry.mtime_ns, carried=entry)
        if entry is not None:
            raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
        parent, name = parent_path(node.path)
        base_info = await self._catalog.entry(record, parent, name)
        if not isinstance(base_info, ObjectInfo):
            raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
        return FileView(base_info, None, draft)

    def detach(self, node: NodeId, keep: StagedBlob | ObjectInfo | None) -> None:
        """Give *node*'s number a private name; open files of it still find *keep*."""
        orphan = self._inodes.detach(node)
        if orphan is not None and keep is not None:
            self._orphans[orphan] = keep

    def keep(self, orphan: NodeId, keep: StagedBlob | ObjectInfo) -> None:
        """What the orphan *orphan* (made by a rename over an open file) still reads."""
        self._orphans[orphan] = keep

    def forget(self, node: NodeId) -> None:
        """The kernel forgot *node*: an orphan's bytes are no longer needed."""
        if node in self._orphans and self._inodes.find(node) is None:
            del self._orphans[node]
