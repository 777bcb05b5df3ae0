"""A harness for ``ObjectReader`` tests: a recording in-memory store, credentials, a cache.

``Setup`` holds one ``RecordingStore`` (a ``MemoryBlobStore`` that records each ranged GET and
may fail or be slow), a credential broker, a block cache and a prefetch budget, and makes
readers of its objects; ``fetched`` counts the bytes GET from the store.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import trio
import trio.lowlevel

from provenafs.api.models import Credentials
from provenafs.cache.block_cache import BlockCache
from provenafs.read.reader import ObjectReader, PrefetchBudget
from provenafs.storage.blobstore import MemoryBlobStore
from provenafs.storage.credentials import CredentialBroker

__all__ = [
    "BUCKET",
    "HANDLE",
    "FakeCredentialClient",
    "KiB",
    "MiB",
    "RecordingStore",
    "Setup",
    "payload",
]

KiB = 1 << 10
MiB = 1 << 20
BUCKET = "bucket"
HANDLE = "10378.1/1"


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class RecordingStore(MemoryBlobStore):
    """MemoryBlobStore that records each ranged GET and yields like a real network call."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[str, int, int]] = []
        self.fail_with: list[Exception] = []
        self.latency = 0.0  # seconds per GET (virtual time under MockClock)

    async def get_range(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        start: int,
        end: int,
        *,
        etag: str | None = None,
    ) -> bytes:
        if self.latency:
            await trio.sleep(self.latency)
        else:
            await trio.lowlevel.checkpoint()
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.ranges.append((key, start, end))
        return await super().get_range(creds, bucket, key, start, end, etag=etag)


class FakeCredentialClient:
    def __init__(self) -> None:
        self.calls = 0

    async def read_credentials(self, handle: str) -> Credentials:
        self.calls += 1
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)
        return Credentials(f"AKIA{self.calls}", "s", "t", expiry)

    async def write_credentials(self, handle: str) -> Credentials:
        raise AssertionError("readers never ask for write credentials")


class Setup:
    def __init__(
        self, *, block_size: int = MiB, cache_bytes: int = 64 * MiB, budget: int = 64 * MiB
    ) -> None:
        self.store = RecordingStore()
        self.client = FakeCredentialClient()
        self.broker = CredentialBroker(self.client)
        self.cache = BlockCache(cache_bytes, block_size)
        self.budget = PrefetchBudget(budget)

    def put(self, key: str, data: bytes) -> str:
        return self.store.put_blocking(BUCKET, key, data).etag

    def reader(self, key: str, nursery: trio.Nursery | None, **kwargs: Any) -> ObjectReader:
        _data, info = self.store.objects[(BUCKET, key)]
        return ObjectReader(
            self.store,
            self.broker,
            self.cache,
            handle=HANDLE,
            bucket=BUCKET,
            key=key,
            size=info.size,
            etag=info.etag,
            budget=self.budget,
            nursery=nursery,
            **kwargs,
        )

    def fetched(self, key: str | None = None) -> int:
        return sum(end - start for k, start, end in self.store.ranges if key in (None, k))
