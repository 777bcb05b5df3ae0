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

Every fetch is single-flight: N concurrent callers for the same key cause one call. Published
versions change only through writes, which invalidate them with ``invalidate(handle)``. When the
data store or S3 is unreachable (``UnavailableError``/``BlobUnavailableError`` after the IO layer's
retries), the last value seen is served past its TTL rather than failing (docs/SEMANTICS.md,
Caching).

It must not make blocking calls, must not import httpx, boto3 or pyfuse3, and never holds or
logs a secret beyond passing credentials from the broker to the store. Trio thread only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import cachetools

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials, DatasetRecord
from provenafs.cache.single_flight import SingleFlight
from provenafs.core.types import NAME_MAX
from provenafs.storage.blobstore import (
    AccessDeniedError,
    BlobStore,
    BlobUnavailableError,
    ExpiredCredentialsError,
    Listing,
    ObjectInfo,
)

__all__ = [
    "DATA_READ_ROLES",
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

_MAX_CHAIN = 10_000  # a versioning chain longer than this is treated as a cycle


class RecordSource(Protocol):
    """The part of ``DataStoreClient`` the catalog uses."""

    async def fetch_dataset(self, handle: str) -> DatasetRecord: ...

    async def list_all(self, page_size: int = 100) -> list[DatasetRecord]: ...


@runtime_checkable
class TreeLister(Protocol):
    """A blob store that can list every key under a prefix but stop paging early.

    ``list_tree`` answers like ``list_prefix(..., delimiter=None)`` (no common prefixes), or
    None once more than ``max_keys`` keys are known to exist, without listing the rest.
    """

    async def list_tree(
        self, creds: Credentials, bucket: str, prefix: str, *, max_keys: int
    ) -> Listing | None: ...


class ReadCredentialSource(Protocol):
    """The part of ``CredentialBroker`` the catalog uses."""

    async def read(self, handle: str) -> Credentials: ...

    def invalidate(self, handle: str) -> None: ...


def is_valid_entry_name(name: str) -> bool:
    """Whether *name* can be an entry: not ``""``/``.``/``..``, no ``/`` or NUL, ≤ 255 bytes."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


@dataclasses.dataclass(frozen=True)
class DirectoryListing:
    """One directory level of a dataset: file names to their objects, and subdirectory names."""

    files: Mapping[str, ObjectInfo]
    subdirs: frozenset[str]

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
            if not is_valid_entry_name(name) or name in subdirs:
                logger.debug("skipping S3 key that cannot be an entry: %r", info.key)
                continue
            files[name] = info
        return cls(files, frozenset(subdirs))

    def names(self) -> list[tuple[str, bool]]:
        """Every entry as ``(name, is_directory)``, sorted by name."""
        entries = [(name, True) for name in self.subdirs]
        entries += [(name, False) for name in self.files]
        return sorted(entries)


_EMPTY_LISTING = DirectoryListing({}, frozenset())


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
        levels = {
            prefix: DirectoryListing.from_keys(
                prefix, level_objects.get(prefix, ()), list(level_prefixes.get(prefix, ()))
            )
            for prefix in level_objects.keys() | level_prefixes.keys()
        }
        return cls(root, levels)

    def listing(self, directory: str) -> DirectoryListing:
        """The level of *directory* ("" for the root); empty where no key lies under it."""
        return self.levels.get(_prefix_of(self.root, directory), _EMPTY_LISTING)


def _prefix_of(root: str, directory: str) -> str:
    return f"{root}{directory}/" if directory else root


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
        max_listings: int = 256,
        max_snapshots: int = 16,
        snapshot_max_keys: int = 3000,
    ) -> None:
        self._client = client
        self._broker = broker
        self._store = store
        self._tree_lister: TreeLister | None = None
        if snapshot_max_keys > 0 and isinstance(store, TreeLister):
            self._tree_lister = store
        self._clock = clock
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
        self._listings: cachetools.TTLCache[tuple[str, str], DirectoryListing] = (
            cachetools.TTLCache(max_listings, listing_ttl, timer=clock)
        )
        self._last_listings: cachetools.LRUCache[tuple[str, str], DirectoryListing] = (
            cachetools.LRUCache(max_listings)
        )
        # Snapshots by handle; a handle too big for one is remembered for listing_ttl, and
        # meanwhile its folders are listed one level at a time.
        self._snapshot_max_keys = snapshot_max_keys
        self._snapshots: cachetools.TTLCache[str, DatasetSnapshot] = cachetools.TTLCache(
            max_snapshots, listing_ttl, timer=clock
        )
        self._last_snapshots: cachetools.LRUCache[str, DatasetSnapshot] = cachetools.LRUCache(
            max_snapshots
        )
        self._unsnapshotted: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            max_records, listing_ttl, timer=clock
        )
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
        try:
            records = tuple(await self._client.list_all())
        except api_errors.UnavailableError:
            if self._last_all is None:
                raise
            self._served_stale("dataset list", "")
            return self._last_all
        self._all["all"] = records
        self._last_all = records
        return records

    # --- S3 listings ---------------------------------------------------------------------

    def cached_listing(self, record: DatasetRecord, directory: str) -> DirectoryListing | None:
        """One level's listing if it is at hand (fresh, or in the version's snapshot), no I/O."""
        snapshot = self._snapshots.get(record.handle)
        if snapshot is not None:
            return snapshot.listing(directory)
        return self._listings.get((record.handle, directory))

    async def listing(self, record: DatasetRecord, directory: str) -> DirectoryListing:
        """One level of the dataset's keys under *directory* ("" for the root, no outer ``/``)."""
        handle = record.handle
        snapshot = self._snapshots.get(handle)
        if snapshot is not None:
            cached: DirectoryListing | None = snapshot.listing(directory)
        else:
            cached = self._listings.get((handle, directory))
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
            keys = await self._with_read_credentials(
                handle,
                lambda creds: lister.list_tree(
                    creds, bucket, root, max_keys=self._snapshot_max_keys
                ),
            )
        except (api_errors.UnavailableError, BlobUnavailableError):
            stale = self._last_snapshots.get(handle)
            if stale is None:
                raise
            self._served_stale("listing", handle)
            return stale
        if keys is None:
            self._counts["snapshots_too_big"] += 1
            self._unsnapshotted[handle] = True
            return None
        snapshot = DatasetSnapshot.from_keys(root, keys.objects)
        if invalidations == self._invalidations:  # else it may predate a write: do not keep it
            self._snapshots[handle] = snapshot
            self._last_snapshots[handle] = snapshot
        return snapshot

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
            self._listings[key] = listing
            self._last_listings[key] = listing
        return listing

    def _stale_listing(self, handle: str, directory: str) -> DirectoryListing | None:
        """The last listing of one level seen, if any, counted and logged as served stale."""
        stale = self._last_listings.get((handle, directory))
        if stale is not None:
            self._served_stale("listing", f"{handle}/{directory}")
        return stale

    async def _list(self, record: DatasetRecord, directory: str) -> DirectoryListing:
        prefix = _prefix_of(record.s3.path, directory)
        raw = await self._with_read_credentials(
            record.handle,
            lambda creds: self._store.list_prefix(creds, record.s3.bucket_name, prefix),
        )
        return DirectoryListing.from_keys(prefix, raw.objects, raw.prefixes)

    async def with_read_credentials(
        self, handle: str, call: Callable[[Credentials], Awaitable[V]]
    ) -> V:
        """``call`` with *handle*'s read credentials, retried once with fresh ones if S3
        refuses them (for reads beside listings: object metadata, link targets)."""
        return await self._with_read_credentials(handle, call)

    @property
    def generation(self) -> int:
        """Counts ``invalidate`` calls: what was derived from older listings may be stale."""
        return self._invalidations

    async def _with_read_credentials(
        self, handle: str, call: Callable[[Credentials], Awaitable[V]]
    ) -> V:
        """``call`` with the dataset's read credentials, retried once with fresh ones if S3
        refuses them (they may have expired, or been revoked, since they were cached)."""
        for attempt in (1, 2):
            creds = await self._broker.read(handle)
            try:
                return await call(creds)
            except (ExpiredCredentialsError, AccessDeniedError):
                if attempt == 2:
                    raise
                self._counts["credential_retries"] += 1
                self._broker.invalidate(handle)
        raise AssertionError("unreachable")

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
        for key in {key for key in (*self._listings, *self._last_listings) if key[0] == handle}:
            self._listings.pop(key, None)
            self._last_listings.pop(key, None)
        self._snapshots.pop(handle, None)
        self._last_snapshots.pop(handle, None)
        self._unsnapshotted.pop(handle, None)
        self._last_fetched.pop(handle, None)
        self._all.clear()

    def statistics(self) -> dict[str, int]:
        return {
            **self._counts,
            "records_cached": len(self._records),
            "negative_cached": len(self._unknown),
            "listings_cached": len(self._listings),
            "snapshots_cached": len(self._snapshots),
            "datasets_listed": len(self._last_all or ()),
            "single_flight_joined": (
                self._record_flights.joined
                + self._all_flights.joined
                + self._listing_flights.joined
                + self._snapshot_flights.joined
                + self._probe_flights.joined
            ),
        }
