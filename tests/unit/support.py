"""Helpers that drive the filesystem core the way the kernel would, shared by the unit tests.

``walk`` looks a path up component by component; ``list_dir``/``names`` list a directory to
its end; ``read_all`` reads a file to its end; ``create_file``/``write_file`` create and write
through ``create``; ``fails`` and ``raises_errno`` assert the errno a call ends with. The fakes
these run against are in ``tests.unit.fakes``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Awaitable, Iterator

import pytest

from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.core.types import DOT_NAMES, Attributes, DirEntry, OpenFile
from provenafs.errors import FsError, to_errno
from tests.unit.fakes import CALLER

__all__ = [
    "CREATE",
    "CSV",
    "DATASET",
    "create_file",
    "fails",
    "list_dir",
    "names",
    "raises_errno",
    "read_all",
    "split",
    "walk",
    "write_file",
]

DATASET = "10378.1/1001"  # the dataset the write tests change (admin, the latest version)
CSV = bytes(range(256)) * 1200  # 300 KiB: several blocks
CREATE = os.O_WRONLY | os.O_CREAT


async def walk(fs: Filesystem, path: str) -> Attributes:
    """Look up every component of *path* from the root, like the kernel does."""
    inode = ROOT_INODE
    attributes = await fs.getattr(ROOT_INODE, CALLER)
    for name in path.split("/"):
        if name:
            attributes = await fs.lookup(inode, name, CALLER)
            inode = attributes.inode
    return attributes


async def split(fs: Filesystem, path: str) -> tuple[int, str]:
    """The inode of *path*'s parent directory, and its last name."""
    parent, _, name = path.rpartition("/")
    return (await walk(fs, parent)).inode, name


async def list_dir(fs: Filesystem, path: str) -> list[DirEntry]:
    """Every entry of the directory *path* but ``.`` and ``..``, batch after batch, as ``ls``
    reads them."""
    fh = await fs.opendir((await walk(fs, path)).inode, CALLER)
    entries: list[DirEntry] = []
    offset = 0
    while batch := await fs.readdir(fh, offset):
        entries += [entry for entry in batch if entry.name not in DOT_NAMES]
        offset = batch[-1].next_offset
    await fs.releasedir(fh)
    return entries


async def names(fs: Filesystem, path: str) -> list[str]:
    return [entry.name for entry in await list_dir(fs, path)]


async def read_all(fs: Filesystem, path: str, chunk: int = 65536) -> bytes:
    """The whole file *path*, read in *chunk*-sized reads from the start."""
    opened = await fs.open((await walk(fs, path)).inode, os.O_RDONLY, CALLER)
    data = b""
    while piece := await fs.read(opened.fh, len(data), chunk):
        data += piece
    await fs.release(opened.fh)
    return data


async def create_file(fs: Filesystem, path: str, flags: int = CREATE) -> OpenFile:
    """``creat(path)`` through the core: the new file, open for writing."""
    parent, name = await split(fs, path)
    opened, _ = await fs.create(parent, name, 0o644, flags, CALLER)
    return opened


async def write_file(fs: Filesystem, path: str, data: bytes, flags: int = CREATE) -> None:
    """Create (or truncate) *path*, write *data*, close it."""
    opened = await create_file(fs, path, flags | os.O_TRUNC)
    await fs.write(opened.fh, 0, data)
    await fs.flush(opened.fh)
    await fs.release(opened.fh)


async def fails(errno_value: int, call: Awaitable[object]) -> None:
    """*call* fails on purpose (``FsError``) with *errno_value*."""
    with pytest.raises(FsError) as excinfo:
        await call
    assert excinfo.value.errno == errno_value, excinfo.value


@contextlib.contextmanager
def raises_errno(expected: int) -> Iterator[None]:
    """The block fails, and the errno the kernel would get for it (``to_errno``, as the FUSE
    adapter maps every failure) is *expected*."""
    try:
        yield
    except Exception as exc:
        got = to_errno(exc)
        assert got == expected, (
            f"{errno.errorcode.get(got)} instead of {errno.errorcode.get(expected)}: {exc!r}"
        )
    else:
        raise AssertionError(f"no error; expected {errno.errorcode.get(expected)}")
