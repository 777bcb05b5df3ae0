"""Links, modes and times in drafts and published versions (docs/SEMANTICS.md, "Links, modes
and times"), through the core over fakes: the draft keeps them, a publish writes them as s3fs
and rclone read them (object metadata) plus the attributes manifest, and reading them back
costs no HEAD per object of a version this mount published.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Awaitable
from pathlib import Path

import pytest

from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.storage import attribute_manifest
from provenafs.storage.attribute_manifest import (
    INDEX_KEY,
    ManifestEntry,
    decode_chunk,
    decode_index,
    encode_manifest,
)
from provenafs.storage.blobstore import MemoryBlobStore, ObjectInfo
from provenafs.storage.posix_metadata import (
    PosixMetadata,
    format_mtime,
    metadata_for,
    parse_metadata,
    parse_mode,
    parse_mtime,
)
from provenafs.write.drafts import default_root
from provenafs.write.publish import Publisher
from tests.unit.fakes import BUCKET, CALLER, TreeListingStore, build_filesystem, options, s3_path
from tests.unit.publish_support import VersioningStore
from tests.unit.support import CREATE, DATASET, fails, list_dir, read_all, split, walk

PREFIX = s3_path(DATASET)
OLD_TIME = 1_000_000_000_000_000_000  # 2001: before anything the tests do
JOURNAL_BEFORE = Path(__file__).parent / "data" / "draft-journal-before-posix-attributes"


def world(blobs: MemoryBlobStore | None = None) -> tuple[VersioningStore, MemoryBlobStore]:
    blobs = blobs or MemoryBlobStore()
    store = VersioningStore(blobs)
    store.add(DATASET, name="Reef")
    blobs.put_blocking(BUCKET, PREFIX + "metadata.json", b'{"dataset_info": {}}\n')
    blobs.put_blocking(BUCKET, PREFIX + "notes.txt", b"hello reef\n")
    blobs.put_blocking(BUCKET, PREFIX + "raw/loggers.csv", b"a,b\n1,2\n")
    return store, blobs


def make(state: Path, blobs: MemoryBlobStore | None = None) -> tuple[Filesystem, VersioningStore]:
    store, blobs = world(blobs)
    fs, _ = build_filesystem(store, blobs, mount_options=options("-o", f"state_dir={state}"))
    return fs, store


async def publish(fs: Filesystem, store: VersioningStore) -> str:
    broker = fs.changes._broker
    publisher = Publisher(store, broker, store.blobs, fs.draft_store, fs)
    return await publisher.publish(DATASET, "links, modes and times")


async def make_file(fs: Filesystem, path: str, mode: int, data: bytes = b"x") -> int:
    parent, name = await split(fs, path)
    opened, attributes = await fs.create(parent, name, mode, CREATE, CALLER)
    await fs.write(opened.fh, 0, data)
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    return attributes.inode


# --- the codec ---------------------------------------------------------------------------------


def test_s3fs_mode_and_rclone_mtime_texts_are_read_and_written() -> None:
    assert parse_mode("33261") == 0o100755  # s3fs: decimal, type bits included
    assert parse_mode("0755") == 0o100755  # strtol(…, 0): octal, no type: a regular file
    assert parse_mode("0x41ed") == 0o40755
    assert parse_mode("4480") == 0o10600 & 0o7777 | stat.S_IFREG  # a FIFO shows as a file
    assert parse_mode("junk") is None
    assert parse_mode("999999999") is None
    assert parse_mtime("1700000000") == 1_700_000_000_000_000_000  # s3fs
    assert parse_mtime("1700000000.5") == 1_700_000_000_500_000_000  # rclone: a float
    assert parse_mtime("1700000000.123456789") == 1_700_000_000_123_456_789
    assert parse_mtime("soon") is None
    assert format_mtime(1_700_000_000_000_000_007) == "1700000000.000000007"  # 9 digits
    assert parse_mtime(format_mtime(-100_000_000)) == -100_000_000
    written = metadata_for(0o120777, 1_700_000_000_123_456_789)
    assert written == {"mode": str(0o120777), "mtime": "1700000000.123456789"}
    assert parse_metadata(written) == PosixMetadata(0o120777, 1_700_000_000_123_456_789)
    assert parse_metadata(written).is_link


def test_a_big_manifest_is_chunked_and_found_by_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attribute_manifest, "CHUNK_ENTRIES", 3)
    entries = [
        ManifestEntry(folder, name, 0o100644, n, f"e{n}", n, n)
        for n, (folder, name) in enumerate(
            [("", "a"), ("", "b"), ("x", "1"), ("x", "2"), ("x", "3"), ("x", "4"), ("y", "z")]
        )
    ]
    objects = encode_manifest(reversed(entries), PosixMetadata(0o40700, 5))
    index = decode_index(objects[INDEX_KEY])
    assert index.root == PosixMetadata(0o40700, 5)
    assert len(index.chunks) == 3 and not index.entries
    found = [e for chunk in index.chunks_for("x") for e in decode_chunk(objects[chunk.key])]
    assert [e.name for e in found if e.directory == "x"] == ["1", "2", "3", "4"]
    assert len(index.chunks_for("x")) == 2  # not the chunk of "" alone
    info = ObjectInfo("k", 2, "e2", 0.002)
    assert entries[2].vouches_for(info)
    assert not entries[2].vouches_for(ObjectInfo("k", 2, "e2", 0.003))  # metadata rewritten
    with pytest.raises(ValueError, match="format"):
        decode_index(b'{"format": "something else"}')


# --- links -------------------------------------------------------------------------------------


async def test_a_symlink_is_kept_as_written_renamed_and_unlinked(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    top = (await walk(fs, DATASET)).inode
    link = await fs.symlink(top, "up", "../../../../etc/passwd", CALLER)
    assert stat.S_ISLNK(link.mode) and stat.S_IMODE(link.mode) == 0o777
    assert link.size == len("../../../../etc/passwd")
    assert await fs.readlink(link.inode, CALLER) == "../../../../etc/passwd"
    absolute = await fs.symlink(top, "abs", "/etc/hostname", CALLER)
    assert await fs.readlink(absolute.inode, CALLER) == "/etc/hostname"
    listed = {e.name: e.attributes for e in await list_dir(fs, DATASET)}
    assert stat.S_ISLNK(listed["up"].mode) and stat.S_ISLNK(listed["abs"].mode)
    await fails(errno.EEXIST, fs.symlink(top, "notes.txt", "x", CALLER))
    await fails(errno.ENAMETOOLONG, fs.symlink(top, "long", "a" * 4096, CALLER))
    await fails(errno.EINVAL, fs.readlink((await walk(fs, f"{DATASET}/notes.txt")).inode, CALLER))
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    await fs.rename(top, "up", raw, "moved", 0, CALLER)
    assert await fs.readlink((await walk(fs, f"{DATASET}/raw/moved")).inode, CALLER) == (
        "../../../../etc/passwd"
    )
    await fs.rename(raw, "moved", top, "notes.txt", 0, CALLER)  # a link over a file
    assert stat.S_ISLNK((await walk(fs, f"{DATASET}/notes.txt")).mode)
    await fs.unlink(top, "notes.txt", CALLER)
    await fs.unlink(top, "abs", CALLER)
    await fails(errno.ENOENT, walk(fs, f"{DATASET}/notes.txt"))
    assert sorted(e.name for e in await list_dir(fs, DATASET)) == ["metadata.json", "raw"]


async def test_a_links_own_times_are_kept(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    top = (await walk(fs, DATASET)).inode
    link = await fs.symlink(top, "l", "notes.txt", CALLER)
    changed = await fs.setattr(link.inode, CALLER, atime_ns=OLD_TIME, mtime_ns=OLD_TIME + 1)
    assert (changed.atime_ns, changed.mtime_ns) == (OLD_TIME, OLD_TIME + 1)
    assert changed.ctime_ns > OLD_TIME + 1
    assert stat.S_ISLNK(changed.mode)


# --- modes -------------------------------------------------------------------------------------


async def test_create_and_mkdir_modes_and_chmod_are_kept(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    script = await make_file(fs, f"{DATASET}/run.sh", 0o100755, b"#!/bin/sh\n")
    assert (await fs.getattr(script, CALLER)).mode == 0o100755
    top = (await walk(fs, DATASET)).inode
    private = await fs.mkdir(top, "private", 0o40700, CALLER)
    assert private.mode == 0o40700
    sticky = await fs.setattr(private.inode, CALLER, mode=0o41777)
    assert sticky.mode == 0o41777
    plain = await make_file(fs, f"{DATASET}/zero", 0o100000)
    assert (await fs.getattr(plain, CALLER)).mode == 0o100000  # mode 0 is a mode
    # a base file without metadata keeps the defaults; chmod of it is kept without a copy
    notes = (await walk(fs, f"{DATASET}/notes.txt")).inode
    assert (await fs.getattr(notes, CALLER)).mode == 0o100644
    assert (await fs.setattr(notes, CALLER, mode=0o100640)).mode == 0o100640
    assert fs.draft_store.get(DATASET).blob_dir.exists()  # type: ignore[union-attr]
    assert len(list(fs.draft_store.get(DATASET).blob_dir.iterdir())) == 2  # type: ignore[union-attr]


# --- times -------------------------------------------------------------------------------------


async def test_a_directorys_times_follow_changes_to_its_entries(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    top = (await walk(fs, DATASET)).inode
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    made = (await fs.mkdir(top, "made", 0o755, CALLER)).inode

    async def changes(directory: int, action: Awaitable[object], what: str) -> None:
        await fs.setattr(directory, CALLER, mtime_ns=OLD_TIME)
        assert (await fs.getattr(directory, CALLER)).mtime_ns == OLD_TIME
        await action
        after = await fs.getattr(directory, CALLER)
        assert after.mtime_ns > OLD_TIME and after.ctime_ns > OLD_TIME, what

    await changes(raw, make_file(fs, f"{DATASET}/raw/new.csv", 0o644), "create")
    await changes(raw, fs.mkdir(raw, "sub", 0o755, CALLER), "mkdir")
    await changes(raw, fs.unlink(raw, "new.csv", CALLER), "unlink")
    await changes(raw, fs.rmdir(raw, "sub", CALLER), "rmdir")
    await changes(raw, fs.rename(raw, "loggers.csv", made, "loggers.csv", 0, CALLER), "out")
    await changes(made, fs.rename(top, "notes.txt", made, "notes.txt", 0, CALLER), "in")
    await changes(top, fs.symlink(top, "link", "made", CALLER), "symlink")
    # the base shows through a base folder whose times changed
    assert sorted(e.name for e in await list_dir(fs, DATASET)) == [
        "link",
        "made",
        "metadata.json",
        "raw",
    ]


async def test_utimens_keeps_atime_and_mtime_of_files_and_directories(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    staged = await make_file(fs, f"{DATASET}/a.txt", 0o100644)
    top = (await walk(fs, DATASET)).inode
    made = (await fs.mkdir(top, "d", 0o755, CALLER)).inode
    base = (await walk(fs, f"{DATASET}/notes.txt")).inode
    for inode in (staged, made, base, top):
        kept = await fs.setattr(inode, CALLER, atime_ns=OLD_TIME, mtime_ns=OLD_TIME + 7)
        assert (kept.atime_ns, kept.mtime_ns) == (OLD_TIME, OLD_TIME + 7), inode
        assert kept.ctime_ns > OLD_TIME + 7  # ctime is the time of the change
        only_atime = await fs.setattr(inode, CALLER, atime_ns=OLD_TIME + 3)
        assert (only_atime.atime_ns, only_atime.mtime_ns) == (OLD_TIME + 3, OLD_TIME + 7)
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"hello reef\n"


async def test_directory_link_counts_are_exact_or_one(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    top = (await walk(fs, DATASET)).inode
    made = await fs.mkdir(top, "made", 0o755, CALLER)
    assert made.nlink == 2
    for name in ("a", "b"):
        await fs.mkdir(made.inode, name, 0o755, CALLER)
    await make_file(fs, f"{DATASET}/made/file", 0o100644)
    assert (await fs.getattr(made.inode, CALLER)).nlink == 4  # ., .., a/.., b/..
    assert (await walk(fs, f"{DATASET}/raw")).nlink == 1  # a base folder: unknown
    assert (await fs.getattr(ROOT_INODE, CALLER)).nlink == 1


# --- drafts survive the upgrade ----------------------------------------------------------------


async def test_a_draft_written_before_these_attributes_still_replays(tmp_path: Path) -> None:
    """The journal is a copy of one written by the mount before modes, links and times were
    kept (``tests/unit/data``): it replays whole, with the defaults for what it never said."""
    state = tmp_path / "state"
    root = default_root("http://127.0.0.1:8750", state)  # the fakes' source URL
    directory = root / "10378.1_1001-8003e1fe4f5a"
    (directory / "blobs").mkdir(parents=True)
    shutil.copy(JOURNAL_BEFORE, directory / "journal")
    blob = next(line for line in JOURNAL_BEFORE.read_text().splitlines() if '"staged"' in line)
    blob_id = blob.split('"blob":"')[1].split('"')[0]
    (directory / "blobs" / blob_id).write_bytes(b"written by main\n")
    fs, _ = make(state)
    assert sorted(e.name for e in await list_dir(fs, DATASET)) == [
        "added.txt",
        "made",
        "metadata.json",
        "moved.txt",
        "raw",
    ]
    added = await walk(fs, f"{DATASET}/added.txt")
    assert (added.mode, added.mtime_ns, added.atime_ns) == (0o100644,) + (
        1_700_000_001 * 10**9,
    ) * 2
    assert await read_all(fs, f"{DATASET}/added.txt") == b"written by main\n"
    moved = await walk(fs, f"{DATASET}/moved.txt")
    assert (moved.mode, moved.mtime_ns) == (0o100644, 1_600_000_000 * 10**9)
    assert await read_all(fs, f"{DATASET}/moved.txt") == b"hello reef\n"
    made = await walk(fs, f"{DATASET}/made")
    assert (made.mode, made.mtime_ns) == (0o40755, 1_700_000_002 * 10**9)
    await fails(errno.ENOENT, walk(fs, f"{DATASET}/notes.txt"))  # a whiteout
    # and it keeps working: a new change is journaled beside the old records
    await fs.setattr(added.inode, CALLER, mode=0o100700)
    again, _ = make(state)
    assert (await walk(again, f"{DATASET}/added.txt")).mode == 0o100700


# --- publishing and reading back ---------------------------------------------------------------


async def test_a_published_version_carries_links_modes_and_times(tmp_path: Path) -> None:
    fs, store = make(tmp_path)
    blobs = store.blobs
    top = (await walk(fs, DATASET)).inode
    bin_dir = await fs.mkdir(top, "bin", 0o40750, CALLER)
    script = await make_file(fs, f"{DATASET}/bin/run.sh", 0o100755, b"#!/bin/sh\necho hi\n")
    await fs.setattr(script, CALLER, mtime_ns=OLD_TIME + 1)
    await fs.symlink(bin_dir.inode, "latest", "run.sh", CALLER)
    notes = (await walk(fs, f"{DATASET}/notes.txt")).inode
    await fs.setattr(notes, CALLER, mode=0o100600)  # a base file: chmod only
    await fs.setattr(bin_dir.inode, CALLER, mtime_ns=OLD_TIME + 2)
    new = await publish(fs, store)
    new_prefix = s3_path(new)

    # what s3fs and rclone read: metadata on every object, links as bodies, dir markers
    def meta(rel: str) -> dict[str, str]:
        return blobs.metadata[(BUCKET, new_prefix + rel)]

    assert meta("bin/run.sh") == {"mode": "33261", "mtime": format_mtime(OLD_TIME + 1)}
    assert meta("bin/latest")["mode"] == str(0o120777)
    assert blobs.objects[(BUCKET, new_prefix + "bin/latest")][0] == b"run.sh"
    assert meta("bin/") == {"mode": str(0o40750), "mtime": format_mtime(OLD_TIME + 2)}
    assert meta("notes.txt")["mode"] == str(0o100600)
    base_time = blobs.objects[(BUCKET, PREFIX + "raw/loggers.csv")][1].last_modified
    assert parse_mtime(meta("raw/loggers.csv")["mtime"]) == int(base_time * 1e9)  # unchanged
    assert (BUCKET, new_prefix + INDEX_KEY) in blobs.objects

    # read back through a fresh mount: no HEAD per object, the manifest says it all
    fresh, _ = build_filesystem(
        store, blobs, mount_options=options("-o", f"state_dir={tmp_path}/b")
    )
    await walk(fresh, f"{new}/bin")  # found by a HEAD of "bin" and a one-key LIST
    heads = blobs.calls["head"]
    listed = {e.name: e.attributes for e in await list_dir(fresh, f"{new}/bin")}
    top_listed = {e.name: e.attributes for e in await list_dir(fresh, new)}
    assert blobs.calls["head"] == heads
    assert ".provenafs" not in top_listed
    await fails(errno.ENOENT, walk(fresh, f"{new}/.provenafs"))
    assert stat.S_ISLNK(listed["latest"].mode)
    assert await fresh.readlink(listed["latest"].inode, CALLER) == "run.sh"
    assert listed["run.sh"].mtime_ns == OLD_TIME + 1
    assert stat.S_IMODE(listed["run.sh"].mode) == 0o755
    assert stat.S_IMODE(top_listed["notes.txt"].mode) == 0o600
    assert top_listed["bin"].mode == 0o40750 and top_listed["bin"].mtime_ns == OLD_TIME + 2
    assert await read_all(fresh, f"{new}/bin/run.sh") == b"#!/bin/sh\necho hi\n"


async def test_a_kept_mode_is_carried_into_later_versions_and_shown_in_older_ones(
    tmp_path: Path,
) -> None:
    fs, store = make(tmp_path)
    await make_file(fs, f"{DATASET}/run.sh", 0o100755, b"#!/bin/sh\n")
    second = await publish(fs, store)
    await make_file(fs, f"{second}/other.txt", 0o100644, b"another change")
    publisher = Publisher(store, fs.changes._broker, store.blobs, fs.draft_store, fs)
    third = await publisher.publish(second, "a later version")
    meta = store.blobs.metadata[(BUCKET, s3_path(third) + "run.sh")]
    assert meta["mode"] == str(0o100755)  # carried with its metadata
    fresh, _ = build_filesystem(
        store, store.blobs, mount_options=options("-o", f"state_dir={tmp_path}/b")
    )
    assert stat.S_IMODE((await walk(fresh, f"{third}/run.sh")).mode) == 0o755
    # an older version takes no write: the kept mode shows without its write bits
    assert stat.S_IMODE((await walk(fresh, f"{second}/run.sh")).mode) == 0o555
    assert await read_all(fresh, f"{third}/run.sh") == b"#!/bin/sh\n"


async def test_a_prefix_written_with_s3fs_metadata_reads_with_its_links_and_modes(
    tmp_path: Path,
) -> None:
    blobs = MemoryBlobStore()
    fs, _ = make(tmp_path, blobs)
    when = 1_650_000_000_000_000_000
    for n in range(20):
        blobs.put_blocking(BUCKET, PREFIX + f"plain/{n}.csv", b"1\n")
    blobs.put_blocking(BUCKET, PREFIX + "s3fs/run.sh", b"#!/bin/sh\n", metadata_for(0o100750, when))
    blobs.put_blocking(BUCKET, PREFIX + "s3fs/link", b"run.sh", metadata_for(0o120777, when))
    blobs.put_blocking(BUCKET, PREFIX + "s3fs/sub/", b"", metadata_for(0o40700, when + 1))
    blobs.put_blocking(BUCKET, PREFIX + "s3fs/rclone.txt", b"r", {"mtime": "1650000000.25"})
    listed = {e.name: e.attributes for e in await list_dir(fs, f"{DATASET}/s3fs")}
    assert listed["run.sh"].mode == 0o100750 and listed["run.sh"].mtime_ns == when
    assert stat.S_ISLNK(listed["link"].mode) and listed["link"].mtime_ns == when
    assert await fs.readlink(listed["link"].inode, CALLER) == "run.sh"
    assert listed["sub"].mode == 0o40700 and listed["sub"].mtime_ns == when + 1
    assert listed["rclone.txt"].mtime_ns == 1_650_000_000_250_000_000
    assert listed["rclone.txt"].mode == 0o100644  # no mode: the default
    # a folder no POSIX-aware tool wrote costs one HEAD (its newest object), nothing more
    await walk(fs, f"{DATASET}/plain")  # found by a HEAD and a one-key LIST
    before = blobs.calls["head"]
    plain = await list_dir(fs, f"{DATASET}/plain")
    assert len(plain) == 20 and all(e.attributes.mode == 0o100644 for e in plain)
    assert blobs.calls["head"] - before == 1


async def test_the_manifest_vouches_only_for_objects_it_describes(tmp_path: Path) -> None:
    fs, store = make(tmp_path)
    await make_file(fs, f"{DATASET}/a.sh", 0o100755)
    await make_file(fs, f"{DATASET}/b.sh", 0o100700)
    new = await publish(fs, store)
    blobs = store.blobs
    # another tool replaces b.sh with a link (s3fs form) after the publish
    blobs.put_blocking(BUCKET, s3_path(new) + "b.sh", b"a.sh", metadata_for(0o120777, OLD_TIME))
    fresh, _ = build_filesystem(
        store, blobs, mount_options=options("-o", f"state_dir={tmp_path}/b")
    )
    heads = blobs.calls["head"]
    listed = {e.name: e.attributes for e in await list_dir(fresh, new)}
    assert blobs.calls["head"] - heads == 1  # b.sh only
    assert listed["a.sh"].mode == 0o100755
    assert stat.S_ISLNK(listed["b.sh"].mode) and listed["b.sh"].mtime_ns == OLD_TIME
    assert await fresh.readlink(listed["b.sh"].inode, CALLER) == "a.sh"
    assert os.fsencode("a.sh") == blobs.objects[(BUCKET, s3_path(new) + "b.sh")][0]


async def test_the_manifest_folder_name_cannot_be_made_at_the_top(tmp_path: Path) -> None:
    fs, _ = make(tmp_path)
    top = (await walk(fs, DATASET)).inode
    await fails(errno.EACCES, fs.mkdir(top, ".provenafs", 0o755, CALLER))
    await fails(errno.EACCES, fs.create(top, ".provenafs", 0o644, CREATE, CALLER))
    await fails(errno.EACCES, fs.symlink(top, ".provenafs", "x", CALLER))
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    await fs.mkdir(raw, ".provenafs", 0o755, CALLER)  # only the top is the manifest's
    await fails(errno.EACCES, fs.rename(raw, ".provenafs", top, ".provenafs", 0, CALLER))


async def test_a_crafted_manifest_or_link_changes_nothing_it_should_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who may write a version may write its ``.provenafs/`` keys and its objects: an
    index that is not one, or too big, is ignored (the objects' own metadata is read instead),
    and a link whose target holds NUL is an error, not a name."""
    blobs = MemoryBlobStore()
    fs, _ = make(tmp_path, blobs)
    monkeypatch.setattr("provenafs.core.stored_attributes.MAX_OBJECT_BYTES", 64)
    blobs.put_blocking(
        BUCKET, PREFIX + INDEX_KEY, b'{"format": "provenafs-attributes/1"' + b" " * 64
    )
    blobs.put_blocking(BUCKET, PREFIX + "tool.sh", b"#!/bin/sh\n", metadata_for(0o100700, OLD_TIME))
    blobs.put_blocking(BUCKET, PREFIX + "bad", b"a\x00b", metadata_for(0o120777, OLD_TIME))
    listed = {e.name: e.attributes for e in await list_dir(fs, DATASET)}
    assert ".provenafs" not in listed
    assert listed["tool.sh"].mode == 0o100700 and listed["tool.sh"].mtime_ns == OLD_TIME
    assert stat.S_ISLNK(listed["bad"].mode)
    await fails(errno.EIO, fs.readlink(listed["bad"].inode, CALLER))


async def test_listing_a_folder_probes_its_subfolders_at_once(tmp_path: Path) -> None:
    """In a version listed whole, ``ls`` of a folder probes every subfolder (one HEAD each),
    so a walk's next listings ask nothing; a folder without files costs no HEAD at all."""
    blobs = TreeListingStore()  # listed whole, as S3BlobStore lists a small version
    fs, _ = make(tmp_path, blobs)
    for folder in range(6):
        for n in range(5):
            blobs.put_blocking(BUCKET, PREFIX + f"walk/d{folder}/{n}.csv", b"1\n")
    heads = blobs.calls["head"]
    await walk(fs, f"{DATASET}/walk")  # looked up by HEADs and one-key LISTs: no listing
    await list_dir(fs, f"{DATASET}/walk")  # the version listed whole: the probes at once
    listed = blobs.calls["head"]
    assert listed - heads == 2 + 6  # walk and .provenafs looked up; each subfolder's probe
    for folder in range(6):
        assert len(await list_dir(fs, f"{DATASET}/walk/d{folder}")) == 5
    # no folder of the walk asked again; the top's own probe, once its listing is at hand
    assert blobs.calls["head"] == listed + 1
