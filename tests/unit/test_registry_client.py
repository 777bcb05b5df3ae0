"""``RegistryClient``, ``whoami`` and ``ServiceUrls`` against ``httpx.MockTransport``.

Each route goes to its own service's base URL with the caller's token, its answers become
records (the ``User`` route's echoed token is dropped), and failures read like the data store's
(a validation error names the field; an unknown item is ``NotFoundError``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from provenafs.api import errors
from provenafs.api.client import DataStoreClient
from provenafs.api.models import CollectionFormat
from provenafs.api.realm import StaticToken
from provenafs.api.registry import AccessSettings, RegistryClient
from provenafs.api.services import ServiceUrls, service_urls
from provenafs.mount_options import MountOptionsError, parse_mount_args

TOKEN = "tok-SECRET-registry"
URLS = ServiceUrls(
    registry_api="http://registry.test",
    prov_api="http://prov.test",
    search_api="http://search.test",
    job_api="http://job.test",
    auth_api="http://auth.test",
)


def answer(request: httpx.Request) -> httpx.Response:
    host, path = request.url.host, request.url.path
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    if (host, path) == ("search.test", "/search/entity-registry"):
        hits = [{"id": "10378.1/1", "score": 2.5}, {"id": "10378.1/2", "score": 1.0}]
        return httpx.Response(200, json={"status": {"success": True}, "results": hits})
    if (host, path) == ("registry.test", "/registry/general/fetch"):
        if request.url.params["id"] == "10378.1/404":
            body = {"status": {"success": False, "details": "not available"}, "item": None}
            return httpx.Response(200, json=body)
        person = {
            "id": "10378.1/5",
            "item_subtype": "PERSON",
            "display_name": "Ann Lee",
            "first_name": "Ann",
            "last_name": "Lee",
            "email": "ann@example.org",
        }
        return httpx.Response(200, json={"status": {"success": True}, "item": person})
    if (host, path) == ("registry.test", "/registry/entity/dataset/auth/configuration"):
        if request.method == "PUT":
            assert json.loads(request.content) == {
                "owner": "ann",
                "general": [],
                "groups": {"g": ["admin"]},
            }
            return httpx.Response(200, json={"status": {"success": True, "details": "ok"}})
        return httpx.Response(
            200, json={"owner": "ann", "general": ["metadata-read"], "groups": {"g": ["admin"]}}
        )
    if (host, path) == ("test", "/metadata/validate-metadata"):
        detail = [{"loc": ["body", "dataset_info", "license"], "msg": "Input should be a URL"}]
        return httpx.Response(422, json={"detail": detail})
    if (host, path) == ("test", "/check-access/check-general-access"):
        user = {
            "username": "ann",
            "email": None,
            "roles": ["entity-registry-read"],
            "access_token": TOKEN,
        }
        return httpx.Response(200, json=user)
    if (host, path) == ("auth.test", "/link/user/lookup"):
        return httpx.Response(200, json={"person_id": None, "success": False})
    return httpx.Response(404, json={"detail": f"no route {host}{path}"})


def client() -> RegistryClient:
    transport = httpx.MockTransport(answer)
    tokens = StaticToken(TOKEN)
    datastore = DataStoreClient("http://test", tokens, transport=transport, retries=1)
    return RegistryClient(datastore, URLS, tokens, transport=transport)


async def test_search_goes_to_the_search_service_for_datasets_only() -> None:
    seen: list[httpx.Request] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    transport = httpx.MockTransport(spy)
    tokens = StaticToken(TOKEN)
    datastore = DataStoreClient("http://test", tokens, transport=transport)
    registry = RegistryClient(datastore, URLS, tokens, transport=transport)
    hits = await registry.search_datasets("reef temp", 200)
    assert [(h.id, h.score) for h in hits] == [("10378.1/1", 2.5), ("10378.1/2", 1.0)]
    params = seen[0].url.params
    assert (params["query"], params["subtype_filter"], params["record_limit"]) == (
        "reef temp",
        "DATASET",
        "50",  # capped like the search API
    )


async def test_items_access_settings_and_identity() -> None:
    registry = client()
    person = await registry.fetch_item("10378.1/5")
    assert (person.first_name, person.last_name, person.email) == ("Ann", "Lee", "ann@example.org")
    with pytest.raises(errors.NotFoundError):
        await registry.fetch_item("10378.1/404")
    settings = await registry.access_settings("10378.1/1")
    assert settings == AccessSettings("ann", ("metadata-read",), {"g": ("admin",)})
    await registry.put_access_settings("10378.1/1", AccessSettings("ann", (), {"g": ("admin",)}))
    identity = await registry.whoami()
    assert (identity.username, identity.person_id, identity.can_write) == ("ann", None, False)
    assert TOKEN not in repr(identity)


async def test_a_validation_error_names_the_field() -> None:
    with pytest.raises(errors.InvalidRequestError) as excinfo:
        await client().validate_metadata(CollectionFormat.from_json({"dataset_info": {}}))
    assert "dataset_info.license: Input should be a URL" in str(excinfo.value)
    assert "body." not in str(excinfo.value)


def test_service_urls_derive_from_a_data_api_host_and_take_overrides() -> None:
    derived = service_urls("https://data-api.example.org/", None, {})
    assert derived.registry_api == "https://registry-api.example.org"
    assert derived.search_api == "https://search.example.org"
    assert derived.auth_api == "https://auth-api.example.org"
    unknown = service_urls("http://127.0.0.1:8750", None, {})
    with pytest.raises(errors.ApiError, match="-o search_api=URL"):
        unknown.require("search_api")
    discovered: dict[str, Any] = {"search_api": "http://s/", "registry_api": 7}
    chosen = service_urls("http://127.0.0.1:8750", discovered, {"auth_api": "http://a"})
    assert (chosen.search_api, chosen.registry_api, chosen.auth_api) == (
        "http://s",
        None,
        "http://a",
    )


def test_service_url_mount_options() -> None:
    options = parse_mount_args(["http://x:1", "/mnt", "-o", "search_api=http://s:2/"])
    assert dict(options.services) == {"search_api": "http://s:2"}
    with pytest.raises(MountOptionsError):
        parse_mount_args(["http://x:1", "/mnt", "-o", "registry_api=ftp://nope"])
