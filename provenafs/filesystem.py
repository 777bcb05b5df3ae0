"""POSIX semantics of the mount in plain Python types: the core that ``fuse_ops`` adapts.

``Filesystem`` answers lookup, getattr, readdir, open/read, readlink, xattrs, access and statfs
for the tree of SPEC §1 (``namespace``), from the caches of ``catalog``; file contents come from
one ``ObjectReader`` per open file, sidecars from a snapshot of their bytes taken at open.
Permission bits tell the truth about the caller's item roles; every mutating operation exists
and raises ``EROFS`` until writes land.

Rules: names are ``str``, inodes ``int`` (1 = root); the only exception that leaves a public
method is ``FsError`` (API and object-store exceptions are translated through ``to_errno``
here, once); anything else is a bug the adapter turns into EIO. No pyfuse3, no blocking calls;
everything runs on the trio thread, so the tables need no locks.

Lookup counts: ``lookup`` and every entry that ``readdir`` returns count as one kernel
reference (pyfuse3 answers readdir with readdirplus). An adapter that cannot send an entry
``readdir`` returned should ``forget(entry.attributes.inode, 1)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar

import trio

import provenafs
from provenafs.api.errors import ApiError
from provenafs.api.models import DatasetRecord
from provenafs.blobstore import BlobError, BlobStore, ObjectInfo
from provenafs.blockcache import BlockCache
from provenafs.catalog import NAME_MAX, Catalog
from provenafs.credentials import CredentialBroker
from provenafs.errors import FsError, to_errno
from provenafs.inodes import InodeTable, NodeId, NodeKind
from provenafs.mount_options import MountOptions
from provenafs.namespace import Namespace
from provenafs.reader import ObjectReader, PrefetchBudget
from provenafs.sidecar_edit import (
    REASON_XATTR,
    MetadataApi,
    SidecarBuffer,
    SidecarEditor,
    can_edit_metadata,
    parse_reason,
)
from provenafs.sidecars import SidecarRenderer

__all__ = [
    "LONG_TIMEOUT",
    "SHORT_TIMEOUT",
    "Attributes",
    "Caller",
    "DirEntry",
    "FileReader",
    "Filesystem",
    "FsStats",
    "OpenFile",
]

# Kernel cache lifetimes (seconds). Inside a dataset version the tree changes only through
# writes (a later issue invalidates then); records, links and listings of datasets change
# under us, so the kernel asks again soon.
LONG_TIMEOUT = 300.0
SHORT_TIMEOUT = 1.0
READDIR_BATCH = 20  # entries per answer: about what fits a 4 KiB readdirplus buffer, so few
# returned entries go unsent (each returned entry counts as a kernel lookup)

_DIR_MODE = 0o555
_NO_DATA_DIR_MODE = 0o111
_FILE_MODE = 0o444
_LINK_MODE = 0o777


@dataclasses.dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    pid: int


@dataclasses.dataclass(frozen=True)
class Attributes:
    inode: int
    mode: int  # includes the file type bits (stat.S_IFDIR, ...)
    size: int
    nlink: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    entry_timeout: float
    attr_timeout: float


@dataclasses.dataclass(frozen=True)
class DirEntry:
    name: str
    attributes: Attributes
    next_offset: int


@dataclasses.dataclass(frozen=True)
class OpenFile:
    fh: int
    keep_cache: bool
    direct_io: bool


@dataclasses.dataclass(frozen=True)
class FsStats:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int


class FileReader(Protocol):
    """What an open dataset file needs from ``provenafs.reader.ObjectReader``."""

    async def read(self, offset: int, size: int) -> bytes: ...

    async def close(self) -> None: ...


class DataStoreApi(Protocol):
    """The part of ``DataStoreClient`` the filesystem uses (a protocol: no httpx import here)."""

    async def fetch_dataset(self, handle: str) -> DatasetRecord: ...

    async def list_all(self, page_size: int = 100) -> list[DatasetRecord]: ...

    async def presigned_url(self, handle: str, file_path: str, expires_in: int = 3600) -> str: ...

    def statistics(self) -> Mapping[str, int]: ...


ReaderFactory = Callable[[DatasetRecord, ObjectInfo], FileReader]

P = ParamSpec("P")
R = TypeVar("R")


def _translate_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn the IO layer's exceptions into ``FsError`` through the one ``to_errno`` table."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (ApiError, BlobError) as exc:
            raise FsError(to_errno(exc), f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@dataclasses.dataclass
class _DirHandle:
    entries: list[tuple[str, NodeId, Attributes]]


@dataclasses.dataclass
class _ReaderHandle:
    node: NodeId
    reader: FileReader


@dataclasses.dataclass
class _BytesHandle:
    node: NodeId
    data: bytes


def _seconds_to_ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _parent_path(path: str) -> tuple[str, str]:
    """``("raw/sub", "a.csv")`` for ``"raw/sub/a.csv"``; ``("", "a.csv")`` at the root."""
    parent, _, name = path.rpartition("/")
    return parent, name


class Filesystem:
    """The mount's filesystem core (see the module docstring for its rules)."""

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
    ) -> None:
        self._client = client
        self._broker = broker
        self._store = store
        self._cache = cache
        self._budget = budget
        self._options = options
        self._clock = clock
        self._reader_factory = reader_factory or self._object_reader
        self._catalog = Catalog(
            client,
            broker,
            store,
            clock=clock,
            metadata_ttl=options.metadata_ttl,
            listing_ttl=options.listing_ttl,
        )
        self._namespace = Namespace(self._catalog)
        self._inodes = InodeTable()
        self._sidecars = SidecarRenderer()
        self._started_ns = _seconds_to_ns(clock())
        self._next_fh = 1
        self._dirs: dict[int, _DirHandle] = {}
        self._files: dict[int, _ReaderHandle | _BytesHandle] = {}
        self._nursery: trio.Nursery | None = None
        self._status_snapshot: bytes | None = None
        # Metadata edits through sidecars (sidecar_edit): one editor, and the write buffer of
        # every sidecar open for writing by its fh (a client without update-metadata: none).
        self._sidecar_editor: SidecarEditor | None = None
        if isinstance(client, MetadataApi):
            self._sidecar_editor = SidecarEditor(
                client,
                self._catalog,
                default_reason=options.metadata_reason,
                on_changed=self._metadata_changed,
            )
        self._sidecar_writes: dict[int, SidecarBuffer] = {}

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Remember the mount's nursery: background work of open files runs under it."""
        self._nursery = nursery

    async def close(self) -> None:
        """Close every open file's reader and drop every handle."""
        files, self._files = self._files, {}
        self._dirs.clear()
        for handle in files.values():
            if isinstance(handle, _ReaderHandle):
                await handle.reader.close()

    # --- names and attributes ------------------------------------------------------------

    @_translate_errors
    async def lookup(self, parent: int, name: str, ctx: Caller) -> Attributes:
        parent_node = self._inodes.node(parent)
        if not parent_node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "lookup in a non-directory")
        node = await self._namespace.child(parent_node, name)
        attributes = await self._attributes(node)
        return dataclasses.replace(attributes, inode=self._inodes.remember(node))

    async def forget(self, inode: int, nlookup: int) -> None:
        self._inodes.forget(inode, nlookup)

    @_translate_errors
    async def getattr(self, inode: int, ctx: Caller) -> Attributes:
        attributes = await self._attributes(self._inodes.node(inode))
        return dataclasses.replace(attributes, inode=inode)

    async def _attributes(self, node: NodeId, *, fetch: bool = True) -> Attributes:
        """Attributes of *node* with inode 0 (the caller fills it in).

        With ``fetch=False`` (listing a prefix dir) nothing is fetched: unknown details are
        estimated and the timeouts are zero, so the kernel asks ``getattr`` before trusting them.
        """
        kind = node.kind
        if kind in (
            NodeKind.ROOT,
            NodeKind.PREFIX_DIR,
            NodeKind.BY_NAME_DIR,
            NodeKind.CONTROL_DIR,
        ):
            return self._make(stat.S_IFDIR | _DIR_MODE, 0, self._started_ns, SHORT_TIMEOUT)
        if kind is NodeKind.CONTROL_FILE:
            # The size of the snapshot the last open served (so stat after a read agrees with
            # it); reads are direct_io, so a newer, longer snapshot is still read whole.
            if self._status_snapshot is None:
                self._status_snapshot = self._status_bytes()
            size = len(self._status_snapshot)
            return self._make(stat.S_IFREG | _FILE_MODE, size, _seconds_to_ns(self._clock()), 0.0)
        if kind is NodeKind.BY_NAME_LINK:
            target = await self._namespace.link_target(node)
            return self._make(stat.S_IFLNK | _LINK_MODE, len(target), self._started_ns, 0.0)

        if not fetch:
            return self._estimated_attributes(node)

        record = await self._catalog.record(node.handle)
        mtime = _seconds_to_ns(record.updated_timestamp)
        if kind is NodeKind.DATASET_DIR:
            readable = await self._catalog.data_readable(record)
            mode = stat.S_IFDIR | (_DIR_MODE if readable else _NO_DATA_DIR_MODE)
            return self._make(mode, 0, mtime, SHORT_TIMEOUT, entry_timeout=LONG_TIMEOUT)
        if kind is NodeKind.SIDECAR:
            # An editable sidecar's attributes are never cached by the kernel: an edit through
            # this mount changes its size at once.
            size = self._sidecar_size(record)
            timeout = 0.0 if self._sidecar_writable(record) else SHORT_TIMEOUT
            mode = stat.S_IFREG | self._sidecar_mode(record)
            return self._make(mode, size, mtime, timeout, entry_timeout=SHORT_TIMEOUT)
        if kind is NodeKind.LATEST_LINK:
            target = await self._namespace.link_target(node)
            return self._make(stat.S_IFLNK | _LINK_MODE, len(target), mtime, SHORT_TIMEOUT)
        if kind is NodeKind.DATASET_SUBDIR:
            await self._require_data_read(record)
            parent, name = _parent_path(node.path)
            if name not in (await self._catalog.listing(record, parent)).subdirs:
                raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
            return self._make(stat.S_IFDIR | _DIR_MODE, 0, mtime, LONG_TIMEOUT)
        if kind is NodeKind.DATASET_FILE:
            info = await self._object_info(record, node)
            mtime = _seconds_to_ns(info.last_modified)
            return self._make(stat.S_IFREG | _FILE_MODE, info.size, mtime, LONG_TIMEOUT)
        raise AssertionError(f"unhandled node kind {kind}")

    def _estimated_attributes(self, node: NodeId) -> Attributes:
        """Attributes of a prefix dir's entry from what is cached, valid for no time at all."""
        record = self._catalog.cached_record(node.handle)
        mtime = _seconds_to_ns(record.updated_timestamp) if record else self._started_ns
        if node.kind is NodeKind.DATASET_DIR:
            readable = self._catalog.known_data_readable(record) if record else None
            mode = _NO_DATA_DIR_MODE if readable is False else _DIR_MODE
            return self._make(stat.S_IFDIR | mode, 0, mtime, 0.0)
        if node.kind is NodeKind.SIDECAR:
            size = self._sidecar_size(record) if record else 0
            mode = self._sidecar_mode(record) if record else _FILE_MODE
            return self._make(stat.S_IFREG | mode, size, mtime, 0.0)
        return self._make(stat.S_IFLNK | _LINK_MODE, 0, mtime, 0.0)

    def _make(
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
            mode=mode,
            size=size,
            nlink=2 if stat.S_ISDIR(mode) else 1,
            uid=self._options.uid,
            gid=self._options.gid,
            atime_ns=mtime_ns,
            mtime_ns=mtime_ns,
            ctime_ns=mtime_ns,
            entry_timeout=attr_timeout if entry_timeout is None else entry_timeout,
            attr_timeout=attr_timeout,
        )

    async def _require_data_read(self, record: DatasetRecord) -> None:
        if not await self._catalog.data_readable(record):
            raise FsError(errno.EACCES, f"no data-read access to {record.handle}")

    async def _object_info(self, record: DatasetRecord, node: NodeId) -> ObjectInfo:
        await self._require_data_read(record)
        parent, name = _parent_path(node.path)
        info = (await self._catalog.listing(record, parent)).files.get(name)
        if info is None:
            raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
        return info

    # --- directories ---------------------------------------------------------------------

    @_translate_errors
    async def opendir(self, inode: int, ctx: Caller) -> int:
        node = self._inodes.node(inode)
        if not node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "not a directory")
        if node.kind in (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR):
            await self._require_data_read(await self._catalog.record(node.handle))
        fetch = node.kind is not NodeKind.PREFIX_DIR
        entries = []
        for name, child in await self._namespace.children(node):
            entries.append((name, child, await self._attributes(child, fetch=fetch)))
        fh = self._new_fh()
        self._dirs[fh] = _DirHandle(entries)
        return fh

    async def readdir(self, fh: int, offset: int) -> list[DirEntry]:
        """Up to ``READDIR_BATCH`` entries after *offset* (0 = from the start); [] at the end."""
        handle = self._dirs.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, "unknown directory handle")
        result = []
        for index in range(max(offset, 0), min(len(handle.entries), offset + READDIR_BATCH)):
            name, node, attributes = handle.entries[index]
            inode = self._inodes.remember(node)
            entry_attributes = dataclasses.replace(attributes, inode=inode)
            result.append(DirEntry(name, entry_attributes, index + 1))
        return result

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files ---------------------------------------------------------------------------

    @_translate_errors
    async def open(self, inode: int, flags: int, ctx: Caller) -> OpenFile:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR and flags & (os.O_ACCMODE | os.O_TRUNC) != os.O_RDONLY:
            return await self._open_sidecar_for_writing(node, flags)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise FsError(errno.EROFS, "the mount is read-only")
        if node.kind.is_directory:
            raise FsError(errno.EISDIR, "is a directory")
        if node.kind is NodeKind.DATASET_FILE:
            record = await self._catalog.record(node.handle)
            info = await self._object_info(record, node)
            reader = self._reader_factory(record, info)
            fh = self._new_fh()
            self._files[fh] = _ReaderHandle(node, reader)
            # Objects are keyed by ETag and their mtime comes from the listing: the kernel
            # drops cached pages itself when a changed object shows a new mtime.
            return OpenFile(fh, keep_cache=True, direct_io=False)
        if node.kind is NodeKind.SIDECAR:
            data = self._sidecars.render(await self._catalog.record(node.handle))
            fh = self._new_fh()
            self._files[fh] = _BytesHandle(node, data)
            return OpenFile(fh, keep_cache=False, direct_io=False)
        if node.kind is NodeKind.CONTROL_FILE:
            fh = self._new_fh()
            self._status_snapshot = self._status_bytes()
            self._files[fh] = _BytesHandle(node, self._status_snapshot)
            return OpenFile(fh, keep_cache=False, direct_io=True)
        raise FsError(errno.ELOOP, "symlinks are resolved by the kernel")

    @_translate_errors
    async def read(self, fh: int, offset: int, size: int) -> bytes:
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            return sidecar.read(max(offset, 0), max(size, 0))
        handle = self._files.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, "unknown file handle")
        if offset < 0 or size < 0:
            raise FsError(errno.EINVAL, "negative offset or size")
        if isinstance(handle, _BytesHandle):
            return handle.data[offset : offset + size]
        return await handle.reader.read(offset, size)

    async def release(self, fh: int) -> None:
        sidecar = self._sidecar_writes.pop(fh, None)
        if sidecar is not None:
            await self._release_sidecar(sidecar)
            return
        handle = self._files.pop(fh, None)
        if isinstance(handle, _ReaderHandle):
            await handle.reader.close()

    async def flush(self, fh: int) -> None:
        """A written sidecar is committed here, so that ``close()`` returns the outcome."""
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            await self._commit_sidecar(sidecar)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """A written sidecar is committed here too (editors fsync before they close)."""
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            await self._commit_sidecar(sidecar)

    def _object_reader(self, record: DatasetRecord, info: ObjectInfo) -> FileReader:
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
        )

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # --- sidecar edits (provenafs.sidecar_edit) ------------------------------------------

    @property
    def sidecar_editor(self) -> SidecarEditor | None:
        """Metadata edits and reverts; ``None`` when the client cannot update metadata."""
        return self._sidecar_editor

    def _sidecar_writable(self, record: DatasetRecord) -> bool:
        return (
            self._sidecar_editor is not None
            and not self._options.read_only
            and can_edit_metadata(record)
        )

    def _sidecar_mode(self, record: DatasetRecord) -> int:
        """``rw-r--r--`` where an edit can succeed, else ``r--r--r--``."""
        return _FILE_MODE | (stat.S_IWUSR if self._sidecar_writable(record) else 0)

    def _sidecar_size(self, record: DatasetRecord) -> int:
        """The record's sidecar size, or that of the newest unsaved edit of it."""
        for buffer in reversed(self._sidecar_writes.values()):
            if buffer.handle == record.handle and buffer.dirty:
                return len(buffer)
        return len(self._sidecars.render(record))

    async def _require_sidecar_writable(self, handle: str) -> SidecarEditor:
        if self._options.read_only or self._sidecar_editor is None:
            raise FsError(errno.EROFS, "metadata edits need a read-write mount")
        record = await self._catalog.record(handle)
        if self._sidecar_editor is None or not self._sidecar_writable(record):
            why = "locked" if record.locked else "needs item role metadata-write or admin"
            raise FsError(errno.EACCES, f"the metadata of {handle} cannot be edited ({why})")
        return self._sidecar_editor

    async def _open_sidecar_for_writing(self, node: NodeId, flags: int) -> OpenFile:
        await self._require_sidecar_writable(node.handle)
        truncate = bool(flags & os.O_TRUNC)
        initial = (
            b"" if truncate else self._sidecars.render(await self._catalog.record(node.handle))
        )
        fh = self._new_fh()
        self._sidecar_writes[fh] = SidecarBuffer(node.handle, initial, dirty=truncate)
        return OpenFile(fh, keep_cache=False, direct_io=True)

    async def _commit_sidecar(self, buffer: SidecarBuffer) -> None:
        """Commit a dirty buffer once; later flushes repeat a failure without another call."""
        if not buffer.dirty:
            if buffer.failure is not None:
                raise FsError(buffer.failure.errno, buffer.failure.message)
            return
        buffer.dirty = False
        editor = self._sidecar_editor
        if editor is None:
            buffer.failure = FsError(errno.EACCES, "metadata edits are not available")
            raise buffer.failure
        try:
            await editor.commit(buffer.handle, buffer.contents(), None)
        except FsError as exc:
            buffer.failure = exc
            raise

    async def _release_sidecar(self, buffer: SidecarBuffer) -> None:
        """A buffer never flushed (no close seen) is committed now; failures only reach the log."""
        if not buffer.dirty:
            return
        with contextlib.suppress(FsError):  # logged once by the editor
            await self._commit_sidecar(buffer)

    @_translate_errors
    async def _truncate_sidecar(self, inode: int, size: int, fh: int | None) -> Attributes:
        """``ftruncate``/``truncate`` of a sidecar: resize its open write buffer(s)."""
        node = self._inodes.node(inode)
        await self._require_sidecar_writable(node.handle)
        buffer = self._sidecar_writes.get(fh) if fh is not None else None
        buffers = (
            [buffer]
            if buffer is not None
            else [b for b in self._sidecar_writes.values() if b.handle == node.handle]
        )
        if not buffers:
            # A truncate with no writer open is a whole new (cut) document: commit it now.
            record = await self._catalog.record(node.handle)
            data = self._sidecars.render(record)
            cut = SidecarBuffer(node.handle, data)
            cut.truncate(size)
            await self._commit_sidecar(cut)
        for each in buffers:
            each.truncate(size)
        return await self.getattr(inode, Caller(0, 0, 0))

    @_translate_errors
    async def _set_sidecar_reason(self, node: NodeId, name: str, value: bytes | None) -> None:
        """Set (or with ``None`` remove) the reason of the next edit of a sidecar."""
        if name != REASON_XATTR:
            raise FsError(errno.ENOTSUP, f"sidecars accept only the {REASON_XATTR} attribute")
        editor = await self._require_sidecar_writable(node.handle)
        if value is None and editor.reason_for(node.handle) is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        editor.set_reason(node.handle, None if value is None else parse_reason(value))

    async def _metadata_changed(self, handle: str) -> None:
        """After an edit or a revert: the catalog has forgotten *handle* (the editor did that).

        Editable sidecars' attributes are never cached by the kernel, an open sidecar keeps its
        snapshot, so nothing else is stale; dataset dirs refresh their mtime within
        ``SHORT_TIMEOUT``.
        """
        self._status_snapshot = None

    # --- links, xattrs, access, statfs ---------------------------------------------------

    @_translate_errors
    async def readlink(self, inode: int, ctx: Caller) -> str:
        node = self._inodes.node(inode)
        if not node.kind.is_symlink:
            raise FsError(errno.EINVAL, "not a symlink")
        return await self._namespace.link_target(node)

    @_translate_errors
    async def getxattr(self, inode: int, name: str, ctx: Caller) -> bytes:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.DATASET_FILE and name == "user.provena.presigned_url":
            record = await self._catalog.record(node.handle)
            await self._object_info(record, node)
            url = await self._client.presigned_url(node.handle, node.path)
            return url.encode()
        value = (await self._xattrs(node)).get(name)
        if value is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        return value.encode("utf-8", "surrogateescape")

    @_translate_errors
    async def listxattr(self, inode: int, ctx: Caller) -> list[str]:
        return sorted(await self._xattrs(self._inodes.node(inode)))

    async def _xattrs(self, node: NodeId) -> dict[str, str]:
        kind = node.kind
        if kind is NodeKind.DATASET_DIR:
            record = await self._catalog.record(node.handle)
            versioning = record.versioning
            return {
                "user.provena.handle": record.handle,
                "user.provena.version": str(versioning.version) if versioning else "",
                "user.provena.release_status": record.release_status,
                "user.provena.locked": "true" if record.locked else "false",
                "user.provena.roles": ",".join(sorted(record.roles or ())),
                "user.provena.previous_version": (versioning and versioning.previous_version) or "",
                "user.provena.next_version": (versioning and versioning.next_version) or "",
            }
        if kind is NodeKind.DATASET_FILE:
            record = await self._catalog.record(node.handle)
            info = await self._object_info(record, node)
            return {
                "user.provena.handle": record.handle,
                "user.s3.etag": info.etag,
                "user.s3.key": info.key,
            }
        if kind is NodeKind.SIDECAR:
            reason = self._sidecar_editor and self._sidecar_editor.reason_for(node.handle)
            return {
                "user.provena.handle": node.handle,
                **({REASON_XATTR: reason} if reason else {}),
            }
        if kind in (NodeKind.DATASET_SUBDIR, NodeKind.LATEST_LINK):
            return {"user.provena.handle": node.handle}
        return {}

    @_translate_errors
    async def access(self, inode: int, mode: int, ctx: Caller) -> None:
        attributes = await self.getattr(inode, ctx)
        if mode & os.W_OK and not attributes.mode & stat.S_IWUSR:
            raise FsError(errno.EROFS if self._options.read_only else errno.EACCES, "not writable")
        if mode & os.R_OK and not attributes.mode & stat.S_IROTH:
            raise FsError(errno.EACCES, "not readable")
        if mode & os.X_OK and not attributes.mode & stat.S_IXOTH:
            raise FsError(errno.EACCES, "not searchable or executable")

    async def statfs(self) -> FsStats:
        return FsStats(
            block_size=4096,
            blocks=0,
            blocks_free=0,
            files=len(self._inodes),
            files_free=0,
            name_max=NAME_MAX,
        )

    # --- the status file -----------------------------------------------------------------

    def _status_bytes(self) -> bytes:
        status: dict[str, Any] = {
            "version": provenafs.__version__,
            "source": self._options.source,
            "mountpoint": str(self._options.mountpoint),
            "read_only": True,
            "open_files": len(self._files),
            "open_directories": len(self._dirs),
            "inodes": self._inodes.statistics(),
            "catalog": self._catalog.statistics(),
            "data_store_calls": dict(self._client.statistics()),
            "credentials": dict(self._broker.statistics()),
            "block_cache": dict(self._cache.statistics()),
            "prefetch_budget": dict(self._budget.statistics()),
            # When each held credential set expires; the credentials themselves never appear.
            "credential_expiries": {
                f"{handle} {kind}": expiry.isoformat()
                for (handle, kind), expiry in self._broker.expiries().items()
            },
        }
        text = json.dumps(status, sort_keys=True, indent=2, default=str)
        return (text + "\n").encode()

    # --- mutations: refused until the write issue lands ----------------------------------

    async def create(
        self, parent: int, name: str, mode: int, flags: int, ctx: Caller
    ) -> tuple[OpenFile, Attributes]:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def mkdir(self, parent: int, name: str, mode: int, ctx: Caller) -> Attributes:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def mknod(self, parent: int, name: str, mode: int, rdev: int, ctx: Caller) -> Attributes:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def symlink(self, parent: int, name: str, target: str, ctx: Caller) -> Attributes:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def link(self, inode: int, new_parent: int, new_name: str, ctx: Caller) -> Attributes:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def unlink(self, parent: int, name: str, ctx: Caller) -> None:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def rmdir(self, parent: int, name: str, ctx: Caller) -> None:
        raise FsError(errno.EROFS, "the mount is read-only")

    async def rename(  # noqa: PLR0917 (mirrors the FUSE operation)
        self,
        old_parent: int,
        old_name: str,
        new_parent: int,
        new_name: str,
        flags: int,
        ctx: Caller,
    ) -> None:
        raise FsError(errno.EROFS, "the mount is read-only")

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
        """Changing anything is ``EROFS``; a setattr that changes nothing returns the attributes.

        Changes are named either by value (``uid=``, ``atime_ns=``, ...) or as flags
        (``times=True``, ``owner=True``); both forms are accepted.
        """
        if size is not None and self._inodes.node(inode).kind is NodeKind.SIDECAR:
            return await self._truncate_sidecar(inode, size, fh)
        values = (size, mode, uid, gid, atime_ns, mtime_ns)
        if times or owner or any(value is not None for value in values):
            raise FsError(errno.EROFS, "the mount is read-only")
        return await self.getattr(inode, ctx or Caller(0, 0, 0))

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            return sidecar.write(offset, data)
        raise FsError(errno.EROFS, "the mount is read-only")

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Caller) -> None:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._set_sidecar_reason(node, name, value)
        raise FsError(errno.EROFS, "the mount is read-only")

    async def removexattr(self, inode: int, name: str, ctx: Caller) -> None:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._set_sidecar_reason(node, name, None)
        raise FsError(errno.EROFS, "the mount is read-only")
