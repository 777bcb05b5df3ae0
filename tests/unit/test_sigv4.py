"""sign_s3_request against botocore's own S3 signer: the same request gets the same signature.

Two references: ``S3SigV4Auth`` on an ``AWSRequest`` whose URL is encoded the way botocore's
serializer encodes keys, and a whole boto3 ``get_object`` call caught just before it is sent.
botocore's clock is pinned by replacing ``botocore.auth.get_current_datetime``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.utils
import pytest

from provenafs.storage.sigv4 import EMPTY_SHA256, s3_path, s3_query, sign_s3_request

ACCESS_KEY = "ASIAEXAMPLEACCESSKEY"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE//token+with/slashes=="
REGION = "ap-southeast-2"
BUCKET = "provena-bucket"
# the second is a day later: a new signing key
MOMENTS = [
    dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 23, 0, 0, 1, tzinfo=dt.UTC),
]
KEYS = [
    "datasets/10378-1-1932274/raw/a.csv",
    "datasets/10378-1-1932274/with space/two  spaces .csv",
    "datasets/10378-1-1932274/ünïcødé/日本語 データ.txt",
    "datasets/10378-1-1932274/a+b=c~d/e-f_g.h",
    "datasets/10378-1-1932274/odd !'()*@$&,;:?#[]%.bin",
]


def botocore_path(bucket: str, key: str) -> str:
    """The path botocore's serializer builds for ``{Bucket}/{Key+}``."""
    return f"/{botocore.utils.percent_encode(bucket)}/{botocore.utils.percent_encode(key, '/~')}"


def pin_botocore_clock(monkeypatch: pytest.MonkeyPatch, moment: dt.datetime) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment.replace(tzinfo=None))


def botocore_signed(url: str, headers: dict[str, str], session_token: str | None) -> dict[str, str]:
    """The headers ``S3SigV4Auth`` puts on a GET of ``url`` (lower-cased names)."""
    request = botocore.awsrequest.AWSRequest(method="GET", url=url, headers=headers)
    credentials = botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY, session_token)
    botocore.auth.S3SigV4Auth(credentials, "s3", REGION).add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def ours(
    host: str, path: str, headers: dict[str, str], session_token: str | None, now: dt.datetime
) -> dict[str, str]:
    return sign_s3_request(
        method="GET",
        host=host,
        path=path,
        headers=headers,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        session_token=session_token,
        region=REGION,
        now=now,
    )


@pytest.mark.parametrize("moment", MOMENTS, ids=["day1", "day2"])
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("session_token", [SESSION_TOKEN, None], ids=["token", "no-token"])
@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8333", f"https://s3.{REGION}.amazonaws.com"],
    ids=["local", "aws"],
)
def test_signature_equals_botocores(
    monkeypatch: pytest.MonkeyPatch,
    moment: dt.datetime,
    key: str,
    session_token: str | None,
    endpoint: str,
) -> None:
    host = endpoint.split("://")[1]
    pin_botocore_clock(monkeypatch, moment)
    path = s3_path(BUCKET, key)
    assert path == botocore_path(BUCKET, key)
    headers = {"range": "bytes=1048576-2097151", "if-match": '"9b2cf535f27731c974343645a3985328"'}

    reference = botocore_signed(endpoint + path, dict(headers), session_token)
    signed = ours(host, path, headers, session_token, moment)

    assert signed["authorization"] == reference["authorization"]
    assert set(signed) == set(reference) | {"host"}  # botocore leaves Host to the HTTP client
    assert {name: signed[name] for name in reference} == reference
    assert signed["host"] == host
    assert signed["x-amz-content-sha256"] == EMPTY_SHA256
    assert signed["x-amz-date"] == moment.strftime("%Y%m%dT%H%M%SZ")
    assert signed.get("x-amz-security-token") == session_token


def test_header_values_are_trimmed_as_botocore_does(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = MOMENTS[0]
    pin_botocore_clock(monkeypatch, moment)
    path = s3_path(BUCKET, KEYS[0])
    headers = {"Range": "  bytes=0-99 ", "If-Match": '"a  b"', "X-Amz-Meta-Note": "x \t y"}
    reference = botocore_signed(f"http://127.0.0.1:8333{path}", dict(headers), SESSION_TOKEN)
    signed = ours("127.0.0.1:8333", path, headers, SESSION_TOKEN, moment)
    assert signed["authorization"] == reference["authorization"]


def text(value: object) -> str:
    """A header of a prepared request, which botocore holds as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


class _Caught(Exception):
    """Not an error: how the prepared request leaves the client before it is sent."""

    def __init__(self, request: botocore.awsrequest.AWSPreparedRequest) -> None:
        super().__init__("caught before sending")
        self.request = request


def catching_client(monkeypatch: pytest.MonkeyPatch, moment: dt.datetime, operation: str) -> Any:
    """A boto3 S3 client whose clock reads ``moment`` and whose ``operation`` raises ``_Caught``
    with the signed request instead of sending it."""
    pin_botocore_clock(monkeypatch, moment)
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:8333",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}),
    )

    def catch(request: botocore.awsrequest.AWSPreparedRequest, **_: Any) -> None:
        raise _Caught(request)

    client.meta.events.register(f"before-send.s3.{operation}", catch)
    return client


@pytest.mark.parametrize("key", KEYS)
def test_signature_equals_a_boto3_get_object(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    moment = MOMENTS[1]
    client = catching_client(monkeypatch, moment, "GetObject")
    with pytest.raises(_Caught) as caught:
        client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-131071", IfMatch='"abc"')
    sent = caught.value.request
    assert sent.url == "http://127.0.0.1:8333" + s3_path(BUCKET, key)

    authorization = text(sent.headers["Authorization"])
    signed_names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    ours_generate = {"host", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"}
    extra = {
        name: text(value)
        for name, value in sent.headers.items()
        if name.lower() in signed_names and name.lower() not in ours_generate
    }
    assert {"range", "if-match"} <= {name.lower() for name in extra}
    signed = ours("127.0.0.1:8333", s3_path(BUCKET, key), extra, SESSION_TOKEN, moment)
    assert signed["authorization"] == authorization


def test_the_secret_never_appears_in_the_headers() -> None:
    signed = ours(
        "127.0.0.1:8333",
        s3_path(BUCKET, KEYS[2]),
        {"range": "bytes=0-1"},
        SESSION_TOKEN,
        MOMENTS[0],
    )
    for name, value in signed.items():
        assert SECRET_KEY not in value, name
        assert SECRET_KEY not in name
    # the session token is sent, as S3 needs it, and only in its own header
    assert [name for name, value in signed.items() if SESSION_TOKEN in value] == [
        "x-amz-security-token"
    ]


@pytest.mark.parametrize("prefix", [k.rsplit("/", 1)[0] + "/" for k in KEYS])
def test_listing_query_equals_a_boto3_list_objects_v2(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    moment = MOMENTS[0]
    client = catching_client(monkeypatch, moment, "ListObjectsV2")
    token = "1/abc+def=="  # continuation tokens hold characters that must be encoded
    with pytest.raises(_Caught) as caught:
        client.list_objects_v2(
            Bucket=BUCKET, Prefix=prefix, Delimiter="/", MaxKeys=1000, ContinuationToken=token
        )
    sent = caught.value.request
    query = s3_query(
        {
            "list-type": "2",
            "prefix": prefix,
            "delimiter": "/",
            "max-keys": "1000",
            "continuation-token": token,
            "encoding-type": "url",
        }
    )
    signed = sign_s3_request(
        method="GET",
        host="127.0.0.1:8333",
        path=f"/{BUCKET}",
        query=query,
        headers={},
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        session_token=SESSION_TOKEN,
        region=REGION,
        now=moment,
    )
    assert text(sent.headers["Authorization"]) == signed["authorization"]
