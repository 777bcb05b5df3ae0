"""Names that cannot become the same S3 key (issue 10 item 6).

A name that is not valid UTF-8, holds a control character or a backslash is ``EINVAL`` at
create, mkdir, rename and symlink, before any draft is made; and a draft that holds one anyway
(journaled by an older daemon: the journal is rewritten on disk here) mints nothing when
published, and says why in the publisher's status.
"""

from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path

import pytest

from provenafs.api.models import Credentials, VersionCreated
from provenafs.core.filesystem import Filesystem
from provenafs.storage.blobstore import MemoryBlobStore
from provenafs.storage.credentials import CredentialBroker
from provenafs.write.drafts import DraftStore
from provenafs.write.object_keys import MAX_KEY_BYTES, key_problem, name_problem
from provenafs.write.publish import Publisher, PublishError
from provenafs.write.publish_scheduler import PublishScheduler
from tests.unit.fakes import BUCKET, CALLER, FakeDataStore, build_filesystem, options, s3_path
from tests.unit.support import CREATE, DATASET, fails, split, walk, write_file

BAD_NAMES = [
    os.fsdecode(b"\xff\xfe.txt"),  # what the kernel's bytes become: not UTF-8
    "back\\slash.txt",
    "tab\there",
    "bell\x07",
    "delete\x7f",
    "c1\x85control",
]
GOOD_NAMES = ["plain.txt", "Températures 2023.csv", "名前.nc", "quote's & (brackets)", " lead"]


class VersioningStore(FakeDataStore):
    """The fake data store, counting version calls (none may happen here)."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: list[str] = []

    async def write_credentials(self, handle: str) -> Credentials:
        return await self.read_credentials(handle)  # in place: its own dataset's

    async def create_version(self, handle: str, reason: str) -> VersionCreated:
        await self._enter("version")
        self.versions.append(reason)
        return VersionCreated("10378.1/9999", "job")


def world(
    tmp_path: Path,
) -> tuple[Filesystem, VersioningStore, MemoryBlobStore, CredentialBroker]:
    store = VersioningStore()
    store.add(DATASET, name="Reef")
    blobs = MemoryBlobStore()
    blobs.put_blocking(BUCKET, s3_path(DATASET) + "notes.txt", b"hello reef\n")
    fs, broker = build_filesystem(
        store, blobs, mount_options=options("-o", f"state_dir={tmp_path / 'state'}")
    )
    return fs, store, blobs, broker


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_rule(name: str) -> None:
    assert name_problem(name) is not None
    assert key_problem(f"dir/{name}", 20) is not None


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name: str) -> None:
    assert name_problem(name) is None and key_problem(f"dir/{name}", 20) is None


def test_key_length_counts_the_prefix() -> None:
    assert key_problem("a" * 1000, MAX_KEY_BYTES - 1000) is None
    assert key_problem("a" * 1000, MAX_KEY_BYTES - 999) is not None
    assert key_problem("a//b", 0) is not None and key_problem("a/../b", 0) is not None


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_new_names_are_einval_and_no_draft_is_made(tmp_path: Path, name: str) -> None:
    fs, _, blobs, _ = world(tmp_path)
    before = dict(blobs.objects)
    parent, _ = await split(fs, f"{DATASET}/x")
    await fails(errno.EINVAL, fs.create(parent, name, 0o644, CREATE, CALLER))
    await fails(errno.EINVAL, fs.mkdir(parent, name, 0o755, CALLER))
    await fails(errno.EINVAL, fs.symlink(parent, name, "notes.txt", CALLER))
    await fails(errno.EINVAL, fs.rename(parent, "notes.txt", parent, name, 0, CALLER))
    assert fs.draft_store.get(DATASET) is None
    assert blobs.objects == before
    await walk(fs, f"{DATASET}/notes.txt")  # the rename did not happen


async def test_a_bad_name_in_a_draft_with_changes_is_refused_too(tmp_path: Path) -> None:
    fs, _, _, _ = world(tmp_path)
    await write_file(fs, f"{DATASET}/fine.txt", b"fine")
    parent, _ = await split(fs, f"{DATASET}/fine.txt")
    await fails(errno.EINVAL, fs.rename(parent, "fine.txt", parent, "back\\slash", 0, CALLER))
    draft = fs.draft_store.get(DATASET)
    # the new file, and the dataset directory's new times ("")
    assert draft is not None and sorted(draft.entries) == ["", "fine.txt"]


def rewrite_journal(journal: Path, old: str, new: str) -> None:
    """What an older daemon would have journaled: the same records, with *new* for *old*."""
    lines = []
    for line in journal.read_bytes().splitlines():
        body = line.partition(b" ")[2]
        record = json.loads(body)
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=True)
        text = text.replace(json.dumps(old), json.dumps(new))
        data = text.encode()
        lines.append(b"%08x %s\n" % (zlib.crc32(data), data))
    journal.write_bytes(b"".join(lines))


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("name", [BAD_NAMES[0], BAD_NAMES[1], ".provenafs/index.json"])
async def test_a_journaled_bad_name_mints_nothing_and_says_why(
    tmp_path: Path, name: str, in_place: bool
) -> None:
    fs, store, blobs, broker = world(tmp_path)
    await write_file(fs, f"{DATASET}/ok.txt", b"written by an older daemon")
    await write_file(fs, f"{DATASET}/fine.txt", b"a good file")
    root = fs.draft_store.root
    await fs.close()
    [journal] = root.glob("*/journal")
    rewrite_journal(journal, "ok.txt", name)

    drafts = DraftStore(root)  # a new daemon replays the journal
    draft = drafts.get(DATASET)
    assert draft is not None and name in draft.entries
    before = dict(blobs.objects)
    publisher = Publisher(store, broker, blobs, drafts, fs, in_place=in_place)
    scheduler = PublishScheduler(publisher, publish_delay=0)
    with pytest.raises(PublishError, match="cannot be published") as refused:
        await scheduler.commit(DATASET)
    assert repr(name) in str(refused.value)
    assert store.versions == [] and store.calls["version"] == 0
    assert blobs.objects == before  # nothing copied, uploaded or deleted
    assert drafts.get(DATASET) is draft and name in draft.entries  # kept, to be fixed
    [failure] = scheduler.status()["failures"]
    assert "cannot be published" in failure["cause"] and repr(name) in failure["cause"]
