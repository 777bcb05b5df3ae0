"""Dataset snapshots: one flat listing answers every folder of a small dataset version.

A ``TreeListingStore`` (a ``MemoryBlobStore`` that can list a whole tree and stop paging after a
number of keys) counts its tree listings, tree pages and delimited listings; a catalog over a
plain ``MemoryBlobStore`` (one delimited listing per folder) is the reference for what each
folder must contain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from provenafs.core.catalog import Catalog, DatasetSnapshot
from provenafs.storage.blobstore import (
    AccessDeniedError,
    BlobUnavailableError,
    ExpiredCredentialsError,
    MemoryBlobStore,
    ObjectInfo,
)
from provenafs.storage.credentials import CredentialBroker
from tests.unit.fakes import (
    BUCKET,
    FakeClock,
    FakeDataStore,
    TreeListingStore,
    build_filesystem,
    options,
    s3_path,
)
from tests.unit.support import names, read_all, write_file

REEF = "10378.1/1001"
NEXT = "10378.1/1002"


def put(blobs: MemoryBlobStore, handle: str, *paths: str) -> None:
    for path in paths:
        blobs.put_blocking(BUCKET, s3_path(handle) + path, path.encode())


def make(
    blobs: MemoryBlobStore, *handles: str, snapshot_max_keys: int = 3000
) -> tuple[Catalog, FakeClock, FakeDataStore, CredentialBroker]:
    store = FakeDataStore()
    for handle in handles or (REEF,):
        store.add(handle)
    clock = FakeClock()
    broker = CredentialBroker(store, clock=clock)
    catalog = Catalog(
        store,
        broker,
        blobs,
        clock=clock,
        listing_ttl=300,
        snapshot_max_keys=snapshot_max_keys,
    )
    return catalog, clock, store, broker


# Keys of every shape a folder can take: files, nested folders, a ``dir/`` marker of an empty
# folder, the dataset root's own marker, a file and a folder of one name, names that cannot be
# entries.
SHAPES = (
    "",
    "metadata.json",
    "d00/f0.bin",
    "d00/f1.bin",
    "d01/f0.bin",
    "d01/sub/deep.txt",
    "d01/sub/deeper/",
    "raw/empty/",
    "both",
    "both/inner.txt",
    "a//b.txt",
    "x" * 256,
    "long/" + "y" * 256 + "/z.txt",
)
FOLDERS = ("", "d00", "d01", "d01/sub", "d01/sub/deeper", "raw", "raw/empty", "both", "long")
ABSENT = ("nope", "d00/f0.bin", "d01/sub/deeper/nope")


async def test_one_flat_listing_answers_every_folder_as_delimited_listings_would() -> None:
    tree, plain = TreeListingStore(), MemoryBlobStore()
    put(tree, REEF, *SHAPES)
    put(tree, NEXT, "d00/other.bin")  # another dataset version: not in the snapshot
    plain.objects = dict(tree.objects)
    catalog, _, _, _ = make(tree, REEF, NEXT)
    reference, _, _, _ = make(plain, REEF, NEXT, snapshot_max_keys=0)
    record = await catalog.record(REEF)
    for directory in FOLDERS + ABSENT:
        expected = await reference.listing(await reference.record(REEF), directory)
        assert await catalog.listing(record, directory) == expected, directory
    assert (tree.tree_calls, tree.calls["list"]) == (1, 0)
    assert plain.calls["list"] == len(FOLDERS + ABSENT)
    root = await catalog.listing(record, "")
    assert root.names() == [
        ("a", True),
        ("both", True),
        ("d00", True),
        ("d01", True),
        ("long", True),
        ("metadata.json", False),
        ("raw", True),
    ]
    assert (await catalog.listing(record, "raw/empty")).names() == []
    assert list((await catalog.listing(record, "d00")).files) == ["f0.bin", "f1.bin"]
    stats = catalog.statistics()
    assert stats["snapshot_fetches"] == 1 and stats["snapshots_cached"] == 1
    assert stats["listing_hits"] == len(FOLDERS + ABSENT) + 2
    assert stats["listing_fetches"] == 0


async def test_a_dataset_over_the_key_limit_stops_paging_and_is_listed_per_folder() -> None:
    tree = TreeListingStore(page_size=2)
    put(tree, REEF, *(f"d0{n}/f{m}" for n in range(2) for m in range(5)))
    put(tree, NEXT, "a", "b", "c/d", "c/e")  # exactly at the limit: one snapshot
    catalog, clock, _, _ = make(tree, REEF, NEXT, snapshot_max_keys=4)
    record = await catalog.record(REEF)
    assert [name for name, _ in (await catalog.listing(record, "")).names()] == ["d00", "d01"]
    assert (tree.tree_calls, tree.tree_pages, tree.calls["list"]) == (1, 2, 1)
    assert list((await catalog.listing(record, "d01")).files) == [f"f{m}" for m in range(5)]
    await catalog.listing(record, "d00")
    assert (tree.tree_calls, tree.calls["list"]) == (1, 3)  # too big: remembered
    assert catalog.statistics()["snapshots_too_big"] == 1

    small = await catalog.record(NEXT)
    assert list((await catalog.listing(small, "c")).files) == ["d", "e"]
    assert (await catalog.listing(small, "")).names() == [
        ("a", False),
        ("b", False),
        ("c", True),
    ]
    assert (tree.tree_calls, tree.tree_pages, tree.calls["list"]) == (2, 4, 3)

    clock.advance(301)  # the dataset may have shrunk meanwhile: try a snapshot again
    await catalog.listing(record, "d00")
    assert (tree.tree_calls, tree.calls["list"]) == (3, 4)


async def test_the_pages_of_a_snapshot_that_stopped_early_are_never_listed_again() -> None:
    """Folders whose keys all came before the last key listed are answered from those pages;
    the folders on the last key's path are listed after that key only; and every answer is
    what a plain delimited listing says."""
    keys = [f"a/{m}" for m in range(3)] + [f"b/{m}" for m in range(4)] + ["c/0", "top"]
    tree, plain = TreeListingStore(page_size=2), MemoryBlobStore()
    put(tree, REEF, *keys)
    put(plain, REEF, *keys)
    catalog, _, _, _ = make(tree, REEF, snapshot_max_keys=4)
    reference, _, _, _ = make(plain, REEF, snapshot_max_keys=0)
    record = await catalog.record(REEF)
    assert (await catalog.listing(record, "a")).names() == [
        ("0", False),
        ("1", False),
        ("2", False),
    ]
    # two pages: a/0 a/1, a/2 b/0, then the limit; "a" was complete in them
    assert (tree.tree_pages, tree.calls["list"]) == (2, 0)
    for folder in ("b", "", "c"):
        got = await catalog.listing(record, folder)
        assert got.names() == (await reference.listing(record, folder)).names(), folder
    # "b" and the root were finished after b/0 (one LIST each), "c" listed whole
    assert tree.calls["list"] == 3
    assert catalog.statistics()["listings_finished_after_snapshot"] == 2
    assert list((await catalog.listing(record, "b")).files) == ["0", "1", "2", "3"]


async def test_invalidate_and_the_listing_ttl_refetch_only_that_version() -> None:
    tree = TreeListingStore()
    put(tree, REEF, "d00/a.csv")
    put(tree, NEXT, "b.csv")
    catalog, clock, _, _ = make(tree, REEF, NEXT)
    record, other = await catalog.record(REEF), await catalog.record(NEXT)
    await catalog.listing(record, "d00")
    await catalog.listing(other, "")
    assert tree.tree_calls == 2
    put(tree, REEF, "d00/new.csv")  # an in-place write, then its invalidation
    assert list((await catalog.listing(record, "d00")).files) == ["a.csv"]
    catalog.invalidate(REEF)
    assert list((await catalog.listing(record, "d00")).files) == ["a.csv", "new.csv"]
    await catalog.listing(other, "")
    assert tree.tree_calls == 3
    clock.advance(299)
    await catalog.listing(record, "")
    assert tree.tree_calls == 3
    clock.advance(2)
    await catalog.listing(record, "")
    assert tree.tree_calls == 4


async def test_a_listing_under_way_when_invalidated_is_answered_but_not_kept() -> None:
    tree = TreeListingStore()
    put(tree, REEF, "d00/a.csv")
    catalog, _, _, _ = make(tree)
    record = await catalog.record(REEF)
    tree.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(catalog.listing, record, "d00")
        await trio.testing.wait_all_tasks_blocked()
        catalog.invalidate(REEF)  # a write landed while the listing was under way
        tree.gate.set()
    tree.gate = None
    put(tree, REEF, "d00/new.csv")
    assert list((await catalog.listing(record, "d00")).files) == ["a.csv", "new.csv"]
    assert tree.tree_calls == 2


async def test_concurrent_listings_of_different_folders_share_one_tree_listing() -> None:
    tree = TreeListingStore()
    put(tree, REEF, *(f"d0{n}/f" for n in range(5)))
    catalog, _, _, _ = make(tree)
    record = await catalog.record(REEF)
    tree.gate = trio.Event()
    found: dict[str, list[str]] = {}

    async def list_one(directory: str) -> None:
        found[directory] = list((await catalog.listing(record, directory)).files)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(list_one, f"d0{n}")
        await trio.testing.wait_all_tasks_blocked()
        tree.gate.set()
    assert found == {f"d0{n}": ["f"] for n in range(5)}
    assert (tree.tree_calls, tree.calls["list"]) == (1, 0)
    assert catalog.statistics()["single_flight_joined"] == 4


async def test_a_refused_tree_listing_is_retried_once_with_fresh_credentials() -> None:
    tree = TreeListingStore()
    put(tree, REEF, "a.csv")
    catalog, clock, _, broker = make(tree)
    record = await catalog.record(REEF)
    tree.failures = [ExpiredCredentialsError("token expired")]
    assert list((await catalog.listing(record, "")).files) == ["a.csv"]
    assert tree.tree_calls == 2
    assert broker.statistics()["read_calls"] == 2  # invalidated, then minted anew
    assert catalog.statistics()["credential_retries"] == 1
    clock.advance(301)
    tree.failures = [AccessDeniedError("no"), AccessDeniedError("still no")]
    with pytest.raises(AccessDeniedError):
        await catalog.listing(record, "")
    assert tree.tree_calls == 4


async def test_an_s3_outage_serves_the_last_folder_listing_of_a_big_dataset() -> None:
    tree = TreeListingStore(page_size=1)
    put(tree, REEF, "big/1", "big/2")  # over the limit of 1 key: listed per folder
    catalog, clock, _, _ = make(tree, snapshot_max_keys=1)
    record = await catalog.record(REEF)
    assert list((await catalog.listing(record, "big")).files) == ["1", "2"]
    clock.advance(301)
    tree.failures = [BlobUnavailableError("S3 down")] * 2
    assert list((await catalog.listing(record, "big")).files) == ["1", "2"]
    assert catalog.statistics()["stale_served"] == 1
    with pytest.raises(BlobUnavailableError):
        await catalog.listing(record, "never-listed")
    assert tree.tree_calls == 3


async def test_an_s3_outage_serves_the_last_snapshot_for_every_folder() -> None:
    tree = TreeListingStore()
    put(tree, REEF, "d00/a.csv", "d01/b.csv")
    catalog, clock, _, _ = make(tree, REEF, NEXT)
    record = await catalog.record(REEF)
    await catalog.listing(record, "")
    clock.advance(301)
    tree.failures = [BlobUnavailableError("S3 down")] * 2
    assert list((await catalog.listing(record, "d00")).files) == ["a.csv"]
    assert list((await catalog.listing(record, "d01")).files) == ["b.csv"]
    assert catalog.statistics()["stale_served"] == 2
    assert tree.tree_calls == 3
    tree.failures = [BlobUnavailableError("S3 down")]
    with pytest.raises(BlobUnavailableError):
        await catalog.listing(await catalog.record(NEXT), "")


def test_snapshot_levels_split_keys_at_every_slash() -> None:
    root = "datasets/x/"
    snapshot = DatasetSnapshot.from_keys(
        root,
        [
            ObjectInfo(root + "top.txt", 1, "e1", 0.0),
            ObjectInfo(root + "a/b/c.txt", 2, "e2", 0.0),
            ObjectInfo(root + "a/m/", 0, "e3", 0.0),
            ObjectInfo("datasets/y/elsewhere.txt", 3, "e4", 0.0),
        ],
    )
    assert sorted(snapshot.levels) == [root, root + "a/", root + "a/b/", root + "a/m/"]
    assert snapshot.listing("").names() == [("a", True), ("top.txt", False)]
    assert snapshot.listing("a").names() == [("b", True), ("m", True)]
    assert snapshot.listing("a/b").files["c.txt"].size == 2
    assert snapshot.listing("a/m").names() == []
    assert snapshot.listing("elsewhere.txt").names() == []


async def test_the_filesystem_lists_a_dataset_and_its_draft_from_one_tree_listing(
    tmp_path: Path,
) -> None:
    store = FakeDataStore()
    store.add(REEF)
    tree = TreeListingStore()
    put(tree, REEF, "metadata.json", "raw/a.csv", "raw/sub/b.csv", "notes.txt")
    fs, _ = build_filesystem(
        store, tree, mount_options=options("-o", f"state_dir={tmp_path / 'state'}")
    )
    dataset = REEF
    assert await names(fs, dataset) == ["metadata.json", "notes.txt", "raw"]
    assert await names(fs, f"{dataset}/raw") == ["a.csv", "sub"]
    assert await names(fs, f"{dataset}/raw/sub") == ["b.csv"]
    await write_file(fs, f"{dataset}/raw/sub/new.csv", b"new\n")
    assert await names(fs, f"{dataset}/raw/sub") == ["b.csv", "new.csv"]
    assert await read_all(fs, f"{dataset}/raw/sub/b.csv") == b"raw/sub/b.csv"
    assert (tree.tree_calls, tree.calls["list"]) == (1, 0)
