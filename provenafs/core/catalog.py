"""What the mount knows about datasets: records, the dataset list and S3 listings, with TTLs.

The catalog sits between the filesystem and the IO layer. It caches

- fetched records by handle (``metadata_ttl``), and unknown handles as negative entries
  (``negative_ttl``, short), so a shell probing names does not hammer the data store;
- the full dataset list (``client.list_all`` walks every page, short and empty ones included);
- S3 listings (``listing_ttl``), listed with the dataset's read credentials; on
  ``ExpiredCredentialsError``/``AccessDeniedError`` the credentials are invalidated and the
  listing retried once. The first listing of a dataset version asks for all of its keys at once
  (no delimiter) when the store can stop paging after ``snapshot_max_keys`` (a ``TreeLister``;
  0 turns this off): every folder of a dataset that small is then answered from that one
  snapshot. A bigger one is listed one level per (handle, directory) with delimiter ``/``, so a
  huge dataset never costs a full listing up front;
- whether a dataset's data is readable when the item roles alone do not say so (realm admins
  get read credentials without item roles).

While the list is fresh it answers, without any call, what a prefix directory's entries need:
that a handle exists, its ``@latest`` (``next_version`` followed inside the list) and an
*estimated* record: the list record with the caller's roles and lock as last fetched, or, never
fetched, all roles and unlocked for the caller's own datasets (the data store gives an owner
every role) and unknown roles otherwise. Each lookup table is built once per list snapshot.
The estimated records of each page go to ``prepare_listed`` as the page arrives, so what the
filesystem derives from them (sidecar sizes) is worked out while the next page is awaited.

Every fetch is single-flight: N concurrent callers for the same key cause one call. Published
versions change only through writes, which invalidate them with ``invalidate(handle)``. When the
data store or S3 is unreachable (``UnavailableError``/``BlobUnavailableError`` after the IO layer's
retries), the last value seen is served past its TTL rather than failing (docs/SEMANTICS.md,
Caching).

It must not make blocking calls, must not import httpx, boto3 or pyfuse3, and never holds or
logs a secret beyond passing credentials from the broker to the store. Trio thread only.
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, ItemsView, Iterator, Mapping, Sequence
from typing import Final, Literal, Protocol, TypeVar, runtime_checkable

import cachetools
import trio

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials, DatasetRecord
from provenafs.cache.packed_names import PackedNames
from provenafs.cache.single_flight import SingleFlight
from provenafs.core.types import NAME_MAX
from provenafs.storage.blobstore import (
    BlobStore,
    BlobUnavailableError,
    Listing,
    NoSuchKeyError,
    ObjectInfo,
)

__all__ = [
    "DATA_READ_ROLES",
    "FOLDER",
    "GUESSED_ROLES",
    "OWNER_ROLES",
    "Catalog",
    "DatasetSnapshot",
    "DirectoryListing",
    "ReadCredentialSource",
    "RecordSource",
    "TreeLister",
    "is_valid_entry_name",
]

logger = logging.getLogger(__name__)

# Item roles with which the data store issues read credentials (docs/API.md §3.4).
DATA_READ_ROLES = frozenset({"dataset-data-read", "dataset-data-write", "admin"})
# An owner's item roles, as the data store lists them; and the roles an estimate renders for a
# dataset of someone else never fetched (the data store's default for a new dataset).
OWNER_ROLES = (
    "metadata-read",
    "metadata-write",
    "admin",
    "dataset-data-read",
    "dataset-data-write",
)
GUESSED_ROLES = ("metadata-read", "dataset-data-read")

_MAX_CHAIN = 10_000  # a versioning chain longer than this is treated as a cycle
# What a cached listing costs beside its columns, and per ETag that is not an MD5 (what the
# listing cache's byte budget counts: tests/unit/test_catalog.py measures it).
_LISTING_BYTES = 1024
_PARTIAL_HANDLES = 16  # datasets whose truncated snapshot's unfinished levels are kept
_NAMES_KEPT = 65_536  # names found without a listing (positive, and negative)
_ODD_ETAG_BYTES = 160


class RecordSource(Protocol):
    """The part of ``DataStoreClient`` the catalog uses."""

    async def fetch_dataset(self, handle: str) -> DatasetRecord: ...

    async def list_all(
        self,
        page_size: int = 100,
        on_page: Callable[[Sequence[DatasetRecord]], None] | None = None,
    ) -> list[DatasetRecord]: ...


@runtime_checkable
class TreeLister(Protocol):
    """A blob store that can list every key under a prefix but stop paging early.

    ``list_tree`` answers like ``list_prefix(..., delimiter=None)`` (no common prefixes), or,
    once more than ``max_keys`` keys are known to exist, the first keys (in key order) marked
    ``truncated``, without listing the rest.
    """

    async def list_tree(
        self, creds: Credentials, bucket: str, prefix: str, *, max_keys: int
    ) -> Listing: ...


class ReadCredentialSource(Protocol):
    """The part of ``CredentialBroker`` the catalog uses."""

    async def read(self, handle: str) -> Credentials: ...

    def invalidate(self, handle: str) -> None: ...

    async def call(
        self,
        handle: str,
        kind: Literal["read"],
        op: Callable[[Credentials], Awaitable[V]],
        *,
        on_renew: Callable[[], None] | None = None,
    ) -> V: ...


def is_valid_entry_name(name: str) -> bool:
    """Whether *name* can be an entry: not ``""``/``.``/``..``, no ``/`` or NUL, ≤ 255 bytes."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


@dataclasses.dataclass(frozen=True)
class DirectoryListing:
    """One directory level of a dataset: its entries' names, sorted, and its files' objects.

    Stored by column (packed names, a directory flag, a size, an mtime and an ETag per entry:
    about 50 bytes an entry and its name's characters, where a dict of ``ObjectInfo`` took
    430), so that the listing cache holds eight times as many; ``files`` and ``subdirs`` are
    views of those columns.
    """

    prefix: str  # the S3 prefix listed (every key is the prefix and a name)
    entry_names: PackedNames  # every entry's name, sorted
    dirs: bytes  # 1 where the entry is a directory
    sizes: array.array[int]  # 0 for directories
    mtimes: array.array[float]  # Unix seconds; 0 for directories
    etags: bytes  # 16 bytes per entry: a 32-digit hex ETag's digest (zeros for directories)
    odd_etags: Mapping[int, str]  # by index, the files' ETags that are not 32 hex digits

    @classmethod
    def from_keys(
        cls, prefix: str, objects: Sequence[ObjectInfo], prefixes: Sequence[str]
    ) -> DirectoryListing:
        """Parse a delimited S3 listing of *prefix* into entry names.

        The zero-byte folder marker (key == prefix) is not an entry; names that cannot be
        directory entries are skipped; where a file and a folder share a name the folder wins.
        """
        subdirs = set()
        for common in prefixes:
            name = common[len(prefix) :].removesuffix("/")
            if common.startswith(prefix) and is_valid_entry_name(name):
                subdirs.add(name)
        files: dict[str, ObjectInfo] = {}
        for info in objects:
            name = info.key[len(prefix) :]
            if not info.key.startswith(prefix) or name == "":
                continue
            if name.endswith("/"):
                # A folder marker one level down (listings without delimiter support).
                name = name.removesuffix("/")
                if is_valid_entry_name(name):
                    subdirs.add(name)
                continue
            if not is_valid_entry_name(name):
                logger.debug("skipping S3 key that cannot be an entry: %r", info.key)
                continue
            files[name] = info
        for name in subdirs.intersection(files):
            logger.debug("skipping S3 key that is also a folder: %r", files.pop(name).key)
        names = sorted(subdirs.union(files))
        dirs = bytes(name in subdirs for name in names)
        sizes: array.array[int] = array.array("q", bytes(8 * len(names)))
        mtimes: array.array[float] = array.array("d", bytes(8 * len(names)))
        etags = bytearray(_DIGEST * len(names))
        odd: dict[int, str] = {}
        for index, name in enumerate(names):
            if (found := files.get(name)) is not None:
                sizes[index] = found.size
                mtimes[index] = found.last_modified
                digest = _digest(found.etag)
                if digest is None:
                    odd[index] = found.etag
                else:
                    etags[index * _DIGEST : (index + 1) * _DIGEST] = digest
        return cls(prefix, PackedNames(names), dirs, sizes, mtimes, bytes(etags), odd)

    def names(self) -> list[tuple[str, bool]]:
        """Every entry as ``(name, is_directory)``, sorted by name."""
        return [
            (name, bool(is_dir)) for name, is_dir in zip(self.entry_names, self.dirs, strict=True)
        ]

    @property
    def sorted_names(self) -> tuple[Sequence[str], bytes]:
        """Every entry's name, sorted, and 1 for each that is a directory."""
        return self.entry_names, self.dirs

    @functools.cached_property
    def files(self) -> Mapping[str, ObjectInfo]:
        """File names (sorted) to their objects."""
        return _FileTable(self)

    @functools.cached_property
    def subdirs(self) -> frozenset[str]:
        return frozenset(
            name for name, is_dir in zip(self.entry_names, self.dirs, strict=True) if is_dir
        )

    def index(self, name: str) -> int | None:
        """Where *name* is in ``names``, if it is there."""
        index = bisect.bisect_left(self.entry_names, name)
        return index if index < len(self.entry_names) and self.entry_names[index] == name else None

    def object_at(self, index: int) -> ObjectInfo:
        """The object of the file entry at *index*."""
        etag = self.odd_etags.get(index)
        if etag is None:
            etag = self.etags[index * _DIGEST : (index + 1) * _DIGEST].hex()
        return ObjectInfo(
            self.prefix + self.entry_names[index],
            self.sizes[index],
            etag,
            self.mtimes[index],
        )

    def cost(self) -> int:
        """About the bytes this listing holds (what the listing cache counts)."""
        columns = sum(map(sys.getsizeof, (self.dirs, self.etags, self.sizes, self.mtimes)))
        odd = sum(_ODD_ETAG_BYTES + len(etag) for etag in self.odd_etags.values())
        return _LISTING_BYTES + self.entry_names.nbytes() + columns + odd


_DIGEST = 16  # bytes of an MD5 ETag


def _digest(etag: str) -> bytes | None:
    """The 16 bytes of a 32-digit lowercase hex ETag (what ``.hex()`` gives back); else None."""
    if len(etag) != 2 * _DIGEST or etag != etag.lower():
        return None
    try:
        return bytes.fromhex(etag)
    except ValueError:
        return None


_BIG_LISTING = 5_000  # keys: a listing this big is made into columns off the trio thread


async def _listing_from_keys(
    prefix: str, objects: Sequence[ObjectInfo], prefixes: Sequence[str]
) -> DirectoryListing:
    """``DirectoryListing.from_keys``, in a worker thread for a big folder (200,000 keys take
    ~0.3 s, which FUSE requests would otherwise wait behind)."""
    if len(objects) + len(prefixes) < _BIG_LISTING:
        return DirectoryListing.from_keys(prefix, objects, prefixes)
    return await trio.to_thread.run_sync(DirectoryListing.from_keys, prefix, objects, prefixes)


class _FileTable(Mapping[str, ObjectInfo]):
    """The files of a ``DirectoryListing`` as a mapping of name to ``ObjectInfo`` (made on
    demand from the columns)."""

    __slots__ = ("_listing",)

    def __init__(self, listing: DirectoryListing) -> None:
        self._listing = listing

    def __getitem__(self, name: str) -> ObjectInfo:
        index = self._listing.index(name)
        if index is None or self._listing.dirs[index]:
            raise KeyError(name)
        return self._listing.object_at(index)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._listing.index(name)
        return index is not None and not self._listing.dirs[index]

    def __iter__(self) -> Iterator[str]:
        listing = self._listing
        return (
            name
            for name, is_dir in zip(listing.entry_names, listing.dirs, strict=True)
            if not is_dir
        )

    def __len__(self) -> int:
        return len(self._listing.entry_names) - self._listing.dirs.count(1)

    def items(self) -> _FileItems:
        return _FileItems(self._listing)


class _FileItems(ItemsView[str, ObjectInfo]):
    """``_FileTable.items()`` walked by column index: no name lookup per entry."""

    def __init__(self, listing: DirectoryListing) -> None:
        super().__init__(_FileTable(listing))
        self._columns = listing

    def __iter__(self) -> Iterator[tuple[str, ObjectInfo]]:
        listing = self._columns
        names = listing.entry_names
        for index, is_dir in enumerate(listing.dirs):
            if not is_dir:
                yield names[index], listing.object_at(index)


@dataclasses.dataclass(frozen=True)
class DatasetSnapshot:
    """Every directory level of one dataset version, from one flat listing of its keys."""

    root: str  # the dataset's S3 prefix, ending in ``/``
    levels: Mapping[str, DirectoryListing]  # by full S3 prefix, as a delimited listing

    @classmethod
    def from_keys(cls, root: str, objects: Sequence[ObjectInfo]) -> DatasetSnapshot:
        """Split a flat listing under *root* into what a delimited listing of each level says.

        Every prefix ending in ``/`` that a key passes through gets a level: the keys right
        under it as objects, the next ``/``-ended segments as common prefixes. So a ``dir/``
        marker key makes ``dir`` a folder of its parent and an (empty) level of its own.
        """
        levels = {
            prefix: DirectoryListing.from_keys(prefix, objects, prefixes)
            for prefix, (objects, prefixes) in split_levels(root, objects).items()
        }
        return cls(root, levels)

    def cost(self) -> int:
        """About the bytes this snapshot holds (what the listing cache counts)."""
        return sum(level.cost() for level in self.levels.values())

    def listing(self, directory: str) -> DirectoryListing:
        """The level of *directory* ("" for the root); empty where no key lies under it."""
        prefix = _prefix_of(self.root, directory)
        level = self.levels.get(prefix)
        return DirectoryListing.from_keys(prefix, (), ()) if level is None else level


ListingKey = tuple[str, str | None]  # (handle, directory) of a level, (handle, None) of a snapshot


class ListingCache:
    """S3 listings, each with when it was listed: fresh for ``ttl``, and after that kept (for
    an outage: ``last``) until the least recently used go to fit ``budget`` bytes (as
    ``DirectoryListing.cost`` counts them). One budget for levels and snapshots, whatever the
    number of folders: a walk of many small folders keeps as many listings as few big ones of
    the same total size."""

    def __init__(self, budget: int, ttl: float, clock: Callable[[], float]) -> None:
        self._entries: cachetools.LRUCache[
            ListingKey, tuple[DirectoryListing | DatasetSnapshot, float]
        ] = cachetools.LRUCache(max(budget, 1), getsizeof=lambda entry: entry[0].cost())
        self._ttl = ttl
        self._clock = clock
        self._too_big = 0

    def fresh(self, key: ListingKey) -> DirectoryListing | DatasetSnapshot | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[1] >= self._ttl:
            return None
        return entry[0]

    def last(self, key: ListingKey) -> DirectoryListing | DatasetSnapshot | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: ListingKey, value: DirectoryListing | DatasetSnapshot) -> None:
        if value.cost() > self._entries.maxsize:
            self._too_big += 1  # answered, never kept: it alone is more than the budget
            self._entries.pop(key, None)
            return
        self._entries[key] = (value, self._clock())

    def drop(self, handle: str) -> None:
        for key in [key for key in self._entries if key[0] == handle]:
            del self._entries[key]

    def statistics(self) -> dict[str, int]:
        snapshots = sum(1 for key in self._entries if key[1] is None)
        return {
            "listings_cached": len(self._entries) - snapshots,
            "snapshots_cached": snapshots,
            "listing_cache_bytes": int(self._entries.currsize),
            "listings_too_big_to_cache": self._too_big,
        }


Level = tuple[list[ObjectInfo], list[str]]  # a level's objects and common prefixes, raw
FOLDER: Final = "folder"
Entry = ObjectInfo | Literal["folder"] | None  # what a name in a dataset directory is


def _entry_in(listing: DirectoryListing, name: str) -> Entry:
    index = listing.index(name)
    if index is None:
        return None
    return FOLDER if listing.dirs[index] else listing.object_at(index)


def split_levels(root: str, objects: Sequence[ObjectInfo]) -> dict[str, Level]:
    """What a delimited listing of each level under *root* says, from a flat listing: every
    prefix ending in ``/`` that a key passes through gets a level, with the keys right under
    it as objects and the next ``/``-ended segments as common prefixes."""
    level_objects: dict[str, list[ObjectInfo]] = {root: []}
    level_prefixes: dict[str, dict[str, None]] = {root: {}}
    for info in objects:
        if not info.key.startswith(root):
            continue
        prefix = root
        for segment in info.key[len(root) :].split("/")[:-1]:
            level_prefixes.setdefault(prefix, {})[f"{prefix}{segment}/"] = None
            prefix = f"{prefix}{segment}/"
        level_objects.setdefault(prefix, []).append(info)
    return {
        prefix: (level_objects.get(prefix, []), list(level_prefixes.get(prefix, ())))
        for prefix in level_objects.keys() | level_prefixes.keys()
    }


def _prefix_of(root: str, directory: str) -> str:
    return f"{root}{directory}/" if directory else root


class _ListIndex:
    """Lookups into one snapshot of the dataset list, each built at most once for it."""

    def __init__(
        self,
        records: tuple[DatasetRecord, ...],
        fresh_until: float,
        estimates: dict[str, tuple[DatasetRecord | None, DatasetRecord]],
    ) -> None:
        self.fresh_until = fresh_until  # clock time: the list's metadata_ttl ends
        self.by_handle = {record.handle: record for record in records}
        self._latest: dict[str, str] = {}  # "" where the chain leaves the list
        # handle -> (the last fetched record the estimate used, the estimate)
        self.estimates = estimates

    def latest(self, handle: str) -> str | None:
        """The end of *handle*'s chain of listed versions; None if it leaves the list.

        Every handle walked gets the answer too, so all the links of a prefix cost one walk
        per chain, not one per version.
        """
        walked: dict[str, None] = {}
        current: str | None = handle
        answer = ""
        while current is not None:
            known = self._latest.get(current)
            if known is not None:
                answer = known
                break
            record = self.by_handle.get(current)
            if record is None:
                break
            walked[current] = None
            following = record.versioning.next_version if record.versioning else None
            if not following:
                answer = current
                break
            if following in walked or len(walked) > _MAX_CHAIN:
                logger.warning("versioning chain of %s loops at %s", handle, following)
                answer = current
                break
            current = following
        for each in walked:
            self._latest[each] = answer
        return answer or None


V = TypeVar("V")


class Catalog:
    """TTL caches of records, the dataset list, S3 listings and read-access probes."""

    def __init__(
        self,
        client: RecordSource,
        broker: ReadCredentialSource,
        store: BlobStore,
        *,
        clock: Callable[[], float] = time.time,
        metadata_ttl: float = 30.0,
        listing_ttl: float = 300.0,
        negative_ttl: float = 5.0,
        max_records: int = 4096,
        listing_cache_bytes: int = 64 << 20,
        snapshot_max_keys: int = 3000,
        username: str | None = None,
        prepare_listed: Callable[[Sequence[DatasetRecord]], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._username = username  # the caller, to tell their own datasets in the list
        self._prepare_listed = prepare_listed
        self._broker = broker
        self._store = store
        self._tree_lister: TreeLister | None = None
        if snapshot_max_keys > 0 and isinstance(store, TreeLister):
            self._tree_lister = store
        self._clock = clock
        self._metadata_ttl = metadata_ttl
        self._records: cachetools.TTLCache[str, DatasetRecord] = cachetools.TTLCache(
            max_records, metadata_ttl, timer=clock
        )
        self._unknown: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            max_records, negative_ttl, timer=clock
        )
        self._last_fetched: cachetools.LRUCache[str, DatasetRecord] = cachetools.LRUCache(
            max_records
        )
        self._all: cachetools.TTLCache[str, tuple[DatasetRecord, ...]] = cachetools.TTLCache(
            1, metadata_ttl, timer=clock
        )
        self._last_all: tuple[DatasetRecord, ...] | None = None
        self._list_index: _ListIndex | None = None
        # Levels by (handle, directory) and snapshots by (handle, None), within one byte budget;
        # a handle too big for a snapshot is remembered for listing_ttl, and meanwhile its
        # folders are listed one level at a time.
        self._listings = ListingCache(listing_cache_bytes, listing_ttl, clock)
        self._snapshot_max_keys = snapshot_max_keys
        self._unsnapshotted: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            max_records, listing_ttl, timer=clock
        )
        # What a snapshot that stopped early listed of the levels it did not finish: by handle,
        # the last key listed and each such level's first entries (the rest is listed after
        # that key when the level is asked for), so no page of it is listed twice.
        self._partial: cachetools.TTLCache[str, tuple[str, dict[str, Level]]] = cachetools.TTLCache(
            _PARTIAL_HANDLES, listing_ttl, timer=clock
        )
        # Names found by HEAD and LIST without a listing of their folder (``entry``).
        self._named: cachetools.TTLCache[tuple[str, str], Entry] = cachetools.TTLCache(
            _NAMES_KEPT, listing_ttl, timer=clock
        )
        self._unnamed: cachetools.TTLCache[tuple[str, str], Entry] = cachetools.TTLCache(
            _NAMES_KEPT, negative_ttl, timer=clock
        )
        # The user metadata (x-amz-meta-*) those HEADs answered, with the object's ETag.
        self._name_metadata: cachetools.TTLCache[tuple[str, str], tuple[str, Mapping[str, str]]]
        self._name_metadata = cachetools.TTLCache(_NAMES_KEPT, listing_ttl, timer=clock)
        self._name_flights: SingleFlight[tuple[str, str], Entry] = SingleFlight()
        # Listings that were under way when invalidate() ran are answered but not kept.
        self._invalidations = 0
        self._readable: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            max_records, metadata_ttl, timer=clock
        )
        self._record_flights: SingleFlight[str, DatasetRecord] = SingleFlight()
        self._all_flights: SingleFlight[str, tuple[DatasetRecord, ...]] = SingleFlight()
        self._listing_flights: SingleFlight[tuple[str, str], DirectoryListing] = SingleFlight()
        self._snapshot_flights: SingleFlight[str, DatasetSnapshot | None] = SingleFlight()
        self._probe_flights: SingleFlight[str, bool] = SingleFlight()
        self._counts = {
            "record_hits": 0,
            "record_fetches": 0,
            "negative_hits": 0,
            "list_hits": 0,
            "list_fetches": 0,
            "listing_hits": 0,
            "listing_fetches": 0,
            "snapshot_fetches": 0,
            "snapshots_too_big": 0,
            "credential_retries": 0,
            "access_probes": 0,
            "stale_served": 0,
            "listings_finished_after_snapshot": 0,
            "name_probes": 0,
            "name_hits": 0,
            "list_indexes_built": 0,
        }

    # --- records -------------------------------------------------------------------------

    async def record(self, handle: str) -> DatasetRecord:
        """The fetched record of *handle* (with the caller's roles); ``NotFoundError`` if none."""
        cached = self._records.get(handle)
        if cached is not None:
            self._counts["record_hits"] += 1
            return cached
        if self._unknown.get(handle):
            self._counts["negative_hits"] += 1
            raise api_errors.NotFoundError(f"unknown dataset {handle!r} (cached)")
        return await self._record_flights.run(handle, lambda: self._fetch_record(handle))

    async def _fetch_record(self, handle: str) -> DatasetRecord:
        self._counts["record_fetches"] += 1
        try:
            record = await self._client.fetch_dataset(handle)
        except api_errors.NotFoundError:
            self._unknown[handle] = True
            raise
        except api_errors.UnavailableError:
            stale = self._last_fetched.get(handle)
            if stale is None:
                raise
            self._served_stale("record", handle)
            return stale
        self._records[handle] = record
        self._last_fetched[handle] = record
        return record

    def cached_record(self, handle: str) -> DatasetRecord | None:
        """The last fetched record of *handle*, fresh or not, without any I/O."""
        return self._last_fetched.get(handle)

    def fresh_record(self, handle: str) -> DatasetRecord | None:
        """The fetched record of *handle* while it is fresh (``metadata_ttl``), without I/O."""
        if handle not in self._last_fetched:  # never fetched: most of a big listing, answered fast
            return None
        return self._records.get(handle)

    def fetched_handles(self) -> list[str]:
        """Handles fetched at some point (they appear in their prefix dir even if unlisted)."""
        return list(self._last_fetched.keys())

    # --- the dataset list ----------------------------------------------------------------

    async def datasets(self) -> tuple[DatasetRecord, ...]:
        """Every dataset the caller may see (list records: ``roles``/``locked`` are None)."""
        cached = self._all.get("all")
        if cached is not None:
            self._counts["list_hits"] += 1
            return cached
        return await self._all_flights.run("all", self._fetch_all)

    async def _fetch_all(self) -> tuple[DatasetRecord, ...]:
        self._counts["list_fetches"] += 1
        estimates: dict[str, tuple[DatasetRecord | None, DatasetRecord]] = {}
        records: tuple[DatasetRecord, ...] = ()
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:

            def page_arrived(page: Sequence[DatasetRecord]) -> None:
                batch = [self._estimate(record, estimates) for record in page]
                if self._prepare_listed is not None and batch:
                    nursery.start_soon(self._prepare_page, batch)

            try:
                records = tuple(await self._client.list_all(on_page=page_arrived))
            except Exception as exc:  # noqa: BLE001 -- raised below, outside the nursery
                failure = exc
                nursery.cancel_scope.cancel()
        if failure is not None:
            if not isinstance(failure, api_errors.UnavailableError) or self._last_all is None:
                raise failure
            self._served_stale("dataset list", "")
            return self._last_all
        self._all["all"] = records
        self._last_all = records
        self._counts["list_indexes_built"] += 1
        self._list_index = _ListIndex(records, self._clock() + self._metadata_ttl, estimates)
        return records

    async def _prepare_page(self, batch: list[DatasetRecord]) -> None:
        assert self._prepare_listed is not None
        try:
            await self._prepare_listed(batch)
        except Exception as exc:  # noqa: BLE001 -- work ahead: what needs it does it again
            logger.debug("preparing listed records: %r", exc)

    def _fresh_list(self) -> _ListIndex | None:
        index = self._list_index
        return index if index is not None and self._clock() < index.fresh_until else None

    def listed(self, handle: str) -> DatasetRecord | None:
        """*handle*'s list record while the list is fresh (``metadata_ttl``), without I/O."""
        index = self._fresh_list()
        return None if index is None else index.by_handle.get(handle)

    def listed_latest(self, handle: str) -> str | None:
        """The latest version of *handle*'s chain from the fresh list, without I/O; None when
        the list is not fresh or the chain leaves it (``latest_handle`` then walks records)."""
        index = self._fresh_list()
        return None if index is None else index.latest(handle)

    def estimated_record(self, handle: str) -> DatasetRecord | None:
        """*handle*'s list record with the caller's roles and lock as best known, without I/O.

        As last fetched (with the roles list of that fetch); else, for the caller's own
        dataset, ``OWNER_ROLES`` and unlocked (exact, but for a lock); else unknown: ``roles``
        and ``locked`` None, and a document with ``GUESSED_ROLES``, unlocked, for a sidecar
        size estimate. None when the list is not fresh or does not hold *handle*.
        """
        index = self._fresh_list()
        listed = None if index is None else index.by_handle.get(handle)
        if index is None or listed is None:
            return None
        return self._estimate(listed, index.estimates)

    def _estimate(
        self,
        listed: DatasetRecord,
        estimates: dict[str, tuple[DatasetRecord | None, DatasetRecord]],
    ) -> DatasetRecord:
        """``estimated_record`` of a list record, memoised in *estimates* (see there)."""
        last = self._last_fetched.get(listed.handle)
        known = estimates.get(listed.handle)
        if known is not None and known[0] is last:
            return known[1]
        roles: frozenset[str] | None = None
        locked: bool | None = None
        roles_shown: object = list(GUESSED_ROLES)
        if last is not None:
            roles, locked, roles_shown = last.roles, last.locked, last.document.get("roles")
        elif self._username is not None and listed.owner_username == self._username:
            roles, locked, roles_shown = frozenset(OWNER_ROLES), False, list(OWNER_ROLES)
        document = {
            "item": listed.document.get("item"),
            "roles": roles_shown,
            "locked": bool(locked),
        }
        estimate = dataclasses.replace(listed, roles=roles, locked=locked, document=document)
        estimates[listed.handle] = (last, estimate)
        return estimate

    # --- S3 listings ---------------------------------------------------------------------

    async def entry(self, record: DatasetRecord, directory: str, name: str) -> Entry:
        """What *name* is in *directory* of the dataset: its object, ``FOLDER``, or None.

        From the fresh listing of *directory* when one is cached; else one HEAD of the key and
        one LIST of at most one key under ``name/``, side by side, so that a path deep in a
        dataset is found without listing the folders on the way (a folder wins over an object
        of the same name, as in a listing). Answers are kept ``listing_ttl`` (absent names
        ``negative_ttl``); an unreachable S3 falls back to the listing (and its stale copy).
        """
        listing = self.cached_listing(record.handle, directory)
        if listing is not None:
            return _entry_in(listing, name)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return None  # not UTF-8: no S3 key has this name
        key = (record.handle, f"{directory}/{name}" if directory else name)
        for cache in (self._named, self._unnamed):
            if key in cache:
                self._counts["name_hits"] += 1
                return cache[key]
        try:
            return await self._name_flights.run(key, lambda: self._probe_name(record, key[1]))
        except (api_errors.UnavailableError, BlobUnavailableError):
            return _entry_in(await self.listing(record, directory), name)

    async def _probe_name(self, record: DatasetRecord, path: str) -> Entry:
        self._counts["name_probes"] += 1
        bucket, full = record.s3.bucket_name, record.s3.path + path
        invalidations = self._invalidations
        found: dict[str, Entry] = {}
        metadata: dict[str, Mapping[str, str]] = {}
        folder: list[bool] = []

        async def head() -> None:
            try:
                answer = await self.with_read_credentials(
                    record.handle, lambda creds: self._store.head_object(creds, bucket, full)
                )
            except NoSuchKeyError:
                found["object"] = None
            else:
                found["object"] = answer.info
                metadata[answer.info.etag] = answer.metadata

        async def any_under() -> None:
            folder.append(
                await self.with_read_credentials(
                    record.handle, lambda creds: self._store.any_under(creds, bucket, full + "/")
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(head)
            nursery.start_soon(any_under)
        answer: Entry = FOLDER if folder[0] else found["object"]
        if invalidations == self._invalidations:  # else it may predate a write: do not keep it
            (self._unnamed if answer is None else self._named)[(record.handle, path)] = answer
            for etag, user_metadata in metadata.items():
                self._name_metadata[(record.handle, path)] = (etag, user_metadata)
        return answer

    def name_metadata(self, handle: str, path: str, etag: str) -> Mapping[str, str] | None:
        """The user metadata of the object at *path* (with *etag*) that ``entry`` found by a
        HEAD, if it is still kept; no I/O."""
        kept = self._name_metadata.get((handle, path))
        return kept[1] if kept is not None and kept[0] == etag else None

    def cached_listing(self, handle: str, directory: str) -> DirectoryListing | None:
        """The fresh listing of one level, if cached (alone or in a snapshot), without I/O."""
        snapshot = self._listings.fresh((handle, None))
        if isinstance(snapshot, DatasetSnapshot):
            return snapshot.listing(directory)
        cached = self._listings.fresh((handle, directory))
        return cached if isinstance(cached, DirectoryListing) else None

    async def listing(self, record: DatasetRecord, directory: str) -> DirectoryListing:
        """One level of the dataset's keys under *directory* ("" for the root, no outer ``/``)."""
        handle = record.handle
        cached = self.cached_listing(handle, directory)
        if cached is not None:
            self._counts["listing_hits"] += 1
            return cached
        if self._tree_lister is not None and not self._unsnapshotted.get(handle):
            lister = self._tree_lister
            try:
                snapshot = await self._snapshot_flights.run(
                    handle, lambda: self._fetch_snapshot(record, lister)
                )
            except (api_errors.UnavailableError, BlobUnavailableError):
                stale = self._stale_listing(handle, directory)
                if stale is None:
                    raise
                return stale
            if snapshot is not None:
                return snapshot.listing(directory)
            finished = self._listings.fresh((handle, directory))  # by the truncated snapshot
            if isinstance(finished, DirectoryListing):
                return finished
        return await self._listing_flights.run(
            (handle, directory), lambda: self._fetch_listing(record, directory)
        )

    async def _fetch_snapshot(
        self, record: DatasetRecord, lister: TreeLister
    ) -> DatasetSnapshot | None:
        """All of the dataset's keys as one snapshot; None (remembered) when it is too big."""
        self._counts["snapshot_fetches"] += 1
        handle, bucket, root = record.handle, record.s3.bucket_name, record.s3.path
        invalidations = self._invalidations
        try:
            keys = await self.with_read_credentials(
                handle,
                lambda creds: lister.list_tree(
                    creds, bucket, root, max_keys=self._snapshot_max_keys
                ),
            )
        except (api_errors.UnavailableError, BlobUnavailableError):
            stale = self._listings.last((handle, None))
            if not isinstance(stale, DatasetSnapshot):
                raise
            self._served_stale("listing", handle)
            return stale
        if keys.truncated:
            self._counts["snapshots_too_big"] += 1
            self._unsnapshotted[handle] = True
            if invalidations == self._invalidations:
                self._keep_partial(handle, root, keys.objects)
            return None
        snapshot = DatasetSnapshot.from_keys(root, keys.objects)
        if invalidations == self._invalidations:  # else it may predate a write: do not keep it
            self._listings.put((handle, None), snapshot)
        return snapshot

    def _keep_partial(self, handle: str, root: str, objects: Sequence[ObjectInfo]) -> None:
        """Keep what a truncated tree listing says: a level whose keys all came before the last
        key listed is complete (its keys are one run in key order) and is cached as a listing;
        the levels on the last key's path are kept to be finished after that key."""
        if not objects:
            return
        last = objects[-1].key
        unfinished: dict[str, Level] = {}
        for prefix, level in split_levels(root, objects).items():
            if last.startswith(prefix):
                unfinished[prefix] = level
            else:
                directory = prefix[len(root) :].removesuffix("/")
                self._listings.put((handle, directory), DirectoryListing.from_keys(prefix, *level))
        self._partial[handle] = (last, unfinished)

    async def _fetch_listing(self, record: DatasetRecord, directory: str) -> DirectoryListing:
        self._counts["listing_fetches"] += 1
        key = (record.handle, directory)
        invalidations = self._invalidations
        try:
            listing = await self._list(record, directory)
        except (api_errors.UnavailableError, BlobUnavailableError):
            stale = self._stale_listing(record.handle, directory)
            if stale is None:
                raise
            return stale
        if invalidations == self._invalidations:  # else it may predate a write: do not keep it
            self._listings.put(key, listing)
        return listing

    def _stale_listing(self, handle: str, directory: str) -> DirectoryListing | None:
        """The last listing of one level seen (alone or in a snapshot), if any, counted and
        logged as served stale."""
        stale = self._listings.last((handle, directory))
        if not isinstance(stale, DirectoryListing):
            snapshot = self._listings.last((handle, None))
            stale = snapshot.listing(directory) if isinstance(snapshot, DatasetSnapshot) else None
        if stale is not None:
            self._served_stale("listing", f"{handle}/{directory}")
        return stale

    async def _list(self, record: DatasetRecord, directory: str) -> DirectoryListing:
        prefix = _prefix_of(record.s3.path, directory)
        partial = self._partial.get(record.handle)
        if partial is not None and prefix in partial[1]:
            # The level's first entries came with the truncated snapshot: list the rest only.
            last, (objects, prefixes) = partial[0], partial[1][prefix]
            rest = await self.with_read_credentials(
                record.handle,
                lambda creds: self._store.list_prefix(
                    creds, record.s3.bucket_name, prefix, start_after=last
                ),
            )
            self._counts["listings_finished_after_snapshot"] += 1
            return await _listing_from_keys(
                prefix, [*objects, *rest.objects], [*prefixes, *rest.prefixes]
            )
        raw = await self.with_read_credentials(
            record.handle,
            lambda creds: self._store.list_prefix(creds, record.s3.bucket_name, prefix),
        )
        return await _listing_from_keys(prefix, raw.objects, raw.prefixes)

    @property
    def generation(self) -> int:
        """Counts ``invalidate`` calls: what was derived from older listings may be stale."""
        return self._invalidations

    async def with_read_credentials(
        self, handle: str, call: Callable[[Credentials], Awaitable[V]]
    ) -> V:
        """``call`` with the dataset's read credentials, retried once with fresh ones if S3
        refuses them (they may have expired, or been revoked, since they were cached): the
        catalog's listings, and reads beside them (object metadata, link targets)."""
        return await self._broker.call(handle, "read", call, on_renew=self._count_renewal)

    def _count_renewal(self) -> None:
        self._counts["credential_retries"] += 1

    def _served_stale(self, what: str, name: str) -> None:
        self._counts["stale_served"] += 1
        logger.warning("data store or S3 unreachable: serving the cached %s %s", what, name)

    # --- read access ---------------------------------------------------------------------

    def roles_allow_data_read(self, record: DatasetRecord) -> bool:
        return bool(record.roles and record.roles & DATA_READ_ROLES)

    def known_data_readable(self, record: DatasetRecord) -> bool | None:
        """Whether the dataset's files are readable, if known without I/O."""
        if self.roles_allow_data_read(record):
            return True
        return self._readable.get(record.handle)

    async def data_readable(self, record: DatasetRecord) -> bool:
        """Whether the caller can read the dataset's files.

        Item roles decide when they grant it; otherwise the data store is asked for read
        credentials once per ``metadata_ttl`` (a realm admin gets them without item roles).
        """
        known = self.known_data_readable(record)
        if known is not None:
            return known
        return await self._probe_flights.run(record.handle, lambda: self._probe(record.handle))

    async def _probe(self, handle: str) -> bool:
        self._counts["access_probes"] += 1
        try:
            await self._broker.read(handle)
        except (api_errors.PermissionDeniedError, api_errors.ForbiddenError):
            readable = False
        else:
            readable = True
        self._readable[handle] = readable
        return readable

    # --- versioning ----------------------------------------------------------------------

    async def latest_handle(self, handle: str) -> str:
        """The last version the caller can see of the chain *handle* belongs to.

        Walks ``versioning_info.next_version``, fetching records as needed; a next version the
        caller cannot fetch ends the walk at the last visible one.
        """
        record = await self.record(handle)
        seen = {record.handle}
        while record.versioning is not None and record.versioning.next_version:
            following = record.versioning.next_version
            if following in seen or len(seen) > _MAX_CHAIN:
                logger.warning("versioning chain of %s loops at %s", handle, following)
                break
            seen.add(following)
            try:
                record = await self.record(following)
            except (api_errors.NotFoundError, api_errors.PermissionDeniedError):
                break
        return record.handle

    # --- invalidation and statistics -----------------------------------------------------

    def invalidate(self, handle: str) -> None:
        """Forget everything cached about *handle* (after a write or metadata edit)."""
        self._invalidations += 1
        self._records.pop(handle, None)
        self._unknown.pop(handle, None)
        self._readable.pop(handle, None)
        self._listings.drop(handle)
        self._partial.pop(handle, None)
        for names in (self._named, self._unnamed, self._name_metadata):
            for key in [key for key in names if key[0] == handle]:
                names.pop(key, None)
        self._unsnapshotted.pop(handle, None)
        self._last_fetched.pop(handle, None)
        self._all.clear()
        self._list_index = None

    def statistics(self) -> dict[str, int]:
        return {
            **self._counts,
            "records_cached": len(self._records),
            "negative_cached": len(self._unknown),
            **self._listings.statistics(),
            "datasets_listed": len(self._last_all or ()),
            "single_flight_joined": (
                self._record_flights.joined
                + self._all_flights.joined
                + self._listing_flights.joined
                + self._snapshot_flights.joined
                + self._probe_flights.joined
                + self._name_flights.joined
            ),
        }
