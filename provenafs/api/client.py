"""``DataStoreClient``: the mount's one way to call the Provena data store API.

It speaks the routes of docs/API.md §3 over one keep-alive ``httpx.AsyncClient`` and answers
only the frozen records of ``api.models``; raw JSON leaves it only as ``DatasetRecord.document``.
Every httpx error and HTTP status is translated here, once, into ``api.errors`` (§2, §3, §10):

- 401 "Could not validate credentials" → ``AuthenticationError`` (after one token refresh and
  retry); any other 401 → ``PermissionDeniedError``; 403 → ``ForbiddenError``;
- 400 on fetch and credential routes → ``NotFoundError`` (unknown, seed or non-dataset id);
  400/422 or ``status.success=false`` elsewhere → ``InvalidRequestError`` with the server's
  ``detail``;
- network errors, 429 and 5xx → retried with bounded exponential backoff and jitter, then
  ``UnavailableError``. Calls that could act twice (version, metadata update, revert) are
  retried only when the request never left (connect errors).

It must not log or raise a token, must not cache (the catalog and the credential broker do), and
runs under trio.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import trio

from provenafs.api.errors import (
    ApiError,
    AuthenticationError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from provenafs.api.models import (
    CollectionFormat,
    Credentials,
    DatasetPage,
    DatasetRecord,
    Discovery,
    S3Location,
    VersionCreated,
    VersioningInfo,
    without_nulls,
)
from provenafs.api.realm import TokenSource, jwt_claim

__all__ = ["DEFAULT_REGION", "DataStoreClient", "discover", "parse_dataset_record"]

log = logging.getLogger(__name__)

DEFAULT_REGION = "ap-southeast-2"
_AUTH_FAILURE_DETAILS = ("Could not validate credentials", "Token had incorrect structure")
_MAX_BACKOFF = 2.0
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class _Route:
    """How one API route is called and how its failures read."""

    name: str
    method: str
    path: str
    retry_safe: bool  # may be re-sent after a response was lost (idempotent or read-only)
    bad_request_means_missing: bool = False  # 400 = unknown / seed / not a dataset


_DISCOVER = _Route("discover", "GET", "/.well-known/provenafs", True)
_FETCH = _Route("fetch_dataset", "GET", "/registry/items/fetch-dataset", True, True)
_LIST = _Route("list_page", "POST", "/registry/items/list", True)
_READ_CREDS = _Route(
    "read_credentials",
    "POST",
    "/registry/credentials/generate-read-access-credentials",
    True,
    True,
)
_WRITE_CREDS = _Route(
    "write_credentials",
    "POST",
    "/registry/credentials/generate-write-access-credentials",
    True,
    True,
)
_PRESIGN = _Route("presigned_url", "POST", "/registry/items/generate-presigned-url", True)
_VERSION = _Route("create_version", "POST", "/register/version", False)
_UPDATE = _Route("update_metadata", "POST", "/register/update-metadata", False)
_REVERT = _Route("revert_metadata", "PUT", "/register/revert-metadata", False)


def _detail(response: httpx.Response) -> str:
    """The server's ``detail`` (or ``status.details``) as one line of text."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            parts = []
            for entry in detail:
                if isinstance(entry, dict):
                    where = ".".join(str(p) for p in entry.get("loc", ()))
                    parts.append(f"{where}: {entry.get('msg', '')}")
            if parts:
                return "; ".join(parts)
        status = body.get("status")
        if isinstance(status, dict) and isinstance(status.get("details"), str):
            return str(status["details"])
    return f"HTTP {response.status_code}"


def _error_for(route: _Route, response: httpx.Response) -> ApiError:
    """The one translation of a non-200 answer (never containing a token)."""
    code = response.status_code
    detail = _detail(response)
    message = f"{route.name}: {detail}"
    if code == 401:
        if any(text in detail for text in _AUTH_FAILURE_DETAILS):
            return AuthenticationError(message)
        return PermissionDeniedError(message)
    if code == 403:
        return ForbiddenError(message)
    if code == 404 or (code == 400 and route.bad_request_means_missing):
        return NotFoundError(message)
    if code == 429 or code >= 500:
        return UnavailableError(f"{message} (HTTP {code})")
    return InvalidRequestError(message)


def _require(mapping: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(mapping, dict) or not isinstance(mapping.get(key), kind):
        raise ValueError(f"field {key!r} missing or not {kind}")
    return mapping[key]


def _optional_str(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def parse_dataset_record(
    item: Any, roles: Any, locked: Any, document: Mapping[str, Any]
) -> DatasetRecord:
    """A ``DatasetRecord`` from an ``ItemDataset`` JSON object; ``ValueError`` if malformed."""
    s3 = _require(item, "s3", dict)
    versioning_json = item.get("versioning_info")
    versioning = None
    if isinstance(versioning_json, dict):
        versioning = VersioningInfo(
            previous_version=_optional_str(versioning_json, "previous_version"),
            version=int(_require(versioning_json, "version", int)),
            reason=_optional_str(versioning_json, "reason"),
            next_version=_optional_str(versioning_json, "next_version"),
        )
    role_set = None
    if roles is not None:
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise ValueError("roles is not a list of strings")
        role_set = frozenset(roles)
    return DatasetRecord(
        handle=str(_require(item, "id", str)),
        display_name=str(_require(item, "display_name", str)),
        s3=S3Location(
            bucket_name=str(_require(s3, "bucket_name", str)),
            path=str(_require(s3, "path", str)),
            s3_uri=str(_require(s3, "s3_uri", str)),
        ),
        release_status=str(_require(item, "release_status", str)),
        versioning=versioning,
        owner_username=str(_require(item, "owner_username", str)),
        created_timestamp=int(_require(item, "created_timestamp", int)),
        updated_timestamp=int(_require(item, "updated_timestamp", int)),
        roles=role_set,
        locked=bool(locked) if isinstance(locked, bool) else None,
        document=document,
    )


def _parse_credentials(body: Any) -> Credentials:
    creds = _require(body, "credentials", dict)
    expiry = dt.datetime.fromisoformat(str(_require(creds, "expiry", str)))
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=dt.UTC)
    return Credentials(
        access_key_id=str(_require(creds, "aws_access_key_id", str)),
        secret_access_key=str(_require(creds, "aws_secret_access_key", str)),
        session_token=str(_require(creds, "aws_session_token", str)),
        expiry=expiry,
    )


def _discovery(body: Any) -> Discovery:
    if not isinstance(body, dict):
        raise ValueError("discovery document is not an object")
    region = body.get("region")
    return Discovery(
        s3_endpoint_url=_optional_str(body, "s3_endpoint_url"),
        region=region if isinstance(region, str) and region else DEFAULT_REGION,
        realm_url=_optional_str(body, "realm_url"),
        document=body,
    )


async def discover(
    base_url: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> Discovery:
    """``GET /.well-known/provenafs`` without a token (a mount needs it to find its realm)."""
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"), transport=transport, timeout=30.0
    ) as http:
        try:
            response = await http.get(_DISCOVER.path)
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"discover: data store unreachable ({type(exc).__name__})"
            ) from None
    if response.status_code == 404:
        return Discovery(None, DEFAULT_REGION, None)
    if response.status_code != 200:
        raise _error_for(_DISCOVER, response)
    try:
        return _discovery(response.json())
    except ValueError as exc:
        raise UnavailableError(f"discover: unexpected answer ({exc})") from None


class DataStoreClient:
    """The data store API as async methods answering frozen records (docs/API.md §3, §12)."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.1,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._tokens = tokens
        self._tries = max(1, retries)
        self._backoff = backoff
        self._calls: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"DataStoreClient({str(self._http.base_url)!r})"

    # -- routes ------------------------------------------------------------------------------

    async def discover(self) -> Discovery:
        """``GET /.well-known/provenafs``; 404 means a real deployment: region default, no realm."""
        try:
            body = await self._call(_DISCOVER, authenticated=False)
        except NotFoundError:
            return Discovery(None, DEFAULT_REGION, None)
        return self._parse(_DISCOVER, _discovery, body)

    async def fetch_dataset(self, handle: str) -> DatasetRecord:
        """The record of one dataset version with the caller's item roles and lock flag."""
        body = await self._call(_FETCH, params={"handle_id": handle})
        if isinstance(body, dict) and body.get("item") is None:
            raise NotFoundError(f"fetch_dataset: {_status_details(body) or 'no such dataset'}")

        def parse(b: Any) -> DatasetRecord:
            document = {"item": b["item"], "roles": b.get("roles"), "locked": b.get("locked")}
            return parse_dataset_record(b["item"], b.get("roles"), b.get("locked"), document)

        return self._parse(_FETCH, parse, body)

    async def list_page(
        self, pagination_key: Mapping[str, Any] | None, page_size: int = 100
    ) -> DatasetPage:
        """One page of the dataset list (may be short or empty with a non-null key)."""
        request = {"page_size": page_size, "pagination_key": pagination_key}
        body = await self._call(_LIST, json=request)
        raw_items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(raw_items, list):
            raise UnavailableError("list_page: the answer has no items list")
        records = []
        for raw in raw_items:
            try:
                records.append(parse_dataset_record(raw, None, None, {"item": raw}))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("list_page: skipping an unreadable dataset record (%s)", exc)
        next_key = body.get("pagination_key")
        return DatasetPage(tuple(records), next_key if isinstance(next_key, dict) else None)

    async def list_all(
        self,
        page_size: int = 100,
        on_page: Callable[[Sequence[DatasetRecord]], None] | None = None,
    ) -> list[DatasetRecord]:
        """Every dataset the caller may see, following ``pagination_key`` until it is null.

        ``on_page`` sees each page's records as it arrives (work done there can overlap the
        wait for the next page).
        """
        records: list[DatasetRecord] = []
        key: Mapping[str, Any] | None = None
        seen: list[Mapping[str, Any]] = []
        while True:
            page = await self.list_page(key, page_size)
            records.extend(page.items)
            if on_page is not None:
                on_page(page.items)
            if page.pagination_key is None:
                return records
            if page.pagination_key in seen:
                raise UnavailableError("list_page: the data store repeated a pagination key")
            key = page.pagination_key
            seen.append(key)

    async def read_credentials(self, handle: str) -> Credentials:
        """Fresh read-scoped STS credentials for one dataset's prefix (no caching here)."""
        body = await self._call(
            _READ_CREDS, json={"dataset_id": handle, "console_session_required": False}
        )
        return self._parse(_READ_CREDS, _parse_credentials, body)

    async def write_credentials(self, handle: str) -> Credentials:
        """Fresh write-scoped STS credentials (401 locked / no role, 403 pending or released)."""
        body = await self._call(
            _WRITE_CREDS, json={"dataset_id": handle, "console_session_required": False}
        )
        return self._parse(_WRITE_CREDS, _parse_credentials, body)

    async def presigned_url(self, handle: str, file_path: str, expires_in: int = 3600) -> str:
        """A presigned GET URL for one file of a dataset (needs item ``dataset-data-read``)."""
        request = {"dataset_id": handle, "file_path": file_path, "expires_in": expires_in}
        body = await self._call(_PRESIGN, json=request)
        return str(self._parse(_PRESIGN, lambda b: _require(b, "presigned_url", str), body))

    async def username(self) -> str | None:
        """The user the token names (its ``preferred_username``, as Keycloak and the data store
        put it in ``owner_username``); None when the token names none."""
        name = jwt_claim(await self._tokens.access_token(), "preferred_username")
        return name if isinstance(name, str) and name else None

    async def create_version(self, handle: str, reason: str) -> VersionCreated:
        """Mint the next version of a dataset; never re-sent once the request may have left."""
        body = await self._call(_VERSION, json={"id": handle, "reason": reason})

        def parse(b: Any) -> VersionCreated:
            return VersionCreated(
                str(_require(b, "new_version_id", str)),
                str(_require(b, "version_job_session_id", str)),
            )

        return self._parse(_VERSION, parse, body)

    async def update_metadata(
        self, handle: str, reason: str, collection_format: CollectionFormat
    ) -> None:
        """Replace a dataset's ``collection_format`` (a full replace; adds a history entry)."""
        await self._call(
            _UPDATE, params={"handle_id": handle, "reason": reason}, json=collection_format.fields
        )

    async def revert_metadata(self, handle: str, history_id: int, reason: str) -> None:
        """Restore the metadata of history entry ``history_id`` (metadata only, not files)."""
        await self._call(_REVERT, json={"id": handle, "history_id": history_id, "reason": reason})

    async def call(
        self,
        method: str,
        path: str,
        *,
        name: str,
        retry_safe: bool,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        """One call of any route at this client's base URL, as the data store's own are made
        (token, refresh, retries, errors): Provena's other services share these rules
        (docs/API.md §13). Answers the JSON body; callers in ``api`` parse it."""
        return await self._call(_Route(name, method, path, retry_safe), params=params, json=json)

    def statistics(self) -> Mapping[str, int]:
        """HTTP requests sent per route name (retries included), plus ``retries``."""
        return dict(self._calls)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one request path -------------------------------------------------------------

    def _parse(self, route: _Route, parse: Callable[[Any], _T], body: Any) -> _T:
        try:
            return parse(body)
        except (ValueError, TypeError, KeyError) as exc:
            raise UnavailableError(
                f"{route.name}: unexpected answer from the data store ({exc})"
            ) from None

    async def _call(
        self,
        route: _Route,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        authenticated: bool = True,
    ) -> Any:
        """Send one logical call: refresh the token once on 401-unauthenticated, retry outages."""
        refreshed = False
        while True:
            try:
                return await self._send_with_retries(route, params, json, authenticated)
            except AuthenticationError:
                if refreshed or not authenticated:
                    raise
                refreshed = True
                await self._tokens.refresh()

    async def _send_with_retries(
        self, route: _Route, params: Mapping[str, str] | None, json: Any, authenticated: bool
    ) -> Any:
        body = None if json is None else without_nulls(json)
        delay = self._backoff
        for attempt in range(1, self._tries + 1):
            last = attempt == self._tries
            headers = {}
            if authenticated:
                headers["Authorization"] = f"Bearer {await self._tokens.access_token()}"
            self._calls[route.name] += 1
            try:
                response = await self._http.request(
                    route.method, route.path, params=params, json=body, headers=headers
                )
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (route.retry_safe or never_sent):
                    raise UnavailableError(
                        f"{route.name}: data store unreachable ({type(exc).__name__})"
                    ) from None
                log.debug("%s: %s, retrying", route.name, type(exc).__name__)
            else:
                if response.status_code == 200:
                    return self._success_body(route, response)
                error = _error_for(route, response)
                if not isinstance(error, UnavailableError) or last or not route.retry_safe:
                    raise error
                log.debug("%s: HTTP %d, retrying", route.name, response.status_code)
            self._calls["retries"] += 1
            await trio.sleep(min(_MAX_BACKOFF, delay) * random.uniform(0.5, 1.0))  # noqa: S311
            delay *= 2
        raise AssertionError("unreachable")

    def _success_body(self, route: _Route, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            raise UnavailableError(f"{route.name}: the data store answered no JSON") from None
        if isinstance(body, dict):
            status = body.get("status")
            if isinstance(status, dict) and status.get("success") is False:
                details = _status_details(body) or "request refused"
                if route.bad_request_means_missing and route is _FETCH:
                    raise NotFoundError(f"{route.name}: {details}")
                raise InvalidRequestError(f"{route.name}: {details}")
        return body


def _status_details(body: Mapping[str, Any]) -> str | None:
    status = body.get("status")
    if isinstance(status, dict) and isinstance(status.get("details"), str):
        return str(status["details"])
    return None
