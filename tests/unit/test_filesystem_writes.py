"""Write operations of the filesystem core against fakes: drafts, errnos, renames, refusals.

The core runs over a ``FakeDataStore`` and a ``MemoryBlobStore`` with a private ``state_dir``;
every test asserts on bytes, errno values and counts.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import trio

from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import (
    BUCKET,
    CALLER,
    FakeDataStore,
    build_filesystem,
    options,
    s3_path,
)
from tests.unit.support import (
    CREATE,
    CSV,
    DATASET,
    fails,
    names,
    read_all,
    walk,
    write_file,
)

OTHER = "10378.1/1005"
READ_ONLY_ROLES = ("metadata-read", "dataset-data-read")
NO_ADMIN = "10378.1/1002"
CHAIN = ["10378.1/2001", "10378.1/2002"]
WRITE = os.O_WRONLY


def world() -> tuple[FakeDataStore, MemoryBlobStore]:
    store = FakeDataStore()
    store.add(DATASET, name="Reef")
    store.add(OTHER, name="Other")
    store.add(NO_ADMIN, name="Readers", roles=READ_ONLY_ROLES)
    store.add_chain(CHAIN, name="Chained")
    blobs = MemoryBlobStore()
    base = s3_path(DATASET)
    blobs.put_blocking(BUCKET, base + "metadata.json", b'{"dataset_info": {}}\n')
    blobs.put_blocking(BUCKET, base + "notes.txt", b"hello reef\n")
    blobs.put_blocking(BUCKET, base + "raw/loggers.csv", CSV)
    blobs.put_blocking(BUCKET, base + "raw/sub/deep.txt", b"deep\n")
    blobs.put_blocking(BUCKET, base + "raw/empty/", b"")
    blobs.put_blocking(BUCKET, s3_path(OTHER) + "other.txt", b"other\n")
    blobs.put_blocking(BUCKET, s3_path(NO_ADMIN) + "data.txt", b"data\n")
    for handle in CHAIN:
        blobs.put_blocking(BUCKET, s3_path(handle) + "data.bin", handle.encode())
    return store, blobs


def make(state: Path, *extra: str) -> tuple[Filesystem, FakeDataStore, MemoryBlobStore]:
    store, blobs = world()
    fs, _ = build_filesystem(
        store, blobs, mount_options=options("-o", f"state_dir={state}", *extra)
    )
    return fs, store, blobs


def draft_blobs(fs: Filesystem) -> list[Path]:
    draft = fs.draft_store.get(DATASET)
    assert draft is not None
    return sorted(draft.blob_dir.iterdir())


# --- creating and writing --------------------------------------------------------------------


async def test_create_write_read_back_and_listing(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    await write_file(fs, f"{DATASET}/new.txt", b"fresh bytes")
    assert await read_all(fs, f"{DATASET}/new.txt") == b"fresh bytes"
    assert (await walk(fs, f"{DATASET}/new.txt")).size == 11
    assert await names(fs, DATASET) == ["metadata.json", "new.txt", "notes.txt", "raw"]
    # Unchanged files still come from S3, and only the new file is local.
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello reef\n"
    assert len(draft_blobs(fs)) == 1


async def test_o_excl_on_an_existing_name_is_eexist(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    excl = CREATE | os.O_EXCL
    await fails(errno.EEXIST, fs.create(parent, "notes.txt", 0o644, excl, CALLER))
    opened, _ = await fs.create(parent, "made.txt", 0o644, excl, CALLER)
    await fs.release(opened.fh)
    await fails(errno.EEXIST, fs.create(parent, "made.txt", 0o644, excl, CALLER))
    await fails(errno.EISDIR, fs.create(parent, "raw", 0o644, CREATE, CALLER))
    # Without O_EXCL an existing file is opened (and kept: no O_TRUNC).
    opened, attributes = await fs.create(parent, "notes.txt", 0o644, os.O_RDWR, CALLER)
    assert attributes.size == 11
    await fs.release(opened.fh)
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello reef\n"


async def test_copy_on_write_keeps_the_bytes_and_writes_anywhere(tmp_path: Path) -> None:
    fs, _, blobs = make(tmp_path)
    inode = (await walk(fs, f"{DATASET}/raw/loggers.csv")).inode
    opened = await fs.open(inode, os.O_RDWR, CALLER)
    assert await fs.write(opened.fh, 1000, b"XYZ") == 3
    assert await fs.write(opened.fh, len(CSV) + 10, b"tail") == 4
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    expected = CSV[:1000] + b"XYZ" + CSV[1003:] + bytes(10) + b"tail"
    assert await read_all(fs, f"{DATASET}/raw/loggers.csv") == expected
    assert (await fs.getattr(inode, CALLER)).size == len(expected)
    assert blobs.bytes_fetched >= len(CSV)
    assert len(draft_blobs(fs)) == 1


async def test_o_trunc_and_append_fetch_nothing_needless(tmp_path: Path) -> None:
    fs, _, blobs = make(tmp_path)
    inode = (await walk(fs, f"{DATASET}/raw/loggers.csv")).inode
    opened = await fs.open(inode, os.O_WRONLY | os.O_TRUNC, CALLER)
    await fs.write(opened.fh, 0, b"short")
    await fs.release(opened.fh)
    assert blobs.bytes_fetched == 0  # truncated: nothing downloaded
    appended = await fs.open(inode, os.O_WRONLY | os.O_APPEND, CALLER)
    await fs.write(appended.fh, 0, b"+more")  # O_APPEND ignores the offset
    await fs.release(appended.fh)
    assert await read_all(fs, f"{DATASET}/raw/loggers.csv") == b"short+more"


async def test_truncate_grows_with_zeros_and_shrinks(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    inode = (await walk(fs, f"{DATASET}/notes.txt")).inode
    assert (await fs.setattr(inode, CALLER, size=20)).size == 20
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello reef\n" + bytes(9)
    assert (await fs.setattr(inode, CALLER, size=5)).size == 5
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello"
    await write_file(fs, f"{DATASET}/staged.bin", b"abc")
    staged = (await walk(fs, f"{DATASET}/staged.bin")).inode
    opened = await fs.open(staged, os.O_RDWR, CALLER)
    await fs.setattr(staged, CALLER, size=6, fh=opened.fh)
    await fs.release(opened.fh)
    assert await read_all(fs, f"{DATASET}/staged.bin") == b"abc\0\0\0"
    await fails(errno.EINVAL, fs.setattr(staged, CALLER, size=-1))
    await fails(errno.EISDIR, fs.setattr((await walk(fs, f"{DATASET}/raw")).inode, CALLER, size=0))


async def test_truncate_to_zero_of_a_base_file_downloads_nothing(tmp_path: Path) -> None:
    fs, _, blobs = make(tmp_path)
    inode = (await walk(fs, f"{DATASET}/raw/loggers.csv")).inode
    assert (await fs.setattr(inode, CALLER, size=0)).size == 0
    assert blobs.bytes_fetched == 0
    assert await read_all(fs, f"{DATASET}/raw/loggers.csv") == b""


# --- removing --------------------------------------------------------------------------------


async def test_unlink_hides_base_files_and_deletes_staged_bytes(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    await fs.unlink(parent, "notes.txt", CALLER)
    await fails(errno.ENOENT, walk(fs, f"{DATASET}/notes.txt"))
    assert "notes.txt" not in await names(fs, DATASET)
    await write_file(fs, f"{DATASET}/temp.txt", b"temporary")
    assert len(draft_blobs(fs)) == 1
    await fs.unlink(parent, "temp.txt", CALLER)
    assert draft_blobs(fs) == []
    await fails(errno.ENOENT, fs.unlink(parent, "temp.txt", CALLER))
    await fails(errno.EISDIR, fs.unlink(parent, "raw", CALLER))
    # A new file under a removed name is a new file (and a new inode).
    await write_file(fs, f"{DATASET}/notes.txt", b"again")
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"again"


async def test_mkdir_rmdir_and_enotempty(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    made = await fs.mkdir(parent, "results", 0o755, CALLER)
    assert stat.S_ISDIR(made.mode) and stat.S_IMODE(made.mode) == 0o755
    await fails(errno.EEXIST, fs.mkdir(parent, "results", 0o755, CALLER))
    await fails(errno.EEXIST, fs.mkdir(parent, "notes.txt", 0o755, CALLER))
    await write_file(fs, f"{DATASET}/results/a.txt", b"a")
    assert await names(fs, f"{DATASET}/results") == ["a.txt"]
    await fails(errno.ENOTEMPTY, fs.rmdir(parent, "results", CALLER))
    await fails(errno.ENOTEMPTY, fs.rmdir(parent, "raw", CALLER))
    await fails(errno.ENOTDIR, fs.rmdir(parent, "notes.txt", CALLER))
    results = (await walk(fs, f"{DATASET}/results")).inode
    await fs.unlink(results, "a.txt", CALLER)
    await fs.rmdir(parent, "results", CALLER)
    # A base directory goes once it is empty; re-made, it is empty (the base stays hidden).
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    sub = (await walk(fs, f"{DATASET}/raw/sub")).inode
    await fs.unlink(sub, "deep.txt", CALLER)
    await fs.rmdir(raw, "sub", CALLER)
    await fs.rmdir(raw, "empty", CALLER)
    await fs.unlink(raw, "loggers.csv", CALLER)
    await fs.rmdir(parent, "raw", CALLER)
    assert await names(fs, DATASET) == ["metadata.json", "notes.txt"]
    await fs.mkdir(parent, "raw", 0o755, CALLER)
    assert await names(fs, f"{DATASET}/raw") == []


async def test_an_unlinked_open_file_keeps_working_until_closed(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    opened, attributes = await fs.create(parent, "scratch", 0o600, os.O_RDWR, CALLER)
    await fs.write(opened.fh, 0, b"before")
    await fs.unlink(parent, "scratch", CALLER)
    await fails(errno.ENOENT, walk(fs, f"{DATASET}/scratch"))
    await fs.write(opened.fh, 6, b" after")
    assert await fs.read(opened.fh, 0, 100) == b"before after"
    unlinked = await fs.getattr(attributes.inode, CALLER)  # fstat on the open file
    assert (unlinked.size, unlinked.nlink) == (12, 0)
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert draft_blobs(fs) == []
    assert "scratch" not in await names(fs, DATASET)


# --- renaming --------------------------------------------------------------------------------


async def test_rename_files_keeps_inodes_and_downloads_nothing(tmp_path: Path) -> None:
    fs, _, blobs = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    before = await walk(fs, f"{DATASET}/raw/loggers.csv")
    await fs.rename(raw, "loggers.csv", parent, "moved.csv", 0, CALLER)
    after = await walk(fs, f"{DATASET}/moved.csv")
    assert after.inode == before.inode and after.size == len(CSV)
    assert blobs.bytes_fetched == 0
    assert await read_all(fs, f"{DATASET}/moved.csv") == CSV
    await fails(errno.ENOENT, walk(fs, f"{DATASET}/raw/loggers.csv"))
    # Editors' write-temp-then-rename over an existing file.
    await write_file(fs, f"{DATASET}/.notes.txt.swp", b"edited\n")
    await fs.rename(parent, ".notes.txt.swp", parent, "notes.txt", 0, CALLER)
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"edited\n"
    assert await names(fs, DATASET) == ["metadata.json", "moved.csv", "notes.txt", "raw"]
    assert len(draft_blobs(fs)) == 1


async def test_rename_a_directory_with_base_and_draft_content(tmp_path: Path) -> None:
    fs, _, blobs = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    await write_file(fs, f"{DATASET}/raw/added.txt", b"added")
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    deep = await walk(fs, f"{DATASET}/raw/sub/deep.txt")
    await fs.unlink(raw, "loggers.csv", CALLER)
    await fs.rename(parent, "raw", parent, "cooked", 0, CALLER)
    assert (await walk(fs, f"{DATASET}/cooked")).inode == raw
    assert (await walk(fs, f"{DATASET}/cooked/sub/deep.txt")).inode == deep.inode
    assert await names(fs, f"{DATASET}/cooked") == ["added.txt", "empty", "sub"]
    assert await read_all(fs, f"{DATASET}/cooked/sub/deep.txt") == b"deep\n"
    assert await read_all(fs, f"{DATASET}/cooked/added.txt") == b"added"
    assert await names(fs, f"{DATASET}/cooked/empty") == []
    assert "raw" not in await names(fs, DATASET)
    assert blobs.bytes_fetched == len(b"deep\n")  # only what was read
    # And back again, over an empty directory.
    await fs.mkdir(parent, "raw", 0o755, CALLER)
    await fs.rename(parent, "cooked", parent, "raw", 0, CALLER)
    assert await names(fs, f"{DATASET}/raw") == ["added.txt", "empty", "sub"]


async def test_rename_errors(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    other = (await walk(fs, OTHER)).inode
    prefix = (await walk(fs, "10378.1")).inode
    await fails(errno.EEXIST, fs.rename(parent, "notes.txt", raw, "loggers.csv", 1, CALLER))
    await fails(errno.EINVAL, fs.rename(parent, "notes.txt", raw, "x", 2, CALLER))
    await fails(errno.EXDEV, fs.rename(parent, "notes.txt", other, "notes.txt", 0, CALLER))
    await fails(errno.EXDEV, fs.rename(parent, "notes.txt", prefix, "x", 0, CALLER))
    await fails(errno.EINVAL, fs.rename(parent, "raw", raw, "inner", 0, CALLER))
    await fails(errno.EISDIR, fs.rename(parent, "notes.txt", parent, "raw", 0, CALLER))
    await fails(errno.ENOTDIR, fs.rename(parent, "raw", parent, "notes.txt", 0, CALLER))
    await fails(errno.ENOTEMPTY, fs.rename(raw, "empty", parent, "raw", 0, CALLER))
    await fails(errno.ENOENT, fs.rename(parent, "absent", parent, "x", 0, CALLER))
    await fails(errno.EACCES, fs.rename(parent, "notes.txt", parent, "metadata.json", 0, CALLER))
    await fails(errno.EACCES, fs.rename(parent, "metadata.json", parent, "m.json", 0, CALLER))
    await fails(errno.EROFS, fs.rename(prefix, "1001", prefix, "1009", 0, CALLER))
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello reef\n"


# --- refusals and permission bits ------------------------------------------------------------


async def test_non_latest_versions_are_erofs_and_read_only(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    old = (await walk(fs, CHAIN[0])).inode
    data = await walk(fs, f"{CHAIN[0]}/data.bin")
    assert stat.S_IMODE((await walk(fs, CHAIN[0])).mode) == 0o555
    assert stat.S_IMODE(data.mode) == 0o444
    await fails(errno.EROFS, fs.create(old, "x", 0o644, CREATE, CALLER))
    await fails(errno.EROFS, fs.mkdir(old, "d", 0o755, CALLER))
    await fails(errno.EROFS, fs.open(data.inode, WRITE, CALLER))
    await fails(errno.EROFS, fs.unlink(old, "data.bin", CALLER))
    await fails(errno.EROFS, fs.setattr(data.inode, CALLER, size=0))
    await fails(errno.EROFS, fs.access(data.inode, os.W_OK, CALLER))
    latest = await walk(fs, f"{CHAIN[1]}/data.bin")
    assert stat.S_IMODE(latest.mode) == 0o644
    await fs.access(latest.inode, os.W_OK, CALLER)
    assert fs.draft_store.drafts() == []  # refusals leave nothing on disk


async def test_without_admin_writes_are_eacces(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    directory = await walk(fs, NO_ADMIN)
    data = await walk(fs, f"{NO_ADMIN}/data.txt")
    assert stat.S_IMODE(directory.mode) == 0o555 and stat.S_IMODE(data.mode) == 0o444
    await fails(errno.EACCES, fs.create(directory.inode, "x", 0o644, CREATE, CALLER))
    await fails(errno.EACCES, fs.open(data.inode, os.O_RDWR, CALLER))
    await fails(errno.EACCES, fs.unlink(directory.inode, "data.txt", CALLER))
    await fails(errno.EACCES, fs.access(data.inode, os.W_OK, CALLER))


async def test_metadata_json_is_read_only(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    metadata = await walk(fs, f"{DATASET}/metadata.json")
    assert stat.S_IMODE(metadata.mode) == 0o444
    await fails(errno.EACCES, fs.open(metadata.inode, WRITE, CALLER))
    await fails(errno.EACCES, fs.unlink(parent, "metadata.json", CALLER))
    await fails(errno.EACCES, fs.setattr(metadata.inode, CALLER, size=0))
    await fails(errno.EACCES, fs.access(metadata.inode, os.W_OK, CALLER))
    await fails(errno.EACCES, fs.create(parent, "metadata.json", 0o644, CREATE, CALLER))
    # Only the top-level one: a metadata.json further down is an ordinary file.
    await write_file(fs, f"{DATASET}/raw/metadata.json", b"{}")


async def test_outside_datasets_is_erofs_and_ro_mounts_refuse_everything(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    prefix = (await walk(fs, "10378.1")).inode
    await fails(errno.EROFS, fs.mkdir(ROOT_INODE, "10378.9", 0o755, CALLER))
    await fails(errno.EROFS, fs.create(prefix, "x", 0o644, CREATE, CALLER))
    await fails(errno.EROFS, fs.unlink(prefix, "1001.json", CALLER))
    await fails(errno.EROFS, fs.rmdir(prefix, "1001", CALLER))
    await fails(errno.EROFS, fs.access(prefix, os.W_OK, CALLER))
    by_name = (await walk(fs, "by-name")).inode
    await fails(errno.EROFS, fs.mkdir(by_name, "x", 0o755, CALLER))

    ro, _, _ = make(tmp_path / "ro", "-o", "ro")
    parent = (await walk(ro, DATASET)).inode
    notes = await walk(ro, f"{DATASET}/notes.txt")
    assert stat.S_IMODE(notes.mode) == 0o444
    await fails(errno.EROFS, ro.create(parent, "x", 0o644, CREATE, CALLER))
    await fails(errno.EROFS, ro.open(notes.inode, WRITE, CALLER))
    await fails(errno.EROFS, ro.unlink(parent, "notes.txt", CALLER))
    await fails(errno.EROFS, ro.mkdir(parent, "d", 0o755, CALLER))


async def test_hard_links_special_files_and_xattrs_are_refused(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    notes = (await walk(fs, f"{DATASET}/notes.txt")).inode
    await fails(errno.EPERM, fs.link(notes, parent, "hard", CALLER))
    for kind in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK):
        await fails(errno.EPERM, fs.mknod(parent, "node", kind | 0o644, 0, CALLER))
    await fails(errno.ENOTSUP, fs.setxattr(notes, "user.note", b"x", CALLER))
    old = (await walk(fs, f"{CHAIN[0]}/data.bin")).inode
    await fails(errno.EROFS, fs.setxattr(old, "user.note", b"x", CALLER))
    assert sorted(await names(fs, DATASET)) == ["metadata.json", "notes.txt", "raw"]


async def test_chmod_and_utimens_are_kept_chown_is_accepted(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    notes = (await walk(fs, f"{DATASET}/notes.txt")).inode
    when = 1_600_000_000_123_456_789
    attributes = await fs.setattr(notes, CALLER, mtime_ns=when, mode=0o100600, uid=0)
    assert attributes.mtime_ns == when
    assert stat.S_IMODE(attributes.mode) == 0o600
    top = await walk(fs, DATASET)
    assert (attributes.uid, attributes.gid) == (top.uid, top.gid)  # the mount's: not kept
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello reef\n"
    await write_file(fs, f"{DATASET}/n.txt", b"n")
    staged = (await walk(fs, f"{DATASET}/n.txt")).inode
    assert (await fs.setattr(staged, CALLER, mtime_ns=when)).mtime_ns == when
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    kept = await fs.setattr(raw, CALLER, atime_ns=when - 5, mtime_ns=when, mode=0o40700)
    assert (kept.atime_ns, kept.mtime_ns, stat.S_IMODE(kept.mode)) == (when - 5, when, 0o700)
    assert (await walk(fs, f"{DATASET}/raw")).mtime_ns == when


# --- durability, publishing hooks, status ----------------------------------------------------


async def test_a_new_mount_shows_every_acknowledged_change(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    parent = (await walk(fs, DATASET)).inode
    await write_file(fs, f"{DATASET}/kept.txt", b"kept")
    await fs.mkdir(parent, "dir", 0o755, CALLER)
    await fs.unlink(parent, "notes.txt", CALLER)
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    await fs.rename(parent, "raw", parent, "raw2", 0, CALLER)
    inode = (await walk(fs, f"{DATASET}/raw2/loggers.csv")).inode
    opened = await fs.open(inode, os.O_RDWR, CALLER)
    await fs.write(opened.fh, 0, b"NEW")
    await fs.fsync(opened.fh, False)
    del fs, raw  # a crash: nothing closed
    again, _, _ = make(tmp_path)
    assert await names(again, DATASET) == ["dir", "kept.txt", "metadata.json", "raw2"]
    assert await read_all(again, f"{DATASET}/kept.txt") == b"kept"
    assert await read_all(again, f"{DATASET}/raw2/loggers.csv") == b"NEW" + CSV[3:]
    assert await names(again, f"{DATASET}/raw2") == ["empty", "loggers.csv", "sub"]


async def test_publish_hooks_block_changes_then_show_the_old_version(tmp_path: Path) -> None:
    class Notifier:
        def __init__(self) -> None:
            self.entries: list[tuple[int, str]] = []
            self.inodes: list[int] = []
            self.sent = trio.Event()

        async def invalidate_entry(self, parent_inode: int, name: str) -> None:
            self.entries.append((parent_inode, name))
            self.sent.set()

        async def invalidate_inode(self, inode: int, *, attr_only: bool = False) -> None:
            self.inodes.append(inode)

        async def store(self, inode: int, offset: int, data: bytes) -> None:
            raise AssertionError("writes never push pages to the kernel")

    fs, store, blobs = make(tmp_path)
    notifier = Notifier()
    fs.set_kernel_notifier(notifier)
    async with trio.open_nursery() as nursery:
        await fs.start(nursery)
        parent = (await walk(fs, DATASET)).inode
        await write_file(fs, f"{DATASET}/new.txt", b"new")
        opened = await fs.open((await walk(fs, f"{DATASET}/new.txt")).inode, WRITE, CALLER)
        summary = fs.draft_store.get(DATASET).summary()  # type: ignore[union-attr]
        assert (summary.added, summary.open_writers) == (1, 1)
        await fs.begin_publish(DATASET)
        await fails(errno.EBUSY, fs.mkdir(parent, "d", 0o755, CALLER))
        await fails(errno.EBUSY, fs.write(opened.fh, 0, b"x"))
        assert await read_all(fs, f"{DATASET}/new.txt") == b"new"  # reads go on
        # The publisher made 10378.1/1006 from the draft; the old version is no longer latest.
        store.add(DATASET, name="Reef", next_version="10378.1/1006")
        store.add("10378.1/1006", name="Reef", previous=DATASET, version=2)
        blobs.put_blocking(BUCKET, s3_path("10378.1/1006") + "new.txt", b"new")
        await fs.publish_done(DATASET, "10378.1/1006")
        fs.end_publish(DATASET)
        await fs.release(opened.fh)
        assert fs.draft_store.get(DATASET) is None
        assert await names(fs, DATASET) == ["metadata.json", "notes.txt", "raw"]
        await fails(errno.EROFS, fs.mkdir(parent, "d", 0o755, CALLER))
        assert await read_all(fs, "10378.1/1006/new.txt") == b"new"
        with trio.fail_after(5):
            await notifier.sent.wait()
        assert (parent, "new.txt") in notifier.entries
        assert parent in notifier.inodes
        nursery.cancel_scope.cancel()


async def test_status_lists_drafts_and_statfs_reports_the_state_disk(tmp_path: Path) -> None:
    fs, _, _ = make(tmp_path)
    await write_file(fs, f"{DATASET}/a.txt", b"12345")
    parent = (await walk(fs, DATASET)).inode
    await fs.unlink(parent, "notes.txt", CALLER)
    status = json.loads(await read_all(fs, ".provenafs/status.json"))
    assert status["read_only"] is False
    [draft] = status["drafts"]
    assert draft["handle"] == DATASET
    assert (draft["added"], draft["removed"], draft["staged_bytes"]) == (1, 1, 5)
    stats = await fs.statfs()
    assert stats.blocks > 0 and stats.blocks_free > 0


async def test_draft_files_are_private(tmp_path: Path) -> None:
    async def body() -> None:
        fs, _, _ = make(tmp_path)
        await write_file(fs, f"{DATASET}/secret name.txt", b"x")
        draft = fs.draft_store.get(DATASET)
        assert draft is not None
        for path in [fs.draft_store.root, draft.directory, draft.blob_dir]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o700
        for path in [*draft.blob_dir.iterdir(), draft.directory / "journal"]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600

    await body()
    assert not any("secret" in path.name for path in tmp_path.rglob("*"))
