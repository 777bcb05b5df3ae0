"""``provenafs new --from``'s upload over ``MemoryBlobStore``: what goes up, and resuming.

A crash is a run stopped dead after some files and parts (a ``BaseException`` raised from the
store, as ``kill -9`` would leave the journal); the second run must send exactly what the
journal does not hold, once, and end with every byte in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio

from provenafs.api.models import Credentials
from provenafs.process.new_dataset import collection_format_for, journal_path
from provenafs.storage.blobstore import MemoryBlobStore
from provenafs.write.dataset_upload import (
    DatasetUploader,
    UploadJournal,
    journal_lines,
    local_files,
)

BUCKET = "bucket"
PREFIX = "datasets/10378-1-7/"
PART = 64 << 10
CREDS = Credentials("AKIA", "secret", "token", dt.datetime(2100, 1, 1, tzinfo=dt.UTC))


class Crash(BaseException):
    """The process dies (nothing after it runs)."""


class CountingStore(MemoryBlobStore):
    """Counts PUTs and parts; dies after ``die_after`` writes when set."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.die_after: int | None = None

    def _count(self) -> None:
        self.writes += 1
        if self.die_after is not None and self.writes > self.die_after:
            raise Crash

    async def put_object(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self._count()
        return await super().put_object(creds, bucket, key, data, metadata=metadata)

    async def upload_part(
        self, creds: Credentials, bucket: str, key: str, upload_id: str, *, number: int, data: bytes
    ) -> str:
        self._count()
        return await super().upload_part(creds, bucket, key, upload_id, number=number, data=data)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {f"small/{n:03d}.txt": f"file {n}\n".encode() for n in range(40)}
    files["big.bin"] = hashlib.sha256(b"big").digest() * (10 * PART // 32 + 5)  # 11 parts
    files[".hidden"] = b"dot files go too\n"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty" / "inner").mkdir(parents=True)
    (root / "metadata.json").write_text("{}")  # the data store's: left out
    (root / "link").symlink_to("big.bin")  # not a regular file: left out
    return files


def uploader(store: MemoryBlobStore, journal: UploadJournal, parallel: int = 4) -> DatasetUploader:
    async def credentials() -> Credentials:
        await trio.lowlevel.checkpoint()
        return CREDS

    return DatasetUploader(
        store,
        credentials,
        lambda: None,
        bucket=BUCKET,
        prefix=PREFIX,
        journal=journal,
        part_size=PART,
        parallel=parallel,
    )


def landed(store: MemoryBlobStore) -> dict[str, bytes]:
    return {
        key[len(PREFIX) :]: data
        for (bucket, key), (data, _) in store.objects.items()
        if bucket == BUCKET and key.startswith(PREFIX)
    }


def test_local_files_leave_out_links_and_the_data_stores_metadata(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    found, skipped = local_files(tmp_path)
    assert [f.key for f in found] == sorted([*files, "empty/inner/"])
    assert sorted(skipped) == ["link", "metadata.json"]


async def test_an_upload_sends_every_file_once_and_verifies_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    files = make_tree(source)
    store = CountingStore()
    journal = UploadJournal(tmp_path / "journal.jsonl")
    progress = await uploader(store, journal).upload(local_files(source)[0])
    assert landed(store) == {**files, "empty/inner/": b""}
    assert progress.files_sent == len(files) + 1 - 1  # every file but big.bin in one PUT
    assert progress.parts_sent == 11
    assert store.writes == progress.files_sent + progress.parts_sent
    assert store.objects[(BUCKET, PREFIX + "big.bin")][1].etag.endswith("-11")


@pytest.mark.parametrize("die_after", [3, 20, 45])
async def test_a_rerun_after_a_crash_sends_only_the_rest_once(
    tmp_path: Path, die_after: int
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    files = make_tree(source)
    items = local_files(source)[0]
    store = CountingStore()
    store.die_after = die_after
    path = tmp_path / "journal.jsonl"
    with pytest.raises(BaseExceptionGroup) as crashed:
        await uploader(store, UploadJournal(path), parallel=1).upload(items)
    assert crashed.group_contains(Crash)
    recorded = list(journal_lines(path))
    allowed = {"kind", "key", "size", "mtime_ns", "etag", "upload_id", "part_size", "number"}
    assert all(set(entry) <= allowed for entry in recorded)  # no credential is ever journaled
    done_files = sum(1 for e in recorded if e["kind"] == "file")
    done_parts = sum(1 for e in recorded if e["kind"] == "part")
    assert done_files + done_parts == die_after  # one request at a time: each one recorded
    store.die_after = None
    store.writes = 0
    progress = await uploader(store, UploadJournal(path)).upload(items)
    total_units = len(items) - 1 + 11  # every file in one PUT, big.bin in 11 parts
    big_done = any(e["kind"] == "file" and e["key"] == "big.bin" for e in recorded)
    assert store.writes == total_units - done_files - done_parts - (11 if big_done else 0)
    assert progress.files_sent + progress.parts_sent == store.writes
    assert landed(store) == {**files, "empty/inner/": b""}


async def test_a_file_changed_since_the_crash_is_sent_again(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    path = tmp_path / "journal.jsonl"
    store = CountingStore()
    await uploader(store, UploadJournal(path)).upload(local_files(source)[0])
    (source / "small/000.txt").write_bytes(b"changed\n")
    os.utime(source / "small/000.txt", ns=(1, 1))
    store.writes = 0
    await uploader(store, UploadJournal(path)).upload(local_files(source)[0])
    assert store.writes == 1
    assert landed(store)["small/000.txt"] == b"changed\n"


def test_a_journal_line_cut_short_is_done_again(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(
        '{"kind":"minted","handle":"10378.1/7","bucket":"b","prefix":"p/"}\n'
        '{"kind":"file","key":"a","size":1,"mtime_ns":2,"etag":"e"}\n'
        '{"kind":"file","key":"b","si'
    )
    journal = UploadJournal(path)
    assert journal.minted == {"handle": "10378.1/7", "bucket": "b", "prefix": "p/"}
    assert set(journal.files) == {"a"}


def test_the_journal_is_private(tmp_path: Path) -> None:
    journal = UploadJournal(tmp_path / "new" / "j.jsonl")
    journal.record_minted("10378.1/7", "b", "p/")
    journal.close()
    assert (tmp_path / "new" / "j.jsonl").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_the_journal_is_keyed_by_the_command(tmp_path: Path) -> None:
    one = journal_path("http://a", "Name", tmp_path)
    assert one == journal_path("http://a/", "Name", tmp_path)
    assert one != journal_path("http://a", "Other", tmp_path)
    assert one != journal_path("http://a", "Name", None)
    assert one != journal_path("http://b", "Name", tmp_path)


def test_the_collection_format_takes_defaults_then_the_file_then_the_arguments() -> None:
    config = {
        "organisation_id": "org",
        "publisher_id": "pub",
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "data_custodian_id": "person",
    }
    document = collection_format_for(
        "Name",
        config,
        keywords=["a", "a", "b"],
        metadata={"dataset_info": {"name": "ignored", "purpose": "p"}},
        today=dt.date(2026, 1, 2),
    )
    info = document["dataset_info"]
    assert info["name"] == "Name"  # the argument wins
    assert info["purpose"] == "p"
    assert info["keywords"] == ["a", "b"]
    assert info["created_date"] == {"relevant": True, "value": "2026-01-02"}
    assert info["license"] == config["license"]
    assert document["associations"] == {"organisation_id": "org", "data_custodian_id": "person"}
    assert set(document["approvals"]) == {
        "ethics_registration",
        "ethics_access",
        "indigenous_knowledge",
        "export_controls",
    }


async def test_a_large_file_changed_after_a_crash_begins_again_and_leaves_no_parts(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    big = source / "big.bin"
    big.write_bytes(b"a" * (5 * PART))
    path = tmp_path / "journal.jsonl"
    store = CountingStore()
    store.die_after = 2  # two parts sent, then the process dies
    with pytest.raises(BaseExceptionGroup):
        await uploader(store, UploadJournal(path), parallel=1).upload(local_files(source)[0])
    assert len(store.uploads) == 1  # an unfinished upload with two parts
    big.write_bytes(b"b" * (5 * PART + 1))
    store.die_after = None
    store.writes = 0
    await uploader(store, UploadJournal(path)).upload(local_files(source)[0])
    assert store.writes == 6  # every part of the new bytes
    assert landed(store) == {"big.bin": b"b" * (5 * PART + 1)}
    assert not store.uploads  # the stale upload was aborted
