"""The local data store's S3 client side: admin S3 operations and prefix-scoped STS credentials.

``ObjectStore`` is the data store's admin client: the few bucket operations the façade needs, and
``mint_credentials``, which builds Provena's inline session policy (docs/API.md §7) so that the
S3 server itself *enforces* the prefix scope (docs/API.md §24: SeaweedFS does). ``S3Admin``
says how to reach the S3 server: the local SeaweedFS (``seaweed.py``) or ``--s3-endpoint``.

This module must not import anything from the mount side of provenafs, and must never log or put
in an exception message a secret key or session token. ``ObjectStore`` is thread-safe: boto3
clients may be shared between threads.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_REGION",
    "DEFAULT_ROLE_ARN",
    "MAX_SESSION_SECONDS",
    "MIN_SESSION_SECONDS",
    "ROLE_NAME",
    "ObjectNotFound",
    "ObjectStore",
    "S3Admin",
    "StorageError",
    "StsCredentials",
    "admin_from_environment",
    "s3_client",
    "session_policy",
]

DEFAULT_BUCKET = "provena-local-bucket"
DEFAULT_REGION = "ap-southeast-2"
ROLE_NAME = "ProvenaDatasetAccessRole"
DEFAULT_ROLE_ARN = f"arn:aws:iam::role/{ROLE_NAME}"
MIN_SESSION_SECONDS = 900  # STS rejects less, on AWS and on SeaweedFS alike
MAX_SESSION_SECONDS = 12 * 3600  # the role's maximum session, as Provena's bucket role

_MULTIPART_CHUNK = 16 * 1024 * 1024
_SESSION_NAME_ALLOWED = re.compile(r"[^\w+=,.@-]")

# --------------------------------------------------------------------------- value records


@dataclasses.dataclass(frozen=True)
class S3Admin:
    """How the data store reaches its S3 server with its own long-lived admin identity."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    region: str
    bucket: str
    role_arn: str  # the role STS AssumeRole targets


@dataclasses.dataclass(frozen=True)
class StsCredentials:
    """Temporary credentials from STS; ``expiration`` is timezone-aware (UTC)."""

    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str = dataclasses.field(repr=False)
    expiration: dt.datetime


class StorageError(Exception):
    """An S3 or STS operation failed; the message names the operation and the S3 error code only."""


class ObjectNotFound(StorageError):
    """The key does not exist (``NoSuchKey`` / 404)."""


def admin_from_environment(endpoint_url: str, bucket: str) -> S3Admin:
    """The admin identity for ``--s3-endpoint URL`` from ``PROVENAFS_S3_*`` variables.

    Keys from ``PROVENAFS_S3_ACCESS_KEY_ID`` / ``PROVENAFS_S3_SECRET_ACCESS_KEY`` (required), the
    role from ``PROVENAFS_S3_ROLE_ARN`` (default: the role a local SeaweedFS is given), the region
    from ``PROVENAFS_S3_REGION`` (default ap-southeast-2).
    """
    access_key = os.environ.get("PROVENAFS_S3_ACCESS_KEY_ID", "")
    secret_key = os.environ.get("PROVENAFS_S3_SECRET_ACCESS_KEY", "")
    missing = [
        name
        for name, value in (
            ("PROVENAFS_S3_ACCESS_KEY_ID", access_key),
            ("PROVENAFS_S3_SECRET_ACCESS_KEY", secret_key),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"--s3-endpoint needs {' and '.join(missing)} in the environment")
    return S3Admin(
        endpoint_url=endpoint_url.rstrip("/"),
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=os.environ.get("PROVENAFS_S3_REGION") or DEFAULT_REGION,
        bucket=bucket,
        role_arn=os.environ.get("PROVENAFS_S3_ROLE_ARN") or DEFAULT_ROLE_ARN,
    )


# --------------------------------------------------------------------------- admin S3 operations

# One boto3 session for every client this module makes: it caches the loaded service models, so a
# client (one per presign, with fresh STS credentials) takes ~70 ms instead of ~400 ms. Sessions
# are not thread-safe, clients are: clients are created under the lock and then used freely.
_BOTO_SESSION = boto3.session.Session()
_BOTO_SESSION_LOCK = threading.Lock()


def s3_client(
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None,
    region: str = DEFAULT_REGION,
) -> S3Client:
    config = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=32,
        connect_timeout=5,
        read_timeout=60,
        # CRC checksums on every body cost ~25% of upload time and S3 servers do not need them
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _BOTO_SESSION_LOCK:
        return _BOTO_SESSION.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
            config=config,
        )


def session_policy(bucket: str, prefix: str, *, write: bool) -> dict[str, Any]:
    """Provena's inline session policy for a dataset prefix (docs/API.md §7), statement by
    statement in its order: write (write credentials only), read, then the bucket-wide list."""
    base = f"arn:aws:s3:::{bucket}/{prefix.rstrip('/')}"
    objects = [base, f"{base}/", f"{base}/*"]
    statements: list[dict[str, Any]] = []
    if write:
        statements.append(
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject*",
                    "s3:DeleteObject*",
                    "s3:PutObject",
                    "s3:PutObjectLegalHold",
                    "s3:PutObjectRetention",
                    "s3:PutObjectTagging",
                    "s3:PutObjectVersionTagging",
                    "s3:Abort*",
                ],
                "Resource": objects,
            }
        )
    statements.append({"Effect": "Allow", "Action": ["s3:GetObject*"], "Resource": objects})
    statements.append(
        {
            "Effect": "Allow",
            "Action": [
                "s3:ListMultipartUploads",
                "s3:ListBucketMultipartUploads",
                "s3:ListBucketVersions",
                "s3:ListBucket",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


@contextlib.contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn boto errors into ``StorageError`` carrying only the operation and the error code."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise ObjectNotFound(f"{operation}: {code}") from None
        raise StorageError(f"{operation} failed: {code}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise StorageError(f"{operation} failed: {type(exc).__name__}") from None


class ObjectStore:
    """Admin-side S3 operations of the data store and the STS minting of scoped credentials."""

    def __init__(self, admin: S3Admin) -> None:
        self.admin = admin
        self.bucket = admin.bucket
        self._s3 = s3_client(
            admin.endpoint_url, admin.access_key_id, admin.secret_access_key, None, admin.region
        )
        with _BOTO_SESSION_LOCK:
            self._sts: STSClient = _BOTO_SESSION.client(
                "sts",
                endpoint_url=admin.endpoint_url,
                aws_access_key_id=admin.access_key_id,
                aws_secret_access_key=admin.secret_access_key,
                region_name=admin.region,
                config=botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_CHUNK, multipart_chunksize=_MULTIPART_CHUNK
        )

    def ensure_bucket(self, timeout: float = 30.0) -> None:
        """Create the bucket unless it exists (retried while a fresh server settles)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._s3.head_bucket(Bucket=self.bucket)
                return
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                    last = f"HeadBucket failed: {_error_code(exc)}"
                else:
                    try:
                        self._s3.create_bucket(Bucket=self.bucket)
                        return
                    except botocore.exceptions.ClientError as create_exc:
                        code = _error_code(create_exc)
                        if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                            return
                        last = f"CreateBucket failed: {code}"
            except botocore.exceptions.BotoCoreError as exc:
                last = f"HeadBucket failed: {type(exc).__name__}"
            if time.monotonic() > deadline:
                raise StorageError(f"bucket {self.bucket!r} unavailable: {last}")
            time.sleep(0.05)

    def prefix_exists(self, prefix: str) -> bool:
        """Whether any key starts with *prefix*."""
        with _translated("ListObjectsV2"):
            answer = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return bool(answer.get("KeyCount", 0) or answer.get("Contents"))

    def object_exists(self, key: str) -> bool:
        """Whether *key* exists (``HeadObject``).

        False too when S3 refuses the key itself (HTTP 400, e.g. for a ``.`` segment or a NUL):
        no object can have it. Any other failure raises ``StorageError``.
        """
        try:
            with _translated("HeadObject"):
                try:
                    self._s3.head_object(Bucket=self.bucket, Key=key)
                except botocore.exceptions.ClientError as exc:
                    if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 400:
                        return False
                    raise
        except ObjectNotFound:
            return False
        return True

    def put_object(
        self, key: str, body: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        with _translated("PutObject"):
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def put_many(
        self,
        objects: Mapping[str, bytes],
        *,
        content_type: str = "application/octet-stream",
        workers: int = 8,
    ) -> None:
        """PUT many small objects in parallel (one round trip each is what makes seeding slow)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [
                pool.submit(self.put_object, key, body, content_type=content_type)
                for key, body in objects.items()
            ]
            for future in futures:
                future.result()

    def upload_file(self, key: str, path: Path) -> None:
        """Upload a local file; multipart above 16 MiB."""
        with _translated("UploadFile"):
            self._s3.upload_file(str(path), self.bucket, key, Config=self._transfer)

    def get_object(self, key: str) -> bytes:
        """The object's bytes; ``ObjectNotFound`` when absent."""
        with _translated("GetObject"):
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def delete_object(self, key: str) -> None:
        with _translated("DeleteObject"):
            self._s3.delete_object(Bucket=self.bucket, Key=key)

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under *prefix*, in S3 order."""
        keys: list[str] = []
        with _translated("ListObjectsV2"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(entry["Key"] for entry in page.get("Contents", []) if "Key" in entry)
        return keys

    def mint_credentials(
        self, prefix: str, *, write: bool, session_name: str, duration_seconds: int = 3600
    ) -> StsCredentials:
        """STS ``AssumeRole`` with Provena's inline policy for *prefix* (read or read+write).

        ``duration_seconds`` is clamped into [900, 43200]: STS refuses shorter sessions, so a data
        store that wants a shorter life advertises its own ``expiry``.
        """
        policy = session_policy(self.bucket, prefix, write=write)
        duration = max(MIN_SESSION_SECONDS, min(int(duration_seconds), MAX_SESSION_SECONDS))
        name = _SESSION_NAME_ALLOWED.sub("-", session_name)[:64].ljust(2, "-")
        with _translated("AssumeRole"):
            answer = self._sts.assume_role(
                RoleArn=self.admin.role_arn,
                RoleSessionName=name,
                Policy=json.dumps(policy, separators=(",", ":")),
                DurationSeconds=duration,
            )
        creds = answer["Credentials"]
        expiration = creds["Expiration"]
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=dt.UTC)
        return StsCredentials(
            access_key_id=creds["AccessKeyId"],
            secret_access_key=creds["SecretAccessKey"],
            session_token=creds["SessionToken"],
            expiration=expiration,
        )

    def client_for(self, creds: StsCredentials) -> S3Client:
        """A boto3 S3 client that signs with *creds* (for presigning and for tests)."""
        return s3_client(
            self.admin.endpoint_url,
            creds.access_key_id,
            creds.secret_access_key,
            creds.session_token,
            self.admin.region,
        )

    def presign_get(
        self, key: str, *, creds: StsCredentials, expires_in: int, filename: str
    ) -> str:
        """A SigV4 GET URL for *key* signed with *creds*, served as an attachment *filename*."""
        with _translated("PresignGetObject"):
            return self.client_for(creds).generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": f"attachment; filename={filename}",
                },
                ExpiresIn=int(expires_in),
            )
