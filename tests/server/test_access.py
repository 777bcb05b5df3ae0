"""Item roles from access settings (docs/API.md §8.3), with no registry and no SQLite."""

from __future__ import annotations

from provenafs.server.access import (
    REALM_ADMIN,
    REALM_READ,
    REALM_WRITE,
    AccessSettings,
    item_roles,
    ordered_roles,
)
from provenafs.server.models import ITEM_ROLES

RW = (REALM_READ, REALM_WRITE)
PRIVATE = AccessSettings(owner="alice", general=(), groups={})
SHARED = AccessSettings(
    owner="alice",
    general=("metadata-read",),
    groups={"reef": ("dataset-data-read",), "editors": ("metadata-write", "metadata-read")},
)


def test_the_owner_and_a_realm_admin_hold_every_role() -> None:
    assert item_roles(PRIVATE, "alice", RW, ()) == ITEM_ROLES
    assert item_roles(PRIVATE, "alice", (), ()) == ITEM_ROLES  # ownership needs no realm role
    assert item_roles(PRIVATE, "bob", (*RW, REALM_ADMIN), ()) == ITEM_ROLES


def test_anyone_else_holds_only_what_general_and_their_groups_grant() -> None:
    assert item_roles(PRIVATE, "bob", RW, ()) == ()
    assert item_roles(PRIVATE, "bob", RW, ("reef",)) == ()  # a group the dataset does not name
    assert item_roles(SHARED, "bob", RW, ()) == ("metadata-read",)
    assert item_roles(SHARED, "bob", RW, ("reef",)) == ("metadata-read", "dataset-data-read")
    assert item_roles(SHARED, "bob", RW, ("reef", "editors")) == (
        "metadata-read",
        "metadata-write",
        "dataset-data-read",
    )


def test_roles_are_not_expanded() -> None:
    """``admin`` or a write role granted alone does not imply the read roles (§8.3)."""
    admin_only = AccessSettings(owner="alice", general=("admin",), groups={})
    assert item_roles(admin_only, "bob", RW, ()) == ("admin",)
    writer = AccessSettings(owner="alice", general=(), groups={"g": ("dataset-data-write",)})
    assert item_roles(writer, "bob", RW, ("g",)) == ("dataset-data-write",)


def test_ordered_roles_dedupes_into_the_canonical_order() -> None:
    assert ordered_roles(["admin", "metadata-read", "admin"]) == ("metadata-read", "admin")
    assert ordered_roles(set(ITEM_ROLES)) == ITEM_ROLES
    assert ordered_roles([]) == ()
