"""A prefix with thousands of datasets: ``ls -l`` of it, and of ``by-name``, costs the list.

What ``ls -l`` does through the kernel (pyfuse3 answers readdir with readdirplus) is driven
here: opendir and readdir of the directory, then a lookup and a getattr of every entry. After
the one walk of the dataset list, none of it may fetch a record, ask for credentials or touch
S3; the first access *inside* a dataset fetches its record and credentials side by side.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import provenafs.core.filesystem
import provenafs.core.namespace
import provenafs.core.sidecar_render
from provenafs.api.models import DatasetRecord
from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.core.types import Attributes
from provenafs.errors import FsError
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import (
    ALL_ROLES,
    BUCKET,
    CALLER,
    METADATA_ONLY,
    FakeClock,
    FakeDataStore,
    build_filesystem,
    s3_path,
)

PREFIX = "10378.1"
COUNT = 2000
ME = "alice"
READ_ONLY = ("metadata-read", "dataset-data-read")
PAGES = -(-COUNT // 100)  # list pages of 100


def big_world() -> tuple[FakeDataStore, MemoryBlobStore]:
    """COUNT datasets in one prefix: most alice's own, some of others with various roles."""
    store = FakeDataStore()
    for n in range(COUNT):
        handle = f"{PREFIX}/{100_000 + n}"
        if n % 4 == 1:
            store.add(handle, name=f"Shared {n}", owner="bob", roles=READ_ONLY)
        elif n % 4 == 2:
            store.add(handle, name=f"Admin of {n}", owner="bob", roles=ALL_ROLES)
        elif n % 4 == 3 and n % 8 == 3:
            store.add(handle, name=f"Metadata {n}", owner="carol", roles=METADATA_ONLY)
        else:
            store.add(handle, name=f"Mine {n}", owner=ME)
    blobs = MemoryBlobStore()
    for n in range(0, COUNT, 97):
        blobs.put_blocking(BUCKET, s3_path(f"{PREFIX}/{100_000 + n}") + "data.csv", b"a,b\n")
    return store, blobs


def calls(store: FakeDataStore, blobs: MemoryBlobStore) -> dict[str, int]:
    """Every call that is not a list page: record fetches, credentials, S3 requests."""
    counted = {route: n for route, n in store.calls.items() if route != "list" and n}
    counted.update({f"s3 {op}": n for op, n in blobs.calls.items() if n})
    return counted


async def ls_l(fs: Filesystem, inode: int) -> dict[str, tuple[Attributes, Attributes]]:
    """What ``ls -l`` asks: the entries (readdirplus), then a lookup and getattr of each."""
    fh = await fs.opendir(inode, CALLER)
    listed = []
    offset = 0
    while batch := await fs.readdir(fh, offset):
        listed += [entry for entry in batch if entry.name not in (".", "..")]
        offset = batch[-1].next_offset
    await fs.releasedir(fh)
    answers = {}
    for entry in listed:
        looked_up = await fs.lookup(inode, entry.name, CALLER)
        assert looked_up.inode == entry.attributes.inode
        answers[entry.name] = (entry.attributes, await fs.getattr(looked_up.inode, CALLER))
    return answers


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


async def test_ls_l_of_a_big_prefix_costs_only_the_list() -> None:
    store, blobs = big_world()
    fs, broker = build_filesystem(store, blobs, username=ME)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)  # so that any warming would run
        prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
        answers = await ls_l(fs, prefix.inode)
        await trio.testing.wait_all_tasks_blocked()
        assert len(answers) == 3 * COUNT
        assert calls(store, blobs) == {}
        assert store.calls["list"] == PAGES  # one walk of every page
        assert broker.statistics()["held"] == 0
        stats = fs.catalog.statistics()
        assert stats["record_fetches"] == 0
        assert stats["list_indexes_built"] == 1
        # readdirplus answers are kept by the kernel as long as a lookup's: no lookup storm
        for name, (listed, got) in answers.items():
            assert listed.entry_timeout > 0 and listed.attr_timeout > 0, name
            assert (listed.mode, listed.size) == (got.mode, got.size), name
        nursery.cancel_scope.cancel()


async def test_listed_modes_are_exact_for_own_datasets_and_read_only_estimates_for_others() -> None:
    store, blobs = big_world()
    fs, _ = build_filesystem(store, blobs, username=ME)
    prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
    answers = await ls_l(fs, prefix.inode)
    assert calls(store, blobs) == {}
    estimated = {name: got for name, (_, got) in answers.items()}
    mine = f"{100_000}"
    shared, admin, metadata = f"{100_001}", f"{100_002}", f"{100_003}"
    assert stat.S_IMODE(estimated[mine].mode) == 0o755  # owner: every role, the latest
    for other in (shared, admin, metadata):
        assert stat.S_IMODE(estimated[other].mode) == 0o555, other  # no write bits
    assert stat.S_ISLNK(estimated[f"{mine}@latest"].mode)
    assert estimated[f"{mine}@latest"].size == len(mine)
    # Once fetched (here by what access() asks), the answers are exact.
    exact = {}
    for name in (mine, shared, admin, metadata):
        inode = estimated[name].inode
        await fs.access(inode, os.X_OK, CALLER)  # what chdir asks
        exact[name] = stat.S_IMODE((await fs.getattr(inode, CALLER)).mode)
        sidecar = estimated[f"{name}.json"]
        fetched = await fs.getattr(sidecar.inode, CALLER)
        if name == mine:  # the owner's estimate was right to the byte
            assert (fetched.mode, fetched.size) == (sidecar.mode, sidecar.size)
    assert exact == {mine: 0o755, shared: 0o555, admin: 0o755, metadata: 0o111}


async def test_access_answers_from_the_fetched_record_not_the_estimate() -> None:
    store, blobs = big_world()
    fs, _ = build_filesystem(store, blobs, username=ME)
    prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
    answers = await ls_l(fs, prefix.inode)
    admin = answers[f"{100_002}"][1]
    assert not admin.mode & stat.S_IWUSR  # estimated read-only
    await fs.access(admin.inode, os.W_OK, CALLER)  # but it is writable: no refusal
    metadata = answers[f"{100_003}"][1]
    with pytest.raises(FsError) as refused:
        await fs.access(metadata.inode, os.R_OK, CALLER)
    assert refused.value.errno == errno.EACCES


async def test_ls_l_of_by_name_builds_its_names_once_per_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds: list[int] = []
    real: Callable[..., dict[str, str]] = provenafs.core.namespace.by_name_entries

    def counting(records: object) -> dict[str, str]:
        builds.append(1)
        return real(records)

    monkeypatch.setattr(provenafs.core.namespace, "by_name_entries", counting)

    store, blobs = big_world()
    clock = FakeClock()
    fs, _ = build_filesystem(store, blobs, username=ME, clock=clock)
    by_name = await fs.lookup(ROOT_INODE, "by-name", CALLER)
    answers = await ls_l(fs, by_name.inode)
    assert len(answers) == COUNT
    assert len(builds) == 1
    assert calls(store, blobs) == {}
    for name, (listed, got) in answers.items():
        assert stat.S_ISLNK(got.mode)
        assert listed.entry_timeout > 0 and listed.attr_timeout > 0, name
    target = await fs.readlink(answers["Mine 0"][1].inode, CALLER)
    assert target == f"../{PREFIX}/100000"
    clock.advance(60)  # the list is refreshed: one more build
    await ls_l(fs, by_name.inode)
    assert len(builds) == 2
    assert store.calls["list"] == 2 * (PAGES)


async def test_the_first_access_inside_fetches_record_and_credentials_side_by_side() -> None:
    store, blobs = big_world()
    fs, broker = build_filesystem(store, blobs, username=ME)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
        await ls_l(fs, prefix.inode)
        dataset = await fs.lookup(prefix.inode, "100000", CALLER)
        await trio.testing.wait_all_tasks_blocked()
        assert calls(store, blobs) == {}  # stat of the directory: still nothing
        store.gate = trio.Event()
        found: list[Attributes] = []

        async def look_inside() -> None:
            found.append(await fs.lookup(dataset.inode, "data.csv", CALLER))

        nursery.start_soon(look_inside)
        await trio.testing.wait_all_tasks_blocked()
        # both calls are in flight at once, before either answered
        assert (store.calls["fetch"], store.calls["read_credentials"]) == (1, 1)
        store.gate.set()
        store.gate = None
        await trio.testing.wait_all_tasks_blocked()
        assert found and found[0].size == len(b"a,b\n")
        # the name is found by a HEAD and a one-key LIST, without listing the folder
        assert calls(store, blobs) == {
            "fetch": 1,
            "read_credentials": 1,
            "s3 list": 1,
            "s3 head": 1,
        }
        assert broker.statistics()["read_calls"] == 1
        nursery.cancel_scope.cancel()


async def test_an_unlisted_handle_is_still_found_by_its_record() -> None:
    store, blobs = big_world()
    fs, _ = build_filesystem(store, blobs, username=ME)
    prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
    await ls_l(fs, prefix.inode)
    store.add(f"{PREFIX}/999", name="Minted after the list", owner=ME)
    found = await fs.lookup(prefix.inode, "999", CALLER)
    assert stat.S_ISDIR(found.mode)
    assert store.calls["fetch"] == 1
    with pytest.raises(FsError) as missing:
        await fs.lookup(prefix.inode, "998.json", CALLER)
    assert missing.value.errno == errno.ENOENT


async def test_latest_links_follow_the_chain_inside_the_list_and_walk_records_beyond_it() -> None:
    store = FakeDataStore()
    chain = [f"{PREFIX}/{n}" for n in range(1, 301)]
    store.add_chain(chain, name="Long chain", owner=ME)
    store.add(f"{PREFIX}/900", name="Hidden next", next_version=f"{PREFIX}/901", owner=ME)
    store.add(f"{PREFIX}/901", name="Hidden next", previous=f"{PREFIX}/900", roles=())
    fs, _ = build_filesystem(store, MemoryBlobStore(), username=ME)
    prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
    answers = await ls_l(fs, prefix.inode)
    # 901 is not listed (no metadata role): 900's link walks records (900, then 901,
    # refused) and stops at 900; every link of the long chain costs nothing
    assert await fs.readlink(answers["900@latest"][1].inode, CALLER) == "900"
    fetched = store.calls["fetch"]
    assert fetched >= 2
    for handle in chain:
        link = answers[handle.split("/")[1] + "@latest"][1]
        assert await fs.readlink(link.inode, CALLER) == "300"
    assert store.calls["fetch"] == fetched
    assert fs.catalog.statistics()["list_indexes_built"] == 1


async def test_a_sidecar_whose_estimate_is_stale_is_read_whole_and_then_exact() -> None:
    class Notifier:
        def __init__(self) -> None:
            self.inodes: list[int] = []

        async def invalidate_entry(self, parent_inode: int, name: str) -> None:
            return None

        async def invalidate_inode(self, inode: int, *, attr_only: bool = False) -> None:
            self.inodes.append(inode)

        async def store(self, inode: int, offset: int, data: bytes) -> None:
            return None

    store, blobs = big_world()
    fs, _ = build_filesystem(store, blobs, username=ME)
    notifier = Notifier()
    fs.set_kernel_notifier(notifier)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
        sidecar = (await ls_l(fs, prefix.inode))["100000.json"][1]
        store.locked[f"{PREFIX}/100000"] = True  # locked after the list was taken
        opened = await fs.open(sidecar.inode, os.O_RDONLY, CALLER)
        assert opened.direct_io  # reads are never cut at the size the kernel holds
        data = b""
        while piece := await fs.read(opened.fh, len(data), 1000):
            data += piece
        await fs.release(opened.fh)
        assert json.loads(data)["locked"] is True
        assert len(data) == sidecar.size - 1  # "true" is one byte shorter than "false"
        assert (await fs.getattr(sidecar.inode, CALLER)).size == len(data)
        await trio.testing.wait_all_tasks_blocked()
        assert notifier.inodes == [sidecar.inode]  # the kernel drops the estimate
        nursery.cancel_scope.cancel()


async def test_sidecar_sizes_are_worked_out_while_the_list_is_walked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    computed: list[tuple[str, bool]] = []  # (handle, in the trio thread)
    real = provenafs.core.sidecar_render.sidecar_size
    trio_thread = threading.current_thread()

    def counting(record: DatasetRecord) -> int:
        computed.append((record.handle, threading.current_thread() is trio_thread))
        return real(record)

    monkeypatch.setattr(provenafs.core.sidecar_render, "sidecar_size", counting)
    monkeypatch.setattr(provenafs.core.filesystem, "sidecar_size", counting)

    store, blobs = big_world()
    clock = FakeClock()
    fs, _ = build_filesystem(store, blobs, username=ME, clock=clock)
    await ls_l(fs, (await fs.lookup(ROOT_INODE, "by-name", CALLER)).inode)
    assert computed == []  # listing by-name needs no sidecar
    clock.advance(60)  # the next listing walks the list again
    prefix = await fs.lookup(ROOT_INODE, PREFIX, CALLER)
    answers = await ls_l(fs, prefix.inode)
    assert sorted(handle for handle, _ in computed) == sorted(store.items)  # once each
    assert not any(in_trio for _, in_trio in computed)  # in a thread, during the walk
    own = answers["100000.json"][1]
    assert own.size == len(await read_sidecar(fs, own.inode))


async def read_sidecar(fs: Filesystem, inode: int) -> bytes:
    opened = await fs.open(inode, os.O_RDONLY, CALLER)
    data = b""
    while piece := await fs.read(opened.fh, len(data), 4096):
        data += piece
    await fs.release(opened.fh)
    return data
