"""What published objects say of their modes, mtimes and links, read without a HEAD per object.

S3 listings carry no user metadata. Per folder of a dataset version, ``StoredAttributes``
decides once (when the folder's listing is new) where attributes come from:

- **the version's attributes manifest** (``storage.attribute_manifest``: every version this
  mount publishes has one, seen as a ``.provenafs/`` folder in the version's top listing):
  its entries for the folder (the index, plus the chunks that may hold them); an object the
  manifest no longer vouches for (another ETag, size or LastModified), or does not name, is
  asked with one HEAD of its own (a subfolder it does not name has no attributes: it had no
  marker when the version was published);
- else **a probe**: one HEAD of the folder's most recently written object. If its metadata
  says anything (s3fs or rclone wrote it), every object of the folder is asked (one HEAD
  each, as s3fs does, in parallel when the folder is listed, alone when one name is looked
  up); if not, the folder's objects keep the defaults and cost nothing more. Listing a folder
  probes its subfolders at once, in parallel, where their listings are already at hand.

So a version this mount published lists at the cost of its listing plus its manifest, and a
folder no POSIX-aware tool wrote at the cost of one HEAD. A link is an object whose mode has
``S_IFLNK`` (and at most ``LINK_TARGET_MAX`` bytes); its target is the manifest's or its body.

Caches follow the catalog's listings: a folder's answers live as long as the listing they
were derived from, and a ``Catalog.invalidate`` (a publish) drops them. Bounded: at most
``max_folders`` folders (16,384: a plain folder's answer costs a few hundred bytes and holds
its listing only weakly, so a warm re-walk of many folders probes none again) and
``max_manifests`` manifests (with their chunks). No pyfuse3, no blocking calls; trio thread
only.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import functools
import logging
import os
import weakref

import cachetools
import trio

from provenafs.api.models import DatasetRecord
from provenafs.cache.single_flight import SingleFlight
from provenafs.core.catalog import FOLDER, Catalog, DirectoryListing
from provenafs.errors import FsError
from provenafs.storage.attribute_manifest import (
    INDEX_KEY,
    MANIFEST_DIR,
    MAX_OBJECT_BYTES,
    ManifestEntry,
    ManifestIndex,
    decode_chunk,
    decode_index,
)
from provenafs.storage.blobstore import BlobStore, NoSuchKeyError, ObjectInfo
from provenafs.storage.posix_metadata import (
    LINK_TARGET_MAX,
    NO_METADATA,
    PosixMetadata,
    parse_metadata,
)
from provenafs.write.draft_entries import METADATA_FILE

__all__ = ["StoredAttributes", "is_link"]

log = logging.getLogger(__name__)

_PARALLEL_HEADS = 16
_UNLISTED_KEPT = 4096  # objects looked up outside a listing whose HEAD is kept


def is_link(metadata: PosixMetadata, info: ObjectInfo) -> bool:
    """Whether an object is a symbolic link: its mode says so and its body can be a target."""
    return metadata.is_link and 0 < info.size <= LINK_TARGET_MAX


def _known(folder: _Folder, name: str, info: ObjectInfo) -> PosixMetadata | None:
    """An object's attributes where no HEAD is needed for them: none in a plain folder or for
    the data store's own file, the manifest's where it vouches for the object, else a HEAD
    already made of this ETag; None when a HEAD must be made."""
    if folder.source is _Source.PLAIN or _is_data_store_file(folder, name):
        return NO_METADATA
    entry = folder.manifest.get(name)
    if entry is not None and entry.vouches_for(info):
        return entry.metadata
    head = folder.heads.get(name)
    return head[1] if head is not None and head[0] == info.etag else None


def _is_data_store_file(folder: _Folder, name: str) -> bool:
    """The top-level ``metadata.json``: the data store writes it, never with attributes."""
    return folder.is_top and name == METADATA_FILE


class _Source(enum.Enum):
    MANIFEST = "manifest"  # the version's manifest, HEADs for what it does not vouch for
    ANNOTATED = "annotated"  # no manifest, the probe found metadata: a HEAD per object
    PLAIN = "plain"  # no manifest, no metadata: the defaults


@dataclasses.dataclass
class _Folder:
    """One folder's answers, valid while its listing is the catalog's (held weakly: the
    catalog's byte budget, not this cache, decides how long a listing lives)."""

    listing_ref: weakref.ref[DirectoryListing]
    generation: int
    is_top: bool
    source: _Source
    manifest: dict[str, ManifestEntry]  # by name (files, links and subfolders)
    heads: dict[str, tuple[str, PosixMetadata]] = dataclasses.field(default_factory=dict)
    targets: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def listing(self) -> DirectoryListing:
        listing = self.listing_ref()
        if listing is None:  # the catalog dropped it since ``_folder`` checked it
            raise FsError(errno.EAGAIN, "a folder's listing was dropped while in use")
        return listing


@dataclasses.dataclass
class _Manifest:
    index: ManifestIndex | None  # None: the version has none (or an unreadable one)
    generation: int
    chunks: dict[str, tuple[ManifestEntry, ...]] = dataclasses.field(default_factory=dict)


class StoredAttributes:
    """Modes, mtimes and links of published objects (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        store: BlobStore,
        *,
        max_folders: int = 16384,
        max_manifests: int = 16,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._folders: cachetools.LRUCache[tuple[str, str], _Folder] = cachetools.LRUCache(
            max(1, max_folders)
        )
        self._manifests: cachetools.LRUCache[str, _Manifest] = cachetools.LRUCache(
            max(1, max_manifests)
        )
        self._folder_flights: SingleFlight[tuple[str, str], _Folder] = SingleFlight()
        self._manifest_flights: SingleFlight[str, _Manifest] = SingleFlight()
        self._chunk_flights: SingleFlight[tuple[str, str], tuple[ManifestEntry, ...]] = (
            SingleFlight()
        )
        self._head_flights: SingleFlight[str, PosixMetadata] = SingleFlight()
        self._unlisted_heads: cachetools.LRUCache[
            tuple[str, str], tuple[str, int, PosixMetadata]
        ] = cachetools.LRUCache(_UNLISTED_KEPT)
        self._limiter = trio.CapacityLimiter(_PARALLEL_HEADS)
        self.counts = {"heads": 0, "probes": 0, "manifest_gets": 0, "target_gets": 0}

    # --- answers ---------------------------------------------------------------------------

    async def of_object(self, record: DatasetRecord, path: str, info: ObjectInfo) -> PosixMetadata:
        """What the object at *path* (listed as *info*) says of its mode and mtime."""
        directory, _, name = path.rpartition("/")
        if self._catalog.cached_listing(record.handle, directory) is None:
            return await self._unlisted(record, path, info)
        folder = await self._folder(record, directory)
        return await self._object(record, folder, directory, name, info)

    async def _unlisted(self, record: DatasetRecord, path: str, info: ObjectInfo) -> PosixMetadata:
        """An object looked up in a folder not listed (yet): what its own HEAD says, the one
        the catalog made to find it if kept, so that reaching a file deep in a dataset lists
        none of its folders."""
        if path == METADATA_FILE:
            return NO_METADATA
        raw = self._catalog.name_metadata(record.handle, path, info.etag)
        if raw is not None:
            return parse_metadata(raw)
        key = (record.handle, path)
        known = self._unlisted_heads.get(key)
        generation = self._catalog.generation
        if known is not None and known[:2] == (info.etag, generation):
            return known[2]
        metadata = await self._head(record, path)
        self._unlisted_heads[key] = (info.etag, generation, metadata)
        return metadata

    async def of_directory(self, record: DatasetRecord, path: str) -> PosixMetadata:
        """A folder's own attributes (the dataset's top for ""): its manifest entry, or in
        a folder read with metadata its ``dir/`` marker's."""
        if not path:
            manifest = await self._manifest(record)
            return manifest.index.root if manifest.index is not None else NO_METADATA
        directory, _, name = path.rpartition("/")
        if self._catalog.cached_listing(record.handle, directory) is None:
            # Reached by lookup, its folder not listed: the manifest's word, else the defaults
            # (no listing, and no HEAD per folder on the way to a deep file).
            manifest = await self._manifest(record)
            if manifest.index is None:
                return NO_METADATA
            entry = (await self._manifest_entries(record, manifest, directory)).get(name)
            return entry.metadata if entry is not None and entry.etag is None else NO_METADATA
        folder = await self._folder(record, directory)
        entry = folder.manifest.get(name)
        if entry is not None and entry.etag is None:
            return entry.metadata
        if folder.source is not _Source.ANNOTATED:
            return NO_METADATA
        if name in folder.heads:
            return folder.heads[name][1]
        metadata = await self._head(record, path + "/")
        folder.heads[name] = ("", metadata)
        return metadata

    async def warm(self, record: DatasetRecord, directory: str) -> None:
        """Before a folder is listed: ask every object (and subfolder marker) whose
        attributes need a HEAD, and probe the subfolders whose listings are at hand, in
        parallel, so the listing's answers (and a walk's next ones) are cached."""
        folder = await self._folder(record, directory)
        prefix = f"{directory}/" if directory else ""

        async def one_object(name: str, info: ObjectInfo) -> None:
            async with self._limiter:
                await self._object(record, folder, directory, name, info)

        async def one_folder(name: str) -> None:
            async with self._limiter:
                await self.of_directory(record, prefix + name)

        async def probe(name: str) -> None:
            async with self._limiter:
                await self._folder(record, prefix + name)

        async with trio.open_nursery() as nursery:
            # a plain folder (no attributes anywhere) needs no HEAD: no walk of its files
            for name, info in (
                () if folder.source is _Source.PLAIN else folder.listing.files.items()
            ):
                if self._needs_head(folder, name, info):
                    nursery.start_soon(one_object, name, info)
            # A listed folder's subfolders are likely next (ls -R, find, du): where their
            # listings are at hand (a version listed whole), probe them now, in parallel.
            for name in folder.listing.subdirs:
                if not directory and name == MANIFEST_DIR:
                    continue
                known = self._folders.get((record.handle, prefix + name))
                listing = self._catalog.cached_listing(record.handle, prefix + name)
                if listing is not None and (known is None or known.listing_ref() is not listing):
                    nursery.start_soon(probe, name)
            if folder.source is not _Source.ANNOTATED:
                return
            for name in folder.listing.subdirs:
                if name not in folder.heads:
                    nursery.start_soon(one_folder, name)

    async def plain(self, record: DatasetRecord, directory: str) -> bool:
        """Whether no entry of the folder has attributes of its own, so that its listing
        alone answers for every entry (after ``warm``, which probes it)."""
        await self.warm(record, directory)
        folder = await self._folder(record, directory)
        manifest_dir = not directory and MANIFEST_DIR in folder.listing.subdirs
        return folder.source is _Source.PLAIN and not manifest_dir

    async def link_target(self, record: DatasetRecord, path: str, info: ObjectInfo) -> str:
        """The target of the link at *path*: its manifest entry's, else its body."""
        directory, _, name = path.rpartition("/")
        folder = await self._folder(record, directory)
        entry = folder.manifest.get(name)
        if entry is not None and entry.target and entry.vouches_for(info):
            if "\x00" in entry.target:
                raise FsError(errno.EIO, f"{path!r}: a link target holding NUL")
            return entry.target
        known = folder.targets.get(name)
        if known is not None and known[0] == info.etag:
            return known[1]
        if not 0 < info.size <= LINK_TARGET_MAX:
            raise FsError(errno.EIO, f"{path!r}: a link target of {info.size} bytes")
        self.counts["target_gets"] += 1
        body, _ = await self._catalog.with_read_credentials(
            record.handle,
            lambda creds: self._store.get_object(
                creds, record.s3.bucket_name, info.key, etag=info.etag or None
            ),
        )
        if b"\x00" in body:
            raise FsError(errno.EIO, f"{path!r}: a link target holding NUL")
        target = os.fsdecode(body)
        folder.targets[name] = (info.etag, target)
        return target

    def statistics(self) -> dict[str, int]:
        return {**self.counts, "folders_cached": len(self._folders)}

    # --- one folder --------------------------------------------------------------------------

    def _needs_head(self, folder: _Folder, name: str, info: ObjectInfo) -> bool:
        return _known(folder, name, info) is None

    async def _object(
        self,
        record: DatasetRecord,
        folder: _Folder,
        directory: str,
        name: str,
        info: ObjectInfo,
    ) -> PosixMetadata:
        known = _known(folder, name, info)
        if known is not None:
            return known
        metadata = await self._head(record, info.key[len(record.s3.path) :])
        folder.heads[name] = (info.etag, metadata)
        return metadata

    async def _folder(self, record: DatasetRecord, directory: str) -> _Folder:
        listing = await self._catalog.listing(record, directory)
        key = (record.handle, directory)
        folder = self._folders.get(key)
        if (
            folder is not None
            and folder.listing_ref() is listing
            and folder.generation == self._catalog.generation
        ):
            return folder
        folder = await self._folder_flights.run(
            key, lambda: self._resolve_folder(record, directory, listing)
        )
        self._folders[key] = folder
        return folder

    async def _resolve_folder(
        self, record: DatasetRecord, directory: str, listing: DirectoryListing
    ) -> _Folder:
        generation = self._catalog.generation
        manifest = await self._manifest(record)
        if manifest.index is not None:
            entries = await self._manifest_entries(record, manifest, directory)
            return _Folder(
                weakref.ref(listing), generation, not directory, _Source.MANIFEST, entries
            )
        folder = _Folder(weakref.ref(listing), generation, not directory, _Source.PLAIN, {})
        files = [item for item in listing.files.items() if not _is_data_store_file(folder, item[0])]
        if not files:
            return folder
        name, info = max(files, key=lambda item: (item[1].last_modified, item[0]))
        self.counts["probes"] += 1
        path = f"{directory}/{name}" if directory else name
        metadata = await self._head(record, path)
        folder.heads[name] = (info.etag, metadata)
        if metadata.says_anything:
            folder.source = _Source.ANNOTATED
        return folder

    # --- the manifest ------------------------------------------------------------------------

    async def _manifest(self, record: DatasetRecord) -> _Manifest:
        handle = record.handle
        cached = self._manifests.get(handle)
        if cached is not None and cached.generation == self._catalog.generation:
            return cached
        manifest = await self._manifest_flights.run(handle, lambda: self._fetch_manifest(record))
        self._manifests[handle] = manifest
        return manifest

    async def _fetch_manifest(self, record: DatasetRecord) -> _Manifest:
        generation = self._catalog.generation
        # The top listing when at hand, else a HEAD and a one-key LIST: never a listing of its own.
        if await self._catalog.entry(record, "", MANIFEST_DIR) != FOLDER:
            return _Manifest(None, generation)
        try:
            body = await self._get(record, INDEX_KEY)
            return _Manifest(await trio.to_thread.run_sync(decode_index, body), generation)
        except (NoSuchKeyError, ValueError, KeyError, TypeError) as exc:
            log.info("%s: no usable attributes manifest (%s)", record.handle, exc)
            return _Manifest(None, generation)

    async def _manifest_entries(
        self, record: DatasetRecord, manifest: _Manifest, directory: str
    ) -> dict[str, ManifestEntry]:
        assert manifest.index is not None
        found = {e.name: e for e in manifest.index.entries if e.directory == directory}
        for chunk in manifest.index.chunks_for(directory):
            entries = manifest.chunks.get(chunk.key)
            if entries is None:
                entries = await self._chunk_flights.run(
                    (record.handle, chunk.key),
                    functools.partial(self._fetch_chunk, record, chunk.key),
                )
                manifest.chunks[chunk.key] = entries
            found.update((e.name, e) for e in entries if e.directory == directory)
        return found

    async def _fetch_chunk(self, record: DatasetRecord, key: str) -> tuple[ManifestEntry, ...]:
        try:
            body = await self._get(record, key)
            return await trio.to_thread.run_sync(decode_chunk, body)  # up to 16 MiB of JSON
        except (NoSuchKeyError, ValueError, KeyError, TypeError) as exc:
            log.info("%s: attributes chunk %s unusable (%s)", record.handle, key, exc)
            return ()

    # --- S3 ----------------------------------------------------------------------------------

    async def _get(self, record: DatasetRecord, rel: str) -> bytes:
        """A manifest object, at most ``MAX_OBJECT_BYTES`` of it (``ValueError`` past that:
        anyone who may write the version may write this key)."""
        self.counts["manifest_gets"] += 1
        body = await self._catalog.with_read_credentials(
            record.handle,
            lambda creds: self._store.get_range(
                creds, record.s3.bucket_name, record.s3.path + rel, 0, MAX_OBJECT_BYTES + 1
            ),
        )
        if len(body) > MAX_OBJECT_BYTES:
            raise ValueError(f"{rel} is over {MAX_OBJECT_BYTES} bytes")
        return body

    async def _head(self, record: DatasetRecord, rel: str) -> PosixMetadata:
        """What one key's metadata says (nothing when it is gone), single-flight."""
        key = record.s3.path + rel

        async def head() -> PosixMetadata:
            self.counts["heads"] += 1
            try:
                answer = await self._catalog.with_read_credentials(
                    record.handle,
                    lambda creds: self._store.head_object(creds, record.s3.bucket_name, key),
                )
            except NoSuchKeyError:
                return NO_METADATA
            return parse_metadata(answer.metadata)

        return await self._head_flights.run(f"{record.s3.bucket_name}\0{key}", head)
