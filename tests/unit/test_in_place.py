"""``-o writes=in-place`` in the filesystem core: every change lands in the dataset itself.

The core runs over a fake data store whose write credentials answer as docs/API.md §3.4 says
(401 locked, 403 pending review or released) and a ``MemoryBlobStore``, wired to the real
``Publisher`` and ``PublishScheduler`` the way the daemon wires them.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials
from provenafs.core.filesystem import Filesystem
from provenafs.storage.blobstore import BlobUnavailableError, MemoryBlobStore
from provenafs.write.draft_entries import StagedEntry
from provenafs.write.publish import Publisher
from provenafs.write.publish_scheduler import PublishScheduler
from tests.unit.fakes import BUCKET, CALLER, FakeDataStore, build_filesystem, options, s3_path
from tests.unit.support import CSV, DATASET, create_file, fails, read_all, split, walk, write_file

PREFIX = s3_path(DATASET)
CREATE = os.O_WRONLY | os.O_CREAT


class WritableStore(FakeDataStore):
    """Write credentials as the data store answers them (docs/API.md §3.4)."""

    async def write_credentials(self, handle: str) -> Credentials:
        await self._enter("write_credentials")
        if self.locked[handle]:
            raise api_errors.PermissionDeniedError(
                "write_credentials: This dataset is locked - you cannot modify the files of a "
                "locked dataset. Unlock the dataset first."
            )
        if self.items[handle]["release_status"] != "NOT_RELEASED":
            raise api_errors.ForbiddenError(
                f"write_credentials: Dataset {handle} is pending review or is released. Cannot "
                "modify dataset files while a review is ongoing."
            )
        return await self.read_credentials(handle)


class FlakyBlobStore(MemoryBlobStore):
    """PUTs fail while ``failing``, and wait while ``held`` is set and not yet released."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.held: trio.Event | None = None
        self.put_started = trio.Event()

    async def put_object(
        self, creds: Credentials, bucket: str, key: str, data: bytes, **kwargs: Any
    ) -> str:
        self.put_started.set()
        if self.held is not None:
            await self.held.wait()
        if self.failing:
            raise BlobUnavailableError(f"PUT {key}: connection reset")
        return await super().put_object(creds, bucket, key, data, **kwargs)


def in_place_world(state: Path) -> tuple[Filesystem, WritableStore, FlakyBlobStore]:
    store = WritableStore()
    store.add(DATASET, name="Reef")
    blobs = FlakyBlobStore()
    blobs.put_blocking(BUCKET, PREFIX + "metadata.json", b'{"dataset_info": {}}\n')
    blobs.put_blocking(BUCKET, PREFIX + "notes.txt", b"hello reef\n")
    blobs.put_blocking(BUCKET, PREFIX + "raw/loggers.csv", CSV)
    blobs.put_blocking(BUCKET, PREFIX + "raw/sub/deep.txt", b"deep\n")
    blobs.put_blocking(BUCKET, PREFIX + "raw/empty/", b"")
    fs, broker = build_filesystem(
        store, blobs, mount_options=options("-o", f"state_dir={state},writes=in-place")
    )
    publisher = Publisher(store, broker, blobs, fs.draft_store, fs, in_place=True)  # type: ignore[arg-type]
    fs.set_in_place_publisher(PublishScheduler(publisher, publish_delay=0))
    return fs, store, blobs


def landed(blobs: MemoryBlobStore) -> dict[str, bytes]:
    """The dataset's objects in S3 (its server-written metadata.json left out)."""
    return {
        key[len(PREFIX) :]: data
        for (_, key), (data, _) in blobs.objects.items()
        if key.startswith(PREFIX) and key != PREFIX + "metadata.json"
    }


BASE = {
    "notes.txt": b"hello reef\n",
    "raw/loggers.csv": CSV,
    "raw/sub/deep.txt": b"deep\n",
    "raw/empty/": b"",
}


async def test_close_lands_the_file_in_the_dataset_before_it_returns(tmp_path: Path) -> None:
    fs, store, blobs = in_place_world(tmp_path)
    opened = await create_file(fs, f"{DATASET}/new.csv")
    await fs.write(opened.fh, 0, b"written in place\n")
    assert landed(blobs) == BASE  # nothing lands before close
    await fs.flush(opened.fh)  # close(): flush, then release
    assert landed(blobs) == {**BASE, "new.csv": b"written in place\n"}
    await fs.release(opened.fh)
    assert fs.draft_store.get(DATASET) is None  # the dataset's own listing shows it all
    assert await read_all(fs, f"{DATASET}/new.csv") == b"written in place\n"
    await write_file(fs, f"{DATASET}/notes.txt", b"rewritten\n")
    assert landed(blobs)["notes.txt"] == b"rewritten\n"
    assert fs.draft_store.get(DATASET) is None
    assert store.calls["version"] == 0


async def test_unlink_rename_mkdir_rmdir_and_truncate_land_when_they_return(tmp_path: Path) -> None:
    fs, _, blobs = in_place_world(tmp_path)
    root = (await walk(fs, DATASET)).inode
    raw = (await walk(fs, f"{DATASET}/raw")).inode
    await fs.unlink(root, "notes.txt", CALLER)
    assert "notes.txt" not in landed(blobs)
    await fs.mkdir(root, "moved", 0o755, CALLER)
    assert landed(blobs)["moved/"] == b""
    moved = (await walk(fs, f"{DATASET}/moved")).inode
    await fs.rename(raw, "loggers.csv", moved, "loggers.csv", 0, CALLER)
    assert landed(blobs)["moved/loggers.csv"] == CSV
    assert "raw/loggers.csv" not in landed(blobs)
    await fs.rmdir(raw, "empty", CALLER)
    assert "raw/empty/" not in landed(blobs)
    deep = (await walk(fs, f"{DATASET}/raw/sub/deep.txt")).inode
    await fs.setattr(deep, CALLER, size=2)
    # raw/ changed (entries left it): its marker now carries its mode and mtime (s3fs's form)
    assert landed(blobs) == {
        "moved/": b"",
        "moved/loggers.csv": CSV,
        "raw/": b"",
        "raw/sub/deep.txt": b"de",
    }
    assert fs.draft_store.get(DATASET) is None
    assert await read_all(fs, f"{DATASET}/moved/loggers.csv") == CSV


async def test_a_refusal_comes_from_the_data_store_with_its_reason_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="provenafs")

    fs, store, blobs = in_place_world(tmp_path)
    store.items[DATASET]["release_status"] = "PENDING"
    parent, _ = await split(fs, f"{DATASET}/new.csv")
    for _ in range(2):
        await fails(errno.EACCES, fs.create(parent, "new.csv", 0o644, CREATE, CALLER))
    notes = (await walk(fs, f"{DATASET}/notes.txt")).inode
    await fails(errno.EACCES, fs.open(notes, os.O_WRONLY, CALLER))
    assert store.calls["write_credentials"] == 3  # the data store is asked each time
    assert fs.draft_store.get(DATASET) is None
    assert landed(blobs) == BASE
    refusals = [r for r in caplog.records if "refuses in-place writes" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING
    assert "is pending review or is released" in refusals[0].getMessage()


async def test_a_failed_push_fails_close_with_eio_and_keeps_the_change(tmp_path: Path) -> None:
    fs, _, blobs = in_place_world(tmp_path)
    opened = await create_file(fs, f"{DATASET}/new.csv")
    await fs.write(opened.fh, 0, b"kept\n")
    blobs.failing = True
    await fails(errno.EIO, fs.flush(opened.fh))
    await fs.release(opened.fh)
    draft = fs.draft_store.get(DATASET)
    assert draft is not None and isinstance(draft.entries["new.csv"], StagedEntry)
    assert "new.csv" not in landed(blobs)
    assert await read_all(fs, f"{DATASET}/new.csv") == b"kept\n"  # still shown
    blobs.failing = False
    await write_file(fs, f"{DATASET}/other.csv", b"other\n")  # the next push takes both
    assert landed(blobs)["new.csv"] == b"kept\n"
    assert landed(blobs)["other.csv"] == b"other\n"
    assert fs.draft_store.get(DATASET) is None


async def test_a_push_refused_by_the_data_store_fails_close_with_eacces(tmp_path: Path) -> None:
    fs, store, blobs = in_place_world(tmp_path)
    opened = await create_file(fs, f"{DATASET}/new.csv")
    await fs.write(opened.fh, 0, b"x")
    store.locked[DATASET] = True  # locked while the file was open ...
    fs._broker.invalidate(DATASET)  # ... and the credentials held have run out
    await fails(errno.EACCES, fs.flush(opened.fh))
    await fs.release(opened.fh)
    assert "new.csv" not in landed(blobs)
    assert fs.draft_store.get(DATASET) is not None


async def test_several_writers_each_close_lands_and_a_write_waits_for_a_push(
    tmp_path: Path,
) -> None:
    fs, _, blobs = in_place_world(tmp_path)
    a = await create_file(fs, f"{DATASET}/a.csv")
    b = await create_file(fs, f"{DATASET}/b.csv")
    await fs.write(a.fh, 0, b"aaa")
    await fs.write(b.fh, 0, b"b1")
    blobs.held = trio.Event()
    written: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.flush, a.fh)  # close of a: its push waits in a PUT
        await blobs.put_started.wait()
        await trio.testing.wait_all_tasks_blocked()

        async def write_b() -> None:
            written.append(await fs.write(b.fh, 2, b"b2"))

        nursery.start_soon(write_b)
        await trio.testing.wait_all_tasks_blocked()
        assert written == []  # it waits for the push (no EBUSY)
        blobs.held.set()
    assert written == [2]
    # b's bytes as they were when the push began; b itself lands at its own close.
    assert landed(blobs)["a.csv"] == b"aaa"
    assert landed(blobs)["b.csv"] == b"b1"
    await fs.release(a.fh)
    assert fs.draft_store.get(DATASET) is not None  # b is still open
    await fs.flush(b.fh)
    await fs.release(b.fh)
    assert landed(blobs)["b.csv"] == b"b1b2"
    assert fs.draft_store.get(DATASET) is None


async def test_two_handles_on_one_file_each_close_lands_its_bytes(tmp_path: Path) -> None:
    fs, _, blobs = in_place_world(tmp_path)
    notes = (await walk(fs, f"{DATASET}/notes.txt")).inode
    first = await fs.open(notes, os.O_WRONLY, CALLER)
    second = await fs.open(notes, os.O_WRONLY, CALLER)
    await fs.write(first.fh, 0, b"HELLO")
    await fs.flush(first.fh)
    await fs.release(first.fh)
    assert landed(blobs)["notes.txt"] == b"HELLO reef\n"
    await fs.write(second.fh, 6, b"REEF")
    await fs.flush(second.fh)
    await fs.release(second.fh)
    assert landed(blobs)["notes.txt"] == b"HELLO REEF\n"
    assert fs.draft_store.get(DATASET) is None
    assert await read_all(fs, f"{DATASET}/notes.txt") == b"HELLO REEF\n"


async def test_a_pushed_file_still_open_is_not_pushed_again_by_the_quiet_delay(
    tmp_path: Path,
) -> None:
    fs, _, blobs = in_place_world(tmp_path)
    service = fs.changes.in_place_publisher
    assert isinstance(service, PublishScheduler)
    service.publish_delay = 10.0
    writer = await create_file(fs, f"{DATASET}/new.csv")
    await fs.write(writer.fh, 0, b"new\n")
    reader = await fs.open((await walk(fs, f"{DATASET}/new.csv")).inode, os.O_RDONLY, CALLER)
    await fs.flush(writer.fh)
    await fs.release(writer.fh)
    assert landed(blobs)["new.csv"] == b"new\n"
    assert fs.draft_store.get(DATASET) is not None  # kept while the reader holds it
    service._clock = lambda: 4_000_000_000.0  # long past the quiet delay
    assert service.due() == []  # nothing changed since it was pushed
    await fs.release(reader.fh)
    assert fs.draft_store.get(DATASET) is None


async def test_a_directory_rename_moves_every_object_under_it(tmp_path: Path) -> None:
    fs, _, blobs = in_place_world(tmp_path)
    root = (await walk(fs, DATASET)).inode
    await fs.rename(root, "raw", root, "renamed", 0, CALLER)
    # every directory the move made carries its attributes on a marker (s3fs's form)
    assert landed(blobs) == {
        "notes.txt": b"hello reef\n",
        "renamed/": b"",
        "renamed/loggers.csv": CSV,
        "renamed/sub/": b"",
        "renamed/sub/deep.txt": b"deep\n",
        "renamed/empty/": b"",
    }
    assert fs.draft_store.get(DATASET) is None
    assert await read_all(fs, f"{DATASET}/renamed/sub/deep.txt") == b"deep\n"
    await fails(errno.ENOENT, walk(fs, f"{DATASET}/raw"))
