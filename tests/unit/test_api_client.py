"""DataStoreClient against ``httpx.MockTransport``: routes, shapes, error translation, retries."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from provenafs.api import errors
from provenafs.api.client import DataStoreClient, discover
from provenafs.api.models import CollectionFormat
from provenafs.api.realm import StaticToken

SECRET_TOKEN = "tok-SECRET-abc123"
HANDLE = "10378.1/1932274"


def item(handle: str = HANDLE, *, next_version: str | None = None) -> dict[str, Any]:
    sanitized = handle.replace(".", "-").replace("/", "-")
    return {
        "display_name": f"Dataset {handle}",
        "user_metadata": None,
        "collection_format": {"dataset_info": {"name": f"Dataset {handle}"}},
        "s3": {
            "bucket_name": "bucket",
            "path": f"datasets/{sanitized}/",
            "s3_uri": f"s3://bucket/datasets/{sanitized}/",
        },
        "release_history": [],
        "release_status": "NOT_RELEASED",
        "release_approver": None,
        "release_timestamp": None,
        "access_info_uri": None,
        "history": [],
        "id": handle,
        "owner_username": "jsmith",
        "created_timestamp": 1721629472,
        "updated_timestamp": 1721714647,
        "item_category": "ENTITY",
        "item_subtype": "DATASET",
        "record_type": "COMPLETE_ITEM",
        "workflow_links": None,
        "versioning_info": {
            "previous_version": None,
            "version": 1,
            "reason": None,
            "next_version": next_version,
        },
    }


def ok_status(details: str = "ok") -> dict[str, Any]:
    return {"success": True, "details": details}


class FakeStore:
    """Answers by route; records every request; scripted failures per route."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.failures: dict[str, list[httpx.Response | Exception]] = {}
        self.pages: list[tuple[list[dict[str, Any]], dict[str, Any] | None]] = []

    def fail(self, path: str, *answers: httpx.Response | Exception) -> None:
        self.failures.setdefault(path, []).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        scripted = self.failures.get(request.url.path)
        if scripted:
            answer = scripted.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        path = request.url.path
        if path == "/registry/items/fetch-dataset":
            handle = request.url.params["handle_id"]
            return httpx.Response(
                200,
                json={
                    "status": ok_status(),
                    "item": item(handle),
                    "roles": ["metadata-read", "dataset-data-read"],
                    "locked": False,
                },
            )
        if path == "/registry/items/list":
            body = json.loads(request.content)
            index = 0 if "pagination_key" not in body else int(body["pagination_key"]["page"])
            items, key = self.pages[index]
            return httpx.Response(
                200, json={"status": ok_status(), "items": items, "pagination_key": key}
            )
        if path.startswith("/registry/credentials/"):
            return httpx.Response(
                200,
                json={
                    "status": ok_status(),
                    "credentials": {
                        "aws_access_key_id": "ASIAEXAMPLE",
                        "aws_secret_access_key": "secret-key-SHOULD-NOT-LEAK",
                        "aws_session_token": "session-SHOULD-NOT-LEAK",
                        "expiry": "2024-06-13T20:05:11+00:00",
                    },
                    "console_session_url": None,
                },
            )
        if path == "/register/version":
            return httpx.Response(
                200, json={"new_version_id": "10378.1/2", "version_job_session_id": "job-1"}
            )
        if path in {"/register/update-metadata", "/register/revert-metadata"}:
            return httpx.Response(200, json={"status": ok_status()})
        if path == "/registry/items/generate-presigned-url":
            body = json.loads(request.content)
            return httpx.Response(200, json={**body, "presigned_url": "http://s3/x?sig=1"})
        if path == "/.well-known/provenafs":
            return httpx.Response(
                200,
                json={
                    "s3_endpoint_url": "http://127.0.0.1:9000",
                    "region": "ap-southeast-2",
                    "realm_url": "http://127.0.0.1:8000/auth/realms/provena",
                    "bucket": "bucket",
                    "client_id": "client-tools",
                },
            )
        return httpx.Response(404, json={"detail": "Not Found"})


async def run_with_client(
    fake: FakeStore, body: Callable[[DataStoreClient], Any], *, retries: int = 4
) -> Any:
    async def main() -> Any:
        client = DataStoreClient(
            "http://ds.test/",
            StaticToken(SECRET_TOKEN),
            transport=httpx.MockTransport(fake),
            retries=retries,
            backoff=0.0,
        )
        try:
            return await body(client)
        finally:
            await client.aclose()

    return await main()


def detail(code: int, text: str) -> httpx.Response:
    return httpx.Response(code, json={"detail": text})


async def test_fetch_parses_record_and_document_without_status() -> None:
    fake = FakeStore()
    record = await run_with_client(fake, lambda c: c.fetch_dataset(HANDLE))
    assert record.handle == HANDLE
    assert record.s3.path == "datasets/10378-1-1932274/"
    assert record.roles == frozenset({"metadata-read", "dataset-data-read"})
    assert record.locked is False
    assert record.is_latest
    assert set(record.document) == {"item", "roles", "locked"}
    assert record.document["item"]["id"] == HANDLE
    request = fake.requests[0]
    assert request.url.params["handle_id"] == HANDLE
    assert request.headers["Authorization"] == f"Bearer {SECRET_TOKEN}"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            detail(400, "The requested dataset is an incomplete item (seed item)"),
            errors.NotFoundError,
        ),
        (detail(401, "Could not validate credentials"), errors.AuthenticationError),
        (detail(401, "You are not authorised to fetch this item."), errors.PermissionDeniedError),
        (detail(403, "Dataset is pending review"), errors.ForbiddenError),
        (detail(422, "field required"), errors.InvalidRequestError),
    ],
)
async def test_fetch_errors_translate_once(
    response: httpx.Response, expected: type[Exception]
) -> None:
    fake = FakeStore()
    fake.fail("/registry/items/fetch-dataset", response, response)
    with pytest.raises(expected) as info:
        await run_with_client(fake, lambda c: c.fetch_dataset(HANDLE))
    assert "fetch_dataset" in str(info.value)
    assert SECRET_TOKEN not in str(info.value)


async def test_unauthenticated_refreshes_token_once_then_retries() -> None:
    class CountingToken(StaticToken):
        refreshes = 0

        async def refresh(self) -> None:
            CountingToken.refreshes += 1

    fake = FakeStore()
    fake.fail("/registry/items/fetch-dataset", detail(401, "Could not validate credentials"))

    async def main() -> str:
        client = DataStoreClient(
            "http://ds.test", CountingToken("t"), transport=httpx.MockTransport(fake)
        )
        record = await client.fetch_dataset(HANDLE)
        await client.aclose()
        return record.handle

    assert await main() == HANDLE
    assert CountingToken.refreshes == 1
    assert len(fake.requests) == 2


async def test_5xx_and_network_errors_are_retried_then_unavailable() -> None:
    fake = FakeStore()
    fake.fail(
        "/registry/items/fetch-dataset",
        httpx.Response(502),
        httpx.ConnectError("refused"),
    )
    record = await run_with_client(fake, lambda c: c.fetch_dataset(HANDLE))
    assert record.handle == HANDLE
    assert len(fake.requests) == 3

    fake = FakeStore()
    fake.fail("/registry/items/fetch-dataset", *[httpx.Response(503)] * 10)

    async def count(client: DataStoreClient) -> Any:
        with pytest.raises(errors.UnavailableError):
            await client.fetch_dataset(HANDLE)
        return client.statistics()

    stats = await run_with_client(fake, count, retries=4)
    assert len(fake.requests) == 4
    assert stats["fetch_dataset"] == 4
    assert stats["retries"] == 3


async def test_create_version_is_not_resent_after_a_lost_answer() -> None:
    fake = FakeStore()
    fake.fail("/register/version", httpx.ReadTimeout("lost"))
    with pytest.raises(errors.UnavailableError):
        await run_with_client(fake, lambda c: c.create_version(HANDLE, "why"))
    assert len(fake.requests) == 1

    fake = FakeStore()
    fake.fail("/register/version", httpx.Response(500))
    with pytest.raises(errors.UnavailableError):
        await run_with_client(fake, lambda c: c.create_version(HANDLE, "why"))
    assert len(fake.requests) == 1

    # a connection that never opened carried nothing: that one is retried
    fake = FakeStore()
    fake.fail("/register/version", httpx.ConnectError("refused"))
    created = await run_with_client(fake, lambda c: c.create_version(HANDLE, "why"))
    assert created.new_version_id == "10378.1/2"
    assert json.loads(fake.requests[-1].content) == {"id": HANDLE, "reason": "why"}


async def test_list_all_follows_keys_through_short_and_empty_pages() -> None:
    fake = FakeStore()
    fake.pages = [
        ([item("10378.1/1"), item("10378.1/2")], {"page": 1}),
        ([], {"page": 2}),
        ([item("10378.1/3")], {"page": 3}),
        ([], None),
    ]
    records = await run_with_client(fake, lambda c: c.list_all(page_size=2))
    assert [r.handle for r in records] == ["10378.1/1", "10378.1/2", "10378.1/3"]
    assert all(r.roles is None and r.locked is None for r in records)
    bodies = [json.loads(r.content) for r in fake.requests]
    assert bodies[0] == {"page_size": 2}  # null pagination_key omitted
    assert bodies[1] == {"page_size": 2, "pagination_key": {"page": 1}}
    assert len(bodies) == 4


async def test_list_all_stops_on_a_repeated_key() -> None:
    fake = FakeStore()
    fake.pages = [([item("10378.1/1")], {"page": 1}), ([item("10378.1/2")], {"page": 1})]
    with pytest.raises(errors.UnavailableError, match="repeated"):
        await run_with_client(fake, lambda c: c.list_all())
    assert len(fake.requests) == 2


async def test_list_page_skips_an_unreadable_item() -> None:
    fake = FakeStore()
    broken = item("10378.1/9")
    del broken["s3"]
    fake.pages = [([item("10378.1/1"), broken], None)]
    page = await run_with_client(fake, lambda c: c.list_page(None, 10))
    assert [r.handle for r in page.items] == ["10378.1/1"]
    assert page.pagination_key is None


async def test_credentials_parse_and_never_show_secrets() -> None:
    fake = FakeStore()
    creds = await run_with_client(fake, lambda c: c.read_credentials(HANDLE))
    assert creds.access_key_id == "ASIAEXAMPLE"
    assert creds.expiry == dt.datetime(2024, 6, 13, 20, 5, 11, tzinfo=dt.UTC)
    assert "LEAK" not in repr(creds)
    body = json.loads(fake.requests[0].content)
    assert body == {"dataset_id": HANDLE, "console_session_required": False}
    assert fake.requests[0].url.path.endswith("generate-read-access-credentials")


async def test_write_credentials_refusals() -> None:
    path = "/registry/credentials/generate-write-access-credentials"
    for response, expected in [
        (detail(401, "This dataset is locked - you cannot modify"), errors.PermissionDeniedError),
        (detail(403, "Dataset is pending review or is released."), errors.ForbiddenError),
        (detail(400, "Item is not a dataset"), errors.NotFoundError),
    ]:
        fake = FakeStore()
        fake.fail(path, response)
        with pytest.raises(expected):
            await run_with_client(fake, lambda c: c.write_credentials(HANDLE))
        assert len(fake.requests) == 1


async def test_update_metadata_sends_query_and_body_without_nulls() -> None:
    fake = FakeStore()
    document = {"dataset_info": {"name": "n", "purpose": None}, "associations": None}
    form = CollectionFormat.from_json(document)
    await run_with_client(fake, lambda c: c.update_metadata(HANDLE, "fix typo", form))
    request = fake.requests[0]
    assert request.method == "POST"
    assert request.url.params["handle_id"] == HANDLE
    assert request.url.params["reason"] == "fix typo"
    assert json.loads(request.content) == {"dataset_info": {"name": "n"}}


FORM = CollectionFormat({"a": 1})


async def test_write_rejections_become_invalid_request_with_detail() -> None:
    fake = FakeStore()
    fake.fail("/register/update-metadata", detail(400, "published_date before created_date"))
    with pytest.raises(errors.InvalidRequestError, match="published_date before created_date"):
        await run_with_client(
            fake, lambda c: c.update_metadata(HANDLE, "r", CollectionFormat({"a": 1}))
        )

    fake = FakeStore()
    fake.fail(
        "/register/revert-metadata",
        httpx.Response(200, json={"status": {"success": False, "details": "no history id 7"}}),
    )
    with pytest.raises(errors.InvalidRequestError, match="no history id 7"):
        await run_with_client(fake, lambda c: c.revert_metadata(HANDLE, 7, "r"))
    assert json.loads(fake.requests[0].content) == {"id": HANDLE, "history_id": 7, "reason": "r"}

    fake = FakeStore()
    fake.fail(
        "/register/update-metadata",
        httpx.Response(
            422, json={"detail": [{"loc": ["body", "dataset_info", "name"], "msg": "too short"}]}
        ),
    )
    with pytest.raises(errors.InvalidRequestError, match=r"body\.dataset_info\.name: too short"):
        await run_with_client(
            fake, lambda c: c.update_metadata(HANDLE, "r", CollectionFormat({"a": 1}))
        )


async def test_presigned_url() -> None:
    fake = FakeStore()
    url = await run_with_client(fake, lambda c: c.presigned_url(HANDLE, "raw/a.csv", 600))
    assert url == "http://s3/x?sig=1"
    assert json.loads(fake.requests[0].content) == {
        "dataset_id": HANDLE,
        "file_path": "raw/a.csv",
        "expires_in": 600,
    }


async def test_statistics_count_calls_per_route() -> None:
    fake = FakeStore()

    async def calls(client: DataStoreClient) -> Any:
        await client.read_credentials(HANDLE)
        await client.read_credentials(HANDLE)
        await client.fetch_dataset(HANDLE)
        return client.statistics()

    stats = await run_with_client(fake, calls)
    assert stats["read_credentials"] == 2
    assert stats["fetch_dataset"] == 1
    assert "write_credentials" not in stats


async def test_discover_reads_document_and_404_means_defaults() -> None:
    fake = FakeStore()
    found = await run_with_client(fake, lambda c: c.discover())
    assert found.s3_endpoint_url == "http://127.0.0.1:9000"
    assert found.realm_url == "http://127.0.0.1:8000/auth/realms/provena"
    assert "Authorization" not in fake.requests[0].headers

    fake = FakeStore()
    fake.fail("/.well-known/provenafs", detail(404, "Not Found"))
    found = await run_with_client(fake, lambda c: c.discover())
    assert (found.s3_endpoint_url, found.region, found.realm_url) == (
        None,
        "ap-southeast-2",
        None,
    )

    fake = FakeStore()
    fake.fail("/.well-known/provenafs", detail(404, "Not Found"))
    plain = await discover("http://ds.test", transport=httpx.MockTransport(fake))
    assert plain.region == "ap-southeast-2" and plain.realm_url is None


async def test_fetch_unexpected_shape_is_unavailable_not_a_crash() -> None:
    fake = FakeStore()
    fake.fail(
        "/registry/items/fetch-dataset",
        httpx.Response(200, json={"status": ok_status(), "item": {"id": HANDLE}}),
    )
    with pytest.raises(errors.UnavailableError):
        await run_with_client(fake, lambda c: c.fetch_dataset(HANDLE))
