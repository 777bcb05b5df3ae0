"""S3BlobStore's reads against a real SeaweedFS with STS credentials scoped like Provena's:
listings past one page, odd key names, ranged GETs with If-Match, the scope of read credentials,
a reader renewing refused credentials, multipart primitives and their ETags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
import trio
import trio.lowlevel

from provenafs.api.models import Credentials
from provenafs.storage.blobstore import (
    AccessDeniedError,
    ExpiredCredentialsError,
    NoSuchKeyError,
    StaleObjectError,
)
from tests.s3.support import READS_OTHER, READS_PREFIX, RealS3

PREFIX = READS_PREFIX  # this module's dataset, and another's (tests/s3/conftest.py)
OTHER = READS_OTHER


@pytest.mark.s3
async def test_real_listing_pages_past_1000_keys(real_s3: RealS3) -> None:
    top = await real_s3.store.list_prefix(real_s3.read, real_s3.bucket, PREFIX)
    assert {o.key for o in top.objects} == {PREFIX + "big.bin"}
    assert set(top.prefixes) == {PREFIX + "many/", PREFIX + "empty-dir/"}
    many = await real_s3.store.list_prefix(real_s3.read, real_s3.bucket, PREFIX + "many/")
    assert len(many.objects) == 1005
    assert many.objects[1004].key == f"{PREFIX}many/01004.txt"
    assert all(o.etag and '"' not in o.etag for o in many.objects)
    flat = await real_s3.store.list_prefix(real_s3.read, real_s3.bucket, PREFIX, delimiter=None)
    assert len(flat.objects) == 1007 and flat.prefixes == ()
    tree = await real_s3.store.list_tree(real_s3.read, real_s3.bucket, PREFIX, max_keys=2000)
    assert tree.objects == flat.objects and tree.prefixes == () and not tree.truncated
    for too_few in (1006, 1000, 999, 5):  # a page shows there are more: stop, marked truncated
        part = await real_s3.store.list_tree(real_s3.read, real_s3.bucket, PREFIX, max_keys=too_few)
        assert part.truncated, too_few
        assert part.objects == flat.objects[: len(part.objects)], too_few  # whole pages, kept
    exact = await real_s3.store.list_tree(real_s3.read, real_s3.bucket, PREFIX, max_keys=1007)
    assert len(exact.objects) == 1007 and not exact.truncated


ODD_NAMES = ["a b.csv", "two  spaces .txt", "ünïcødé 日本.txt", "a+b=c~d.bin", "odd !'()*@$&,;%.x"]


@pytest.mark.s3
async def test_real_listing_and_reading_of_odd_key_names(real_s3: RealS3) -> None:
    folder = PREFIX + "odd/"

    for name in ODD_NAMES:
        await real_s3.store.put_object(real_s3.write, real_s3.bucket, folder + name, name.encode())
    await real_s3.store.put_object(real_s3.write, real_s3.bucket, folder + "sub dir/x", b"")
    listing = await real_s3.store.list_prefix(real_s3.read, real_s3.bucket, folder)
    assert sorted(o.key for o in listing.objects) == sorted(folder + n for n in ODD_NAMES)
    assert listing.prefixes == (folder + "sub dir/",)
    for info in listing.objects:
        data = await real_s3.store.get_range(
            real_s3.read, real_s3.bucket, info.key, 0, info.size, etag=info.etag
        )
        assert data == info.key.removeprefix(folder).encode()


@pytest.mark.s3
async def test_real_ranged_reads_and_if_match(real_s3: RealS3) -> None:
    data = random.Random(1).randbytes(3 << 20)
    key = PREFIX + "big.bin"

    s3 = real_s3.store
    info = await s3.head(real_s3.read, real_s3.bucket, key)
    assert info.size == len(data)
    for start, end in [(0, 1), (1000, 1 << 20), (len(data) - 10, len(data) + 100)]:
        got = await s3.get_range(real_s3.read, real_s3.bucket, key, start, end, etag=info.etag)
        assert got == data[start:end]
    assert await s3.get_range(real_s3.read, real_s3.bucket, key, len(data), len(data) + 5) == b""
    with pytest.raises(StaleObjectError):
        await s3.get_range(real_s3.read, real_s3.bucket, key, 0, 10, etag="0" * 32)
    with pytest.raises(NoSuchKeyError):
        await s3.head(real_s3.read, real_s3.bucket, PREFIX + "absent")
    with pytest.raises(NoSuchKeyError):
        await s3.get_range(real_s3.read, real_s3.bucket, PREFIX + "absent", 0, 10)


@pytest.mark.s3
async def test_real_scope_and_forged_credentials(real_s3: RealS3) -> None:
    s3 = real_s3.store
    with pytest.raises(AccessDeniedError):
        await s3.get_range(real_s3.read, real_s3.bucket, OTHER + "secret.bin", 0, 5)
    with pytest.raises(AccessDeniedError):
        await s3.put_object(real_s3.read, real_s3.bucket, PREFIX + "nope.txt", b"x")
    forged = dataclasses.replace(real_s3.read, session_token=real_s3.read.session_token + "x")
    with pytest.raises((ExpiredCredentialsError, AccessDeniedError)) as info:
        await s3.get_range(forged, real_s3.bucket, PREFIX + "big.bin", 0, 5)
    assert forged.session_token not in str(info.value)
    wrong_secret = dataclasses.replace(real_s3.read, secret_access_key="wrong")
    with pytest.raises(ExpiredCredentialsError):
        await s3.get_range(wrong_secret, real_s3.bucket, PREFIX + "big.bin", 0, 5)
    assert (
        await s3.get_range(real_s3.other_read, real_s3.bucket, OTHER + "secret.bin", 0, 5)
        == b"other"
    )


@pytest.mark.s3
async def test_real_writes_put_multipart_delete(real_s3: RealS3) -> None:
    big = random.Random(2).randbytes(11 << 20)

    s3 = real_s3.store
    w, bucket = real_s3.write, real_s3.bucket
    etag = await s3.put_object(w, bucket, PREFIX + "new/a.txt", b"hello")
    info = await s3.head(w, bucket, PREFIX + "new/a.txt")
    assert info.etag == etag and info.size == 5
    upload = await s3.create_multipart(w, bucket, PREFIX + "new/big.bin")
    parts = [
        (
            n,
            await s3.upload_part(w, bucket, PREFIX + "new/big.bin", upload, number=n, data=part),
        )
        for n, part in enumerate((big[: 5 << 20], big[5 << 20 :]), start=1)
    ]
    await s3.complete_multipart(w, bucket, PREFIX + "new/big.bin", upload, parts)
    await s3.put_object(w, bucket, PREFIX + "new/small.txt", b"small file")
    assert real_s3.admin.get_object(PREFIX + "new/big.bin") == big
    multipart = await s3.head(w, bucket, PREFIX + "new/big.bin")
    assert multipart.size == len(big)
    # a multipart ETag ("<md5>-<parts>") works as If-Match too
    tail = await s3.get_range(
        w, bucket, PREFIX + "new/big.bin", len(big) - 100, len(big), etag=multipart.etag
    )
    assert tail == big[-100:]
    assert real_s3.admin.get_object(PREFIX + "new/small.txt") == b"small file"
    await s3.delete(w, bucket, PREFIX + "new/a.txt")
    with pytest.raises(NoSuchKeyError):
        await s3.head(w, bucket, PREFIX + "new/a.txt")
    with pytest.raises(AccessDeniedError):
        await s3.put_object(w, bucket, OTHER + "intrude.txt", b"x")


@pytest.mark.s3
async def test_real_reader_streams_and_renews_refused_credentials(real_s3: RealS3) -> None:
    from provenafs.cache.block_cache import BlockCache
    from provenafs.read.reader import ObjectReader, PrefetchBudget
    from provenafs.storage.credentials import CredentialBroker

    data = random.Random(1).randbytes(3 << 20)
    key = PREFIX + "big.bin"

    class Client:
        """Hands out forged credentials first, as if they had been revoked, then real ones."""

        calls = 0

        async def read_credentials(self, handle: str) -> Credentials:
            Client.calls += 1
            if Client.calls == 1:
                return dataclasses.replace(real_s3.read, secret_access_key="revoked")
            return real_s3.read

        async def write_credentials(self, handle: str) -> Credentials:
            raise AssertionError("not used")

    etag = (await real_s3.store.head(real_s3.read, real_s3.bucket, key)).etag
    cache = BlockCache(1 << 20, block_size=256 << 10)
    budget = PrefetchBudget(2 << 20)
    async with trio.open_nursery() as nursery:
        reader = ObjectReader(
            real_s3.store,
            CredentialBroker(Client()),
            cache,
            handle="10378.1/1",
            bucket=real_s3.bucket,
            key=key,
            size=len(data),
            etag=etag,
            budget=budget,
            nursery=nursery,
            max_window=2 << 20,
        )
        out = bytearray()
        for offset in range(0, len(data), 128 << 10):
            out += await reader.read(offset, 128 << 10)
        assert bytes(out) == data
        rng = random.Random(3)
        for _ in range(50):
            offset, size = rng.randrange(len(data)), rng.randrange(1, 300_000)
            assert await reader.read(offset, size) == data[offset : offset + size]
        assert reader.statistics()["credential_retries"] == 1
        await reader.close()
    assert Client.calls == 2
    assert budget.in_use == 0
    assert budget.statistics()["peak"] <= 2 << 20


@pytest.mark.s3
async def test_real_multipart_primitives(real_s3: RealS3) -> None:
    from provenafs.storage.blobstore import multipart_etag

    parts = [random.Random(n).randbytes(5 << 20) for n in range(2)] + [b"tail"]
    key = PREFIX + "primitives/joined.bin"

    async def main() -> None:
        s3, w, bucket = real_s3.store, real_s3.write, real_s3.bucket
        upload = await s3.create_multipart(w, bucket, key)
        leftover = await s3.create_multipart(w, bucket, PREFIX + "primitives/left.bin")
        etags = [
            (n, await s3.upload_part(w, bucket, key, upload, number=n, data=part))
            for n, part in enumerate(parts, start=1)
        ]
        pending = await s3.list_multipart_uploads(w, bucket, PREFIX + "primitives/")
        assert {(key, upload), (PREFIX + "primitives/left.bin", leftover)} <= set(pending)
        etag = await s3.complete_multipart(w, bucket, key, upload, etags)
        assert etag == (await s3.head(w, bucket, key)).etag
        assert etag.endswith("-3")
        assert etag == multipart_etag([hashlib.md5(p).digest() for p in parts])  # noqa: S324
        await s3.abort_multipart(w, bucket, PREFIX + "primitives/left.bin", leftover)
        await s3.abort_multipart(w, bucket, PREFIX + "primitives/left.bin", leftover)  # again: ok
        assert await s3.list_multipart_uploads(w, bucket, PREFIX + "primitives/") == []

    await main()
    assert real_s3.admin.get_object(key) == b"".join(parts)
