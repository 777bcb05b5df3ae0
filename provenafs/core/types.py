"""The core's vocabulary: reply records, the Protocols it is wired with, and its constants.

The records (``Caller``, ``Attributes``, ``DirEntry``, ``OpenFile``, ``FsStats``) are what the
FUSE adapter translates into pyfuse3's reply types; the Protocols name the one method set the
core needs from each collaborator the daemon wires in (the data store client, a file's reader,
the kernel notifier, the in-place pusher), so the core imports no httpx, boto3 or pyfuse3.
This module holds no behaviour.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from provenafs.api.models import DatasetRecord
from provenafs.core.inodes import NodeKind
from provenafs.storage.blobstore import ObjectInfo

__all__ = [
    "COPY_PART_SIZE",
    "DOT_NAMES",
    "LONG_TIMEOUT",
    "NAME_MAX",
    "READDIR_BATCH",
    "SHORT_TIMEOUT",
    "Attributes",
    "Caller",
    "DataStoreApi",
    "DirEntry",
    "FileReader",
    "FsStats",
    "InPlacePublisher",
    "KernelCacheNotifier",
    "OpenFile",
    "ReaderFactory",
]

# Kernel cache lifetimes (seconds). Inside a dataset version nothing changes but through this
# mount's writes, which invalidate what they change; records, links and listings of datasets
# change under us, so the kernel asks again soon.
LONG_TIMEOUT = 300.0
SHORT_TIMEOUT = 1.0
READDIR_BATCH = 20  # entries per ``Filesystem.readdir`` answer (the adapter takes as many as fit)
DOT_NAMES = (".", "..")  # the first two entries of every directory listing
COPY_PART_SIZE = 8 << 20  # copy-on-write fetches a base file into the draft in parts this big
NAME_MAX = 255  # bytes in one path component, as on every Linux filesystem

DIR_MODE = 0o555
NO_DATA_DIR_MODE = 0o111
FILE_MODE = 0o444
LINK_MODE = 0o777
DIR_MODE_WRITABLE = 0o755
FILE_MODE_WRITABLE = 0o644
DATASET_DIR_KINDS = (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR)
DATASET_KINDS = (
    NodeKind.DATASET_DIR,
    NodeKind.DATASET_SUBDIR,
    NodeKind.DATASET_FILE,
    NodeKind.DATASET_LINK,
)


@dataclasses.dataclass(frozen=True)
class Caller:
    """The process a request comes from (as the kernel reports it)."""

    uid: int
    gid: int
    pid: int


@dataclasses.dataclass(frozen=True)
class Attributes:
    inode: int
    mode: int  # includes the file type bits (stat.S_IFDIR, ...)
    size: int
    nlink: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    entry_timeout: float
    attr_timeout: float

    def with_inode(self, inode: int) -> Attributes:
        """These attributes for inode *inode* (``dataclasses.replace`` is 5x slower, and
        readdir of a big prefix does this for every entry)."""
        return Attributes(
            inode,
            self.mode,
            self.size,
            self.nlink,
            self.uid,
            self.gid,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            self.entry_timeout,
            self.attr_timeout,
        )


@dataclasses.dataclass(frozen=True)
class DirEntry:
    name: str
    attributes: Attributes
    next_offset: int


@dataclasses.dataclass(frozen=True)
class OpenFile:
    fh: int
    keep_cache: bool
    direct_io: bool


@dataclasses.dataclass(frozen=True)
class FsStats:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    files_free: int
    name_max: int


class FileReader(Protocol):
    """What an open dataset file needs from ``provenafs.read.reader.ObjectReader``."""

    async def read(self, offset: int, size: int) -> bytes: ...

    async def close(self) -> None: ...


class DataStoreApi(Protocol):
    """The part of ``DataStoreClient`` the filesystem uses (a protocol: no httpx import here)."""

    async def fetch_dataset(self, handle: str) -> DatasetRecord: ...

    async def list_all(
        self,
        page_size: int = 100,
        on_page: Callable[[Sequence[DatasetRecord]], None] | None = None,
    ) -> list[DatasetRecord]: ...

    async def presigned_url(self, handle: str, file_path: str, expires_in: int = 3600) -> str: ...

    def statistics(self) -> Mapping[str, int]: ...


ReaderFactory = Callable[[DatasetRecord, ObjectInfo, int | None], FileReader]


class KernelCacheNotifier(Protocol):
    """Drops kernel cache entries (``fuse_ops.KernelNotifier`` is the real one)."""

    async def invalidate_entry(self, parent_inode: int, name: str) -> None: ...

    async def invalidate_inode(self, inode: int, *, attr_only: bool = False) -> None: ...

    async def store(self, inode: int, offset: int, data: bytes) -> None:
        """Put ``data`` into the kernel's page cache of ``inode`` at ``offset``."""


class InPlacePublisher(Protocol):
    """What ``-o writes=in-place`` pushes through (``PublishScheduler`` provides it)."""

    async def commit(self, handle: str) -> str: ...


def is_writing(flags: int) -> bool:
    """Whether ``open`` flags ask for a change (write access, truncation or appending)."""
    return flags & os.O_ACCMODE != os.O_RDONLY or bool(flags & (os.O_TRUNC | os.O_APPEND))


def seconds_to_ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def parent_path(path: str) -> tuple[str, str]:
    """``("raw/sub", "a.csv")`` for ``"raw/sub/a.csv"``; ``("", "a.csv")`` at the root."""
    parent, _, name = path.rpartition("/")
    return parent, name
