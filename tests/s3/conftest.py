"""The one SeaweedFS of the S3 tests (session scope) and each module's ``real_s3`` view of it.

It skips when SeaweedFS is not available, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import concurrent.futures
import random
from collections.abc import Iterator

import pytest

from provenafs.api.models import Credentials
from provenafs.storage.s3 import S3BlobStore
from tests.conftest import IN_CI
from tests.s3.support import READS_OTHER, READS_PREFIX, WRITES_OTHER, RealS3, Seaweed


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    try:
        from provenafs.server.objects import ObjectStore
        from provenafs.server.seaweed import SeaweedServer, find_weed

        find_weed()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"SeaweedFS tests must run under CI=true: {exc}")
        pytest.skip(f"needs the local store's SeaweedFS: {exc}")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    admin = server.start()
    try:
        objects = ObjectStore(admin)
        # what the read tests find: a listing past one page, a big object, an empty folder,
        # and other datasets' objects their credentials must not reach
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda n: objects.put_object(
                        f"{READS_PREFIX}many/{n:05d}.txt", str(n).encode()
                    ),
                    range(1005),
                )
            )
        objects.put_object(READS_PREFIX + "big.bin", random.Random(1).randbytes(3 << 20))
        objects.put_object(READS_PREFIX + "empty-dir/", b"")
        objects.put_object(READS_OTHER + "secret.bin", b"other dataset")
        objects.put_object(WRITES_OTHER + "theirs.txt", b"another dataset's file")

        def mint(prefix: str, write: bool) -> Credentials:
            sts = objects.mint_credentials(prefix, write=write, session_name="test")
            return Credentials(
                sts.access_key_id, sts.secret_access_key, sts.session_token, sts.expiration
            )

        yield Seaweed(S3BlobStore(admin.endpoint_url, admin.region), objects, admin.bucket, mint)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def real_s3(request: pytest.FixtureRequest, seaweed: Seaweed) -> RealS3:
    """Credentials of the test module's ``PREFIX`` (read and write) and ``OTHER`` (read)."""
    return RealS3.for_prefixes(seaweed, request.module.PREFIX, request.module.OTHER)
