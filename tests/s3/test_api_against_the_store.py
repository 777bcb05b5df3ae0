"""The mount's API layer against the real local data store (``provenafs serve --seed``): the
data store client (paging, roles, credentials, errors) and the realm's device login and offline
tokens. The unit tests of the same modules use in-process fakes; these need SeaweedFS.
"""

from __future__ import annotations

import subprocess
import threading

import pytest

from provenafs.api import errors
from provenafs.api.client import DataStoreClient, discover
from provenafs.api.realm import RefreshingToken, StaticToken, TokenSet, device_login, jwt_expiry
from tests.conftest import LocalStore


@pytest.mark.s3
async def test_client_against_the_local_data_store(local_store: LocalStore) -> None:
    manifest = local_store.manifest()["datasets"]
    alice, carol = local_store.token("alice"), local_store.token("carol")

    found = await discover(local_store.base_url)
    assert found.realm_url == f"{local_store.base_url}/auth/realms/provena"
    assert found.s3_endpoint_url is not None
    client = DataStoreClient(local_store.base_url, StaticToken(alice))
    as_carol = DataStoreClient(local_store.base_url, StaticToken(carol))
    try:
        listed = await client.list_all(page_size=3)
        handles = {r.handle for r in listed}
        assert manifest["reef-temperatures"]["handle"] in handles
        assert len(handles) == len(listed)
        assert client.statistics()["list_page"] >= 2  # paged

        reef = await client.fetch_dataset(manifest["reef-temperatures"]["handle"])
        assert reef.roles is not None and "admin" in reef.roles
        assert reef.s3.path == "datasets/" + reef.handle.replace(".", "-").replace("/", "-") + "/"
        assert reef.document["item"]["id"] == reef.handle
        creds = await client.read_credentials(reef.handle)
        assert creds.expiry.tzinfo is not None

        v1 = await client.fetch_dataset(manifest["versioned-v1"]["handle"])
        assert not v1.is_latest

        with pytest.raises(errors.NotFoundError):
            await client.fetch_dataset("10378.1/999999999")
        with pytest.raises(errors.PermissionDeniedError):
            await as_carol.fetch_dataset(manifest["private-bob"]["handle"])
        with pytest.raises(errors.PermissionDeniedError):
            await client.write_credentials(manifest["locked"]["handle"])
        released = manifest["released"]["handle"]
        released_owner = DataStoreClient(
            local_store.base_url, StaticToken(local_store.token(manifest["released"]["owner"]))
        )
        with pytest.raises(errors.ForbiddenError):
            await released_owner.write_credentials(released)
        await released_owner.aclose()
    finally:
        await client.aclose()
        await as_carol.aclose()

    bad = DataStoreClient(local_store.base_url, StaticToken("not-a-token"))
    with pytest.raises(errors.AuthenticationError) as info:
        await bad.list_page(None)
    assert "not-a-token" not in str(info.value)
    assert bad.statistics()["list_page"] == 2  # one refresh-and-retry, then the error
    await bad.aclose()


@pytest.mark.s3
async def test_device_login_and_offline_token_against_the_local_realm(
    local_store: LocalStore,
) -> None:
    offline = local_store.token("alice", offline=True)
    approvals: list[subprocess.CompletedProcess[str]] = []
    threads: list[threading.Thread] = []

    def approve(uri: str, code: str) -> None:
        assert code in uri
        # approve in the background, like a user in a browser
        thread = threading.Thread(
            target=lambda: approvals.append(
                local_store.serve_cli("device", "approve", code, "--user", "alice")
            )
        )
        threads.append(thread)
        thread.start()

    async def main() -> TokenSet:
        found = await discover(local_store.base_url)
        assert found.realm_url is not None
        tokens = await device_login(found.realm_url, "client-tools", approve)
        source = RefreshingToken(found.realm_url, offline, "automated-access")
        client = DataStoreClient(local_store.base_url, source)
        try:
            assert await client.list_all()
            await source.refresh()  # offline tokens are reusable: refresh works again
            assert await client.list_all()
            assert source.exchanges == 2
        finally:
            await client.aclose()
            await source.aclose()
        return tokens

    tokens = await main()
    for thread in threads:
        thread.join(timeout=60)
    assert len(approvals) == 1 and approvals[0].returncode == 0
    assert tokens.refresh_token
    assert jwt_expiry(tokens.access_token) == tokens.expires_at
