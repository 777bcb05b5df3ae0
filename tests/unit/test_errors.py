"""The one errno table: every IO-layer exception, FsError, subclasses, unknowns; log levels."""

from __future__ import annotations

import errno
import logging

import pytest
import trio

from provenafs.api import errors as api_errors
from provenafs.errors import ERRNO_BY_EXCEPTION, FsError, describe, log_level_for, to_errno
from provenafs.storage import blobstore


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api_errors.NotFoundError("x"), errno.ENOENT),
        (api_errors.PermissionDeniedError("x"), errno.EACCES),
        (api_errors.AuthenticationError("x"), errno.EACCES),
        (api_errors.ForbiddenError("x"), errno.EACCES),
        (api_errors.InvalidRequestError("x"), errno.EINVAL),
        (api_errors.UnavailableError("x"), errno.EIO),
        (api_errors.ApiError("x"), errno.EIO),
        (blobstore.NoSuchKeyError("k"), errno.ENOENT),
        (blobstore.AccessDeniedError("k"), errno.EACCES),
        (blobstore.ExpiredCredentialsError("k"), errno.EACCES),
        (blobstore.StaleObjectError("k"), errno.ESTALE),
        (blobstore.BlobUnavailableError("k"), errno.EIO),
        (blobstore.BlobError("k"), errno.EIO),
        (FsError(errno.EROFS), errno.EROFS),
        (FsError(errno.ENAMETOOLONG, "long"), errno.ENAMETOOLONG),
        (ValueError("bug"), errno.EIO),
        (KeyError("bug"), errno.EIO),
        # the local disk (drafts, caches): its own errno, so a full disk is ENOSPC, not EIO
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
        (OSError("no errno"), errno.EIO),
        (trio.TooSlowError(), errno.EIO),
    ],
)
def test_to_errno(exc: BaseException, expected: int) -> None:
    assert to_errno(exc) == expected


def test_subclasses_inherit_their_ancestors_errno() -> None:
    class VeryStale(blobstore.StaleObjectError):
        pass

    class OddApiFailure(api_errors.ApiError):
        pass

    assert to_errno(VeryStale("k")) == errno.ESTALE
    assert to_errno(OddApiFailure("x")) == errno.EIO


def test_every_io_exception_is_in_the_table() -> None:
    exported = [getattr(api_errors, n) for n in api_errors.__all__]
    exported += [
        getattr(blobstore, n)
        for n in blobstore.__all__
        if isinstance(getattr(blobstore, n), type)
        and issubclass(getattr(blobstore, n), BaseException)
    ]
    assert set(exported) == set(ERRNO_BY_EXCEPTION)


def test_log_levels() -> None:
    assert log_level_for(errno.ENOENT) == logging.DEBUG
    assert log_level_for(errno.EACCES) == logging.DEBUG
    assert log_level_for(errno.EROFS) == logging.DEBUG
    assert log_level_for(errno.EIO) == logging.ERROR
    assert log_level_for(errno.ESTALE) == logging.WARNING


def test_fs_error_text() -> None:
    error = FsError(errno.ENOENT, "no dataset 10378.1/9")
    assert error.errno == errno.ENOENT
    assert str(error) == "ENOENT: no dataset 10378.1/9"
    assert str(FsError(errno.EROFS)) == "EROFS"
    assert describe(errno.EACCES) == "EACCES (Permission denied)"
