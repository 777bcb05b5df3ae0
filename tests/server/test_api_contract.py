"""Contract tests of the local data store over real HTTP: every route of docs/API.md §3.

Shapes (every key, null optionals, int timestamps), status codes and the quirks of §10 and
§10.1, against a private seeded ``provenafs serve`` (these tests mint, update and version).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from tests.conftest import LocalStore, start_local_store
from tests.server.support import ITEM_KEYS, issue_token

pytestmark = pytest.mark.s3

ITEM_ROLES = ["metadata-read", "metadata-write", "admin", "dataset-data-read", "dataset-data-write"]
UNAUTHENTICATED = {"detail": "Could not validate credentials"}
WRONG_ROLE = {
    "detail": "You are not authorised to access this resource as you don't have the correct role."
}
LIST_KEYS = {
    "status",
    "items",
    "seed_items",
    "unparsable_items",
    "total_item_count",
    "complete_item_count",
    "seed_item_count",
    "unparsable_item_count",
    "not_authorised_count",
    "pagination_key",
}


class Api:
    """A tiny client: one token per user (from ``provenafs serve token``), raw httpx responses."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.http = httpx.Client(base_url=store.base_url, timeout=60)
        self.tokens: dict[str, str] = {}

    def headers(self, user: str | None) -> dict[str, str]:
        if user is None:
            return {}
        if user not in self.tokens:
            self.tokens[user] = issue_token(self.store, user)
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers=self.headers(user), **kwargs)

    def post(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, headers=self.headers(user), **kwargs)

    def put(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(path, headers=self.headers(user), **kwargs)

    def delete(self, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(path, headers=self.headers(user), **kwargs)

    def fetch(self, user: str, handle: str) -> httpx.Response:
        return self.get(user, "/registry/items/fetch-dataset", params={"handle_id": handle})

    def item(self, handle: str) -> dict[str, Any]:
        response = self.fetch("admin", handle)
        assert response.status_code == 200, response.text
        item: dict[str, Any] = response.json()["item"]
        return item

    def creds(self, user: str, handle: str, kind: str = "read") -> httpx.Response:
        return self.post(
            user,
            f"/registry/credentials/generate-{kind}-access-credentials",
            json={"dataset_id": handle, "console_session_required": False},
        )


def s3_admin(store: LocalStore) -> Any:
    admin = json.loads((store.data_dir / "s3-admin.json").read_text())
    return boto3.client(
        "s3",
        endpoint_url=admin["endpoint_url"],
        aws_access_key_id=admin["access_key_id"],
        aws_secret_access_key=admin["secret_access_key"],
        region_name=admin["region"],
    ), admin["bucket"]


def keys_under(store: LocalStore, prefix: str) -> list[str]:
    client, bucket = s3_admin(store)
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [obj["Key"] for obj in page.get("Contents", [])]
    return found


def read_object(store: LocalStore, key: str) -> bytes:
    client, bucket = s3_admin(store)
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    private = start_local_store(tmp_path_factory.mktemp("contract") / "data")
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture(scope="module")
def api(store: LocalStore) -> Iterator[Api]:
    client = Api(store)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def seeded(store: LocalStore) -> dict[str, Any]:
    datasets: dict[str, Any] = store.manifest()["datasets"]
    return datasets


def handle_of(seeded: dict[str, Any], name: str) -> str:
    handle: str = seeded[name]["handle"]
    return handle


def fresh_dataset(api: Api, user: str = "alice", name: str = "Contract test dataset") -> str:
    document = api.item(api.store.manifest()["datasets"]["reef-temperatures"]["handle"])
    collection_format = document["collection_format"]
    collection_format["dataset_info"]["name"] = name
    response = api.post(user, "/register/mint-dataset", json=collection_format)
    assert response.status_code == 200, response.text
    handle: str = response.json()["handle"]
    return handle


def valid_collection_format(api: Api, seeded: dict[str, Any]) -> dict[str, Any]:
    collection_format: dict[str, Any] = api.item(handle_of(seeded, "reef-temperatures"))[
        "collection_format"
    ]
    return collection_format


# --------------------------------------------------------------------------- §2 conventions


def test_health_needs_no_token(api: Api) -> None:
    response = api.get(None, "/")
    assert response.status_code == 200
    assert response.json() == {"message": "Health check successful."}


def test_discovery_document(api: Api, store: LocalStore) -> None:
    document = api.get(None, "/.well-known/provenafs").json()
    admin = json.loads((store.data_dir / "s3-admin.json").read_text())
    assert document == {
        "s3_endpoint_url": admin["endpoint_url"],
        "region": "ap-southeast-2",
        "realm_url": f"{store.base_url}/auth/realms/provena",
        "bucket": admin["bucket"],
        "client_id": "client-tools",
        **dict.fromkeys(
            ["registry_api", "prov_api", "search_api", "job_api", "auth_api"], store.base_url
        ),
    }
    assert api.get(None, "/auth/realms/provena").json()["public_key"]


def test_s3_admin_file_is_private(store: LocalStore) -> None:
    assert (store.data_dir / "s3-admin.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not.a.token", "Basic YWxpY2U6cGFzcw==", "Bearer a.b.c"],
)
def test_missing_or_invalid_token_is_401(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = api.http.get("/check-access/check-general-access", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    # docs/API.md §2: no header or another scheme fails before any token check.
    if authorization is None or not authorization.startswith("Bearer"):
        assert response.json() == {"detail": "Not authenticated"}
    else:
        assert response.json()["detail"] in {
            "Could not validate credentials",
            "Token had incorrect structure.",
        }


def test_tampered_token_is_401(api: Api) -> None:
    token = api.store.token("alice")
    header, payload, signature = token.split(".")
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    response = api.http.get(
        "/check-access/check-read-access",
        headers={"Authorization": f"Bearer {header}.{payload}.{flipped}"},
    )
    assert response.status_code == 401
    assert response.json() == UNAUTHENTICATED


def test_check_access_routes(api: Api) -> None:
    for path in ("general", "read", "write"):
        response = api.get("alice", f"/check-access/check-{path}-access")
        assert response.status_code == 200
        user = response.json()
        assert list(user) == ["username", "email", "roles", "access_token"]
        assert user["username"] == "alice"
        assert user["email"] == "alice@example.org"
        assert user["access_token"] == api.tokens["alice"]
        assert "entity-registry-read" in user["roles"]
    response = api.get("alice", "/check-access/check-admin-access")
    assert (response.status_code, response.json()) == (401, WRONG_ROLE)
    assert api.get("admin", "/check-access/check-admin-access").status_code == 200


def test_user_without_realm_roles(api: Api, store: LocalStore) -> None:
    assert store.serve_cli("user", "add", "norole", "--roles", "").returncode == 0
    assert api.get("norole", "/check-access/check-general-access").status_code == 200
    response = api.get("norole", "/check-access/check-read-access")
    assert (response.status_code, response.json()) == (401, WRONG_ROLE)
    response = api.fetch("norole", "10378.1/1932275")
    assert (response.status_code, response.json()) == (401, WRONG_ROLE)
    assert store.serve_cli("user", "add", "reader", "--roles", "r").returncode == 0
    response = api.post("reader", "/register/mint-dataset", json={})
    assert (response.status_code, response.json()) == (401, WRONG_ROLE)


def test_no_trailing_slash_redirects(api: Api, seeded: dict[str, Any]) -> None:
    response = api.get(
        "alice",
        "/registry/items/fetch-dataset/",
        params={"handle_id": handle_of(seeded, "reef-temperatures")},
    )
    assert response.status_code == 404
    response = api.post("alice", "/registry/items/list/", json={})
    assert response.status_code in (404, 405)


# --------------------------------------------------------------------------- fetch


def test_fetch_shape(api: Api, seeded: dict[str, Any]) -> None:
    handle = handle_of(seeded, "reef-temperatures")
    response = api.fetch("alice", handle)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "item", "roles", "locked"]
    assert body["status"] == {
        "success": True,
        "details": f"Successfully fetched data for handle '{handle}'",
    }
    assert body["roles"] == ITEM_ROLES
    assert body["locked"] is False
    item = body["item"]
    assert list(item) == ITEM_KEYS
    assert item["id"] == handle
    assert item["owner_username"] == "alice"
    assert item["release_approver"] is None
    assert item["release_timestamp"] is None
    assert item["access_info_uri"] is None
    assert item["item_category"] == "ENTITY"
    assert item["record_type"] == "COMPLETE_ITEM"
    assert isinstance(item["created_timestamp"], int)
    assert isinstance(item["updated_timestamp"], int)
    sanitized = handle.replace(".", "-").replace("/", "-")
    assert item["s3"]["path"] == f"datasets/{sanitized}/"
    assert item["s3"]["s3_uri"] == f"s3://{item['s3']['bucket_name']}/datasets/{sanitized}/"
    info = item["collection_format"]["dataset_info"]
    assert info["purpose"] is None  # null optionals are present
    assert info["version"] is None
    assert item["display_name"] == info["name"]
    for entry in item["history"]:
        assert list(entry) == ["id", "timestamp", "reason", "username", "item"]
        assert isinstance(entry["timestamp"], int)
        assert entry["item"]["collection_format"]["dataset_info"]["name"]
        assert entry["item"]["s3"] == item["s3"]
    assert item["history"][-1]["reason"] == "Initial record creation"


def test_fetch_bad_ids(api: Api, store: LocalStore) -> None:
    manifest = store.manifest()
    for handle in ["", "10378.1/1", "not a handle", *manifest["non_dataset_ids"]]:
        response = api.fetch("alice", handle)
        assert response.status_code == 400, handle
        assert isinstance(response.json()["detail"], str)
    response = api.fetch("alice", manifest["incomplete_dataset"])
    assert response.status_code == 400
    assert "seed item" in response.json()["detail"]
    response = api.get("alice", "/registry/items/fetch-dataset")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "handle_id"]
    response = api.get("alice", "/registry/items/fetch-dataset", params={"id": "10378.1/1"})
    assert response.status_code == 422


def test_fetch_without_item_role_is_401(api: Api, seeded: dict[str, Any]) -> None:
    response = api.fetch("alice", handle_of(seeded, "private-bob"))
    assert response.status_code == 401
    assert response.json() == {"detail": "You are not authorised to fetch this item."}


# --------------------------------------------------------------------------- list


def list_all(api: Api, user: str, page_size: int, **extra: Any) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    body: dict[str, Any] = {"page_size": page_size, **extra}
    while True:
        response = api.post(user, "/registry/items/list", json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        if page["pagination_key"] is None:
            return pages
        body = {"page_size": page_size, "pagination_key": page["pagination_key"], **extra}
        assert len(pages) < 500


def test_list_shape_and_accepted_bodies(api: Api) -> None:
    for body in (
        {"page_size": 20},
        {},
        {"sort_by": None, "pagination_key": None, "page_size": 5},
        {"sort_by": {"sort_type": "DISPLAY_NAME", "ascending": True}},
    ):
        response = api.post("alice", "/registry/items/list", json=body)
        assert response.status_code == 200, (body, response.text)
        page = response.json()
        assert set(page) == LIST_KEYS
        assert page["status"]["success"] is True
        assert page["total_item_count"] == len(page["items"])
        assert page["seed_items"] == []
        assert page["seed_item_count"] == 0
        for item in page["items"]:
            assert list(item) == ITEM_KEYS


def test_list_walk_sees_every_visible_dataset_once(api: Api, store: LocalStore) -> None:
    manifest = store.manifest()["datasets"]
    pages = list_all(api, "alice", 3)
    seen = [item["id"] for page in pages for item in page["items"]]
    assert len(seen) == len(set(seen))
    hidden = {manifest["private-bob"]["handle"]}
    expected = {entry["handle"] for entry in manifest.values()} - hidden
    assert expected <= set(seen)
    assert not hidden & set(seen)
    assert sum(page["not_authorised_count"] for page in pages) >= 1
    # the Limit applies before filtering: some page is short while more pages follow
    assert any(len(p["items"]) < 3 and p["pagination_key"] is not None for p in pages)
    admin_seen = [i["id"] for p in list_all(api, "admin", 7) for i in p["items"]]
    assert set(admin_seen) >= expected | hidden
    key = pages[0]["pagination_key"]
    assert key is not None
    assert set(key) == {"id", "item_subtype", "updated_timestamp"}


def test_list_default_order_is_newest_updated_first(api: Api) -> None:
    pages = list_all(api, "admin", 50)
    stamps = [item["updated_timestamp"] for page in pages for item in page["items"]]
    assert stamps == sorted(stamps, reverse=True)
    names = [
        item["display_name"]
        for page in list_all(
            api, "admin", 4, sort_by={"sort_type": "DISPLAY_NAME", "ascending": True}
        )
        for item in page["items"]
    ]
    assert names == sorted(names)


@pytest.mark.parametrize(
    "body",
    [
        {"page_size": 0},
        {"page_size": "many"},
        {"sort_by": {"sort_type": "SIZE"}},
        {"sort_by": {"sort_type": "ACCESS_INFO_URI_BEGINS_WITH"}},
        {"sort_by": {"sort_type": "DISPLAY_NAME", "begins_with": "x"}},
        {"pagination_key": "opaque?"},
    ],
)
def test_list_bad_bodies_are_422(api: Api, body: dict[str, Any]) -> None:
    assert api.post("alice", "/registry/items/list", json=body).status_code == 422


def test_list_foreign_pagination_key_is_400(api: Api) -> None:
    response = api.post("alice", "/registry/items/list", json={"pagination_key": {"x": 1}})
    assert response.status_code == 400


# --------------------------------------------------------------------------- credentials


def test_read_credentials_shape_and_use(
    api: Api, store: LocalStore, seeded: dict[str, Any]
) -> None:
    entry = seeded["reef-temperatures"]
    response = api.creds("bob", entry["handle"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["status", "credentials", "console_session_url"]
    assert body["status"] == {
        "success": True,
        "details": "STS credentials generated successfully for specified path.",
    }
    assert body["console_session_url"] is None
    creds = body["credentials"]
    assert list(creds) == [
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "expiry",
    ]
    expiry = dt.datetime.fromisoformat(creds["expiry"])
    assert expiry.tzinfo is not None
    assert expiry > dt.datetime.now(dt.UTC)
    admin = json.loads((store.data_dir / "s3-admin.json").read_text())
    scoped = boto3.client(
        "s3",
        endpoint_url=admin["endpoint_url"],
        aws_access_key_id=creds["aws_access_key_id"],
        aws_secret_access_key=creds["aws_secret_access_key"],
        aws_session_token=creds["aws_session_token"],
        region_name="ap-southeast-2",
    )
    item = api.item(entry["handle"])
    key = item["s3"]["path"] + "raw/loggers-2023.csv"
    data = scoped.get_object(Bucket=item["s3"]["bucket_name"], Key=key)["Body"].read()
    assert hashlib.sha256(data).hexdigest() == entry["files"]["raw/loggers-2023.csv"]["sha256"]


def test_credentials_request_needs_both_fields(api: Api, seeded: dict[str, Any]) -> None:
    response = api.post(
        "alice",
        "/registry/credentials/generate-read-access-credentials",
        json={"dataset_id": handle_of(seeded, "reef-temperatures")},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "console_session_required"]


def test_credential_quirks(api: Api, seeded: dict[str, Any]) -> None:
    locked = api.creds("alice", handle_of(seeded, "locked"), "write")
    assert locked.status_code == 401
    assert locked.json()["detail"].startswith("This dataset is locked")
    released = api.creds("bob", handle_of(seeded, "released"), "write")
    assert released.status_code == 403
    assert "pending review or is released" in released.json()["detail"]
    assert api.creds("bob", handle_of(seeded, "released"), "read").status_code == 200
    no_role = api.creds("bob", handle_of(seeded, "reef-temperatures"), "write")
    assert no_role.status_code == 401
    assert no_role.json() == {
        "detail": "You do not have sufficient permissions to write to this dataset!"
    }
    response = api.creds("alice", handle_of(seeded, "metadata-only"), "read")
    assert response.json() == {
        "detail": "You do not have sufficient permissions to read from this dataset!"
    }
    assert api.creds("alice", "10378.1/1", "read").status_code == 400
    assert api.creds("admin", handle_of(seeded, "private-bob"), "write").status_code == 200


# --------------------------------------------------------------------------- presign


def test_presigned_url_downloads_the_file(api: Api, seeded: dict[str, Any]) -> None:
    entry = seeded["reef-temperatures"]
    path = "données été/mesures à Cairns.csv"
    response = api.post(
        "bob",
        "/registry/items/generate-presigned-url",
        json={"dataset_id": entry["handle"], "file_path": path, "expires_in": 600},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["dataset_id", "file_path", "presigned_url"]
    assert body["file_path"] == path
    download = httpx.get(body["presigned_url"], timeout=30)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == entry["files"][path]["sha256"]


def presign_refusal(api: Api, seeded: dict[str, Any], file_path: str) -> tuple[int, Any]:
    response = api.post(
        "alice",
        "/registry/items/generate-presigned-url",
        json={"dataset_id": handle_of(seeded, "reef-temperatures"), "file_path": file_path},
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("file_path", "illegal"),
    [
        ("../private/data.csv", "../"),
        ("raw/../README.md", "../"),
        ("raw/..", ".."),
        ("raw//loggers-2023.csv", "//"),
        ("raw\\loggers-2023.csv", "\\"),
        ("..", ".."),
    ],
)
def test_presign_refuses_paths_that_leave_the_dataset(
    api: Api, seeded: dict[str, Any], file_path: str, illegal: str
) -> None:
    """The first illegal substring found names the refusal, as the real data store words it."""
    detail = f"File path '{file_path}' contains '{illegal}' which is not allowed."
    assert presign_refusal(api, seeded, file_path) == (400, {"detail": detail})


@pytest.mark.parametrize(
    "file_path",
    [
        "no-such-file.csv",
        "",
        # keys S3 itself refuses (issue 10 item 4: these answered 500 with a traceback)
        "./README.md",
        "raw/./loggers-2023.csv",
        "raw/.",
        ".",
        "README.md\x00",
        "\x00",
    ],
)
def test_presign_of_a_missing_or_impossible_file_is_400(
    api: Api, seeded: dict[str, Any], file_path: str
) -> None:
    handle = handle_of(seeded, "reef-temperatures")
    detail = f"File path '{file_path}' does not exist in dataset with id {handle}"
    assert presign_refusal(api, seeded, file_path) == (400, {"detail": detail})


def test_presign_rules(api: Api, seeded: dict[str, Any]) -> None:
    def presign(user: str, name: str, **extra: Any) -> httpx.Response:
        body = {"dataset_id": handle_of(seeded, name), "file_path": "data.csv", **extra}
        return api.post(user, "/registry/items/generate-presigned-url", json=body)

    assert presign("alice", "metadata-only").status_code == 401
    assert presign("alice", "private-bob").status_code == 401
    assert presign("alice", "metadata-only", expires_in=0).status_code == 422
    assert presign("bob", "metadata-only", expires_in=86401).status_code == 422
    assert presign("bob", "metadata-only", expires_in=86400).status_code == 200
    assert presign("bob", "metadata-only", file_path="metadata.json").status_code == 200


# --------------------------------------------------------------------------- mint, update, revert


def test_mint_writes_record_and_metadata_json(
    api: Api, store: LocalStore, seeded: dict[str, Any]
) -> None:
    collection_format = valid_collection_format(api, seeded)
    collection_format["dataset_info"]["name"] = "Minted in a contract test"
    response = api.post("bob", "/register/mint-dataset", json=collection_format)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "handle", "s3_location", "register_create_activity_session_id"]
    assert body["status"]["success"] is True
    handle = body["handle"]
    assert handle.startswith("10378.1/")
    item = api.item(handle)
    assert item["owner_username"] == "bob"
    assert item["s3"] == body["s3_location"]
    assert (
        item["workflow_links"]["create_activity_workflow_id"]
        == (body["register_create_activity_session_id"])
    )
    keys = keys_under(store, item["s3"]["path"])
    assert keys == [item["s3"]["path"] + "metadata.json"]
    written = read_object(store, keys[0])
    expected = {k: v for k, v in collection_format.items()}
    assert json.loads(written)["dataset_info"]["name"] == "Minted in a contract test"
    assert "purpose" not in json.loads(written)["dataset_info"]  # exclude_none
    assert written.startswith(b'{\n  "associations": {')
    assert json.loads(written)["associations"] == {
        k: v for k, v in expected["associations"].items() if v is not None
    }


def test_mint_validation_failure_is_200_with_success_false(
    api: Api, seeded: dict[str, Any]
) -> None:
    collection_format = valid_collection_format(api, seeded)
    collection_format["approvals"]["ethics_access"] = {"relevant": True, "obtained": False}
    before = len([i for p in list_all(api, "admin", 100) for i in p["items"]])
    response = api.post("alice", "/register/mint-dataset", json=collection_format)
    assert response.status_code == 200
    body = response.json()
    assert body["status"]["success"] is False
    assert body["handle"] is None
    assert body["s3_location"] is None
    after = len([i for p in list_all(api, "admin", 100) for i in p["items"]])
    assert after == before


@pytest.mark.parametrize(
    "mutation",
    [
        lambda cf: cf["dataset_info"].update(surprise="key"),
        lambda cf: cf["dataset_info"].update(name=""),
        lambda cf: cf["dataset_info"].update(license="not a url"),
        lambda cf: cf["associations"].pop("organisation_id"),
        lambda cf: cf["dataset_info"].update(created_date={"relevant": True, "value": None}),
        lambda cf: cf["dataset_info"]["access_info"].update(reposited=False),
        lambda cf: cf.update(approvals="yes"),
    ],
)
def test_mint_parse_failures_are_422(api: Api, seeded: dict[str, Any], mutation: Any) -> None:
    collection_format = valid_collection_format(api, seeded)
    mutation(collection_format)
    response = api.post("alice", "/register/mint-dataset", json=collection_format)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_validate_metadata_returns_a_flat_status(api: Api, seeded: dict[str, Any]) -> None:
    collection_format = valid_collection_format(api, seeded)
    response = api.post("alice", "/metadata/validate-metadata", json=collection_format)
    assert response.status_code == 200
    assert set(response.json()) == {"success", "details"}
    assert response.json()["success"] is True
    collection_format["dataset_info"]["published_date"] = {"relevant": True, "value": "2000-01-01"}
    response = api.post("alice", "/metadata/validate-metadata", json=collection_format)
    assert response.status_code == 200
    assert response.json()["success"] is False
    collection_format["dataset_info"]["extra"] = 1
    assert (
        api.post("alice", "/metadata/validate-metadata", json=collection_format).status_code == 422
    )


def test_dataset_schema(api: Api) -> None:
    response = api.get("alice", "/metadata/dataset-schema")
    assert response.status_code == 200
    schema = response.json()["json_schema"]
    assert set(schema["properties"]) == {"associations", "approvals", "dataset_info"}
    assert "version" not in json.dumps(schema["$defs"]["CollectionFormatDatasetInfo"]["properties"])


def test_update_metadata(api: Api, store: LocalStore) -> None:
    handle = fresh_dataset(api)
    item = api.item(handle)
    collection_format = item["collection_format"]
    collection_format["dataset_info"]["name"] = "Renamed by update"
    collection_format["dataset_info"]["user_metadata"] = {"k": "v"}
    response = api.post(
        "alice",
        "/register/update-metadata",
        params={"handle_id": handle, "reason": "Rename it"},
        json=collection_format,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["status", "handle", "s3_location"]
    assert body["handle"] == handle
    updated = api.item(handle)
    assert updated["display_name"] == "Renamed by update"
    assert updated["user_metadata"] == {"k": "v"}
    assert [h["reason"] for h in updated["history"]] == ["Rename it", "Initial record creation"]
    assert [h["id"] for h in updated["history"]] == [1, 0]
    assert updated["updated_timestamp"] >= item["updated_timestamp"]
    written = json.loads(read_object(store, updated["s3"]["path"] + "metadata.json"))
    assert written["dataset_info"]["name"] == "Renamed by update"
    # the reason is a required query parameter
    response = api.post(
        "alice", "/register/update-metadata", params={"handle_id": handle}, json=collection_format
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "reason"]
    # a field-rule failure is 400 and changes nothing
    collection_format["approvals"]["export_controls"] = {"relevant": False, "obtained": True}
    response = api.post(
        "alice",
        "/register/update-metadata",
        params={"handle_id": handle, "reason": "bad"},
        json=collection_format,
    )
    assert response.status_code == 400
    assert api.item(handle) == updated


def test_revert_metadata(api: Api, store: LocalStore) -> None:
    handle = fresh_dataset(api, name="Before revert")
    collection_format = api.item(handle)["collection_format"]
    collection_format["dataset_info"]["name"] = "After update"
    api.post(
        "alice",
        "/register/update-metadata",
        params={"handle_id": handle, "reason": "change"},
        json=collection_format,
    )
    response = api.put(
        "alice",
        "/register/revert-metadata",
        json={"id": handle, "history_id": 0, "reason": "undo"},
    )
    assert response.status_code == 200
    assert list(response.json()) == ["status"]
    item = api.item(handle)
    assert item["display_name"] == "Before revert"
    assert item["history"][0]["reason"] == "Reverting dataset to history id 0. Reason: undo."
    assert item["history"][0]["id"] == 2
    written = json.loads(read_object(store, item["s3"]["path"] + "metadata.json"))
    assert written["dataset_info"]["name"] == "Before revert"
    response = api.put(
        "alice", "/register/revert-metadata", json={"id": handle, "history_id": 9, "reason": "x"}
    )
    assert response.status_code == 400
    assert api.item(handle) == item
    response = api.put(
        "alice", "/register/revert-metadata", json={"id": handle, "history_id": "zero"}
    )
    assert response.status_code == 422


# --------------------------------------------------------------------------- versioning


def test_version_chain_of_three(api: Api, store: LocalStore) -> None:
    v1 = fresh_dataset(api, name="Chain")
    client, bucket = s3_admin(store)
    client.put_object(Bucket=bucket, Key=api.item(v1)["s3"]["path"] + "data.bin", Body=b"v1")
    response = api.post("alice", "/register/version", json={"id": v1, "reason": "second"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["new_version_id", "version_job_session_id"]
    v2 = body["new_version_id"]
    v2_item = api.item(v2)
    assert keys_under(store, v2_item["s3"]["path"]) == [v2_item["s3"]["path"] + "metadata.json"]
    assert v2_item["versioning_info"] == {
        "previous_version": v1,
        "version": 2,
        "reason": "second",
        "next_version": None,
    }
    assert v2_item["workflow_links"] == {
        "create_activity_workflow_id": None,
        "version_activity_workflow_id": body["version_job_session_id"],
    }
    assert [h["reason"] for h in v2_item["history"]] == [
        "(System) Dataset S3 path updated to new version's storage location",
        f"New version of existing item (id={v1}).",
    ]
    assert v2_item["history"][1]["item"]["s3"] == api.item(v1)["s3"]
    assert api.item(v1)["versioning_info"]["next_version"] == v2
    assert "data.bin" in " ".join(keys_under(store, api.item(v1)["s3"]["path"]))
    # only the latest may be versioned
    again = api.post("alice", "/register/version", json={"id": v1, "reason": "branch"})
    assert again.status_code == 400
    assert "not the latest version" in again.json()["detail"]
    v3 = api.post("alice", "/register/version", json={"id": v2, "reason": "third"}).json()[
        "new_version_id"
    ]
    v3_item = api.item(v3)
    assert v3_item["versioning_info"]["version"] == 3
    assert v3_item["versioning_info"]["previous_version"] == v2
    assert api.item(v2)["versioning_info"]["next_version"] == v3
    assert api.item(v1)["versioning_info"]["next_version"] == v2


def test_version_by_another_admin_changes_owner(api: Api, seeded: dict[str, Any]) -> None:
    response = api.post(
        "admin", "/register/version", json={"id": handle_of(seeded, "private-bob"), "reason": "x"}
    )
    assert response.status_code == 200
    new = api.fetch("admin", response.json()["new_version_id"]).json()
    assert new["item"]["owner_username"] == "admin"
    assert new["locked"] is False
    assert api.fetch("alice", new["item"]["id"]).status_code == 401  # general=[] was copied


def test_version_bad_ids(api: Api, store: LocalStore) -> None:
    manifest = store.manifest()
    for handle in ["10378.1/1", manifest["incomplete_dataset"], *manifest["non_dataset_ids"]]:
        response = api.post("admin", "/register/version", json={"id": handle, "reason": "x"})
        assert response.status_code == 400, handle
    assert api.post("admin", "/register/version", json={"id": "x"}).status_code == 422


# --------------------------------------------------------------------------- release


def test_release_lifecycle(api: Api) -> None:
    handle = fresh_dataset(api, user="bob", name="To be released")
    reviewer = api.store.manifest()["persons"]["admin"]  # reviewers are Person ids
    assert api.get("alice", "/release/sys-reviewers/list").json() == [reviewer]
    request = {"dataset_id": handle, "approver_id": reviewer, "notes": "please"}
    response = api.post("alice", "/release/approval-request", json=request)
    assert response.status_code == 401  # alice has no admin role on bob's dataset
    bad = api.post("bob", "/release/approval-request", json={**request, "approver_id": "carol"})
    assert bad.status_code == 400
    response = api.post("bob", "/release/approval-request", json=request)
    assert response.status_code == 200
    assert list(response.json()) == ["dataset_id", "approver_id", "details"]
    item = api.item(handle)
    assert item["release_status"] == "PENDING"
    assert item["release_approver"] == reviewer
    assert isinstance(item["release_timestamp"], int)
    assert item["release_history"][0]["action"] == "REQUEST"
    assert len(item["history"]) == 1  # release changes add no metadata history
    assert api.creds("bob", handle, "write").status_code == 403
    action = {"dataset_id": handle, "approve": True, "notes": "ok"}
    assert api.put("bob", "/release/action-approval-request", json=action).status_code == 401
    response = api.put("admin", "/release/action-approval-request", json=action)
    assert response.status_code == 200
    assert response.json()["approved"] is True
    assert list(response.json()) == ["dataset_id", "approved", "details"]
    assert api.item(handle)["release_status"] == "RELEASED"
    assert api.post("bob", "/release/approval-request", json=request).status_code == 400
    assert api.put("admin", "/release/action-approval-request", json=action).status_code == 400


def test_sys_reviewer_routes(api: Api) -> None:
    reviewer = api.store.manifest()["persons"]["admin"]
    assert (
        api.post("alice", "/release/sys-reviewers/add", params={"reviewer_id": "bob"}).status_code
        == 401
    )
    response = api.post("admin", "/release/sys-reviewers/add", params={"reviewer_id": "bob"})
    assert (response.status_code, response.json()) == (200, None)
    assert sorted(api.get("alice", "/release/sys-reviewers/list").json()) == sorted(
        [reviewer, "bob"]
    )
    assert (
        api.post("admin", "/release/sys-reviewers/add", json={"reviewer_id": "x"}).status_code
        == 422
    )
    response = api.delete("admin", "/release/sys-reviewers/delete", params={"reviewer_id": "bob"})
    assert (response.status_code, response.json()) == (200, None)
    assert api.get("alice", "/release/sys-reviewers/list").json() == [reviewer]


def test_admin_routes(api: Api) -> None:
    assert api.get("alice", "/admin/config").status_code == 401
    config = api.get("admin", "/admin/config").json()
    assert config["region"] == "ap-southeast-2"
    assert "secret" not in json.dumps(config).lower()
    assert api.get("admin", "/admin/sentry-debug").status_code == 500


# --------------------------------------------------------------------------- bad input


def test_huge_malformed_and_wrong_typed_bodies(api: Api, seeded: dict[str, Any]) -> None:
    before = api.item(handle_of(seeded, "history"))
    huge = b'{"page_size": 20, "pad": "' + b"x" * (2 << 20) + b'"}'
    headers = {**api.headers("alice"), "Content-Type": "application/json"}
    response = api.http.post("/registry/items/list", content=huge, headers=headers)
    assert response.status_code == 413
    response = api.http.post(
        "/register/update-metadata",
        params={"handle_id": before["id"], "reason": "huge"},
        content=b'{"associations": "' + b"y" * (2 << 20) + b'"}',
        headers={**api.headers("carol"), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    # undecodable bytes are 400 "error parsing the body", as FastAPI (and so Provena) answers
    for broken, status in (
        (b"{not json", 422),
        (b"", 422),
        (b"[1, 2", 422),
        (b"\xff\xfe\x00", 400),
    ):
        response = api.http.post(
            "/register/update-metadata",
            params={"handle_id": before["id"], "reason": "broken"},
            content=broken,
            headers={**api.headers("carol"), "Content-Type": "application/json"},
        )
        assert response.status_code == status, broken
    response = api.post(
        "carol",
        "/register/update-metadata",
        params={"handle_id": before["id"], "reason": "types"},
        json={"associations": [], "approvals": 5, "dataset_info": None},
    )
    assert response.status_code == 422
    assert api.item(handle_of(seeded, "history")) == before


def test_unknown_ids_change_nothing(api: Api, seeded: dict[str, Any]) -> None:
    before = [i["id"] for p in list_all(api, "admin", 100) for i in p["items"]]
    collection_format = valid_collection_format(api, seeded)
    response = api.post(
        "admin",
        "/register/update-metadata",
        params={"handle_id": "10378.1/999", "reason": "x"},
        json=collection_format,
    )
    assert response.status_code == 400
    response = api.put(
        "admin",
        "/register/revert-metadata",
        json={"id": "10378.1/999", "history_id": 0, "reason": "x"},
    )
    assert response.status_code == 400
    after = [i["id"] for p in list_all(api, "admin", 100) for i in p["items"]]
    assert after == before


# --------------------------------------------------------------------------- faults


def test_fault_injection_route(api: Api) -> None:
    rule = {"path_prefix": "/registry/items/list", "fail_next": 2, "status": 503}
    assert api.put("alice", "/_provenafs/faults", json=rule).status_code == 401
    response = api.put("admin", "/_provenafs/faults", json=rule)
    assert response.status_code == 200
    assert response.json()["faults"][0]["fail_next"] == 2
    statuses = [api.post("alice", "/registry/items/list", json={}).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    api.put(
        "admin", "/_provenafs/faults", json={"path_prefix": None, "error_rate": 1.0, "status": 500}
    )
    assert api.get("alice", "/check-access/check-read-access").status_code == 500
    assert api.get(None, "/").status_code == 200  # never faulted
    assert api.get(None, "/auth/realms/provena").status_code == 200
    cleared = api.delete("admin", "/_provenafs/faults")
    assert cleared.json() == {"faults": []}
    assert api.get("alice", "/check-access/check-read-access").status_code == 200
    bad = api.put("admin", "/_provenafs/faults", json={"error_rate": 2})
    assert bad.status_code == 422


def test_server_log_holds_no_secrets(api: Api, store: LocalStore) -> None:
    log = store.log_path.read_text(errors="replace")
    admin = json.loads((store.data_dir / "s3-admin.json").read_text())
    assert admin["secret_access_key"] not in log
    for token in api.tokens.values():
        assert token not in log
        assert token.split(".")[2] not in log
    assert "aws_session_token" not in log
