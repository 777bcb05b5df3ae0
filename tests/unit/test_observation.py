"""What the filesystem core reports to an ``AccessObserver``: each open of a dataset file (with
the version, path and ETag), each listing and, before it is made, each change; reads count into
the counter an open answered, and an inactive observer is told nothing."""

from __future__ import annotations

import os
from pathlib import Path

from provenafs.core.filesystem import Filesystem
from provenafs.core.observation import FileAccess, ReadCounter
from provenafs.core.types import Caller
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import BUCKET, CALLER, FakeDataStore, build_filesystem, options, s3_path
from tests.unit.support import DATASET, read_all, split, walk, write_file

FILE = b"hello reef\n"


class Recorder:
    def __init__(self) -> None:
        self.active = True
        self.events: list[tuple[str, object]] = []
        self.counters: list[ReadCounter] = []

    async def opened(self, access: FileAccess) -> ReadCounter | None:
        self.events.append(("opened", access))
        counter = ReadCounter()
        self.counters.append(counter)
        return counter

    async def listed(self, caller: Caller, handle: str, path: str) -> None:
        self.events.append(("listed", (handle, path)))

    async def changing(self, caller: Caller, handle: str, path: str) -> None:
        self.events.append(("changing", (handle, path)))


def make(tmp_path: Path) -> tuple[Filesystem, Recorder, str]:
    store = FakeDataStore()
    store.add(DATASET, name="Reef")
    blobs = MemoryBlobStore()
    etag = blobs.put_blocking(BUCKET, s3_path(DATASET) + "raw/notes.txt", FILE).etag
    fs, _ = build_filesystem(store, blobs, mount_options=options("-o", f"state_dir={tmp_path}"))
    recorder = Recorder()
    fs.set_access_observer(recorder)
    return fs, recorder, etag


async def test_opens_name_the_version_path_and_etag_and_reads_are_counted(tmp_path: Path) -> None:
    fs, recorder, etag = make(tmp_path)
    assert await read_all(fs, f"{DATASET}/raw/notes.txt", chunk=4) == FILE
    [(kind, access)] = recorder.events
    assert kind == "opened"
    assert access == FileAccess(CALLER, DATASET, "raw/notes.txt", etag, len(FILE), False)
    assert recorder.counters[0].bytes_read == len(FILE)


async def test_changes_are_reported_before_they_are_made(tmp_path: Path) -> None:
    fs, recorder, _ = make(tmp_path)
    await write_file(fs, f"{DATASET}/raw/new.csv", b"1,2\n")
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["changing", "opened"]
    assert recorder.events[0][1] == (DATASET, "raw/new.csv")
    opened = recorder.events[1][1]
    assert isinstance(opened, FileAccess) and opened.writing and opened.etag is None
    recorder.events.clear()
    parent, name = await split(fs, f"{DATASET}/raw/notes.txt")
    await fs.unlink(parent, name, CALLER)
    await fs.mkdir(parent, "dir", 0o755, CALLER)
    await fs.rename(parent, "new.csv", parent, "moved.csv", 0, CALLER)
    assert recorder.events == [
        ("changing", (DATASET, "raw/notes.txt")),
        ("changing", (DATASET, "raw/dir")),
        ("changing", (DATASET, "raw/new.csv")),
        ("changing", (DATASET, "raw/moved.csv")),
    ]
    recorder.events.clear()
    fh = await fs.opendir((await walk(fs, f"{DATASET}/raw")).inode, CALLER)
    await fs.releasedir(fh)
    # reading the draft's own bytes: an open without an ETag
    await read_all(fs, f"{DATASET}/raw/moved.csv")
    assert recorder.events[0] == ("listed", (DATASET, "raw"))
    access = recorder.events[1][1]
    assert isinstance(access, FileAccess) and (access.etag, access.writing) == (None, False)


async def test_an_inactive_observer_is_told_nothing(tmp_path: Path) -> None:
    fs, recorder, _ = make(tmp_path)
    recorder.active = False
    await read_all(fs, f"{DATASET}/raw/notes.txt")
    await write_file(fs, f"{DATASET}/raw/new.csv", b"x")
    opened = await fs.open((await walk(fs, f"{DATASET}/raw/new.csv")).inode, os.O_RDONLY, CALLER)
    await fs.release(opened.fh)
    assert recorder.events == []
