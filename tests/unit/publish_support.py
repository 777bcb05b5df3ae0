"""What the publisher's tests share: a versioning fake data store, fake drafts, and ``World``
(a base version in S3, a draft over it, and a publisher wired to fakes).

Drafts are ``FakeDraft``s whose plan is fixed by the test and whose "journal" (new version id,
published paths) lives in the object, so a second publish after a failure sees what a replay of
the real journal would. Sizes are small and the part size is 64 KiB, so multipart paths run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
import trio.testing

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials, VersionCreated
from provenafs.storage.blobstore import Listing, MemoryBlobStore
from provenafs.storage.credentials import CredentialBroker
from provenafs.write.draft_plan import CarriedFile, DraftPlan, DraftSummary, StagedFile
from provenafs.write.publish import (
    Publisher,
)
from tests.unit.fakes import BUCKET, FakeDataStore, s3_path

PART = 64 << 10
OLD = "10378.1/100"
OLD_PREFIX = s3_path(OLD)
SERVER_METADATA = b'{\n  "dataset_info": {"name": "written by the data store"}\n}'


class DaemonDied(BaseException):
    """The daemon stops dead (nothing after it runs but ``finally`` blocks)."""


class VersioningStore(FakeDataStore):
    """The fake data store plus write credentials and versioning (which seeds metadata.json)."""

    def __init__(self, blobs: MemoryBlobStore) -> None:
        super().__init__()
        self.blobs = blobs
        self.versions_created: list[tuple[str, str]] = []
        self.refuse_write: Exception | None = None
        self.lose_version_answer = False
        self.die_after_minting = False

    async def write_credentials(self, handle: str) -> Credentials:
        await self._enter("write_credentials")
        if self.refuse_write is not None:
            raise self.refuse_write
        return await super().read_credentials(handle)

    async def create_version(self, handle: str, reason: str) -> VersionCreated:
        await self._enter("version")
        number = int(handle.rsplit("/", 1)[1]) + 1 + len(self.versions_created)
        new = f"10378.1/{number}"
        self.versions_created.append((new, reason))
        self.add(new, version=2, previous=handle)
        self.items[new]["versioning_info"]["reason"] = reason
        self.items[handle]["versioning_info"]["next_version"] = new
        self.blobs.put_blocking(BUCKET, s3_path(new) + "metadata.json", SERVER_METADATA)
        if self.lose_version_answer:
            self.lose_version_answer = False
            raise api_errors.UnavailableError("version: data store unreachable (ReadTimeout)")
        if self.die_after_minting:
            self.die_after_minting = False
            raise DaemonDied  # kill -9 while the answer was on its way
        return VersionCreated(new, "job-1")


class FakeDraft:
    """A draft with a fixed plan; its journal state is kept in the object."""

    def __init__(self, store: FakeDraftStore, handle: str, plan: DraftPlan) -> None:
        self._store = store
        self.handle = handle
        self.bucket = BUCKET
        self.base_prefix = s3_path(handle)
        self.fixed_plan = plan
        self._new_version: str | None = None
        self.version_requests: list[str | None] = []  # journaled before each version call
        self.published: list[str] = []
        self.quiet = True
        self.last_change = 0.0
        self.syncs = 0
        self.settled = 0
        self.discarded = False

    async def plan(self, base: Listing) -> DraftPlan:
        await trio.lowlevel.checkpoint()
        return self.fixed_plan

    def summary(self) -> DraftSummary:
        return DraftSummary(
            handle=self.handle,
            added=1,
            changed=0,
            removed=0,
            staged_bytes=sum(f.size for f in self.fixed_plan.staged),
            open_writers=0 if self.quiet else 1,
            last_change=self.last_change,
            new_version_id=self._new_version,
            published_paths=len(self.published),
        )

    def record_new_version(self, new_handle: str) -> None:
        assert self._new_version is None, "a second version was recorded"
        self._new_version = new_handle

    @property
    def new_version_id(self) -> str | None:
        return self._new_version

    def record_version_request(self, reason: str | None) -> None:
        self.version_requests.append(reason)

    @property
    def version_request(self) -> str | None:
        if self._new_version is not None or not self.version_requests:
            return None
        return self.version_requests[-1]

    def mark_published(self, path: str) -> None:
        self.published.append(path)

    def is_published(self, path: str) -> bool:
        return path in self.published

    def is_quiet(self) -> bool:
        return self.quiet

    async def sync(self) -> None:
        self.syncs += 1
        await trio.lowlevel.checkpoint()

    def settle(self, pushed: object = None) -> bool:
        self.settled += 1
        return True

    def discard(self) -> None:
        self.discarded = True
        self._store.items.pop(self.handle, None)


class FakeDraftStore:
    def __init__(self) -> None:
        self.items: dict[str, FakeDraft] = {}

    def drafts(self) -> Sequence[FakeDraft]:
        return list(self.items.values())

    def get(self, handle: str) -> FakeDraft | None:
        return self.items.get(handle)

    def add(self, handle: str, plan: DraftPlan) -> FakeDraft:
        draft = FakeDraft(self, handle, plan)
        self.items[handle] = draft
        return draft


class Hooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.done: trio.Event | None = None  # set after a publish_done

    async def begin_publish(self, handle: str) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append(("begin", handle))

    def end_publish(self, handle: str) -> None:
        self.events.append(("end", handle))

    async def publish_done(self, old_handle: str, new_handle: str) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append(("done", old_handle, new_handle))
        if self.done is not None:
            self.done.set()


def content(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class World:
    """A base version in S3, a draft over it, and a publisher wired to fakes."""

    def __init__(self, tmp_path: Path, blobs: MemoryBlobStore | None = None) -> None:
        self.tmp_path = tmp_path
        self.blobs = blobs or MemoryBlobStore()
        self.datastore = VersioningStore(self.blobs)
        self.datastore.add(OLD)
        self.base: dict[str, bytes] = {
            "metadata.json": b'{"old": true}',
            "keep.csv": content("keep", 1000),
            "big.bin": content("big", 5 * PART + 123),  # multipart: 6 parts
            "change.txt": b"old text\n",
            "gone.txt": b"removed in the draft\n",
            "moved-from.dat": content("moved", 300),
            "raw/empty/": b"",
        }
        for rel, data in self.base.items():
            self.blobs.put_blocking(BUCKET, OLD_PREFIX + rel, data)
        self.drafts = FakeDraftStore()
        self.hooks = Hooks()
        self.broker = CredentialBroker(self.datastore)

    def info(self, rel: str) -> Any:
        return self.blobs.objects[(BUCKET, OLD_PREFIX + rel)][1]

    def staged(self, rel: str, data: bytes) -> StagedFile:
        local = self.tmp_path / ("blob-" + hashlib.sha256(rel.encode()).hexdigest()[:12])
        local.write_bytes(data)
        return StagedFile(rel, local, len(data), 0)

    def carried(self, rel: str, base_rel: str | None = None) -> CarriedFile:
        info = self.info(base_rel or rel)
        return CarriedFile(rel, info.key, info.size, info.etag, 0, attributes_from_base=True)

    def standard_plan(self) -> tuple[DraftPlan, dict[str, bytes]]:
        """keep/big carried, change.txt changed, new files added, gone removed, a rename."""
        new_big = content("new-big", 3 * PART + 7)
        plan = DraftPlan(
            staged=(
                self.staged("change.txt", b"new text\n"),
                self.staged("added/new.txt", b"brand new\n"),
                self.staged("added/new-big.bin", new_big),
            ),
            carried=(
                self.carried("keep.csv"),
                self.carried("big.bin"),
                self.carried("moved-to.dat", "moved-from.dat"),
            ),
            empty_dirs=("raw/empty", "fresh"),
            removed=("gone.txt", "moved-from.dat"),
        )
        expected = {
            "keep.csv": self.base["keep.csv"],
            "big.bin": self.base["big.bin"],
            "moved-to.dat": self.base["moved-from.dat"],
            "change.txt": b"new text\n",
            "added/new.txt": b"brand new\n",
            "added/new-big.bin": new_big,
            "raw/empty/": b"",
            "fresh/": b"",
            "metadata.json": SERVER_METADATA,
        }
        return plan, expected

    def publisher(self, **kwargs: Any) -> Publisher:
        return Publisher(
            self.datastore,
            self.broker,
            self.blobs,
            self.drafts,
            self.hooks,
            part_size=PART,
            **kwargs,
        )

    def prefix_contents(self, prefix: str, *, manifest: bool = False) -> dict[str, bytes]:
        """Every object under *prefix* (the attributes manifest only with ``manifest``)."""
        return {
            key[len(prefix) :]: data
            for (bucket, key), (data, _) in self.blobs.objects.items()
            if bucket == BUCKET
            and key.startswith(prefix)
            and (manifest or not key[len(prefix) :].startswith(".provenafs/"))
        }
