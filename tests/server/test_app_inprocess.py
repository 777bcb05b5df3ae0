"""The data store app over real HTTP, with storage and tokens faked: the façade without SeaweedFS.

uvicorn serves ``create_app`` in a thread on 127.0.0.1; an in-memory object store stands in for
S3 and a dictionary of tokens for the Keycloak-style authority. These run in a second and pin the
status quirks and shapes independently of the S3 server (the contract tests repeat them for real).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter

from provenafs.server.app import AppState, Reader, create_app
from provenafs.server.datastore import DataStore, ServerSettings
from provenafs.server.faults import FaultInjector
from provenafs.server.registry import Registry
from provenafs.server.seed import ADMIN_ROLES, USER_ROLES, seed_store
from tests.conftest import free_port


@dataclasses.dataclass(frozen=True)
class FakePrincipal:
    username: str
    email: str | None
    roles: tuple[str, ...]
    token: str


@dataclasses.dataclass(frozen=True)
class FakeCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: dt.datetime


class FakeAuthority:
    """Tokens are the usernames; ``expired`` stands for a token that no longer verifies."""

    def __init__(self, users: dict[str, tuple[str, ...]]) -> None:
        self.users = users

    def verify_access_token(self, token: str) -> FakePrincipal:
        if token not in self.users:
            raise ValueError("Could not validate credentials")
        return FakePrincipal(token, f"{token}@example.org", self.users[token], token)


class MemoryObjects:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.sessions: list[tuple[str, bool, str]] = []
        self.lock = threading.Lock()

    def prefix_exists(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in list(self.objects))

    def object_exists(self, key: str) -> bool:
        return key in self.objects

    def put_object(
        self, key: str, body: bytes, *, content_type: str = "binary/octet-stream"
    ) -> None:
        with self.lock:
            self.objects[key] = body

    def mint_credentials(
        self, prefix: str, *, write: bool, session_name: str, duration_seconds: int = 3600
    ) -> FakeCredentials:
        self.sessions.append((prefix, write, session_name))
        expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=duration_seconds)
        return FakeCredentials("ASIAFAKE", "fake-secret", "fake-session", expiration)

    def presign_get(self, key: str, *, creds: Any, expires_in: int, filename: str) -> str:
        return f"http://s3.invalid/{key}?expires={expires_in}"


@dataclasses.dataclass
class Running:
    base_url: str
    registry: Registry
    objects: MemoryObjects
    manifest: dict[str, Any]
    faults: FaultInjector

    def call(self, method: str, user: str | None, path: str, **kwargs: Any) -> httpx.Response:
        headers = {} if user is None else {"Authorization": f"Bearer {user}"}
        return httpx.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def handle(self, name: str) -> str:
        handle: str = self.manifest["datasets"][name]["handle"]
        return handle


def extra_router() -> APIRouter:
    """A route from outside ``app.py``, as further Provena services add theirs."""
    router = APIRouter()

    @router.get("/extra/whoami")
    def whoami(caller: Reader) -> dict[str, str]:
        return {"username": caller.username}

    return router


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir: Path = tmp_path_factory.mktemp("inprocess")
    registry = Registry.in_data_dir(data_dir)
    objects = MemoryObjects()
    settings = ServerSettings(
        bucket="bucket", s3_endpoint_url="http://s3.invalid", credential_ttl=60
    )
    datastore = DataStore(registry, objects, settings)
    manifest = seed_store(datastore, data_dir)
    users = {name: USER_ROLES for name in ("alice", "bob", "carol")}
    users |= {"admin": ADMIN_ROLES, "reader": ("entity-registry-read",), "nobody": ()}
    faults = FaultInjector()
    state = AppState(datastore, FakeAuthority(users), faults, routers=(extra_router(),))
    state.ready.set()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield Running(f"http://127.0.0.1:{port}", registry, objects, manifest, faults)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        registry.close()


def test_routers_given_to_the_app_share_its_realm_role_checks(running: Running) -> None:
    answer = running.call("GET", "reader", "/extra/whoami")
    assert (answer.status_code, answer.json()) == (200, {"username": "reader"})
    refused = running.call("GET", "nobody", "/extra/whoami")
    assert refused.status_code == 401
    assert refused.json() == {
        "detail": "You are not authorised to access this resource as you don't have the correct"
        " role."
    }
    anonymous = running.call("GET", None, "/extra/whoami")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


def test_seeding_twice_adds_nothing(running: Running, tmp_path: Path) -> None:
    registry = Registry.in_data_dir(tmp_path)
    objects = MemoryObjects()
    datastore = DataStore(registry, objects, ServerSettings("b", "http://s3.invalid"))
    first = seed_store(datastore, tmp_path)
    count = len(objects.objects)
    ids = registry.dataset_ids()
    second = seed_store(datastore, tmp_path)
    assert second == first
    assert len(objects.objects) == count
    assert registry.dataset_ids() == ids
    assert json.loads((tmp_path / "seed-manifest.json").read_text()) == first
    registry.close()


def test_seeded_metadata_json_matches_records(running: Running) -> None:
    reef = running.handle("reef-temperatures")
    item = running.call("GET", "admin", "/registry/items/fetch-dataset", params={"handle_id": reef})
    record = item.json()["item"]
    written = json.loads(running.objects.objects[record["s3"]["path"] + "metadata.json"])
    assert written["dataset_info"]["name"] == record["display_name"]
    assert running.objects.objects[record["s3"]["path"] + "raw/empty/"] == b""


@pytest.mark.parametrize(("user", "status"), [(None, 401), ("expired", 401), ("nobody", 401)])
def test_auth_failures(running: Running, user: str | None, status: int) -> None:
    response = running.call("POST", user, "/registry/items/list", json={})
    assert response.status_code == status
    if user == "nobody":
        assert "don't have the correct role" in response.json()["detail"]
    else:
        # no header at all fails before any token check, as FastAPI's OAuth2PasswordBearer does
        detail = "Not authenticated" if user is None else "Could not validate credentials"
        assert response.json() == {"detail": detail}
        assert response.headers["www-authenticate"] == "Bearer"


def test_read_only_realm_user_cannot_write(running: Running) -> None:
    handle = running.handle("reef-temperatures")
    body = {"dataset_id": handle, "console_session_required": False}
    path = "/registry/credentials/generate-write-access-credentials"
    assert running.call("POST", "reader", path, json=body).status_code == 401
    path = "/registry/credentials/generate-read-access-credentials"
    assert running.call("POST", "reader", path, json=body).status_code == 200


def test_credentials_session_names_and_advertised_expiry(running: Running) -> None:
    handle = running.handle("reef-temperatures")
    body = {"dataset_id": handle, "console_session_required": True}
    response = running.call(
        "POST", "alice", "/registry/credentials/generate-write-access-credentials", json=body
    )
    assert response.status_code == 200
    assert response.json()["console_session_url"] is None
    prefix, write, session = running.objects.sessions[-1]
    assert (write, session) == (True, "alice,write-prog-bucket-access")
    assert prefix.startswith("datasets/10378-1-")
    expiry = dt.datetime.fromisoformat(response.json()["credentials"]["expiry"])
    assert expiry <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)  # --credential-ttl 60
    assert expiry.microsecond == 0
    running.call("POST", "bob", "/registry/credentials/generate-read-access-credentials", json=body)
    assert running.objects.sessions[-1][1:] == (False, "bob,read-prog-bucket-access")


def test_presign_uses_its_own_session_name(running: Running) -> None:
    body = {"dataset_id": running.handle("locked"), "file_path": "data.csv", "expires_in": 5}
    response = running.call("POST", "bob", "/registry/items/generate-presigned-url", json=body)
    assert response.status_code == 200
    assert response.json()["presigned_url"].endswith("?expires=5")
    assert running.objects.sessions[-1][1:] == (
        False,
        "Generate-presigned-url-for-dataset-download",
    )


def test_version_of_a_locked_dataset_is_allowed_and_unlocked(running: Running) -> None:
    handle = running.handle("locked")
    response = running.call(
        "POST", "alice", "/register/version", json={"id": handle, "reason": "v"}
    )
    assert response.status_code == 200
    new = response.json()["new_version_id"]
    fetched = running.call(
        "GET", "alice", "/registry/items/fetch-dataset", params={"handle_id": new}
    )
    assert fetched.json()["locked"] is False
    prefix = fetched.json()["item"]["s3"]["path"]
    assert [k for k in running.objects.objects if k.startswith(prefix)] == [
        prefix + "metadata.json"
    ]


def test_update_on_a_locked_dataset_is_401_and_changes_nothing(running: Running) -> None:
    handle = running.handle("reef-temperatures")
    item = running.call(
        "GET", "alice", "/registry/items/fetch-dataset", params={"handle_id": handle}
    )
    before = item.json()["item"]
    lock_handle = running.handle("locked")
    response = running.call(
        "POST",
        "alice",
        "/register/update-metadata",
        params={"handle_id": lock_handle, "reason": "nope"},
        json=before["collection_format"],
    )
    assert response.status_code == 401
    assert response.json()["detail"].startswith("This dataset is locked")


def test_dataset_data_write_alone_cannot_edit_metadata(running: Running) -> None:
    """DS lets dataset-data-write through, REG refuses it: the caller sees 401 (§3.6)."""
    handle = running.handle("many-files")
    running.registry.set_access(handle, groups={"reef-team": ["dataset-data-write"]})
    fetched = running.call(
        "GET", "carol", "/registry/items/fetch-dataset", params={"handle_id": handle}
    )
    assert fetched.json()["roles"] == ["metadata-read", "dataset-data-read", "dataset-data-write"]
    response = running.call(
        "POST",
        "carol",
        "/register/update-metadata",
        params={"handle_id": handle, "reason": "x"},
        json=fetched.json()["item"]["collection_format"],
    )
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Registry API responded with status 401")
    body = {"dataset_id": handle, "console_session_required": False}
    path = "/registry/credentials/generate-write-access-credentials"
    assert running.call("POST", "carol", path, json=body).status_code == 200


def test_faults_middleware(running: Running) -> None:
    response = running.call(
        "PUT",
        "admin",
        "/_provenafs/faults",
        json={"path_prefix": "/metadata", "fail_next": 1, "status": 502},
    )
    assert response.status_code == 200
    assert running.call("GET", "alice", "/metadata/dataset-schema").status_code == 502
    assert running.call("GET", "alice", "/metadata/dataset-schema").status_code == 200
    assert running.call("GET", "alice", "/_provenafs/faults").status_code == 401
    assert running.call("DELETE", "admin", "/_provenafs/faults").json() == {"faults": []}


def test_chunked_huge_body_is_413(running: Running) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"page_size": 1, "x": "'
        for _ in range(40):
            yield b"z" * 65536
        yield b'"}'

    response = httpx.post(
        running.base_url + "/registry/items/list",
        content=chunks(),
        headers={"Authorization": "Bearer alice", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
