"""The filesystem core driven without a kernel: every node kind, permissions, errors, reads.

A ``FakeDataStore`` and a ``MemoryBlobStore`` stand in for the data store and S3; the credential
broker, block cache, prefetch budget and object reader are the real ones.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from provenafs.api import errors as api_errors
from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.core.types import READDIR_BATCH, SHORT_TIMEOUT, DirEntry
from provenafs.errors import FsError
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import (
    BUCKET,
    CALLER,
    METADATA_ONLY,
    SECRET_KEY,
    SESSION_TOKEN,
    FakeClock,
    FakeDataStore,
    build_filesystem,
    options,
    s3_path,
)
from tests.unit.support import list_dir, raises_errno, read_all, walk

REEF = "10378.1/1001"
PRIVATE = "10378.1/1002"
CHAIN = ["10378.1/2001", "10378.1/2002", "10378.1/2003"]
OTHER_PREFIX = "102.100.100/7"
BIG = bytes(random.Random(7).getrandbits(8) for _ in range(300_000))


def world() -> tuple[FakeDataStore, MemoryBlobStore]:
    store = FakeDataStore()
    store.add(REEF, name="Reef logger temperatures 2023", created=1_700_000_000)
    store.add(PRIVATE, name="Private numbers", roles=METADATA_ONLY)
    store.add_chain(CHAIN, name="Chained")
    store.add(OTHER_PREFIX, name="Reef logger temperatures 2023", created=1_800_000_000)
    blobs = MemoryBlobStore()
    base = s3_path(REEF)
    blobs.put_blocking(BUCKET, base + "metadata.json", b'{"dataset_info": {}}\n')
    blobs.put_blocking(BUCKET, base + "raw/loggers-2023.csv", BIG)
    blobs.put_blocking(BUCKET, base + "raw/empty/", b"")
    blobs.put_blocking(BUCKET, base + "notes.txt", b"hello reef\n")
    blobs.put_blocking(BUCKET, s3_path(PRIVATE) + "secret.csv", b"a,b\n1,2\n")
    for handle in CHAIN:
        blobs.put_blocking(BUCKET, s3_path(handle) + "data.bin", handle.encode())
    return store, blobs


def errno_of(excinfo: pytest.ExceptionInfo[FsError]) -> int:
    return excinfo.value.errno


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drafts of these tests go to a temporary state dir, never the user's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


# --- the tree ------------------------------------------------------------------------------


async def test_root_lists_prefixes_and_by_name_but_hides_control_dir() -> None:
    fs, _ = build_filesystem(*world())
    names = [entry.name for entry in await list_dir(fs, "")]
    facets = ["by-keyword", "by-meta", "by-owner", "by-status", "mine", "recent", "shared-with-me"]
    assert names == sorted(["102.100.100", "10378.1", "by-name", *facets])
    control = await walk(fs, ".provenafs")
    assert stat.S_ISDIR(control.mode)
    assert [e.name for e in await list_dir(fs, ".provenafs")] == ["status.json"]


async def test_prefix_dir_lists_version_dirs_sidecars_and_latest_links() -> None:
    fs, _ = build_filesystem(*world())
    entries = {entry.name: entry.attributes for entry in await list_dir(fs, "10378.1")}
    assert sorted(entries) == sorted(
        f"{suffix}{tail}"
        for suffix in ("1001", "1002", "2001", "2002", "2003")
        for tail in ("", ".json", "@latest")
    )
    assert stat.S_ISDIR(entries["1001"].mode)
    assert stat.S_ISREG(entries["1001.json"].mode)
    assert stat.S_ISLNK(entries["1001@latest"].mode)


async def test_lookup_by_handle_fetches_that_handle_only() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    attributes = await walk(fs, "10378.1/1001")
    assert stat.S_ISDIR(attributes.mode)
    assert store.calls["list"] == 0
    assert store.calls["fetch"] == 1
    assert attributes.mtime_ns == 1_721_714_647 * 10**9
    assert (attributes.uid, attributes.gid) == (1000, 1001)


async def test_a_deep_file_is_reached_and_read_without_listing_a_folder() -> None:
    """A file two folders down in a fresh mount: each name is found by a HEAD and a one-key
    LIST, its attributes from those (no listing, no HEAD per folder), then one GET."""
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        found = await walk(fs, f"{REEF}/raw/loggers-2023.csv")
        for path in (f"{REEF}/raw", f"{REEF}/raw/loggers-2023.csv"):
            await fs.getattr((await walk(fs, path)).inode, CALLER)
        opened = await fs.open(found.inode, os.O_RDONLY, CALLER)
        assert await fs.read(opened.fh, 0, 4) == BIG[:4]
        assert fs.catalog.statistics()["listing_fetches"] == 0
        # raw, loggers-2023.csv and .provenafs (whether the version has a manifest)
        assert (blobs.calls["head"], blobs.calls["list"]) == (3, 3)
        nursery.cancel_scope.cancel()


async def test_looking_up_a_dataset_fetches_its_credentials_beside_its_record() -> None:
    """Reached by path, a dataset's record and read credentials are fetched side by side (no
    listing: a name inside is found by a HEAD and a one-key LIST, the listing by ls)."""
    store, blobs = world()
    fs, broker = build_filesystem(store, blobs)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        store.gate = trio.Event()
        found: list[object] = []

        async def look_up() -> None:
            found.append(await walk(fs, "10378.1/1001"))

        nursery.start_soon(look_up)
        await trio.testing.wait_all_tasks_blocked()
        assert (store.calls["fetch"], store.calls["read_credentials"]) == (1, 1)  # both at once
        store.gate.set()
        store.gate = None
        await trio.testing.wait_all_tasks_blocked()
        assert found and fs.catalog.statistics()["listing_fetches"] == 0
        # what open then needs is there: no further credential call, no listing
        await walk(fs, "10378.1/1001/notes.txt")
        assert broker.statistics()["read_calls"] == 1
        assert fs.catalog.statistics()["listing_fetches"] == 0
        await list_dir(fs, "10378.1/1001")
        assert fs.catalog.statistics()["listing_fetches"] == 1
        await walk(fs, "10378.1/1002")  # no data read: warming it fails quietly
        await trio.testing.wait_all_tasks_blocked()
        await fs.close()
        nursery.cancel_scope.cancel()


async def test_dataset_dir_holds_exactly_the_objects_with_sizes_and_folders() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    top = {e.name: e.attributes for e in await list_dir(fs, "10378.1/1001")}
    assert sorted(top) == ["metadata.json", "notes.txt", "raw"]
    assert top["notes.txt"].size == len(b"hello reef\n")
    assert stat.S_ISDIR(top["raw"].mode)
    raw = {e.name: e.attributes for e in await list_dir(fs, "10378.1/1001/raw")}
    assert sorted(raw) == ["empty", "loggers-2023.csv"]
    assert stat.S_ISDIR(raw["empty"].mode)  # zero-byte "raw/empty/" key
    assert raw["loggers-2023.csv"].size == len(BIG)
    assert await list_dir(fs, "10378.1/1001/raw/empty") == []
    info = blobs.objects[(BUCKET, s3_path(REEF) + "notes.txt")][1]
    assert top["notes.txt"].mtime_ns == int(info.last_modified * 1e9)
    # sizes come from listings, never one HEAD per file: one HEAD per folder holding files
    # asks its newest object whether POSIX metadata is there (none: nothing more is asked)
    assert blobs.calls["head"] == 2


async def live_inodes(fs: Filesystem) -> int:
    """The numbered nodes, from the status file (whose own nodes exist after the first call)."""
    status = json.loads(await read_all(fs, ".provenafs/status.json"))
    return int(status["inodes"]["live_inodes"])


async def test_readdir_answers_dot_and_dotdot_without_counting_lookups() -> None:
    fs, _ = build_filesystem(*world())
    prefix = await walk(fs, "10378.1")
    dataset = await walk(fs, "10378.1/1001")
    raw = await walk(fs, "10378.1/1001/raw")
    for directory, parent in ((raw, dataset), (dataset, prefix), (prefix, None)):
        fh = await fs.opendir(directory.inode, CALLER)
        dot, dotdot = itertools.islice(fs.directory_entries(fh, 0), 2)  # nothing else counted
        await fs.releasedir(fh)
        assert (dot.name, dot.attributes.inode) == (".", directory.inode)
        expected = ROOT_INODE if parent is None else parent.inode
        assert (dotdot.name, dotdot.attributes.inode) == ("..", expected)
        assert stat.S_ISDIR(dot.attributes.mode) and stat.S_ISDIR(dotdot.attributes.mode)
    # the kernel counts no lookup of "." and "..": one forget of the lookups made by walk()
    # retires the directory, however many listings showed it as "."
    await live_inodes(fs)
    before = await live_inodes(fs)
    await fs.forget(raw.inode, 1)
    assert await live_inodes(fs) == before - 1


async def test_an_entry_the_kernel_did_not_take_is_not_counted() -> None:
    """The adapter takes entries until the kernel's buffer is full and hands back the one that
    did not fit: its lookup count is dropped, and no entry after it was counted."""
    store = FakeDataStore()
    store.add(REEF)
    blobs = MemoryBlobStore()
    for n in range(50):
        blobs.put_blocking(BUCKET, f"{s3_path(REEF)}f{n:04d}", b"x")
    fs, _ = build_filesystem(store, blobs)
    fh = await fs.opendir((await walk(fs, "10378.1/1001")).inode, CALLER)
    await live_inodes(fs)
    live = await live_inodes(fs)
    produced = []
    for entry in fs.directory_entries(fh, 0):
        produced.append(entry)
        if len(produced) == 12:  # ".", "..", then ten files; the tenth did not fit
            fs.entry_not_sent(entry)
            break
    assert await live_inodes(fs) == live + 9
    resumed = next(iter(fs.directory_entries(fh, produced[-2].next_offset)))
    assert resumed.name == produced[-1].name == "f0009"
    await fs.releasedir(fh)


async def test_readdir_offsets_are_stable_and_resumable() -> None:
    store = FakeDataStore()
    store.add(REEF)
    blobs = MemoryBlobStore()
    for n in range(READDIR_BATCH * 2 + 5):
        blobs.put_blocking(BUCKET, f"{s3_path(REEF)}f{n:04d}", b"x" * n)
    fs, _ = build_filesystem(store, blobs)
    dataset = await walk(fs, "10378.1/1001")
    fh = await fs.opendir(dataset.inode, CALLER)
    first = await fs.readdir(fh, 0)
    assert len(first) == READDIR_BATCH
    assert [e.next_offset for e in first] == list(range(1, READDIR_BATCH + 1))
    middle = await fs.readdir(fh, 12)
    assert middle[0].name == "f0010"
    blobs.put_blocking(BUCKET, f"{s3_path(REEF)}a-new-file", b"")  # snapshot unaffected
    rest: list[DirEntry] = []
    offset = 0
    while batch := await fs.readdir(fh, offset):
        rest += batch
        offset = batch[-1].next_offset
    names = [f"f{n:04d}" for n in range(READDIR_BATCH * 2 + 5)]
    assert [e.name for e in rest] == [".", "..", *names]
    assert await fs.readdir(fh, len(rest)) == []
    await fs.releasedir(fh)
    with pytest.raises(FsError) as excinfo:
        await fs.readdir(fh, 0)
    assert errno_of(excinfo) == errno.EBADF


async def test_readdir_entries_count_as_lookups() -> None:
    fs, _ = build_filesystem(*world())
    entries = await list_dir(fs, "10378.1/1001")
    notes = next(e for e in entries if e.name == "notes.txt")
    assert (await fs.getattr(notes.attributes.inode, CALLER)).size == 11
    looked_up = await fs.lookup((await walk(fs, "10378.1/1001")).inode, "notes.txt", CALLER)
    assert looked_up.inode == notes.attributes.inode
    await fs.forget(notes.attributes.inode, 1)  # the lookup's reference
    assert (await fs.getattr(notes.attributes.inode, CALLER)).size == 11  # readdir's remains
    await fs.forget(notes.attributes.inode, 1)
    with pytest.raises(FsError) as excinfo:
        await fs.getattr(notes.attributes.inode, CALLER)
    assert errno_of(excinfo) == errno.ENOENT
    again = await fs.lookup((await walk(fs, "10378.1/1001")).inode, "notes.txt", CALLER)
    # a forgotten number never names another node (a listed entry may get its own back)
    assert again.inode >= notes.attributes.inode
    assert (await fs.getattr(again.inode, CALLER)).size == 11
    other = next(e for e in entries if e.name == "raw")
    assert other.attributes.inode != again.inode


# --- sidecars ------------------------------------------------------------------------------


async def test_sidecar_size_equals_read_bytes_and_is_the_fetch_result() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    attributes = await walk(fs, "10378.1/1001.json")
    data = await read_all(fs, "10378.1/1001.json", chunk=1000)
    assert attributes.size == len(data)
    assert stat.S_IMODE(attributes.mode) == 0o444
    expected = {"item": store.items[REEF], "roles": list(store.roles[REEF]), "locked": False}
    assert json.loads(data) == expected
    text = json.dumps(expected, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert data == text.encode()
    assert "Températures".encode() in data


async def test_sidecar_in_prefix_listing_is_estimated_from_the_list_until_fetched() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    entries = {e.name: e.attributes for e in await list_dir(fs, "10378.1")}
    assert store.calls["fetch"] == 0
    # Never fetched, not the caller's own: rendered with guessed roles, kept 1 s.
    listed = entries["1002.json"]
    assert listed.attr_timeout == listed.entry_timeout == SHORT_TIMEOUT
    data = await read_all(fs, "10378.1/1002.json")
    assert json.loads(data)["roles"] == ["metadata-read"]
    assert listed.size == len(data) + len(',\n    "dataset-data-read"')  # one role more
    assert (await fs.getattr(listed.inode, CALLER)).size == len(data)  # exact once fetched


# --- permissions ---------------------------------------------------------------------------


async def test_permission_bits_follow_item_roles() -> None:
    fs, _ = build_filesystem(*world())
    readable = await walk(fs, "10378.1/1001")
    assert stat.S_IMODE(readable.mode) == 0o755  # latest version, item admin: writable
    closed = await walk(fs, "10378.1/1002")
    assert stat.S_IMODE(closed.mode) == 0o111
    sidecar = await walk(fs, "10378.1/1002.json")
    assert stat.S_IMODE(sidecar.mode) == 0o444
    assert json.loads(await read_all(fs, "10378.1/1002.json"))["roles"] == ["metadata-read"]
    notes = await walk(fs, "10378.1/1001/notes.txt")
    assert stat.S_IMODE(notes.mode) == 0o644
    metadata = await walk(fs, "10378.1/1001/metadata.json")
    assert stat.S_IMODE(metadata.mode) == 0o444  # the data store's copy
    old = await walk(fs, f"{CHAIN[0]}/data.bin")
    assert stat.S_IMODE(old.mode) == 0o444  # not the latest version
    for attributes in (closed, sidecar, metadata, old):
        assert not attributes.mode & 0o222  # no write bits where no write can succeed


async def test_no_data_read_gives_eacces_never_an_empty_dir() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    closed = await walk(fs, "10378.1/1002")
    with pytest.raises(FsError) as excinfo:
        await fs.opendir(closed.inode, CALLER)
    assert errno_of(excinfo) == errno.EACCES
    with pytest.raises(FsError) as excinfo:
        await fs.lookup(closed.inode, "secret.csv", CALLER)
    assert errno_of(excinfo) == errno.EACCES
    with pytest.raises(FsError) as excinfo:
        await fs.access(closed.inode, os.R_OK, CALLER)
    assert errno_of(excinfo) == errno.EACCES
    await fs.access(closed.inode, os.X_OK, CALLER)
    assert blobs.calls["list"] == 0


async def test_realm_admin_reads_without_item_roles() -> None:
    store, blobs = world()
    store.realm_admin = True
    store.roles[PRIVATE] = ()
    fs, broker = build_filesystem(store, blobs)
    attributes = await walk(fs, "10378.1/1002")
    assert stat.S_IMODE(attributes.mode) == 0o555  # read credentials were granted
    assert [e.name for e in await list_dir(fs, "10378.1/1002")] == ["secret.csv"]
    assert await read_all(fs, "10378.1/1002/secret.csv") == b"a,b\n1,2\n"
    assert broker.statistics()["read_calls"] == 1


async def test_unseeable_dataset_is_eacces() -> None:
    store, blobs = world()
    store.roles[PRIVATE] = ()
    fs, _ = build_filesystem(store, blobs)
    with raises_errno(errno.EACCES):
        await walk(fs, "10378.1/1002")


# --- names and errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("10378.1/9999", errno.ENOENT),  # well-formed, unknown
        ("10378.1/9999.json", errno.ENOENT),
        ("10378.1/9999@latest", errno.ENOENT),
        ("not-a-prefix", errno.ENOENT),
        ("10378.1/..", errno.ENOENT),
        ("10378.1/12 34", errno.ENOENT),  # malformed handle: not even fetched
        ("10378.1/1001.txt", errno.ENOENT),
        ("10378.1/a\x00b", errno.ENOENT),
        ("10378.1/1001/nope.csv", errno.ENOENT),
        ("10378.1/1001/notes.txt/below", errno.ENOTDIR),
        ("by-name/No such dataset", errno.ENOENT),
        (".provenafs/secrets", errno.ENOENT),
        ("10378.1/" + "9" * 256, errno.ENAMETOOLONG),
        ("10378.1/1001/" + "é" * 128, errno.ENAMETOOLONG),  # 256 bytes in UTF-8
    ],
)
async def test_lookup_errors(path: str, expected: int) -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    with pytest.raises(FsError) as excinfo:
        await walk(fs, path)
    assert errno_of(excinfo) == expected
    if expected == errno.ENAMETOOLONG or "12 34" in path or ".." in path:
        assert store.calls["fetch"] <= path.count("1001")  # nothing fetched for the name


async def test_unknown_handles_are_cached_negatively() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    prefix = await walk(fs, "10378.1")
    for _ in range(3):
        with pytest.raises(FsError):
            await fs.lookup(prefix.inode, "9999", CALLER)
    assert store.calls["fetch"] == 1


async def test_outage_is_eio_through_the_one_table() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    prefix = await walk(fs, "10378.1")
    store.failure = api_errors.UnavailableError("data store down")
    with raises_errno(errno.EIO):
        await fs.lookup(prefix.inode, "1001", CALLER)


# --- links ---------------------------------------------------------------------------------


async def test_latest_link_resolves_through_a_three_version_chain() -> None:
    fs, _ = build_filesystem(*world())
    for handle in CHAIN:
        suffix = handle.split("/")[1]
        attributes = await walk(fs, f"10378.1/{suffix}@latest")
        assert stat.S_ISLNK(attributes.mode)
        assert await fs.readlink(attributes.inode, CALLER) == "2003"
        assert attributes.size == len("2003")
    reef = await walk(fs, "10378.1/1001@latest")
    assert await fs.readlink(reef.inode, CALLER) == "1001"


async def test_latest_link_stops_at_the_last_visible_version() -> None:
    store, blobs = world()
    store.roles[CHAIN[2]] = ()
    fs, _ = build_filesystem(store, blobs)
    link = await walk(fs, "10378.1/2001@latest")
    assert await fs.readlink(link.inode, CALLER) == "2002"


async def test_by_name_links_latest_versions_with_collisions_suffixed() -> None:
    store, blobs = world()
    store.add("10378.1/3001", name="a/b: slashes")
    fs, _ = build_filesystem(store, blobs)
    entries = {e.name: e for e in await list_dir(fs, "by-name")}
    assert sorted(entries) == [
        "Chained",
        "Private numbers",
        "Reef logger temperatures 2023",
        "Reef logger temperatures 2023 (102.100.100\u22157)",
        "a\u2215b: slashes",
    ]
    reef = entries["Reef logger temperatures 2023"]
    assert await fs.readlink(reef.attributes.inode, CALLER) == "../10378.1/1001"
    chained = await walk(fs, "by-name/Chained")
    assert await fs.readlink(chained.inode, CALLER) == "../10378.1/2003"


# --- extended attributes -------------------------------------------------------------------


async def test_dataset_dir_xattrs() -> None:
    fs, _ = build_filesystem(*world())
    middle = await walk(fs, "10378.1/2002")
    names = await fs.listxattr(middle.inode, CALLER)
    expected = {
        "user.provena.handle": b"10378.1/2002",
        "user.provena.version": b"2",
        "user.provena.release_status": b"NOT_RELEASED",
        "user.provena.locked": b"false",
        "user.provena.roles": (
            b"admin,dataset-data-read,dataset-data-write,metadata-read,metadata-write"
        ),
        "user.provena.previous_version": b"10378.1/2001",
        "user.provena.next_version": b"10378.1/2003",
        "user.provena.release_approver": b"",
        "user.provena.release_timestamp": b"",
        "user.provena.url": b"https://hdl.handle.net/10378.1/2002",
    }
    assert sorted(names) == sorted(expected)
    for name, value in expected.items():
        assert await fs.getxattr(middle.inode, name, CALLER) == value
    last = await walk(fs, "10378.1/2003")
    assert await fs.getxattr(last.inode, "user.provena.next_version", CALLER) == b""
    with pytest.raises(FsError) as excinfo:
        await fs.getxattr(middle.inode, "user.nope", CALLER)
    assert errno_of(excinfo) == errno.ENODATA


async def test_file_xattrs_and_presigned_url_on_request() -> None:
    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    notes = await walk(fs, "10378.1/1001/raw/loggers-2023.csv")
    key = s3_path(REEF) + "raw/loggers-2023.csv"
    assert await fs.listxattr(notes.inode, CALLER) == [
        "user.provena.handle",
        "user.s3.etag",
        "user.s3.key",
    ]
    assert await fs.getxattr(notes.inode, "user.s3.key", CALLER) == key.encode()
    etag = blobs.objects[(BUCKET, key)][1].etag
    assert await fs.getxattr(notes.inode, "user.s3.etag", CALLER) == etag.encode()
    url = await fs.getxattr(notes.inode, "user.provena.presigned_url", CALLER)
    assert url.startswith(b"https://s3.example/") and url.decode().find(key) > 0
    assert store.calls["presign"] == 1


# --- reading -------------------------------------------------------------------------------


async def test_file_bytes_equal_the_object_for_any_range() -> None:
    store, blobs = world()
    fs, broker = build_filesystem(store, blobs)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        assert await read_all(fs, "10378.1/1001/raw/loggers-2023.csv", 70_000) == BIG
        attributes = await walk(fs, "10378.1/1001/raw/loggers-2023.csv")
        opened = await fs.open(attributes.inode, os.O_RDONLY, CALLER)
        assert opened.keep_cache and not opened.direct_io
        rng = random.Random(3)
        for _ in range(40):
            offset = rng.randrange(0, len(BIG) + 10)
            size = rng.randrange(0, 100_000)
            assert await fs.read(opened.fh, offset, size) == BIG[offset : offset + size]
        await fs.release(opened.fh)
        await fs.close()
    assert broker.statistics()["read_calls"] == 1  # one credential call for all of it


async def test_siblings_are_prefetched_after_the_first_read_not_at_open() -> None:
    """A sibling prefetch started at open would compete with that file's own first GET."""

    store, blobs = world()
    fs, _ = build_filesystem(store, blobs)
    fetched: list[str] = []
    get_range = blobs.get_range

    async def recording_get_range(*args: Any, **kwargs: Any) -> bytes:
        fetched.append(args[2])
        return await get_range(*args, **kwargs)

    blobs.get_range = recording_get_range  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        opened = await fs.open(
            (await walk(fs, "10378.1/1001/metadata.json")).inode, os.O_RDONLY, CALLER
        )
        await trio.testing.wait_all_tasks_blocked()
        assert fetched == []  # notes.txt, next in name order, waits for the first read
        await fs.read(opened.fh, 0, 4096)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(key.rsplit("/", 1)[1] for key in fetched) == [
            "metadata.json",
            "notes.txt",
        ]
        await fs.release(opened.fh)
        await fs.close()
        nursery.cancel_scope.cancel()


async def test_sidecar_open_serves_the_snapshot_taken_at_open() -> None:
    store, blobs = world()
    clock = FakeClock()
    fs, _ = build_filesystem(store, blobs, clock=clock)
    attributes = await walk(fs, "10378.1/1001.json")
    opened = await fs.open(attributes.inode, os.O_RDONLY, CALLER)
    assert not opened.keep_cache
    store.items[REEF]["display_name"] = "Renamed"
    clock.advance(3600)
    fs.catalog.invalidate(REEF)
    snapshot = await fs.read(opened.fh, 0, 1 << 20)
    assert len(snapshot) == attributes.size
    assert b"Renamed" not in snapshot
    assert b"Renamed" in await read_all(fs, "10378.1/1001.json")


async def test_status_file_reports_without_secrets() -> None:
    fs, _ = build_filesystem(*world())
    await read_all(fs, "10378.1/1001/notes.txt")
    status_bytes = await read_all(fs, ".provenafs/status.json")
    status = json.loads(status_bytes)
    assert status["version"]
    assert status["catalog"]["record_fetches"] == 1
    assert list(status["credential_expiries"]) == ["10378.1/1001 read"]
    assert SECRET_KEY.encode() not in status_bytes
    assert SESSION_TOKEN.encode() not in status_bytes
    status_file = await walk(fs, ".provenafs/status.json")
    assert status_file.size == len(status_bytes)  # stat after a read agrees with it
    opened = await fs.open(status_file.inode, 0, CALLER)
    assert opened.direct_io


# --- read-only: -o ro and versions that are not the latest ---------------------------------


@pytest.mark.parametrize(
    "flags",
    [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND],
)
async def test_write_opens_are_erofs(flags: int) -> None:
    fs, _ = build_filesystem(*world(), mount_options=options("-o", "ro"))
    for path in ("10378.1/1001/notes.txt", "10378.1/1001.json"):
        attributes = await walk(fs, path)
        with pytest.raises(FsError) as excinfo:
            await fs.open(attributes.inode, flags, CALLER)
        assert errno_of(excinfo) == errno.EROFS
    writable, _ = build_filesystem(*world())
    old = await walk(writable, f"{CHAIN[0]}/data.bin")
    with pytest.raises(FsError) as excinfo:
        await writable.open(old.inode, flags, CALLER)
    assert errno_of(excinfo) == errno.EROFS


@pytest.mark.parametrize("how", ["-o ro", "not the latest version"])
async def test_every_mutation_is_erofs(how: str) -> None:
    store, blobs = world()
    if how == "-o ro":
        fs, _ = build_filesystem(store, blobs, mount_options=options("-o", "ro"))
        handle = REEF
    else:
        fs, _ = build_filesystem(store, blobs)
        handle = CHAIN[0]
        blobs.put_blocking(BUCKET, s3_path(handle) + "notes.txt", b"n\n")
        blobs.put_blocking(BUCKET, s3_path(handle) + "raw/x.csv", b"x\n")
    dataset = await walk(fs, handle)
    notes = await walk(fs, f"{handle}/notes.txt")
    attempts = [
        fs.create(dataset.inode, "new.csv", 0o644, os.O_WRONLY, CALLER),
        fs.mkdir(dataset.inode, "d", 0o755, CALLER),
        fs.mknod(dataset.inode, "n", 0o644, 0, CALLER),
        fs.symlink(dataset.inode, "l", "notes.txt", CALLER),
        fs.link(notes.inode, dataset.inode, "hard", CALLER),
        fs.unlink(dataset.inode, "notes.txt", CALLER),
        fs.rmdir(dataset.inode, "raw", CALLER),
        fs.rename(dataset.inode, "notes.txt", dataset.inode, "n2", 0, CALLER),
        fs.setattr(notes.inode, CALLER, size=0),
        fs.setattr(notes.inode, times=True, ctx=CALLER),
        fs.setxattr(notes.inode, "user.x", b"1", CALLER),
        fs.removexattr(notes.inode, "user.s3.key", CALLER),
        fs.access(notes.inode, os.W_OK, CALLER),
    ]
    for attempt in attempts:
        with pytest.raises(FsError) as excinfo:
            await attempt
        assert errno_of(excinfo) == errno.EROFS
    unchanged = await fs.setattr(notes.inode, CALLER)
    assert unchanged.size == notes.size
    with pytest.raises(FsError) as excinfo:
        await fs.write(1, 0, b"x")  # no such open file
    assert errno_of(excinfo) == errno.EBADF
    assert fs.draft_store.drafts() == []


async def test_directories_cannot_be_opened_as_files_and_files_not_listed() -> None:
    fs, _ = build_filesystem(*world())
    dataset = await walk(fs, "10378.1/1001")
    with pytest.raises(FsError) as excinfo:
        await fs.open(dataset.inode, os.O_RDONLY, CALLER)
    assert errno_of(excinfo) == errno.EISDIR
    notes = await walk(fs, "10378.1/1001/notes.txt")
    with pytest.raises(FsError) as excinfo:
        await fs.opendir(notes.inode, CALLER)
    assert errno_of(excinfo) == errno.ENOTDIR
    with pytest.raises(FsError) as excinfo:
        await fs.readlink(notes.inode, CALLER)
    assert errno_of(excinfo) == errno.EINVAL


async def test_statfs_and_timeouts() -> None:
    fs, _ = build_filesystem(*world())
    stats = await fs.statfs()
    assert stats.name_max == 255
    root = await fs.getattr(ROOT_INODE, CALLER)
    assert root.attr_timeout <= 5
    inside = await walk(fs, f"{CHAIN[0]}/data.bin")  # no write can change it
    assert inside.attr_timeout >= 60 and inside.entry_timeout >= 60
    writable = await walk(fs, "10378.1/1001/raw/loggers-2023.csv")
    assert writable.attr_timeout <= 1 and writable.entry_timeout <= 1
    link = await walk(fs, "10378.1/1001@latest")
    assert link.entry_timeout <= 5
