"""The pyfuse3 adapter: kernel requests in, calls on the filesystem core out.

This is the only module that imports pyfuse3. Its job is translation and nothing else: bytes
names to ``str`` (``os.fsdecode``, surrogateescape) and back, ``RequestContext`` to ``Caller``,
the core's plain records to pyfuse3's reply types, and every exception to ``FUSEError`` through
``provenafs.errors.to_errno``. It must not hold filesystem semantics (permissions, names, caches):
those live in ``provenafs.core.filesystem``.

Every request handler carries the one decorator ``fuse_handler``: any ``Exception`` becomes a
``FUSEError`` with the errno of the one table, and is logged once (expected errnos at debug, EIO
at error with its cause). pyfuse3 ends the whole mount if anything else escapes a handler.
Cancellation (``trio.Cancelled``, a ``BaseException``) is never swallowed.

Kernel cache invalidation (``KernelNotifier``) is offered for the write side: the core calls it
from the trio thread; the blocking libfuse calls run in a worker thread, as pyfuse3 requires.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from provenafs import errors
from provenafs.core.filesystem import Filesystem
from provenafs.core.types import NAME_MAX, Attributes, Caller, FsStats, OpenFile

__all__ = [
    "NAME_MAX",
    "KernelNotifier",
    "Operations",
    "close_session",
    "fuse_handler",
    "open_session",
    "run_session",
    "stop_session",
    "to_caller",
    "to_entry_attributes",
]

log = logging.getLogger(__name__)

_BLOCK_UNIT = 512  # st_blocks counts 512-byte units whatever the block size
_PREFERRED_IO_SIZE = 1 << 20  # st_blksize: reads of 1 MiB match the block cache

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _errno_name(value: int) -> str:
    return errno.errorcode.get(value, str(value))


def _errno_of(exc: Exception) -> int:
    try:
        value = errors.to_errno(exc)
    except Exception:  # the table itself must never take the mount down
        log.exception("to_errno failed for %s", type(exc).__name__)
        return errno.EIO
    return value if isinstance(value, int) and value > 0 else errno.EIO


def _log_failure(handler: str, exc: Exception, value: int) -> None:
    """Log one handler failure once: expected errnos quietly, EIO loudly with its cause."""
    level = errors.log_level_for(value)
    if level <= logging.DEBUG:
        log.debug("%s: %s (%s: %s)", handler, _errno_name(value), type(exc).__name__, exc)
        return
    cause = exc.__cause__ or exc.__context__
    cause_text = f"; cause {type(cause).__name__}: {cause}" if cause is not None else ""
    log.log(
        level,
        "%s: %s (%s: %s%s)",
        handler,
        _errno_name(value),
        type(exc).__name__,
        exc,
        cause_text,
        exc_info=(type(exc), exc, exc.__traceback__) if value == errno.EIO else None,
    )


def fuse_handler(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Turn every exception a handler raises into ``FUSEError(to_errno(exc))``, logged once."""
    handler = method.__name__

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every failure becomes an errno
            value = _errno_of(exc)
            _log_failure(handler, exc, value)
            raise pyfuse3.FUSEError(value) from None

    return wrapper


def to_caller(ctx: pyfuse3.RequestContext) -> Caller:
    """The requesting process as the core sees it."""
    return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid)


def to_entry_attributes(attributes: Attributes) -> pyfuse3.EntryAttributes:
    """pyfuse3's reply record for one node."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attributes.inode
    entry.generation = 0
    entry.entry_timeout = attributes.entry_timeout
    entry.attr_timeout = attributes.attr_timeout
    entry.st_mode = attributes.mode
    entry.st_nlink = attributes.nlink
    entry.st_uid = attributes.uid
    entry.st_gid = attributes.gid
    entry.st_rdev = 0
    entry.st_size = attributes.size
    entry.st_blksize = _PREFERRED_IO_SIZE
    entry.st_blocks = (attributes.size + _BLOCK_UNIT - 1) // _BLOCK_UNIT
    entry.st_atime_ns = attributes.atime_ns
    entry.st_mtime_ns = attributes.mtime_ns
    entry.st_ctime_ns = attributes.ctime_ns
    return entry


def _negative_entry(timeout: float) -> pyfuse3.EntryAttributes:
    """A "no such entry" reply that the kernel caches for ``timeout`` seconds."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = 0
    entry.entry_timeout = timeout
    entry.attr_timeout = 0
    return entry


def _to_file_info(opened: OpenFile) -> pyfuse3.FileInfo:
    return pyfuse3.FileInfo(fh=opened.fh, direct_io=opened.direct_io, keep_cache=opened.keep_cache)


def _to_statvfs(stats: FsStats) -> pyfuse3.StatvfsData:
    reply = pyfuse3.StatvfsData()
    reply.f_bsize = stats.block_size
    reply.f_frsize = stats.block_size
    reply.f_blocks = stats.blocks
    reply.f_bfree = stats.blocks_free
    reply.f_bavail = stats.blocks_free
    reply.f_files = stats.files
    reply.f_ffree = stats.files_free
    reply.f_favail = stats.files_free
    reply.f_namemax = stats.name_max
    return reply


def _decode_name(name: bytes) -> str:
    """A path component as ``str``; over-long names fail here, where their byte length is known."""
    if len(name) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    return os.fsdecode(name)


class Operations(pyfuse3.Operations):
    """pyfuse3's request handlers, each a thin call into ``Filesystem``.

    ``negative_timeout`` is how long the kernel may remember that a name does not exist.
    """

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        fs: Filesystem,
        *,
        negative_timeout: float = 1.0,
        on_init: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._fs = fs
        self._negative_timeout = negative_timeout
        self._on_init = on_init

    def init(self) -> None:
        """The kernel's INIT arrived (its answer is sent when this returns): tell ``on_init``."""
        if self._on_init is not None:
            self._on_init()

    # -- names and attributes ------------------------------------------------------------------

    @fuse_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            attributes = await self._fs.lookup(parent_inode, _decode_name(name), to_caller(ctx))
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            if _errno_of(exc) != errno.ENOENT:
                raise
            log.debug("lookup: ENOENT for %r in inode %d", name, parent_inode)
            return _negative_entry(self._negative_timeout)
        return to_entry_attributes(attributes)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # forget has no request to answer: nothing may escape, not even FUSEError.
        for inode, nlookup in inode_list:
            try:
                await self._fs.forget(inode, nlookup)
            except Exception:
                log.exception("forget(%d, %d) failed", inode, nlookup)

    @fuse_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return to_entry_attributes(await self._fs.getattr(inode, to_caller(ctx)))

    @fuse_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self._fs.readlink(inode, to_caller(ctx)))

    @fuse_handler
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        try:
            await self._fs.access(inode, mode, to_caller(ctx))
        except Exception as exc:
            if _errno_of(exc) in {errno.EACCES, errno.EPERM}:
                return False
            raise
        return True

    @fuse_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return _to_statvfs(await self._fs.statfs())

    # -- directories ---------------------------------------------------------------------------

    @fuse_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self._fs.opendir(inode, to_caller(ctx))

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # As many entries as the kernel's buffer takes; the one that did not fit was counted
        # as a lookup by the core, and the kernel never saw it.
        for entry in self._fs.directory_entries(fh, start_id):
            reply = to_entry_attributes(entry.attributes)
            if not pyfuse3.readdir_reply(token, os.fsencode(entry.name), reply, entry.next_offset):
                self._fs.entry_not_sent(entry)
                return

    @fuse_handler
    async def releasedir(self, fh: int) -> None:
        await self._fs.releasedir(fh)

    @fuse_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    # -- files ---------------------------------------------------------------------------------

    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return _to_file_info(await self._fs.open(inode, flags, to_caller(ctx)))

    @fuse_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._fs.read(fh, off, size)

    @fuse_handler
    async def flush(self, fh: int) -> None:
        await self._fs.flush(fh)

    @fuse_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._fs.fsync(fh, datasync)

    @fuse_handler
    async def release(self, fh: int) -> None:
        await self._fs.release(fh)

    # -- extended attributes -------------------------------------------------------------------

    @fuse_handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(b"user."):
            # The core serves only user.* names (docs/SEMANTICS.md). "Not supported" rather than
            # "no such attribute": ``ls -l`` asks every file for security.selinux and the POSIX
            # ACLs, and stops asking on a device that answered ENOTSUP once.
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return await self._fs.getxattr(inode, os.fsdecode(name), to_caller(ctx))

    @fuse_handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [os.fsencode(name) for name in await self._fs.listxattr(inode, to_caller(ctx))]

    @fuse_handler
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        await self._fs.setxattr(inode, os.fsdecode(name), value, to_caller(ctx))

    @fuse_handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._fs.removexattr(inode, os.fsdecode(name), to_caller(ctx))

    # -- changes (the core decides each one: into a draft, or its refusal) ----------------------

    @fuse_handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        opened, attributes = await self._fs.create(
            parent_inode, _decode_name(name), mode, flags, to_caller(ctx)
        )
        return _to_file_info(opened), to_entry_attributes(attributes)

    @fuse_handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attributes = await self._fs.mkdir(parent_inode, _decode_name(name), mode, to_caller(ctx))
        return to_entry_attributes(attributes)

    @fuse_handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attributes = await self._fs.mknod(
            parent_inode, _decode_name(name), mode, rdev, to_caller(ctx)
        )
        return to_entry_attributes(attributes)

    @fuse_handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attributes = await self._fs.symlink(
            parent_inode, _decode_name(name), os.fsdecode(target), to_caller(ctx)
        )
        return to_entry_attributes(attributes)

    @fuse_handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attributes = await self._fs.link(
            inode, new_parent_inode, _decode_name(new_name), to_caller(ctx)
        )
        return to_entry_attributes(attributes)

    @fuse_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._fs.unlink(parent_inode, _decode_name(name), to_caller(ctx))

    @fuse_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._fs.rmdir(parent_inode, _decode_name(name), to_caller(ctx))

    @fuse_handler
    async def rename(  # noqa: PLR0917 - pyfuse3 fixes this signature
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self._fs.rename(
            parent_inode_old,
            _decode_name(name_old),
            parent_inode_new,
            _decode_name(name_new),
            flags,
            to_caller(ctx),
        )

    @fuse_handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        attributes = await self._fs.setattr(
            inode,
            to_caller(ctx),
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            fh=fh,
        )
        return to_entry_attributes(attributes)

    @fuse_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._fs.write(fh, off, buf)


class KernelNotifier:
    """Tells the kernel to drop cached entries and attributes the core knows have changed, and
    stores file bytes in its page cache (``store``: errors, e.g. ENOSYS, reach the caller).

    The libfuse calls can block until a related request finishes, so they run in a worker
    thread; a missing entry (ENOENT) is not an error: the kernel had nothing to forget.
    """

    async def invalidate_entry(self, parent_inode: int, name: str) -> None:
        await trio.to_thread.run_sync(self._invalidate_entry_blocking, parent_inode, name)

    async def invalidate_inode(self, inode: int, *, attr_only: bool = False) -> None:
        await trio.to_thread.run_sync(self._invalidate_inode_blocking, inode, attr_only)

    async def store(self, inode: int, offset: int, data: bytes) -> None:
        await trio.to_thread.run_sync(pyfuse3.notify_store, inode, offset, data)

    @staticmethod
    def _invalidate_entry_blocking(parent_inode: int, name: str) -> None:
        try:
            pyfuse3.invalidate_entry(parent_inode, os.fsencode(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("invalidate_entry(%d, %r) failed: %s", parent_inode, name, exc)

    @staticmethod
    def _invalidate_inode_blocking(inode: int, attr_only: bool) -> None:
        try:
            pyfuse3.invalidate_inode(inode, attr_only)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("invalidate_inode(%d) failed: %s", inode, exc)


# -- the session: the daemon drives pyfuse3 through these, so that it never imports pyfuse3 ------


def open_session(
    fs: Filesystem,
    mountpoint: Path,
    options: Iterable[str],
    *,
    negative_timeout: float,
    on_init: Callable[[], None] | None = None,
) -> None:
    """Mount ``fs`` at ``mountpoint`` with libfuse ``options``; RuntimeError if that fails.
    ``on_init`` is called on the trio thread when the kernel's INIT is answered."""
    operations = Operations(fs, negative_timeout=negative_timeout, on_init=on_init)
    pyfuse3.init(operations, str(mountpoint), set(options))


async def run_session() -> None:
    """Serve kernel requests until the filesystem is unmounted or ``stop_session`` is called."""
    await pyfuse3.main()


def stop_session() -> None:
    """Make ``run_session`` return: libfuse stops reading requests (in-flight ones finish)."""
    pyfuse3.terminate()


def close_session() -> None:
    """Unmount (if still mounted) and free the session; call once after ``open_session``."""
    pyfuse3.close(unmount=True)
