"""POSIX semantics of the mount in plain Python types: the façade that ``fuse_ops`` adapts.

``Filesystem`` has one method per FUSE operation and delegates: names to ``Namespace`` over the
``Catalog``'s caches (the tree of docs/SEMANTICS.md), numbers to ``InodeTable``, attributes to
``AttributeMaker``, refusals to ``RefusalPolicy``, open files to the classes of ``handles``
(one per kind of open file, each with its own read/write/flush/fsync/release), every change
of a dataset to ``DraftChanges``, sidecar edits to ``SidecarEdits``, kernel cache
invalidation to ``KernelCache`` and ``.provenafs/status.json`` to ``StatusFile``. What stays
here is the wiring, lookups, directory listings, opening, xattrs and statfs.

Rules: names are ``str``, inodes ``int`` (1 = root). A method fails with ``FsError`` (a
deliberate errno) or lets the IO layer's exceptions (API, object store, local disk) rise: the
adapter maps every one through ``errors.to_errno``, once; anything else is a bug it turns into
EIO. No pyfuse3, no blocking calls; everything runs on the trio thread, so tables need no locks.

Lookup counts: ``lookup`` and every entry that ``readdir`` returns count as one kernel
reference (pyfuse3 answers readdir with readdirplus). An adapter that cannot send an entry
``readdir`` returned should ``forget(entry.attributes.inode, 1)``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from provenafs.api.models import DatasetRecord
from provenafs.cache.block_cache import BlockCache
from provenafs.cache.spill import SpillArea
from provenafs.core.attributes import AttributeMaker
from provenafs.core.catalog import Catalog
from provenafs.core.changes import DraftChanges
from provenafs.core.file_views import FileViews
from provenafs.core.handles import DirHandle, HandleTable, ObjectHandle, SnapshotHandle
from provenafs.core.inodes import InodeTable, NodeId, NodeKind
from provenafs.core.kernel_cache import KernelCache
from provenafs.core.namespace import Namespace
from provenafs.core.posix_attributes import PosixAttributes
from provenafs.core.refusals import RefusalPolicy
from provenafs.core.sidecar_edits import SidecarEdits
from provenafs.core.sidecar_render import SidecarRenderer
from provenafs.core.status import StatusFile, statistics_of
from provenafs.core.stored_attributes import StoredAttributes
from provenafs.core.types import (
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
from provenafs.core.xattrs import ExtendedAttributes
from provenafs.errors import FsError
from provenafs.mount_options import MountOptions
from provenafs.read.reader import ObjectReader, PrefetchBudget
from provenafs.read.sibling_prefetch import SiblingPrefetcher
from provenafs.storage.blobstore import BlobStore, ObjectInfo
from provenafs.storage.credentials import CredentialBroker
from provenafs.write.draft_entries import StagedEntry
from provenafs.write.drafts import Draft, DraftStore, default_root
from provenafs.write.metadata_edit import MetadataApi, SidecarEditor

log = logging.getLogger(__name__)

__all__ = ["Filesystem"]


class Filesystem:
    """The mount's filesystem core (see the module docstring for its rules)."""

    _siblings: SiblingPrefetcher | None = None  # made in start(), in the mount's nursery

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
        self.catalog = Catalog(
            client,
            broker,
            store,
            clock=clock,
            metadata_ttl=options.metadata_ttl,
            listing_ttl=options.listing_ttl,
        )
        self._stored = StoredAttributes(self.catalog, store)
        self._posix = PosixAttributes(self.catalog, self._stored, self._draft_of)
        self._namespace = Namespace(self.catalog, self._draft_of, self._stored)
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

    def _draft_of(self, handle: str) -> Draft | None:
        return self.draft_store.get(handle)

    def set_in_place_publisher(self, publisher: InPlacePublisher) -> None:
        """What pushes changes into datasets under ``-o writes=in-place`` (set before use)."""
        self.changes.in_place_publisher = publisher

    def set_kernel_notifier(self, notifier: KernelCacheNotifier) -> None:
        """Where kernel cache invalidations go (set before ``start``)."""
        self._notifier = notifier

    async def start(self, nursery: trio.Nursery) -> None:
        """Remember the mount's nursery: background work of open files runs under it."""
        self._nursery = nursery
        self._siblings = SiblingPrefetcher(
            self._store, self._broker, self._cache, self._budget, nursery=nursery
        )
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

    # --- publishing hooks (provenafs.write.publish) --------------------------------------

    async def begin_publish(self, handle: str) -> None:
        """Changes of *handle* fail with ``EBUSY`` (in place: wait) until ``end_publish``."""
        await self.changes.begin_publish(handle)

    def end_publish(self, handle: str) -> None:
        self.changes.end_publish(handle)

    async def publish_done(self, old_handle: str, new_handle: str) -> None:
        """After a verified publish: drop the draft view and what was cached of both."""
        await self.changes.publish_done(old_handle, new_handle)

    # --- names and attributes ------------------------------------------------------------

    async def lookup(self, parent: int, name: str, ctx: Caller) -> Attributes:
        parent_node = self._inodes.node(parent)
        if not parent_node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "lookup in a non-directory")
        node = await self._namespace.child(parent_node, name)
        if node.kind is NodeKind.DATASET_DIR and self._nursery is not None:
            self._nursery.start_soon(self._warm_dataset, node.handle)
        attributes = await self._attributes.of(node)
        return dataclasses.replace(attributes, inode=self._inodes.remember(node))

    async def _warm_dataset(self, handle: str) -> None:
        """A dataset's directory was looked up: what comes next (``ls``, ``open``) needs its
        read credentials and top listing, so fetch them now, beside its record, not after it.

        Speculative and quiet: a dataset the caller may not read simply fails here, and the
        operation that needs the answer asks again and reports.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._broker.read, handle)
                record = await self.catalog.record(handle)
                if await self.catalog.data_readable(record):
                    await self.catalog.listing(record, "")
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
        attributes = await self._attributes.of(self._inodes.node(inode))
        return dataclasses.replace(attributes, inode=inode)

    async def setattr(
        self,
        inode: int,
        ctx: Caller | None = None,
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
        caller = ctx or Caller(0, 0, 0)
        node = self._inodes.node(inode)
        if size is not None and node.kind is NodeKind.SIDECAR:
            await self._sidecar_edits.truncate(node, size, fh)
            return await self.getattr(inode, caller)
        values = (size, mode, uid, gid, atime_ns, mtime_ns)
        if not (times or owner or any(value is not None for value in values)):
            return await self.getattr(inode, caller)
        if times and mtime_ns is None:
            mtime_ns = time.time_ns()
        await self.changes.change_attributes(
            inode, size=size, mode=mode, atime_ns=atime_ns, mtime_ns=mtime_ns, fh=fh
        )
        return await self.getattr(inode, caller)

    # --- directories ---------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Caller) -> int:
        node = self._inodes.node(inode)
        if not node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "not a directory")
        if node.kind in (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR):
            await self._policy.require_data_read(await self.catalog.record(node.handle))
        fetch = node.kind is not NodeKind.PREFIX_DIR
        entries = []
        for name, child in await self._namespace.children(node):
            entries.append((name, child, await self._attributes.of(child, fetch=fetch)))
        return self._handles.add_dir(DirHandle(entries))

    async def readdir(self, fh: int, offset: int) -> list[DirEntry]:
        """Up to ``READDIR_BATCH`` entries after *offset* (0 = from the start); [] at the end."""
        handle = self._handles.dir(fh)
        result = []
        for index in range(max(offset, 0), min(len(handle.entries), offset + READDIR_BATCH)):
            name, node, attributes = handle.entries[index]
            inode = self._inodes.remember(node)
            entry_attributes = dataclasses.replace(attributes, inode=inode)
            result.append(DirEntry(name, entry_attributes, index + 1))
        return result

    async def releasedir(self, fh: int) -> None:
        self._handles.pop_dir(fh)

    # --- files ---------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Caller) -> OpenFile:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR and flags & (os.O_ACCMODE | os.O_TRUNC) != os.O_RDONLY:
            return await self._sidecar_edits.open(node, flags, ctx)
        if node.kind.is_directory:
            raise FsError(errno.EISDIR, "is a directory")
        if node.kind is NodeKind.DATASET_FILE and is_writing(flags):
            return await self.changes.open_for_writing(node, flags, ctx)
        if is_writing(flags):
            raise await self._policy.refusal_for(node)
        if node.kind is NodeKind.DATASET_FILE:
            record = await self.catalog.record(node.handle)
            view = await self._views.view(record, node)
            if view.info is None:
                assert view.draft is not None
                blob = view.blob or view.draft.blob_for(node.path, view.staged)  # type: ignore[arg-type]
                return self.changes.open_blob(node, blob, flags, ctx)
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
            # Objects are keyed by ETag and their mtime comes from the listing: the kernel
            # drops cached pages itself when a changed object shows a new mtime.
            return OpenFile(self._handles.add(handle), keep_cache=True, direct_io=False)
        if node.kind is NodeKind.SIDECAR:
            data = self._renderer.render(await self.catalog.record(node.handle))
            fh = self._handles.add(SnapshotHandle(node, data, opened_by=ctx))
            return OpenFile(fh, keep_cache=False, direct_io=False)
        if node.kind is NodeKind.CONTROL_FILE:
            fh = self._handles.add(SnapshotHandle(node, self._status.snapshot(), opened_by=ctx))
            return OpenFile(fh, keep_cache=False, direct_io=True)
        raise FsError(errno.ELOOP, "symlinks are resolved by the kernel")

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        return await self._handles.file(fh).read(offset, size)

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
        created = await self.changes.create(parent, name, mode, flags, ctx)
        if not isinstance(created, NodeId):
            return created
        inode = self._inodes.remember(created)  # opened outside the gate: open takes it
        return await self.open(inode, flags, ctx), await self.getattr(inode, ctx)

    async def mkdir(self, parent: int, name: str, mode: int, ctx: Caller) -> Attributes:
        return await self.changes.mkdir(parent, name, mode)

    async def unlink(self, parent: int, name: str, ctx: Caller) -> None:
        await self.changes.unlink(parent, name)

    async def rmdir(self, parent: int, name: str, ctx: Caller) -> None:
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
        await self.changes.rename(old_parent, old_name, new_parent, new_name, flags)

    async def mknod(self, parent: int, name: str, mode: int, rdev: int, ctx: Caller) -> Attributes:
        raise await self.changes.refuse_special(parent, name)

    async def symlink(self, parent: int, name: str, target: str, ctx: Caller) -> Attributes:
        return await self.changes.symlink(parent, name, target)

    async def link(self, inode: int, new_parent: int, new_name: str, ctx: Caller) -> Attributes:
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
        return await self._xattrs.get(self._inodes.node(inode), name)

    async def listxattr(self, inode: int, ctx: Caller) -> list[str]:
        return await self._xattrs.names(self._inodes.node(inode))

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Caller) -> None:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._sidecar_edits.set_reason(node, name, value)
        raise await self._policy.xattr_refusal(node)

    async def removexattr(self, inode: int, name: str, ctx: Caller) -> None:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._sidecar_edits.set_reason(node, name, None)
        raise await self._policy.xattr_refusal(node)

    async def access(self, inode: int, mode: int, ctx: Caller) -> None:
        attributes = await self.getattr(inode, ctx)
        if mode & os.W_OK and not attributes.mode & stat.S_IWUSR:
            raise await self._policy.refusal_for(self._inodes.node(inode))
        if mode & os.R_OK and not attributes.mode & stat.S_IROTH:
            raise FsError(errno.EACCES, "not readable")
        if mode & os.X_OK and not attributes.mode & stat.S_IXOTH:
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
            "stored_attributes": self._stored.statistics(),
            "spill": statistics_of(self._spill),
            "s3": statistics_of(self._store),
            # When each held credential set expires; the credentials themselves never appear.
            "credential_expiries": {
                f"{handle} {kind}": expiry.isoformat()
                for (handle, kind), expiry in self._broker.expiries().items()
            },
        }
