"""Exceptions of the API layer: every httpx error and HTTP status is translated here, once.

Messages carry the data store's ``detail`` text and the route, never a token.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "UnavailableError",
]


class ApiError(Exception):
    """Base of every API-layer failure."""


class AuthenticationError(ApiError):
    """401 "Could not validate credentials": the token is missing, expired or invalid."""


class PermissionDeniedError(ApiError):
    """401 for a missing realm or item role, or a locked dataset."""


class ForbiddenError(ApiError):
    """403: the dataset is pending review or released (write credentials refused)."""


class NotFoundError(ApiError):
    """Unknown handle, or not a dataset (the data store answers 400 for these on fetch)."""


class InvalidRequestError(ApiError):
    """400/422 or ``status.success=false``: the data store rejected the request's content."""


class UnavailableError(ApiError):
    """The data store could not be reached, or answered 5xx, after bounded retries."""
