"""S3BlobStore: error translation and retries (botocore's Stubber for boto3 calls, a canned local
HTTP server for the GETs this module signs itself). The same store against a real SeaweedFS is
``tests/s3/test_s3_reads.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
import urllib3
from botocore.stub import Stubber

from provenafs.api.models import Credentials
from provenafs.storage.blobstore import (
    AccessDeniedError,
    BlobError,
    BlobUnavailableError,
    ExpiredCredentialsError,
    NoSuchKeyError,
    StaleObjectError,
)
from provenafs.storage.s3 import S3BlobStore

IN_CI = os.environ.get("CI", "").lower() == "true"
CREDS = Credentials(
    "ASIAFAKE", "secret-DO-NOT-SHOW", "token-DO-NOT-SHOW", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
)


def stubbed_store(**kwargs: Any) -> tuple[S3BlobStore, Stubber]:
    store = S3BlobStore("http://127.0.0.1:1", "ap-southeast-2", backoff=0.0, **kwargs)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        region_name="ap-southeast-2",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    stubber = Stubber(client)
    stubber.activate()
    store._client_blocking = lambda creds: client  # type: ignore[method-assign]
    return store, stubber


@dataclasses.dataclass
class CannedAnswer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class CannedS3:
    """A local HTTP server answering GETs and HEADs from a queue of canned answers; records each
    request."""

    def __init__(self) -> None:
        self.answers: list[CannedAnswer] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        canned = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                canned.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                answer = canned.answers.pop(0) if canned.answers else CannedAnswer(500)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in answer.headers:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def error(self, code: str, status: int) -> CannedAnswer:
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>"
        return CannedAnswer(status, body.encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canned() -> Iterator[CannedS3]:
    server = CannedS3()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NoSuchKeyError),
        ("", 404, NoSuchKeyError),
        ("NoSuchBucket", 404, NoSuchKeyError),
        ("AccessDenied", 403, AccessDeniedError),
        ("", 403, AccessDeniedError),
        ("ExpiredToken", 400, ExpiredCredentialsError),
        ("InvalidToken", 400, ExpiredCredentialsError),
        ("InvalidAccessKeyId", 403, ExpiredCredentialsError),
        ("SignatureDoesNotMatch", 403, ExpiredCredentialsError),
        ("PreconditionFailed", 412, StaleObjectError),
        ("", 412, StaleObjectError),
        ("InvalidArgument", 400, BlobError),
    ],
)
async def test_get_errors_translate_once(
    canned: CannedS3, code: str, status: int, expected: type[Exception]
) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers.append(canned.error(code, status) if code else CannedAnswer(status))
    with pytest.raises(expected) as info:
        await store.get_range(CREDS, "b", "k", 0, 10)
    assert type(info.value) is expected
    assert "DO-NOT-SHOW" not in str(info.value)
    assert store.statistics()["requests"] == 1  # not retried


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NoSuchKeyError),
        ("AccessDenied", 403, AccessDeniedError),
        ("ExpiredToken", 400, ExpiredCredentialsError),
        ("PreconditionFailed", 412, StaleObjectError),
    ],
)
async def test_boto3_errors_translate_once(
    code: str, status: int, expected: type[Exception]
) -> None:
    store, stubber = stubbed_store()
    stubber.add_client_error(
        "list_multipart_uploads", service_error_code=code, http_status_code=status
    )
    with pytest.raises(expected) as info:
        await store.list_multipart_uploads(CREDS, "b", "p/")
    assert type(info.value) is expected
    assert store.statistics()["requests"] == 1


async def test_busy_server_is_retried_for_gets(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0, retries=3)
    canned.answers += [canned.error("SlowDown", 503), CannedAnswer(500), CannedAnswer(206, b"ok")]
    assert await store.get_range(CREDS, "b", "k", 0, 2) == b"ok"
    assert store.statistics()["retries"] == 2


@pytest.mark.parametrize("code", ["SlowDown", "InternalError", "ServiceUnavailable"])
async def test_busy_server_is_retried_then_unavailable(code: str) -> None:
    store, stubber = stubbed_store(retries=3)
    for _ in range(3):
        stubber.add_client_error(
            "list_multipart_uploads", service_error_code=code, http_status_code=503
        )
    with pytest.raises(BlobUnavailableError):
        await store.list_multipart_uploads(CREDS, "b", "p/")
    assert store.statistics()["requests"] == 3
    assert store.statistics()["retries"] == 2


async def test_a_signed_head_retries_strips_etag_quotes_and_reads_the_date(
    canned: CannedS3,
) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    headers = {
        "Content-Length": "42",
        "ETag": '"abc123"',
        "Last-Modified": "Tue, 02 Jan 2024 00:00:00 GMT",
    }
    canned.answers += [CannedAnswer(503), CannedAnswer(200, headers=headers)]
    info = await store.head(CREDS, "b", "dir/k")
    assert (info.key, info.size, info.etag) == ("dir/k", 42, "abc123")
    assert info.last_modified == dt.datetime(2024, 1, 2, tzinfo=dt.UTC).timestamp()
    path, sent = canned.requests[1]
    assert path == "/b/dir/k" and sent["authorization"].startswith("AWS4-HMAC-SHA256")
    canned.answers += [CannedAnswer(404)]
    with pytest.raises(NoSuchKeyError):
        await store.head(CREDS, "b", "gone")


async def test_any_under_asks_for_one_key(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers += [list_page([("p/x/1", 1, "e")], [], "more"), list_page([], [], None)]
    assert await store.any_under(CREDS, "b", "p/x/") is True
    assert await store.any_under(CREDS, "b", "p/y/") is False
    assert "max-keys=1" in canned.requests[0][0] and "prefix=p%2Fx%2F" in canned.requests[0][0]


async def test_get_range_sends_a_signed_range_and_if_match(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers.append(CannedAnswer(206, b"hello"))
    data = await store.get_range(CREDS, "b", "dir/a b.csv", 10, 15, etag="e1")
    assert data == b"hello"
    path, headers = canned.requests[0]
    assert path == "/b/dir/a%20b.csv"
    assert headers["range"] == "bytes=10-14"
    assert headers["if-match"] == '"e1"'
    assert headers["x-amz-security-token"] == CREDS.session_token
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIAFAKE/")
    assert "secret-DO-NOT-SHOW" not in str(headers)
    assert await store.get_range(CREDS, "b", "k", 5, 5) == b""
    assert len(canned.requests) == 1  # an empty range asks nothing


async def test_get_blocks_cuts_the_body_while_reading(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers.append(CannedAnswer(206, b"0123456789"))
    blocks = await store.get_blocks(CREDS, "b", "k", 0, 10, block_size=4, etag="e1")
    assert blocks == [b"0123", b"4567", b"89"]
    assert store.statistics()["bytes_read"] == 10


async def test_range_past_the_end_is_empty(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers.append(canned.error("InvalidRange", 416))
    assert await store.get_range(CREDS, "b", "k", 100, 200) == b""


async def test_answers_left_unread_never_reach_the_next_request(canned: CannedS3) -> None:
    # one connection, reused: a 416's body, an error's body, and a body the caller stopped
    # reading must not be taken for the next answer
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0, max_threads=1)
    canned.answers += [
        CannedAnswer(416, b"<Error><Code>InvalidRange</Code></Error>" * 50),
        CannedAnswer(206, b"first"),
        canned.error("NoSuchKey", 404),
        CannedAnswer(206, b"second"),
        CannedAnswer(206, b"x" * (4 << 20)),
        CannedAnswer(206, b"third"),
    ]

    assert await store.get_range(CREDS, "b", "k", 100, 200) == b""
    assert await store.get_range(CREDS, "b", "k", 0, 5) == b"first"
    with pytest.raises(NoSuchKeyError):
        await store.get_range(CREDS, "b", "k", 0, 5)
    assert await store.get_range(CREDS, "b", "k", 0, 6) == b"second"

    def stop_early(response: Any) -> bytes:
        response.read(10)
        raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError):
        await store._signed_get(CREDS, "/b/k", what="get", read=stop_early, ok=(206,))
    assert await store.get_range(CREDS, "b", "k", 0, 5) == b"third"
    assert store.statistics()["retries"] == 0  # no request met a spoilt connection


def test_signed_requests_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert type(S3BlobStore("http://s3.example:9000", "r")._pool) is urllib3.PoolManager
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    proxied = S3BlobStore("http://s3.example:9000", "r")._pool
    assert isinstance(proxied, urllib3.ProxyManager)
    assert proxied.proxy is not None and proxied.proxy.host == "proxy.example"
    monkeypatch.setenv("no_proxy", "s3.example")
    assert type(S3BlobStore("http://s3.example:9000", "r")._pool) is urllib3.PoolManager
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    pool = S3BlobStore("https://s3.example", "r")._pool
    assert pool.connection_pool_kw["ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"


async def test_get_connection_refused_is_retried_then_unavailable() -> None:
    with socket_nobody_listens() as url:
        store = S3BlobStore(url, "ap-southeast-2", backoff=0.0, retries=3)
        with pytest.raises(BlobUnavailableError):
            await store.get_range(CREDS, "b", "k", 0, 1)
    assert store.statistics()["requests"] == 3


@contextlib.contextmanager
def socket_nobody_listens() -> Iterator[str]:
    """A URL of a 127.0.0.1 port that refuses connections (bound, never listened on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def list_page(
    contents: list[tuple[str, int, str]], prefixes: list[str], token: str | None
) -> CannedAnswer:
    """A ListObjectsV2 answer with url-encoded keys, as S3 gives it for encoding-type=url."""
    ns = "http://s3.amazonaws.com/doc/2006-03-01/"
    entries = "".join(
        f"<Contents><Key>{urllib.parse.quote(key)}</Key><Size>{size}</Size>"
        f"<ETag>&quot;{etag}&quot;</ETag><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        "</Contents>"
        for key, size, etag in contents
    )
    common = "".join(
        f"<CommonPrefixes><Prefix>{urllib.parse.quote(p)}</Prefix></CommonPrefixes>"
        for p in prefixes
    )
    more = f"<IsTruncated>true</IsTruncated><NextContinuationToken>{token}</NextContinuationToken>"
    tail = more if token else "<IsTruncated>false</IsTruncated>"
    body = f'<?xml version="1.0"?><ListBucketResult xmlns="{ns}">{entries}{common}{tail}'
    return CannedAnswer(200, (body + "</ListBucketResult>").encode())


async def test_list_follows_continuation_tokens_and_decodes_keys(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers += [
        list_page([("p/a b+c.csv", 1, "e1")], ["p/d é/"], "t/1+="),
        list_page([("p/b", 2, "e2")], [], None),
    ]
    listing = await store.list_prefix(CREDS, "b", "p/")
    assert [(o.key, o.size, o.etag) for o in listing.objects] == [
        ("p/a b+c.csv", 1, "e1"),
        ("p/b", 2, "e2"),
    ]
    assert listing.objects[0].last_modified == dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    assert listing.prefixes == ("p/d é/",)
    first, second = (
        urllib.parse.parse_qs(urllib.parse.urlsplit(path).query) for path, _ in canned.requests
    )
    assert first["prefix"] == ["p/"] and first["delimiter"] == ["/"]
    assert first["encoding-type"] == ["url"] and "continuation-token" not in first
    assert second["continuation-token"] == ["t/1+="]


async def test_list_tree_stops_at_a_page_that_shows_too_many(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers.append(list_page([(f"p/{i}", 1, "e") for i in range(3)], [], "more"))
    listing = await store.list_tree(CREDS, "b", "p/", max_keys=3)
    assert listing.truncated and [info.key for info in listing.objects] == ["p/0", "p/1", "p/2"]
    assert len(canned.requests) == 1


async def test_list_prefix_after_a_key_asks_s3_for_what_follows_it(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0)
    canned.answers.append(list_page([("p/b", 1, "e")], [], None))
    listing = await store.list_prefix(CREDS, "b", "p/", start_after="p/a")
    assert [info.key for info in listing.objects] == ["p/b"] and not listing.truncated
    assert "start-after=p%2Fa" in canned.requests[0][0]


async def test_list_errors_translate(canned: CannedS3) -> None:
    store = S3BlobStore(canned.url, "ap-southeast-2", backoff=0.0, retries=2)
    canned.answers += [canned.error("AccessDenied", 403)]
    with pytest.raises(AccessDeniedError):
        await store.list_prefix(CREDS, "b", "p/")
    canned.answers += [CannedAnswer(200, b"<not xml"), CannedAnswer(200, b"<also not")]
    with pytest.raises(BlobUnavailableError):
        await store.list_prefix(CREDS, "b", "p/")


async def test_connection_errors_are_retried() -> None:
    class FlakyClient:
        calls = 0

        def list_multipart_uploads(self, **kwargs: Any) -> dict[str, Any]:
            FlakyClient.calls += 1
            if FlakyClient.calls < 3:
                raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")
            return {"Uploads": [{"Key": "p/k", "UploadId": "u"}]}

    store = S3BlobStore(None, "ap-southeast-2", backoff=0.0, retries=4)
    store._client_blocking = lambda creds: FlakyClient()  # type: ignore[assignment,method-assign,return-value]
    assert await store.list_multipart_uploads(CREDS, "b", "p/") == [("p/k", "u")]
    assert FlakyClient.calls == 3

    FlakyClient.calls = -10
    with pytest.raises(BlobUnavailableError, match="EndpointConnectionError"):
        await store.list_multipart_uploads(CREDS, "b", "p/")


def test_one_client_per_credential_set_bounded() -> None:
    store = S3BlobStore("http://127.0.0.1:1", "ap-southeast-2", max_clients=2)
    first = store._client_blocking(CREDS)
    assert store._client_blocking(CREDS) is first
    others = [dataclasses.replace(CREDS, access_key_id=f"ASIA{i}") for i in range(3)]
    for creds in others:
        store._client_blocking(creds)
    assert store.statistics()["clients"] == 2
    assert "DO-NOT-SHOW" not in repr(store)
