"""Changes to datasets: every namespace change, attribute change and copy-on-write, into drafts.

``DraftChanges`` is the core's side of the write path (``provenafs.write`` holds the drafts and
the publisher). In the latest version of a dataset whose caller may write, every change goes
into the dataset's ``Draft``: the first change opens it, the namespace shows it over the base
version at once, files opened for writing get local bytes (copy-on-write: a base file's bytes
are fetched in parts unless it is truncated, and fsynced before the draft records them, so a
crash never turns an unchanged file into a short one).

In place (``-o writes=in-place``, docs/SEMANTICS.md) every change still goes into the draft
first, then is pushed into the dataset itself through the ``InPlacePublisher`` before the
operation returns: at the flush of a written file (so ``close()`` reports a failure) and after
unlink, rename, mkdir, rmdir and attribute changes. A failure is ``EACCES``/``EIO`` with the
draft kept.

POSIX attributes (docs/SEMANTICS.md, "Links, modes and times"): a create or mkdir keeps its
mode, ``chmod`` and ``utimens`` keep mode, atime and mtime (ctime follows every change), a
symlink is a ``LinkEntry``, and every entry change stamps its directory's mtime and ctime in
the same journal record. Moves keep what they move (a base file's published mode and mtime,
a base link as a link).

Locks, in the order of ``provenafs.write`` (its docstring): every change holds the dataset's
``ChangeGate`` shared for its whole length; copy-on-write of one file holds that file's path
lock inside it (asserted); a push holds the gate alone and is never started while the calling
task holds it shared. Refusals are ``RefusalPolicy``'s. Trio thread only; no pyfuse3.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

from provenafs.api.models import DatasetRecord
from provenafs.core.attributes import AttributeMaker
from provenafs.core.catalog import Catalog
from provenafs.core.file_views import FileView, FileViews
from provenafs.core.handles import DraftFileHandle, HandleTable
from provenafs.core.inodes import InodeTable, NodeId, NodeKind
from provenafs.core.kernel_cache import KernelCache
from provenafs.core.namespace import Namespace
from provenafs.core.posix_attributes import PosixAttributes
from provenafs.core.refusals import RefusalPolicy, check_new_name
from provenafs.core.status import StatusFile
from provenafs.core.stored_attributes import is_link
from provenafs.core.types import (
    COPY_PART_SIZE,
    DATASET_DIR_KINDS,
    DATASET_KINDS,
    Attributes,
    Caller,
    InPlacePublisher,
    OpenFile,
    ReaderFactory,
    parent_path,
    seconds_to_ns,
)
from provenafs.errors import FsError, to_errno
from provenafs.storage.blobstore import (
    BlobStore,
    Listing,
    ObjectInfo,
)
from provenafs.storage.credentials import CredentialBroker
from provenafs.storage.posix_metadata import LINK_TARGET_MAX
from provenafs.write.change_gate import ChangeGate
from provenafs.write.draft_entries import (
    WHITEOUT,
    CarriedEntry,
    DirectoryEntry,
    Entry,
    LinkEntry,
    StagedEntry,
    Whiteout,
    join,
)
from provenafs.write.drafts import Draft, DraftStore, StagedBlob
from provenafs.write.publish import NothingToPublishError, PublishError

__all__ = ["RENAME_NOREPLACE", "DraftChanges"]

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1  # linux/fs.h


class DraftChanges:
    """Puts every change of a dataset into its draft (and, in place, pushes it)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        namespace: Namespace,
        inodes: InodeTable,
        views: FileViews,
        policy: RefusalPolicy,
        attributes: AttributeMaker,
        posix: PosixAttributes,
        handles: HandleTable,
        draft_store: Callable[[], DraftStore],
        reader_factory: ReaderFactory,
        broker: CredentialBroker,
        store: BlobStore,
        kernel_cache: KernelCache,
        status: StatusFile,
    ) -> None:
        self._catalog = catalog
        self._namespace = namespace
        self._inodes = inodes
        self._views = views
        self._policy = policy
        self._attributes = attributes
        self._posix = posix
        self._handles = handles
        self._draft_store = draft_store
        self._reader_factory = reader_factory
        self._broker = broker
        self._store = store
        self._kernel_cache = kernel_cache
        self._status = status
        self._in_place = policy.in_place
        # Changes share a dataset's gate, a push holds it alone (in place); copy-on-write of
        # one file at a time per path.
        self._gate = ChangeGate()
        self._path_locks: dict[tuple[str, str], trio.Lock] = {}
        self.in_place_publisher: InPlacePublisher | None = None  # set by the daemon

    def _draft_of(self, handle: str) -> Draft | None:
        return self._draft_store().get(handle)

    # --- what open draft files use (core.handles.DraftWrites) ----------------------------

    def change(self, handle: str) -> AbstractAsyncContextManager[None]:
        """Hold *handle*'s change gate shared (in place, waits while a push runs)."""
        return self._gate.change(handle)

    def check_not_publishing(self, handle: str) -> None:
        self._policy.check_not_publishing(handle)

    async def record_blob(self, blob: StagedBlob) -> None:
        """Make a written file's bytes and size durable in its draft."""
        async with self._gate.change(blob.draft.handle):
            await blob.draft.record_blob(blob)

    def open_blob(self, node: NodeId, blob: StagedBlob, flags: int, ctx: Caller) -> OpenFile:
        """Open a staged file of a draft (for writing, or reading it once staged)."""
        fh = self._handles.add(DraftFileHandle(node, blob, flags, self, opened_by=ctx))
        return OpenFile(fh, keep_cache=False, direct_io=False)

    async def dataset_parent(self, parent: int) -> tuple[NodeId, DatasetRecord]:
        """The dataset directory *parent* a change happens in, with its record."""
        node = self._inodes.node(parent)
        if node.kind not in DATASET_DIR_KINDS:
            if not node.kind.is_directory:
                raise FsError(errno.ENOTDIR, "not a directory")
            raise await self._policy.refusal_for(node)
        return node, await self._catalog.record(node.handle)

    async def push_in_place(self, handle: str) -> None:
        """In place: the dataset's pending changes go into it before the calling operation
        returns. A failure keeps them in the draft (the quiet-delay publisher tries again) and
        is the operation's error: ``EACCES`` when S3 or the data store refused, else ``EIO``."""
        if not self._in_place or self.in_place_publisher is None:
            return
        try:
            await self.in_place_publisher.commit(handle)
        except NothingToPublishError:
            return
        except PublishError as exc:
            cause = exc.__cause__
            code = (
                errno.EACCES if cause is not None and to_errno(cause) == errno.EACCES else errno.EIO
            )
            raise FsError(code, f"{handle}: kept in the draft, not in S3: {exc}") from exc

    async def settle_in_place(self, draft: Draft) -> None:
        """In place, after a close: forget pushed changes of files no longer open, and drop a
        draft with nothing left (the dataset's own listing shows it all)."""
        if not self._in_place:
            return
        async with self._gate.push(draft.handle):
            if draft.discarded:  # a push settled it meanwhile
                return
            try:
                if draft.settle():
                    draft.discard()
            except (FsError, OSError) as exc:  # kept: the next push settles it again
                log.warning("%s: could not settle the draft after a close: %s", draft.handle, exc)

    async def _open_draft(self, record: DatasetRecord) -> Draft:
        draft = self._draft_store().get(record.handle)
        if draft is None:
            draft = await self._draft_store().open(
                record.handle, bucket=record.s3.bucket_name, base_prefix=record.s3.path
            )
        return draft

    async def _existing_child(self, parent: NodeId, name: str) -> NodeId | None:
        try:
            return await self._namespace.child(parent, name)
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    async def _base_has(self, record: DatasetRecord, path: str) -> bool:
        """Whether the base version shows *path* where the draft does not hide it."""
        draft = self._draft_of(record.handle)
        parent, name = parent_path(path)
        if draft is not None and not draft.shows_base(parent):
            return False
        listing = await self._catalog.listing(record, parent)
        return name in listing.files or name in listing.subdirs

    async def _staged_blob(
        self, record: DatasetRecord, node: NodeId, draft: Draft, *, keep_bytes: bool
    ) -> StagedBlob:
        """The local bytes of the file *node*, fetched from S3 first if it has none yet.

        Copy-on-write: a base file gets a blob holding its bytes (unless ``keep_bytes`` is
        false: it is being truncated), fsynced before the draft records it, so a crash never
        turns an unchanged file into a short one.
        """
        assert self._gate.holds(node.handle), "lock order: the change gate before a path lock"
        key = (node.handle, node.path)
        lock = self._path_locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                view = await self._views.view(record, node)
                if view.blob is not None:
                    return view.blob
                if view.staged is not None:
                    return draft.blob_for(node.path, view.staged)
                assert view.info is not None
                replaced_base = view.info.key == record.s3.path + node.path
                blob = await draft.new_blob(node.path, replaced_base=replaced_base)
                try:
                    if keep_bytes and view.info.size:
                        await self._copy_into(record, view.info, blob)
                        await blob.sync_data()
                    if keep_bytes:
                        blob.mtime_ns = seconds_to_ns(view.info.last_modified)
                    draft.put(node.path, blob.entry())
                    blob.dirty = not keep_bytes
                except BaseException:
                    draft.forget_unreferenced_blob(blob.id)
                    raise
                return blob
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._path_locks.pop(key, None)

    async def _copy_into(self, record: DatasetRecord, info: ObjectInfo, blob: StagedBlob) -> None:
        reader = self._reader_factory(record, info, None)
        try:
            offset = 0
            while offset < info.size:
                data = await reader.read(offset, min(COPY_PART_SIZE, info.size - offset))
                if not data:
                    raise FsError(errno.EIO, f"{info.key} ended early at byte {offset}")
                await blob.write(offset, data)
                offset += len(data)
        finally:
            await reader.close()

    async def open_for_writing(self, node: NodeId, flags: int, ctx: Caller) -> OpenFile:
        """Open a dataset file for writing: its bytes become the draft's (copy-on-write)."""
        record = await self._catalog.record(node.handle)
        async with self._gate.change(record.handle):
            await self._policy.check_change(record, node.path)
            await self._views.view(record, node)  # ENOENT before a draft is made
            draft = await self._open_draft(record)
            truncate = bool(flags & os.O_TRUNC)
            blob = await self._staged_blob(record, node, draft, keep_bytes=not truncate)
            if truncate and blob.size:
                await blob.truncate(0)
            return self.open_blob(node, blob, flags, ctx)

    # --- publishing hooks (provenafs.write.publish) ----------------------------------------

    async def begin_publish(self, handle: str) -> None:
        """The draft of *handle* is being published until ``end_publish``: changes get
        ``EBUSY`` meanwhile; in place, they wait (a push is short, and a writer of another
        file must not fail because someone closed theirs)."""
        if self._in_place:
            await self._gate.begin_push(handle)
        else:
            self._policy.publishing.add(handle)

    def end_publish(self, handle: str) -> None:
        if self._in_place:
            self._gate.end_push(handle)
        else:
            self._policy.publishing.discard(handle)

    async def publish_done(self, old_handle: str, new_handle: str) -> None:
        """After a verified publish: drop the draft view, forget cached records and listings of
        both versions, and tell the kernel to drop what it cached of them.

        In place (*new_handle* is *old_handle*) the publisher settles the draft itself, and the
        kernel keeps its entries: the dataset now holds what the draft showed (only mtimes
        become S3's, within the 1 s attribute timeout), and a push happens at every close.
        """
        in_place = new_handle == old_handle
        draft = self._draft_store().get(old_handle)
        if draft is not None and not in_place:
            draft.discard()  # idempotent: the publisher discards it again afterwards
        self._policy.publishing.discard(old_handle)
        for handle in {old_handle, new_handle}:
            self._catalog.invalidate(handle)
        self._status.forget()
        if not in_place:
            self._kernel_cache.datasets_changed(old_handle, new_handle)

    # --- mutations -----------------------------------------------------------------------

    async def create(
        self, parent: int, name: str, mode: int, flags: int, ctx: Caller
    ) -> tuple[OpenFile, Attributes] | NodeId:
        """A new file in the draft, opened; or the existing file *name* (for the caller to open
        outside the gate: open takes it)."""
        parent_node, record = await self.dataset_parent(parent)
        check_new_name(name)
        path = join(parent_node.path, name)
        async with self._gate.change(record.handle):
            await self._policy.check_change(record, path)
            await self._attributes.of(parent_node)  # the directory is still there
            existing = await self._existing_child(parent_node, name)
            if existing is None:
                return await self._create_file(record, path, mode, flags, ctx)
            if flags & os.O_EXCL or existing.kind is NodeKind.DATASET_LINK:
                raise FsError(errno.EEXIST, f"{path!r} exists")
            if existing.kind is not NodeKind.DATASET_FILE:
                raise FsError(errno.EISDIR, f"{path!r} is a directory")
        return existing

    async def _create_file(
        self, record: DatasetRecord, path: str, mode: int, flags: int, ctx: Caller
    ) -> tuple[OpenFile, Attributes]:
        draft = await self._open_draft(record)
        replaced = isinstance(draft.entries.get(path), Whiteout)
        blob = await draft.new_blob(path, replaced_base=replaced)
        blob.mode = stat.S_IMODE(mode)
        draft.apply([("set", path, blob.entry()), _stamp(draft, parent_path(path)[0])])
        node = NodeId(NodeKind.DATASET_FILE, record.handle, path)
        inode = self._inodes.remember(node)
        opened = self.open_blob(node, blob, flags, ctx)
        return opened, dataclasses.replace(await self._attributes.of(node), inode=inode)

    async def write_file(self, handle: str, path: str, data: bytes) -> None:
        """Write *data* as the file *path* of dataset *handle*'s draft, making its missing
        folders: the daemon's own file (a run log), with the checks any change gets.

        A base folder is left to the base (a draft directory entry would hide its files); the
        file replaces one already there. Durable when this returns; in place, pushed too.
        """
        record = await self._catalog.record(handle)
        async with self._gate.change(handle):
            await self._policy.check_change(record, path)
            draft = await self._open_draft(record)
            parent = NodeId(NodeKind.DATASET_DIR, handle)
            folders, name = parent_path(path)
            for folder in folders.split("/") if folders else ():
                existing = await self._existing_child(parent, folder)
                child = NodeId(NodeKind.DATASET_SUBDIR, handle, join(parent.path, folder))
                if existing is None:
                    draft.put(child.path, DirectoryEntry(time.time_ns()))
                elif existing.kind is not NodeKind.DATASET_SUBDIR:
                    raise FsError(errno.ENOTDIR, f"{existing.path!r} is not a directory")
                parent = child
            existing = await self._existing_child(parent, name)
            if existing is not None and existing.kind is not NodeKind.DATASET_FILE:
                raise FsError(errno.EISDIR, f"{path!r} is a directory")
            replaced = existing is not None and await self._base_has(record, path)
            before = draft.resolve(path)
            blob = await draft.new_blob(path, replaced_base=replaced)
            blob.open_count += 1
            try:
                await blob.write(0, data)
                draft.put(path, blob.entry())
                await draft.record_blob(blob)
            finally:
                draft.release_blob(blob)
            if isinstance(before, StagedEntry):
                draft.forget_unreferenced_blob(before.blob)
        self._status.forget()
        await self.push_in_place(handle)

    async def mkdir(self, parent: int, name: str, mode: int) -> Attributes:
        parent_node, record = await self.dataset_parent(parent)
        check_new_name(name)
        return await self._add_entry(
            parent_node,
            record,
            name,
            NodeKind.DATASET_SUBDIR,
            lambda: DirectoryEntry(time.time_ns(), stat.S_IMODE(mode)),
        )

    async def symlink(self, parent: int, name: str, target: str) -> Attributes:
        """A symbolic link in the draft, its target kept as written (never followed here)."""
        parent_node, record = await self.dataset_parent(parent)
        check_new_name(name)
        if not target:
            raise FsError(errno.ENOENT, "an empty link target")
        if len(os.fsencode(target)) > LINK_TARGET_MAX or "\x00" in target:
            raise FsError(errno.ENAMETOOLONG, "a link target over 4095 bytes")
        return await self._add_entry(
            parent_node,
            record,
            name,
            NodeKind.DATASET_LINK,
            lambda: LinkEntry(target, time.time_ns()),
        )

    async def _add_entry(
        self,
        parent_node: NodeId,
        record: DatasetRecord,
        name: str,
        kind: NodeKind,
        make_entry: Callable[[], Entry],
    ) -> Attributes:
        """A new directory or link *name* in the draft (refused if the name is taken), made
        under the change gate, durable and pushed (in place) when this returns."""
        path = join(parent_node.path, name)
        async with self._gate.change(record.handle):
            await self._policy.check_change(record, path)
            await self._attributes.of(parent_node)  # the directory is still there
            if await self._existing_child(parent_node, name) is not None:
                raise FsError(errno.EEXIST, f"{path!r} exists")
            draft = await self._open_draft(record)
            draft.apply([("set", path, make_entry()), _stamp(draft, parent_node.path)])
            await draft.sync()
            node = NodeId(kind, record.handle, path)
            inode = self._inodes.remember(node)
            attributes = dataclasses.replace(await self._attributes.of(node), inode=inode)
        await self.push_in_place(record.handle)
        return attributes

    async def refuse_special(self, parent: int, name: str) -> FsError:
        parent_node, record = await self.dataset_parent(parent)
        check_new_name(name)
        await self._policy.check_change(record, join(parent_node.path, name))
        return FsError(errno.EPERM, "datasets hold regular files and directories only")

    async def unlink(self, parent: int, name: str) -> None:
        parent_node, record = await self.dataset_parent(parent)
        async with self._gate.change(record.handle):
            node = await self._namespace.child(parent_node, name)
            if node.kind is NodeKind.DATASET_SUBDIR:
                raise FsError(errno.EISDIR, f"{node.path!r} is a directory")
            await self._policy.check_change(record, node.path)
            view = None
            if node.kind is NodeKind.DATASET_FILE:
                view = await self._views.view(record, node)
            in_base = await self._base_has(record, node.path)
            draft = await self._open_draft(record)
            await self._remove_path(draft, node.path, in_base=in_base)
            keep: StagedBlob | ObjectInfo | None = view.info if view is not None else None
            if view is not None and view.staged is not None:
                keep = draft.live_blob(view.staged.blob)
            self._views.detach(node, keep)
            if view is not None and view.staged is not None:
                draft.forget_unreferenced_blob(view.staged.blob)
        await self.push_in_place(record.handle)

    async def _remove_path(self, draft: Draft, path: str, *, in_base: bool) -> None:
        # In place, S3 itself may hold the path (pushed moments ago) whatever the cached
        # listing says: a whiteout makes the push delete it.
        removal: tuple[str, str, Entry | None] = (
            ("set", path, WHITEOUT) if in_base or self._in_place else ("del", path, None)
        )
        draft.apply([removal, _stamp(draft, parent_path(path)[0])])
        await draft.sync()

    async def rmdir(self, parent: int, name: str) -> None:
        parent_node, record = await self.dataset_parent(parent)
        async with self._gate.change(record.handle):
            node = await self._namespace.child(parent_node, name)
            if node.kind is not NodeKind.DATASET_SUBDIR:
                raise FsError(errno.ENOTDIR, f"{node.path!r} is not a directory")
            await self._policy.check_change(record, node.path)
            if not await self._namespace.is_empty(node):
                raise FsError(errno.ENOTEMPTY, f"{node.path!r} is not empty")
            in_base = await self._base_has(record, node.path)
            draft = await self._open_draft(record)
            await self._remove_path(draft, node.path, in_base=in_base)
            self._views.detach(node, None)
        await self.push_in_place(record.handle)

    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int
    ) -> None:
        old_dir = self._inodes.node(old_parent)
        new_dir = self._inodes.node(new_parent)
        inside = (old_dir.kind in DATASET_DIR_KINDS, new_dir.kind in DATASET_DIR_KINDS)
        if inside != (True, True):
            if any(inside):
                raise FsError(errno.EXDEV, "renames cannot leave or enter a dataset")
            raise await self._policy.refusal_for(old_dir)
        if old_dir.handle != new_dir.handle:
            raise FsError(errno.EXDEV, "renames across datasets are copies")
        if flags & ~RENAME_NOREPLACE:
            raise FsError(errno.EINVAL, "only RENAME_NOREPLACE is supported")
        check_new_name(new_name)
        record = await self._catalog.record(old_dir.handle)
        async with self._gate.change(record.handle):
            source = await self._namespace.child(old_dir, old_name)
            new_path = join(new_dir.path, new_name)
            await self._policy.check_change(record, source.path, new_path)
            await self._attributes.of(new_dir)
            if source.path == new_path:
                return
            is_dir = source.kind is NodeKind.DATASET_SUBDIR
            if is_dir and new_path.startswith(source.path + "/"):
                raise FsError(errno.EINVAL, "a directory cannot move into itself")
            target = await self._existing_child(new_dir, new_name)
            target_view: FileView | None = None
            if target is not None:
                if flags & RENAME_NOREPLACE:
                    raise FsError(errno.EEXIST, f"{new_path!r} exists")
                if is_dir and target.kind is not NodeKind.DATASET_SUBDIR:
                    raise FsError(errno.ENOTDIR, f"{new_path!r} is not a directory")
                if not is_dir and target.kind is NodeKind.DATASET_SUBDIR:
                    raise FsError(errno.EISDIR, f"{new_path!r} is a directory")
                if is_dir and not await self._namespace.is_empty(target):
                    raise FsError(errno.ENOTEMPTY, f"{new_path!r} is not empty")
                if target.kind is NodeKind.DATASET_FILE:
                    target_view = await self._views.view(record, target)
            if is_dir:
                operations = await self._directory_move(record, source.path, new_path)
            else:
                operations = [("set", new_path, await self._moved_entry(record, source))]
            if self._in_place or await self._base_has(record, source.path):
                operations.append(("set", source.path, WHITEOUT))
            else:
                operations.append(("del", source.path, None))
            draft = await self._open_draft(record)
            operations.append(_stamp(draft, old_dir.path))
            if new_dir.path != old_dir.path:
                operations.append(_stamp(draft, new_dir.path))
            draft.apply(operations)
            await draft.sync()
            if target_view is not None and target_view.staged is not None:
                draft.forget_unreferenced_blob(target_view.staged.blob)
            draft.rebind(source.path, new_path)
            for orphan in self._inodes.rename(record.handle, source.path, new_path):
                if target_view is not None and target_view.staged is not None:
                    blob = draft.live_blob(target_view.staged.blob)
                    if blob is not None:
                        self._views.keep(orphan, blob)
                elif target_view is not None and target_view.info is not None:
                    self._views.keep(orphan, target_view.info)
        await self.push_in_place(record.handle)

    async def _moved_entry(self, record: DatasetRecord, source: NodeId) -> Entry:
        """The draft entry that puts the file or link *source* at another path, with its mode
        and times (a base file's as published, a base link as a link); its ctime is now."""
        now = time.time_ns()
        if source.kind is NodeKind.DATASET_LINK:
            link = await self._posix.of_link(record, source)
            target = await self._posix.link_target(record, source)
            return LinkEntry(target, link.mtime_ns, link.atime_ns, now)
        view = await self._views.view(record, source)
        if view.staged is not None and view.draft is not None:
            return view.draft.entries[source.path]
        assert view.info is not None
        if view.carried is not None:
            return dataclasses.replace(view.carried, ctime_ns=now)
        shown = await self._posix.of_file(record, source, view)
        info = view.info
        return CarriedEntry(info.key, info.size, info.etag, shown.mtime_ns, None, None, now)

    async def _base_entry(self, record: DatasetRecord, rel: str, info: ObjectInfo) -> Entry:
        """A base object under a moved directory, as the entry that carries it (a link's
        target is read: it becomes the draft's)."""
        stored = await self._posix.stored.of_object(record, rel, info)
        mtime = stored.mtime_ns if stored.mtime_ns is not None else None
        mtime = mtime if mtime is not None else seconds_to_ns(info.last_modified)
        if is_link(stored, info):
            return LinkEntry(await self._posix.stored.link_target(record, rel, info), mtime)
        return CarriedEntry(info.key, info.size, info.etag, mtime)

    async def _directory_move(
        self, record: DatasetRecord, old: str, new: str
    ) -> list[tuple[str, str, Entry | None]]:
        """Operations that rebuild the directory *old* at *new* (base files carried, no copy),
        every directory keeping its mode and times."""
        now = time.time_ns()
        top = await self._posix.of_directory(record, old)
        moved = DirectoryEntry(top.mtime_ns, top.permissions, top.atime_ns, now)
        operations: list[tuple[str, str, Entry | None]] = [("set", new, moved)]
        draft = self._draft_of(record.handle)
        resolve = draft.resolve if draft is not None else (lambda path: None)
        if draft is None or draft.shows_base(old):
            prefix = record.s3.path
            dirs: set[str] = set()
            for info in (await self._base_tree(record, old)).objects:
                rel = info.key[len(prefix) :]
                if rel.endswith("/"):
                    directory = rel.rstrip("/")
                    if directory != old and resolve(directory) is None:
                        dirs.add(directory)
                    continue
                ancestor = parent_path(rel)[0]
                while ancestor != old and ancestor:
                    if resolve(ancestor) is None:
                        dirs.add(ancestor)  # a folder stays even when its files went
                    ancestor = parent_path(ancestor)[0]
                if resolve(rel) is not None:
                    continue  # replaced or hidden by the draft: its entry moves below
                entry = await self._base_entry(record, rel, info)
                operations.append(("set", new + rel[len(old) :], entry))
            for directory in sorted(dirs):
                shown = await self._posix.of_directory(record, directory)
                kept = DirectoryEntry(shown.mtime_ns, shown.permissions, shown.atime_ns)
                operations.append(("set", new + directory[len(old) :], kept))
        if draft is not None:
            for path, entry in draft.entries_under(old):
                moving = entry
                if isinstance(entry, DirectoryEntry) and not entry.opaque:
                    # nothing of the base is at the new path: keep what the base said
                    mode = entry.mode
                    if mode is None:
                        mode = (await self._posix.of_directory(record, path)).permissions
                    moving = dataclasses.replace(entry, mode=mode, opaque=True)
                if not isinstance(moving, Whiteout):
                    operations.append(("set", new + path[len(old) :], moving))
        return operations

    async def _base_tree(self, record: DatasetRecord, directory: str) -> Listing:
        """Every base key below *directory* (no delimiter), with the dataset's read credentials."""
        prefix = f"{record.s3.path}{directory}/"
        return await self._broker.call(
            record.handle,
            "read",
            lambda creds: self._store.list_prefix(
                creds, record.s3.bucket_name, prefix, delimiter=None
            ),
        )

    async def change_attributes(
        self,
        inode: int,
        *,
        size: int | None,
        mtime_ns: int | None,
        fh: int | None,
        mode: int | None = None,
        atime_ns: int | None = None,
    ) -> None:
        node = self._inodes.node(inode)
        if node.kind not in DATASET_KINDS:
            raise await self._policy.refusal_for(node)
        async with self._gate.change(node.handle):
            record = await self._catalog.record(node.handle)
            await self._policy.check_change(record, node.path)
            if node.kind is NodeKind.DATASET_FILE:
                changed = await self._change_file_attributes(
                    record, node, size=size, mode=mode, atime_ns=atime_ns, mtime_ns=mtime_ns, fh=fh
                )
            elif size is not None:
                raise FsError(
                    errno.EISDIR if node.kind.is_directory else errno.EINVAL,
                    f"{node.path!r} is not a regular file",
                )
            elif node.kind is NodeKind.DATASET_LINK:  # a link's mode is always 0777
                changed = await self._change_link_times(record, node, atime_ns, mtime_ns)
            else:
                changed = await self._change_directory_attributes(
                    record, node, mode=mode, atime_ns=atime_ns, mtime_ns=mtime_ns
                )
        if changed and fh is None:  # a change through an open file reaches S3 at its close
            await self.push_in_place(node.handle)

    async def _change_directory_attributes(
        self,
        record: DatasetRecord,
        node: NodeId,
        *,
        mode: int | None,
        atime_ns: int | None,
        mtime_ns: int | None,
    ) -> bool:
        """``chmod`` or ``utimens`` of a folder (or the dataset's top): kept in its entry."""
        if mode is None and atime_ns is None and mtime_ns is None:
            return False
        draft = await self._open_draft(record)
        path = node.path
        entry = draft.resolve(path)
        now = time.time_ns()
        if not isinstance(entry, DirectoryEntry):  # a base folder: its attributes until now
            shown = await self._posix.of_directory(record, path)
            entry = DirectoryEntry(shown.mtime_ns, None, shown.atime_ns, None, opaque=False)
        changed = dataclasses.replace(
            entry,
            mode=stat.S_IMODE(mode) if mode is not None else entry.mode,
            atime_ns=atime_ns if atime_ns is not None else entry.atime_ns,
            mtime_ns=mtime_ns if mtime_ns is not None else entry.mtime_ns,
            ctime_ns=now,
        )
        draft.put(path, changed)
        await draft.sync()
        return True

    async def _change_link_times(
        self, record: DatasetRecord, node: NodeId, atime_ns: int | None, mtime_ns: int | None
    ) -> bool:
        """``utimensat(..., AT_SYMLINK_NOFOLLOW)``: a link's own times (a base link becomes
        the draft's)."""
        if atime_ns is None and mtime_ns is None:
            return False
        shown = await self._posix.of_link(record, node)
        target = await self._posix.link_target(record, node)
        link = LinkEntry(
            target,
            mtime_ns if mtime_ns is not None else shown.mtime_ns,
            atime_ns if atime_ns is not None else shown.atime_ns,
            time.time_ns(),
        )
        draft = await self._open_draft(record)
        draft.put(node.path, link)
        await draft.sync()
        return True

    async def _change_file_attributes(
        self,
        record: DatasetRecord,
        node: NodeId,
        *,
        size: int | None,
        mode: int | None,
        atime_ns: int | None,
        mtime_ns: int | None,
        fh: int | None,
    ) -> bool:
        """Size, mode and times of a dataset file into the draft; False when none is kept."""
        if size is not None and size < 0:
            raise FsError(errno.EINVAL, "negative size")
        if size is None and mtime_ns is None and mode is None and atime_ns is None:
            return False
        view = await self._views.view(record, node)
        draft = await self._open_draft(record)
        handle = self._handles.find(fh) if fh is not None else None
        blob = (handle.staged_blob() if handle is not None else None) or view.blob
        if size is None and blob is None and view.info is not None:
            # Only attributes of a file whose bytes are in S3: no copy, just a new entry.
            info = view.info
            shown = await self._posix.of_file(record, node, view)
            base = view.carried or CarriedEntry(info.key, info.size, info.etag, shown.mtime_ns)
            draft.put(
                node.path,
                dataclasses.replace(
                    base,
                    mtime_ns=mtime_ns if mtime_ns is not None else base.mtime_ns,
                    mode=stat.S_IMODE(mode) if mode is not None else base.mode,
                    atime_ns=atime_ns if atime_ns is not None else shown.atime_ns,
                    ctime_ns=time.time_ns(),
                ),
            )
            await draft.sync()
            return True
        if blob is None:
            blob = await self._staged_blob(record, node, draft, keep_bytes=size != 0)
        blob.open_count += 1
        try:
            if size is not None and size != blob.size:
                await blob.truncate(size)
            if mtime_ns is not None:
                blob.touch(mtime_ns)
            if mode is not None or atime_ns is not None:
                blob.set_attributes(
                    mode=stat.S_IMODE(mode) if mode is not None else None, atime_ns=atime_ns
                )
            await blob.draft.record_blob(blob)
        finally:
            blob.draft.release_blob(blob)
        return True


def _stamp(draft: Draft, directory: str) -> tuple[str, str, Entry | None]:
    """The operation that marks *directory*'s mtime and ctime now (an entry changed in it):
    its entry, or for a base folder (or the top) a transparent one."""
    now = time.time_ns()
    entry = draft.resolve(directory)
    if isinstance(entry, DirectoryEntry):
        return ("set", directory, dataclasses.replace(entry, mtime_ns=now, ctime_ns=None))
    return ("set", directory, DirectoryEntry(now, opaque=False))
