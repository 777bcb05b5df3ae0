"""Facets, ``search/`` and ``reviews/`` of the core, over the fake data store and services.

What is pinned: which datasets each facet lists and under which names, where the links point,
that listing and ``ls -l`` of a facet cost no call per dataset (one list walk, the facet index
built once per list snapshot), that ``search/`` lists nothing and a lookup runs the query, that
only the hits the caller may fetch are shown, ranked, and that results are kept for their TTL.
"""

from __future__ import annotations

import errno
import stat

import pytest

from provenafs.api.account import Identity
from provenafs.api.client import parse_dataset_record
from provenafs.core.facets import RECENT_COUNT, FacetIndex
from provenafs.core.filesystem import Filesystem
from provenafs.core.types import SHORT_TIMEOUT
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import CALLER, METADATA_ONLY, FakeClock, FakeDataStore, build_filesystem
from tests.unit.services_fake import FakeServices, describe
from tests.unit.support import list_dir, names, raises_errno, walk

MINE = "10378.1/1"
THEIRS = "10378.1/2"
SLASHED = "10378.1/3"
CHAIN = ["10378.1/10", "10378.1/11"]
HIDDEN = "10378.1/4"  # visible to nobody but its owner


def world() -> tuple[FakeDataStore, MemoryBlobStore]:
    store = FakeDataStore()
    store.add(MINE, name="Reef temperatures", updated=1_800_000_300)
    describe(store, MINE, owner="alice", keywords=["reef", "ocean"], user_metadata={"site": "A"})
    store.add(THEIRS, name="Soil cores", updated=1_800_000_100)
    describe(store, THEIRS, owner="bob", keywords=["soil"], user_metadata={"site": "B"})
    store.add(SLASHED, name="a/b testing", updated=1_800_000_200)
    describe(store, SLASHED, owner="bob", keywords=["x/y", "reef"])
    store.add_chain(CHAIN, name="Survey")
    for handle in CHAIN:
        describe(store, handle, owner="alice", keywords=["survey"])
    store.items[CHAIN[0]]["release_status"] = "RELEASED"
    store.add(HIDDEN, name="Hidden reef notes", roles=())
    return store, MemoryBlobStore()


def filesystem(
    store: FakeDataStore, blobs: MemoryBlobStore, clock: FakeClock | None = None
) -> tuple[Filesystem, FakeServices]:
    services = FakeServices(store, username="alice")
    fs, _ = build_filesystem(store, blobs, services=services, clock=clock)
    return fs, services


async def links(fs: Filesystem, path: str) -> dict[str, str]:
    """Entry name -> link target of every entry of the directory *path*."""
    found = {}
    for entry in await list_dir(fs, path):
        assert stat.S_ISLNK(entry.attributes.mode), entry.name
        found[entry.name] = await fs.readlink(entry.attributes.inode, CALLER)
    return found


async def test_facets_list_the_latest_versions_by_owner_keyword_and_metadata() -> None:
    fs, _ = filesystem(*world())
    assert await links(fs, "mine") == {
        "Reef temperatures": "../10378.1/1",
        "Survey": "../10378.1/11",  # the latest version only
    }
    assert await links(fs, "shared-with-me") == {
        "Soil cores": "../10378.1/2",
        "a\u2215b testing": "../10378.1/3",  # "/" in a name as in by-name
    }
    assert sorted(await names(fs, "by-keyword")) == ["ocean", "reef", "soil", "survey", "x\u2215y"]
    assert await links(fs, "by-keyword/reef") == {
        "Reef temperatures": "../../10378.1/1",
        "a\u2215b testing": "../../10378.1/3",
    }
    assert await links(fs, "by-owner/bob") == {
        "Soil cores": "../../10378.1/2",
        "a\u2215b testing": "../../10378.1/3",
    }
    assert sorted(await names(fs, "by-meta")) == ["site=A", "site=B"]
    assert await links(fs, "by-meta/site=B") == {"Soil cores": "../../10378.1/2"}


async def test_by_status_lists_every_version_and_recent_the_newest_first() -> None:
    fs, _ = filesystem(*world())
    assert sorted(await names(fs, "by-status")) == ["NOT_RELEASED", "RELEASED"]
    # the released version is not the latest: it is named with its handle
    assert await links(fs, "by-status/RELEASED") == {"Survey (10378.1\u221510)": "../../10378.1/10"}
    recent = await names(fs, "recent")
    assert recent[:3] == ["01 Reef temperatures", "02 a\u2215b testing", "03 Soil cores"]


async def test_listing_facets_costs_one_list_walk_and_no_call_per_dataset() -> None:
    store, blobs = world()
    fs, _ = filesystem(store, blobs)
    for path in ("mine", "shared-with-me", "by-keyword/reef", "by-owner/alice", "recent"):
        for entry in await list_dir(fs, path):  # ls -l: every entry stat'ed again
            await fs.getattr(entry.attributes.inode, CALLER)
            await fs.lookup((await walk(fs, path)).inode, entry.name, CALLER)
    assert store.calls["fetch"] == 0
    assert store.calls["read_credentials"] == 0
    assert store.calls["list"] == 1  # one page: the whole list, walked once
    assert fs.discovery.facets.indexes_built == 1


async def test_facet_entries_are_links_with_short_nonzero_timeouts() -> None:
    fs, _ = filesystem(*world())
    link = await walk(fs, "mine/Reef temperatures")
    assert stat.S_ISLNK(link.mode)
    assert link.size == len("../10378.1/1")
    assert 0 < link.attr_timeout <= SHORT_TIMEOUT
    directory = await walk(fs, "by-keyword/reef")
    assert stat.S_ISDIR(directory.mode)
    assert 0 < directory.entry_timeout <= SHORT_TIMEOUT
    assert stat.S_IMODE(directory.mode) == 0o555


async def test_unknown_facet_names_are_enoent() -> None:
    fs, _ = filesystem(*world())
    for path in ("by-keyword/nope", "mine/Nope", "by-owner/nobody", "by-keyword/reef/Nope"):
        with raises_errno(errno.ENOENT):
            await walk(fs, path)


def test_the_index_of_ten_thousand_datasets_is_one_pass() -> None:
    store = FakeDataStore()
    for number in range(10_000):
        handle = f"10378.1/{number}"
        store.add(handle, name=f"Dataset {number}", updated=1_700_000_000 + number)
        describe(store, handle, owner=f"user{number % 7}", keywords=[f"kw{number % 100}"])
    records = [
        parse_dataset_record(item, None, None, {"item": item}) for item in store.items.values()
    ]
    index = FacetIndex.build(records, "user3")
    assert len(index.grouped["by-keyword"]) == 100
    assert all(len(entries) == 100 for entries in index.grouped["by-keyword"].values())
    assert len(index.flat["mine"]) == len([n for n in range(10_000) if n % 7 == 3])
    assert len(index.flat["recent"]) == RECENT_COUNT
    assert next(iter(index.flat["recent"])) == "01 Dataset 9999"


# --- search ---------------------------------------------------------------------------------


async def test_search_lists_nothing_and_a_lookup_runs_the_query() -> None:
    store, blobs = world()
    fs, services = filesystem(store, blobs)
    assert await names(fs, "search") == []
    assert services.calls["search"] == 0  # listing search/ never searches
    services.hits["reef"] = [MINE, HIDDEN, "10378.1/999", SLASHED]
    directory = await walk(fs, "search/reef")
    assert stat.S_ISDIR(directory.mode)
    assert services.calls["search"] == 1
    # the hidden and the unknown hit are left out; ranks count the shown hits only
    assert await links(fs, "search/reef") == {
        "01 Reef temperatures": "../../10378.1/1",
        "02 a\u2215b testing": "../../10378.1/3",
    }
    assert services.calls["search"] == 1  # the listing used the lookup's results


async def test_search_results_live_for_their_ttl() -> None:
    store, blobs = world()
    clock = FakeClock()
    fs, services = filesystem(store, blobs, clock)
    services.hits["soil"] = [THEIRS]
    assert await names(fs, "search/soil") == ["01 Soil cores"]
    clock.advance(30)
    assert await names(fs, "search/soil") == ["01 Soil cores"]
    assert services.calls["search"] == 1
    services.hits["soil"] = [THEIRS, MINE]
    clock.advance(31)
    assert await names(fs, "search/soil") == ["01 Soil cores", "02 Reef temperatures"]
    assert services.calls["search"] == 2


async def test_a_hit_becomes_visible_when_the_caller_may_fetch_it() -> None:
    store, blobs = world()
    clock = FakeClock()
    fs, services = filesystem(store, blobs, clock)
    services.hits["hidden"] = [HIDDEN]
    assert await names(fs, "search/hidden") == []
    store.roles[HIDDEN] = METADATA_ONLY
    clock.advance(61)  # past the search TTL and the unknown-record TTL
    assert await names(fs, "search/hidden") == ["01 Hidden reef notes"]


# --- reviews ---------------------------------------------------------------------------------


async def test_reviews_lists_the_queue_of_the_callers_person() -> None:
    store, blobs = world()
    fs, services = filesystem(store, blobs)
    services.queue = [THEIRS, CHAIN[0]]
    assert await links(fs, "reviews") == {
        "Soil cores": "../10378.1/2",
        "Survey (10378.1\u221510)": "../10378.1/10",
    }
    services.identity = Identity("alice", None, (), None)
    fs.discovery.forget_identity()
    fs.discovery.forget_reviews()
    assert await names(fs, "reviews") == []  # no linked Person: no queue asked for
    assert services.calls["review_queue"] == 1


@pytest.mark.parametrize("root", ["search", "reviews"])
async def test_a_core_without_services_has_no_search_or_reviews(root: str) -> None:
    fs, _ = build_filesystem(*world())
    assert root not in await names(fs, "")
    with raises_errno(errno.ENOENT):
        await walk(fs, root)


async def test_crafted_query_names_reach_the_search_as_text_or_are_refused() -> None:
    store, blobs = world()
    fs, services = filesystem(store, blobs)
    for name, expected in (("..", errno.ENOENT), ("x" * 256, errno.ENAMETOOLONG)):
        with raises_errno(expected):
            await walk(fs, f"search/{name}")
    assert services.calls["search"] == 0
    crafted = 'reef" OR * NEAR(a b) -x'
    services.hits[crafted] = [MINE]
    assert await names(fs, f"search/{crafted}") == ["01 Reef temperatures"]
