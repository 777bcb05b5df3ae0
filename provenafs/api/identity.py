"""Who the caller is: username, realm roles and the registry Person linked to the username.

``whoami`` asks the data store's ``GET /check-access/check-general-access`` (the caller's
``User``: username, email, realm roles; the route echoes the access token too, which is dropped
here at once) and the auth API's ``GET /link/user/lookup`` (docs/API.md §19). Minting,
versioning, release requests, reviews and model runs all need a linked Person; writing needs
the realm roles ``entity-registry-read`` and ``entity-registry-write``.

This module must never keep, log or return a token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from provenafs.api.client import DataStoreClient, Route
from provenafs.api.errors import UnavailableError
from provenafs.api.services import ServiceUrls

__all__ = ["REALM_READ", "REALM_WRITE", "Identity", "linked_person", "whoami"]

REALM_READ = "entity-registry-read"
REALM_WRITE = "entity-registry-write"

_LOOKUP = Route("link_lookup", "GET", "/link/user/lookup", True)
_GENERAL_ACCESS = Route("check_general_access", "GET", "/check-access/check-general-access", True)


@dataclasses.dataclass(frozen=True)
class Identity:
    """The caller as the data store and the auth API see them."""

    username: str
    email: str | None
    realm_roles: tuple[str, ...]
    person_id: str | None  # the linked registry Person, None when not linked

    @property
    def can_write(self) -> bool:
        """Whether the realm roles allow writes (minting, versions, uploads, edits)."""
        return REALM_READ in self.realm_roles and REALM_WRITE in self.realm_roles


async def linked_person(
    client: DataStoreClient, urls: ServiceUrls, username: str | None = None
) -> str | None:
    """The Person linked to *username* (default: the caller), or None when there is none."""
    params = {"username": username} if username else None
    body = await client.call(_LOOKUP, base_url=urls.auth_api, params=params)
    person = body.get("person_id") if isinstance(body, dict) else None
    return person if isinstance(person, str) and person else None


async def whoami(client: DataStoreClient, urls: ServiceUrls) -> Identity:
    """The caller's username, email, realm roles and linked Person."""
    body: Any = await client.call(_GENERAL_ACCESS)
    if not isinstance(body, dict) or not isinstance(body.get("username"), str):
        raise UnavailableError("check_general_access: the answer names no username")
    roles = body.get("roles")
    email = body.get("email")
    username = str(body["username"])
    return Identity(
        username=username,
        email=email if isinstance(email, str) else None,
        realm_roles=tuple(r for r in roles if isinstance(r, str))
        if isinstance(roles, list)
        else (),
        person_id=await linked_person(client, urls),
    )
