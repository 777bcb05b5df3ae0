"""Who may do what to a dataset: access settings and the item roles they grant (§8.3).

Pure functions over plain values, so the role rules are testable without SQLite: the registry
stores ``AccessSettings`` and a user's groups, and asks ``item_roles`` what they grant; the façade
checks the result. It must not touch storage, HTTP or the mount side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from provenafs.server.models import ITEM_ROLES

__all__ = [
    "DEFAULT_GENERAL_ROLES",
    "METADATA_VISIBLE_ROLES",
    "REALM_ADMIN",
    "REALM_READ",
    "REALM_WRITE",
    "AccessSettings",
    "item_roles",
    "ordered_roles",
]

REALM_READ = "entity-registry-read"
REALM_WRITE = "entity-registry-write"
REALM_ADMIN = "entity-registry-admin"
DEFAULT_GENERAL_ROLES: tuple[str, ...] = ("metadata-read", "dataset-data-read")
METADATA_VISIBLE_ROLES = frozenset({"metadata-read", "metadata-write", "admin"})


@dataclasses.dataclass(frozen=True)
class AccessSettings:
    owner: str
    general: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]


def ordered_roles(roles: Sequence[str] | set[str]) -> tuple[str, ...]:
    """*roles* without duplicates, in the canonical ``ITEM_ROLES`` order."""
    wanted = set(roles)
    return tuple(role for role in ITEM_ROLES if role in wanted)


def item_roles(
    access: AccessSettings, username: str, realm_roles: Sequence[str], groups: Sequence[str]
) -> tuple[str, ...]:
    """The item roles *username* holds under *access*, exactly as §8.3 computes them.

    The owner and a realm admin hold every role; anyone else holds the general roles plus those
    of each group they belong to. Roles are not expanded (``admin`` does not imply the others).
    """
    if REALM_ADMIN in realm_roles or access.owner == username:
        return ITEM_ROLES
    granted = set(access.general)
    for group in groups:
        granted.update(access.groups.get(group, ()))
    return ordered_roles(granted)
