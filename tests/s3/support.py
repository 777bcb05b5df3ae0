"""``RealS3``: one SeaweedFS for the S3 tests, with STS credentials scoped like Provena's.

Each test module works under its own dataset prefixes and mints credentials for them with
``RealS3.for_prefixes``; nothing a module writes is under another module's prefixes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from provenafs.api.models import Credentials
from provenafs.storage.s3 import S3BlobStore

__all__ = ["READS_OTHER", "READS_PREFIX", "WRITES_OTHER", "WRITES_PREFIX", "RealS3", "Seaweed"]

READS_PREFIX = "datasets/10378-1-1/"
READS_OTHER = "datasets/10378-1-2/"
WRITES_PREFIX = "datasets/10378-1-7/"
WRITES_OTHER = "datasets/10378-1-8/"


@dataclasses.dataclass(frozen=True)
class Seaweed:
    """The running server: a store of the mount's, the admin view, and credential minting."""

    store: S3BlobStore
    admin: Any  # provenafs.server.objects.ObjectStore
    bucket: str
    mint: Callable[[str, bool], Credentials]  # (prefix, write) -> STS credentials


@dataclasses.dataclass(frozen=True)
class RealS3:
    """What a test module uses: the server, and credentials of its prefix (and of another)."""

    store: S3BlobStore
    admin: Any  # provenafs.server.objects.ObjectStore
    bucket: str
    read: Credentials
    write: Credentials
    other_read: Credentials

    @classmethod
    def for_prefixes(cls, seaweed: Seaweed, prefix: str, other: str) -> RealS3:
        return cls(
            seaweed.store,
            seaweed.admin,
            seaweed.bucket,
            read=seaweed.mint(prefix, False),
            write=seaweed.mint(prefix, True),
            other_read=seaweed.mint(other, False),
        )
