"""The attributes of every node: type, permission bits, size, times and kernel cache lifetimes.

Permission bits tell the truth: a write bit shows exactly where ``RefusalPolicy`` lets a
change through (for the mount's owner: nobody else ever writes), a dataset whose data the
caller may not read is ``--x``, and group and other bits show only what the mount shares
with other users (``RefusalPolicy.shared_mode``; ``.provenafs/status.json`` is ``r--------``).
Inside a dataset the kernel may cache attributes long only where nothing can change them (no
write access, no draft); editable sidecars are never cached (an edit changes their size).

A prefix dir's entries (dataset dir, sidecar, ``@latest``) are answered from a fresh record,
else from the fresh dataset list with the caller's roles estimated (``Catalog.estimated_record``:
no call per dataset for ``ls -l`` of a prefix), else the record is fetched. Listing a
handle-prefix directory fetches nothing per entry (``fetch=False``): what neither the record
nor the list says is estimated, valid for no time at all, so the kernel asks ``getattr``
before trusting it. ``exact`` (``access``) always answers from a fetched record.

Inside a dataset, kept modes, times and links are ``PosixAttributes``'s (``shown_mode`` turns a
kept mode into the bits shown). A directory's link count is 1 (unknown) unless the draft made
it and so knows every subdirectory. The dataset directory itself shows its record's time
unless the draft changed it: a ``stat`` of it costs no S3 request.
"""

from __future__ import annotations

import dataclasses
import errno
import stat
from collections.abc import Callable

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import FOLDER, Catalog, DirectoryListing
from provenafs.core.dataset_views import DatasetViews
from provenafs.core.file_views import FileViews
from provenafs.core.inodes import ORPHAN_MARK, ListingBlock, NodeId, NodeKind
from provenafs.core.listed_entries import ListedEntries
from provenafs.core.namespace import Namespace
from provenafs.core.posix_attributes import NodePosix, PosixAttributes, shown_mode
from provenafs.core.refusals import RefusalPolicy
from provenafs.core.types import (
    DIR_MODE,
    DIR_MODE_WRITABLE,
    FILE_MODE,
    FILE_MODE_WRITABLE,
    LINK_MODE,
    LONG_TIMEOUT,
    NO_DATA_DIR_MODE,
    SHORT_TIMEOUT,
    Attributes,
    parent_path,
    seconds_to_ns,
)
from provenafs.errors import FsError
from provenafs.mount_options import MountOptions
from provenafs.write.draft_entries import METADATA_FILE, DirectoryEntry
from provenafs.write.drafts import Draft

__all__ = ["AttributeMaker"]

_PREFIX_ENTRY_KINDS = (NodeKind.DATASET_DIR, NodeKind.SIDECAR, NodeKind.LATEST_LINK)
_OWNER_READ_ONLY = 0o400  # .provenafs/status.json: the mount's own state, never shared
_FIXED_DIRECTORIES = (
    NodeKind.ROOT,
    NodeKind.PREFIX_DIR,
    NodeKind.BY_NAME_DIR,
    NodeKind.CONTROL_DIR,
    NodeKind.FACET_DIR,
)

_LINEAGE_KINDS = (NodeKind.LINEAGE_DIR, NodeKind.LINEAGE_LINK, NodeKind.LINEAGE_FILE)


class AttributeMaker:
    """Attributes of nodes (with inode 0: the caller fills in the number it knows)."""

    def __init__(
        self,
        *,
        options: MountOptions,
        catalog: Catalog,
        namespace: Namespace,
        policy: RefusalPolicy,
        views: FileViews,
        posix: PosixAttributes,
        draft_of: Callable[[str], Draft | None],
        sidecar_size: Callable[[DatasetRecord], int],
        status_size: Callable[[], int],
        clock: Callable[[], float],
        dataset_views: DatasetViews | None = None,
    ) -> None:
        self._options = options
        self._catalog = catalog
        self._namespace = namespace
        self._policy = policy
        self._views = views
        self._posix = posix
        self._draft_of = draft_of
        self._sidecar_size = sidecar_size
        self._status_size = status_size
        self._clock = clock
        self._dataset_views = dataset_views
        self.started_ns = seconds_to_ns(clock())

    async def of(self, node: NodeId, *, fetch: bool = True, exact: bool = False) -> Attributes:
        """Attributes of *node* with inode 0 (the caller fills it in).

        With ``fetch=False`` (listing a prefix dir) nothing is fetched: unknown details are
        estimated and the timeouts are zero, so the kernel asks ``getattr`` before trusting them.
        ``exact`` answers a prefix dir's entry from a fetched record, never from the list.
        """
        kind = node.kind
        if kind in _FIXED_DIRECTORIES:
            return self.make(stat.S_IFDIR | DIR_MODE, 0, self.started_ns, SHORT_TIMEOUT)
        if kind is NodeKind.CONTROL_FILE:
            # The size of the snapshot the last open served (so stat after a read agrees with
            # it); reads are direct_io, so a newer, longer snapshot is still read whole.
            now = seconds_to_ns(self._clock())
            return self.make(stat.S_IFREG | _OWNER_READ_ONLY, self._status_size(), now, 0.0)
        if kind in (NodeKind.BY_NAME_LINK, NodeKind.FACET_LINK):  # the target is in the node
            target = await self._namespace.link_target(node)
            return self.make(stat.S_IFLNK | LINK_MODE, len(target), self.started_ns, SHORT_TIMEOUT)
        if kind in _LINEAGE_KINDS:
            return await self._namespace.lineage.attributes(node, self.make, self.started_ns)
        if kind in _PREFIX_ENTRY_KINDS:
            return await self._prefix_entry(node, fetch=fetch, exact=exact)

        record = await self._catalog.record(node.handle)
        mtime = seconds_to_ns(record.updated_timestamp)
        if kind is NodeKind.DATASET_VIEW and self._dataset_views is not None:
            views = self._dataset_views
            size = await views.size(node, record)
            timeout = 0.0 if views.editable(node, record) else SHORT_TIMEOUT
            mode = stat.S_IFREG | views.mode(node, record)
            return self.make(mode, size, mtime, timeout, entry_timeout=SHORT_TIMEOUT)
        timeout = self._content_timeout(record)
        if kind is NodeKind.DATASET_SUBDIR:
            await self._policy.require_data_read(record)
            draft = self._draft_of(node.handle)
            entry = draft.resolve(node.path) if draft is not None else None
            replaced = entry is not None and not isinstance(entry, DirectoryEntry)
            if replaced or node.path.startswith(ORPHAN_MARK):
                raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
            if entry is None:
                parent, name = parent_path(node.path)
                if await self._catalog.entry(record, parent, name) != FOLDER:
                    raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
            return self._made(await self._posix.of_directory(record, node.path), record, timeout)
        if kind is NodeKind.DATASET_FILE:
            view = await self._views.view(record, node)
            posix = await self._posix.of_file(record, node, view)
            if node.path == METADATA_FILE:
                posix = dataclasses.replace(posix, permissions=FILE_MODE)
            attributes = self._made(posix, record, timeout)
            if view.blob is not None and view.blob.path is None:
                return dataclasses.replace(attributes, nlink=0)  # unlinked, still open
            return attributes
        if kind is NodeKind.DATASET_LINK:
            return self._made(await self._posix.of_link(record, node), record, timeout)
        raise AssertionError(f"unhandled node kind {kind}")

    async def _prefix_entry(self, node: NodeId, *, fetch: bool, exact: bool) -> Attributes:
        """Attributes of a dataset dir, sidecar or ``@latest`` link (see ``of``).

        From the list (no call): modes from the estimated record (roles unknown means no write
        bits and data readable), a sidecar's size from rendering that record; timeouts short,
        and exact once the record is fetched.
        """
        kind = node.kind
        record = self._catalog.fresh_record(node.handle)
        estimated = False
        if record is None and not exact:
            record = self._catalog.estimated_record(node.handle)
            estimated = record is not None
        if record is None:
            if not fetch:
                return self._estimated(node)
            record = await self._catalog.record(node.handle)
        mtime = seconds_to_ns(record.updated_timestamp)
        if kind is NodeKind.DATASET_DIR:
            readable = self._catalog.known_data_readable(record)
            if readable is None:
                fetched = fetch and not estimated
                readable = await self._catalog.data_readable(record) if fetched else True
            dir_mode, _ = self._content_modes(record)
            mode = stat.S_IFDIR | (dir_mode if readable else NO_DATA_DIR_MODE)
            draft = self._draft_of(node.handle)
            if readable and draft is not None and isinstance(draft.entries.get(""), DirectoryEntry):
                top = await self._posix.of_directory(record, "")
                return self._made(top, record, SHORT_TIMEOUT, entry_timeout=LONG_TIMEOUT)
            return self.make(mode, 0, mtime, SHORT_TIMEOUT, entry_timeout=LONG_TIMEOUT)
        if kind is NodeKind.SIDECAR:
            # An editable sidecar's attributes are never cached by the kernel: an edit through
            # this mount changes its size at once. (Reads are direct_io: an estimated size
            # never cuts a read short.)
            size = self._sidecar_size(record)
            writable = self._policy.sidecar_writable(record)
            timeout = 0.0 if writable and not estimated else SHORT_TIMEOUT
            mode = stat.S_IFREG | self.sidecar_mode(record)
            return self.make(mode, size, mtime, timeout, entry_timeout=SHORT_TIMEOUT)
        target = self._namespace.listed_link_target(node)
        if target is None:
            if not fetch:
                return self.make(stat.S_IFLNK | LINK_MODE, 0, mtime, 0.0)
            target = await self._namespace.link_target(node)
        return self.make(stat.S_IFLNK | LINK_MODE, len(target), mtime, SHORT_TIMEOUT)

    def listed(
        self, record: DatasetRecord, node: NodeId, listing: DirectoryListing, block: ListingBlock
    ) -> ListedEntries:
        """The entries of a dataset directory without a draft, from its listing (what ``of``
        answers for each of them, worked out once for them all)."""
        dir_mode, file_mode = self._content_modes(record)
        shared = self._policy.shared_mode
        special = {METADATA_FILE: shared(stat.S_IFREG | FILE_MODE)} if not node.path else None
        return ListedEntries(
            listing,
            block,
            dir_mode=shared(stat.S_IFDIR | dir_mode),
            file_mode=shared(stat.S_IFREG | file_mode),
            timeout=self._content_timeout(record),
            uid=self._options.uid,
            gid=self._options.gid,
            dir_mtime_ns=seconds_to_ns(record.updated_timestamp),
            special_modes=special,
        )

    def _made(
        self,
        posix: NodePosix,
        record: DatasetRecord,
        attr_timeout: float,
        *,
        entry_timeout: float | None = None,
    ) -> Attributes:
        """The attributes of a dataset node from its kept mode, size and times."""
        writable = self._writable(record)
        return dataclasses.replace(
            self.make(
                shown_mode(posix.kind, posix.permissions, writable=writable),
                posix.size,
                posix.mtime_ns,
                attr_timeout,
                entry_timeout=entry_timeout,
            ),
            atime_ns=posix.atime_ns,
            ctime_ns=posix.ctime_ns,
            nlink=posix.nlink,
        )

    def sidecar_mode(self, record: DatasetRecord) -> int:
        """``rw-r--r--`` where an edit can succeed, else ``r--r--r--``."""
        return FILE_MODE | (stat.S_IWUSR if self._policy.sidecar_writable(record) else 0)

    def _content_modes(self, record: DatasetRecord) -> tuple[int, int]:
        """Permission bits of a dataset's directories and files: write bits where writes work."""
        if self._writable(record):
            return DIR_MODE_WRITABLE, FILE_MODE_WRITABLE
        return DIR_MODE, FILE_MODE

    def _content_timeout(self, record: DatasetRecord) -> float:
        """Kernel cache lifetime inside a dataset: long only where nothing can change it."""
        if self._writable(record) or self._draft_of(record.handle) is not None:
            return SHORT_TIMEOUT
        return LONG_TIMEOUT

    def _writable(self, record: DatasetRecord) -> bool:
        """Whether a change inside *record*'s dataset can succeed (so write bits show)."""
        return self._policy.write_refusal(record, "") is None

    def _estimated(self, node: NodeId) -> Attributes:
        """Attributes of a prefix dir's entry from what is cached, valid for no time at all."""
        record = self._catalog.cached_record(node.handle)
        mtime = seconds_to_ns(record.updated_timestamp) if record else self.started_ns
        if node.kind is NodeKind.DATASET_DIR:
            readable = self._catalog.known_data_readable(record) if record else None
            dir_mode = self._content_modes(record)[0] if record else DIR_MODE
            mode = NO_DATA_DIR_MODE if readable is False else dir_mode
            return self.make(stat.S_IFDIR | mode, 0, mtime, 0.0)
        if node.kind is NodeKind.SIDECAR:
            size = self._sidecar_size(record) if record else 0
            mode = self.sidecar_mode(record) if record else FILE_MODE
            return self.make(stat.S_IFREG | mode, size, mtime, 0.0)
        return self.make(stat.S_IFLNK | LINK_MODE, 0, mtime, 0.0)

    def make(
        self,
        mode: int,
        size: int,
        mtime_ns: int,
        attr_timeout: float,
        *,
        entry_timeout: float | None = None,
    ) -> Attributes:
        return Attributes(
            inode=0,
            mode=self._policy.shared_mode(mode),
            size=size,
            nlink=1,  # a directory's: unknown (what the draft knows exactly, ``_made`` says)
            uid=self._options.uid,
            gid=self._options.gid,
            atime_ns=mtime_ns,
            mtime_ns=mtime_ns,
            ctime_ns=mtime_ns,
            entry_timeout=attr_timeout if entry_timeout is None else entry_timeout,
            attr_timeout=attr_timeout,
        )
