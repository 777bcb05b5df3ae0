"""The object-store seam: what the mount needs from S3, as a protocol with value types.

``provenafs.s3.S3BlobStore`` implements it with boto3 (in worker threads); ``MemoryBlobStore``
here is the in-memory fake for fast tests of the layers above. This module must not import boto3
and must not know about datasets or handles: it speaks buckets, keys and credentials only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Protocol

from provenafs.api.models import Credentials

__all__ = [
    "AccessDenied",
    "BlobError",
    "BlobStore",
    "BlobUnavailable",
    "ExpiredCredentials",
    "Listing",
    "MemoryBlobStore",
    "NoSuchKey",
    "ObjectInfo",
    "StaleObject",
]


class BlobError(Exception):
    """Base of every object-store failure."""


class NoSuchKey(BlobError):
    """The key does not exist (404 / NoSuchKey)."""


class AccessDenied(BlobError):
    """The credentials do not allow this operation (AccessDenied / 403)."""


class ExpiredCredentials(BlobError):
    """The session token has expired or is no longer valid (ExpiredToken, InvalidToken)."""


class StaleObject(BlobError):
    """The object's ETag no longer matches the one the reader opened (PreconditionFailed)."""


class BlobUnavailable(BlobError):
    """The object store could not be reached, or kept failing, after bounded retries."""


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # without surrounding quotes
    last_modified: float  # Unix seconds


@dataclasses.dataclass(frozen=True)
class Listing:
    """One level (or, with no delimiter, all) of the keys under a prefix, every page joined.

    ``objects`` are full keys; ``prefixes`` are full common prefixes ending in ``/``.
    """

    objects: tuple[ObjectInfo, ...]
    prefixes: tuple[str, ...]


class BlobStore(Protocol):
    """Asynchronous object store operations, each signed with the given credentials."""

    async def list_prefix(
        self, creds: Credentials, bucket: str, prefix: str, *, delimiter: str | None = "/"
    ) -> Listing: ...

    async def head(self, creds: Credentials, bucket: str, key: str) -> ObjectInfo: ...

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
        """Bytes ``[start, end)`` of the object (fewer at its end); ``etag`` makes it If-Match."""
        ...


class MemoryBlobStore:
    """An in-memory ``BlobStore`` for unit tests: no credentials checks, counts every call."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, ObjectInfo]] = {}
        self.calls: dict[str, int] = {"list": 0, "head": 0, "get": 0}
        self.bytes_fetched = 0

    def put_blocking(self, bucket: str, key: str, data: bytes) -> ObjectInfo:
        info = ObjectInfo(key, len(data), hashlib.md5(data).hexdigest(), time.time())  # noqa: S324
        self.objects[(bucket, key)] = (data, info)
        return info

    async def list_prefix(
        self, creds: Credentials, bucket: str, prefix: str, *, delimiter: str | None = "/"
    ) -> Listing:
        self.calls["list"] += 1
        objects: list[ObjectInfo] = []
        prefixes: set[str] = set()
        for (b, key), (_, info) in sorted(self.objects.items()):
            if b != bucket or not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
            else:
                objects.append(info)
        return Listing(tuple(objects), tuple(sorted(prefixes)))

    async def head(self, creds: Credentials, bucket: str, key: str) -> ObjectInfo:
        self.calls["head"] += 1
        try:
            return self.objects[(bucket, key)][1]
        except KeyError:
            raise NoSuchKey(key) from None

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
        self.calls["get"] += 1
        try:
            data, info = self.objects[(bucket, key)]
        except KeyError:
            raise NoSuchKey(key) from None
        if etag is not None and etag != info.etag:
            raise StaleObject(key)
        chunk = data[start:end]
        self.bytes_fetched += len(chunk)
        return chunk
