"""Who the caller is: username, email, realm roles and the registry Person linked to them.

``whoami`` asks the data store's ``GET /check-access/check-general-access`` (the caller's
``User``: username, email, realm roles; the route echoes the access token too, which is dropped
here at once) and the auth API's link lookup (``identity.linked_person``, docs/API.md §19).
Minting, versioning, release requests, reviews and model runs all need a linked Person; writing
needs the realm roles ``entity-registry-read`` and ``entity-registry-write``.

This module must never keep, log or return a token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from provenafs.api.client import DataStoreClient
from provenafs.api.errors import UnavailableError
from provenafs.api.identity import linked_person

__all__ = ["REALM_READ", "REALM_WRITE", "Identity", "whoami"]

REALM_READ = "entity-registry-read"
REALM_WRITE = "entity-registry-write"


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


async def whoami(datastore: DataStoreClient, auth: DataStoreClient) -> Identity:
    """The caller's username, email, realm roles and linked Person (*auth*: a client at the
    auth API's base URL)."""
    body: Any = await datastore.call(
        "GET",
        "/check-access/check-general-access",
        name="check_general_access",
        retry_safe=True,
    )
    if not isinstance(body, dict) or not isinstance(body.get("username"), str):
        raise UnavailableError("check_general_access: the answer names no username")
    roles = body.get("roles")
    email = body.get("email")
    return Identity(
        username=str(body["username"]),
        email=email if isinstance(email, str) else None,
        realm_roles=tuple(r for r in roles if isinstance(r, str))
        if isinstance(roles, list)
        else (),
        person_id=await linked_person(auth),
    )
