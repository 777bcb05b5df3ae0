"""The catalog's caches: single-flight counts, TTL expiry on a fake clock, negative entries,
credential retry on listings, S3 listing parsing."""

from __future__ import annotations

import tracemalloc
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials, DatasetPage, DatasetRecord
from provenafs.core.catalog import FOLDER, GUESSED_ROLES, OWNER_ROLES, Catalog, DirectoryListing
from provenafs.storage.blobstore import (
    BlobUnavailableError,
    ExpiredCredentialsError,
    Listing,
    MemoryBlobStore,
    ObjectInfo,
)
from provenafs.storage.credentials import CredentialBroker
from tests.unit.fakes import BUCKET, FakeClock, FakeDataStore, s3_path

REEF = "10378.1/1001"


def make(
    store: FakeDataStore, blobs: MemoryBlobStore | None = None
) -> tuple[Catalog, FakeClock, CredentialBroker]:
    clock = FakeClock()
    broker = CredentialBroker(store, clock=clock)
    catalog = Catalog(
        store,
        broker,
        blobs or MemoryBlobStore(),
        clock=clock,
        metadata_ttl=30,
        listing_ttl=300,
        negative_ttl=5,
    )
    return catalog, clock, broker


def make_with_one_file() -> tuple[
    FakeDataStore, MemoryBlobStore, Catalog, FakeClock, CredentialBroker
]:
    """``REEF`` in the data store holding one object, ``a.csv``, and a catalog over both."""
    store = FakeDataStore()
    store.add(REEF)
    blobs = MemoryBlobStore()
    blobs.put_blocking(BUCKET, s3_path(REEF) + "a.csv", b"1")
    catalog, clock, broker = make(store, blobs)
    return store, blobs, catalog, clock, broker


async def test_concurrent_record_lookups_make_one_fetch() -> None:
    store = FakeDataStore()
    store.add(REEF)
    catalog, _, _ = make(store)
    store.gate = trio.Event()
    results = []

    async def one() -> None:
        results.append(await catalog.record(REEF))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    assert store.calls["fetch"] == 1
    assert len(results) == 10 and {r.handle for r in results} == {REEF}
    assert catalog.statistics()["single_flight_joined"] == 9


async def test_concurrent_failures_reach_every_waiter_and_are_cached_only_negative_ttl() -> None:
    store = FakeDataStore()
    catalog, clock, _ = make(store)
    store.gate = trio.Event()
    failures = []

    async def one() -> None:
        try:
            await catalog.record("10378.1/404")
        except api_errors.NotFoundError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    assert len(failures) == 5
    assert store.calls["fetch"] == 1
    with pytest.raises(api_errors.NotFoundError):
        await catalog.record("10378.1/404")
    assert store.calls["fetch"] == 1  # negative entry
    clock.advance(6)
    store.add("10378.1/404")
    assert (await catalog.record("10378.1/404")).handle == "10378.1/404"
    assert store.calls["fetch"] == 2


async def test_records_expire_after_metadata_ttl() -> None:
    store = FakeDataStore()
    store.add(REEF, name="before")
    catalog, clock, _ = make(store)
    assert (await catalog.record(REEF)).display_name == "before"
    store.items[REEF]["display_name"] = "after"
    clock.advance(29)
    assert (await catalog.record(REEF)).display_name == "before"
    clock.advance(2)
    assert (await catalog.record(REEF)).display_name == "after"
    assert store.calls["fetch"] == 2
    catalog.invalidate(REEF)
    await catalog.record(REEF)
    assert store.calls["fetch"] == 3


async def test_the_fresh_list_answers_without_calls_with_estimated_roles() -> None:
    store = FakeDataStore()
    store.add(REEF, owner="alice", roles=OWNER_ROLES)
    store.add("10378.1/1002", owner="bob", roles=("metadata-read",))
    store.add("10378.1/1003", owner="bob", roles=OWNER_ROLES, locked=True)
    clock = FakeClock()
    broker = CredentialBroker(store, clock=clock)
    catalog = Catalog(store, broker, MemoryBlobStore(), clock=clock, username="alice")
    assert catalog.listed(REEF) is None  # no list yet: nothing is guessed
    assert catalog.estimated_record(REEF) is None
    await catalog.datasets()
    own = catalog.estimated_record(REEF)
    assert own is not None and own.roles == frozenset(OWNER_ROLES) and own.locked is False
    assert own.document["roles"] == list(OWNER_ROLES)
    assert own.document["item"] == store.items[REEF]
    others = catalog.estimated_record("10378.1/1002")
    assert others is not None and others.roles is None and others.locked is None
    assert others.document["roles"] == list(GUESSED_ROLES)
    assert catalog.estimated_record("10378.1/1002") is others  # once per list snapshot
    await catalog.record("10378.1/1003")  # once fetched: the roles and lock last seen
    fetched = catalog.estimated_record("10378.1/1003")
    assert fetched is not None and fetched.roles == frozenset(OWNER_ROLES)
    assert fetched.locked is True and fetched.document["locked"] is True
    assert catalog.fresh_record("10378.1/1003") is not None
    assert store.calls["fetch"] == 1
    clock.advance(31)  # record and list both stale: neither answers any more
    assert catalog.fresh_record("10378.1/1003") is None
    assert catalog.listed(REEF) is None and catalog.estimated_record(REEF) is None
    assert catalog.statistics()["list_indexes_built"] == 1


async def test_each_list_page_is_prepared_while_the_next_one_is_awaited() -> None:
    class HeldStore(FakeDataStore):
        """Holds every page after the first until ``release`` is set."""

        release = trio.Event()

        async def list_page(
            self, pagination_key: Mapping[str, Any] | None, page_size: int = 100
        ) -> DatasetPage:
            if pagination_key is not None:
                await self.release.wait()
            return await super().list_page(pagination_key, page_size)

    store = HeldStore()
    for n in range(250):
        store.add(f"10378.1/{n}", owner="alice")
    prepared: list[DatasetRecord] = []

    async def prepare(records: Sequence[DatasetRecord]) -> None:
        prepared.extend(records)

    clock = FakeClock()
    broker = CredentialBroker(store, clock=clock)
    catalog = Catalog(
        store, broker, MemoryBlobStore(), clock=clock, username="alice", prepare_listed=prepare
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(catalog.datasets)
        await trio.testing.wait_all_tasks_blocked()
        assert len(prepared) == 100  # the first page, while the second is awaited
        store.release.set()
    assert len(prepared) == 250
    for record in prepared:  # the very estimates the listing answers from
        assert catalog.estimated_record(record.handle) is record
        assert record.roles == frozenset(OWNER_ROLES)


async def test_dataset_list_walks_every_page_including_empty_ones_once() -> None:
    store = FakeDataStore()
    for n in range(250):
        store.add(f"10378.1/{n}", roles=() if n % 7 == 0 else ("metadata-read",))
    store.empty_pages = 2
    catalog, clock, _ = make(store)
    store.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(catalog.datasets)
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    records = await catalog.datasets()
    assert len(records) == 250 - len(range(0, 250, 7))
    assert store.calls["list"] == 2 + 3  # two empty pages, then 3 pages of 100
    clock.advance(31)
    await catalog.datasets()
    assert store.calls["list"] == 10


async def test_listings_single_flight_ttl_and_credential_retry() -> None:
    _, blobs, catalog, clock, broker = make_with_one_file()
    record = await catalog.record(REEF)

    calls: list[str] = []
    original = blobs.list_prefix

    async def expiring_list(
        creds: Credentials, bucket: str, prefix: str, *, delimiter: str | None = "/"
    ) -> Listing:
        calls.append(prefix)
        if len(calls) == 1:
            raise ExpiredCredentialsError("token expired")
        return await original(creds, bucket, prefix, delimiter=delimiter)

    blobs.list_prefix = expiring_list  # type: ignore[method-assign,assignment]
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(catalog.listing, record, "")
    listing = await catalog.listing(record, "")
    assert list(listing.files) == ["a.csv"]
    assert len(calls) == 2  # one failure, one retry, shared by every caller
    assert broker.statistics()["read_calls"] == 2  # invalidated, then minted anew
    assert catalog.statistics()["credential_retries"] == 1
    clock.advance(301)
    await catalog.listing(record, "")
    assert len(calls) == 3


async def test_listing_gives_up_after_one_retry() -> None:
    store = FakeDataStore()
    store.add(REEF)
    blobs = MemoryBlobStore()
    catalog, _, _ = make(store, blobs)
    record = await catalog.record(REEF)

    async def always_expired(
        creds: Credentials, bucket: str, prefix: str, *, delimiter: str | None = "/"
    ) -> Listing:
        raise ExpiredCredentialsError("still expired")

    blobs.list_prefix = always_expired  # type: ignore[method-assign,assignment]
    with pytest.raises(ExpiredCredentialsError):
        await catalog.listing(record, "")
    assert store.calls["read_credentials"] == 2


async def test_data_readable_probes_once_per_ttl_when_roles_do_not_say() -> None:
    store = FakeDataStore()
    store.add(REEF, roles=("metadata-read",))
    catalog, clock, _ = make(store)
    record = await catalog.record(REEF)
    assert catalog.known_data_readable(record) is None
    assert await catalog.data_readable(record) is False
    assert await catalog.data_readable(record) is False
    assert store.calls["read_credentials"] == 1
    store.realm_admin = True
    clock.advance(31)
    assert await catalog.data_readable(record) is True
    assert catalog.statistics()["access_probes"] == 2


async def test_latest_handle_survives_a_cycle() -> None:
    store = FakeDataStore()
    store.add("10378.1/1", next_version="10378.1/2")
    store.add("10378.1/2", next_version="10378.1/1", version=2, previous="10378.1/1")
    catalog, _, _ = make(store)
    assert await catalog.latest_handle("10378.1/1") == "10378.1/2"


def _info(key: str, size: int = 1) -> ObjectInfo:
    return ObjectInfo(key, size, "etag", 0.0)


def test_directory_listing_parsing() -> None:
    prefix = "datasets/x/"
    listing = DirectoryListing.from_keys(
        prefix,
        [
            _info(prefix),  # the folder marker of the dataset root itself
            _info(prefix + "a.csv"),
            _info(prefix + "both"),  # a file and a folder share the name: the folder wins
            _info(prefix + "x" * 256),  # too long for a name
            _info(prefix + ".."),
        ],
        [prefix + "both/", prefix + "raw/", prefix + "/", prefix + "../"],
    )
    assert listing.names() == [("a.csv", False), ("both", True), ("raw", True)]


async def test_outages_serve_the_last_values_past_their_ttl() -> None:
    store, _, catalog, clock, broker = make_with_one_file()
    record = await catalog.record(REEF)
    assert len(await catalog.datasets()) == 1
    assert list((await catalog.listing(record, "")).files) == ["a.csv"]
    clock.advance(3600)
    broker.invalidate(REEF)  # so that the listing needs the data store for credentials
    store.failure = api_errors.UnavailableError("data store down")
    assert await catalog.record(REEF) is record
    assert len(await catalog.datasets()) == 1
    assert list((await catalog.listing(record, "")).files) == ["a.csv"]
    assert catalog.statistics()["stale_served"] == 3
    with pytest.raises(api_errors.UnavailableError):
        await catalog.record("10378.1/never-seen")
    store.failure = api_errors.NotFoundError("gone")
    with pytest.raises(api_errors.NotFoundError):  # only outages are papered over
        await catalog.record(REEF)


async def test_s3_outage_serves_the_last_listing() -> None:
    _, blobs, catalog, clock, _ = make_with_one_file()
    record = await catalog.record(REEF)
    with pytest.raises(BlobUnavailableError):
        await _failing_listing(catalog, blobs, record)
    await catalog.listing(record, "")
    clock.advance(301)
    listing = await _failing_listing(catalog, blobs, record)
    assert list(listing.files) == ["a.csv"]


async def _failing_listing(
    catalog: Catalog, blobs: MemoryBlobStore, record: DatasetRecord
) -> DirectoryListing:
    original = blobs.list_prefix

    async def down(
        creds: Credentials, bucket: str, prefix: str, *, delimiter: str | None = "/"
    ) -> Listing:
        raise BlobUnavailableError("S3 down")

    blobs.list_prefix = down  # type: ignore[method-assign,assignment]
    try:
        return await catalog.listing(record, "")
    finally:
        blobs.list_prefix = original  # type: ignore[method-assign]


async def test_a_warm_re_walk_of_many_folders_lists_nothing_within_the_byte_budget() -> None:
    """300 folders (more than the 256 listings once kept) are all answered again from the
    cache; a budget of ten folders keeps the ten used last, whatever their number."""
    store = FakeDataStore()
    store.add(REEF)
    blobs = MemoryBlobStore()
    folders = [f"d{n:03d}" for n in range(300)]
    for folder in folders:
        blobs.put_blocking(BUCKET, f"{s3_path(REEF)}{folder}/f.bin", b"x")
    clock = FakeClock()
    broker = CredentialBroker(store, clock=clock)
    catalog = Catalog(store, broker, blobs, clock=clock, snapshot_max_keys=0)
    record = await catalog.record(REEF)
    for folder in folders:
        await catalog.listing(record, folder)
    walked = blobs.calls["list"]
    for folder in folders:
        assert list((await catalog.listing(record, folder)).files) == ["f.bin"]
    assert blobs.calls["list"] == walked  # the warm re-walk: no S3 request
    clock.advance(301)  # past listing_ttl: listed again
    await catalog.listing(record, folders[0])
    assert blobs.calls["list"] == walked + 1

    one = (await catalog.listing(record, folders[0])).cost()
    small = Catalog(
        store, broker, blobs, clock=clock, snapshot_max_keys=0, listing_cache_bytes=10 * one
    )
    for folder in folders:
        await small.listing(record, folder)
    walked = blobs.calls["list"]
    for folder in folders[-10:]:
        await small.listing(record, folder)
    assert blobs.calls["list"] == walked
    await small.listing(record, folders[0])
    assert blobs.calls["list"] == walked + 1
    assert small.statistics()["listing_cache_bytes"] <= 10 * one


def test_a_cached_listing_costs_what_the_budget_counts() -> None:
    """``DirectoryListing.cost`` (what the byte budget counts) is at least what it holds."""
    prefix = "datasets/10378-1-1932287/d0003/"
    objects = [
        ObjectInfo(f"{prefix}{n:07d}.bin", 1000 + n, f"{n:032x}", 1_796_418_617.0 + n)
        for n in range(20_000)
    ]
    tracemalloc.start()
    listing = DirectoryListing.from_keys(prefix, objects, [f"{prefix}sub{n}/" for n in range(10)])
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(listing.files) == 20_000 and len(listing.subdirs) == 10
    assert held <= listing.cost(), (held / 20_010, listing.cost() / 20_010)
    assert listing.files[f"{7:07d}.bin"] == objects[7]


async def test_a_name_is_found_by_a_head_and_a_one_key_list_without_listing_its_folder() -> None:
    store = FakeDataStore()
    store.add(REEF)
    blobs = MemoryBlobStore()
    for key in ("d1/f.bin", "d1/both", "d1/both/inner", "d2/x"):
        blobs.put_blocking(BUCKET, s3_path(REEF) + key, b"12345")
    catalog, clock, _ = make(store, blobs)
    record = await catalog.record(REEF)
    found = await catalog.entry(record, "d1", "f.bin")
    assert isinstance(found, ObjectInfo) and found.size == 5
    assert await catalog.entry(record, "", "d1") == FOLDER
    assert await catalog.entry(record, "d1", "both") == FOLDER  # a folder wins, as in a listing
    assert await catalog.entry(record, "d1", "nope") is None
    assert (blobs.calls["head"], blobs.calls["list"]) == (4, 4)  # one HEAD and LIST per name
    assert catalog.statistics()["listing_fetches"] == 0
    assert await catalog.entry(record, "d1", "f.bin") == found  # kept
    assert await catalog.entry(record, "d1", "nope") is None  # absent: kept negative_ttl
    assert await catalog.entry(record, "d1", "\udcff\udcfe.txt") is None  # not UTF-8: no key
    assert (blobs.calls["head"], blobs.calls["list"]) == (4, 4)
    clock.advance(6)
    assert await catalog.entry(record, "d1", "nope") is None
    assert blobs.calls["head"] == 5
    # once the folder is listed, names are answered from the listing
    await catalog.listing(record, "d2")
    lists = blobs.calls["list"]
    assert isinstance(await catalog.entry(record, "d2", "x"), ObjectInfo)
    assert await catalog.entry(record, "d2", "y") is None
    assert (blobs.calls["head"], blobs.calls["list"]) == (5, lists)
