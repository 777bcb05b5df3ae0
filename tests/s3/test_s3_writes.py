"""S3BlobStore's write operations on a real SeaweedFS, with STS credentials scoped like Provena's.

PUT, the multipart primitives (with the ETag S3 gives the joined object: the publisher checks
landed objects against it), listing and aborting unfinished uploads, deletes, the scope of write
credentials, and ``MemoryBlobStore`` agreeing with the real server on every ETag.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from provenafs.storage.blobstore import AccessDeniedError, MemoryBlobStore, multipart_etag
from tests.s3.support import WRITES_OTHER, WRITES_PREFIX, RealS3

PREFIX = WRITES_PREFIX  # this module's dataset, and another's (tests/s3/conftest.py)
OTHER = WRITES_OTHER
PART = 5 << 20  # the smallest part S3 accepts (but the last)


@pytest.mark.s3
async def test_put_answers_the_md5_etag_and_delete_removes(real_s3: RealS3) -> None:
    data = b"hello, new version\n"
    key = PREFIX + "put/hello.txt"

    s3 = real_s3.store
    etag = await s3.put_object(real_s3.write, real_s3.bucket, key, data)
    assert etag == hashlib.md5(data).hexdigest()  # noqa: S324
    assert await s3.put_object(real_s3.write, real_s3.bucket, PREFIX + "put/dir/", b"")
    listing = await s3.list_prefix(real_s3.read, real_s3.bucket, PREFIX + "put/", delimiter=None)
    assert {(o.key, o.size, o.etag) for o in listing.objects} == {
        (key, len(data), etag),
        (PREFIX + "put/dir/", 0, hashlib.md5(b"").hexdigest()),  # noqa: S324
    }
    await s3.delete(real_s3.write, real_s3.bucket, key)
    await s3.delete(real_s3.write, real_s3.bucket, key)  # absent: still fine
    listing = await s3.list_prefix(real_s3.read, real_s3.bucket, PREFIX + "put/", delimiter=None)
    assert [o.key for o in listing.objects] == [PREFIX + "put/dir/"]


@pytest.mark.s3
async def test_multipart_object_has_the_s3_multipart_etag(real_s3: RealS3) -> None:
    rng = random.Random(3)
    parts = [rng.randbytes(PART), rng.randbytes(PART), rng.randbytes(1234)]
    key = PREFIX + "multi/big.bin"

    s3 = real_s3.store
    upload = await s3.create_multipart(real_s3.write, real_s3.bucket, key)
    etags = []
    for number, body in enumerate(parts, 1):
        etag = await s3.upload_part(
            real_s3.write, real_s3.bucket, key, upload, number=number, data=body
        )
        assert etag == hashlib.md5(body).hexdigest()  # noqa: S324
        etags.append((number, etag))
    joined = await s3.complete_multipart(real_s3.write, real_s3.bucket, key, upload, etags)
    expected = multipart_etag([hashlib.md5(b).digest() for b in parts])  # noqa: S324
    assert joined == expected
    info = await s3.head(real_s3.read, real_s3.bucket, key)
    assert (info.size, info.etag) == (sum(map(len, parts)), expected)
    body = await s3.get_range(real_s3.read, real_s3.bucket, key, 0, info.size)
    assert body == b"".join(parts)

    # the in-memory fake gives the same ETags for the same bytes
    memory = MemoryBlobStore()
    fake_upload = await memory.create_multipart(real_s3.write, "b", key)
    fake_etags = [
        (n, await memory.upload_part(real_s3.write, "b", key, fake_upload, number=n, data=b))
        for n, b in enumerate(parts, 1)
    ]
    assert fake_etags == etags
    fake = await memory.complete_multipart(real_s3.write, "b", key, fake_upload, fake_etags)
    assert fake == expected


@pytest.mark.s3
async def test_unfinished_uploads_are_listed_and_aborted(real_s3: RealS3) -> None:
    key = PREFIX + "unfinished/part.bin"

    s3 = real_s3.store
    upload = await s3.create_multipart(real_s3.write, real_s3.bucket, key)
    await s3.upload_part(real_s3.write, real_s3.bucket, key, upload, number=1, data=b"x" * PART)
    found = await s3.list_multipart_uploads(real_s3.write, real_s3.bucket, PREFIX + "unfinished/")
    assert found == [(key, upload)]
    await s3.abort_multipart(real_s3.write, real_s3.bucket, key, upload)
    assert (
        await s3.list_multipart_uploads(real_s3.write, real_s3.bucket, PREFIX + "unfinished/") == []
    )
    listing = await s3.list_prefix(real_s3.read, real_s3.bucket, PREFIX + "unfinished/")
    assert listing.objects == ()


@pytest.mark.s3
async def test_write_credentials_stay_in_their_prefix(real_s3: RealS3) -> None:
    s3 = real_s3.store
    with pytest.raises(AccessDeniedError):
        await s3.put_object(real_s3.write, real_s3.bucket, OTHER + "intruder.txt", b"no")
    with pytest.raises(AccessDeniedError):
        await s3.create_multipart(real_s3.write, real_s3.bucket, OTHER + "intruder.bin")
    with pytest.raises(AccessDeniedError):
        await s3.put_object(real_s3.read, real_s3.bucket, PREFIX + "read-only.txt", b"no")
    with pytest.raises(AccessDeniedError):
        await s3.delete(real_s3.write, real_s3.bucket, OTHER + "theirs.txt")
    assert real_s3.admin.get_object(OTHER + "theirs.txt") == b"another dataset's file"
