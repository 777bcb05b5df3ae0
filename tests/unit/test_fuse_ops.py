"""The pyfuse3 adapter without a kernel: errno mapping, negative lookups, names, reply records.

Handlers are called directly (async tests under pytest-trio) against a fake core; pyfuse3's reply
types are plain objects, so nothing here needs /dev/fuse.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import pyfuse3
import pytest
import trio

from provenafs.api import errors as api_errors
from provenafs.core.filesystem import Filesystem
from provenafs.core.types import Attributes, DirEntry, FsStats, OpenFile
from provenafs.errors import FsError
from provenafs.fuse_ops import Operations, fuse_handler, to_entry_attributes
from provenafs.storage import blobstore


def _attributes(inode: int = 7, size: int = 1000) -> Attributes:
    return Attributes(
        inode=inode,
        mode=0o100444,
        size=size,
        nlink=1,
        uid=1000,
        gid=1001,
        atime_ns=1_000_000_001,
        mtime_ns=2_000_000_002,
        ctime_ns=3_000_000_003,
        entry_timeout=60.0,
        attr_timeout=30.0,
    )


class FakeCore:
    """Answers every call with ``answer`` or raises ``failure``; remembers the arguments."""

    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.entries: list[DirEntry] = []
        self.forget_failure: BaseException | None = None

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.failure is not None:
            raise self.failure

    async def lookup(self, parent: int, name: str, ctx: object) -> Attributes:
        self._enter("lookup", parent, name)
        return _attributes()

    async def getattr(self, inode: int, ctx: object) -> Attributes:
        self._enter("getattr", inode)
        return _attributes(inode)

    async def forget(self, inode: int, nlookup: int) -> None:
        self.calls.append(("forget", (inode, nlookup)))
        if self.forget_failure is not None:
            raise self.forget_failure

    async def opendir(self, inode: int, ctx: object) -> int:
        self._enter("opendir", inode)
        return 11

    def directory_entries(self, fh: int, offset: int) -> Iterator[DirEntry]:
        self._enter("directory_entries", fh, offset)
        for entry in self.entries:
            if entry.next_offset > offset:
                self.calls.append(("produced", (entry.name,)))
                yield entry

    def entry_not_sent(self, entry: DirEntry) -> None:
        self.calls.append(("entry_not_sent", (entry.name,)))

    async def open(self, inode: int, flags: int, ctx: object) -> OpenFile:
        self._enter("open", inode, flags)
        return OpenFile(fh=21, keep_cache=True, direct_io=False)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        self._enter("read", fh, offset, size)
        await trio.lowlevel.checkpoint()
        return b"x" * size

    async def readlink(self, inode: int, ctx: object) -> str:
        self._enter("readlink", inode)
        return "../10378.1/caf\u00e9"

    async def getxattr(self, inode: int, name: str, ctx: object) -> bytes:
        self._enter("getxattr", inode, name)
        return b"value"

    async def listxattr(self, inode: int, ctx: object) -> list[str]:
        self._enter("listxattr", inode)
        return ["user.provena.handle", "user.s3.etag"]

    async def access(self, inode: int, mode: int, ctx: object) -> None:
        self._enter("access", inode, mode)

    async def statfs(self) -> FsStats:
        self._enter("statfs")
        return FsStats(
            block_size=4096, blocks=10, blocks_free=0, files=5, files_free=0, name_max=255
        )

    async def unlink(self, parent: int, name: str, ctx: object) -> None:
        self._enter("unlink", parent, name)
        raise FsError(errno.EROFS)


async def _run(call: Callable[[], Any]) -> Any:
    async def main() -> Any:
        return await call()

    return await main()


def _ops(core: FakeCore, negative_timeout: float = 2.5) -> Operations:
    return Operations(cast(Filesystem, core), negative_timeout=negative_timeout)


CTX = pyfuse3.RequestContext()

FAILURES: list[tuple[BaseException, int]] = [
    (FsError(errno.ENOENT), errno.ENOENT),
    (FsError(errno.EACCES, "no dataset-data-read"), errno.EACCES),
    (FsError(errno.EROFS), errno.EROFS),
    (FsError(errno.ENODATA), errno.ENODATA),
    (api_errors.NotFoundError("unknown handle"), errno.ENOENT),
    (api_errors.PermissionDeniedError("missing role"), errno.EACCES),
    (api_errors.AuthenticationError("bad token"), errno.EACCES),
    (api_errors.UnavailableError("data store down"), errno.EIO),
    (blobstore.NoSuchKeyError("k"), errno.ENOENT),
    (blobstore.AccessDeniedError("k"), errno.EACCES),
    (blobstore.StaleObjectError("k"), errno.ESTALE),
    (blobstore.BlobUnavailableError("k"), errno.EIO),
    (RuntimeError("a bug"), errno.EIO),
    (KeyError("a bug"), errno.EIO),
    (ExceptionGroup("bugs", [ValueError("one")]), errno.EIO),
]


@pytest.mark.parametrize(("failure", "expected"), FAILURES, ids=lambda v: repr(v)[:40])
async def test_every_exception_becomes_fuse_error_with_its_errno(
    failure: BaseException, expected: int
) -> None:
    core = FakeCore()
    core.failure = failure
    ops = _ops(core)
    handlers: list[Callable[[], Any]] = [
        lambda: ops.getattr(7, CTX),
        lambda: ops.opendir(7, CTX),
        lambda: ops.open(7, os.O_RDONLY, CTX),
        lambda: ops.read(21, 0, 10),
        lambda: ops.readlink(7, CTX),
        lambda: ops.getxattr(7, b"user.provena.handle", CTX),
        lambda: ops.listxattr(7, CTX),
        lambda: ops.statfs(CTX),
    ]
    for handler in handlers:
        with pytest.raises(pyfuse3.FUSEError) as caught:
            await _run(handler)
        assert caught.value.errno == expected
    assert len(core.calls) == len(handlers)


async def test_lookup_enoent_is_a_negative_entry_the_kernel_caches() -> None:
    core = FakeCore()
    core.failure = api_errors.NotFoundError("no such handle")
    entry = await _run(lambda: _ops(core, negative_timeout=2.5).lookup(1, b"10378.1", CTX))
    assert entry.st_ino == 0
    assert entry.entry_timeout == 2.5


async def test_lookup_other_failures_are_errors_not_negative_entries() -> None:
    core = FakeCore()
    core.failure = FsError(errno.EACCES)
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await _run(lambda: _ops(core).lookup(1, b"private", CTX))
    assert caught.value.errno == errno.EACCES


async def test_names_decode_with_surrogateescape_and_too_long_names_never_reach_the_core() -> None:
    core = FakeCore()
    ops = _ops(core)
    await _run(lambda: ops.lookup(1, "caf\u00e9".encode(), CTX))
    await _run(lambda: ops.lookup(1, b"bad\xff", CTX))
    assert [args[1] for _, args in core.calls] == ["caf\u00e9", "bad\udcff"]
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await _run(lambda: ops.lookup(1, b"a" * 256, CTX))
    assert caught.value.errno == errno.ENAMETOOLONG
    assert len(core.calls) == 2


async def test_fuse_errors_raised_by_handlers_pass_through_unchanged() -> None:
    @fuse_handler
    async def handler() -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    with pytest.raises(pyfuse3.FUSEError) as caught:
        await _run(handler)
    assert caught.value.errno == errno.ENOSYS


async def test_cancellation_is_never_turned_into_an_errno() -> None:
    core = FakeCore()
    ops = _ops(core)

    async def main() -> bool:
        with trio.CancelScope() as scope:
            scope.cancel()
            await ops.read(21, 0, 10)
        return scope.cancelled_caught

    assert await main() is True


async def test_forget_swallows_everything() -> None:
    core = FakeCore()
    core.forget_failure = RuntimeError("bug in forget")
    await _run(lambda: _ops(core).forget([(5, 1), (6, 2)]))
    assert [args for name, args in core.calls if name == "forget"] == [(5, 1), (6, 2)]


async def test_failures_are_logged_once_quietly_or_loudly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="provenafs.fuse_ops")
    core = FakeCore()
    ops = _ops(core)
    core.failure = FsError(errno.ENOENT)
    with pytest.raises(pyfuse3.FUSEError):
        await _run(lambda: ops.getattr(7, CTX))
    core.failure = api_errors.UnavailableError("data store down")
    with pytest.raises(pyfuse3.FUSEError):
        await _run(lambda: ops.read(21, 0, 10))
    records = [r for r in caplog.records if r.name == "provenafs.fuse_ops"]
    assert [r.levelno for r in records] == [logging.DEBUG, logging.ERROR]
    assert "ENOENT" in records[0].getMessage()
    assert "EIO" in records[1].getMessage()
    assert "data store down" in records[1].getMessage()


async def test_replies_carry_the_core_attributes() -> None:
    core = FakeCore()
    ops = _ops(core)
    entry = await _run(lambda: ops.getattr(7, CTX))
    assert (entry.st_ino, entry.st_mode, entry.st_size, entry.st_nlink) == (7, 0o100444, 1000, 1)
    assert (entry.st_uid, entry.st_gid) == (1000, 1001)
    assert (entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns) == (
        1_000_000_001,
        2_000_000_002,
        3_000_000_003,
    )
    assert (entry.entry_timeout, entry.attr_timeout) == (60.0, 30.0)
    assert entry.st_blocks == 2  # 1000 bytes in 512-byte units, rounded up
    info = await _run(lambda: ops.open(7, os.O_RDONLY, CTX))
    assert (info.fh, info.keep_cache, info.direct_io) == (21, True, False)
    assert await _run(lambda: ops.readlink(7, CTX)) == "../10378.1/caf\u00e9".encode()
    assert await _run(lambda: ops.listxattr(7, CTX)) == [b"user.provena.handle", b"user.s3.etag"]
    stats = await _run(lambda: ops.statfs(CTX))
    assert (stats.f_bsize, stats.f_blocks, stats.f_files, stats.f_namemax) == (4096, 10, 5, 255)
    assert await _run(lambda: ops.access(7, os.R_OK, CTX)) is True
    core.failure = FsError(errno.EACCES)
    assert await _run(lambda: ops.access(7, os.R_OK, CTX)) is False


async def test_write_handlers_answer_the_core_errno() -> None:
    core = FakeCore()
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await _run(lambda: _ops(core).unlink(1, b"file", CTX))
    assert caught.value.errno == errno.EROFS


async def test_readdir_stops_when_the_kernel_buffer_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = FakeCore()
    core.entries = [
        DirEntry(name=name, attributes=_attributes(10 + i), next_offset=i + 1)
        for i, name in enumerate(["a", "caf\u00e9", "c"])
    ]
    replies: list[tuple[bytes, int, int]] = []

    def readdir_reply(token: object, name: bytes, attr: Any, next_id: int) -> bool:
        replies.append((name, attr.st_ino, next_id))
        return len(replies) < 2

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    await _run(lambda: _ops(core).readdir(11, 0, cast(pyfuse3.ReaddirToken, object())))
    assert replies == [(b"a", 10, 1), ("caf\u00e9".encode(), 11, 2)]
    # the entry that did not fit goes back to the core (its lookup did not happen), and no
    # entry after it is produced (each produced entry counts as a kernel lookup)
    assert core.calls[1:] == [
        ("produced", ("a",)),
        ("produced", ("caf\u00e9",)),
        ("entry_not_sent", ("caf\u00e9",)),
    ]


def test_entry_attributes_of_a_zero_byte_file() -> None:
    entry = to_entry_attributes(_attributes(size=0))
    assert (entry.st_size, entry.st_blocks) == (0, 0)


@pytest.mark.parametrize(
    "name",
    [b"security.selinux", b"system.posix_acl_access", b"system.posix_acl_default", b"trusted.x"],
)
async def test_xattrs_outside_the_user_namespace_are_unsupported_without_the_core(
    name: bytes,
) -> None:
    core = FakeCore()
    ops = _ops(core)
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await _run(lambda: ops.getxattr(7, name, CTX))
    assert caught.value.errno == errno.EOPNOTSUPP
    assert core.calls == []
    assert await _run(lambda: ops.getxattr(7, b"user.provena.handle", CTX)) == b"value"
    assert core.calls == [("getxattr", (7, "user.provena.handle"))]
