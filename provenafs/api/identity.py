"""Who the mount's user is in the registry: the Person linked to their username.

Minting, versioning, release and model runs all need the caller's username linked to a registry
Person (docs/API.md §19). ``linked_person`` asks the auth API (``GET /link/user/lookup``) and
answers the Person's handle, or None when nothing is linked. Raw JSON never leaves this module.
"""

from __future__ import annotations

from provenafs.api.client import DataStoreClient
from provenafs.api.errors import UnavailableError

__all__ = ["linked_person"]


async def linked_person(auth: DataStoreClient, username: str | None = None) -> str | None:
    """The Person handle linked to *username* (default: the token's user), or None.

    *auth* is a client whose base URL is the auth API's (``ServiceUrls.auth_api``).
    """
    params = {"username": username} if username else None
    body = await auth.call(
        "GET", "/link/user/lookup", name="link_lookup", retry_safe=True, params=params
    )
    if not isinstance(body, dict):
        raise UnavailableError("link_lookup: the auth API answered no object")
    person = body.get("person_id")
    return person if isinstance(person, str) and person and body.get("success") else None
