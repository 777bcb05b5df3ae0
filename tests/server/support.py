"""What several data-store tests share: the record key order of docs/API.md and tokens.

Test helpers only: it may read the data directory of a running local store (its registry and
realm key) to sign tokens in-process, but must not start or stop stores or hold test fixtures.
"""

from __future__ import annotations

from provenafs.server.auth import TokenAuthority
from provenafs.server.registry import Registry
from tests.conftest import LocalStore

__all__ = ["ITEM_KEYS", "issue_token"]

# Every key of a dataset record, in the order the real data store answers them.
ITEM_KEYS = [
    "display_name",
    "user_metadata",
    "collection_format",
    "s3",
    "release_history",
    "release_status",
    "release_approver",
    "release_timestamp",
    "access_info_uri",
    "history",
    "id",
    "owner_username",
    "created_timestamp",
    "updated_timestamp",
    "item_category",
    "item_subtype",
    "record_type",
    "workflow_links",
    "versioning_info",
]


def issue_token(store: LocalStore, user: str) -> str:
    """An access token signed in-process with the store's realm key (what ``serve token`` does)."""
    registry = Registry.in_data_dir(store.data_dir)
    account = registry.get_user(user)
    registry.close()
    assert account is not None, user
    authority = TokenAuthority(store.data_dir)
    return authority.issue_access_token(
        account.username, account.email, list(account.realm_roles), lifetime=3600
    )
