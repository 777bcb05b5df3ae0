"""Callers who are not the mount's owner (issue 10 item 5), at the filesystem core.

The fakes mount with ``-o uid=1000``: the owner is uid 1000 (``CALLER``), not the uid these
tests run as. ``OTHER`` is another local user and ``ROOT`` uid 0, both reaching the mount
through ``-o allow_other``. Whatever the mode options share, neither may change anything,
mint a presigned URL or read ``.provenafs/status.json``; by default they read nothing; with
``file_mode=0644,dir_mode=0755`` (or ``umask=022``) they read. Every refusal is ``EACCES`` and
changes nothing: no draft, no S3 object, no data store call.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.core.types import Caller
from provenafs.storage.blobstore import MemoryBlobStore
from provenafs.write.metadata_edit import REASON_XATTR
from tests.unit.fakes import BUCKET, CALLER, FakeDataStore, build_filesystem, options, s3_path
from tests.unit.support import CREATE, DATASET, fails, walk

OTHER = Caller(uid=2000, gid=2000, pid=77)
ROOT = Caller(uid=0, gid=0, pid=1)
SHARED = "file_mode=0644,dir_mode=0755"


def world(tmp_path: Path, *mount_options: str) -> tuple[Filesystem, FakeDataStore, MemoryBlobStore]:
    store = FakeDataStore()
    store.add(DATASET, name="Reef")
    blobs = MemoryBlobStore()
    blobs.put_blocking(BUCKET, s3_path(DATASET) + "notes.txt", b"hello reef\n")
    blobs.put_blocking(BUCKET, s3_path(DATASET) + "raw/a.csv", b"1,2\n")
    extra = ",".join(("allow_other", f"state_dir={tmp_path / 'state'}", *mount_options))
    fs, _ = build_filesystem(store, blobs, mount_options=options("-o", extra))
    return fs, store, blobs


async def inode(fs: Filesystem, path: str) -> int:
    """Looked up by the owner (the kernel shares its dentry cache among users)."""
    return (await walk(fs, path)).inode


def changes(
    fs: Filesystem, ids: dict[str, int], who: Caller
) -> list[Callable[[], Awaitable[object]]]:
    """Every change (and presigned URL) a caller can ask of the core."""
    dataset, notes, raw, sidecar = ids["dataset"], ids["notes"], ids["raw"], ids["sidecar"]
    return [
        lambda: fs.create(dataset, "new.txt", 0o644, CREATE, who),
        lambda: fs.open(notes, os.O_WRONLY, who),
        lambda: fs.open(notes, os.O_RDWR | os.O_APPEND, who),
        lambda: fs.open(sidecar, os.O_WRONLY | os.O_TRUNC, who),
        lambda: fs.mkdir(dataset, "new-dir", 0o755, who),
        lambda: fs.unlink(dataset, "notes.txt", who),
        lambda: fs.rmdir(dataset, "raw", who),
        lambda: fs.rename(dataset, "notes.txt", dataset, "moved.txt", 0, who),
        lambda: fs.symlink(dataset, "link", "notes.txt", who),
        lambda: fs.mknod(dataset, "fifo", stat.S_IFIFO | 0o644, 0, who),
        lambda: fs.link(notes, raw, "hard", who),
        lambda: fs.setattr(notes, who, size=0),
        lambda: fs.setattr(notes, who, mtime_ns=1),
        lambda: fs.setattr(sidecar, who, size=0),
        lambda: fs.setxattr(sidecar, REASON_XATTR, b"mine", who),
        lambda: fs.removexattr(sidecar, REASON_XATTR, who),
        lambda: fs.setxattr(notes, "user.x", b"1", who),
        lambda: fs.getxattr(notes, "user.provena.presigned_url", who),
        lambda: fs.access(notes, os.W_OK, who),
    ]


async def ids_of(fs: Filesystem) -> dict[str, int]:
    return {
        "dataset": await inode(fs, DATASET),
        "notes": await inode(fs, f"{DATASET}/notes.txt"),
        "raw": await inode(fs, f"{DATASET}/raw"),
        "sidecar": await inode(fs, f"{DATASET}.json"),
        "status": await inode(fs, ".provenafs/status.json"),
    }


@pytest.mark.parametrize("shared", [(), (SHARED,), ("umask=022",)])
@pytest.mark.parametrize("who", [OTHER, ROOT], ids=["other", "root"])
async def test_no_change_and_no_presigned_url_but_for_the_owner(
    tmp_path: Path, who: Caller, shared: tuple[str, ...]
) -> None:
    fs, store, blobs = world(tmp_path, *shared)
    ids = await ids_of(fs)
    before = dict(blobs.objects)
    calls_before = dict(store.calls)
    for change in changes(fs, ids, who):
        await fails(errno.EACCES, change())
    assert fs.draft_store.get(DATASET) is None
    assert blobs.objects == before
    assert store.calls == calls_before  # not even a presign call went out
    await fails(errno.EACCES, fs.open(ids["status"], os.O_RDONLY, who))


@pytest.mark.parametrize("who", [OTHER, ROOT], ids=["other", "root"])
async def test_by_default_other_users_read_nothing(tmp_path: Path, who: Caller) -> None:
    fs, _, _ = world(tmp_path)
    ids = await ids_of(fs)
    await fails(errno.EACCES, fs.lookup(ROOT_INODE, "10378.1", who))
    await fails(errno.EACCES, fs.opendir(ROOT_INODE, who))
    await fails(errno.EACCES, fs.getattr(ids["notes"], who))  # a path the owner looked up
    for node in ("notes", "sidecar", "status"):
        await fails(errno.EACCES, fs.open(ids[node], os.O_RDONLY, who))
    await fails(errno.EACCES, fs.opendir(ids["dataset"], who))
    await fails(errno.EACCES, fs.getxattr(ids["notes"], "user.provena.handle", who))
    await fails(errno.EACCES, fs.listxattr(ids["dataset"], who))
    await fails(errno.EACCES, fs.access(ids["notes"], os.R_OK, who))
    root = await fs.getattr(ROOT_INODE, who)  # stat of the mountpoint itself works
    assert stat.S_IMODE(root.mode) == 0o500


async def test_by_default_the_modes_share_nothing(tmp_path: Path) -> None:
    fs, _, _ = world(tmp_path)
    assert stat.S_IMODE((await walk(fs, DATASET)).mode) == 0o700
    assert stat.S_IMODE((await walk(fs, f"{DATASET}/notes.txt")).mode) == 0o600
    assert stat.S_IMODE((await walk(fs, f"{DATASET}.json")).mode) == 0o400
    assert stat.S_IMODE((await walk(fs, "10378.1")).mode) == 0o500
    assert stat.S_IMODE((await walk(fs, ".provenafs/status.json")).mode) == 0o400


@pytest.mark.parametrize("shared", [SHARED, "umask=022"])
async def test_mode_options_let_other_users_read(tmp_path: Path, shared: str) -> None:
    fs, _, _ = world(tmp_path, shared)
    ids = await ids_of(fs)
    assert stat.S_IMODE((await fs.lookup(ids["dataset"], "notes.txt", OTHER)).mode) == 0o644
    assert stat.S_IMODE((await fs.getattr(ids["dataset"], OTHER)).mode) == 0o755
    assert stat.S_IMODE((await fs.getattr(ids["status"], OTHER)).mode) == 0o400  # never shared
    opened = await fs.open(ids["notes"], os.O_RDONLY, OTHER)
    assert await fs.read(opened.fh, 0, 100) == b"hello reef\n"
    await fs.release(opened.fh)
    sidecar = await fs.open(ids["sidecar"], os.O_RDONLY, OTHER)
    assert b"Reef" in await fs.read(sidecar.fh, 0, 1 << 16)
    await fs.release(sidecar.fh)
    fh = await fs.opendir(ids["dataset"], OTHER)
    assert sorted(e.name for e in await fs.readdir(fh, 0)) == [".", "..", "notes.txt", "raw"]
    await fs.releasedir(fh)
    assert await fs.getxattr(ids["notes"], "user.provena.handle", OTHER) == DATASET.encode()
    await fs.access(ids["notes"], os.R_OK, OTHER)
    await fails(errno.EACCES, fs.access(ids["notes"], os.W_OK, OTHER))


async def test_only_read_bits_are_ever_shared(tmp_path: Path) -> None:
    fs, _, _ = world(tmp_path, "file_mode=0666,dir_mode=0777")
    assert stat.S_IMODE((await walk(fs, f"{DATASET}/notes.txt")).mode) == 0o644
    assert stat.S_IMODE((await walk(fs, DATASET)).mode) == 0o755


async def test_the_owner_is_the_uid_option_not_the_daemons_uid(tmp_path: Path) -> None:
    """These tests run as another uid than 1000: the owner is ``-o uid=1000``."""
    assert os.getuid() != CALLER.uid
    fs, _, _ = world(tmp_path)
    parent = await inode(fs, DATASET)
    opened, _ = await fs.create(parent, "mine.txt", 0o644, CREATE, CALLER)
    await fs.write(opened.fh, 0, b"owner's")
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    draft = fs.draft_store.get(DATASET)
    assert draft is not None and "mine.txt" in draft.entries
    daemon_user = Caller(uid=os.getuid(), gid=os.getgid(), pid=os.getpid())
    await fails(errno.EACCES, fs.unlink(parent, "mine.txt", daemon_user))
