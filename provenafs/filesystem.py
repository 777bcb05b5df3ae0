"""POSIX semantics of the mount in plain Python types: the core that ``fuse_ops`` adapts.

``Filesystem`` answers lookup, getattr, readdir, open/read, readlink, xattrs, access and statfs
for the tree of SPEC §1 (``namespace``), from the caches of ``catalog``; file contents come from
one ``ObjectReader`` per open file, sidecars from a snapshot of their bytes taken at open.
Permission bits tell the truth about the caller's item roles and about whether a write can
succeed, once a dataset's record is fetched; a prefix dir's entries are answered from the
dataset list until then (no call per dataset for ``ls -l``), with roles estimated
(``Catalog.estimated_record``) and ``access`` always answered from the fetched record.

Writes (SPEC §3): in the latest version of a dataset whose caller holds item ``admin``, every
change goes into the dataset's ``Draft`` (``provenafs.drafts``): the first change opens it, the
namespace shows it over the base version at once, files opened for writing get local bytes
(copy-on-write: a base file's bytes are fetched in parts unless it is truncated), and
flush/fsync/release make them durable. Refusals: ``-o ro`` or a version that is not the latest
``EROFS``; no item ``admin`` ``EACCES``; the top-level ``metadata.json`` ``EACCES``; renames
out of a dataset ``EXDEV``; the levels above datasets ``EROFS``. While a dataset's publish runs
(``begin_publish``..``end_publish``) its changes fail fast with ``EBUSY`` rather than hang the
kernel for the length of an upload. ``publish_done`` drops the draft view and queues kernel
cache invalidations, which a background task sends (never from inside a request: the kernel
may hold the very locks the notification needs).

In place (``-o writes=in-place``, docs/SEMANTICS.md): the data store decides refusals (its
write-credentials call; its reason logged once), and every change still goes into the draft
first, then is pushed into the dataset itself through the ``InPlacePublisher`` before the
operation returns: at the flush of a written file (so ``close()`` reports a failure) and after
unlink, rename, mkdir, rmdir and attribute changes. A failure is ``EACCES``/``EIO`` with the
draft kept. Every operation that changes a draft holds the dataset's ``ChangeGate`` shared, a
push holds it alone (``begin_publish``), so pushes see a still snapshot and changes wait
rather than fail; a push is never started while the calling task holds the gate.

Rules: names are ``str``, inodes ``int`` (1 = root); the only exception that leaves a public
method is ``FsError`` (API and object-store exceptions are translated through ``to_errno``
here, once); anything else is a bug the adapter turns into EIO. No pyfuse3, no blocking calls;
everything runs on the trio thread, so the tables need no locks.

Lookup counts: ``lookup`` and every entry that ``readdir`` returns count as one kernel
reference (pyfuse3 answers readdir with readdirplus). An adapter that cannot send an entry
``readdir`` returned should ``forget(entry.attributes.inode, 1)``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

import trio

import provenafs
from provenafs.api.errors import ApiError, AuthenticationFailed, Forbidden, PermissionDenied
from provenafs.api.models import DatasetRecord
from provenafs.blobstore import (
    AccessDenied,
    BlobError,
    BlobStore,
    ExpiredCredentials,
    Listing,
    ObjectInfo,
)
from provenafs.blockcache import BlockCache
from provenafs.catalog import NAME_MAX, Catalog
from provenafs.change_gate import ChangeGate
from provenafs.credentials import CredentialBroker
from provenafs.drafts import (
    METADATA_FILE,
    WHITEOUT,
    CarriedEntry,
    DirectoryEntry,
    Draft,
    DraftStore,
    Entry,
    StagedBlob,
    StagedEntry,
    Whiteout,
    default_root,
    join,
)
from provenafs.errors import FsError, to_errno
from provenafs.inodes import ORPHAN_MARK, InodeTable, NodeId, NodeKind
from provenafs.mount_options import MountOptions
from provenafs.namespace import BY_NAME, LATEST_SUFFIX, SIDECAR_SUFFIX, Namespace, check_name
from provenafs.publish import NothingToPublish, PublishError
from provenafs.reader import ObjectReader, PrefetchBudget
from provenafs.siblings import SiblingPrefetcher
from provenafs.sidecar_edit import (
    REASON_XATTR,
    MetadataApi,
    SidecarBuffer,
    SidecarEditor,
    can_edit_metadata,
    parse_reason,
)
from provenafs.sidecars import SidecarRenderer, sidecar_size
from provenafs.spill import SpillArea

log = logging.getLogger(__name__)

__all__ = [
    "COPY_PART_SIZE",
    "LONG_TIMEOUT",
    "SHORT_TIMEOUT",
    "Attributes",
    "Caller",
    "DirEntry",
    "FileReader",
    "Filesystem",
    "FsStats",
    "InPlacePublisher",
    "KernelCacheNotifier",
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
_DIR_MODE_WRITABLE = 0o755
_FILE_MODE_WRITABLE = 0o644
COPY_PART_SIZE = 8 << 20  # copy-on-write fetches a base file into the draft in parts this big
RENAME_NOREPLACE = 1  # linux/fs.h
_DATASET_DIR_KINDS = (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR)
_PREFIX_ENTRY_KINDS = (NodeKind.DATASET_DIR, NodeKind.SIDECAR, NodeKind.LATEST_LINK)
_DATASET_KINDS = (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR, NodeKind.DATASET_FILE)
_INVALIDATION_QUEUE = 10_000


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

    def with_inode(self, inode: int) -> Attributes:
        """These attributes for inode *inode* (``dataclasses.replace`` is 5x slower, and
        readdir of a big prefix does this for every entry)."""
        return Attributes(
            inode,
            self.mode,
            self.size,
            self.nlink,
            self.uid,
            self.gid,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            self.entry_timeout,
            self.attr_timeout,
        )


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

    async def list_all(
        self,
        page_size: int = 100,
        on_page: Callable[[Sequence[DatasetRecord]], None] | None = None,
    ) -> list[DatasetRecord]: ...

    async def presigned_url(self, handle: str, file_path: str, expires_in: int = 3600) -> str: ...

    def statistics(self) -> Mapping[str, int]: ...


ReaderFactory = Callable[[DatasetRecord, ObjectInfo, int | None], FileReader]


class KernelCacheNotifier(Protocol):
    """Drops kernel cache entries (``fuse_ops.KernelNotifier`` is the real one)."""

    async def invalidate_entry(self, parent_inode: int, name: str) -> None: ...

    async def invalidate_inode(self, inode: int, *, attr_only: bool = False) -> None: ...

    async def store(self, inode: int, offset: int, data: bytes) -> None:
        """Put ``data`` into the kernel's page cache of ``inode`` at ``offset``."""


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
        except OSError as exc:  # the draft's local disk (ENOSPC, EIO, ...)
            raise FsError(exc.errno or errno.EIO, f"local draft storage: {exc}") from exc

    return wrapper


class InPlacePublisher(Protocol):
    """What ``-o writes=in-place`` pushes through (``PublishService`` provides it)."""

    async def commit(self, handle: str) -> str: ...


@dataclasses.dataclass
class _DirHandle:
    entries: list[tuple[str, NodeId, Attributes]]


@dataclasses.dataclass
class _ReaderHandle:
    node: NodeId
    reader: FileReader
    inode: int = 0  # to find the file again after renames: its bytes may become staged
    # The folder's sibling prefetch, started once this file's first read is answered: started
    # at open, its GETs would compete with that read's own (cold time to first byte +50%).
    siblings_after_first_read: DatasetRecord | None = None


@dataclasses.dataclass
class _BytesHandle:
    node: NodeId
    data: bytes


@dataclasses.dataclass
class _BlobHandle:
    """An open staged file of a draft (any file opened for writing, or read once staged)."""

    node: NodeId
    blob: StagedBlob
    writable: bool
    append: bool


@dataclasses.dataclass(frozen=True)
class _FileView:
    """Where a dataset file's bytes are: a base object (``info``) or local (``staged``/``blob``)."""

    info: ObjectInfo | None
    staged: StagedEntry | None
    draft: Draft | None
    blob: StagedBlob | None = None  # an unlinked file still open
    mtime_ns: int | None = None  # a carried file's own mtime (exact, unlike ``info``'s float)

    def size_and_mtime(self) -> tuple[int, int]:
        if self.info is not None and self.mtime_ns is not None:
            return self.info.size, self.mtime_ns
        if self.blob is not None:
            return self.blob.size, self.blob.mtime_ns
        if self.staged is not None and self.draft is not None:
            return self.draft.staged_size(self.staged), self.draft.staged_mtime(self.staged)
        assert self.info is not None
        return self.info.size, _seconds_to_ns(self.info.last_modified)


def _is_writing(flags: int) -> bool:
    return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & (os.O_TRUNC | os.O_APPEND))


def _seconds_to_ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _parent_path(path: str) -> tuple[str, str]:
    """``("raw/sub", "a.csv")`` for ``"raw/sub/a.csv"``; ``("", "a.csv")`` at the root."""
    parent, _, name = path.rpartition("/")
    return parent, name


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
        self._catalog = Catalog(
            client,
            broker,
            store,
            clock=clock,
            metadata_ttl=options.metadata_ttl,
            listing_ttl=options.listing_ttl,
            username=username,
            prepare_listed=self._prepare_sidecar_sizes,
        )
        self._size_limiter = trio.CapacityLimiter(1)  # sidecar sizes of listed pages
        self._sizes_wanted: collections.Counter[str] = collections.Counter()  # prefixes listed
        self._draft_store = drafts
        self._namespace = Namespace(self._catalog, self._draft_of)
        self._inodes = InodeTable()
        self._sidecars = SidecarRenderer()
        self._started_ns = _seconds_to_ns(clock())
        self._next_fh = 1
        self._dirs: dict[int, _DirHandle] = {}
        self._files: dict[int, _ReaderHandle | _BytesHandle | _BlobHandle] = {}
        self._orphans: dict[NodeId, StagedBlob | ObjectInfo] = {}
        self._path_locks: dict[tuple[str, str], trio.Lock] = {}
        self._publishing: set[str] = set()  # draft mode: datasets whose publish runs
        # -o writes=in-place: changes share a dataset's gate, a push holds it alone; the pusher
        # is set by the daemon; the data store's last refusal of write access, per dataset.
        self._in_place = options.write_mode == "in-place"
        self._gate = ChangeGate()
        self._in_place_publisher: InPlacePublisher | None = None
        self._write_refusals: dict[str, str] = {}
        self._notifier: KernelCacheNotifier | None = None
        self._invalidations: list[tuple[int, str | None]] = []
        self._invalidations_ready: trio.Event | None = None
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
        self._in_place_publisher = publisher

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
            self._invalidations_ready = trio.Event()
            nursery.start_soon(self._send_invalidations, self._notifier)

    async def close(self) -> None:
        """Close every open file's reader, make staged files durable, and drop every handle."""
        files, self._files = self._files, {}
        self._dirs.clear()
        for handle in files.values():
            if isinstance(handle, _ReaderHandle):
                await handle.reader.close()
            elif isinstance(handle, _BlobHandle):
                await self._release_blob_handle(handle)
        if self._draft_store is not None:
            self._draft_store.close()

    # --- names and attributes ------------------------------------------------------------

    @_translate_errors
    async def lookup(self, parent: int, name: str, ctx: Caller) -> Attributes:
        parent_node = self._inodes.node(parent)
        if not parent_node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "lookup in a non-directory")
        if parent_node.kind in _DATASET_DIR_KINDS:
            self._warm_if_cold(parent_node.handle)
        node = await self._namespace.child(parent_node, name)
        if node.kind is NodeKind.DATASET_DIR and self._catalog.listed(node.handle) is None:
            # Reached by path, not from the list: its record was fetched just now, and what
            # comes next is likely inside it.
            self._warm_dataset_soon(node.handle)
        attributes = await self._attributes(node)
        return dataclasses.replace(attributes, inode=self._inodes.remember(node))

    def _warm_if_cold(self, handle: str) -> None:
        """Something inside a dataset is wanted: warm it unless its record is fresh."""
        if self._catalog.fresh_record(handle) is None:
            self._warm_dataset_soon(handle)

    def _warm_dataset_soon(self, handle: str) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._warm_dataset, handle)

    async def _warm_dataset(self, handle: str) -> None:
        """What comes inside a dataset (a name looked up, ``ls``, ``open``) needs its record,
        read credentials and top listing: fetch the record and the credentials side by side,
        then the listing, while the operation that asked waits on the same fetches.

        Never for a mere ``stat`` of the dataset directory (``ls -l`` of a prefix must not cost
        a call per dataset): only at the first access inside it, or when its record had to be
        fetched anyway. Speculative and quiet: a dataset the caller may not read simply fails
        here, and the operation that needs the answer asks again and reports.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._broker.read, handle)
                record = await self._catalog.record(handle)
                if await self._catalog.data_readable(record):
                    await self._catalog.listing(record, "")
        except* Exception as group:  # noqa: BLE001 -- never into the mount's nursery: a guess
            log.debug("warming %s: %s", handle, [type(e).__name__ for e in group.exceptions])

    async def forget(self, inode: int, nlookup: int) -> None:
        try:
            node = self._inodes.node(inode)
        except FsError:
            return
        self._inodes.forget(inode, nlookup)
        if node in self._orphans and self._inodes.find(node) is None:
            del self._orphans[node]

    @_translate_errors
    async def getattr(self, inode: int, ctx: Caller) -> Attributes:
        attributes = await self._attributes(self._inodes.node(inode))
        return dataclasses.replace(attributes, inode=inode)

    async def _attributes(
        self, node: NodeId, *, fetch: bool = True, exact: bool = False
    ) -> Attributes:
        """Attributes of *node* with inode 0 (the caller fills it in).

        A prefix dir's entries (dataset dir, sidecar, ``@latest``) are answered from a fresh
        record, else from the fresh dataset list with estimated roles (``_prefix_entry``),
        else the record is fetched. With ``fetch=False`` (listing a prefix dir) nothing is
        fetched: what neither says is estimated, with zero timeouts, so the kernel asks
        ``getattr`` before trusting it. ``exact`` (``access``) always uses a fetched record.
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
            return self._make(
                stat.S_IFLNK | _LINK_MODE, len(target), self._started_ns, SHORT_TIMEOUT
            )
        if kind in _PREFIX_ENTRY_KINDS:
            return await self._prefix_entry(node, fetch=fetch, exact=exact)

        record = await self._catalog.record(node.handle)
        mtime = _seconds_to_ns(record.updated_timestamp)
        dir_mode, file_mode = self._content_modes(record)
        timeout = self._content_timeout(record)
        if kind is NodeKind.DATASET_SUBDIR:
            await self._require_data_read(record)
            draft = self._draft_of(node.handle)
            entry = draft.resolve(node.path) if draft is not None else None
            if isinstance(entry, DirectoryEntry):
                mtime = entry.mtime_ns
            elif entry is not None or node.path.startswith(ORPHAN_MARK):
                raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
            else:
                parent, name = _parent_path(node.path)
                if name not in (await self._catalog.listing(record, parent)).subdirs:
                    raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
            return self._make(stat.S_IFDIR | dir_mode, 0, mtime, timeout)
        if kind is NodeKind.DATASET_FILE:
            view = await self._file_view(record, node)
            size, mtime = view.size_and_mtime()
            if node.path == METADATA_FILE:
                file_mode = _FILE_MODE
            attributes = self._make(stat.S_IFREG | file_mode, size, mtime, timeout)
            if view.blob is not None and view.blob.path is None:
                attributes = dataclasses.replace(attributes, nlink=0)  # unlinked, still open
            return attributes
        raise AssertionError(f"unhandled node kind {kind}")

    async def _prefix_entry(self, node: NodeId, *, fetch: bool, exact: bool) -> Attributes:
        """Attributes of a dataset dir, sidecar or ``@latest`` link (see ``_attributes``).

        From the list (no call): modes from the estimated record (``Catalog.estimated_record``:
        roles unknown means no write bits and data readable), a sidecar's size from rendering
        that record; timeouts short, and exact once the record is fetched.
        """
        kind = node.kind
        record = self._catalog.fresh_record(node.handle)
        estimated = False
        if record is None and not exact:
            record = self._catalog.estimated_record(node.handle)
            estimated = record is not None
        if record is None:
            if not fetch:
                return self._estimated_attributes(node)
            record = await self._catalog.record(node.handle)
        mtime = _seconds_to_ns(record.updated_timestamp)
        if kind is NodeKind.DATASET_DIR:
            readable = self._catalog.known_data_readable(record)
            if readable is None:
                fetched = fetch and not estimated
                readable = await self._catalog.data_readable(record) if fetched else True
            dir_mode, _ = self._content_modes(record)
            mode = stat.S_IFDIR | (dir_mode if readable else _NO_DATA_DIR_MODE)
            return self._make(mode, 0, mtime, SHORT_TIMEOUT, entry_timeout=LONG_TIMEOUT)
        if kind is NodeKind.SIDECAR:
            # An editable sidecar's attributes are never cached by the kernel: an edit through
            # this mount changes its size at once. (Reads are direct_io: an estimated size
            # never cuts a read short.)
            size = self._sidecar_size(record)
            writable = self._sidecar_writable(record)
            timeout = 0.0 if writable and not estimated else SHORT_TIMEOUT
            mode = stat.S_IFREG | self._sidecar_mode(record)
            return self._make(mode, size, mtime, timeout, entry_timeout=SHORT_TIMEOUT)
        target = self._namespace.listed_link_target(node)
        if target is None:
            if not fetch:
                return self._make(stat.S_IFLNK | _LINK_MODE, 0, mtime, 0.0)
            target = await self._namespace.link_target(node)
        return self._make(stat.S_IFLNK | _LINK_MODE, len(target), mtime, SHORT_TIMEOUT)

    def _content_modes(self, record: DatasetRecord) -> tuple[int, int]:
        """Permission bits of a dataset's directories and files: write bits where writes work."""
        if self._write_refusal(record, "") is None:
            return _DIR_MODE_WRITABLE, _FILE_MODE_WRITABLE
        return _DIR_MODE, _FILE_MODE

    def _content_timeout(self, record: DatasetRecord) -> float:
        """Kernel cache lifetime inside a dataset: long only where nothing can change it."""
        if self._write_refusal(record, "") is None or self._draft_of(record.handle) is not None:
            return SHORT_TIMEOUT
        return LONG_TIMEOUT

    def _estimated_attributes(self, node: NodeId) -> Attributes:
        """Attributes of a prefix dir's entry from what is cached, valid for no time at all."""
        record = self._catalog.cached_record(node.handle)
        mtime = _seconds_to_ns(record.updated_timestamp) if record else self._started_ns
        if node.kind is NodeKind.DATASET_DIR:
            readable = self._catalog.known_data_readable(record) if record else None
            dir_mode = self._content_modes(record)[0] if record else _DIR_MODE
            mode = _NO_DATA_DIR_MODE if readable is False else dir_mode
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

    async def _file_view(self, record: DatasetRecord, node: NodeId) -> _FileView:
        """Where the bytes of the dataset file *node* are: the draft decides, then the base."""
        await self._require_data_read(record)
        if node.path.startswith(ORPHAN_MARK):
            orphan = self._orphans.get(node)
            if isinstance(orphan, StagedBlob):
                return _FileView(None, None, orphan.draft, orphan)
            if orphan is None:
                raise FsError(errno.ENOENT, "the file was removed")
            return _FileView(orphan, None, None)
        draft = self._draft_of(node.handle)
        entry = draft.resolve(node.path) if draft is not None else None
        if isinstance(entry, StagedEntry):
            return _FileView(None, entry, draft)
        if isinstance(entry, CarriedEntry):
            info = ObjectInfo(entry.base_key, entry.size, entry.etag, entry.mtime_ns / 1e9)
            return _FileView(info, None, draft, mtime_ns=entry.mtime_ns)
        if entry is not None:
            raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
        parent, name = _parent_path(node.path)
        base_info = (await self._catalog.listing(record, parent)).files.get(name)
        if base_info is None:
            raise FsError(errno.ENOENT, f"{node.path!r} is gone from {node.handle}")
        return _FileView(base_info, None, draft)

    # --- directories ---------------------------------------------------------------------

    @_translate_errors
    async def opendir(self, inode: int, ctx: Caller) -> int:
        node = self._inodes.node(inode)
        if not node.kind.is_directory:
            raise FsError(errno.ENOTDIR, "not a directory")
        if node.kind in (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR):
            self._warm_if_cold(node.handle)
            await self._require_data_read(await self._catalog.record(node.handle))
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
            result.append(DirEntry(name, attributes.with_inode(inode), index + 1))
        return result

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files ---------------------------------------------------------------------------

    @_translate_errors
    async def open(self, inode: int, flags: int, ctx: Caller) -> OpenFile:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR and flags & (os.O_ACCMODE | os.O_TRUNC) != os.O_RDONLY:
            return await self._open_sidecar_for_writing(node, flags)
        if node.kind.is_directory:
            raise FsError(errno.EISDIR, "is a directory")
        if node.kind is NodeKind.DATASET_FILE and _is_writing(flags):
            return await self._open_for_writing(node, flags)
        if _is_writing(flags):
            raise await self._refusal_for(node)
        if node.kind is NodeKind.DATASET_FILE:
            self._warm_if_cold(node.handle)
            record = await self._catalog.record(node.handle)
            view = await self._file_view(record, node)
            if view.info is None:
                assert view.draft is not None
                blob = view.blob or view.draft.blob_for(node.path, view.staged)  # type: ignore[arg-type]
                return self._open_blob(node, blob, flags)
            reader = self._reader_factory(record, view.info, inode)
            fh = self._new_fh()
            self._files[fh] = _ReaderHandle(
                node,
                reader,
                inode,
                siblings_after_first_read=record if view.draft is None else None,
            )
            # Objects are keyed by ETag and their mtime comes from the listing: the kernel
            # drops cached pages itself when a changed object shows a new mtime.
            return OpenFile(fh, keep_cache=True, direct_io=False)
        if node.kind is NodeKind.SIDECAR:
            # The kernel may hold a size estimated from the list, or from an older record: the
            # bytes are read direct_io (a read is never cut at a stale size), and the kernel is
            # told to ask again, so stat shows this document's size from now on.
            was_fresh = self._catalog.fresh_record(node.handle) is not None
            data = self._sidecars.render(await self._catalog.record(node.handle))
            if not was_fresh:
                self._invalidate(inode, None)
            fh = self._new_fh()
            self._files[fh] = _BytesHandle(node, data)
            return OpenFile(fh, keep_cache=False, direct_io=True)
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
        if isinstance(handle, _BlobHandle):
            return await handle.blob.read(offset, size)
        staged = self._staged_since_open(handle)
        if staged is not None:
            # Written through another handle after this one opened: same file, new bytes.
            draft, entry = staged
            return await draft.read_staged(entry, offset, size)
        data = await handle.reader.read(offset, size)
        record, handle.siblings_after_first_read = handle.siblings_after_first_read, None
        if record is not None and self._nursery is not None:
            self._nursery.start_soon(self._prefetch_siblings, record, handle.node.path)
        return data

    def _staged_since_open(self, handle: _ReaderHandle) -> tuple[Draft, StagedEntry] | None:
        draft = self._draft_of(handle.node.handle)
        if draft is None:
            return None
        try:
            node = self._inodes.node(handle.inode)
        except FsError:
            return None
        entry = draft.resolve(node.path)
        return (draft, entry) if isinstance(entry, StagedEntry) else None

    async def release(self, fh: int) -> None:
        sidecar = self._sidecar_writes.pop(fh, None)
        if sidecar is not None:
            await self._release_sidecar(sidecar)
            return
        handle = self._files.pop(fh, None)
        if isinstance(handle, _ReaderHandle):
            await handle.reader.close()
        elif isinstance(handle, _BlobHandle):
            draft = handle.blob.draft
            async with self._gate.change(draft.handle):
                await self._release_blob_handle(handle)
            await self._settle_in_place(draft)

    @_translate_errors
    async def flush(self, fh: int) -> None:
        """A written sidecar is committed here, so that ``close()`` returns the outcome.

        A staged file's bytes and size are made durable here (``close()`` acknowledges them);
        in place, the dataset's pending changes are then pushed into it (``close()`` fails
        if they could not be).
        """
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            await self._commit_sidecar(sidecar)
        handle = self._files.get(fh)
        if isinstance(handle, _BlobHandle) and handle.writable:
            await self._record(handle)
            await self._push_in_place(handle.blob.draft.handle)

    @_translate_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        """A written sidecar is committed here too (editors fsync before they close)."""
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            await self._commit_sidecar(sidecar)
        handle = self._files.get(fh)
        if isinstance(handle, _BlobHandle) and handle.writable:
            await self._record(handle)

    async def _record(self, handle: _BlobHandle) -> None:
        """Make a written file's bytes and size durable in its draft."""
        draft = handle.blob.draft
        async with self._gate.change(draft.handle):
            await draft.record_blob(handle.blob)

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
        parent, name = _parent_path(path)
        try:
            listing = await self._catalog.listing(record, parent)
        except Exception as exc:  # noqa: BLE001 -- a prefetch: the reads that need it report
            log.debug("no sibling prefetch after %s: %r", path, exc)
            return
        self._siblings.after_open(record.handle, record.s3.bucket_name, parent, listing.files, name)

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
            if buffer.handle == record.handle and buffer.unsaved:
                return len(buffer)
        return self._sidecars.size(record)

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
            self._sidecars.remember_size(record, size)

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
        self._sidecar_writes[fh] = SidecarBuffer(node.handle, initial, replaced=truncate)
        return OpenFile(fh, keep_cache=False, direct_io=True)

    async def _commit_sidecar(self, buffer: SidecarBuffer) -> None:
        """Commit a dirty buffer once; later flushes repeat a failure without another call."""
        if not buffer.dirty:
            if buffer.failure is not None:
                raise FsError(buffer.failure.errno, buffer.failure.message)
            return
        data = buffer.take_for_commit()
        editor = self._sidecar_editor
        if editor is None:
            buffer.failure = FsError(errno.EACCES, "metadata edits are not available")
            raise buffer.failure
        try:
            await editor.commit(buffer.handle, data, None)
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
        """After an edit or a revert (the editor has made the catalog forget *handle*).

        The kernel drops what it cached of the sidecar and the dataset dir (size, mtime) and of
        ``by-name/`` (the display name may have changed); the dataset's files are untouched.
        """
        self._status_snapshot = None
        for kind in (NodeKind.SIDECAR, NodeKind.DATASET_DIR):
            inode = self._inodes.find(NodeId(kind, handle))
            if inode is not None:
                self._invalidate(inode, None)
        for node, _inode in self._inodes.nodes_of_kinds((NodeKind.BY_NAME_LINK,)):
            parent_inode, name = self._parent_inode_and_name(node)
            if parent_inode is not None:
                self._invalidate(parent_inode, name)

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
            view = await self._file_view(record, node)
            if view.info is None or not view.info.key.startswith(record.s3.path):
                raise FsError(errno.ENODATA, "a file of the draft has no object to presign yet")
            key_path = view.info.key[len(record.s3.path) :]
            url = await self._client.presigned_url(node.handle, key_path)
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
            info = (await self._file_view(record, node)).info
            if info is None:  # staged in the draft: no object yet
                return {"user.provena.handle": record.handle}
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
        # From a fetched record: an answer from the list's estimated modes could refuse wrongly.
        node = self._inodes.node(inode)
        if node.kind is NodeKind.DATASET_DIR:
            self._warm_if_cold(node.handle)  # chdir asks this on its way in
        attributes = await self._attributes(node, exact=True)
        if mode & os.W_OK and not attributes.mode & stat.S_IWUSR:
            raise await self._refusal_for(self._inodes.node(inode))
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

    def _status_bytes(self) -> bytes:
        status: dict[str, Any] = {
            "version": provenafs.__version__,
            "source": self._options.source,
            "mountpoint": str(self._options.mountpoint),
            "read_only": self._options.read_only,
            "write_mode": self._options.write_mode,
            "drafts": [dataclasses.asdict(draft.summary()) for draft in self.draft_store.drafts()],
            "publishing": sorted(self._publishing),
            "open_files": len(self._files),
            "open_directories": len(self._dirs),
            "inodes": self._inodes.statistics(),
            "catalog": self._catalog.statistics(),
            "data_store_calls": dict(self._client.statistics()),
            "credentials": dict(self._broker.statistics()),
            "block_cache": dict(self._cache.statistics()),
            "prefetch_budget": dict(self._budget.statistics()),
            "sibling_prefetch": dict(self._siblings.statistics()) if self._siblings else {},
            "spill": dict(self._spill.statistics()) if self._spill else {},
            "s3": dict(getattr(self._store, "statistics", dict)()),
            # When each held credential set expires; the credentials themselves never appear.
            "credential_expiries": {
                f"{handle} {kind}": expiry.isoformat()
                for (handle, kind), expiry in self._broker.expiries().items()
            },
        }
        text = json.dumps(status, sort_keys=True, indent=2, default=str)
        return (text + "\n").encode()

    # --- writes: refusals and drafts -----------------------------------------------------

    def _write_refusal(
        self, record: DatasetRecord, path: str, *, from_record: bool = True
    ) -> FsError | None:
        """Why a change at *path* of *record*'s dataset cannot happen; None when it can.

        In place, a lock or a release is read from the record for permission bits only
        (``from_record``); a change asks the data store instead (``_require_write_access``).
        """
        if self._options.read_only:
            return FsError(errno.EROFS, "the mount is read-only (-o ro)")
        roles = record.roles or frozenset()
        if self._in_place:
            if not roles & {"admin", "dataset-data-write"}:
                return FsError(errno.EACCES, f"{record.handle}: needs dataset-data-write")
            if from_record and (record.locked or record.release_status != "NOT_RELEASED"):
                state = "locked" if record.locked else record.release_status
                return FsError(errno.EACCES, f"{record.handle} is {state}: no in-place writes")
        else:
            if not record.is_latest:
                return FsError(
                    errno.EROFS, f"{record.handle} is not the latest version (see its @latest)"
                )
            if "admin" not in roles:
                return FsError(errno.EACCES, f"versioning {record.handle} needs item role admin")
        if path == METADATA_FILE:
            return FsError(errno.EACCES, "metadata.json is the data store's (edit the sidecar)")
        return None

    async def _refusal_for(self, node: NodeId) -> FsError:
        """The error a change of *node* gets when its attributes show no write bit."""
        if self._options.read_only:
            return FsError(errno.EROFS, "the mount is read-only (-o ro)")
        if node.kind in _DATASET_KINDS:
            record = await self._catalog.record(node.handle)
            refusal = self._write_refusal(record, node.path)
            return refusal or FsError(errno.EACCES, "not writable")
        if node.kind is NodeKind.SIDECAR:
            return FsError(errno.EACCES, "this sidecar cannot be edited")
        if not node.kind.is_directory and not node.kind.is_symlink:
            return FsError(errno.EACCES, "not writable")
        return FsError(errno.EROFS, "only dataset directories can be changed")

    async def _dataset_parent(self, parent: int) -> tuple[NodeId, DatasetRecord]:
        """The dataset directory *parent* a change happens in, with its record."""
        node = self._inodes.node(parent)
        if node.kind not in _DATASET_DIR_KINDS:
            if not node.kind.is_directory:
                raise FsError(errno.ENOTDIR, "not a directory")
            raise await self._refusal_for(node)
        return node, await self._catalog.record(node.handle)

    async def _check_change(self, record: DatasetRecord, *paths: str) -> None:
        """Refuse a change at *paths* that cannot happen (nothing is created on disk)."""
        for path in paths:
            refusal = self._write_refusal(record, path, from_record=False)
            if refusal is not None:
                raise refusal
        if self._in_place:
            await self._require_write_access(record)
        await self._require_data_read(record)
        if record.handle in self._publishing:
            raise FsError(errno.EBUSY, f"{record.handle} is being published; try again after")

    async def _require_write_access(self, record: DatasetRecord) -> None:
        """In place, the data store decides: its refusal of write credentials (locked, pending
        review, released, no role) is ``EACCES``, and its reason is logged once."""
        handle = record.handle
        try:
            await self._broker.write(handle)
        except (Forbidden, PermissionDenied, AuthenticationFailed) as exc:
            reason = str(exc)
            if self._write_refusals.get(handle) != reason:
                self._write_refusals[handle] = reason
                log.warning("%s: the data store refuses in-place writes: %s", handle, reason)
            raise FsError(errno.EACCES, f"{handle}: {reason}") from exc
        self._write_refusals.pop(handle, None)

    async def _push_in_place(self, handle: str) -> None:
        """In place: the dataset's pending changes go into it before the calling operation
        returns. A failure keeps them in the draft (the quiet-delay publisher tries again) and
        is the operation's error: ``EACCES`` when S3 or the data store refused, else ``EIO``."""
        if not self._in_place or self._in_place_publisher is None:
            return
        try:
            await self._in_place_publisher.commit(handle)
        except NothingToPublish:
            return
        except PublishError as exc:
            cause = exc.__cause__
            code = (
                errno.EACCES if cause is not None and to_errno(cause) == errno.EACCES else errno.EIO
            )
            raise FsError(code, f"{handle}: kept in the draft, not in S3: {exc}") from exc

    async def _settle_in_place(self, draft: Draft) -> None:
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
        draft = self.draft_store.get(record.handle)
        if draft is None:
            draft = await self.draft_store.open(
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
        parent, name = _parent_path(path)
        if draft is not None and draft.resolve(parent) is not None:
            return False
        listing = await self._catalog.listing(record, parent)
        return name in listing.files or name in listing.subdirs

    def _detach(self, node: NodeId, keep: StagedBlob | ObjectInfo | None) -> None:
        """Give *node*'s number a private name; open files of it still find *keep*."""
        orphan = self._inodes.detach(node)
        if orphan is not None and keep is not None:
            self._orphans[orphan] = keep

    async def _staged_blob(
        self, record: DatasetRecord, node: NodeId, draft: Draft, *, keep_bytes: bool
    ) -> StagedBlob:
        """The local bytes of the file *node*, fetched from S3 first if it has none yet.

        Copy-on-write: a base file gets a blob holding its bytes (unless ``keep_bytes`` is
        false: it is being truncated), fsynced before the draft records it, so a crash never
        turns an unchanged file into a short one.
        """
        key = (node.handle, node.path)
        lock = self._path_locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                view = await self._file_view(record, node)
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
                        blob.mtime_ns = _seconds_to_ns(view.info.last_modified)
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

    def _open_blob(self, node: NodeId, blob: StagedBlob, flags: int) -> OpenFile:
        writable = _is_writing(flags)
        blob.open_count += 1
        if writable:
            blob.draft.open_writers += 1
        fh = self._new_fh()
        self._files[fh] = _BlobHandle(node, blob, writable, bool(flags & os.O_APPEND))
        return OpenFile(fh, keep_cache=False, direct_io=False)

    async def _open_for_writing(self, node: NodeId, flags: int) -> OpenFile:
        record = await self._catalog.record(node.handle)
        async with self._gate.change(record.handle):
            await self._check_change(record, node.path)
            await self._file_view(record, node)  # ENOENT before a draft is made
            draft = await self._open_draft(record)
            truncate = bool(flags & os.O_TRUNC)
            blob = await self._staged_blob(record, node, draft, keep_bytes=not truncate)
            if truncate and blob.size:
                await blob.truncate(0)
            return self._open_blob(node, blob, flags)

    async def _release_blob_handle(self, handle: _BlobHandle) -> None:
        blob = handle.blob
        draft = blob.draft
        try:
            if handle.writable and not draft.discarded:
                await draft.record_blob(blob)
        except (FsError, OSError) as exc:
            log.warning("%s: closing %r: %s", draft.handle, handle.node.path, exc)
        finally:
            if handle.writable:
                draft.open_writers -= 1
            if draft.discarded:
                blob.open_count -= 1
                if blob.open_count <= 0:
                    blob.close_fd()
            else:
                draft.release_blob(blob)

    # --- publishing hooks (provenafs.publish) --------------------------------------------

    async def begin_publish(self, handle: str) -> None:
        """The draft of *handle* is being published until ``end_publish``: changes get
        ``EBUSY`` meanwhile; in place, they wait (a push is short, and a writer of another
        file must not fail because someone closed theirs)."""
        if self._in_place:
            await self._gate.begin_push(handle)
        else:
            self._publishing.add(handle)

    def end_publish(self, handle: str) -> None:
        if self._in_place:
            self._gate.end_push(handle)
        else:
            self._publishing.discard(handle)

    async def publish_done(self, old_handle: str, new_handle: str) -> None:
        """After a verified publish: drop the draft view, forget cached records and listings of
        both versions, and tell the kernel to drop what it cached of them.

        In place (*new_handle* is *old_handle*) the publisher settles the draft itself, and the
        kernel keeps its entries: the dataset now holds what the draft showed (only mtimes
        become S3's, within the 1 s attribute timeout), and a push happens at every close.
        """
        in_place = new_handle == old_handle
        draft = self.draft_store.get(old_handle)
        if draft is not None and not in_place:
            draft.discard()  # idempotent: the publisher discards it again afterwards
        self._publishing.discard(old_handle)
        for handle in {old_handle, new_handle}:
            self._catalog.invalidate(handle)
        self._status_snapshot = None
        if not in_place:
            self._queue_invalidations(old_handle, new_handle)

    def _queue_invalidations(self, *handles: str) -> None:
        """Kernel entries and attributes of the datasets *handles*, their names and links."""
        for handle in handles:
            for node, inode in self._inodes.nodes_of(handle):
                self._invalidate(inode, None)
                parent_inode, name = self._parent_inode_and_name(node)
                if parent_inode is not None:
                    self._invalidate(parent_inode, name)
        for node, inode in self._inodes.nodes_of_kinds(
            (NodeKind.LATEST_LINK, NodeKind.BY_NAME_LINK, NodeKind.BY_NAME_DIR)
        ):
            self._invalidate(inode, None)
            parent_inode, name = self._parent_inode_and_name(node)
            if parent_inode is not None:
                self._invalidate(parent_inode, name)

    def _parent_inode_and_name(self, node: NodeId) -> tuple[int | None, str]:
        prefix, _, suffix = node.handle.partition("/")
        if node.kind in _DATASET_KINDS and node.path and not node.path.startswith(ORPHAN_MARK):
            parent_path, name = _parent_path(node.path)
            kind = NodeKind.DATASET_SUBDIR if parent_path else NodeKind.DATASET_DIR
            return self._inodes.find(NodeId(kind, node.handle, parent_path)), name
        prefix_inode = self._inodes.find(NodeId(NodeKind.PREFIX_DIR, prefix))
        if node.kind is NodeKind.DATASET_DIR:
            return prefix_inode, suffix
        if node.kind is NodeKind.SIDECAR:
            return prefix_inode, suffix + SIDECAR_SUFFIX
        if node.kind is NodeKind.LATEST_LINK:
            return prefix_inode, suffix + LATEST_SUFFIX
        if node.kind is NodeKind.BY_NAME_LINK:
            return self._inodes.find(NodeId(NodeKind.BY_NAME_DIR)), node.path
        if node.kind is NodeKind.BY_NAME_DIR:
            return 1, BY_NAME
        return None, ""

    def _invalidate(self, inode: int, name: str | None) -> None:
        if self._invalidations_ready is None:
            return  # no notifier (tests, or before start): kernel timeouts are short anyway
        if len(self._invalidations) < _INVALIDATION_QUEUE:
            self._invalidations.append((inode, name))
        self._invalidations_ready.set()

    async def _send_invalidations(self, notifier: KernelCacheNotifier) -> None:
        """Send queued invalidations from outside any request (until cancelled)."""
        while True:
            assert self._invalidations_ready is not None
            await self._invalidations_ready.wait()
            self._invalidations_ready = trio.Event()
            batch, self._invalidations = self._invalidations, []
            for inode, name in dict.fromkeys(batch):
                try:
                    if name is None:
                        await notifier.invalidate_inode(inode)
                    else:
                        await notifier.invalidate_entry(inode, name)
                except Exception:  # noqa: BLE001 - a failed notification must not end the mount
                    log.warning("kernel cache invalidation of %d %r failed", inode, name)

    # --- mutations -----------------------------------------------------------------------

    @_translate_errors
    async def create(
        self, parent: int, name: str, mode: int, flags: int, ctx: Caller
    ) -> tuple[OpenFile, Attributes]:
        parent_node, record = await self._dataset_parent(parent)
        check_name(name)
        path = join(parent_node.path, name)
        async with self._gate.change(record.handle):
            await self._check_change(record, path)
            await self._attributes(parent_node)  # the directory is still there
            existing = await self._existing_child(parent_node, name)
            if existing is None:
                return await self._create_file(record, path, flags)
            if flags & os.O_EXCL:
                raise FsError(errno.EEXIST, f"{path!r} exists")
            if existing.kind is not NodeKind.DATASET_FILE:
                raise FsError(errno.EISDIR, f"{path!r} is a directory")
        inode = self._inodes.remember(existing)  # opened outside the gate: open takes it
        opened = await self.open(inode, flags, ctx)
        return opened, await self.getattr(inode, ctx)

    async def _create_file(
        self, record: DatasetRecord, path: str, flags: int
    ) -> tuple[OpenFile, Attributes]:
        draft = await self._open_draft(record)
        replaced = isinstance(draft.entries.get(path), Whiteout)
        blob = await draft.new_blob(path, replaced_base=replaced)
        draft.put(path, blob.entry())
        node = NodeId(NodeKind.DATASET_FILE, record.handle, path)
        inode = self._inodes.remember(node)
        opened = self._open_blob(node, blob, flags)
        return opened, dataclasses.replace(await self._attributes(node), inode=inode)

    @_translate_errors
    async def mkdir(self, parent: int, name: str, mode: int, ctx: Caller) -> Attributes:
        parent_node, record = await self._dataset_parent(parent)
        check_name(name)
        path = join(parent_node.path, name)
        async with self._gate.change(record.handle):
            await self._check_change(record, path)
            await self._attributes(parent_node)
            if await self._existing_child(parent_node, name) is not None:
                raise FsError(errno.EEXIST, f"{path!r} exists")
            draft = await self._open_draft(record)
            draft.put(path, DirectoryEntry(time.time_ns()))
            await draft.sync()
            node = NodeId(NodeKind.DATASET_SUBDIR, record.handle, path)
            inode = self._inodes.remember(node)
            attributes = dataclasses.replace(await self._attributes(node), inode=inode)
        await self._push_in_place(record.handle)
        return attributes

    async def _refuse_special(self, parent: int, name: str) -> FsError:
        parent_node, record = await self._dataset_parent(parent)
        await self._check_change(record, join(parent_node.path, name))
        return FsError(errno.EPERM, "datasets hold regular files and directories only")

    @_translate_errors
    async def mknod(self, parent: int, name: str, mode: int, rdev: int, ctx: Caller) -> Attributes:
        raise await self._refuse_special(parent, name)

    @_translate_errors
    async def symlink(self, parent: int, name: str, target: str, ctx: Caller) -> Attributes:
        raise await self._refuse_special(parent, name)

    @_translate_errors
    async def link(self, inode: int, new_parent: int, new_name: str, ctx: Caller) -> Attributes:
        raise await self._refuse_special(new_parent, new_name)

    @_translate_errors
    async def unlink(self, parent: int, name: str, ctx: Caller) -> None:
        parent_node, record = await self._dataset_parent(parent)
        async with self._gate.change(record.handle):
            node = await self._namespace.child(parent_node, name)
            if node.kind is not NodeKind.DATASET_FILE:
                raise FsError(errno.EISDIR, f"{node.path!r} is a directory")
            await self._check_change(record, node.path)
            view = await self._file_view(record, node)
            in_base = await self._base_has(record, node.path)
            draft = await self._open_draft(record)
            await self._remove_path(draft, node.path, in_base=in_base)
            keep: StagedBlob | ObjectInfo | None = view.info
            if view.staged is not None:
                keep = draft.live_blob(view.staged.blob)
            self._detach(node, keep)
            if view.staged is not None:
                draft.forget_unreferenced_blob(view.staged.blob)
        await self._push_in_place(record.handle)

    async def _remove_path(self, draft: Draft, path: str, *, in_base: bool) -> None:
        # In place, S3 itself may hold the path (pushed moments ago) whatever the cached
        # listing says: a whiteout makes the push delete it.
        if in_base or self._in_place:
            draft.put(path, WHITEOUT)
        else:
            draft.remove(path)
        await draft.sync()

    @_translate_errors
    async def rmdir(self, parent: int, name: str, ctx: Caller) -> None:
        parent_node, record = await self._dataset_parent(parent)
        async with self._gate.change(record.handle):
            node = await self._namespace.child(parent_node, name)
            if node.kind is not NodeKind.DATASET_SUBDIR:
                raise FsError(errno.ENOTDIR, f"{node.path!r} is not a directory")
            await self._check_change(record, node.path)
            if await self._namespace.children(node):
                raise FsError(errno.ENOTEMPTY, f"{node.path!r} is not empty")
            in_base = await self._base_has(record, node.path)
            draft = await self._open_draft(record)
            await self._remove_path(draft, node.path, in_base=in_base)
            self._detach(node, None)
        await self._push_in_place(record.handle)

    @_translate_errors
    async def rename(  # noqa: PLR0917 (mirrors the FUSE operation)
        self,
        old_parent: int,
        old_name: str,
        new_parent: int,
        new_name: str,
        flags: int,
        ctx: Caller,
    ) -> None:
        old_dir = self._inodes.node(old_parent)
        new_dir = self._inodes.node(new_parent)
        inside = (old_dir.kind in _DATASET_DIR_KINDS, new_dir.kind in _DATASET_DIR_KINDS)
        if inside != (True, True):
            if any(inside):
                raise FsError(errno.EXDEV, "renames cannot leave or enter a dataset")
            raise await self._refusal_for(old_dir)
        if old_dir.handle != new_dir.handle:
            raise FsError(errno.EXDEV, "renames across datasets are copies")
        if flags & ~RENAME_NOREPLACE:
            raise FsError(errno.EINVAL, "only RENAME_NOREPLACE is supported")
        check_name(new_name)
        record = await self._catalog.record(old_dir.handle)
        async with self._gate.change(record.handle):
            source = await self._namespace.child(old_dir, old_name)
            new_path = join(new_dir.path, new_name)
            await self._check_change(record, source.path, new_path)
            await self._attributes(new_dir)
            if source.path == new_path:
                return
            is_dir = source.kind is NodeKind.DATASET_SUBDIR
            if is_dir and new_path.startswith(source.path + "/"):
                raise FsError(errno.EINVAL, "a directory cannot move into itself")
            target = await self._existing_child(new_dir, new_name)
            target_view: _FileView | None = None
            if target is not None:
                if flags & RENAME_NOREPLACE:
                    raise FsError(errno.EEXIST, f"{new_path!r} exists")
                if is_dir and target.kind is not NodeKind.DATASET_SUBDIR:
                    raise FsError(errno.ENOTDIR, f"{new_path!r} is not a directory")
                if not is_dir and target.kind is NodeKind.DATASET_SUBDIR:
                    raise FsError(errno.EISDIR, f"{new_path!r} is a directory")
                if is_dir and await self._namespace.children(target):
                    raise FsError(errno.ENOTEMPTY, f"{new_path!r} is not empty")
                if not is_dir:
                    target_view = await self._file_view(record, target)
            if is_dir:
                operations = await self._directory_move(record, source.path, new_path)
            else:
                view = await self._file_view(record, source)
                operations = [("set", new_path, self._entry_of(view, source.path))]
            if self._in_place or await self._base_has(record, source.path):
                operations.append(("set", source.path, WHITEOUT))
            else:
                operations.append(("del", source.path, None))
            draft = await self._open_draft(record)
            draft.apply(operations)
            await draft.sync()
            if target_view is not None and target_view.staged is not None:
                draft.forget_unreferenced_blob(target_view.staged.blob)
            draft.rebind(source.path, new_path)
            for orphan in self._inodes.rename(record.handle, source.path, new_path):
                if target_view is not None and target_view.staged is not None:
                    blob = draft.live_blob(target_view.staged.blob)
                    if blob is not None:
                        self._orphans[orphan] = blob
                elif target_view is not None and target_view.info is not None:
                    self._orphans[orphan] = target_view.info
        await self._push_in_place(record.handle)

    def _entry_of(self, view: _FileView, path: str) -> Entry:
        """The draft entry that puts the file seen through *view* at another path."""
        if view.staged is not None and view.draft is not None:
            return view.draft.entries[path]
        assert view.info is not None
        mtime = _seconds_to_ns(view.info.last_modified)
        return CarriedEntry(view.info.key, view.info.size, view.info.etag, mtime)

    async def _directory_move(
        self, record: DatasetRecord, old: str, new: str
    ) -> list[tuple[str, str, Entry | None]]:
        """Operations that rebuild the directory *old* at *new* (base files carried, no copy)."""
        now = time.time_ns()
        operations: list[tuple[str, str, Entry | None]] = [("set", new, DirectoryEntry(now))]
        draft = self._draft_of(record.handle)
        resolve = draft.resolve if draft is not None else (lambda path: None)
        if resolve(old) is None:
            prefix = record.s3.path
            dirs: set[str] = set()
            for info in (await self._base_tree(record, old)).objects:
                rel = info.key[len(prefix) :]
                if rel.endswith("/"):
                    directory = rel.rstrip("/")
                    if directory != old and resolve(directory) is None:
                        dirs.add(directory)
                    continue
                ancestor = _parent_path(rel)[0]
                while ancestor != old and ancestor:
                    if resolve(ancestor) is None:
                        dirs.add(ancestor)  # a folder stays even when its files went
                    ancestor = _parent_path(ancestor)[0]
                if resolve(rel) is not None:
                    continue  # replaced or hidden by the draft: its entry moves below
                mtime = _seconds_to_ns(info.last_modified)
                carried = CarriedEntry(info.key, info.size, info.etag, mtime)
                operations.append(("set", new + rel[len(old) :], carried))
            for directory in sorted(dirs):
                operations.append(("set", new + directory[len(old) :], DirectoryEntry(now)))
        if draft is not None:
            for path, entry in draft.entries_under(old):
                if not isinstance(entry, Whiteout):
                    operations.append(("set", new + path[len(old) :], entry))
        return operations

    async def _base_tree(self, record: DatasetRecord, directory: str) -> Listing:
        """Every base key below *directory* (no delimiter), with the dataset's read credentials."""
        prefix = f"{record.s3.path}{directory}/"
        for attempt in (1, 2):
            creds = await self._broker.read(record.handle)
            try:
                return await self._store.list_prefix(
                    creds, record.s3.bucket_name, prefix, delimiter=None
                )
            except (ExpiredCredentials, AccessDenied):
                if attempt == 2:
                    raise
                self._broker.invalidate(record.handle)
        raise AssertionError("unreachable")

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
        """Size and mtime changes of dataset files go into the draft; the rest is accepted.

        Changes are named either by value (``uid=``, ``atime_ns=``, ...) or as flags
        (``times=True``, ``owner=True``); both forms are accepted. Modes and owners are not
        kept (S3 has neither); an atime alone changes nothing. Where no write can succeed,
        any change gets the refusal's errno.
        """
        if size is not None and self._inodes.node(inode).kind is NodeKind.SIDECAR:
            return await self._truncate_sidecar(inode, size, fh)
        caller = ctx or Caller(0, 0, 0)
        values = (size, mode, uid, gid, atime_ns, mtime_ns)
        if not (times or owner or any(value is not None for value in values)):
            return await self.getattr(inode, caller)
        if times and mtime_ns is None:
            mtime_ns = time.time_ns()
        await self._change_attributes(inode, size=size, mtime_ns=mtime_ns, fh=fh)
        return await self.getattr(inode, caller)

    @_translate_errors
    async def _change_attributes(
        self, inode: int, *, size: int | None, mtime_ns: int | None, fh: int | None
    ) -> None:
        node = self._inodes.node(inode)
        if node.kind not in _DATASET_KINDS:
            raise await self._refusal_for(node)
        async with self._gate.change(node.handle):
            changed = await self._change_file_attributes(node, size=size, mtime_ns=mtime_ns, fh=fh)
        if changed and fh is None:  # a change through an open file reaches S3 at its close
            await self._push_in_place(node.handle)

    async def _change_file_attributes(
        self, node: NodeId, *, size: int | None, mtime_ns: int | None, fh: int | None
    ) -> bool:
        """Size and mtime changes of a dataset file into the draft; False when none is kept."""
        record = await self._catalog.record(node.handle)
        await self._check_change(record, node.path)
        if node.kind is not NodeKind.DATASET_FILE:
            if size is not None:
                raise FsError(errno.EISDIR, "is a directory")
            return False  # directory times and modes are not kept
        if size is not None and size < 0:
            raise FsError(errno.EINVAL, "negative size")
        if size is None and mtime_ns is None:
            return False
        view = await self._file_view(record, node)
        draft = await self._open_draft(record)
        handle = self._files.get(fh) if fh is not None else None
        blob = handle.blob if isinstance(handle, _BlobHandle) else view.blob
        if size is None and blob is None and view.info is not None:
            # Only the mtime of a file whose bytes are in S3: no copy, just a new entry.
            assert mtime_ns is not None
            info = view.info
            draft.put(node.path, CarriedEntry(info.key, info.size, info.etag, mtime_ns))
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
            await blob.draft.record_blob(blob)
        finally:
            blob.draft.release_blob(blob)
        return True

    @_translate_errors
    async def write(self, fh: int, offset: int, data: bytes) -> int:
        sidecar = self._sidecar_writes.get(fh)
        if sidecar is not None:
            return sidecar.write(offset, data)
        handle = self._files.get(fh)
        if not isinstance(handle, _BlobHandle) or not handle.writable:
            raise FsError(errno.EBADF, "not open for writing")
        draft = handle.blob.draft
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        async with self._gate.change(draft.handle):  # in place, waits while a push runs
            if draft.discarded:
                raise FsError(errno.EROFS, "the draft was published; reopen the file")
            if draft.handle in self._publishing:
                raise FsError(errno.EBUSY, f"{draft.handle} is being published; try again after")
            if handle.append:
                offset = handle.blob.size
            return await handle.blob.write(offset, data)

    async def setxattr(self, inode: int, name: str, value: bytes, ctx: Caller) -> None:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._set_sidecar_reason(node, name, value)
        raise await self._xattr_refusal(node)

    async def removexattr(self, inode: int, name: str, ctx: Caller) -> None:
        node = self._inodes.node(inode)
        if node.kind is NodeKind.SIDECAR:
            return await self._set_sidecar_reason(node, name, None)
        raise await self._xattr_refusal(node)

    @_translate_errors
    async def _xattr_refusal(self, node: NodeId) -> FsError:
        """Extended attributes are not stored: ``ENOTSUP`` where writes work, else the refusal."""
        if node.kind in _DATASET_KINDS:
            record = await self._catalog.record(node.handle)
            refusal = self._write_refusal(record, node.path)
            return refusal or FsError(errno.ENOTSUP, "datasets keep no extended attributes")
        return await self._refusal_for(node)
