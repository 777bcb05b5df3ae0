"""The one table that turns every failure of the mount into an errno.

``FsError`` is what the filesystem core raises on purpose; ``to_errno`` maps it, the API layer's
exceptions (``provenafs.api.errors``), the object store's (``provenafs.storage.blobstore``) and the
local disk's (``OSError``: a full disk is ``ENOSPC``, not ``EIO``) to an errno, and anything else to
``EIO``. It is the only translation: the core lets these exceptions rise, and the FUSE adapter
(``fuse_ops.fuse_handler``) calls ``to_errno`` once per failed request. ``log_level_for`` says how
loudly a failure is logged: expected outcomes (a missing file, a missing role) at debug, outages at
error.

This module must not import pyfuse3 (the handler decorator that raises ``FUSEError`` lives in
``fuse_ops``) and must not put secrets into messages: it only ever sees exception types.
"""

from __future__ import annotations

import errno as errno_codes
import logging
import os

from provenafs.api import errors as api_errors
from provenafs.storage import blobstore

__all__ = ["ERRNO_BY_EXCEPTION", "FsError", "describe", "log_level_for", "to_errno"]


class FsError(Exception):
    """A deliberate failure of a filesystem operation, carrying the errno the caller sees."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        name = errno_codes.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.message}" if self.message else name

    def __repr__(self) -> str:
        return f"FsError({errno_codes.errorcode.get(self.errno, self.errno)}, {self.message!r})"


# Exception class -> errno. Looked up along the exception's MRO, so subclasses inherit the
# mapping of their nearest listed ancestor; the bases map to EIO.
ERRNO_BY_EXCEPTION: dict[type[BaseException], int] = {
    api_errors.NotFoundError: errno_codes.ENOENT,
    api_errors.PermissionDeniedError: errno_codes.EACCES,
    api_errors.AuthenticationError: errno_codes.EACCES,
    api_errors.ForbiddenError: errno_codes.EACCES,
    api_errors.InvalidRequestError: errno_codes.EINVAL,
    api_errors.UnavailableError: errno_codes.EIO,
    api_errors.ApiError: errno_codes.EIO,
    blobstore.NoSuchKeyError: errno_codes.ENOENT,
    blobstore.AccessDeniedError: errno_codes.EACCES,
    # The catalog and the reader retry once with fresh credentials before this escapes.
    blobstore.ExpiredCredentialsError: errno_codes.EACCES,
    blobstore.StaleObjectError: errno_codes.ESTALE,
    blobstore.BlobUnavailableError: errno_codes.EIO,
    blobstore.BlobError: errno_codes.EIO,
}

# Outcomes that are part of normal use (a shell probing for files, a user without a role):
# logged at debug so that `ls` on a big tree does not flood the log.
_EXPECTED_ERRNOS = frozenset(
    {
        errno_codes.ENOENT,
        errno_codes.EACCES,
        errno_codes.EPERM,
        errno_codes.EROFS,
        errno_codes.ENODATA,
        errno_codes.ENAMETOOLONG,
        errno_codes.ENOTDIR,
        errno_codes.EISDIR,
        errno_codes.EEXIST,
        errno_codes.ENOTEMPTY,
        errno_codes.EXDEV,
        errno_codes.EINVAL,
        errno_codes.ERANGE,
        errno_codes.ENOSYS,
        errno_codes.ENOTSUP,
        errno_codes.EBADF,
        errno_codes.ELOOP,
        errno_codes.EFBIG,  # a size past the local disk's limit, or a sidecar too big
    }
)


def to_errno(exc: BaseException) -> int:
    """The errno a caller sees for *exc*; unknown exceptions are bugs or outages: ``EIO``."""
    if isinstance(exc, FsError):
        return exc.errno
    for cls in type(exc).__mro__:
        mapped = ERRNO_BY_EXCEPTION.get(cls)
        if mapped is not None:
            return mapped
    if isinstance(exc, OSError) and exc.errno:  # the local disk (drafts, caches, spill)
        return exc.errno
    return errno_codes.EIO


def log_level_for(errno: int) -> int:
    """The ``logging`` level for a failure with *errno*: debug when expected, error for EIO."""
    if errno in _EXPECTED_ERRNOS:
        return logging.DEBUG
    if errno == errno_codes.EIO:
        return logging.ERROR
    return logging.WARNING


def describe(errno: int) -> str:
    """``"ENOENT (No such file or directory)"``: for log lines and status files."""
    return f"{errno_codes.errorcode.get(errno, str(errno))} ({os.strerror(errno)})"
