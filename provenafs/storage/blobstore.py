"""The object-store seam: what the mount needs from S3, as a protocol with value types.

``provenafs.storage.s3.S3BlobStore`` implements it with boto3 (in worker threads);
``MemoryBlobStore`` here is the in-memory fake for fast tests of the layers above. This module must
not import boto3 and must not know about datasets or handles: it speaks buckets, keys and
credentials only.

``BlobStore`` is what reading needs; ``WritableBlobStore`` adds what publishing needs (single
PUTs, the multipart primitives, deletes), so a caller can stream one part at a time. Objects
carry user metadata (``ObjectHead.metadata``: names lower-case, without ``x-amz-meta-``), which
is where POSIX attributes live (``posix_metadata``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from provenafs.api.models import Credentials

__all__ = [
    "AccessDeniedError",
    "BlobError",
    "BlobStore",
    "BlobUnavailableError",
    "ExpiredCredentialsError",
    "Listing",
    "MemoryBlobStore",
    "NoSuchKeyError",
    "ObjectHead",
    "ObjectInfo",
    "StaleObjectError",
    "WritableBlobStore",
    "multipart_etag",
]


class BlobError(Exception):
    """Base of every object-store failure."""


class NoSuchKeyError(BlobError):
    """The key does not exist (404 / NoSuchKey)."""


class AccessDeniedError(BlobError):
    """The credentials do not allow this operation (AccessDenied / 403)."""


class ExpiredCredentialsError(BlobError):
    """The session token has expired or is no longer valid (ExpiredToken, InvalidToken)."""


class StaleObjectError(BlobError):
    """The object's ETag no longer matches the one the reader opened (PreconditionFailed)."""


class BlobUnavailableError(BlobError):
    """The object store could not be reached, or kept failing, after bounded retries."""


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # without surrounding quotes
    last_modified: float  # Unix seconds


@dataclasses.dataclass(frozen=True)
class ObjectHead:
    """An object's listing facts with its user metadata (names lower-case, no prefix)."""

    info: ObjectInfo
    metadata: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Listing:
    """One level (or, with no delimiter, all) of the keys under a prefix, every page joined.

    ``objects`` are full keys; ``prefixes`` are full common prefixes ending in ``/``.
    ``truncated``: a tree listing that stopped early (``objects`` are the first keys, in order).
    """

    objects: tuple[ObjectInfo, ...]
    prefixes: tuple[str, ...]
    truncated: bool = False


class BlobStore(Protocol):
    """Asynchronous object store operations, each signed with the given credentials."""

    async def list_prefix(
        self,
        creds: Credentials,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None = "/",
        start_after: str | None = None,
    ) -> Listing:
        """Every key (and common prefix) under ``prefix``; with ``start_after``, those after
        that key only."""
        ...

    async def head(self, creds: Credentials, bucket: str, key: str) -> ObjectInfo: ...

    async def any_under(self, creds: Credentials, bucket: str, prefix: str) -> bool:
        """Whether any key starts with ``prefix`` (a folder: one LIST of one key)."""

    async def head_object(self, creds: Credentials, bucket: str, key: str) -> ObjectHead:
        """Size, ETag, time and user metadata of one object (one HEAD)."""
        ...

    async def get_object(
        self, creds: Credentials, bucket: str, key: str, *, etag: str | None = None
    ) -> tuple[bytes, ObjectHead]:
        """The whole object (one GET, small objects only) with its user metadata."""
        ...

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


class WritableBlobStore(BlobStore, Protocol):
    """A ``BlobStore`` that can also write: what publishing a new version needs."""

    async def put_object(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write one object (with user ``metadata``) in a single PUT; answers its ETag."""
        ...

    async def create_multipart(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload of an object with user ``metadata``; answers its id."""
        ...

    async def upload_part(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        number: int,
        data: bytes,
    ) -> str:
        """Send part ``number`` (1-based) of an upload; answers the part's ETag (no quotes)."""
        ...

    async def complete_multipart(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
    ) -> str:
        """Join the parts ``(number, etag)`` into the object; answers its ETag (no quotes)."""
        ...

    async def abort_multipart(
        self, creds: Credentials, bucket: str, key: str, upload_id: str
    ) -> None:
        """Drop an unfinished upload and its parts (an unknown upload id is not an error)."""
        ...

    async def list_multipart_uploads(
        self, creds: Credentials, bucket: str, prefix: str
    ) -> list[tuple[str, str]]:
        """Unfinished uploads under ``prefix`` as ``(key, upload_id)``."""
        ...

    async def delete(self, creds: Credentials, bucket: str, key: str) -> None:
        """Delete one object (an absent key succeeds, as in S3)."""
        ...


def multipart_etag(part_digests: Sequence[bytes]) -> str:
    """The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, ``-`` part count."""
    joined = hashlib.md5(b"".join(part_digests)).hexdigest()  # noqa: S324
    return f"{joined}-{len(part_digests)}"


class MemoryBlobStore:
    """An in-memory ``WritableBlobStore`` for unit tests: no credentials checks, counts every call.

    Single PUTs get the MD5 of their bytes as ETag and multipart objects the S3-style
    ``multipart_etag``, as S3 does.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, ObjectInfo]] = {}
        self.metadata: dict[tuple[str, str], dict[str, str]] = {}
        self.calls: dict[str, int] = {
            "list": 0,
            "head": 0,
            "get": 0,
            "put": 0,
            "create_multipart": 0,
            "upload_part": 0,
            "complete_multipart": 0,
            "abort_multipart": 0,
            "delete": 0,
        }
        self.bytes_fetched = 0
        self.bytes_written = 0
        self.uploads: dict[str, tuple[str, str, dict[int, bytes]]] = {}  # id -> bucket, key, parts
        self._upload_metadata: dict[str, dict[str, str]] = {}
        self._next_upload = 0

    def put_blocking(
        self, bucket: str, key: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> ObjectInfo:
        info = ObjectInfo(key, len(data), hashlib.md5(data).hexdigest(), time.time())  # noqa: S324
        self.objects[(bucket, key)] = (data, info)
        self.metadata[(bucket, key)] = {k.lower(): v for k, v in (metadata or {}).items()}
        return info

    async def list_prefix(
        self,
        creds: Credentials,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None = "/",
        start_after: str | None = None,
    ) -> Listing:
        self.calls["list"] += 1
        objects: list[ObjectInfo] = []
        prefixes: set[str] = set()
        for (b, key), (_, info) in sorted(self.objects.items()):
            if b != bucket or not key.startswith(prefix):
                continue
            if start_after is not None and key <= start_after:
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
            raise NoSuchKeyError(key) from None

    async def any_under(self, creds: Credentials, bucket: str, prefix: str) -> bool:
        self.calls["list"] += 1
        return any(b == bucket and key.startswith(prefix) for b, key in self.objects)

    async def head_object(self, creds: Credentials, bucket: str, key: str) -> ObjectHead:
        info = await self.head(creds, bucket, key)
        return ObjectHead(info, dict(self.metadata.get((bucket, key), {})))

    async def get_object(
        self, creds: Credentials, bucket: str, key: str, *, etag: str | None = None
    ) -> tuple[bytes, ObjectHead]:
        """Through ``get_range`` (so that a subclass's reads see it), then the metadata."""
        size = self.objects[(bucket, key)][1].size if (bucket, key) in self.objects else 0
        data = await self.get_range(creds, bucket, key, 0, max(size, 1), etag=etag)
        info = self.objects[(bucket, key)][1]
        return data, ObjectHead(info, dict(self.metadata.get((bucket, key), {})))

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
            raise NoSuchKeyError(key) from None
        if etag is not None and etag != info.etag:
            raise StaleObjectError(key)
        chunk = data[start:end]
        self.bytes_fetched += len(chunk)
        return chunk

    async def put_object(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self.calls["put"] += 1
        self.bytes_written += len(data)
        return self.put_blocking(bucket, key, bytes(data), metadata).etag

    async def create_multipart(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self.calls["create_multipart"] += 1
        self._next_upload += 1
        upload_id = f"upload-{self._next_upload}"
        self.uploads[upload_id] = (bucket, key, {})
        self._upload_metadata[upload_id] = {k.lower(): v for k, v in (metadata or {}).items()}
        return upload_id

    async def upload_part(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        number: int,
        data: bytes,
    ) -> str:
        self.calls["upload_part"] += 1
        try:
            upload_bucket, upload_key, parts = self.uploads[upload_id]
        except KeyError:
            raise NoSuchKeyError(f"no upload {upload_id}") from None
        if (upload_bucket, upload_key) != (bucket, key):
            raise BlobError(f"upload {upload_id} is for another key")
        parts[number] = bytes(data)
        self.bytes_written += len(data)
        return hashlib.md5(data).hexdigest()  # noqa: S324

    async def complete_multipart(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
    ) -> str:
        self.calls["complete_multipart"] += 1
        try:
            _, _, sent = self.uploads.pop(upload_id)
        except KeyError:
            raise NoSuchKeyError(f"no upload {upload_id}") from None
        bodies = []
        for number, etag in parts:
            body = sent.get(number)
            if body is None or hashlib.md5(body).hexdigest() != etag:  # noqa: S324
                raise BlobError(f"part {number} of upload {upload_id} is missing or differs")
            bodies.append(body)
        data = b"".join(bodies)
        etag = multipart_etag([hashlib.md5(b).digest() for b in bodies])  # noqa: S324
        self.objects[(bucket, key)] = (data, ObjectInfo(key, len(data), etag, time.time()))
        self.metadata[(bucket, key)] = self._upload_metadata.pop(upload_id, {})
        return etag

    async def abort_multipart(
        self, creds: Credentials, bucket: str, key: str, upload_id: str
    ) -> None:
        self.calls["abort_multipart"] += 1
        self.uploads.pop(upload_id, None)

    async def list_multipart_uploads(
        self, creds: Credentials, bucket: str, prefix: str
    ) -> list[tuple[str, str]]:
        return [
            (key, upload_id)
            for upload_id, (b, key, _) in sorted(self.uploads.items())
            if b == bucket and key.startswith(prefix)
        ]

    async def delete(self, creds: Credentials, bucket: str, key: str) -> None:
        self.calls["delete"] += 1
        self.objects.pop((bucket, key), None)
        self.metadata.pop((bucket, key), None)
