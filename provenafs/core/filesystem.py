"""POSIX semantics of the mount in plain Python types: the façade that ``fuse_ops`` adapts.

``Filesystem`` has one method per FUSE operation and delegates: names to ``Namespace`` over the
``Catalog``'s caches (the tree of docs/SEMANTICS.md), numbers to ``InodeTable``, attributes to
``AttributeMaker``, refusals to ``RefusalPolicy``, open files to the classes of ``handles``
(one per kind of open file, each with its own read/write/flush/fsync/release), every change
of a dataset to ``DraftChanges``, sidecar edits to ``SidecarEdits``, kernel cache
invalidation to ``KernelCache`` and ``.provenafs/status.json`` to ``StatusFile``. What stays
here is the wiring, lookups, directory listings, opening, xattrs and statfs.

Callers: every entry point that a process calls carries its ``Caller``; a caller who is not
the mount's owner is checked here, first, through ``RefusalPolicy`` (``require_owner`` for
every change and presigned URL, ``require_reachable`` and ``require_shared`` for reads).

Rules: names are ``str``, inodes ``int`` (1 = root). A method fails with ``FsError`` (a
deliberate errno) or lets the IO layer's exceptions (API, object store, local disk) rise: the
adapter maps every one through ``errors.to_errno``, once; anything else is a bug it turns into
EIO. No pyfuse3, no blocking calls; everything runs on the trio thread, so tables need no locks.

Until a dataset's record is fetched, a prefix dir's entries are answered from the dataset list
(``AttributeMaker``, ``Catalog.estimated_record``: no call per dataset for ``ls -l``); the
first access inside a dataset warms it (record and read credentials side by side, then its top
listing), a mere ``stat`` of it never does. ``access`` answers from the fetched record.

Lookup counts: ``lookup`` and every entry that ``readdir`` returns count as one kernel
reference (pyfuse3 answers readdir with readdirplus). An adapter that cannot send an entry
``readdir`` returned should ``forget(entry.attributes.inode, 1)``.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import trio

from provenafs.api.models import DatasetRecord
from provenafs.cache.block_cache import BlockCache
from provenafs.cache.spill import SpillArea
from provenafs.core.attributes import AttributeMaker
from provenafs.core.catalog import Catalog
from provenafs.core.changes import DraftChanges
from provenafs.core.dataset_actions import DatasetActions
from provenafs.core.dataset_views import DatasetViews
from provenafs.core.discovery import Discovery
from provenafs.core.file_views import FileViews
from provenafs.core.handles import DirHandle, HandleTable, ObjectHandle, SnapshotHandle
from provenafs.core.inodes import ROOT_INODE, InodeTable, NodeId, NodeKind, parent_of
from provenafs.core.kernel_cache import KernelCache
from provenafs.core.lineage_nodes import Lineage
from provenafs.core.namespace import Namespace
from provenafs.core.observation import AccessObserver, FileAccess
from provenafs.core.posix_attributes import PosixAttributes
from provenafs.core.refusals import READ_BITS, SEARCH_BITS, RefusalPolicy
from provenafs.core.services import RegistryServices
from provenafs.core.sidecar_edits import SidecarEdits
from provenafs.core.sidecar_render import SidecarRenderer, sidecar_size
from provenafs.core.status import StatusFile, statistics_of
from provenafs.core.stored_attributes import StoredAttributes
from provenafs.core.types import (
    COPY_PART_SIZE,
    DATASET_DIR_KINDS,
    DATASET_KINDS,
    DOT_NAMES,
    NAME_MAX,
    READDIR_BATCH,
    Attributes,
    Caller,
    DataStoreApi,
    DirEntry,
    FileReader,
    FsStats,
    InPlacePublisher,
    KernelCacheNotifier,
    OpenFile,
    ReaderFactory,
    is_writing,
    parent_path,
)
from provenafs.core.walk_prefetch import WalkPrefetcher
from provenafs.core.xattrs import PRESIGNED_URL, ExtendedAttributes
from provenafs.errors import FsError
from provenafs.mount_options import MountOptions
from provenafs.read.reader import ObjectReader, PrefetchBudget
from provenafs.read.sibling_prefetch import SiblingPrefetcher
from provenafs.storage.blobstore import BlobStore, ObjectInfo
from provenafs.storage.credentials import CredentialBroker
from provenafs.write.draft_entries import StagedEntry, join
from provenafs.write.drafts import Draft, DraftStore, default_root
from provenafs.write.metadata_edit import MetadataApi, SidecarEditor

log = logging.getLogger(__name__)

__all__ = ["Filesystem"]


class Filesystem:
    """The mount's filesystem core (see the module docstring for its rules)."""

    _siblings: SiblingPrefetcher | None = None  # made in start(), in the mount's nursery
    _walks: WalkPrefetcher | None = None  # likewise

    def __init__(
        self,
        *,
        client: DataStoreApi,
        broker: CredentialBroker,
        store: BlobStore,
        cache: BlockCache,
        budget: PrefetchBudget,
        options: MountOptions,
        clock: Callable[[], float] = time.time,
        reader_factory: ReaderFactory | None = None,
        drafts: DraftStore | None = None,
        spill: SpillArea | None = None,
        services: RegistryServices | None = None,
        username: str | None = None,
    ) -> None:
        self._client = client
        self._broker = broker
        self._store = store
        self._cache = cache
        self._budget = budget
        self._options = options
        self._clock = clock
        self._reader_factory = reader_factory or self._object_reader
        self._spill = spill
        self._draft_store = drafts
        self._nursery: trio.Nursery | None = None
        self._notifier: KernelCacheNotifier | None = None
        self._observer: AccessObserver | None = None
        self.catalog = Catalog(
            client,
            broker,
            store,
            clock=clock,
            metadata_ttl=options.metadata_ttl,
            listing_ttl=options.listing_ttl,
            listing_cache_bytes=options.listing_cache_size,
            username=username,
            prepare_listed=self._prepare_sidecar_sizes,
        )
        self._size_limiter = trio.CapacityLimiter(1)  # sidecar sizes of listed pages
        self._sizes_wanted: collections.Counter[str] = collections.Counter()  # prefixes listed
        self._stored = StoredAttributes(self.catalog, store)
        self._posix = PosixAttributes(self.catalog, self._stored, self._draft_of)
        # Facets, search/, reviews/ (core.discovery); with the services also the generated
        # dataset files (core.dataset_views) and the control socket's dataset actions.
        self.discovery = Discovery(self.catalog, services, username=username, clock=clock)
        self._namespace = Namespace(self.catalog, self._draft_of, self.discovery, self._stored)
        self._inodes = InodeTable()
        self._handles = HandleTable()
        self._renderer = SidecarRenderer()
        self._kernel_cache = KernelCache(self._inodes)
        self._status = StatusFile(self._status_sections)
        # Metadata edits through sidecars (a client without update-metadata: none).
        self.sidecar_editor: SidecarEditor | None = None
        if isinstance(client, MetadataApi):
            self.sidecar_editor = SidecarEditor(
                client,
                self.catalog,
                default_reason=options.metadata_reason,
                on_changed=self._metadata_changed,
                validate=None if services is None else services.validate_metadata,
            )
        self._policy = RefusalPolicy(options, self.catalog, broker, self.sidecar_editor)
        self._views = FileViews(
            self.catalog, self._inodes, self._draft_of, self._policy.require_data_read
        )
        self._xattrs = ExtendedAttributes(client, self.catalog, self._views, self.sidecar_editor)
        self._sidecar_edits = SidecarEdits(
            catalog=self.catalog,
            policy=self._policy,
            handles=self._handles,
            renderer=self._renderer,
            kernel_cache=self._kernel_cache,
            status=self._status,
        )
        self._dataset_views: DatasetViews | None = None
        self.dataset_actions: DatasetActions | None = None
        if services is not None:
            self._dataset_views = DatasetViews(
                catalog=self.catalog,
                services=services,
                handles=self._handles,
                read_only=options.read_only,
                on_changed=self._dataset_changed,
                clock=clock,
                ttl=options.metadata_ttl,
            )
            self.dataset_actions = DatasetActions(
                catalog=self.catalog,
                services=services,
                discovery=self.discovery,
                views=self._dataset_views,
                kernel_cache=self._kernel_cache,
                status=self._status,
                forget_credentials=broker.invalidate,
            )
        self._attributes = AttributeMaker(
            options=options,
            catalog=self.catalog,
            namespace=self._namespace,
            policy=self._policy,
            views=self._views,
            posix=self._posix,
            draft_of=self._draft_of,
            sidecar_size=self._sidecar_edits.size,
            status_size=self._status.size,
            clock=clock,
            dataset_views=self._dataset_views,
        )
        self.changes = DraftChanges(
            catalog=self.catalog,
            namespace=self._namespace,
            inodes=self._inodes,
            views=self._views,
            policy=self._policy,
            attributes=self._attributes,
            posix=self._posix,
            handles=self._handles,
            draft_store=lambda: self.draft_store,
            reader_factory=self._reader_factory,
            broker=broker,
            store=store,
            kernel_cache=self._kernel_cache,
            status=self._status,
        )

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def draft_store(self) -> DraftStore:
        """Every draft of this mount (made on first use under ``-o state_dir``)."""
        if self._draft_store is None:
            root = default_root(self._options.source, self._options.state_dir)
            self._draft_store = DraftStore(root, clock=self._clock)
        return self._draft_store

    @property
    def lineage(self) -> Lineage:
        """The lineage nodes (the daemon gives them their API and depth)."""
        return self._namespace.lineage

    def _draft_of(self, handle: str) -> Draft | None:
        return self.draft_store.get(handle)

    def set_in_place_publisher(self, publisher: InPlacePublisher) -> None:
        """What pushes changes into datasets under ``-o writes=in-place`` (set before use)."""
        self.changes.in_place_publisher = publisher

    def set_access_observer(self, observer: AccessObserver) -> None:
        """Who is told about opens, listings and changes of datasets (runs, the access log)."""
        self._observer = observer

    def _observing(self) -> AccessObserver | None:
        observer = self._observer
        return observer if observer is not None and observer.active else None

    async def _changing(self, inode: int, name: str | None, ctx: Caller) -> None:
        """Tell the observer, before it happens, that *ctx* changes a dataset's content."""
        observer = self._observing()
        if observer is None:
            return
        try:
            node = self._inodes.node(inode)
        except FsError:
            return  # the operation reports it
        if node.kind in DATASET_KINDS:
            path = node.path if name is None else join(node.path, name)
            await observer.changing(ctx, node.handle, path)

    async def _opened_draft_file(self, fh: int, node: NodeId, ctx: Caller, writing: bool) -> None:
        """Tell the observer a file of a draft was opened; its reads count into its counter."""
        observer = self._observing()
        if observer is None:
            return
        handle = self._handles.file(fh)
        blob = handle.staged_blob()
        size = 0 if blob is None else blob.size
        access = FileAccess(ctx, node.handle, node.path, None, size, writing)
        handle.observed = await observer.opened(access)

    def set_kernel_notifier(self, notifier: KernelCacheNotifier) -> None:
        """Where kernel cache invalidations go (set before ``start``)."""
        self._notifier = notifier

    async def start(self, nursery: trio.Nursery) -> None:
        """Remember the mount's nursery: background work of open files runs under it."""
        self._nursery = nursery
        self._siblings = SiblingPrefetcher(
            self._store, self._broker, self._cache, self._budget, nursery=nursery
        )
        self._walks = WalkPrefetcher(self.catalog, nursery)
        if self._notifier is not None:
            self._kernel_cache.start(nursery, self._notifier)

    async def close(self) -> None:
        """Close every open file's reader, make staged files durable, and drop every handle."""
        for handle in self._handles.take_all():
            await handle.close()
        if self._draft_store is not None:
            self._draft_store.close()

    async def _metadata_changed(self, handle: str) -> None:
        await self._sidecar_edits.metadata_changed(handle)

    async def _dataset_changed(self, handle: str) -> None:
        """Access settings of *handle* changed through its ``.access.json``."""
        if self.dataset_actions is not None:
            await self.dataset_actions.changed(handle)

    # --- publishing hooks (provenafs.write.publish) --------------------------------------

    async def begin_publish(self, handle: str) -> None:
        """Changes of *handle* fail with ``EBUSY`` (in place: wait) until ``end_publish``."""
        await self.changes.begin_publish(handle)

    def end_publish(self, handle: str) -> None:
        self.changes.end_publish(handle)

    async def publish_done(self, old_handle: str, new_handle: str) -> None:
        """After a verified publish: drop the draft view and what was cached of both."""
        await self.changes.publish_done(old_handle, new_handle)

    # --- what runs need (provenafs.process.runs) -----------------------------------------

    async def write_run_file(self, handle: str, path: str, data: bytes) -> None:
        """Write the daemon's own file (a run log) into dataset *handle*'s draft."""
        await self.changes.write_file(handle, path, data)

    async def file_digest(self, handle: str, path: str) -> tuple[int, str] | None:
        """Size and sha256 of the published object the file *path* of *handle* shows now (a
        run's file written in place); None when the path shows no published object."""
        record = await self.catalog.record(handle)
        try:
            view = await self._views.view(record, NodeId(NodeKind.DATASET_FILE, handle, path))
        except FsError:
            return None
        if view.info is None:
            return None
        reader = self._reader_factory(record, view.info, None)
        digest = hashlib.sha256()
        try:
            offset, size = 0, view.info.size
            while offset < size:
                data = await reader.read(offset, min(COPY_PART_SIZE, size - offset))
                if not data:
                    raise FsError(errno.EIO, f"{path!r} of {handle} ended early")
                await trio.to_thread.run_sync(digest.update, data)
                offset += len(data)
        finally:
            await reader.close()
        return size, digest.hexdigest()

    def lineage_changed(self) -> None:
        """A run was registered: the lineage nodes answer afresh."""
        self.lineage.invalidate()

    # --- names and attributes ------------------------------------------------------------

    async def lookup(self, parent: int, name: str, ctx: Caller) -> Attributes:
        self._policy.require_reachable(ctx)
        parent_node = self._inodes.node(parent)
        if not parent_node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "lookup in a non-directory")
        if parent_node.kind in DATASET_DIR_KINDS:
            self._warm_if_cold(parent_node.handle)
        handle = self._namespace.dataset_dir_handle(parent_node, name)
        if handle is not None and self.catalog.listed(handle) is None:
            # A dataset reached by path, not from the list: its record must be fetched, and
            # what comes next is likely inside it; fetch its credentials beside the record.
            self._warm_if_cold(handle)
        node = await self._namespace.child(parent_node, name)
        attributes = await self._attributes.of(node)
        return attributes.with_inode(self._inodes.remember(node))

    def _warm_if_cold(self, handle: str) -> None:
        """Something inside a dataset is wanted: warm it unless its record is fresh."""
        if self.catalog.fresh_record(handle) is None:
            self._warm_dataset_soon(handle)

    def _warm_dataset_soon(self, handle: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._warm_dataset, handle)

    async def _warm_dataset(self, handle: str) -> None:
        """What comes inside a dataset (a name looked up, ``ls``, ``open``) needs its record
        and read credentials: fetch them side by side, while the operation that asked waits on
        the same fetches. No listing: a name inside is found by a HEAD and a one-key LIST
        (``Catalog.entry``), and a listing parsed meanwhile would only slow that down.

        Never for a mere ``stat`` of a listed dataset directory (``ls -l`` of a prefix must not
        cost a call per dataset): only at the first access inside it, or when its record has to
        be fetched anyway. Speculative and quiet: a dataset the caller may not read simply fails
        here, and the operation that needs the answer asks again and reports.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._broker.read, handle)
                await self.catalog.record(handle)
        except* Exception as group:  # noqa: BLE001 -- never into the mount's nursery: a guess
            log.debug("warming %s: %s", handle, [type(e).__name__ for e in group.exceptions])

    async def forget(self, inode: int, nlookup: int) -> None:
        try:
            node = self._inodes.node(inode)
        except FsError:
            return
        self._inodes.forget(inode, nlookup)
        self._views.forget(node)

    async def getattr(self, inode: int, ctx: Caller) -> Attributes:
        if inode != ROOT_INODE:
            self._policy.require_reachable(ctx)
        attributes = await self._attributes.of(self._inodes.node(inode))
        return attributes.with_inode(inode)

    async def setattr(
        self,
        inode: int,
        ctx: Caller,
        *,
        size: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        times: bool = False,
        owner: bool = False,
        fh: int | None = None,
    ) -> Attributes:
        """Size, mode and times of dataset nodes go into the draft; owners are accepted.

        Changes are named either by value (``uid=``, ``atime_ns=``, ...) or as flags
        (``times=True``, ``owner=True``); both forms are accepted. Owners are not kept (the
        mount's own show). Where no write can succeed, any change gets the refusal's errno.
        """
        node = self._inodes.node(inode)
        values = (size, mode, uid, gid, atime_ns, mtime_ns)
        if not (times or owner or any(value is not None for value in values)):
            return await self.getattr(inode, ctx)
        self._policy.require_owner(ctx, "changing attributes")
        if size is not None and node.kind is NodeKind.SIDECAR:
            await self._sidecar_edits.truncate(node, size, fh)
            return await self.getattr(inode, ctx)
        if size is not None and node.kind is NodeKind.DATASET_VIEW and self._dataset_views:
            await self._dataset_views.truncate(node, size, fh)
            return await self.getattr(inode, ctx)
        if times and mtime_ns is None:
            mtime_ns = time.time_ns()
        if any(value is not None for value in (size, mode, atime_ns, mtime_ns)):
            await self._changing(inode, None, ctx)
        await self.changes.change_attributes(
            inode, size=size, mode=mode, atime_ns=atime_ns, mtime_ns=mtime_ns, fh=fh
        )
        return await self.getattr(inode, ctx)

    # --- directories ---------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Caller) -> int:
        node = self._inodes.node(inode)
        if not node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "not a directory")
        await self._require_shared(node, ctx, READ_BITS)
        itself = await self._attributes.of(node)
        dots = (itself.with_inode(inode), itself.with_inode(self._parent_inode(node, inode)))
        if node.kind in DATASET_DIR_KINDS:
            self._warm_if_cold(node.handle)
            record = await self.catalog.record(node.handle)
            await self._policy.require_data_read(record)
            observer = self._observing()
            if observer is not None:
                await observer.listed(ctx, node.handle, node.path)
            if self._walks is not None:
                self._walks.opened(record, node.path)
            # Without a draft, and where no object carries attributes of its own, the listing
            # answers for every entry at once (``ListedEntries``).
            if self._draft_of(node.handle) is None and await self._stored.plain(record, node.path):
                listing = await self.catalog.listing(record, node.path)
                names, dirs = listing.sorted_names
                block = self._inodes.listing_block(node, names, dirs)
                listed = self._attributes.listed(record, node, listing, block)
                return self._handles.add_dir(DirHandle(dots, [], listed))
        fetch = node.kind is not NodeKind.PREFIX_DIR
        if fetch:
            children = await self._namespace.children(node)
        else:
            self._sizes_wanted[node.handle] += 1  # the list walk works sidecar sizes out
            try:
                children = await self._namespace.children(node)
            finally:
                self._sizes_wanted[node.handle] -= 1
        entries = []
        for name, child in children:
            entries.append((name, child, await self._attributes.of(child, fetch=fetch)))
        return self._handles.add_dir(DirHandle(dots, entries))

    def _parent_inode(self, node: NodeId, inode: int) -> int:
        """The inode of the directory holding *node* (a directory), for its ``..`` entry."""
        if node.kind is NodeKind.DATASET_DIR:
            parent: NodeId | None = NodeId(NodeKind.PREFIX_DIR, node.handle.partition("/")[0])
        elif node.kind is NodeKind.DATASET_SUBDIR:
            parent = parent_of(node)  # None for an orphan: its own inode stands in
        else:
            return ROOT_INODE
        found = None if parent is None else self._inodes.find(parent)
        return inode if found is None else found

    def directory_entries(self, fh: int, offset: int) -> Iterator[DirEntry]:
        """The entries of an open directory after *offset* (0 = from the start), ``.`` and
        ``..`` first, each entry's lookup counted as it is produced: a caller that cannot send
        one hands it to ``entry_not_sent`` and stops (the kernel takes what fits its buffer)."""
        handle = self._handles.dir(fh)
        position = max(offset, 0)
        for dot in range(position, len(DOT_NAMES)):
            yield DirEntry(DOT_NAMES[dot], handle.dots[dot], dot + 1)
        first = max(position - len(DOT_NAMES), 0)
        listed = handle.listed
        if listed is not None:
            names, block = listed.names, listed.block
            remember_entry = self._inodes.remember_entry
            for index in range(first, len(names)):
                inode = remember_entry(block, index)
                attributes = listed.attributes(index, inode)
                yield DirEntry(names[index], attributes, index + 1 + len(DOT_NAMES))
            return
        remember = self._inodes.remember
        for index in range(first, len(handle.entries)):
            name, node, attributes = handle.entries[index]
            yield DirEntry(name, attributes.with_inode(remember(node)), index + 1 + len(DOT_NAMES))

    def entry_not_sent(self, entry: DirEntry) -> None:
        """An entry of ``directory_entries`` the kernel never got: its lookup does not count."""
        if entry.name not in DOT_NAMES:
            self._inodes.forget(entry.attributes.inode, 1)

    async def readdir(self, fh: int, offset: int) -> list[DirEntry]:
        """Up to ``READDIR_BATCH`` entries after *offset* (0 = from the start); [] at the end."""
        return list(itertools.islice(self.directory_entries(fh, offset), READDIR_BATCH))

    async def releasedir(self, fh: int) -> None:
        self._handles.pop_dir(fh)

    # --- files ---------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Caller) -> OpenFile:
        node = self._inodes.node(inode)
        if is_writing(flags):
            self._policy.require_owner(ctx, "opening for writing")
        elif not node.kind.is_directory:
            await self._require_shared(node, ctx, READ_BITS)
        if node.kind is NodeKind.SIDECAR and flags & (os.O_ACCMODE | os.O_TRUNC) != os.O_RDONLY:
            return await self._sidecar_edits.open(node, flags, ctx)
        if node.kind is NodeKind.DATASET_VIEW and self._dataset_views is not None:
            return await self._dataset_views.open(node, flags, ctx)
        if node.kind.is_directory:
            raise FsError(errno.EISDIR, "is a directory")
        if node.kind is NodeKind.DATASET_FILE and is_writing(flags):
            await self._changing(inode, None, ctx)
            opened = await self.changes.open_for_writing(node, flags, ctx)
            await self._opened_draft_file(opened.fh, node, ctx, writing=True)
            return opened
        if is_writing(flags):
            raise await self._policy.refusal_for(node)
        if node.kind is NodeKind.DATASET_FILE:
            self._warm_if_cold(node.handle)
            record = await self.catalog.record(node.handle)
            view = await self._views.view(record, node)
            if view.info is None:
                assert view.draft is not None
                blob = view.blob or view.draft.blob_for(node.path, view.staged)  # type: ignore[arg-type]
                opened = self.changes.open_blob(node, blob, flags, ctx)
                await self._opened_draft_file(opened.fh, node, ctx, writing=False)
                return opened
            siblings = None
            if view.draft is None and self._nursery is not None:
                nursery = self._nursery

                def siblings() -> None:
                    nursery.start_soon(self._prefetch_siblings, record, node.path)

            reader = self._reader_factory(record, view.info, inode)
            handle = ObjectHandle(
                node,
                reader,
                inode,
                staged_since_open=self._staged_since_open,
                after_first_read=siblings,
                opened_by=ctx,
            )
            fh = self._handles.add(handle)
            observer = self._observing()
            if observer is not None:
                access = FileAccess(
                    ctx, node.handle, node.path, view.info.etag, view.info.size, False
                )
                handle.observed = await observer.opened(access)
            # Objects are keyed by ETag and their mtime comes from the listing: the kernel
            # drops cached pages itself when a changed object shows a new mtime.
            return OpenFile(fh, keep_cache=True, direct_io=False)
        if node.kind is NodeKind.SIDECAR:
            # The kernel may hold a size estimated from the list, or from an older record: the
            # bytes are read direct_io (a read is never cut at a stale size), and the kernel is
            # told to ask again, so stat shows this document's size from now on.
            was_fresh = self.catalog.fresh_record(node.handle) is not None
            data = self._renderer.render(await self.catalog.record(node.handle))
            if not was_fresh:
                self._kernel_cache.attributes_changed(inode)
            fh = self._handles.add(SnapshotHandle(node, data, opened_by=ctx))
            return OpenFile(fh, keep_cache=False, direct_io=True)
        if node.kind is NodeKind.CONTROL_FILE:
            fh = self._handles.add(SnapshotHandle(node, self._status.snapshot(), opened_by=ctx))
            return OpenFile(fh, keep_cache=False, direct_io=True)
        if node.kind is NodeKind.LINEAGE_FILE:
            data = await self._namespace.lineage.content(node)
            fh = self._handles.add(SnapshotHandle(node, data, opened_by=ctx))
            return OpenFile(fh, keep_cache=False, direct_io=True)
        raise FsError(errno.ELOOP, "symlinks are resolved by the kernel")

    async def _require_shared(self, node: NodeId, ctx: Caller, bits: int) -> None:
        """A caller who is not the owner gets *node* only where its mode shares *bits*."""
        if not self._policy.is_owner(ctx):
            self._policy.require_shared(ctx, (await self._attributes.of(node)).mode, bits)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handles.file(fh)
        data = await handle.read(offset, size)
        if handle.observed is not None:
            handle.observed.bytes_read += len(data)
        return data

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self._handles.file(fh).write(offset, data)

    async def flush(self, fh: int) -> None:
        """What ``close()`` must report: a staged file made durable (in place, pushed), a
        written sidecar committed."""
        handle = self._handles.find(fh)
        if handle is not None:
            await handle.flush()

    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles.find(fh)
        if handle is not None:
            await handle.fsync(datasync)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle is not None:
            await handle.release()

    def _staged_since_open(self, node: NodeId, inode: int) -> tuple[Draft, StagedEntry] | None:
        """The draft's bytes of an object opened before it was written through another handle."""
        draft = self._draft_of(node.handle)
        if draft is None:
            return None
        try:
            current = self._inodes.node(inode)
        except FsError:
            return None
        entry = draft.resolve(current.path)
        return (draft, entry) if isinstance(entry, StagedEntry) else None

    def _object_reader(
        self, record: DatasetRecord, info: ObjectInfo, inode: int | None
    ) -> FileReader:
        """A reader of one published object; with ``inode`` (an open file of this mount) it
        may fill the kernel's page cache for random readers."""
        notifier = self._notifier
        page_cache = None
        if inode is not None and notifier is not None:

            async def page_cache(offset: int, data: bytes) -> None:
                await notifier.store(inode, offset, data)

        return ObjectReader(
            self._store,
            self._broker,
            self._cache,
            handle=record.handle,
            bucket=record.s3.bucket_name,
            key=info.key,
            size=info.size,
            etag=info.etag,
            budget=self._budget,
            nursery=self._nursery,
            heads=self._siblings,
            page_cache=page_cache,
            spill=self._spill,
        )

    async def _prepare_sidecar_sizes(self, records: Sequence[DatasetRecord]) -> None:
        """A page of the dataset list arrived while a prefix dir is being listed: work out the
        sizes of that prefix's sidecars in a thread while the next page is awaited (the listing
        needs every one, ~60 us each; listing the root or ``by-name`` needs none)."""
        wanted = [r for r in records if self._sizes_wanted[r.handle.partition("/")[0]] > 0]
        if not wanted:
            return
        sizes = await trio.to_thread.run_sync(
            lambda: [sidecar_size(record) for record in wanted], limiter=self._size_limiter
        )
        for record, size in zip(wanted, sizes, strict=True):
            self._renderer.remember_size(record, size)

    async def _prefetch_siblings(self, record: DatasetRecord, path: str) -> None:
        """After a file's first read, prefetch what the files listed after it will need
        (bounded)."""
        if self._siblings is None:
            return
        parent, name = parent_path(path)
        try:
            listing = await self.catalog.listing(record, parent)
        except Exception as exc:  # noqa: BLE001 -- a prefetch: the reads that need it report
            log.debug("no sibling prefetch after %s: %r", path, exc)
            return
        self._siblings.after_open(record.handle, record.s3.bucket_name, parent, listing.files, name)

    # --- changes (core.changes) ----------------------------------------------------------

    async def create(
        self, parent: int, name: str, mode: int, flags: int, ctx: Caller
    ) -> tuple[OpenFile, Attributes]:
        self._policy.require_owner(ctx, "create")
        await self._changing(parent, name, ctx)
        created = await self.changes.create(parent, name, mode, flags, ctx)
        if not isinstance(created, NodeId):
            opened, attributes = created
            node = self._inodes.node(attributes.inode)
            await self._opened_draft_file(opened.fh, node, ctx, writing=True)
            return created
        inode = self._inodes.remember(created)  # opened outside the gate: open takes it
        return await self.open(inode, flags, ctx), await self.getattr(inode, ctx)

    async def mkdir(self, parent: int, name: str, mode: int, ctx: Caller) -> Attributes:
        self._policy.require_owner(ctx, "mkdir")
        await self._changing(parent, name, ctx)
        return await self.changes.mkdir(parent, name, mode)

    async def unlink(self, parent: int, name: str, ctx: Caller) -> None:
        self._policy.require_owner(ctx, "unlink")
        await self._changing(parent, name, ctx)
        await self.changes.unlink(parent, name)

    async def rmdir(self, parent: int, name: str, ctx: Caller) -> None:
        self._policy.require_owner(ctx, "rmdir")
        await self._changing(parent, name, ctx)
        await self.changes.rmdir(parent, name)

    async def rename(  # noqa: PLR0917 (mirrors the FUSE operation)
        self,
        old_parent: int,
        old_name: str,
        new_parent: int,
        new_name: str,
        flags: int,
        ctx: Caller,
    ) -> None:
        self._policy.require_owner(ctx, "rename")
        await self._changing(old_parent, old_name, ctx)
        await self._changing(new_parent, new_name, ctx)
        await self.changes.rename(old_parent, old_name, new_parent, new_name, flags)

    async def mknod(self, parent: int, name: str, mode: int, rdev: int, ctx: Caller) -> Attributes:
        self._policy.require_owner(ctx, "mknod")
        raise await self.changes.refuse_special(parent, name)

    async def symlink(self, parent: int, name: str, target: str, ctx: Caller) -> Attributes:
        self._policy.require_owner(ctx, "symlink")
        await self._changing(parent, name, ctx)
        return await self.changes.symlink(parent, name, target)

    async def link(self, inode: int, new_parent: int, new_name: str, ctx: Caller) -> Attributes:
        self._policy.require_owner(ctx, "link")
        raise await self.changes.refuse_special(new_parent, new_name)

    # --- links, xattrs, access, statfs ---------------------------------------------------

    async def readlink(self, inode: int, ctx: Caller) -> str:
        node = self._inodes.node(inode)
        if not node.kind.is_symlink:
            raise FsError(errno.EINVAL, "not a symlink")
        if node.kind is NodeKind.DATASET_LINK:
            record = await self.catalog.record(node.handle)
            await self._policy.require_data_read(record)
            return await self._posix.link_target(record, node)
        return await self._namespace.link_target(node)

    async def getxattr(self, inode: int, name: str, ctx: Caller) -> bytes:
        node = self._inodes.node(inode)
        if name == PRESIGNED_URL:  # a URL anyone may use, minted with the owner's identity
            self._policy.require_owner(ctx, "a presigned URL")
        await self._require_shared(node, ctx, READ_BITS)
        return await self._xattrs.get(node, name)

    async def listxattr(self, inode: int, ctx: Caller) -> list[str]:
        node = self._inodes.node(inode)
        await self._require_shared(node, ctx, READ_BITS)
        return await self._xattrs.names(node)

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Caller) -> None:
        self._policy.require_owner(ctx, "setxattr")
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._sidecar_edits.set_reason(node, name, value)
        raise await self._policy.xattr_refusal(node)

    async def removexattr(self, inode: int, name: str, ctx: Caller) -> None:
        self._policy.require_owner(ctx, "removexattr")
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._sidecar_edits.set_reason(node, name, None)
        raise await self._policy.xattr_refusal(node)

    async def access(self, inode: int, mode: int, ctx: Caller) -> None:
        # From a fetched record: an answer from the list's estimated modes could refuse wrongly.
        if inode != ROOT_INODE:
            self._policy.require_reachable(ctx)
        node = self._inodes.node(inode)
        if node.kind is NodeKind.DATASET_DIR:
            self._warm_if_cold(node.handle)  # chdir asks this on its way in
        attributes = (await self._attributes.of(node, exact=True)).with_inode(inode)
        if not self._policy.is_owner(ctx):
            if mode & os.W_OK:
                self._policy.require_owner(ctx, "writing")
            if mode & os.R_OK:
                self._policy.require_shared(ctx, attributes.mode, READ_BITS)
            if mode & os.X_OK:
                self._policy.require_shared(ctx, attributes.mode, SEARCH_BITS)
            return
        if mode & os.W_OK and not attributes.mode & stat.S_IWUSR:
            raise await self._policy.refusal_for(self._inodes.node(inode))
        if mode & os.R_OK and not attributes.mode & stat.S_IRUSR:
            raise FsError(errno.EACCES, "not readable")
        if mode & os.X_OK and not attributes.mode & stat.S_IXUSR:
            raise FsError(errno.EACCES, "not searchable or executable")

    async def statfs(self) -> FsStats:
        """Space is that of the disk holding the drafts (what writes can use)."""
        probe = self.draft_store.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            disk = os.statvfs(probe)
        except OSError:
            return FsStats(4096, 0, 0, len(self._inodes), 0, NAME_MAX)
        return FsStats(
            block_size=disk.f_frsize,
            blocks=disk.f_blocks,
            blocks_free=disk.f_bavail,
            files=len(self._inodes),
            files_free=disk.f_favail,
            name_max=NAME_MAX,
        )

    # --- the status file -----------------------------------------------------------------

    def _status_sections(self) -> Mapping[str, Any]:
        return {
            "source": self._options.source,
            "mountpoint": str(self._options.mountpoint),
            "read_only": self._options.read_only,
            "write_mode": self._options.write_mode,
            "drafts": [dataclasses.asdict(draft.summary()) for draft in self.draft_store.drafts()],
            "publishing": sorted(self._policy.publishing),
            **self._handles.statistics(),
            "inodes": self._inodes.statistics(),
            "catalog": self.catalog.statistics(),
            "data_store_calls": dict(self._client.statistics()),
            "credentials": dict(self._broker.statistics()),
            "block_cache": dict(self._cache.statistics()),
            "prefetch_budget": dict(self._budget.statistics()),
            "sibling_prefetch": statistics_of(self._siblings),
            "discovery": self.discovery.statistics(),
            "walk_prefetch": statistics_of(self._walks),
            "stored_attributes": self._stored.statistics(),
            "spill": statistics_of(self._spill),
            "s3": statistics_of(self._store),
            # When each held credential set expires; the credentials themselves never appear.
            "credential_expiries": {
                f"{handle} {kind}": expiry.isoformat()
                for (handle, kind), expiry in self._broker.expiries().items()
            },
        }
