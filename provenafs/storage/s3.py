"""``S3BlobStore``: the ``BlobStore`` protocol over S3, the mount's only boto3 importer.

Every call is signed with the temporary credentials the caller passes (one dataset's STS
session), path-style. Reads (ranged GETs, list pages) are signed here (``sigv4``) and sent on
one urllib3 pool as large as the thread limiter: a botocore call costs about three times the
CPU. Writes use one boto3 client per credential set (bounded, least recently used dropped).
Retries are this module's own (boto3's are off): connection errors, 5xx and SlowDown are
retried with bounded exponential backoff, then raise ``BlobUnavailableError``.

Each request runs in ``trio.to_thread.run_sync`` under one dedicated ``CapacityLimiter``: one thread
hop per request (a ranged GET of a multi-MiB part, a list page), never per FUSE read. S3 errors are
translated here, once (``_translate_answer``): NoSuchKey/404 → ``NoSuchKeyError``; AccessDenied/403
→ ``AccessDeniedError``; ExpiredToken/InvalidToken/InvalidAccessKeyId/SignatureDoesNotMatch →
``ExpiredCredentialsError``; PreconditionFailed/412 → ``StaleObjectError``. ETags are returned
without quotes. Secrets never appear in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import email.utils
import functools
import hashlib
import logging
import os
import random
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from xml.etree import ElementTree

import boto3
import botocore.config
import botocore.exceptions
import trio
import urllib3
import urllib3.exceptions

from provenafs.api.models import Credentials
from provenafs.storage.blobstore import (
    AccessDeniedError,
    BlobError,
    BlobUnavailableError,
    ExpiredCredentialsError,
    Listing,
    NoSuchKeyError,
    ObjectHead,
    ObjectInfo,
    StaleObjectError,
)
from provenafs.storage.sigv4 import s3_path, s3_query, sign_s3_request

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3BlobStore"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_MAX_BACKOFF = 2.0
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")

_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
_DENIED_CODES = {"AccessDenied", "Forbidden", "403", "AllAccessDisabled"}
_EXPIRED_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
_STALE_CODES = {"PreconditionFailed", "412"}
_BUSY_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


class _Retryable(Exception):
    """Internal: a failure worth another try; carries what to raise when tries run out."""

    def __init__(self, final: BlobError) -> None:
        super().__init__(str(final))
        self.final = final


def _translate(exc: botocore.exceptions.ClientError, what: str) -> BlobError | _Retryable:
    """A botocore error answer as the blob store's exception (see ``_translate_answer``)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return _translate_answer(code, status, what)


def _translate_answer(code: str, status: int, what: str) -> BlobError | _Retryable:
    """The one mapping of an S3 error answer (its XML ``Code`` and HTTP status) to the blob
    store's exceptions."""
    message = f"{what}: {code or status}"
    if code in _EXPIRED_CODES:
        return ExpiredCredentialsError(message)
    if code in _STALE_CODES or status == 412:
        return StaleObjectError(message)
    if code in _MISSING_CODES or status == 404:
        return NoSuchKeyError(message)
    if code in _DENIED_CODES or status == 403:
        return AccessDeniedError(message)
    if code == "400" and status == 400:
        # HEAD answers carry no body: with a session token, a bare 400 is an expired token
        return ExpiredCredentialsError(message)
    if code in _BUSY_CODES or status >= 500 or status == 429:
        return _Retryable(BlobUnavailableError(message))
    return BlobError(message)


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def _http_date(value: str | None) -> float:
    """Unix seconds of an HTTP date (``Last-Modified``); 0 if unreadable."""
    try:
        return email.utils.parsedate_to_datetime(value or "").timestamp()
    except (TypeError, ValueError):
        return 0.0


_META_PREFIX = "x-amz-meta-"


def _head_of(key: str, response: urllib3.BaseHTTPResponse, size: int | None = None) -> ObjectHead:
    """The facts and user metadata an answer's headers carry (a HEAD's, or a whole GET's)."""
    headers = response.headers
    length = size if size is not None else int(headers.get("content-length") or 0)
    info = ObjectInfo(
        key, length, _etag(headers.get("etag")), _http_date(headers.get("last-modified"))
    )
    metadata = {
        name.lower()[len(_META_PREFIX) :]: value
        for name, value in headers.items()
        if name.lower().startswith(_META_PREFIX)
    }
    return ObjectHead(info, metadata)


def _connection_pool(base_url: str, **options: Any) -> urllib3.PoolManager:
    """The pool for signed requests, through the proxy the environment names for ``base_url``
    (``https_proxy``/``http_proxy``, ``no_proxy``), as boto3 does for the other calls."""
    scheme, host = urllib.parse.urlsplit(base_url)[:2]
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host.rsplit(":", 1)[0]):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


@dataclasses.dataclass(frozen=True)
class _ListPage:
    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None  # None: the last page


def _parse_list_page(body: bytes) -> _ListPage:
    """One ListObjectsV2 answer (``encoding-type=url``: keys and prefixes come URL-encoded, as
    botocore asks for them too, so that any key survives XML).

    Each ``Contents`` element's children are read in one pass; keys without ``%`` or ``+`` are
    taken as they are, and a page's repeated timestamps are parsed once (a LIST of 1,000 keys
    costs about half of what four ``findtext`` calls per key did)."""
    try:
        # S3's own answer; ElementTree resolves no external entities and expat bounds expansion
        root = ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError:
        raise _Retryable(BlobUnavailableError("list: an answer that is not XML")) from None
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    key_tag, size_tag, etag_tag, modified_tag = (
        ns + "Key",
        ns + "Size",
        ns + "ETag",
        ns + "LastModified",
    )
    times: dict[str, float] = {}
    objects = []
    for entry in root.iterfind(ns + "Contents"):
        key, size, etag, modified = "", "", "", ""
        for child in entry:
            tag = child.tag
            if tag == key_tag:
                key = child.text or ""
            elif tag == size_tag:
                size = child.text or ""
            elif tag == etag_tag:
                etag = child.text or ""
            elif tag == modified_tag:
                modified = child.text or ""
        when = times.get(modified)
        if when is None:
            when = times[modified] = _iso_timestamp(modified)
        objects.append(
            ObjectInfo(
                key=_unquote(key),
                size=int(size or 0),
                etag=etag.strip('"'),
                last_modified=when,
            )
        )
    prefixes = [
        _unquote(entry.findtext(ns + "Prefix") or "")
        for entry in root.iterfind(ns + "CommonPrefixes")
    ]
    truncated = (root.findtext(ns + "IsTruncated") or "").lower() == "true"
    token = root.findtext(ns + "NextContinuationToken") or ""
    return _ListPage(objects, prefixes, token if truncated and token else None)


def _unquote(text: str) -> str:
    """A URL-encoded key or prefix as it is (``encoding-type=url``)."""
    return urllib.parse.unquote_plus(text) if "%" in text or "+" in text else text


def _iso_timestamp(value: str) -> float:
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0


class S3BlobStore:
    """Asynchronous S3 operations signed with per-dataset temporary credentials."""

    def __init__(
        self,
        endpoint_url: str | None,
        region: str,
        *,
        max_threads: int = 16,
        max_clients: int = 32,
        retries: int = 4,
        backoff: float = 0.1,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._limiter = trio.CapacityLimiter(max_threads)
        self._config = botocore.config.Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max_threads,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
        )
        self._base_url = (endpoint_url or f"https://s3.{region}.amazonaws.com").rstrip("/")
        self._host = urllib.parse.urlsplit(self._base_url).netloc
        self._pool = _connection_pool(
            self._base_url,
            maxsize=max_threads,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            ca_certs=os.environ.get("AWS_CA_BUNDLE") or None,
        )
        self._session = boto3.session.Session()
        self._clients: collections.OrderedDict[str, S3Client] = collections.OrderedDict()
        self._clients_lock = threading.Lock()
        self._max_clients = max(1, max_clients)
        self._tries = max(1, retries)
        self._backoff = backoff
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(("requests", "retries", "bytes_read", "bytes_written"), 0)
        )

    def __repr__(self) -> str:
        return f"S3BlobStore({self.endpoint_url!r}, {self.region!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _client_blocking(self, creds: Credentials) -> S3Client:
        """The boto3 client for one credential set (created on first use; LRU-bounded)."""
        identity = hashlib.sha256(
            "\0".join((creds.access_key_id, creds.secret_access_key, creds.session_token)).encode()
        ).hexdigest()
        with self._clients_lock:
            client = self._clients.get(identity)
            if client is not None:
                self._clients.move_to_end(identity)
                return client
            client = self._session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                aws_session_token=creds.session_token or None,
                config=self._config,
            )
            self._clients[identity] = client
            while len(self._clients) > self._max_clients:
                _, old = self._clients.popitem(last=False)
                old.close()
            return client

    def _attempt_blocking(self, creds: Credentials, op: Callable[[S3Client], _T], what: str) -> _T:
        """One try of ``op`` in a worker thread, with its failure translated."""
        try:
            return op(self._client_blocking(creds))
        except botocore.exceptions.ClientError as exc:
            raise _translate(exc, what) from None
        except _TRANSIENT_ERRORS as exc:
            raise _Retryable(BlobUnavailableError(f"{what}: {type(exc).__name__}")) from None

    async def _run(
        self,
        creds: Credentials,
        op: Callable[[S3Client], _T],
        what: str,
        *,
        read_only: bool = True,
    ) -> _T:
        """Run ``op`` with a client for ``creds`` in a thread, retrying transient failures."""
        return await self._retrying(
            functools.partial(self._attempt_blocking, creds, op, what), read_only=read_only
        )

    async def _retrying(self, attempt_blocking: Callable[[], _T], *, read_only: bool) -> _T:
        """Run one blocking try in a thread, again with backoff and jitter while it raises
        ``_Retryable``; then raise its final error."""
        delay = self._backoff
        for attempt in range(1, self._tries + 1):
            self._stats["requests"] += 1
            try:
                return await trio.to_thread.run_sync(
                    attempt_blocking, limiter=self._limiter, abandon_on_cancel=read_only
                )
            except _Retryable as exc:
                if attempt == self._tries:
                    raise exc.final from None
                log.debug("%s, retrying", exc)
            self._stats["retries"] += 1
            await trio.sleep(min(_MAX_BACKOFF, delay) * random.uniform(0.5, 1.0))  # noqa: S311
            delay *= 2
        raise AssertionError("unreachable")

    def statistics(self) -> dict[str, int]:
        """Counts: ``requests`` (tries), ``retries``, ``bytes_read``, ``bytes_written``,
        ``clients`` (boto3 clients held)."""
        return {**self._stats, "clients": len(self._clients)}

    # -- reading --------------------------------------------------------------------------

    async def list_prefix(
        self,
        creds: Credentials,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None = "/",
        start_after: str | None = None,
    ) -> Listing:
        """Every key (and common prefix) under ``prefix``, following continuation tokens;
        with ``start_after``, only those after that key."""
        return await self._list(
            creds, bucket, prefix, delimiter=delimiter, max_keys=None, start_after=start_after
        )

    async def list_tree(
        self, creds: Credentials, bucket: str, prefix: str, *, max_keys: int
    ) -> Listing:
        """Every key under ``prefix`` (no delimiter), or, as soon as a page shows there are
        more than ``max_keys``, the keys listed so far marked ``truncated``: a huge tree costs
        a few pages, never a full listing."""
        return await self._list(creds, bucket, prefix, delimiter=None, max_keys=max_keys)

    async def _list(
        self,
        creds: Credentials,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None,
        max_keys: int | None,
        start_after: str | None = None,
    ) -> Listing:
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": "1000", "encoding-type": "url"}
            if delimiter:
                query["delimiter"] = delimiter
            if start_after is not None:
                query["start-after"] = start_after
            if token:
                query["continuation-token"] = token
            page = await self._signed_get(
                creds,
                s3_path(bucket),
                query=query,
                what=f"list s3://{bucket}/{prefix}",
                read=lambda response: _parse_list_page(response.read()),
            )
            objects += page.objects
            prefixes += page.prefixes
            token = page.next_token
            if max_keys is not None and (
                len(objects) > max_keys or (token is not None and len(objects) >= max_keys)
            ):
                return Listing(tuple(objects), tuple(prefixes), truncated=True)
            if token is None:
                return Listing(tuple(objects), tuple(prefixes))

    async def head(self, creds: Credentials, bucket: str, key: str) -> ObjectInfo:
        """Size, ETag and modification time of one object (a signed HEAD on the shared pool)."""
        return (await self.head_object(creds, bucket, key)).info

    async def any_under(self, creds: Credentials, bucket: str, prefix: str) -> bool:
        """Whether any key starts with ``prefix`` (one LIST of at most one key)."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": "1", "encoding-type": "url"}
        page = await self._signed_get(
            creds,
            s3_path(bucket),
            query=query,
            what=f"list s3://{bucket}/{prefix}",
            read=lambda response: _parse_list_page(response.read()),
        )
        return bool(page.objects or page.prefixes)

    async def head_object(self, creds: Credentials, bucket: str, key: str) -> ObjectHead:
        """Size, ETag, time and user metadata of one object: a HEAD signed here."""
        return await self._signed_get(
            creds,
            s3_path(bucket, key),
            what=f"head s3://{bucket}/{key}",
            read=lambda response: _head_of(key, response),
            method="HEAD",
        )

    async def get_object(
        self, creds: Credentials, bucket: str, key: str, *, etag: str | None = None
    ) -> tuple[bytes, ObjectHead]:
        """The whole object and its user metadata in one GET (for small objects)."""
        headers = {"if-match": f'"{etag}"'} if etag is not None else {}

        def read(response: urllib3.BaseHTTPResponse) -> tuple[bytes, ObjectHead]:
            data = response.read()
            return data, _head_of(key, response, len(data))

        data, head = await self._signed_get(
            creds, s3_path(bucket, key), headers=headers, what=f"get s3://{bucket}/{key}", read=read
        )
        self._stats["bytes_read"] += len(data)
        return data, head

    async def get_range(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        start: int,
        end: int,
        *,
        etag: str | None = None,
    ) -> bytes:
        """Bytes ``[start, end)`` (fewer at the object's end); ``etag`` makes the GET If-Match."""
        blocks = await self.get_blocks(
            creds, bucket, key, start, end, block_size=max(end - start, 1), etag=etag
        )
        return b"".join(blocks)

    async def get_blocks(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        start: int,
        end: int,
        *,
        block_size: int,
        etag: str | None = None,
    ) -> list[bytes]:
        """Like ``get_range``, cut into ``block_size`` pieces while the body is read.

        One thread hop and one GET for a multi-MiB part, without holding the part twice.
        """
        if end <= start:
            return []

        headers = {"range": f"bytes={start}-{end - 1}"}
        if etag is not None:
            headers["if-match"] = f'"{etag}"'
        what = f"get s3://{bucket}/{key}"
        ok_get = (200, 206, 416)

        def read_blocks(response: urllib3.BaseHTTPResponse) -> list[bytes]:
            if response.status == 416:
                return []  # a range starting at or past the end: nothing there
            blocks = []
            while block := response.read(block_size):
                blocks.append(block)
            return blocks

        blocks = await self._signed_get(
            creds, s3_path(bucket, key), headers=headers, what=what, read=read_blocks, ok=ok_get
        )
        self._stats["bytes_read"] += sum(len(b) for b in blocks)
        return blocks

    async def _signed_get(
        self,
        creds: Credentials,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        what: str,
        read: Callable[[urllib3.BaseHTTPResponse], _T],
        ok: tuple[int, ...] = (200,),
        method: str = "GET",
    ) -> _T:
        """A GET (or HEAD) signed here and sent on the shared pool (no botocore: about a third
        of its CPU per request), in a thread, retried like every call; ``read`` takes the
        answer when its status is ``ok``, anything else is translated."""
        return await self._retrying(
            functools.partial(
                self._signed_get_blocking,
                creds,
                path,
                query=s3_query(query or {}),
                headers=headers or {},
                what=what,
                read=read,
                ok=ok,
                method=method,
            ),
            read_only=True,
        )

    def _signed_get_blocking(
        self,
        creds: Credentials,
        path: str,
        *,
        query: str,
        headers: Mapping[str, str],
        what: str,
        read: Callable[[urllib3.BaseHTTPResponse], _T],
        ok: tuple[int, ...],
        method: str = "GET",
    ) -> _T:
        signed = sign_s3_request(
            method=method,
            host=self._host,
            path=path,
            query=query,
            headers=headers,
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            session_token=creds.session_token,
            region=self.region,
        )
        url = self._base_url + path + (f"?{query}" if query else "")
        try:
            response = self._pool.request(
                method,
                url,
                headers=signed,
                preload_content=False,
                decode_content=False,
                redirect=False,
            )
            try:
                if response.status not in ok:
                    body = response.read(64 << 10)
                    code = _ERROR_CODE.search(body)
                    name = code.group(1).decode(errors="replace") if code else ""
                    if method == "HEAD":  # no body: the status is the code (as botocore has it)
                        name = str(response.status)
                    raise _translate_answer(name, response.status, what)
                answer = read(response)
                response.drain_conn()  # what ``read`` left (an empty 416's body), if anything
                return answer
            except BaseException:
                response.close()  # bytes may be left unread: never reuse this connection
                raise
            finally:
                response.release_conn()
        except _TRANSIENT_ERRORS as exc:
            raise _Retryable(BlobUnavailableError(f"{what}: {type(exc).__name__}")) from None

    # -- writing (used by publishing new versions) ----------------------------------------

    async def put_object(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write one object (with user ``metadata``) in a single PUT; answers its ETag."""
        meta = dict(metadata or {})

        def put(client: S3Client) -> str:
            answer = client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta)
            return _etag(answer.get("ETag"))

        etag = await self._run(creds, put, f"put s3://{bucket}/{key}", read_only=False)
        self._stats["bytes_written"] += len(data)
        return etag

    async def create_multipart(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Start a multipart upload of an object with user ``metadata``; answers its id."""
        meta = dict(metadata or {})

        def create(client: S3Client) -> str:
            answer = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta)
            return str(answer["UploadId"])

        return await self._run(creds, create, f"upload s3://{bucket}/{key}", read_only=False)

    async def upload_part(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        number: int,
        data: bytes,
    ) -> str:
        """Send part ``number`` (1-based) of an upload in one thread hop; answers its ETag."""

        def send(client: S3Client) -> str:
            answer = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            return _etag(answer.get("ETag"))

        etag = await self._run(
            creds, send, f"upload part {number} s3://{bucket}/{key}", read_only=False
        )
        self._stats["bytes_written"] += len(data)
        return etag

    async def complete_multipart(
        self,
        creds: Credentials,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
    ) -> str:
        """Join the parts ``(number, etag)`` into the object; answers its ETag."""
        listed = [{"PartNumber": number, "ETag": f'"{etag}"'} for number, etag in parts]

        def complete(client: S3Client) -> str:
            answer = client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},  # type: ignore[typeddict-item]
            )
            return _etag(answer.get("ETag"))

        return await self._run(creds, complete, f"complete s3://{bucket}/{key}", read_only=False)

    async def abort_multipart(
        self, creds: Credentials, bucket: str, key: str, upload_id: str
    ) -> None:
        """Drop an unfinished upload and its parts (an unknown upload id is not an error)."""

        def abort(client: S3Client) -> None:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

        with contextlib.suppress(NoSuchKeyError):
            await self._run(creds, abort, f"abort upload s3://{bucket}/{key}", read_only=False)

    async def list_multipart_uploads(
        self, creds: Credentials, bucket: str, prefix: str
    ) -> list[tuple[str, str]]:
        """Unfinished uploads under ``prefix`` as ``(key, upload_id)``, every page joined."""
        found: list[tuple[str, str]] = []
        markers: dict[str, str] = {}
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **markers}

            def page(client: S3Client, kwargs: dict[str, Any] = kwargs) -> dict[str, Any]:
                return dict(client.list_multipart_uploads(**kwargs))

            answer = await self._run(creds, page, f"list uploads s3://{bucket}/{prefix}")
            found += [
                (str(upload["Key"]), str(upload["UploadId"]))
                for upload in answer.get("Uploads", ())
            ]
            key_marker = answer.get("NextKeyMarker")
            upload_marker = answer.get("NextUploadIdMarker")
            if not answer.get("IsTruncated") or not (key_marker or upload_marker):
                return found
            markers = {
                "KeyMarker": str(key_marker or ""),
                "UploadIdMarker": str(upload_marker or ""),
            }

    async def delete(self, creds: Credentials, bucket: str, key: str) -> None:
        """Delete one object (deleting an absent key succeeds, as in S3)."""

        def delete(client: S3Client) -> None:
            client.delete_object(Bucket=bucket, Key=key)

        await self._run(creds, delete, f"delete s3://{bucket}/{key}", read_only=False)
