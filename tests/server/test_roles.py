"""The role matrix over real HTTP: who may do what to which seeded dataset (docs/API.md §6).

Rows: owner, a general role, a group role, no role, metadata-read only, locked, released, and
the realm admin. Columns: fetch, list, read credentials, write credentials, presign, update,
revert, version. Each row runs against a private seeded server, in column order (version last,
since it makes the dataset no longer the latest).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStore, start_local_store
from tests.server.support import issue_token

pytestmark = pytest.mark.s3

ACTIONS = ("fetch", "list", "read", "write", "presign", "update", "revert", "version")

# (user, seed dataset) -> expected status per action; "list" is 200 if listed, 0 if absent
MATRIX: dict[tuple[str, str], dict[str, int]] = {
    # owner: everything (all five item roles)
    ("alice", "reef-temperatures"): dict.fromkeys(ACTIONS, 200),
    # general roles metadata-read + dataset-data-read
    ("bob", "reef-temperatures"): {
        "fetch": 200,
        "list": 200,
        "read": 200,
        "write": 401,
        "presign": 200,
        "update": 401,
        "revert": 401,
        "version": 401,
    },
    # group role: reef-team has metadata-read/-write and dataset-data-read/-write, not admin
    ("alice", "group-shared"): {
        "fetch": 200,
        "list": 200,
        "read": 200,
        "write": 200,
        "presign": 200,
        "update": 200,
        "revert": 200,
        "version": 401,
    },
    # no role at all (general=[], not in the group)
    ("bob", "group-shared"): {
        "fetch": 401,
        "list": 0,
        "read": 401,
        "write": 401,
        "presign": 401,
        "update": 401,
        "revert": 401,
        "version": 401,
    },
    # metadata-read only: the record but not the data
    ("alice", "metadata-only"): {
        "fetch": 200,
        "list": 200,
        "read": 401,
        "write": 401,
        "presign": 401,
        "update": 401,
        "revert": 401,
        "version": 401,
    },
    # locked, as the owner: reads and versioning allowed, writes and metadata edits 401
    ("alice", "locked"): {
        "fetch": 200,
        "list": 200,
        "read": 200,
        "write": 401,
        "presign": 200,
        "update": 401,
        "revert": 401,
        "version": 200,
    },
    # released, as the owner: files frozen (403), metadata and versioning allowed
    ("bob", "released"): {
        "fetch": 200,
        "list": 200,
        "read": 200,
        "write": 403,
        "presign": 200,
        "update": 200,
        "revert": 200,
        "version": 200,
    },
    # the realm admin is omnipotent
    ("admin", "private-bob"): dict.fromkeys(ACTIONS, 200),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    private = start_local_store(tmp_path_factory.mktemp("roles") / "data")
    try:
        yield private
    finally:
        private.stop()


@pytest.fixture(scope="module")
def tokens(store: LocalStore) -> dict[str, str]:
    return {user: issue_token(store, user) for user in ("alice", "bob", "carol", "admin")}


def listed(http: httpx.Client, headers: dict[str, str], handle: str) -> bool:
    body: dict[str, Any] = {"page_size": 4}
    while True:
        page = http.post("/registry/items/list", json=body, headers=headers).json()
        if any(item["id"] == handle for item in page["items"]):
            return True
        if page["pagination_key"] is None:
            return False
        body = {"page_size": 4, "pagination_key": page["pagination_key"]}


def attempt(
    http: httpx.Client,
    headers: dict[str, str],
    admin: dict[str, str],
    *,
    action: str,
    handle: str,
    file_path: str,
) -> int:
    if action == "fetch":
        return http.get(
            "/registry/items/fetch-dataset", params={"handle_id": handle}, headers=headers
        ).status_code
    if action == "list":
        return 200 if listed(http, headers, handle) else 0
    if action in ("read", "write"):
        return http.post(
            f"/registry/credentials/generate-{action}-access-credentials",
            json={"dataset_id": handle, "console_session_required": False},
            headers=headers,
        ).status_code
    if action == "presign":
        return http.post(
            "/registry/items/generate-presigned-url",
            json={"dataset_id": handle, "file_path": file_path, "expires_in": 60},
            headers=headers,
        ).status_code
    if action == "update":
        record = http.get(
            "/registry/items/fetch-dataset", params={"handle_id": handle}, headers=admin
        ).json()["item"]
        return http.post(
            "/register/update-metadata",
            params={"handle_id": handle, "reason": "role matrix"},
            json=record["collection_format"],
            headers=headers,
        ).status_code
    if action == "revert":
        return http.put(
            "/register/revert-metadata",
            json={"id": handle, "history_id": 0, "reason": "role matrix"},
            headers=headers,
        ).status_code
    assert action == "version"
    return http.post(
        "/register/version", json={"id": handle, "reason": "role matrix"}, headers=headers
    ).status_code


@pytest.mark.parametrize(("user", "dataset"), list(MATRIX), ids=[f"{u}-{d}" for u, d in MATRIX])
def test_role_matrix(store: LocalStore, tokens: dict[str, str], user: str, dataset: str) -> None:
    handle = store.manifest()["datasets"][dataset]["handle"]
    file_path = "README.md" if dataset == "reef-temperatures" else "data.csv"
    headers = {"Authorization": f"Bearer {tokens[user]}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with httpx.Client(base_url=store.base_url, timeout=60) as http:
        before = http.get(
            "/registry/items/fetch-dataset", params={"handle_id": handle}, headers=admin
        ).json()["item"]
        observed = {}
        for action in ACTIONS:
            observed[action] = attempt(
                http, headers, admin, action=action, handle=handle, file_path=file_path
            )
        after = http.get(
            "/registry/items/fetch-dataset", params={"handle_id": handle}, headers=admin
        ).json()["item"]
    assert observed == MATRIX[(user, dataset)]
    writes = [a for a in ("update", "revert") if MATRIX[(user, dataset)][a] == 200]
    assert len(after["history"]) == len(before["history"]) + len(writes)
    if MATRIX[(user, dataset)]["version"] != 200:
        assert after["versioning_info"] == before["versioning_info"]
    else:
        assert after["versioning_info"]["next_version"] is not None


def test_fetch_roles_per_caller(store: LocalStore, tokens: dict[str, str]) -> None:
    """The ``roles`` a fetch reports are the caller's item roles, unexpanded (§8.3)."""
    datasets = store.manifest()["datasets"]
    expected = {
        ("carol", "reef-temperatures"): ["metadata-read", "dataset-data-read"],
        ("alice", "metadata-only"): ["metadata-read"],
        ("alice", "group-shared"): [
            "metadata-read",
            "metadata-write",
            "dataset-data-read",
            "dataset-data-write",
        ],
        ("bob", "many-files"): [
            "metadata-read",
            "metadata-write",
            "admin",
            "dataset-data-read",
            "dataset-data-write",
        ],
    }
    with httpx.Client(base_url=store.base_url, timeout=60) as http:
        for (user, dataset), roles in expected.items():
            response = http.get(
                "/registry/items/fetch-dataset",
                params={"handle_id": datasets[dataset]["handle"]},
                headers={"Authorization": f"Bearer {tokens[user]}"},
            )
            assert response.json()["roles"] == roles, (user, dataset)


def test_access_changes_take_effect(store: LocalStore, tokens: dict[str, str]) -> None:
    """``provenafs serve access`` edits the same registry the running server reads."""
    handle = store.manifest()["datasets"]["many-files"]["handle"]
    carol = {"Authorization": f"Bearer {tokens['carol']}"}
    with httpx.Client(base_url=store.base_url, timeout=60) as http:
        fetch = {"handle_id": handle}
        assert (
            http.get("/registry/items/fetch-dataset", params=fetch, headers=carol).status_code
            == 200
        )
        result = store.serve_cli("access", "many-files", "--general", "")
        assert result.returncode == 0, result.stderr
        assert (
            http.get("/registry/items/fetch-dataset", params=fetch, headers=carol).status_code
            == 401
        )
        result = store.serve_cli(
            "access", handle, "--group", "reef-team=metadata-read,dataset-data-read"
        )
        assert result.returncode == 0, result.stderr
        response = http.get("/registry/items/fetch-dataset", params=fetch, headers=carol)
        assert response.json()["roles"] == ["metadata-read", "dataset-data-read"]
