"""What several data-store tests share: the record key order of docs/API.md, tokens, and the
official client's own environment (``client_python``).

Test helpers only: it may read the data directory of a running local store (its registry and
realm key) to sign tokens in-process, but must not start or stop stores or hold test fixtures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provenafs.server.auth import TokenAuthority
from provenafs.server.registry import Registry
from tests.conftest import IN_CI, LocalStore

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


CLIENT_VERSION = "0.29.1"  # the newest provenaclient on PyPI (pip index versions provenaclient)
CLIENT_HOME = Path.home() / ".cache" / "provenafs-tests" / f"provenaclient-{CLIENT_VERSION}"


def client_python() -> Path:
    """The client environment's interpreter, built on first use."""
    python = CLIENT_HOME / "bin" / "python"
    if python.exists():
        return python
    CLIENT_HOME.parent.mkdir(parents=True, exist_ok=True)
    building = CLIENT_HOME.with_name(CLIENT_HOME.name + ".building")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(building)], check=True)
    install = subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "-q",
         f"provenaclient=={CLIENT_VERSION}"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if install.returncode != 0:
        message = f"cannot install provenaclient {CLIENT_VERSION}: {install.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    building.rename(CLIENT_HOME)  # venvs record their path: build in place, then publish once
    return python


# The official client pointed at the local store, every service at its one base URL; a script
# adds its own lines after it, its own arguments from sys.argv[3:].
CLIENT_PRELUDE = r"""
import asyncio, json, sys
from provenaclient import Config, ProvenaClient
from provenaclient.auth import OfflineFlow
from provenaclient.utils.config import APIOverrides

base, token = sys.argv[1:3]
overrides = APIOverrides(
    datastore_api_endpoint_override=base, auth_api_endpoint_override=base,
    registry_api_endpoint_override=base, prov_api_endpoint_override=base,
    search_api_endpoint_override=base, search_service_endpoint_override=base,
    jobs_service_api_endpoint_override=base,
    keycloak_endpoint_override=base + "/auth/realms/provena",
)
config = Config(domain="provena.invalid", realm_name="provena", api_overrides=overrides)
client = ProvenaClient(config=config, auth=OfflineFlow(
    config=config, client_id="automated-access", offline_token=token))
"""
