"""SeaweedFS under the local data store: scoped STS credentials are *enforced*, observed for real.

One ``weed mini`` per module (started in a temp dir, stopped by PID); every denial below is an
answer from that real S3 server, never a check of the policy text alone. Restart and shutdown are
tested on a second, private server.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import httpx
import pytest
from boto3.s3.transfer import TransferConfig

from provenafs.server.objects import (
    DEFAULT_ROLE_ARN,
    ObjectNotFound,
    ObjectStore,
    S3Admin,
    StorageError,
    StsCredentials,
    admin_from_environment,
    session_policy,
)
from provenafs.server.seaweed import SeaweedServer, find_weed
from provenafs.server.seaweed_config import ADMIN_IDENTITY

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

PREFIX_A = "datasets/10378-1-1000001/"
PREFIX_B = "datasets/10378-1-1000002/"
SIBLING_OF_A = "datasets/10378-1-10000010/"  # shares A's text as a prefix, is another dataset
MIB = 1024 * 1024


@dataclasses.dataclass
class Running:
    server: SeaweedServer
    admin: S3Admin
    store: ObjectStore
    cold_start_seconds: float


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    started = time.monotonic()
    admin = server.start()
    cold = time.monotonic() - started
    print(f"\nweed mini cold start (to bucket ready): {cold:.2f} s")
    pid = server.pid
    assert pid is not None
    try:
        store = ObjectStore(admin)
        store.put_object(PREFIX_A + "data/a.csv", b"a,b\n1,2\n", content_type="text/csv")
        store.put_object(PREFIX_A + "metadata.json", b"{}")
        store.put_object(PREFIX_B + "secret.bin", b"dataset B only")
        store.put_object(SIBLING_OF_A + "x.txt", b"sibling")
        yield Running(server, admin, store, cold)
    finally:
        server.stop()
        assert not process_alive(pid)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


BOTO_SESSION = boto3.session.Session()  # one session: client creation is ~5x faster
BOTO_SESSION_LOCK = threading.Lock()


def client(admin: S3Admin, key_id: str, secret: str, token: str | None = None) -> S3Client:
    with BOTO_SESSION_LOCK:
        return BOTO_SESSION.client(
            "s3",
            endpoint_url=admin.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=admin.region,
            config=botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
            ),
        )


def scoped(running: Running, prefix: str, *, write: bool) -> S3Client:
    creds = running.store.mint_credentials(
        prefix, write=write, session_name=f"alice,{'write' if write else 'read'}-prog-bucket-access"
    )
    return client(running.admin, creds.access_key_id, creds.secret_access_key, creds.session_token)


def error_code(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The S3 error code ``call(*args, **kwargs)`` fails with ("OK" if it succeeds)."""
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code"))
    return "OK"


def multipart_upload(s3: S3Client, bucket: str, key: str, parts: list[bytes]) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done: list[CompletedPartTypeDef] = []
    for number, body in enumerate(parts, start=1):
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]
        done.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )


# --------------------------------------------------------------------------- the policy text


def test_session_policy_is_provenas() -> None:
    """docs/API.md §7, statement by statement."""
    read = session_policy("bkt", "datasets/x-1/", write=False)
    base = "arn:aws:s3:::bkt/datasets/x-1"
    objects = [base, base + "/", base + "/*"]
    assert read["Statement"][0] == {
        "Effect": "Allow",
        "Action": ["s3:GetObject*"],
        "Resource": objects,
    }
    listing = read["Statement"][-1]
    assert listing["Action"] == [
        "s3:ListMultipartUploads",
        "s3:ListBucketMultipartUploads",
        "s3:ListBucketVersions",
        "s3:ListBucket",
    ]
    assert listing["Resource"] == ["arn:aws:s3:::bkt", "arn:aws:s3:::bkt/*"]
    assert "Condition" not in listing
    assert len(read["Statement"]) == 2
    write = session_policy("bkt", "datasets/x-1", write=True)
    assert len(write["Statement"]) == 3
    assert write["Statement"][1] == read["Statement"][0]  # write first, then read, then list
    assert write["Statement"][0]["Resource"] == objects
    assert write["Statement"][0]["Action"] == [
        "s3:GetObject*",
        "s3:DeleteObject*",
        "s3:PutObject",
        "s3:PutObjectLegalHold",
        "s3:PutObjectRetention",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:Abort*",
    ]


def test_admin_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVENAFS_S3_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("PROVENAFS_S3_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ValueError, match="PROVENAFS_S3_ACCESS_KEY_ID"):
        admin_from_environment("http://127.0.0.1:9000/", "bkt")
    monkeypatch.setenv("PROVENAFS_S3_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("PROVENAFS_S3_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.delenv("PROVENAFS_S3_ROLE_ARN", raising=False)
    monkeypatch.delenv("PROVENAFS_S3_REGION", raising=False)
    admin = admin_from_environment("http://127.0.0.1:9000/", "bkt")
    assert admin.endpoint_url == "http://127.0.0.1:9000"
    assert (admin.region, admin.role_arn, admin.bucket) == (
        "ap-southeast-2",
        DEFAULT_ROLE_ARN,
        "bkt",
    )
    assert "very-secret-value" not in repr(admin)
    monkeypatch.setenv("PROVENAFS_S3_ROLE_ARN", "arn:aws:iam::123:role/R")
    monkeypatch.setenv("PROVENAFS_S3_REGION", "us-east-1")
    admin = admin_from_environment("http://127.0.0.1:9000", "bkt")
    assert (admin.region, admin.role_arn) == ("us-east-1", "arn:aws:iam::123:role/R")


def test_secrets_stay_out_of_reprs() -> None:
    creds = StsCredentials("ASIAX", "the-secret", "the-session-token", dt.datetime.now(dt.UTC))
    assert "the-secret" not in repr(creds)
    assert "the-session-token" not in repr(creds)


# --------------------------------------------------------------------------- the running server


@pytest.mark.s3
def test_server_files_and_binding(running: Running) -> None:
    root = running.server.root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ("secrets.json", "iam.json"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600
    iam = json.loads((root / "iam.json").read_text())
    assert set(iam) == {"identities", "sts", "policy", "policies", "roles"}
    assert iam["roles"][0]["roleArn"] == running.admin.role_arn
    assert len(json.loads((root / "secrets.json").read_text())["sts_signing_key"]) >= 44
    assert running.admin.endpoint_url.startswith("http://127.0.0.1:")
    assert running.admin.secret_access_key not in repr(running.admin)
    assert running.admin.secret_access_key not in running.server.log_path.read_text()


@pytest.mark.s3
def test_start_leaves_no_probe_object_behind(running: Running) -> None:
    listed = running.store.list_keys("")
    assert listed
    assert not [key for key in listed if "readiness" in key]


@pytest.mark.s3
def test_metrics_count_the_bytes_sent_for_the_bucket(running: Running) -> None:
    """weed's Prometheus endpoint on 127.0.0.1 counts every byte S3 sends (scripts/bench row 7)."""
    url = running.server.metrics_url
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    before = sent_bytes(url, running.admin.bucket)
    running.store.put_object("metrics/probe.bin", b"m" * 100_000)
    s3 = client(running.admin, running.admin.access_key_id, running.admin.secret_access_key)
    ranged = s3.get_object(
        Bucket=running.admin.bucket, Key="metrics/probe.bin", Range="bytes=0-999"
    )
    assert ranged["Body"].read() == b"m" * 1000
    assert running.store.get_object("metrics/probe.bin") == b"m" * 100_000
    assert sent_bytes(url, running.admin.bucket) - before == 101_000
    running.store.delete_object("metrics/probe.bin")


def sent_bytes(metrics_url: str, bucket: str) -> float:
    """SeaweedFS_s3_bucket_traffic_sent_bytes_total for *bucket* (0 before the first GET)."""
    name = "SeaweedFS_s3_bucket_traffic_sent_bytes_total"
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith(f'{name}{{bucket="{bucket}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.s3
def test_admin_operations(running: Running, tmp_path: Path) -> None:
    store = running.store
    assert store.prefix_exists(PREFIX_A)
    assert not store.prefix_exists("datasets/nothing-here/")
    assert store.object_exists(PREFIX_A + "metadata.json")
    assert not store.object_exists(PREFIX_A + "nope.json")
    for impossible in ("./data/a.csv", "data/./a.csv", "data/a.csv\x00", "."):  # S3 answers 400
        assert not store.object_exists(PREFIX_A + impossible)
    assert store.get_object(PREFIX_A + "data/a.csv") == b"a,b\n1,2\n"
    with pytest.raises(ObjectNotFound):
        store.get_object(PREFIX_A + "nope.json")
    assert store.list_keys(PREFIX_A) == [PREFIX_A + "data/a.csv", PREFIX_A + "metadata.json"]
    big = tmp_path / "big.bin"
    payload = os.urandom(MIB) * 20  # above the 16 MiB multipart threshold
    big.write_bytes(payload)
    store.upload_file("datasets/uploads/big.bin", big)
    assert store.get_object("datasets/uploads/big.bin") == payload
    head = client(running.admin, running.admin.access_key_id, running.admin.secret_access_key)
    etag = head.head_object(Bucket=running.admin.bucket, Key="datasets/uploads/big.bin")["ETag"]
    assert etag.strip('"').endswith("-2")  # two parts: it went up as a multipart upload
    store.ensure_bucket()  # idempotent
    many = {f"datasets/many/{n:03d}.txt": f"file {n}".encode() for n in range(40)}
    store.put_many(many)
    assert store.list_keys("datasets/many/") == sorted(many)
    assert store.get_object("datasets/many/017.txt") == b"file 17"


@pytest.mark.s3
def test_read_credentials_are_scoped(running: Running) -> None:
    s3 = scoped(running, PREFIX_A, write=False)
    bucket = running.admin.bucket
    assert s3.get_object(Bucket=bucket, Key=PREFIX_A + "data/a.csv")["Body"].read() == b"a,b\n1,2\n"
    ranged = s3.get_object(Bucket=bucket, Key=PREFIX_A + "data/a.csv", Range="bytes=2-4")
    assert ranged["Body"].read() == b"b\n1"
    assert s3.head_object(Bucket=bucket, Key=PREFIX_A + "metadata.json")["ContentLength"] == 2
    assert error_code(s3.get_object, Bucket=bucket, Key=PREFIX_A + "absent") == "NoSuchKey"
    assert error_code(s3.get_object, Bucket=bucket, Key=PREFIX_B + "secret.bin") == ("AccessDenied")
    assert error_code(s3.get_object, Bucket=bucket, Key=SIBLING_OF_A + "x.txt") == ("AccessDenied")
    assert error_code(s3.put_object, Bucket=bucket, Key=PREFIX_A + "new.txt", Body=b"x") == (
        "AccessDenied"
    )
    assert error_code(s3.delete_object, Bucket=bucket, Key=PREFIX_A + "metadata.json") == (
        "AccessDenied"
    )
    assert error_code(
        multipart_upload, s3, bucket, PREFIX_A + "mp.bin", [b"x" * (5 * MIB), b"y"]
    ) == ("AccessDenied")
    assert running.store.object_exists(PREFIX_A + "metadata.json")
    assert not running.store.object_exists(PREFIX_A + "new.txt")
    assert not running.store.object_exists(PREFIX_A + "mp.bin")


@pytest.mark.s3
def test_listing_the_whole_bucket_is_allowed(running: Running) -> None:
    """As Provena: any dataset's credentials list every key, but read only their own."""
    s3 = scoped(running, PREFIX_A, write=False)
    listed = s3.list_objects_v2(Bucket=running.admin.bucket)
    keys = {entry["Key"] for entry in listed.get("Contents", []) if "Key" in entry}
    assert {PREFIX_A + "metadata.json", PREFIX_B + "secret.bin"} <= keys
    folders = s3.list_objects_v2(Bucket=running.admin.bucket, Prefix=PREFIX_A, Delimiter="/")
    assert [p.get("Prefix") for p in folders.get("CommonPrefixes", [])] == [PREFIX_A + "data/"]


@pytest.mark.s3
def test_write_credentials_are_scoped(running: Running) -> None:
    s3 = scoped(running, PREFIX_A, write=True)
    bucket = running.admin.bucket
    s3.put_object(Bucket=bucket, Key=PREFIX_A + "w/new.txt", Body=b"written")
    assert s3.get_object(Bucket=bucket, Key=PREFIX_A + "w/new.txt")["Body"].read() == b"written"
    assert error_code(s3.get_object, Bucket=bucket, Key=PREFIX_A + "w/absent") == ("NoSuchKey")
    s3.delete_object(Bucket=bucket, Key=PREFIX_A + "w/new.txt")
    assert not running.store.object_exists(PREFIX_A + "w/new.txt")
    part_one, part_two = os.urandom(5 * MIB), b"tail"
    multipart_upload(s3, bucket, PREFIX_A + "w/mp.bin", [part_one, part_two])
    assert running.store.get_object(PREFIX_A + "w/mp.bin") == part_one + part_two
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=PREFIX_A + "w/aborted.bin")[
        "UploadId"
    ]
    s3.upload_part(
        Bucket=bucket, Key=PREFIX_A + "w/aborted.bin", UploadId=upload_id, PartNumber=1, Body=b"z"
    )
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=PREFIX_A).get("Uploads", [])
    assert upload_id in {upload.get("UploadId") for upload in uploads}
    s3.abort_multipart_upload(Bucket=bucket, Key=PREFIX_A + "w/aborted.bin", UploadId=upload_id)
    assert not running.store.object_exists(PREFIX_A + "w/aborted.bin")
    # boto3's managed transfer (what the mount and upload tools use) goes multipart too
    s3.upload_fileobj(
        __import__("io").BytesIO(b"m" * (6 * MIB)),
        bucket,
        PREFIX_A + "w/managed.bin",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    assert running.store.get_object(PREFIX_A + "w/managed.bin") == b"m" * (6 * MIB)
    # ... and nothing outside the prefix
    for key in (PREFIX_B + "secret.bin", SIBLING_OF_A + "x.txt"):
        assert error_code(s3.get_object, Bucket=bucket, Key=key) == "AccessDenied"
        assert error_code(s3.delete_object, Bucket=bucket, Key=key) == ("AccessDenied")
        assert error_code(s3.put_object, Bucket=bucket, Key=key, Body=b"x") == ("AccessDenied")
    assert error_code(
        multipart_upload, s3, bucket, PREFIX_B + "mp.bin", [b"x" * (5 * MIB), b"y"]
    ) == ("AccessDenied")
    assert running.store.get_object(PREFIX_B + "secret.bin") == b"dataset B only"
    assert running.store.get_object(SIBLING_OF_A + "x.txt") == b"sibling"
    assert not running.store.object_exists(PREFIX_B + "mp.bin")


@pytest.mark.s3
def test_other_buckets_are_out_of_reach(running: Running) -> None:
    admin_s3 = client(running.admin, running.admin.access_key_id, running.admin.secret_access_key)
    admin_s3.create_bucket(Bucket="another-bucket")
    admin_s3.put_object(Bucket="another-bucket", Key=PREFIX_A + "f.txt", Body=b"elsewhere")
    s3 = scoped(running, PREFIX_A, write=True)
    assert error_code(s3.get_object, Bucket="another-bucket", Key=PREFIX_A + "f.txt") == (
        "AccessDenied"
    )
    assert error_code(
        s3.put_object, Bucket="another-bucket", Key=PREFIX_A + "g.txt", Body=b"x"
    ) == ("AccessDenied")


@pytest.mark.s3
def test_forged_credentials_are_refused(running: Running) -> None:
    creds = running.store.mint_credentials(PREFIX_A, write=True, session_name="alice")
    key = PREFIX_A + "metadata.json"
    bucket = running.admin.bucket
    good = client(running.admin, creds.access_key_id, creds.secret_access_key, creds.session_token)
    assert good.get_object(Bucket=bucket, Key=key)["Body"].read() == b"{}"
    token = creds.session_token
    middle = len(token) // 2
    tampered_token = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    forged = [
        client(running.admin, creds.access_key_id, creds.secret_access_key, tampered_token),
        client(running.admin, creds.access_key_id, creds.secret_access_key[:-2] + "xx", token),
        client(running.admin, creds.access_key_id, creds.secret_access_key, None),
        client(running.admin, "ASIANOSUCHKEY0000000", creds.secret_access_key, token),
    ]
    for s3 in forged:
        assert error_code(s3.get_object, Bucket=bucket, Key=key) != "OK"
        assert error_code(s3.put_object, Bucket=bucket, Key=PREFIX_A + "forged", Body=b"x") != (
            "OK"
        )
    assert not running.store.object_exists(PREFIX_A + "forged")
    anonymous = httpx.get(f"{running.admin.endpoint_url}/{bucket}/{key}", timeout=10)
    assert anonymous.status_code == 403


@pytest.mark.s3
def test_session_length_is_clamped(running: Running) -> None:
    before = dt.datetime.now(dt.UTC)
    creds = running.store.mint_credentials(
        PREFIX_A, write=False, session_name="x", duration_seconds=60
    )
    assert creds.expiration.tzinfo is not None
    assert creds.expiration - before >= dt.timedelta(seconds=890)
    longer = running.store.mint_credentials(
        PREFIX_A, write=False, session_name="a name with spaces/and slashes", duration_seconds=7200
    )
    assert dt.timedelta(seconds=7100) <= longer.expiration - before <= dt.timedelta(seconds=7300)


@pytest.mark.s3
def test_minting_is_thread_safe(running: Running) -> None:
    prefixes = [PREFIX_A if n % 2 == 0 else PREFIX_B for n in range(16)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        minted = list(
            pool.map(
                lambda p: running.store.mint_credentials(p, write=False, session_name="t"),
                prefixes,
            )
        )
    assert len({creds.access_key_id for creds in minted}) == 16
    for prefix, creds in zip(prefixes, minted, strict=True):
        s3 = client(
            running.admin, creds.access_key_id, creds.secret_access_key, creds.session_token
        )
        own = PREFIX_A + "metadata.json" if prefix == PREFIX_A else PREFIX_B + "secret.bin"
        other = PREFIX_B + "secret.bin" if prefix == PREFIX_A else PREFIX_A + "metadata.json"
        assert error_code(s3.head_object, Bucket=running.admin.bucket, Key=own) == "OK"
        assert error_code(s3.get_object, Bucket=running.admin.bucket, Key=other) == "AccessDenied"


@pytest.mark.s3
def test_presigned_url(running: Running) -> None:
    key = PREFIX_A + "data/a.csv"
    creds = running.store.mint_credentials(
        PREFIX_A, write=False, session_name="Generate-presigned-url-for-dataset-download"
    )
    url = running.store.presign_get(key, creds=creds, expires_in=600, filename=key)
    assert creds.secret_access_key not in url
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"a,b\n1,2\n"
    assert response.headers["content-disposition"] == f"attachment; filename={key}"
    tampered = url.replace("data/a.csv", "metadata.json")
    assert httpx.get(tampered, timeout=10).status_code == 403
    other = running.store.presign_get(
        PREFIX_B + "secret.bin", creds=creds, expires_in=600, filename="x"
    )
    assert httpx.get(other, timeout=10).status_code == 403


@pytest.mark.s3
def test_storage_errors_name_no_secret(running: Running) -> None:
    broken = ObjectStore(dataclasses.replace(running.admin, secret_access_key="wrong-secret-xyz"))
    with pytest.raises(StorageError) as caught:
        broken.put_object(PREFIX_A + "x", b"x")
    assert "wrong-secret-xyz" not in str(caught.value)
    with pytest.raises(StorageError) as caught:
        broken.mint_credentials(PREFIX_A, write=True, session_name="x")
    assert "wrong-secret-xyz" not in str(caught.value)
    with pytest.raises(StorageError, match="HeadObject failed: 403"):  # not "does not exist"
        broken.object_exists(PREFIX_A + "metadata.json")


@pytest.mark.s3
def test_weed_log_holds_no_secrets(running: Running) -> None:
    creds = running.store.mint_credentials(PREFIX_A, write=True, session_name="log-check")
    s3 = client(running.admin, creds.access_key_id, creds.secret_access_key, creds.session_token)
    s3.put_object(Bucket=running.admin.bucket, Key=PREFIX_A + "log-check", Body=b"x")
    forged = client(running.admin, creds.access_key_id, "wrong-secret", creds.session_token)
    assert error_code(forged.get_object, Bucket=running.admin.bucket, Key=PREFIX_A + "x") != "OK"
    text = running.server.log_path.read_text(errors="replace")
    signing_key = json.loads((running.server.root / "secrets.json").read_text())["sts_signing_key"]
    for secret in (
        creds.secret_access_key,
        creds.session_token,
        running.admin.secret_access_key,
        signing_key,
    ):
        assert secret not in text


# --------------------------------------------------------------------------- no way out of a scope

FULL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def sts_call(admin: S3Admin, creds: StsCredentials, form: dict[str, str]) -> httpx.Response:
    """An STS form POST to the S3 port, SigV4-signed with *creds* (any parameters, even none)."""
    body = urllib.parse.urlencode({"Version": "2011-06-15", **form})
    request = botocore.awsrequest.AWSRequest(
        method="POST",
        url=admin.endpoint_url + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    signer_creds = botocore.credentials.Credentials(
        creds.access_key_id, creds.secret_access_key, creds.session_token
    )
    botocore.auth.SigV4Auth(signer_creds, "sts", admin.region).add_auth(request)
    headers = dict(request.headers)
    return httpx.post(admin.endpoint_url + "/", content=body, headers=headers, timeout=30)


def escalation_attempts(running: Running, creds: StsCredentials) -> list[StsCredentials]:
    """*creds* and whatever sessions STS hands out when they ask for the role (or themselves)."""
    role = running.admin.role_arn
    forms = [
        {"Action": "AssumeRole", "RoleArn": role, "RoleSessionName": "escalate"},
        {"Action": "AssumeRole", "RoleArn": role, "RoleSessionName": "escalate", "Policy": FULL},
        {"Action": "AssumeRole", "RoleSessionName": "escalate"},
    ]
    found = [creds]
    for form in forms:
        answer = sts_call(running.admin, creds, form)
        if answer.status_code != 200:
            continue
        namespace = {"sts": "https://sts.amazonaws.com/doc/2011-06-15/"}
        xml = ElementTree.fromstring(answer.text)  # noqa: S314 (the answer of our own server)
        given = xml.find(".//sts:Credentials", namespace)
        assert given is not None, answer.text[:300]
        found.append(
            StsCredentials(
                given.findtext("sts:AccessKeyId", "", namespace),
                given.findtext("sts:SecretAccessKey", "", namespace),
                given.findtext("sts:SessionToken", "", namespace),
                dt.datetime.now(dt.UTC),
            )
        )
    return found


def iam_client(admin: S3Admin, key_id: str, secret: str, token: str | None = None) -> Any:
    with BOTO_SESSION_LOCK:
        return BOTO_SESSION.client(
            "iam",
            endpoint_url=admin.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=admin.region,
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )


def iam_user_names(running: Running) -> set[str]:
    admin_iam = iam_client(
        running.admin, running.admin.access_key_id, running.admin.secret_access_key
    )
    return {user["UserName"] for user in admin_iam.list_users()["Users"]}


@pytest.mark.s3
@pytest.mark.parametrize("write", [False, True])
def test_scoped_credentials_cannot_assume_the_role_again(running: Running, write: bool) -> None:
    """Issue 10 item 1: a dataset's credentials must not buy a session with wider rights."""
    creds = running.store.mint_credentials(PREFIX_A, write=write, session_name="bob,escalate")
    role = running.admin.role_arn
    attempts = {
        "no policy": {"Action": "AssumeRole", "RoleArn": role, "RoleSessionName": "escalate"},
        "full policy": {
            "Action": "AssumeRole",
            "RoleArn": role,
            "RoleSessionName": "escalate",
            "Policy": FULL,
        },
        "no role (itself)": {"Action": "AssumeRole", "RoleSessionName": "escalate"},
    }
    for name, form in attempts.items():
        answer = sts_call(running.admin, creds, form)
        assert answer.status_code == 403, (name, answer.status_code, answer.text[:300])
        assert "<Code>AccessDenied</Code>" in answer.text, (name, answer.text[:300])
        assert "SessionToken" not in answer.text
    # ... and nothing outside the prefix became reachable meanwhile
    s3 = client(running.admin, creds.access_key_id, creds.secret_access_key, creds.session_token)
    bucket = running.admin.bucket
    assert error_code(s3.get_object, Bucket=bucket, Key=PREFIX_B + "secret.bin") == "AccessDenied"


@pytest.mark.s3
def test_scoped_credentials_cannot_write_iam(running: Running) -> None:
    """Issue 10 item 1: no IAM user (with a permanent key) can be made from a dataset's session."""
    before = iam_user_names(running)
    creds = running.store.mint_credentials(PREFIX_A, write=True, session_name="bob,iam")
    for attempt in escalation_attempts(running, creds):
        iam = iam_client(
            running.admin, attempt.access_key_id, attempt.secret_access_key, attempt.session_token
        )
        assert error_code(iam.create_user, UserName="mallory") != "OK"
        assert error_code(iam.create_access_key, UserName=ADMIN_IDENTITY) != "OK"
    assert iam_user_names(running) == before
    assert "mallory" not in before


@pytest.mark.s3
def test_iam_is_read_only_even_for_the_admin(running: Running) -> None:
    """Nothing needs IAM writes: the store's own identity cannot make users either."""
    admin_iam = iam_client(
        running.admin, running.admin.access_key_id, running.admin.secret_access_key
    )
    before = iam_user_names(running)
    assert error_code(admin_iam.create_user, UserName="mallory-admin") != "OK"
    assert iam_user_names(running) == before
    # the normal flow still works: the store mints, the session reads its own prefix
    creds = running.store.mint_credentials(PREFIX_A, write=False, session_name="after-iam")
    s3 = client(running.admin, creds.access_key_id, creds.secret_access_key, creds.session_token)
    body = s3.get_object(Bucket=running.admin.bucket, Key=PREFIX_A + "data/a.csv")["Body"].read()
    assert body == b"a,b\n1,2\n"


# --------------------------------------------------------------------------- weed's other ports

VICTIM = PREFIX_A + "ports/victim.txt"
VICTIM_BODY = b"victim bytes, readable with the dataset's credentials only"
GRPC_PORTS = ("master_grpc", "volume_grpc", "filer_grpc", "s3_grpc", "admin_grpc")
# an HTTP/2 client preface and an empty SETTINGS frame: how every gRPC call begins
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def ports_of(running: Running) -> dict[str, int]:
    ports: dict[str, int] = json.loads((running.server.root / "ports.json").read_text())
    return ports


def file_id_of(running: Running, key: str) -> str:
    """The volume file id of *key*'s first chunk, asked over gRPC with the store's certificate."""
    ports = ports_of(running)
    root = running.server.root
    command = f"fs.meta.cat /buckets/{running.admin.bucket}/{key}\n"
    shell = subprocess.run(
        [
            str(find_weed()),
            f"-config_dir={root}",
            "shell",
            f"-master=127.0.0.1:{ports['master']}.{ports['master_grpc']}",
            f"-filer=127.0.0.1:{ports['filer']}.{ports['filer_grpc']}",
        ],
        input=command,
        capture_output=True,
        text=True,
        cwd=root,
        env={k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
        | {"HOME": str(root)},
        timeout=120,
        check=False,
    )
    found = re.search(r'"fileId":\s*"([0-9]+,[0-9a-f]+)"', shell.stdout)
    assert found is not None, shell.stdout[-2000:] + shell.stderr[-2000:]
    return found.group(1)


def volume_jwt(running: Running, file_id: str, key_name: str) -> str:
    """An HS256 token for *file_id*, as the master signs them (the test plays the master)."""
    keys = json.loads((running.server.root / "secrets.json").read_text())

    def part(document: dict[str, Any]) -> str:
        text = json.dumps(document, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).rstrip(b"=").decode()

    unsigned = (
        part({"alg": "HS256", "typ": "JWT"})
        + "."
        + part({"fid": file_id, "exp": int(time.time()) + 60})
    )
    mac = hmac.new(keys[key_name].encode(), unsigned.encode(), hashlib.sha256).digest()
    return unsigned + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@pytest.mark.s3
def test_master_volume_and_filer_http_refuse_unauthenticated_callers(running: Running) -> None:
    """Issue 10 item 2: no local user may list, read, upload or delete behind S3's back."""
    store, bucket = running.store, running.admin.bucket
    store.put_object(VICTIM, VICTIM_BODY)
    keys_before = store.list_keys("")
    ports = ports_of(running)
    file_id = file_id_of(running, VICTIM)
    master, volume, filer = (
        f"http://127.0.0.1:{ports[name]}" for name in ("master", "volume", "filer")
    )
    planted = {"file": ("planted.txt", b"planted by another user")}
    attempts: dict[str, tuple[str, str, dict[str, Any]]] = {
        "master: hand out a write token": ("GET", f"{master}/dir/assign", {}),
        "master: hand out a read token": ("GET", f"{master}/dir/lookup?fileId={file_id}", {}),
        "master: list volumes": ("GET", f"{master}/dir/status", {}),
        "master: follow a file id": ("GET", f"{master}/{file_id}", {}),
        "volume: read": ("GET", f"{volume}/{file_id}", {}),
        "filer: list": (
            "GET",
            f"{filer}/buckets/{bucket}/{PREFIX_A}ports/",
            {"headers": {"Accept": "application/json"}},
        ),
        "filer: read": ("GET", f"{filer}/buckets/{bucket}/{VICTIM}", {}),
        "filer: upload": ("POST", f"{filer}/buckets/{bucket}/{PREFIX_A}ports/", {"files": planted}),
        "volume: overwrite": ("POST", f"{volume}/{file_id}", {"files": planted}),
        "volume: delete": ("DELETE", f"{volume}/{file_id}", {}),
        "filer: delete": ("DELETE", f"{filer}/buckets/{bucket}/{VICTIM}", {}),
        "filer: delete everything": ("DELETE", f"{filer}/buckets/{bucket}/?recursive=true", {}),
        "master: delete the bucket's volumes": (
            "GET",
            f"{master}/col/delete?collection={bucket}",
            {},
        ),
    }
    for name, (method, url, extra) in attempts.items():
        answer = httpx.request(method, url, timeout=30, follow_redirects=False, **extra)
        assert answer.status_code in (401, 403, 404, 405), (name, answer.status_code, answer.text)
        assert "authorization" not in answer.headers, name  # no volume token handed out
        assert VICTIM_BODY not in answer.content, name
        assert "victim" not in answer.text, name
    # status pages still answer anyone, but name no file and hold no byte of one
    for url in (
        f"{master}/",
        f"{volume}/status",
        f"http://127.0.0.1:{ports['metrics']}/metrics",
        f"http://127.0.0.1:{ports['admin']}/metrics",
    ):
        page = httpx.get(url, timeout=30)
        assert "victim" not in page.text, url
        assert VICTIM_BODY not in page.content, url
    assert store.get_object(VICTIM) == VICTIM_BODY
    assert store.list_keys("") == keys_before
    # the volume port is alive: it serves a caller holding a token signed with the store's key
    signed = httpx.get(
        f"{volume}/{file_id}",
        headers={"Authorization": "Bearer " + volume_jwt(running, file_id, "volume_read_jwt")},
        timeout=30,
    )
    assert (signed.status_code, signed.content) == (200, VICTIM_BODY)
    forged = volume_jwt(running, file_id, "volume_write_jwt")  # signed, but with the wrong key
    assert httpx.get(f"{volume}/{file_id}?jwt={forged}", timeout=30).status_code == 401


def speaks_http2(port: int, tls: ssl.SSLContext | None) -> bool:
    """Whether the port answers an HTTP/2 client preface with a SETTINGS frame (gRPC's start)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            conn = raw if tls is None else tls.wrap_socket(raw, server_hostname="127.0.0.1")
            conn.sendall(H2_PREFACE)
            frame = conn.recv(9)
    except (OSError, ssl.SSLError):
        return False
    return len(frame) == 9 and frame[3] == 0x04


def tls_context(root: Path, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(root / "grpc-ca.pem")
    if with_certificate:
        context.load_cert_chain(root / "grpc-cert.pem", root / "grpc-key.pem")
    context.set_alpn_protocols(["h2"])
    return context


@pytest.mark.s3
def test_grpc_ports_need_the_stores_certificate(running: Running) -> None:
    """Issue 10 item 2: weed's gRPC ports (metadata, needles, IAM) speak only mutual TLS."""
    ports = ports_of(running)
    for name in GRPC_PORTS:
        assert not speaks_http2(ports[name], None), f"{name} answers plain gRPC"
        if (running.server.root / "grpc-ca.pem").exists():
            anonymous = tls_context(running.server.root, with_certificate=False)
            assert not speaks_http2(ports[name], anonymous), f"{name} needs no certificate"
            store_itself = tls_context(running.server.root, with_certificate=True)
            assert speaks_http2(ports[name], store_itself), f"{name} refuses the store itself"


@pytest.mark.s3
def test_weeds_unix_sockets_are_private(running: Running) -> None:
    """weed also listens on /tmp/seaweedfs-*.sock: only the store's user may connect to them."""
    ports = {str(port) for port in ports_of(running).values()}
    sockets = [
        path
        for path in Path("/tmp").glob("seaweedfs-*.sock")
        if path.stem.rsplit("-", 1)[-1] in ports
    ]
    assert sockets  # weed made some: filer, s3 and every gRPC service
    for path in sockets:
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) & 0o077 == 0, (path, oct(mode))
        assert path.stat().st_uid == os.geteuid()


# --------------------------------------------------------------------------- restart and stop


@pytest.mark.s3
def test_restart_keeps_objects_keys_and_sessions(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path, bucket="restart-bucket")
    first = server.start()
    pid = server.pid
    assert pid is not None
    try:
        store = ObjectStore(first)
        store.put_object(PREFIX_A + "kept.txt", b"survives a restart")
        creds = store.mint_credentials(PREFIX_A, write=False, session_name="before-restart")
        server.stop()
        assert server.admin is None
        assert not process_alive(pid)
        assert not group_alive(pid)
        second = server.start()
        assert (second.access_key_id, second.secret_access_key) == (
            first.access_key_id,
            first.secret_access_key,
        )
        # ports are reused while still free; another process may take one meanwhile, so the
        # endpoint is not asserted equal
        second_pid = server.pid
        assert second_pid is not None
        assert second_pid != pid
        # start() returns only once an object can be written and read: no retry needed here
        assert ObjectStore(second).get_object(PREFIX_A + "kept.txt") == b"survives a restart"
        # the STS signing key is kept per data dir, so live sessions survive a restart too
        s3 = client(second, creds.access_key_id, creds.secret_access_key, creds.session_token)
        body = s3.get_object(Bucket="restart-bucket", Key=PREFIX_A + "kept.txt")["Body"].read()
        assert body == b"survives a restart"
    finally:
        server.stop()
    assert not process_alive(second_pid)
    assert not group_alive(second_pid)
    assert not list(Path("/tmp").glob(f"seaweedfs-s3-{first.endpoint_url.rsplit(':', 1)[1]}.sock"))


@pytest.mark.s3
def test_start_gives_up_with_a_clear_error_when_objects_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never_readable(self: ObjectStore, key: str) -> bytes:
        raise StorageError("GetObject failed: InternalError")

    monkeypatch.setattr(ObjectStore, "get_object", never_readable)
    server = SeaweedServer(tmp_path)
    with pytest.raises(StorageError, match="could not write and read an object") as caught:
        server.start(timeout=3.0)
    assert "InternalError" in str(caught.value)
    assert server.pid is None  # weed was stopped again
    assert server.admin is None
    assert server.metrics_url is None


@pytest.mark.s3
def test_ports_of_an_older_version_without_metrics_are_chosen_afresh(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path)
    server.root.mkdir(parents=True)
    services = ("s3", "master", "volume", "filer", "admin")
    old_ports = {name: 1 for service in services for name in (service, f"{service}_grpc")}
    (server.root / "ports.json").write_text(json.dumps(old_ports))
    admin = server.start()
    try:
        assert ObjectStore(admin).list_keys("") == []
        assert "metrics" in json.loads((server.root / "ports.json").read_text())
    finally:
        server.stop()


@pytest.mark.s3
def test_stop_escalates_when_sigterm_is_ignored(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    try:
        started = time.monotonic()
        server.stop(timeout=1.0)
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not process_alive(pid)
    print(f"\nstop of an unresponsive weed took {time.monotonic() - started:.1f} s")


CHILD_SCRIPT = """
import sys, threading, time
from pathlib import Path
from provenafs.server.seaweed import SeaweedServer

server = SeaweedServer(Path(sys.argv[1]))
if sys.argv[2] == "worker-thread":
    thread = threading.Thread(target=server.start)
    thread.start()
    thread.join()
else:
    server.start()
print(server.pid, flush=True)
time.sleep(600)
"""


def start_in_child(data_dir: Path, where: str) -> tuple[subprocess.Popen[str], int]:
    """A python process that starts weed (from *where*) and prints its PID; stopped by the test."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(data_dir), where],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip().isdigit(), f"child did not start weed: {line!r}"
    return child, int(line)


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


@pytest.mark.s3
def test_weed_dies_with_a_killed_server(tmp_path: Path) -> None:
    child, weed_pid = start_in_child(tmp_path, "main-thread")
    try:
        assert process_alive(weed_pid)
        child.kill()  # SIGKILL: no cleanup code runs in the server process
        child.wait(timeout=30)
        assert wait_gone(weed_pid, 30)
    finally:
        if process_alive(weed_pid):
            os.killpg(weed_pid, signal.SIGKILL)


@pytest.mark.s3
def test_orphan_of_an_earlier_run_is_stopped_on_start(tmp_path: Path) -> None:
    child, orphan_pid = start_in_child(tmp_path, "worker-thread")
    try:
        child.kill()
        child.wait(timeout=30)
        assert process_alive(orphan_pid)  # started off the main thread: it outlives its parent
        server = SeaweedServer(tmp_path)
        admin = server.start()
        try:
            assert wait_gone(orphan_pid, 5)
            assert server.pid not in (None, orphan_pid)
            ObjectStore(admin).put_object("after-orphan", b"ok")
            assert ObjectStore(admin).get_object("after-orphan") == b"ok"
        finally:
            server.stop()
    finally:
        if process_alive(orphan_pid):
            os.killpg(orphan_pid, signal.SIGKILL)
